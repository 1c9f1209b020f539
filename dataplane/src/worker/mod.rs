//! A worker: one pinned thread that owns a flow table and one queue pair of every
//! port, and loops: commands, receive and process bursts, transmit, age sessions,
//! hand over closed records. See DESIGN.md beside this file.
//!
//! - `pipeline.rs`: the hot path (a received burst -> lookups -> actions -> tx).
//! - `sessions.rs`: session logic (add, delete, query, TCP close state).
//! - `cleaner.rs`: idle expiry and the hand-over of closed records.
//! - `neighbours.rs`: learning next hops' MACs, and (worker 0) resolving them.
//! - `command.rs`: what the control side sends and how answers come back.

mod cleaner;
pub mod command;
mod neighbours;
mod pipeline;
mod sessions;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Receiver;

use crate::engine::ClosedSender;
use crate::flow::{ClosedQueue, FlowTable, TimerWheel};
use crate::mem::ReserveError;
use crate::neighbour::{NeighbourTable, RequestSource};
use crate::packet::Burst;
use crate::port::PortQueue;
use crate::stats::{Latency, PortCounters, WorkerCounters, WorkerReport};
pub use command::{Added, Command, Reply};
pub use neighbours::NeighbourConfig;
use pipeline::Pipe;

/// Commands taken per loop iteration, so a flood of commands cannot starve packets.
const COMMANDS_PER_POLL: usize = 64;
/// Entries the cleaner looks at per loop iteration.
const AGING_BUDGET: usize = 256;
/// Closed records handed to the feed per loop iteration.
const CLOSED_BUDGET: usize = 256;
/// How long an adaptive worker polls on after its last work before it starts to
/// sleep, unless configured. Waking a sleeping worker costs a futex wake and, on a
/// VM whose core went idle, tens of microseconds more; AddSession rounds come every
/// ~40-100 us under load, so a spin shorter than that put the worker to sleep between
/// rounds (20 us: add-to-live p99 150-240 us on the pinned real-time config, 100 us:
/// 56-69 us). At most 100 us of a core is burnt each time work stops.
pub const DEFAULT_IDLE_SPIN: Duration = Duration::from_micros(100);
/// Longest sleep of an idle adaptive worker (also bounds aging latency).
const MAX_SLEEP: Duration = Duration::from_millis(1);

/// How a worker waits when there is nothing to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollMode {
    /// Never yields the core: for dedicated, isolated cores.
    Busy,
    /// Polls on for `spin` after its last work, then sleeps in growing steps (up to
    /// 1 ms) until traffic or a command wakes it: for shared machines. The default.
    Adaptive { spin: Duration },
}

impl PollMode {
    /// Adaptive with the default spin.
    pub fn adaptive() -> PollMode {
        PollMode::Adaptive {
            spin: DEFAULT_IDLE_SPIN,
        }
    }
}

/// What every worker knows of the device (the same for all).
#[derive(Clone)]
pub struct WorkerPlan {
    /// lif (low 16 bits) -> port index.
    pub lif_ports: HashMap<u16, u8>,
    pub firewall_port: u8,
    pub collector_port: Option<u8>,
    /// Next hops, static and learned: shared by all workers.
    pub neighbours: Arc<NeighbourTable>,
    pub neighbour: NeighbourConfig,
    pub tick: Duration,
    pub default_timeout_s: u32,
    /// Sessions held by all workers together may not exceed this.
    pub max_sessions: usize,
    pub capacity_per_worker: usize,
    pub poll: PollMode,
    pub core: Option<usize>,
}

/// One port as a worker holds it.
pub struct WorkerPort {
    pub queue: Box<dyn PortQueue>,
    /// The port's lif (None: no session traffic arrives here).
    pub lif: Option<u16>,
    pub mac: [u8; 6],
    /// Destination MAC written on frames forwarded out of this port without a
    /// session next hop; None leaves frames as they are.
    pub next_hop_mac: Option<[u8; 6]>,
    /// Packets between the stages of the hot path (see pipeline.rs). Taken out of the
    /// port while the pipeline runs, so that the stages can borrow the worker.
    pipe: Option<Box<Pipe>>,
    tx: Burst,
    counters: PortCounters,
}

impl WorkerPort {
    pub fn new(
        name: &str,
        queue: Box<dyn PortQueue>,
        lif: Option<u16>,
        mac: [u8; 6],
        next_hop_mac: Option<[u8; 6]>,
    ) -> WorkerPort {
        WorkerPort {
            queue,
            lif,
            mac,
            next_hop_mac,
            pipe: Some(Pipe::new()),
            tx: Burst::new(),
            counters: PortCounters {
                name: name.to_string(),
                ..PortCounters::default()
            },
        }
    }
}

/// The worker's notion of time, read once per loop iteration.
struct Clock {
    start: Instant,
    start_wall_ns: u64,
    tick_ns: u64,
    /// Ticks since start (last-seen stamps and the timer wheel).
    tick: u32,
    /// Wall clock, ns since the Unix epoch (session start and end times).
    wall_ns: u64,
    /// `cycles()` at `start`, and ns per cycle: the rate measured against the
    /// monotonic clock, refined at every resync.
    start_cycles: u64,
    ns_per_cycle: f64,
    /// The last resync with the monotonic clock: cycles and ns since start. Between
    /// resyncs the time is the TSC's, converted: reading the monotonic clock costs
    /// ~26 ns here, a third of a busy loop's fixed cost, where the TSC costs ~10.
    sync_cycles: u64,
    sync_ns: u64,
    /// Nanoseconds since start at the last update (time never goes back).
    ns: u64,
    /// `cycles()` as read by the last update.
    cycles: u64,
}

/// How long the time may run on the TSC alone before a resync.
const RESYNC_NS: f64 = 100_000.0;

/// A cheap timestamp for the per-loop latency histogram: the TSC costs a few cycles
/// where two monotonic clock reads per burst cost about 2 ns per packet. Only
/// differences of it mean anything; `Clock::cycles_to_ns` converts them.
#[inline(always)]
fn cycles() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: rdtsc has no preconditions.
    unsafe {
        std::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        use std::sync::OnceLock;
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

impl Clock {
    fn new(tick: Duration) -> Clock {
        let start_wall_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let start = Instant::now();
        let start_cycles = cycles();
        // A first rate over 200 us; every resync refines it.
        while start.elapsed() < Duration::from_micros(200) {
            std::hint::spin_loop();
        }
        let mut clock = Clock {
            start,
            start_wall_ns,
            tick_ns: tick.as_nanos().max(1) as u64,
            tick: 0,
            wall_ns: start_wall_ns,
            start_cycles,
            ns_per_cycle: 1.0,
            sync_cycles: 0,
            sync_ns: 0,
            ns: 0,
            cycles: 0,
        };
        clock.resync(cycles().wrapping_sub(start_cycles));
        clock.update();
        clock
    }

    #[inline]
    fn update(&mut self) {
        self.cycles = cycles();
        let c = self.cycles.wrapping_sub(self.start_cycles);
        let on_tsc = c.wrapping_sub(self.sync_cycles) as f64 * self.ns_per_cycle;
        let ns = if on_tsc < RESYNC_NS {
            self.sync_ns + on_tsc as u64
        } else {
            self.resync(c)
        };
        // A resync may find the TSC's estimate a little ahead.
        self.ns = self.ns.max(ns);
        self.tick = (self.ns / self.tick_ns) as u32;
        self.wall_ns = self.start_wall_ns + self.ns;
    }

    /// Reads the monotonic clock, refines the TSC rate; returns ns since start.
    #[cold]
    fn resync(&mut self, c: u64) -> u64 {
        let ns = self.start.elapsed().as_nanos() as u64;
        if c > 0 {
            self.ns_per_cycle = ns as f64 / c as f64;
        }
        self.sync_cycles = c;
        self.sync_ns = ns;
        ns
    }

    /// Nanoseconds in `c` cycles (a difference of `cycles()`).
    #[inline]
    fn cycles_to_ns(&self, c: u64) -> u64 {
        (c as f64 * self.ns_per_cycle) as u64
    }

    /// Whole ticks covering `seconds` (at least one).
    fn ticks(&self, seconds: u32) -> u32 {
        let t = (u64::from(seconds) * 1_000_000_000).div_ceil(self.tick_ns);
        t.clamp(1, u64::from(u32::MAX / 2)) as u32
    }
}

/// What a worker left behind when it stopped.
#[derive(Debug, Default)]
pub struct WorkerExit {
    /// Closed records that could not be handed to the feed.
    pub closed_undelivered: usize,
    /// Sessions still live.
    pub sessions: usize,
}

pub struct Worker {
    id: usize,
    plan: WorkerPlan,
    table: FlowTable,
    wheel: TimerWheel,
    ports: Vec<WorkerPort>,
    commands: Receiver<Command>,
    closed_feed: ClosedSender,
    /// Slots of closed sessions waiting for room in the feed, oldest first.
    closed_waiting: ClosedQueue,
    /// Sessions held by all workers (capacity is device-wide).
    live: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    clock: Clock,
    default_timeout: u32,
    counters: WorkerCounters,
    latency: Latency,
    pinned: Option<usize>,
    /// The port of each lif (low 16 bits): the hot path finds a packet's way out
    /// here instead of storing ports in the entry. Lifs of sessions are checked at add.
    lif_port: Box<[u8; 1 << 16]>,
    learner: neighbours::Learner,
    /// Worker 0 only: next-hop resolution.
    resolver: Option<Box<neighbours::Resolver>>,
}

impl Worker {
    pub fn new(
        id: usize,
        plan: WorkerPlan,
        ports: Vec<WorkerPort>,
        commands: Receiver<Command>,
        closed_feed: ClosedSender,
        live: Arc<AtomicUsize>,
        stop: Arc<AtomicBool>,
    ) -> Result<Worker, ReserveError> {
        let table = FlowTable::with_capacity(plan.capacity_per_worker)?;
        let clock = Clock::new(plan.tick);
        let mut lif_port: Box<[u8; 1 << 16]> = vec![0u8; 1 << 16]
            .into_boxed_slice()
            .try_into()
            .expect("65536 bytes");
        for (&lif, &port) in &plan.lif_ports {
            lif_port[usize::from(lif)] = port;
        }
        let resolver = if id == 0 {
            let sources = request_sources(&ports, &plan.neighbour);
            Some(Box::new(neighbours::Resolver::new(
                &plan.neighbours,
                &plan.neighbour,
                sources,
            )?))
        } else {
            None
        };
        Ok(Worker {
            id,
            wheel: TimerWheel::new(0),
            closed_waiting: ClosedQueue::default(),
            default_timeout: clock.ticks(plan.default_timeout_s),
            table,
            plan,
            ports,
            commands,
            closed_feed,
            live,
            stop,
            clock,
            counters: WorkerCounters::default(),
            latency: Latency::default(),
            pinned: None,
            lif_port,
            learner: neighbours::Learner::default(),
            resolver,
        })
    }

    /// Runs until the engine says stop. Pins the thread first if the plan names a core.
    pub fn run(mut self) -> WorkerExit {
        if let Some(core) = self.plan.core {
            if core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                self.pinned = Some(core);
            }
        }
        let mut last_work_ns = self.clock.ns;
        let mut sleep = Duration::from_micros(10);
        while !self.stop.load(Ordering::Relaxed) {
            let work = self.poll_once();
            if work > 0 {
                last_work_ns = self.clock.ns;
                sleep = Duration::from_micros(10);
                continue;
            }
            self.counters.idle_polls += 1;
            if let PollMode::Adaptive { spin } = self.plan.poll {
                if self.clock.ns - last_work_ns > spin.as_nanos() as u64 {
                    // Wakers (rings, the engine's command send) unpark us early.
                    std::thread::park_timeout(sleep);
                    sleep = (sleep * 2).min(MAX_SLEEP);
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        self.finish()
    }

    /// One loop iteration; returns how much work it found (commands, packets, closes).
    pub fn poll_once(&mut self) -> usize {
        self.counters.polls += 1;
        self.clock.update();
        let commands = self.take_commands();
        // Packet processing time is taken per loop (receive, parse, look up, act, for
        // every port, and the transmit of what is left in the tx bursts) and divided
        // among the packets finished: two TSC reads per loop, where one pair per port
        // burst cost ~2% of the packet rate (DESIGN.md).
        let t0 = if commands > 0 {
            cycles()
        } else {
            self.clock.cycles
        };
        let mut work = commands;
        let mut finished = 0;
        for p in 0..self.ports.len() {
            let (received, done) = self.receive(p);
            work += received + done;
            finished += done;
        }
        work += self.resolve();
        for p in 0..self.ports.len() {
            self.flush_port(p);
        }
        // After the flush: on a kernel port the transmit is a system call in which the
        // kernel does its work per frame (af_xdp copy mode, af_packet).
        self.record_packet_time(t0, finished);
        work += self.age();
        work += self.hand_over_closed();
        if work == 0 {
            // About to idle: a backend may hold frames a failed kick left behind.
            for port in &mut self.ports {
                port.queue.flush();
            }
        }
        work
    }

    /// Records the time since `t0` (a `cycles()` reading), divided among the
    /// `finished` packets, in the packet-processing histogram.
    fn record_packet_time(&mut self, t0: u64, finished: usize) {
        if finished > 0 {
            let ns = self.clock.cycles_to_ns(cycles().wrapping_sub(t0));
            let per_packet = ns / finished as u64;
            let _ = self
                .latency
                .packet_ns
                .record_n(per_packet.max(1), finished as u64);
        }
    }

    fn take_commands(&mut self) -> usize {
        let mut n = 0;
        while n < COMMANDS_PER_POLL {
            match self.commands.try_recv() {
                Ok(cmd) => {
                    self.run_command(cmd);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        n
    }

    fn flush_port(&mut self, p: usize) {
        let port = &mut self.ports[p];
        if port.tx.is_empty() {
            return;
        }
        let sent = port.queue.tx_burst(&mut port.tx);
        port.counters.tx += sent as u64;
        // What the queue did not take is counted and freed.
        port.counters.tx_drops += port.tx.len() as u64;
        port.tx.clear();
    }

    fn report(&self) -> WorkerReport {
        WorkerReport {
            worker: self.id,
            core: self.pinned,
            counters: self.counters.clone(),
            ports: self.ports.iter().map(|p| p.counters.clone()).collect(),
            sessions: self.table.len(),
            capacity: self.table.capacity(),
            closed_waiting: self.closed_waiting.len(),
            table_bytes: self.table.bytes(),
            latency: self.latency.clone(),
        }
    }

    /// Last flush and hand-over before the thread ends; commands still queued are
    /// refused so that no caller waits forever.
    fn finish(mut self) -> WorkerExit {
        let t0 = cycles();
        let mut finished = 0;
        for p in 0..self.ports.len() {
            finished += self.drain_pipe(p);
        }
        self.record_packet_time(t0, finished);
        for p in 0..self.ports.len() {
            self.flush_port(p);
            self.ports[p].queue.flush();
        }
        while self.hand_over_closed() > 0 {}
        while let Ok(cmd) = self.commands.try_recv() {
            cmd.refuse();
        }
        WorkerExit {
            closed_undelivered: self.closed_waiting.len(),
            sessions: self.table.len() - self.closed_waiting.len(),
        }
    }
}

/// Where each port's requests come from: its MAC and the addresses the config gives
/// it (the first of each family).
fn request_sources(ports: &[WorkerPort], cfg: &NeighbourConfig) -> Vec<RequestSource> {
    ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let mut from = RequestSource {
                mac: port.mac,
                ipv4: None,
                ipv6: None,
            };
            for &(_, addr) in cfg.port_addresses.iter().filter(|(p, _)| *p == i) {
                match addr {
                    std::net::IpAddr::V4(a) => {
                        from.ipv4.get_or_insert(a);
                    }
                    std::net::IpAddr::V6(a) => {
                        from.ipv6.get_or_insert(a);
                    }
                }
            }
            from
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The clock runs on the TSC between resyncs: it must never go back and must stay
    /// within a resync period (plus slack) of the monotonic clock. The monotonic clock
    /// is read just before and just after each update, and the update's time must lie
    /// between the two: a preemption between the reads widens that window instead of
    /// counting as the clock's error (it did under CI's load, 2.3 ms).
    #[test]
    fn the_clock_follows_the_monotonic_clock_and_never_goes_back() {
        let mut clock = Clock::new(Duration::from_micros(100));
        let mut last = (clock.ns, clock.tick, clock.wall_ns);
        let deadline = Instant::now() + Duration::from_millis(50);
        let mut worst = 0i64;
        while Instant::now() < deadline {
            let before = clock.start.elapsed().as_nanos() as i64;
            clock.update();
            let after = clock.start.elapsed().as_nanos() as i64;
            let now = (clock.ns, clock.tick, clock.wall_ns);
            assert!(now.0 >= last.0 && now.1 >= last.1 && now.2 >= last.2);
            last = now;
            let ns = clock.ns as i64;
            let off = (before - ns).max(ns - after).max(0);
            worst = worst.max(off);
            if worst > 2_000_000 {
                break;
            }
        }
        assert!(worst <= 2_000_000, "{worst} ns off the monotonic clock");
        assert_eq!(clock.tick as u64, clock.ns / 100_000);
    }
}
