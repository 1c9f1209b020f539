//! Counters and latency histograms of a worker, and how they add up.
//!
//! A worker keeps these as plain fields of its own (no shared atomics written per
//! packet) and hands out a copy when asked (`Command::Report`); the engine adds the
//! copies of all workers together.

use hdrhistogram::Histogram;
use serde::Serialize;

/// What one worker did, since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WorkerCounters {
    /// Loop iterations, and those that found nothing to do.
    pub polls: u64,
    pub idle_polls: u64,
    /// Packets received on all ports.
    pub rx: u64,
    /// Packets of an offloaded session.
    pub hits: u64,
    /// TCP/UDP packets of no offloaded session (to the firewall).
    pub misses: u64,
    /// Well-formed frames that are no TCP/UDP flow: ARP, ICMP, later fragments (to the
    /// firewall).
    pub not_flow: u64,
    /// Frames that cannot be read (to the firewall).
    pub malformed: u64,
    /// Received on a port that carries no lif (dropped).
    pub rx_no_lif: u64,
    /// Packets of `_DROP` sessions.
    pub dropped: u64,
    /// Packets sent on toward the other side.
    pub forwarded: u64,
    /// Packets and copies sent to the firewall port.
    pub to_firewall: u64,
    /// Mirror copies sent to the collector port.
    pub to_collector: u64,
    /// Copies (mirror, snoop, TCP control) not made: the packet pool was empty.
    pub copy_failures: u64,
    /// Forwarded packets dropped because a VLAN tag could not be pushed (no headroom).
    pub retag_failures: u64,
    /// Forwarded packets whose session's next hop was not resolved (yet, or on a port
    /// that cannot resolve): sent as with no next hop.
    pub forwarded_unresolved: u64,
    /// TCP packets of a session that would have changed its state (RST, a first FIN,
    /// the last ACK) but did not, by reason (`tcp_invalid`): the sequence number is
    /// outside the window tracked for its side; nothing is known of its side yet;
    /// the IPv4 header or TCP checksum is wrong. They go to the firewall as every
    /// control packet does, and on as the session's action says.
    pub tcp_invalid_out_of_window: u64,
    pub tcp_invalid_no_window: u64,
    pub tcp_invalid_bad_checksum: u64,
    /// ARP requests and neighbour solicitations sent for next hops.
    pub neighbour_requests: u64,
    /// Requests held back by the rate limit (or for want of a buffer), sent later.
    pub neighbour_requests_deferred: u64,
    /// Answers heard from next hops (ARP replies to the device, solicited NAs).
    pub neighbour_replies: u64,
    /// Other news heard from next hops (their requests, gratuitous ARP, unsolicited
    /// NAs).
    pub neighbour_updates: u64,
    /// Next hops that stopped answering (entry failed).
    pub neighbour_failures: u64,
    /// Sessions whose next hop found the neighbour table full (forwarded as with none).
    pub neighbour_table_full: u64,
    /// Sessions added, and adds refused by cause.
    pub adds: u64,
    pub add_exists: u64,
    pub add_full: u64,
    pub add_invalid: u64,
    /// Sessions removed by a delete command.
    pub deletes: u64,
    /// Sessions closed by cause.
    pub closed_finack: u64,
    pub closed_rst: u64,
    pub closed_timeout: u64,
    /// Closed records handed to the closed-session feed.
    pub closed_sent: u64,
    /// Times the feed was full and records waited in the worker (back-pressure).
    pub feed_full: u64,
}

/// One port as seen by one worker (its queue pair), or by all of them added up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PortCounters {
    pub name: String,
    pub rx: u64,
    pub tx: u64,
    /// Packets the queue did not take (full ring or socket); they were freed.
    pub tx_drops: u64,
}

/// Latency histograms in nanoseconds.
#[derive(Clone, Debug)]
pub struct Latency {
    /// Time a packet spends in the worker: each busy loop's receive, process and
    /// transmit time, divided among the packets it finished.
    pub packet_ns: Histogram<u64>,
    /// From an add being received (or its command queued) to the session being live
    /// in the table.
    pub add_ns: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            packet_ns: new_histogram(),
            add_ns: new_histogram(),
        }
    }
}

/// 1 ns to 1 minute, three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

impl Latency {
    pub fn add(&mut self, other: &Latency) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.packet_ns.add(&other.packet_ns);
        let _ = self.add_ns.add(&other.add_ns);
    }
}

/// A worker's answer to a report command.
#[derive(Clone, Debug)]
pub struct WorkerReport {
    pub worker: usize,
    /// The core it is pinned to, if pinning was asked for and worked.
    pub core: Option<usize>,
    pub counters: WorkerCounters,
    /// In the engine's port order.
    pub ports: Vec<PortCounters>,
    /// Slots in use (live sessions and closed ones waiting for the feed).
    pub sessions: usize,
    pub capacity: usize,
    /// Closed records waiting for room in the feed.
    pub closed_waiting: usize,
    /// Memory reserved for the flow table and its bookkeeping.
    pub table_bytes: usize,
    pub latency: Latency,
}

impl WorkerCounters {
    pub fn add(&mut self, o: &WorkerCounters) {
        let WorkerCounters {
            polls,
            idle_polls,
            rx,
            hits,
            misses,
            not_flow,
            malformed,
            rx_no_lif,
            dropped,
            forwarded,
            to_firewall,
            to_collector,
            copy_failures,
            retag_failures,
            forwarded_unresolved,
            tcp_invalid_out_of_window,
            tcp_invalid_no_window,
            tcp_invalid_bad_checksum,
            neighbour_requests,
            neighbour_requests_deferred,
            neighbour_replies,
            neighbour_updates,
            neighbour_failures,
            neighbour_table_full,
            adds,
            add_exists,
            add_full,
            add_invalid,
            deletes,
            closed_finack,
            closed_rst,
            closed_timeout,
            closed_sent,
            feed_full,
        } = self;
        *polls += o.polls;
        *idle_polls += o.idle_polls;
        *rx += o.rx;
        *hits += o.hits;
        *misses += o.misses;
        *not_flow += o.not_flow;
        *malformed += o.malformed;
        *rx_no_lif += o.rx_no_lif;
        *dropped += o.dropped;
        *forwarded += o.forwarded;
        *to_firewall += o.to_firewall;
        *to_collector += o.to_collector;
        *copy_failures += o.copy_failures;
        *retag_failures += o.retag_failures;
        *forwarded_unresolved += o.forwarded_unresolved;
        *tcp_invalid_out_of_window += o.tcp_invalid_out_of_window;
        *tcp_invalid_no_window += o.tcp_invalid_no_window;
        *tcp_invalid_bad_checksum += o.tcp_invalid_bad_checksum;
        *neighbour_requests += o.neighbour_requests;
        *neighbour_requests_deferred += o.neighbour_requests_deferred;
        *neighbour_replies += o.neighbour_replies;
        *neighbour_updates += o.neighbour_updates;
        *neighbour_failures += o.neighbour_failures;
        *neighbour_table_full += o.neighbour_table_full;
        *adds += o.adds;
        *add_exists += o.add_exists;
        *add_full += o.add_full;
        *add_invalid += o.add_invalid;
        *deletes += o.deletes;
        *closed_finack += o.closed_finack;
        *closed_rst += o.closed_rst;
        *closed_timeout += o.closed_timeout;
        *closed_sent += o.closed_sent;
        *feed_full += o.feed_full;
    }
}

impl PortCounters {
    pub fn add(&mut self, o: &PortCounters) {
        self.rx += o.rx;
        self.tx += o.tx;
        self.tx_drops += o.tx_drops;
    }
}

/// All workers added up.
#[derive(Clone, Debug)]
pub struct EngineReport {
    pub workers: Vec<WorkerReport>,
    pub total: WorkerCounters,
    pub ports: Vec<PortCounters>,
    pub latency: Latency,
    pub sessions: usize,
    pub capacity: usize,
    pub table_bytes: usize,
}

impl EngineReport {
    pub fn merge(workers: Vec<WorkerReport>) -> EngineReport {
        let mut total = WorkerCounters::default();
        let mut ports: Vec<PortCounters> = Vec::new();
        let mut latency = Latency::default();
        for w in &workers {
            total.add(&w.counters);
            latency.add(&w.latency);
            for (i, p) in w.ports.iter().enumerate() {
                if ports.len() <= i {
                    ports.push(PortCounters {
                        name: p.name.clone(),
                        ..PortCounters::default()
                    });
                }
                ports[i].add(p);
            }
        }
        EngineReport {
            total,
            ports,
            latency,
            sessions: workers.iter().map(|w| w.sessions).sum(),
            capacity: workers.iter().map(|w| w.capacity).sum(),
            table_bytes: workers.iter().map(|w| w.table_bytes).sum(),
            workers,
        }
    }
}
