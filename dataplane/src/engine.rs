//! The engine: starts the workers on their ports, carries commands to them, and
//! stops them. It is the dataplane's whole interface to the control plane.
//!
//! The engine does not keep sessions: it knows which worker owns a 5-tuple (the same
//! symmetric steering hash the ports use), not which worker holds an id. The control
//! plane's session directory keeps ids unique across workers and remembers owners;
//! the blocking helpers here that take only an id ask every worker.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::neighbour::{NeighbourTable, NeighbourView};
use crate::port::{Port, PortError};
use crate::session::{AddError, SessionInfo, SessionSpec};
use crate::stats::{EngineReport, WorkerReport};
use crate::steer::Steering;
use crate::worker::{
    Added, Command, NeighbourConfig, PollMode, Worker, WorkerExit, WorkerPlan, WorkerPort,
};

/// A port and its role in the device.
pub struct PortConfig {
    pub port: Box<dyn Port>,
    /// The logical interface this port carries (VLAN-tagged frames carry
    /// `vlan << 16 | lif`). None: no session traffic arrives here (a firewall or
    /// collector port only).
    pub lif: Option<u16>,
    /// Destination MAC for frames forwarded out of this port when the session names
    /// no next hop; None forwards frames unchanged.
    pub next_hop_mac: Option<[u8; 6]>,
}

/// A static entry of the neighbour table: `action_next_hop` -> MAC (and port). It
/// always wins over what the device learns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    pub addr: IpAddr,
    pub mac: [u8; 6],
    /// Port index the next hop is reached by; None: the session's out_lif port.
    pub port: Option<usize>,
}

pub struct EngineConfig {
    pub workers: usize,
    /// Core of each worker; empty: not pinned.
    pub cores: Vec<usize>,
    /// Sessions the device holds at most, all workers together.
    pub max_sessions: usize,
    /// Idle timeout of sessions added with timeout 0.
    pub default_timeout_s: u32,
    /// Granularity of idle timeouts.
    pub tick: Duration,
    pub poll: PollMode,
    pub ports: Vec<PortConfig>,
    /// Index in `ports` of the port misses, TCP control packets and snoop copies go to.
    pub firewall_port: usize,
    /// Index in `ports` of the port mirror copies go to.
    pub collector_port: Option<usize>,
    pub next_hops: Vec<NextHop>,
    /// Resolution of next hops the config does not list.
    pub neighbours: NeighbourConfig,
    /// Commands that may wait for each worker.
    pub command_queue: usize,
    /// Closed records that may wait in the feed (all workers).
    pub closed_queue: usize,
    /// Closed records that may be out of the workers and not yet forgotten by the
    /// reader of the feed (`Engine::closed_room`): beyond that, closed sessions wait
    /// in the workers' tables.
    pub closed_held: usize,
    /// Run the workers as real-time threads (SCHED_FIFO) at this priority (1..=99), so
    /// nothing else on their cores delays a burst or a command; None: ordinary
    /// threads. Needs root or CAP_SYS_NICE. With busy polling a real-time worker
    /// keeps its core (the kernel's RT throttling leaves others 5%).
    pub realtime_priority: Option<u8>,
}

impl EngineConfig {
    /// One worker, no ports yet, defaults for the rest.
    pub fn new(ports: Vec<PortConfig>, firewall_port: usize) -> EngineConfig {
        EngineConfig {
            workers: 1,
            cores: Vec::new(),
            max_sessions: 100_000,
            default_timeout_s: 30,
            tick: Duration::from_millis(100),
            poll: PollMode::adaptive(),
            ports,
            firewall_port,
            collector_port: None,
            next_hops: Vec::new(),
            neighbours: NeighbourConfig::default(),
            command_queue: 1024,
            closed_queue: 65_536,
            closed_held: usize::MAX,
            realtime_priority: None,
        }
    }
}

/// Why the engine did not start.
#[derive(Debug)]
pub enum EngineError {
    Config(String),
    Port(PortError),
    Memory(String),
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Config(s) => write!(f, "bad engine config: {s}"),
            EngineError::Port(e) => write!(f, "{e}"),
            EngineError::Memory(s) => write!(f, "cannot reserve memory: {s}"),
        }
    }
}

impl std::error::Error for EngineError {}

/// Sessions a worker is sized for: its share of the device, with room for the
/// steering hash not being perfectly even.
fn capacity_per_worker(max_sessions: usize, workers: usize) -> usize {
    if workers <= 1 {
        return max_sessions.max(1);
    }
    let share = max_sessions.div_ceil(workers);
    (share + share / 4 + 1024).min(max_sessions).max(1)
}

/// Puts a worker thread in the SCHED_FIFO class at `prio`.
fn make_realtime<T>(join: &JoinHandle<T>, prio: u8) -> Result<(), std::io::Error> {
    use std::os::unix::thread::JoinHandleExt;
    if !(1..=99).contains(&prio) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "priority must be 1 to 99",
        ));
    }
    let param = libc::sched_param {
        sched_priority: prio as libc::c_int,
    };
    // SAFETY: the handle names a thread that is alive (joined only later), and
    // `param` is a valid sched_param for the call's duration.
    let rc = unsafe { libc::pthread_setschedparam(join.as_pthread_t(), libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}

/// The scheduler slice an ordinary (not real-time) worker asks for.
const WORKER_SLICE_NS: u64 = 100_000;

/// Asks the kernel's fair scheduler (EEVDF, Linux 6.12 and later) for a short slice
/// for the calling thread: a worker woken by a command or a frame then preempts a
/// thread that has run its slice, instead of waiting up to the default 3 ms behind
/// the control plane and clients on a shared machine. Its share of the CPU is
/// unchanged (same weight). Older kernels ignore the request.
fn request_short_slice() -> Result<(), std::io::Error> {
    // SAFETY: getpriority has no memory arguments; 0 names the calling thread.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let attr = libc::sched_attr {
        size: std::mem::size_of::<libc::sched_attr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_flags: 0,
        sched_nice: nice,
        sched_priority: 0,
        sched_runtime: WORKER_SLICE_NS,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: `attr` is a valid sched_attr of the size it declares, alive for the
    // call; pid 0 is the calling thread.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const _, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// What `Engine::stop` found.
#[derive(Debug, Default)]
pub struct StopReport {
    /// Closed records never handed over: in the feed and still in the workers.
    pub closed_undelivered: usize,
    /// Sessions still live when the workers stopped.
    pub sessions: usize,
    /// Workers that ended by a panic.
    pub crashed: usize,
}

struct WorkerHandle {
    commands: Sender<Command>,
    thread: Thread,
    /// Taken by the first stop.
    join: Mutex<Option<JoinHandle<WorkerExit>>>,
}

/// Where a worker sends closed records: the feed's channel, within the room the
/// reader has left (`Engine::closed_room`).
#[derive(Clone)]
pub struct ClosedSender {
    records: Sender<SessionInfo>,
    room: Arc<AtomicUsize>,
}

impl ClosedSender {
    /// Sends one record if there is room (else `Full`, as for a full channel).
    pub fn try_send(&self, info: SessionInfo) -> Result<(), TrySendError<SessionInfo>> {
        let took = self
            .room
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(1));
        if took.is_err() {
            return Err(TrySendError::Full(info));
        }
        let sent = self.records.try_send(info);
        if sent.is_err() {
            self.room.fetch_add(1, Ordering::AcqRel);
        }
        sent
    }
}

/// The running dataplane.
pub struct Engine {
    workers: Vec<WorkerHandle>,
    steering: Steering,
    closed: Receiver<SessionInfo>,
    closed_room: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    live: Arc<AtomicUsize>,
    /// Kept open for the workers' lifetime (some backends stop when the port goes).
    _ports: Mutex<Vec<Box<dyn Port>>>,
    port_names: Vec<String>,
    neighbours: Arc<NeighbourTable>,
}

impl Engine {
    /// Checks the config, opens every port into one queue pair per worker, reserves
    /// the flow tables and starts the workers.
    pub fn start(cfg: EngineConfig) -> Result<Engine, EngineError> {
        let bad = |s: String| Err(EngineError::Config(s));
        let n = cfg.workers;
        if n == 0 || n > 64 {
            return bad(format!("workers = {n}: must be 1 to 64"));
        }
        if !cfg.cores.is_empty() && cfg.cores.len() != n {
            return bad(format!("{} cores given for {n} workers", cfg.cores.len()));
        }
        if cfg.ports.is_empty() || cfg.ports.len() > 255 {
            return bad(format!("{} ports: must be 1 to 255", cfg.ports.len()));
        }
        if cfg.max_sessions == 0 {
            return bad("max_sessions = 0".into());
        }
        let nports = cfg.ports.len();
        if cfg.firewall_port >= nports {
            return bad(format!(
                "firewall port {} of {nports} ports",
                cfg.firewall_port
            ));
        }
        if let Some(c) = cfg.collector_port.filter(|&c| c >= nports) {
            return bad(format!("collector port {c} of {nports} ports"));
        }
        let mut lif_ports = HashMap::new();
        for (i, p) in cfg.ports.iter().enumerate() {
            if let Some(lif) = p.lif {
                if lif_ports.insert(lif, i as u8).is_some() {
                    return bad(format!("lif {lif} is on two ports"));
                }
            }
        }
        for h in &cfg.next_hops {
            if let Some(p) = h.port.filter(|&p| p >= nports) {
                return bad(format!("next hop {} on port {p} of {nports} ports", h.addr));
            }
        }
        for &(p, addr) in &cfg.neighbours.port_addresses {
            if p >= nports {
                return bad(format!("address {addr} on port {p} of {nports} ports"));
            }
        }
        if cfg.tick.is_zero() {
            return bad("tick is zero".into());
        }

        let resolving: Vec<bool> = cfg
            .ports
            .iter()
            .map(|pc| pc.port.resolves_neighbours())
            .collect();
        let statics: Vec<_> = cfg
            .next_hops
            .iter()
            .map(|h| (h.addr, h.mac, h.port.map(|p| p as u8)))
            .collect();
        let capacity = cfg.neighbours.capacity.max(statics.len());
        let neighbours = Arc::new(
            NeighbourTable::new(capacity, &statics, resolving).map_err(EngineError::Config)?,
        );

        let mut ports = Vec::with_capacity(nports);
        let mut per_worker: Vec<Vec<WorkerPort>> = (0..n).map(|_| Vec::new()).collect();
        let mut port_names = Vec::new();
        for pc in cfg.ports {
            let mut port = pc.port;
            let queues = port.open(n).map_err(EngineError::Port)?;
            if queues.len() != n {
                return Err(EngineError::Port(PortError::new(
                    port.name(),
                    format!("opened {} queues for {n} workers", queues.len()),
                )));
            }
            for (w, q) in queues.into_iter().enumerate() {
                per_worker[w].push(WorkerPort::new(
                    port.name(),
                    q,
                    pc.lif,
                    port.mac(),
                    pc.next_hop_mac,
                ));
            }
            port_names.push(port.name().to_string());
            ports.push(port);
        }

        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(AtomicUsize::new(0));
        let (closed_tx, closed_rx) = crossbeam_channel::bounded(cfg.closed_queue.max(1));
        let closed_room = Arc::new(AtomicUsize::new(cfg.closed_held));
        let closed_tx = ClosedSender {
            records: closed_tx,
            room: closed_room.clone(),
        };
        let mut workers = Vec::with_capacity(n);
        for (w, wports) in per_worker.into_iter().enumerate() {
            let plan = WorkerPlan {
                lif_ports: lif_ports.clone(),
                firewall_port: cfg.firewall_port as u8,
                collector_port: cfg.collector_port.map(|c| c as u8),
                neighbours: neighbours.clone(),
                neighbour: cfg.neighbours.clone(),
                tick: cfg.tick,
                default_timeout_s: cfg.default_timeout_s,
                max_sessions: cfg.max_sessions,
                capacity_per_worker: capacity_per_worker(cfg.max_sessions, n),
                poll: cfg.poll,
                core: cfg.cores.get(w).copied(),
            };
            let (cmd_tx, cmd_rx) = crossbeam_channel::bounded(cfg.command_queue.max(1));
            let worker = Worker::new(
                w,
                plan,
                wports,
                cmd_rx,
                closed_tx.clone(),
                live.clone(),
                stop.clone(),
            )
            .map_err(|e| EngineError::Memory(format!("worker {w}: {e}")))?;
            // A real-time worker is made so from here; an ordinary one asks for a
            // short slice itself (only the calling thread can name itself to
            // sched_setattr without its tid), so the two never race.
            let short_slice = cfg.realtime_priority.is_none();
            let join = std::thread::Builder::new()
                .name(format!("worker-{w}"))
                .spawn(move || {
                    if short_slice {
                        // Only a hint: where it is refused (a seccomp filter) the
                        // worker runs with the default slice, as before.
                        let _ = request_short_slice();
                    }
                    worker.run()
                })
                .map_err(|e| EngineError::Config(format!("cannot start worker {w}: {e}")))?;
            if let Some(prio) = cfg.realtime_priority {
                if let Err(e) = make_realtime(&join, prio) {
                    stop.store(true, Ordering::Release);
                    join.thread().unpark();
                    let _ = join.join();
                    return Err(EngineError::Config(format!(
                        "cannot make worker {w} real-time (SCHED_FIFO {prio}): {e}"
                    )));
                }
            }
            let thread = join.thread().clone();
            for port in ports.iter_mut() {
                port.set_waker(w, thread.clone());
            }
            workers.push(WorkerHandle {
                commands: cmd_tx,
                thread,
                join: Mutex::new(Some(join)),
            });
        }
        Ok(Engine {
            workers,
            steering: Steering::new(n),
            closed: closed_rx,
            closed_room,
            stop,
            live,
            _ports: Mutex::new(ports),
            port_names,
            neighbours,
        })
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    pub fn port_names(&self) -> &[String] {
        &self.port_names
    }

    /// The neighbour table: static next hops and the ones sessions named.
    pub fn neighbours(&self) -> Vec<NeighbourView> {
        self.neighbours.list()
    }

    /// Each port's backend counters (`Port::counters`), by port name.
    pub fn port_counters(&self) -> Vec<(String, Vec<(&'static str, u64)>)> {
        let ports = self._ports.lock().unwrap_or_else(|e| e.into_inner());
        ports
            .iter()
            .map(|p| (p.name().to_string(), p.counters()))
            .collect()
    }

    /// Sessions held now (live, and closed ones whose record is not yet in the feed).
    pub fn sessions(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// The worker that owns a session: where both directions of its packets arrive.
    pub fn owner(&self, spec: &SessionSpec) -> usize {
        self.steering
            .worker(spec.v6, &spec.src, &spec.dst, spec.sport, spec.dport)
    }

    /// Queues a command for worker `w` and wakes it. Blocks while that worker's
    /// command queue is full. A worker that is gone answers the command as refused.
    pub fn send(&self, w: usize, cmd: Command) {
        let h = &self.workers[w];
        if let Err(e) = h.commands.send(cmd) {
            e.into_inner().refuse();
            return;
        }
        h.thread.unpark();
    }

    /// The closed-session feed: every session closed by FIN, RST or timeout, once.
    pub fn closed(&self) -> &Receiver<SessionInfo> {
        &self.closed
    }

    /// Room for closed records (`EngineConfig::closed_held`): each record a worker
    /// sends takes one; the reader gives it back (`fetch_add`) once it has forgotten
    /// the record (delivered or deleted).
    pub fn closed_room(&self) -> &Arc<AtomicUsize> {
        &self.closed_room
    }

    /// Adds sessions and waits for the answers (one per spec, in order). Ids must not
    /// be held by another worker: the caller keeps ids unique across workers.
    pub fn add(&self, specs: Vec<SessionSpec>) -> Vec<Result<(), AddError>> {
        let total = specs.len();
        let mut by_worker: Vec<(Vec<usize>, Vec<SessionSpec>)> = (0..self.workers())
            .map(|_| (Vec::new(), Vec::new()))
            .collect();
        for (i, s) in specs.into_iter().enumerate() {
            let w = self.owner(&s);
            by_worker[w].0.push(i);
            by_worker[w].1.push(s);
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let queued = Instant::now();
        let mut pending = 0;
        let received = |n: usize| vec![queued; n];
        for (w, (positions, specs)) in by_worker.into_iter().enumerate() {
            if specs.is_empty() {
                continue;
            }
            pending += 1;
            let tx = tx.clone();
            self.send(
                w,
                Command::Add {
                    received: received(specs.len()),
                    specs,
                    reply: Box::new(move |a: Added| {
                        let _ = tx.send((positions, a.results));
                    }),
                },
            );
        }
        let mut out = vec![Err(AddError::Unavailable); total];
        for _ in 0..pending {
            match rx.recv() {
                Ok((positions, results)) => {
                    for (p, r) in positions.into_iter().zip(results) {
                        out[p] = r;
                    }
                }
                Err(_) => break,
            }
        }
        out
    }

    /// Runs a command that expects one answer on worker `w` and waits for it; None if
    /// the worker is gone.
    pub fn call<T: Send + 'static>(
        &self,
        w: usize,
        make: impl FnOnce(crate::worker::Reply<T>) -> Command,
    ) -> Option<T> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(
            w,
            make(Box::new(move |v| {
                let _ = tx.send(v);
            })),
        );
        rx.recv().ok()
    }

    /// Deletes a session wherever it is; its final state, or None if no worker has it.
    pub fn delete(&self, id: u64) -> Option<SessionInfo> {
        (0..self.workers()).find_map(|w| {
            self.call(w, |reply| Command::Delete { id, reply })
                .flatten()
        })
    }

    /// A session's state wherever it is.
    pub fn query(&self, id: u64) -> Option<SessionInfo> {
        (0..self.workers()).find_map(|w| {
            self.call(w, |reply| Command::Query {
                ids: vec![id],
                reply,
            })
            .and_then(|mut v| v.pop().flatten())
        })
    }

    /// Every worker's counters and histograms, and their sum.
    pub fn report(&self) -> EngineReport {
        let reports: Vec<WorkerReport> = (0..self.workers())
            .filter_map(|w| self.call(w, |reply| Command::Report { reply }))
            .collect();
        EngineReport::merge(reports)
    }

    /// Stops the workers and waits for them. Callable through a shared engine (the
    /// control plane's); a second call finds nothing left to stop. Commands sent
    /// afterwards are answered as refused.
    pub fn stop(&self) -> StopReport {
        self.stop.store(true, Ordering::Release);
        let mut report = StopReport::default();
        for h in &self.workers {
            h.thread.unpark();
            let join = h.join.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(j) = join {
                match j.join() {
                    Ok(exit) => {
                        report.closed_undelivered += exit.closed_undelivered;
                        report.sessions += exit.sessions;
                    }
                    Err(_) => report.crashed += 1,
                }
            }
        }
        report.closed_undelivered += self.closed.len();
        // The workers are gone: close the ports (pcap writers flush and end, sockets
        // close) rather than wait for the engine to be dropped.
        self._ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        report
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}
