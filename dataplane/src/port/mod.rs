//! Ports: where packets enter and leave the device.
//!
//! A port is opened once with one queue pair per worker; worker k owns queue pair k of
//! every port outright (no sharing, no locks). Backends:
//! - `ring`: in-process rings, the default device, for tests, benchmarks and the
//!   traffic simulator; the outside end steers injected frames with the symmetric hash.
//! - `pcap`: replays a capture as input and writes what the port sends to a capture.
//! - `af_packet`: a Linux interface through AF_PACKET sockets with TPACKET_V3 rings
//!   (`tpacket.rs` holds the sockets and rings), one per queue in a fanout group;
//!   `handoff.rs` passes each frame to the queue of the worker that owns it.
//! - `af_xdp` (cargo feature `afxdp`): a Linux interface through AF_XDP sockets, one
//!   per queue with its own UMEM (xsk-rs); native or generic XDP, zero-copy or copy.
//! - `dpdk` (cargo feature `dpdk`): NICs and DPDK virtual devices through the system
//!   DPDK; see `dpdk.rs` for EAL, RSS and buffers.

pub mod af_packet;
#[cfg(feature = "afxdp")]
pub mod af_xdp;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod handoff;
pub mod pcap;
pub mod ring;
pub mod spsc;
#[cfg(test)]
pub(crate) mod test_veth;
pub mod tpacket;

use crate::packet::Burst;

/// A port option within `lo..=hi`, or the one-line error naming it (the form every
/// backend's `check` uses).
pub(crate) fn check_range(key: &str, value: u64, lo: u64, hi: u64) -> Result<(), String> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(format!("{key} = {value}: must be {lo} to {hi}"))
    }
}

/// The size of a port's hand-off rings, checked alike by every backend.
pub(crate) fn check_handoff_ring(handoff_ring: usize) -> Result<(), String> {
    check_range("handoff_ring", handoff_ring as u64, 2, 1 << 20)
}

/// One rx/tx queue pair of a port, owned by one worker.
pub trait PortQueue: Send {
    /// Appends received packets to `burst` until it is full or the queue is empty;
    /// returns how many were added.
    fn rx_burst(&mut self, burst: &mut Burst) -> usize;

    /// Sends packets from the front of `burst`; returns how many were sent. Packets
    /// that could not be sent stay in `burst` (the caller counts and drops them).
    fn tx_burst(&mut self, burst: &mut Burst) -> usize;

    /// Sends whatever the backend batched or a failed kick left behind (files,
    /// sockets). Called on every poll that found no work, so it must be cheap when
    /// there is nothing to send; nothing waits for more traffic to leave.
    fn flush(&mut self) {}
}

/// A device port before it is split into queues.
pub trait Port: Send {
    /// The name used in configs and statistics.
    fn name(&self) -> &str;

    /// The port's own MAC address (source of rewritten frames).
    fn mac(&self) -> [u8; 6];

    /// Splits the port into `queues` queue pairs, one per worker. Called once.
    fn open(&mut self, queues: usize) -> Result<Vec<Box<dyn PortQueue>>, PortError>;

    /// Lets the backend wake a sleeping worker when traffic arrives on `queue`.
    fn set_waker(&mut self, _queue: usize, _waker: std::thread::Thread) {}

    /// Whether the port can resolve next hops: send ARP and ND requests and receive
    /// the answers (backends on real interfaces). Others forward as with no next hop
    /// until a static entry says otherwise.
    fn resolves_neighbours(&self) -> bool {
        false
    }

    /// Counters of the backend itself (hand-offs, kernel drops), by name. Readable
    /// while the workers run; updated by them at most once per burst.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// Why a port could not be opened or used.
#[derive(Debug)]
pub struct PortError {
    pub port: String,
    pub reason: String,
}

impl PortError {
    pub fn new(port: impl Into<String>, reason: impl Into<String>) -> PortError {
        PortError {
            port: port.into(),
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for PortError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "port {}: {}", self.port, self.reason)
    }
}

impl std::error::Error for PortError {}
