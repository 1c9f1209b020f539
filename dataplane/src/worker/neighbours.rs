//! A worker's part in next-hop resolution (see `crate::neighbour`): every worker
//! learns from the ARP and ND frames it receives and tells the slot what it heard;
//! worker 0 also runs the resolver every `RESOLVE_PERIOD`, sends the requests on its
//! own queues within a rate limit, and publishes what changed. None of it runs per
//! flow packet: learning looks only at non-flow frames of ports that resolve.

use std::collections::HashMap;
use std::net::IpAddr;

use super::Worker;
use crate::neighbour::{
    heard_in_frame, write_request, NeighbourTable, Probe, RequestSource, ResolverEntry, Route,
    Source, State, Timers,
};
use crate::packet::PacketPool;

/// How often worker 0 runs the resolver.
const RESOLVE_PERIOD_NS: u64 = 10_000_000;
/// Request buffers of the resolver (a request leaves within the loop that made it).
const REQUEST_BUFFERS: u32 = 64;

/// How resolution behaves: the timers, the rate limit and each port's addresses.
#[derive(Clone, Debug)]
pub struct NeighbourConfig {
    /// Entries the table holds, static ones included.
    pub capacity: usize,
    pub timers: Timers,
    /// Requests the device sends per second at most, all ports together.
    pub requests_per_s: u32,
    /// Addresses ports send requests from: (port index, address); a port without an
    /// IPv4 address sends ARP probes from 0.0.0.0, one without IPv6 uses its
    /// link-local address.
    pub port_addresses: Vec<(usize, IpAddr)>,
}

impl Default for NeighbourConfig {
    fn default() -> NeighbourConfig {
        NeighbourConfig {
            capacity: 1024,
            timers: Timers::default(),
            requests_per_s: 100,
            port_addresses: Vec::new(),
        }
    }
}

/// What a worker keeps to learn: its index of learned slots by (address, port),
/// brought up to date when the table has grown.
#[derive(Default)]
pub(super) struct Learner {
    slots: HashMap<(IpAddr, u8), u16>,
    indexed: usize,
}

impl Learner {
    /// The learned slot of `addr` on port `port`, indexing the slots made since the
    /// last look first.
    fn slot(&mut self, table: &NeighbourTable, addr: IpAddr, port: u8) -> Option<u16> {
        while self.indexed < table.len() {
            let info = table.slot(self.indexed).info();
            if let (Source::Learned, Some(p)) = (info.source, info.port) {
                self.slots.insert((info.addr, p), self.indexed as u16);
            }
            self.indexed += 1;
        }
        self.slots.get(&(addr, port)).copied()
    }
}

/// Worker 0's resolver: an entry per learned slot, the rate limit, the request pool.
pub(super) struct Resolver {
    entries: Vec<Option<ResolverEntry>>,
    timers: Timers,
    requests_per_s: u32,
    /// Requests that may be sent now (refilled with time, at most a second's worth).
    tokens: f64,
    last_ns: u64,
    next_run_ns: u64,
    pool: PacketPool,
    /// Per port: where its requests come from.
    sources: Vec<RequestSource>,
}

impl Resolver {
    pub(super) fn new(
        table: &NeighbourTable,
        cfg: &NeighbourConfig,
        sources: Vec<RequestSource>,
    ) -> Result<Resolver, crate::mem::ReserveError> {
        Ok(Resolver {
            entries: Vec::with_capacity(table.capacity()),
            timers: cfg.timers,
            requests_per_s: cfg.requests_per_s,
            tokens: f64::from(cfg.requests_per_s),
            last_ns: 0,
            next_run_ns: 0,
            pool: PacketPool::new(REQUEST_BUFFERS, crate::neighbour::MAX_REQUEST_LEN)?,
            sources,
        })
    }

    fn refill(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.last_ns) as f64 / 1e9;
        let cap = f64::from(self.requests_per_s);
        self.tokens = (self.tokens + elapsed * cap).min(cap);
        self.last_ns = now;
    }

    fn take_token(&mut self) -> bool {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The route an entry publishes.
fn route_of(e: &ResolverEntry) -> Route {
    match (e.usable(), e.mac) {
        (true, Some(mac)) => Route::Mac { mac, port: None },
        _ => Route::Unresolved,
    }
}

impl Worker {
    /// A non-flow frame received on port `p`: if it is an ARP or ND frame from a
    /// next hop of that port, the slot hears of it. Cold: only frames that are no
    /// flow get here, and only on ports that resolve.
    #[cold]
    pub(super) fn learn_from(&mut self, p: usize, frame: &[u8]) {
        let Some((addr, heard)) = heard_in_frame(frame, self.ports[p].mac) else {
            return;
        };
        let table = &self.plan.neighbours;
        let Some(i) = self.learner.slot(table, addr, p as u8) else {
            return;
        };
        table.slot(usize::from(i)).post(heard);
        if heard.solicited {
            self.counters.neighbour_replies += 1;
        } else {
            self.counters.neighbour_updates += 1;
        }
    }

    /// The slot (1-based, 0: none) a new session's next hop uses; 0 when the table
    /// is full (counted): the session forwards as with no next hop.
    pub(super) fn next_hop_slot(&mut self, addr: Option<IpAddr>, out_port: u8) -> u16 {
        let Some(addr) = addr else {
            return 0;
        };
        match self.plan.neighbours.intern(addr, out_port) {
            Some(i) => i + 1,
            None => {
                self.counters.neighbour_table_full += 1;
                0
            }
        }
    }

    /// Worker 0, every `RESOLVE_PERIOD_NS`: takes what was heard, runs the timers,
    /// sends requests and publishes changes. Returns the requests sent.
    #[inline]
    pub(super) fn resolve(&mut self) -> usize {
        // Checked in place first: the common case (not due, or not worker 0) moves
        // nothing.
        match &self.resolver {
            Some(r) if self.clock.ns >= r.next_run_ns => {}
            _ => return 0,
        }
        let mut r = self.resolver.take().expect("checked above");
        r.next_run_ns = self.clock.ns + RESOLVE_PERIOD_NS;
        let sent = self.run_resolver(&mut r);
        self.resolver = Some(r);
        sent
    }

    #[cold]
    fn run_resolver(&mut self, r: &mut Resolver) -> usize {
        let table = self.plan.neighbours.clone();
        let now = table.now_ns();
        r.refill(now);
        let mut sent = 0;
        for i in 0..table.len() {
            let slot = table.slot(i);
            let info = slot.info();
            let (Source::Learned, Some(port)) = (info.source, info.port) else {
                continue;
            };
            if r.entries.len() <= i {
                r.entries.resize(i + 1, None);
            }
            let e = r.entries[i].get_or_insert_with(|| ResolverEntry::new(table.can_resolve(port)));
            if e.state == State::Noarp {
                continue;
            }
            let (seq, heard) = slot.last_heard();
            let mut changed = false;
            let mut confirmed = false;
            if seq != e.heard_seq {
                e.heard_seq = seq;
                let step = e.heard(heard, now, &r.timers);
                changed |= step.changed;
                confirmed |= step.confirmed;
            }
            let step = e.tick(now, slot.sessions() > 0, &r.timers);
            changed |= step.changed;
            if step.failed {
                self.counters.neighbour_failures += 1;
            }
            if changed {
                slot.publish(e.state, route_of(e), now);
            } else if confirmed {
                slot.touch(now);
            }
            if let Some(probe) = step.probe {
                if r.take_token() && self.send_request(r, port, info.addr, probe) {
                    sent += 1;
                } else {
                    // Tried again at the next run, without counting as a request.
                    if let Some(e) = r.entries[i].as_mut() {
                        e.unsend(now);
                    }
                    self.counters.neighbour_requests_deferred += 1;
                }
            }
        }
        sent
    }

    /// Queues a request for `target` on port `port`; false when no buffer was free.
    fn send_request(&mut self, r: &Resolver, port: u8, target: IpAddr, probe: Probe) -> bool {
        let p = usize::from(port);
        let Some(from) = r.sources.get(p) else {
            return false;
        };
        let mut frame = [0u8; crate::neighbour::MAX_REQUEST_LEN];
        let len = write_request(&mut frame, from, target, probe);
        let Some(pkt) = r.pool.alloc_from(&frame[..len]) else {
            return false;
        };
        self.counters.neighbour_requests += 1;
        self.send(p, pkt);
        true
    }
}
