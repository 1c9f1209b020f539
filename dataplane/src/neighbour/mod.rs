//! Next hops and neighbours: what MAC a forwarded frame gets, as a router decides it.
//!
//! A session may name a next-hop router (`action_next_hop`). The device never refuses
//! one it does not know: it keeps a neighbour table of every next hop sessions name,
//! with static entries from the config (they always win) and entries it learns on
//! ports on real interfaces by ARP and IPv6 Neighbour Discovery, with Linux's
//! neighbour states (RFC 826, RFC 4861) as the model. Until an entry is resolved, and
//! on ports that cannot resolve (ring, pcap), frames go out as with no next hop.
//!
//! - `table.rs`: the shared table. Slots are made off the packet path (at add) and
//!   never move; the hot path reads one atomic word of a slot per forwarded frame
//!   (MAC, port, resolved), written only when an entry changes.
//! - `resolver.rs`: the state machine of one entry (incomplete, reachable, stale,
//!   probe, failed), pure logic over a clock, run by worker 0 every few milliseconds.
//! - `frames.rs`: the requests the resolver sends and what workers learn from the
//!   ARP and ND frames that arrive on their ports as non-flow traffic.
//!
//! Who does what: any worker learns from what it receives (it posts what it heard to
//! the slot); worker 0 runs the resolver, sends the requests on its own queues and
//! publishes the result. Nothing here takes a lock, allocates or makes a syscall per
//! packet; the table's index takes a lock only when a session is added.

mod frames;
mod resolver;
mod table;

pub use frames::{heard_in_frame, write_request, Heard, RequestSource, MAX_REQUEST_LEN};
pub use resolver::{Entry as ResolverEntry, Probe, Timers};
pub use table::{NeighbourTable, Route, Slot, SlotInfo, StaticNeighbour, MAX_SLOTS};

use std::net::IpAddr;

/// The state of a neighbour entry, as `ip neigh` names Linux's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// From the config: never changed by what is heard.
    Permanent,
    /// On a port that cannot resolve (ring, pcap): forwarded as with no next hop.
    Noarp,
    /// Requests sent, no answer yet.
    Incomplete,
    /// Confirmed by a reply less than `reachable` ago.
    Reachable,
    /// Known, not confirmed lately: still used; probed again while sessions use it.
    Stale,
    /// Stale and in use: unicast requests sent to confirm it.
    Probe,
    /// No answer to the last requests: forwarded as with no next hop, retried later.
    Failed,
}

impl State {
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(c: u8) -> State {
        match c {
            0 => State::Permanent,
            1 => State::Noarp,
            2 => State::Incomplete,
            3 => State::Reachable,
            4 => State::Stale,
            5 => State::Probe,
            _ => State::Failed,
        }
    }

    /// Every state, in the order the table moves an entry through them.
    pub const ALL: [State; 7] = [
        State::Permanent,
        State::Noarp,
        State::Incomplete,
        State::Reachable,
        State::Stale,
        State::Probe,
        State::Failed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            State::Permanent => "permanent",
            State::Noarp => "noarp",
            State::Incomplete => "incomplete",
            State::Reachable => "reachable",
            State::Stale => "stale",
            State::Probe => "probe",
            State::Failed => "failed",
        }
    }
}

/// Where an entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A `[[next_hop]]` entry of the config.
    Static,
    /// Named by a session, resolved (or not yet) by the device.
    Learned,
}

/// One entry of the table as `offloadctl neighbours` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NeighbourView {
    pub addr: IpAddr,
    pub mac: Option<[u8; 6]>,
    /// The port the next hop is reached by; None: the out port of each session (a
    /// static entry given without a port).
    pub port: Option<usize>,
    pub state: State,
    /// Milliseconds since the entry was last confirmed or changed.
    pub age_ms: u64,
    pub source: Source,
    /// Sessions that name it now.
    pub sessions: u32,
}
