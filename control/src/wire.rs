//! How OpenOffload requests and answers encode addresses, times and statuses, and the
//! translation between them and the dataplane's `SessionSpec` / `SessionInfo`.
//!
//! Both the server and the client tools use this file, so the two agree on every
//! encoding (see ../../shared/openoffload-api.md, "Encodings the existing clients use").

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dataplane::session::{Action, AddError, CloseCause, SessionInfo, SessionSpec};
use proto::v2::{
    ActionParameters, ActionType, AddSessionStatus, IpVersion, ProtocolId, RequestStatus,
    SessionCloseCode, SessionRequest, SessionResponse,
};

/// An IPv4 address as the clients send it: the `inet_pton` octets read as a
/// little-endian u32 (10.0.0.1 is 0x0100000A).
pub fn ipv4_from_wire(v: u32) -> Ipv4Addr {
    Ipv4Addr::from(v.to_le_bytes())
}

pub fn ipv4_to_wire(a: Ipv4Addr) -> u32 {
    u32::from_le_bytes(a.octets())
}

/// An IPv6 address: exactly 16 bytes in network order.
pub fn ipv6_from_wire(b: &[u8]) -> Option<Ipv6Addr> {
    <[u8; 16]>::try_from(b).ok().map(Ipv6Addr::from)
}

pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

pub fn timestamp_ns(ns: u64) -> prost_types::Timestamp {
    timestamp(UNIX_EPOCH + Duration::from_nanos(ns))
}

/// A request the dataplane can take, or the reason it is invalid.
pub fn spec_from_request(r: &SessionRequest) -> Result<SessionSpec, String> {
    let v6 = match IpVersion::try_from(r.ip_version) {
        Ok(IpVersion::Ipv4) => false,
        Ok(IpVersion::Ipv6) => true,
        Err(_) => return Err(format!("unknown ip_version {}", r.ip_version)),
    };
    let proto = match ProtocolId::try_from(r.protocol_id) {
        Ok(ProtocolId::Tcp) => 6,
        Ok(ProtocolId::Udp) => 17,
        _ => return Err(format!("protocol {} is neither TCP nor UDP", r.protocol_id)),
    };
    let port =
        |p: u32, what: &str| u16::try_from(p).map_err(|_| format!("{what} {p} is above 65535"));
    let sport = port(r.source_port, "source_port")?;
    let dport = port(r.destination_port, "destination_port")?;
    let (src, dst): (IpAddr, IpAddr) = if v6 {
        let s = ipv6_from_wire(&r.source_ipv6)
            .ok_or_else(|| format!("source_ipv6 has {} bytes, not 16", r.source_ipv6.len()))?;
        let d = ipv6_from_wire(&r.destination_ipv6).ok_or_else(|| {
            format!(
                "destination_ipv6 has {} bytes, not 16",
                r.destination_ipv6.len()
            )
        })?;
        (s.into(), d.into())
    } else {
        (
            ipv4_from_wire(r.source_ip).into(),
            ipv4_from_wire(r.destination_ip).into(),
        )
    };
    let lif = |v: i32, what: &str| {
        let v = v as u32;
        if v >> 16 > 4095 {
            Err(format!("{what} carries VLAN id {} (above 4095)", v >> 16))
        } else {
            Ok(v)
        }
    };
    let in_lif = lif(r.in_lif, "in_lif")?;
    let out_lif = lif(r.out_lif, "out_lif")?;
    let params = r.action.clone().unwrap_or_default();
    let action = match ActionType::try_from(params.action_type) {
        Ok(ActionType::Drop) => Action::Drop,
        Ok(ActionType::Forward) => Action::Forward,
        Ok(ActionType::Mirror) => Action::Mirror,
        Ok(ActionType::Snoop) => Action::Snoop,
        Err(_) => return Err(format!("unknown action_type {}", params.action_type)),
    };
    let next_hop = next_hop(&params)?;
    let mut spec = SessionSpec::new(
        r.session_id,
        in_lif,
        out_lif,
        proto,
        src,
        sport,
        dst,
        dport,
        action,
    );
    spec.next_hop = next_hop;
    spec.timeout_s = r.cache_timeout;
    Ok(spec)
}

/// `action_next_hop_v6` (16 bytes, not all zero) wins over `action_next_hop` (non-zero);
/// neither: no next hop.
fn next_hop(p: &ActionParameters) -> Result<Option<IpAddr>, String> {
    match p.action_next_hop_v6.len() {
        0 => {}
        16 => {
            let a = ipv6_from_wire(&p.action_next_hop_v6).expect("16 bytes");
            if !a.is_unspecified() {
                return Ok(Some(a.into()));
            }
        }
        n => return Err(format!("action_next_hop_v6 has {n} bytes, not 0 or 16")),
    }
    Ok((p.action_next_hop != 0).then(|| ipv4_from_wire(p.action_next_hop).into()))
}

/// The request that offloads `spec` (the inverse of `spec_from_request`).
pub fn request_from_spec(s: &SessionSpec) -> SessionRequest {
    let src = dataplane::session::bytes_addr(s.v6, &s.src);
    let dst = dataplane::session::bytes_addr(s.v6, &s.dst);
    let mut r = SessionRequest {
        session_id: s.id,
        in_lif: s.in_lif as i32,
        out_lif: s.out_lif as i32,
        ip_version: if s.v6 {
            IpVersion::Ipv6
        } else {
            IpVersion::Ipv4
        } as i32,
        source_port: s.sport as u32,
        destination_port: s.dport as u32,
        protocol_id: if s.proto == 6 {
            ProtocolId::Tcp
        } else {
            ProtocolId::Udp
        } as i32,
        cache_timeout: s.timeout_s,
        ..Default::default()
    };
    match (src, dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            r.source_ip = ipv4_to_wire(a);
            r.destination_ip = ipv4_to_wire(b);
        }
        _ => {
            r.source_ipv6 = s.src.to_vec();
            r.destination_ipv6 = s.dst.to_vec();
        }
    }
    let mut params = ActionParameters {
        action_type: s.action as i32,
        ..Default::default()
    };
    match s.next_hop {
        Some(IpAddr::V4(a)) => params.action_next_hop = ipv4_to_wire(a),
        Some(IpAddr::V6(a)) => params.action_next_hop_v6 = a.octets().to_vec(),
        None => {}
    }
    r.action = Some(params);
    r
}

/// The answer to an add the dataplane refused.
pub fn add_status(e: AddError) -> AddSessionStatus {
    match e {
        AddError::AlreadyExists => AddSessionStatus::SessionAlreadyExists,
        AddError::TableFull => AddSessionStatus::SessionTableFull,
        AddError::Unavailable => AddSessionStatus::SessionTableUnavailable,
        AddError::BadProtocol | AddError::UnknownLif | AddError::NoCollector => {
            AddSessionStatus::SessionRejected
        }
    }
}

/// A session's state as the clients read it. A session removed by DeleteSession has
/// no FIN/RST/timeout cause: it reads `_UNKNOWN_CLOSE_CODE`.
pub fn response_from_info(i: &SessionInfo) -> SessionResponse {
    let close = match i.cause {
        CloseCause::NotClosed => SessionCloseCode::NotClosed,
        CloseCause::FinAck => SessionCloseCode::Finack,
        CloseCause::Rst => SessionCloseCode::Rst,
        CloseCause::Timeout => SessionCloseCode::Timeout,
        CloseCause::Deleted => SessionCloseCode::UnknownCloseCode,
    };
    SessionResponse {
        session_id: i.id,
        in_packets: i.in_packets,
        out_packets: i.out_packets,
        in_bytes: i.in_bytes,
        out_bytes: i.out_bytes,
        session_state: i.state as i32,
        session_close_code: close as i32,
        request_status: RequestStatus::Accepted as i32,
        start_time: Some(timestamp_ns(i.start_ns)),
        end_time: i.end_ns.map(timestamp_ns),
    }
}

/// Names of the wire enums, for people.
pub fn state_name(v: i32) -> &'static str {
    proto::v2::SessionState::try_from(v)
        .map(|c| c.as_str_name())
        .unwrap_or("?")
}

pub fn close_code_name(v: i32) -> &'static str {
    SessionCloseCode::try_from(v)
        .map(|c| c.as_str_name())
        .unwrap_or("?")
}

pub fn add_status_name(v: i32) -> &'static str {
    AddSessionStatus::try_from(v)
        .map(|c| c.as_str_name())
        .unwrap_or("?")
}

pub fn request_status_name(v: i32) -> &'static str {
    RequestStatus::try_from(v)
        .map(|c| c.as_str_name())
        .unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_is_little_endian_inet_pton() {
        assert_eq!(ipv4_to_wire(Ipv4Addr::new(10, 0, 0, 1)), 16777226);
        assert_eq!(ipv4_to_wire(Ipv4Addr::new(12, 2, 3, 4)), 67305996);
        assert_eq!(ipv4_from_wire(16777226), Ipv4Addr::new(10, 0, 0, 1));
    }

    fn request() -> SessionRequest {
        SessionRequest {
            session_id: 7,
            in_lif: 1,
            out_lif: 2,
            ip_version: 0,
            source_ip: ipv4_to_wire(Ipv4Addr::new(10, 0, 0, 1)),
            source_port: 1234,
            destination_ip: ipv4_to_wire(Ipv4Addr::new(10, 0, 0, 2)),
            destination_port: 80,
            protocol_id: 6,
            action: Some(ActionParameters {
                action_type: 1,
                action_next_hop: ipv4_to_wire(Ipv4Addr::new(10, 0, 0, 254)),
                action_next_hop_v6: vec![],
            }),
            cache_timeout: 5,
            ..Default::default()
        }
    }

    #[test]
    fn request_round_trips_through_spec() {
        let r = request();
        let s = spec_from_request(&r).unwrap();
        assert_eq!(s.sport, 1234);
        assert_eq!(s.next_hop, Some("10.0.0.254".parse().unwrap()));
        assert_eq!(request_from_spec(&s), r);
        let mut v6 = r.clone();
        v6.ip_version = 1;
        v6.source_ipv6 = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        v6.destination_ipv6 = "2001:db8::2".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        let s = spec_from_request(&v6).unwrap();
        assert!(s.v6);
        let back = request_from_spec(&s);
        assert_eq!(back.source_ipv6, v6.source_ipv6);
    }

    #[test]
    fn invalid_requests_are_named() {
        type Breaks = Box<dyn Fn(&mut SessionRequest)>;
        let bad: Vec<(&str, Breaks)> = vec![
            ("ip_version", Box::new(|r| r.ip_version = 2)),
            ("protocol", Box::new(|r| r.protocol_id = 1)),
            ("protocol", Box::new(|r| r.protocol_id = 0)),
            ("source_port", Box::new(|r| r.source_port = 65536)),
            ("destination_port", Box::new(|r| r.destination_port = 70000)),
            (
                "action_type",
                Box::new(|r| r.action.as_mut().unwrap().action_type = 9),
            ),
            (
                "action_next_hop_v6",
                Box::new(|r| r.action.as_mut().unwrap().action_next_hop_v6 = vec![1; 4]),
            ),
            ("in_lif", Box::new(|r| r.in_lif = -1)),
            (
                "source_ipv6",
                Box::new(|r| {
                    r.ip_version = 1;
                    r.source_ipv6 = vec![0; 4];
                    r.destination_ipv6 = vec![0; 16];
                }),
            ),
            (
                "destination_ipv6",
                Box::new(|r| {
                    r.ip_version = 1;
                    r.source_ipv6 = vec![0; 16];
                }),
            ),
        ];
        for (what, f) in bad {
            let mut r = request();
            f(&mut r);
            let e = spec_from_request(&r).unwrap_err();
            assert!(e.contains(what), "{what}: {e}");
        }
        // No action parameters at all: drop, no next hop (not an error).
        let mut r = request();
        r.action = None;
        assert_eq!(spec_from_request(&r).unwrap().action, Action::Drop);
    }
}
