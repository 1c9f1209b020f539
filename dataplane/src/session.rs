//! What a session is, as the control plane hands it to the dataplane and gets it
//! back: the add request (`SessionSpec`), and the state and counters of a session
//! (`SessionInfo`, also the closed-session record).

use std::net::IpAddr;

use crate::flow::FlowKey;

/// What the device does with every packet of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Action {
    /// Both directions are dropped.
    Drop = 0,
    /// Packets go on to the other side.
    Forward = 1,
    /// Forward, and a copy to the collector port.
    Mirror = 2,
    /// Forward, and a copy to the firewall port.
    Snoop = 3,
}

/// A session to install. Addresses are in network order; for IPv4 the address sits in
/// the first four bytes and the rest are zero (`addr_bytes` makes them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSpec {
    /// The client's id for the session; the key of every later call.
    pub id: u64,
    /// Logical interfaces: low 16 bits name a port's lif, high 16 bits a VLAN id.
    pub in_lif: u32,
    pub out_lif: u32,
    pub v6: bool,
    /// PROTO_TCP or PROTO_UDP.
    pub proto: u8,
    /// The session's source (toward `dst`: the "in" direction).
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub action: Action,
    /// Next-hop router for packets toward `dst`; None uses the out lif's default.
    pub next_hop: Option<IpAddr>,
    /// Idle timeout in seconds; 0 means the configured default.
    pub timeout_s: u32,
}

/// An address as the 16 bytes the dataplane keys on.
pub fn addr_bytes(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    }
}

/// The 16 key bytes back as an address.
pub fn bytes_addr(v6: bool, b: &[u8; 16]) -> IpAddr {
    if v6 {
        IpAddr::from(*b)
    } else {
        IpAddr::from([b[0], b[1], b[2], b[3]])
    }
}

impl SessionSpec {
    /// A spec from addresses (which must be of one version).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        in_lif: u32,
        out_lif: u32,
        proto: u8,
        src: IpAddr,
        sport: u16,
        dst: IpAddr,
        dport: u16,
        action: Action,
    ) -> SessionSpec {
        SessionSpec {
            id,
            in_lif,
            out_lif,
            v6: src.is_ipv6(),
            proto,
            src: addr_bytes(src),
            dst: addr_bytes(dst),
            sport,
            dport,
            action,
            next_hop: None,
            timeout_s: 0,
        }
    }
}

/// Session state, numbered as the OpenOffload `SessionState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum SessionState {
    Established = 0,
    /// FIN seen from one side.
    Closing1 = 1,
    /// FIN seen from both sides; waiting for the last ACK.
    Closing2 = 2,
    Closed = 3,
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum CloseCause {
    NotClosed = 0,
    /// FIN from both sides.
    FinAck = 1,
    Rst = 2,
    /// No packet for the session's idle timeout.
    Timeout = 3,
    /// Removed by a delete command.
    Deleted = 4,
}

impl CloseCause {
    /// The cause stored as `code as u8`; unknown codes read as NotClosed.
    pub fn from_code(code: u8) -> CloseCause {
        match code {
            1 => CloseCause::FinAck,
            2 => CloseCause::Rst,
            3 => CloseCause::Timeout,
            4 => CloseCause::Deleted,
            _ => CloseCause::NotClosed,
        }
    }
}

impl SessionState {
    /// The state stored as `state as u8`; unknown codes read as Closed.
    pub fn from_code(code: u8) -> SessionState {
        match code {
            0 => SessionState::Established,
            1 => SessionState::Closing1,
            2 => SessionState::Closing2,
            _ => SessionState::Closed,
        }
    }
}

impl Action {
    /// The action stored as `action as u8` (the OpenOffload numbers).
    pub fn from_code(code: u8) -> Option<Action> {
        match code {
            0 => Some(Action::Drop),
            1 => Some(Action::Forward),
            2 => Some(Action::Mirror),
            3 => Some(Action::Snoop),
            _ => None,
        }
    }
}

/// A session's counters and state: the answer to a query, and the closed record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SessionInfo {
    pub id: u64,
    /// Packets and bytes (whole Ethernet frames) from source toward destination.
    pub in_packets: u64,
    pub in_bytes: u64,
    /// The reverse direction.
    pub out_packets: u64,
    pub out_bytes: u64,
    pub state: SessionState,
    pub cause: CloseCause,
    /// Wall-clock times, nanoseconds since the Unix epoch.
    pub start_ns: u64,
    pub end_ns: Option<u64>,
}

/// A live session as a person looks at it (`offloadctl watch`): what it is (its
/// tuple as added, its lifs and action) next to how it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionView {
    pub info: SessionInfo,
    /// The key of its packets going in (source to destination, on the in lif).
    pub key: FlowKey,
    pub out_lif: u32,
    pub action: Action,
}

/// Why an add was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum AddError {
    /// The id is present.
    IdExists,
    /// The same 7-tuple (lifs, addresses, ports, protocol), in either direction, is
    /// offloaded as session `id`.
    TupleExists { id: u64 },
    /// No capacity left.
    TableFull,
    /// Protocol other than TCP or UDP.
    BadProtocol,
    /// A lif whose low 16 bits name no configured port.
    UnknownLif,
    /// Mirror with no collector port configured.
    NoCollector,
    /// The worker that owns the session is not running.
    Unavailable,
}

impl std::fmt::Display for AddError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddError::IdExists => f.write_str("session id already exists"),
            AddError::TupleExists { id } => {
                write!(f, "7-tuple already offloaded as session {id}")
            }
            AddError::TableFull => f.write_str("session table full"),
            AddError::BadProtocol => f.write_str("protocol is neither TCP nor UDP"),
            AddError::UnknownLif => f.write_str("lif names no configured port"),
            AddError::NoCollector => f.write_str("mirror needs a collector port"),
            AddError::Unavailable => f.write_str("the owning worker is not running"),
        }
    }
}
