//! The device: the dataplane engine built from the config, the session directory and
//! the closed-session feed, and the session operations the gRPC services call.
//!
//! Every operation goes to one worker (the owner by the symmetric hash for an add,
//! the directory's entry for the rest) and waits for its answer without blocking the
//! async runtime: the worker completes a oneshot channel from its own thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::engine::{Engine, EngineConfig, NextHop, PortConfig as EnginePort, StopReport};
use dataplane::neighbour::Timers;
use dataplane::packet::PacketPool;
use dataplane::port::af_packet::AfPacketPort;
#[cfg(feature = "afxdp")]
use dataplane::port::af_xdp::AfXdpPort;
use dataplane::port::pcap::PcapPort;
use dataplane::port::ring::{ring_port, RingPeer};
use dataplane::port::Port;
use dataplane::session::{SessionInfo, SessionSpec, SessionView};
use dataplane::worker::NeighbourConfig;
use dataplane::worker::{Added, Command, PollMode};

use crate::closed_feed::ClosedFeed;
use crate::config::{parse_mac, Backend, Config, Poll};
use crate::directory::Directory;
use crate::refusal::{Refusal, RefusalCounters, RefusalLog};

/// The outside end of a ring port: what the traffic simulator sends into and drains.
pub struct RingEnd {
    pub name: String,
    pub lif: Option<u16>,
    pub mac: [u8; 6],
    pub peer: RingPeer,
}

/// Counters of the control plane itself (the dataplane counts the rest).
#[derive(Default)]
pub struct ControlCounters {
    pub add_calls: AtomicU64,
    pub add_requests: AtomicU64,
    /// Refused sessions, by reason.
    pub rejected: RefusalCounters,
    pub get_calls: AtomicU64,
    pub delete_calls: AtomicU64,
    pub list_calls: AtomicU64,
    pub closed_calls: AtomicU64,
    pub closed_delivered: AtomicU64,
    pub closed_given_back: AtomicU64,
    /// AckedClosedSessions: records acked (forgotten), and acks that named no record
    /// outstanding on their stream (ignored).
    pub closed_acked: AtomicU64,
    pub closed_acks_ignored: AtomicU64,
    /// GetClosedSessions streams open now (a gauge, not in `list`: the server has not
    /// seen them end).
    pub closed_streams_open: AtomicU64,
    /// Connections open now (a gauge, not in `list`).
    pub connections_open: AtomicU64,
    /// Connections closed at accept: `api.max_connections` were open.
    pub connections_refused: AtomicU64,
    /// Connections closed after `api.idle_timeout_ms` without a call.
    pub connections_closed_idle: AtomicU64,
    /// Times accept ran out of file descriptors (episodes, not failed accepts).
    pub accept_fd_limit: AtomicU64,
}

impl ControlCounters {
    pub fn bump(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn list(&self) -> Vec<(String, u64)> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out: Vec<(String, u64)> = [
            ("api_add_calls", g(&self.add_calls)),
            ("api_add_requests", g(&self.add_requests)),
            ("api_get_calls", g(&self.get_calls)),
            ("api_delete_calls", g(&self.delete_calls)),
            ("api_list_calls", g(&self.list_calls)),
            ("api_closed_calls", g(&self.closed_calls)),
            ("api_closed_delivered", g(&self.closed_delivered)),
            ("api_closed_given_back", g(&self.closed_given_back)),
            ("api_closed_acked", g(&self.closed_acked)),
            ("api_closed_acks_ignored", g(&self.closed_acks_ignored)),
            ("api_connections_refused", g(&self.connections_refused)),
            (
                "api_connections_closed_idle",
                g(&self.connections_closed_idle),
            ),
            ("api_accept_fd_limit", g(&self.accept_fd_limit)),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
        out.extend(self.rejected.list());
        out
    }
}

pub struct Device {
    pub engine: Engine,
    pub directory: Directory,
    pub feed: ClosedFeed,
    pub config: Config,
    pub counters: ControlCounters,
    pub started: Instant,
    /// This start's id and wall-clock time, told to every client.
    pub boot: crate::boot::Boot,
    /// Port roles for the admin service, in engine port order.
    pub port_roles: Vec<String>,
    /// Accepted sessions are told to the traffic simulator, when it runs.
    pub simulator: Option<crossbeam_channel::Sender<SessionSpec>>,
    /// Add rounds in flight, device-wide (`api.add_batches_in_flight` per worker).
    pub add_rounds: Arc<tokio::sync::Semaphore>,
    /// The rate limit of the log of refused sessions.
    pub refusal_log: RefusalLog,
    /// True once the device is stopping: follow streams end with UNAVAILABLE so
    /// their clients know why, and the server can close their connections.
    pub stopping: tokio::sync::watch::Sender<bool>,
    pump_stop: AtomicBool,
}

fn poll_mode(p: Poll, idle_spin_us: u64) -> PollMode {
    match p {
        Poll::Busy => PollMode::Busy,
        Poll::Adaptive => PollMode::Adaptive {
            spin: Duration::from_micros(idle_spin_us),
        },
    }
}

/// Opens the configured ports and starts the workers.
pub fn start_engine(c: &Config) -> Result<(Engine, Vec<RingEnd>), String> {
    let d = &c.dataplane;
    let mut ports = Vec::new();
    let mut ends = Vec::new();
    let mac = |s: &str| parse_mac(s).expect("checked by Config");
    #[cfg(feature = "dpdk")]
    let eal = dpdk_eal(c)?;
    for p in &c.ports {
        let port: Box<dyn Port> = match p.backend {
            Backend::Ring => {
                let (port, peer) = ring_port(&p.name, mac(&p.mac), d.workers, p.ring_size);
                ends.push(RingEnd {
                    name: p.name.clone(),
                    lif: p.lif,
                    mac: mac(&p.mac),
                    peer,
                });
                Box::new(port)
            }
            Backend::Pcap => {
                let pool = PacketPool::new(8192, 2048)
                    .map_err(|e| format!("port {}: cannot reserve buffers: {e}", p.name))?;
                Box::new(
                    PcapPort::new(
                        &p.name,
                        mac(&p.mac),
                        p.input.as_deref(),
                        p.output.as_deref(),
                        pool,
                    )
                    .map_err(|e| e.to_string())?,
                )
            }
            #[cfg(feature = "dpdk")]
            Backend::Dpdk => Box::new(
                dataplane::port::dpdk::DpdkPort::new(
                    eal.as_ref().expect("started for dpdk ports"),
                    &p.name,
                    p.device.as_deref().expect("checked by Config"),
                    mac(&p.mac),
                    c.dpdk.port_options(p.steering.unwrap_or_default()),
                )
                .map_err(|e| e.to_string())?,
            ),
            #[cfg(not(feature = "dpdk"))]
            Backend::Dpdk => return Err("backend \"dpdk\": built without the dpdk feature".into()),
            Backend::AfPacket => Box::new(
                AfPacketPort::new(
                    &p.name,
                    p.interface.as_deref().expect("checked by Config"),
                    mac(&p.mac),
                    p.af_packet_options(),
                )
                .map_err(|e| e.to_string())?,
            ),
            #[cfg(feature = "afxdp")]
            Backend::AfXdp => Box::new(
                AfXdpPort::new(
                    &p.name,
                    p.interface.as_deref().expect("checked by Config"),
                    mac(&p.mac),
                    p.af_xdp_options(),
                )
                .map_err(|e| e.to_string())?,
            ),
            #[cfg(not(feature = "afxdp"))]
            Backend::AfXdp => {
                return Err(format!(
                    "port {}: backend \"af_xdp\": offloadd was built without the afxdp feature",
                    p.name
                ))
            }
        };
        ports.push(EnginePort {
            port,
            lif: p.lif,
            next_hop_mac: p.next_hop_mac.as_deref().map(mac),
        });
    }
    let firewall = c.port_index(&d.firewall_port).expect("checked by Config");
    let mut ec = EngineConfig::new(ports, firewall);
    ec.workers = d.workers;
    ec.cores = d.cores.clone();
    ec.max_sessions = d.max_sessions;
    ec.default_timeout_s = d.default_timeout;
    ec.tick = Duration::from_millis(d.tick_ms);
    ec.poll = poll_mode(d.poll, d.idle_spin_us);
    ec.collector_port = d.collector_port.as_deref().and_then(|n| c.port_index(n));
    ec.command_queue = d.command_queue;
    ec.closed_queue = d.closed_queue;
    ec.closed_held = d.closed_held;
    ec.realtime_priority = (d.realtime_priority > 0).then_some(d.realtime_priority);
    ec.next_hops = c
        .next_hops
        .iter()
        .map(|h| NextHop {
            addr: h.addr,
            mac: mac(&h.mac),
            port: h.port.as_deref().and_then(|n| c.port_index(n)),
        })
        .collect();
    ec.neighbours = neighbour_config(c);
    let engine = Engine::start(ec).map_err(|e| e.to_string())?;
    Ok((engine, ends))
}

/// Resolution of next hops as the `[neighbours]` section and the ports' addresses
/// set it.
fn neighbour_config(c: &Config) -> NeighbourConfig {
    let n = &c.neighbours;
    let s = |secs: u32| u64::from(secs) * 1_000_000_000;
    NeighbourConfig {
        capacity: n.capacity,
        timers: Timers {
            reachable_ns: s(n.reachable_s),
            retrans_ns: u64::from(n.retrans_ms) * 1_000_000,
            probes: n.probes,
            delay_ns: s(n.delay_s),
            retry_ns: s(n.retry_s),
        },
        requests_per_s: n.requests_per_s,
        port_addresses: c
            .ports
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.addresses.iter().map(move |&a| (i, a)))
            .collect(),
    }
}

/// The process's DPDK EAL, started with `[dpdk] eal_args` when a port uses DPDK.
#[cfg(feature = "dpdk")]
fn dpdk_eal(c: &Config) -> Result<Option<dataplane::port::dpdk::Eal>, String> {
    use dataplane::port::dpdk::Eal;
    let devices: Vec<&str> = c
        .ports
        .iter()
        .filter(|p| p.backend == Backend::Dpdk)
        .filter_map(|p| p.device.as_deref())
        .collect();
    if devices.is_empty() {
        return Ok(None);
    }
    Eal::init(&Eal::arguments(&c.dpdk.eal_args, &devices))
        .map(Some)
        .map_err(|e| e.to_string())
}

impl Device {
    pub fn new(engine: Engine, config: Config) -> Device {
        let feed = ClosedFeed::new(engine.closed().clone(), engine.closed_room().clone());
        let port_roles = config
            .ports
            .iter()
            .map(|p| {
                let mut roles = Vec::new();
                if let Some(l) = p.lif {
                    roles.push(format!("lif {l}"));
                }
                if p.name == config.dataplane.firewall_port {
                    roles.push("firewall".into());
                }
                if config.dataplane.collector_port.as_deref() == Some(p.name.as_str()) {
                    roles.push("collector".into());
                }
                roles.join(", ")
            })
            .collect();
        let add_rounds = Arc::new(tokio::sync::Semaphore::new(
            config.api.add_batches_in_flight * engine.workers(),
        ));
        Device {
            add_rounds,
            stopping: tokio::sync::watch::Sender::new(false),
            engine,
            directory: Directory::default(),
            feed,
            config,
            counters: ControlCounters::default(),
            started: Instant::now(),
            boot: crate::boot::Boot::new(),
            port_roles,
            simulator: None,
            refusal_log: RefusalLog::default(),
            pump_stop: AtomicBool::new(false),
        }
    }

    /// Counts and logs a refused session: every refusal, from the request's checks
    /// or from a worker, passes here.
    pub fn refused(&self, id: u64, why: &Refusal) {
        self.counters.rejected.count(why.reason);
        self.refusal_log.log(id, why);
    }

    /// Runs the closed-feed pump on its own thread until `stop`.
    pub fn start_pump(self: &Arc<Self>) -> std::thread::JoinHandle<()> {
        let d = self.clone();
        std::thread::Builder::new()
            .name("closed-pump".into())
            .spawn(move || d.feed.pump(&d.pump_stop))
            .expect("spawn closed-pump thread")
    }

    /// Runs one command on worker `w` and waits for its answer; None if the worker is
    /// gone.
    pub async fn call<T: Send + 'static>(
        &self,
        w: usize,
        make: impl FnOnce(dataplane::worker::Reply<T>) -> Command,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.engine.send(
            w,
            make(Box::new(move |v| {
                let _ = tx.send(v);
            })),
        );
        rx.await.ok()
    }

    /// A session wherever it is: live in its worker, or closed and undelivered; None
    /// for an id the device does not hold.
    pub async fn lookup(&self, id: u64) -> Option<SessionInfo> {
        let w = self.directory.get(id)?;
        let live = self
            .call(w, |reply| Command::Query {
                ids: vec![id],
                reply,
            })
            .await
            .and_then(|mut v| v.pop().flatten());
        live.or_else(|| self.feed.find(id))
    }

    /// A stream's client has these closed records: the feed and the directory
    /// forget them. Only ids whose record this was: a deleted one may name a new
    /// session.
    pub fn forget_delivered(&self, ids: impl IntoIterator<Item = u64>) {
        for id in self.feed.delivered(ids) {
            self.directory.remove(id);
        }
    }

    /// A stream ended before its client had these records (`why`, for the log):
    /// back to the feed, first in line, counted.
    pub fn give_back_closed(&self, ids: &[u64], why: &str) {
        if ids.is_empty() {
            return;
        }
        ControlCounters::bump(&self.counters.closed_given_back, ids.len() as u64);
        tracing::info!(records = ids.len(), "{why}; given back");
        self.feed.give_back(ids);
    }

    /// Removes a session now: from its worker, or from the closed feed; its last
    /// state, or None for an id the device does not hold.
    pub async fn delete(&self, id: u64) -> Option<SessionInfo> {
        let w = self.directory.get(id)?;
        let live = self
            .call(w, |reply| Command::Delete { id, reply })
            .await
            .flatten();
        let info = live.or_else(|| self.feed.remove(id))?;
        self.directory.remove(id);
        Some(info)
    }

    /// States of sessions (id, worker) in the given order; ids gone meanwhile are left
    /// out.
    pub async fn states(&self, ids: &[(u64, usize)]) -> Vec<SessionInfo> {
        let mut found = self
            .ask_workers(ids, |ids, reply| Command::Query { ids, reply })
            .await;
        ids.iter()
            .filter_map(|&(id, _)| found.remove(&id).flatten().or_else(|| self.feed.find(id)))
            .collect()
    }

    /// What each session (id, worker) is and how it stands, in the given order: live
    /// ones with their tuple (`Ok`), closed undelivered ones with their record only
    /// (`Err`); ids gone meanwhile are left out.
    pub async fn views(&self, ids: &[(u64, usize)]) -> Vec<Result<SessionView, SessionInfo>> {
        let mut found = self
            .ask_workers(ids, |ids, reply| Command::Describe { ids, reply })
            .await;
        ids.iter()
            .filter_map(|&(id, _)| match found.remove(&id).flatten() {
                Some(v) => Some(Ok(v)),
                None => self.feed.find(id).map(Err),
            })
            .collect()
    }

    /// One command to each worker holding some of `ids`; the answers by id.
    async fn ask_workers<T: Send + 'static>(
        &self,
        ids: &[(u64, usize)],
        command: impl Fn(Vec<u64>, dataplane::worker::Reply<Vec<Option<T>>>) -> Command,
    ) -> std::collections::HashMap<u64, Option<T>> {
        let mut by_worker: Vec<Vec<u64>> = vec![Vec::new(); self.engine.workers()];
        for &(id, w) in ids {
            by_worker[w].push(id);
        }
        let command = &command;
        let calls = by_worker
            .into_iter()
            .enumerate()
            .filter(|(_, v)| !v.is_empty())
            .map(|(w, ids)| async move {
                let answers = self
                    .call(w, |reply| command(ids.clone(), reply))
                    .await
                    .unwrap_or_default();
                ids.into_iter()
                    .zip(answers.into_iter().chain(std::iter::repeat_with(|| None)))
                    .collect::<Vec<_>>()
            });
        futures::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Sends a batch of adds to worker `w`; `done` gets one result per spec.
    pub fn send_adds(
        &self,
        w: usize,
        specs: Vec<SessionSpec>,
        received: Vec<Instant>,
        done: impl FnOnce(Added) + Send + 'static,
    ) {
        self.engine.send(
            w,
            Command::Add {
                specs,
                received,
                reply: Box::new(done),
            },
        );
    }

    /// Stops the pump and the workers.
    pub fn stop(&self) -> StopReport {
        self.pump_stop.store(true, Ordering::Release);
        self.engine.stop()
    }
}
