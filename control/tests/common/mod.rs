//! Helpers for the control plane's integration tests: requests as clients build them,
//! and frames sent through the ring device.

#![allow(dead_code)]

pub mod host_kernel;
pub mod netns;
pub mod pane;
pub mod scenario;
pub mod tls;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use control::device::RingEnd;
use control::wire::ipv4_to_wire;
use dataplane::packet::PacketPool;
use dataplane::wire::frame::{self, FrameSpec};
use proto::v2::{ActionParameters, SessionRequest};

pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// The next hops the existing clients send on every session; no config lists them.
pub const CPP_NEXT_HOP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
pub const CPP_NEXT_HOP_V6: Ipv6Addr = Ipv6Addr::new(1, 0, 0, 0, 0, 0xffff, 0x204, 0x160);
pub const PYTHON_NEXT_HOP: Ipv4Addr = Ipv4Addr::new(12, 2, 3, 4);

/// An IPv4 TCP forward session from 10.0.<id>.1:<1000+id> to 10.1.0.2:80, lifs 1 -> 2,
/// with the C++ client's next hop.
pub fn v4(id: u64) -> SessionRequest {
    SessionRequest {
        session_id: id,
        in_lif: 1,
        out_lif: 2,
        ip_version: 0,
        source_ip: ipv4_to_wire(Ipv4Addr::new(10, 0, (id % 250) as u8, 1)),
        source_port: 1000 + (id % 60000) as u32,
        destination_ip: ipv4_to_wire(Ipv4Addr::new(10, 1, 0, 2)),
        destination_port: 80,
        protocol_id: 6,
        action: Some(ActionParameters {
            action_type: 1,
            action_next_hop: ipv4_to_wire(CPP_NEXT_HOP),
            ..Default::default()
        }),
        cache_timeout: 0,
        ..Default::default()
    }
}

/// An IPv6 UDP forward session, with the C++ client's IPv6 next hop.
pub fn v6(id: u64) -> SessionRequest {
    let src = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (id >> 16) as u16, id as u16);
    SessionRequest {
        session_id: id,
        in_lif: 1,
        out_lif: 2,
        ip_version: 1,
        source_ipv6: src.octets().to_vec(),
        source_port: 5000,
        destination_ipv6: "2001:db8::ffff"
            .parse::<Ipv6Addr>()
            .unwrap()
            .octets()
            .to_vec(),
        destination_port: 53,
        protocol_id: 17,
        action: Some(ActionParameters {
            action_type: 1,
            action_next_hop_v6: CPP_NEXT_HOP_V6.octets().to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Ends `r`'s session with a RST from one side, as a real peer's would be: an ACK
/// from that side first, so that the device knows where its sequence numbers are
/// (window tracking believes no RST from a side it knows nothing of). Both frames on
/// the same ring, in order. Returns the bytes sent (two frames).
pub fn reset(end: &mut RingEnd, pool: &PacketPool, r: &SessionRequest, from_in: bool) -> usize {
    send(end, pool, r, from_in, ACK, 0) + send(end, pool, r, from_in, RST, 0)
}

/// Builds and injects one frame of `r`'s session: from its source on the in side
/// (`from_in`) or from its destination on the out side. Returns the frame length.
pub fn send(
    end: &mut RingEnd,
    pool: &PacketPool,
    r: &SessionRequest,
    from_in: bool,
    flags: u8,
    payload: usize,
) -> usize {
    let spec = control::wire::spec_from_request(r).expect("valid request");
    let (src, dst, sport, dport) = if from_in {
        (spec.src, spec.dst, spec.sport, spec.dport)
    } else {
        (spec.dst, spec.src, spec.dport, spec.sport)
    };
    let f = FrameSpec {
        src_mac: [2, 0, 0, 0, 0, 9],
        dst_mac: end.mac,
        vlan: 0,
        v6: spec.v6,
        proto: spec.proto,
        src,
        dst,
        sport,
        dport,
        tcp_flags: flags,
        payload_len: payload,
    };
    let mut buf = [0u8; 2048];
    let len = frame::build(&f, &mut buf).expect("frame builds");
    let pkt = pool.alloc_from(&buf[..len]).expect("pool has buffers");
    assert!(end.peer.inject(pkt).is_ok(), "ring has room");
    len
}

pub fn ip(r: &SessionRequest) -> IpAddr {
    control::wire::ipv4_from_wire(r.source_ip).into()
}

/// Polls `f` until it returns Some or the time is up.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The server settled every closed-record stream that went away: no record is
/// taken by a stream any more.
pub async fn wait_nothing_in_flight(dev: &control::testing::TestDevice) {
    let device = dev.device();
    wait_for(
        "streams that went away settled",
        Duration::from_secs(30),
        || async { (device.feed.in_flight() == 0).then_some(()) },
    )
    .await;
}

/// Sessions that time out with no traffic at all: `n` closed records.
pub async fn closed_records(
    dev: &control::testing::TestDevice,
    c: &mut control::client::SessionClient,
    n: u64,
) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let reqs = chunk
            .iter()
            .map(|&i| {
                let mut r = v4(i);
                r.source_port = 1 + (i % 65000) as u32;
                r.source_ip = (i / 65000) as u32 + 1;
                r.cache_timeout = 1;
                r
            })
            .collect();
        assert_eq!(c.add(reqs).await.unwrap().request_status, 0);
    }
    let device = dev.device();
    wait_for("all closed", Duration::from_secs(30), || async {
        (device.feed.len() as u64 == n).then_some(())
    })
    .await;
}
