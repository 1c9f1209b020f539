//! `dpbench --port af_packet|af_xdp|dpdk`: the device on veth pairs against the
//! kernel's routing and connection tracking on the same box, with the same senders.
//!
//! Cores: the sender on core 0, the device's worker on the last core. A veth runs
//! the receive of the frames it carries on the core that sent them, so core 0 also
//! delivers the frames into the device's port, and the worker's core runs the far
//! end's receive inside the worker's transmit. The report says whether the device
//! was saturated (it dropped part of what its port received), how busy its worker
//! was, and how much of the time the worker had its core at all.
//!
//! This file owns the device's run and the report; the links are `veths.rs`, the
//! senders `sender.rs` (and `xdp_sender.rs`), the kernel baselines
//! `kernel_baseline.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::port::af_packet::{AfPacketOptions, AfPacketPort};
use dataplane::port::ring::ring_port;
use dataplane::port::Port;
use dataplane::wire::{PROTO_TCP, PROTO_UDP};
use dataplane::{Engine, EngineConfig, PollMode, PortConfig, SessionSpec};

use super::kernel_baseline::{measure_kernel, KernelRun};
use super::sender::{send_for, SendFrom};
use super::veths::{link_counts, settle, Veths};
use super::{frame, round2, session, session_packets, worker_core, Args, RING};

/// The device's two ports for `--port af_xdp`: AF_XDP sockets on the veths (`auto`
/// modes: native + copy on a veth), as many queues as workers.
#[cfg(feature = "afxdp")]
fn xdp_ports(outside: &str, inside: &str, _workers: usize) -> Result<[Box<dyn Port>; 2], String> {
    use dataplane::port::af_xdp::{AfXdpOptions, AfXdpPort};
    // The XDP sender's frames reach the socket in bursts (the kernel's softirq work
    // for the veth comes in turns with the sender on its core): with the default
    // 2048 rx frames the port dropped three frames in four for want of fill-ring
    // frames while its worker idled a third of the time. 32768 rx frames hold about
    // what the af_packet port's default 4 MB ring holds in 64-byte frames.
    let d = AfXdpOptions::default();
    let rx_frames = 32768;
    let opts = AfXdpOptions {
        frame_count: rx_frames + d.tx_size,
        fill_size: rx_frames,
        rx_size: rx_frames,
        ..d
    };
    let o =
        AfXdpPort::new("outside", outside, OUTSIDE_MAC, opts.clone()).map_err(|e| e.to_string())?;
    let i = AfXdpPort::new("inside", inside, INSIDE_MAC, opts).map_err(|e| e.to_string())?;
    Ok([Box::new(o), Box::new(i)])
}

#[cfg(not(feature = "afxdp"))]
fn xdp_ports(_outside: &str, _inside: &str, _workers: usize) -> Result<[Box<dyn Port>; 2], String> {
    Err("--port af_xdp: dpbench was built without the afxdp feature".into())
}

/// The device's two ports for `--port dpdk`: DPDK's `net_af_packet` vdevs on the veths,
/// in an EAL without hugepages or PCI.
#[cfg(feature = "dpdk")]
fn dpdk_ports(outside: &str, inside: &str) -> Result<[Box<dyn Port>; 2], String> {
    use dataplane::port::dpdk::{DpdkOptions, DpdkPort, Eal};
    let args: Vec<String> = [
        "--no-huge",
        "--no-shconf",
        "-m",
        "512",
        "-l",
        "0",
        "--no-telemetry",
        "--log-level",
        "lib.eal:warning",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let o_dev = format!("net_af_packet0,iface={outside}");
    let i_dev = format!("net_af_packet1,iface={inside}");
    let eal = Eal::init(&Eal::arguments(&args, &[&o_dev, &i_dev])).map_err(|e| e.to_string())?;
    let opts = DpdkOptions::default();
    let o = DpdkPort::new(&eal, "outside", &o_dev, OUTSIDE_MAC, opts.clone())
        .map_err(|e| e.to_string())?;
    let i = DpdkPort::new(&eal, "inside", &i_dev, INSIDE_MAC, opts).map_err(|e| e.to_string())?;
    Ok([Box::new(o), Box::new(i)])
}

#[cfg(not(feature = "dpdk"))]
fn dpdk_ports(_outside: &str, _inside: &str) -> Result<[Box<dyn Port>; 2], String> {
    Err("--port dpdk: dpbench was built without the dpdk feature".into())
}

/// The device's ports on the veths `outside` and `inside`, by `--port`.
fn device_ports(a: &Args, outside: &str, inside: &str) -> Result<[Box<dyn Port>; 2], String> {
    match a.port.as_str() {
        "af_xdp" => xdp_ports(outside, inside, a.workers),
        "dpdk" => dpdk_ports(outside, inside),
        _ => {
            let opts = AfPacketOptions {
                block_size: 1 << 20,
                block_count: 32,
                ..AfPacketOptions::default()
            };
            let o = AfPacketPort::new("outside", outside, OUTSIDE_MAC, opts.clone())
                .map_err(|e| e.to_string())?;
            let i =
                AfPacketPort::new("inside", inside, INSIDE_MAC, opts).map_err(|e| e.to_string())?;
            Ok([Box::new(o), Box::new(i)])
        }
    }
}

/// The device's engine on `ports` with every session installed; the install time.
fn start_device(
    a: &Args,
    ports: [Box<dyn Port>; 2],
    specs: &[SessionSpec],
) -> Result<(Engine, Duration), String> {
    let [outside, inside] = ports;
    let (fw, _fw_peer) = ring_port("firewall", [2, 0, 0, 0, 1, 2], a.workers, RING);
    let lif = |port: Box<dyn Port>, lif: Option<u16>| PortConfig {
        port,
        lif,
        next_hop_mac: None,
    };
    let ports = vec![
        lif(outside, Some(1)),
        lif(inside, Some(2)),
        lif(Box::new(fw), None),
    ];
    let mut cfg = EngineConfig::new(ports, 2);
    cfg.workers = a.workers;
    cfg.cores = (0..a.workers).map(worker_core).collect();
    cfg.max_sessions = a.sessions;
    cfg.poll = PollMode::Busy;
    cfg.default_timeout_s = 3600;
    let engine = Engine::start(cfg).map_err(|e| e.to_string())?;
    let t = Instant::now();
    for chunk in specs.chunks(65_536) {
        if engine.add(chunk.to_vec()).iter().any(|r| r.is_err()) {
            return Err("a session was not installed".into());
        }
    }
    Ok((engine, t.elapsed()))
}

/// The worker's busy time so far: each loop that finished packets is timed and divided
/// among them in the histogram, so its sum is the time spent on them.
fn busy_ns(engine: &Engine) -> (f64, u64) {
    let h = engine.report().latency.packet_ns;
    (h.mean() * h.len() as f64, h.len())
}

/// Nanoseconds the device's worker threads (named `worker-N`) have run on a CPU
/// (`/proc/self/task/*/schedstat`): a busy-polling worker that owns its core runs all
/// the time; less means another process took turns on its core.
fn worker_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim_end().starts_with("worker-"))
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// What (a), the device, measured.
struct DeviceRun {
    sent: u64,
    elapsed: Duration,
    /// Frames the outside interface received while the sender ran, and in all.
    arrived_sending: u64,
    arrived: u64,
    /// Frames the outside veth counted as dropped: its receive ring full (the sender's
    /// side) and, with af_xdp, frames the XDP program could not hand to the socket.
    veth_drops: u64,
    /// Frames the far end received while the sender ran, and in all.
    delivered_sending: u64,
    delivered: u64,
    /// The worker's busy time and packets while the sender ran.
    busy_ns: f64,
    /// Time the workers ran on a CPU while the sender ran.
    on_cpu_ns: u64,
    busy_packets: u64,
    report: dataplane::stats::EngineReport,
    port_counters: Vec<(String, Vec<(&'static str, u64)>)>,
    counted: u64,
    crashed: usize,
    install: Duration,
    /// The outside port counts the frames its kernel ring drops (not so for dpdk:
    /// see `uncounted_port_drops`).
    port_counts_its_drops: bool,
}

impl DeviceRun {
    fn counter(&self, port: &str, name: &str) -> u64 {
        self.port_counters
            .iter()
            .filter(|(p, _)| p == port)
            .flat_map(|(_, cs)| cs.iter())
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .sum()
    }

    /// Frames the outside port's kernel side dropped: af_packet a full rx ring;
    /// af_xdp the socket's rx drops and a full rx ring; dpdk what it cannot count.
    fn port_drops(&self) -> u64 {
        self.counted_port_drops() + self.uncounted_port_drops()
    }

    fn counted_port_drops(&self) -> u64 {
        self.counter("outside", "kernel_drops")
            + self.counter("outside", "kernel_rx_dropped")
            + self.counter("outside", "kernel_rx_ring_full")
            + self.counter("outside", "dpdk_imissed")
    }

    /// Frames dropped in the outside port's kernel ring that no counter of the port
    /// shows: DPDK 22.11's net_af_packet (the dpdk port's device here) reports none
    /// (its `imissed` stays 0), so for `--port dpdk` it is what reached the veth and
    /// the device neither received nor counted. Never negative: a device that
    /// received more than arrived still fails `verify`.
    fn uncounted_port_drops(&self) -> u64 {
        if self.port_counts_its_drops {
            return 0;
        }
        let received = self.report.total.hits + self.misses();
        self.arrived.saturating_sub(
            received + self.counted_port_drops() + self.counter("outside", "rx_too_long"),
        )
    }

    fn tx_drops(&self) -> u64 {
        self.report.ports.iter().map(|p| p.tx_drops).sum()
    }

    /// Everything the device received and did not forward.
    fn device_drops(&self) -> u64 {
        self.port_drops() + self.tx_drops() + self.counter("outside", "handoff_drops")
    }

    /// The device could not take all it was offered: it dropped more than 0.1% of
    /// what reached its port.
    fn saturated(&self) -> bool {
        self.device_drops() * 1000 > self.arrived
    }

    fn misses(&self) -> u64 {
        let t = &self.report.total;
        t.misses + t.not_flow + t.malformed
    }

    fn rate(&self, frames: u64) -> f64 {
        frames as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    fn busy_percent(&self, workers: usize) -> f64 {
        100.0 * self.busy_ns / (self.elapsed.as_nanos() as f64 * workers as f64)
    }

    fn on_cpu_percent(&self, workers: usize) -> f64 {
        100.0 * self.on_cpu_ns as f64 / (self.elapsed.as_nanos() as f64 * workers as f64)
    }
}

/// (a) The device: the sender on `dpa0` -> device (`dpa1` -> worker -> `dpb0`) ->
/// far end `dpb1`.
fn measure_device(
    a: &Args,
    links: [&str; 4],
    specs: &[SessionSpec],
    frames: Arc<Vec<Vec<u8>>>,
) -> Result<DeviceRun, String> {
    let [dpa0, dpa1, dpb0, dpb1] = links;
    let (engine, install) = start_device(a, device_ports(a, dpa1, dpb0)?, specs)?;
    let from = SendFrom {
        ns: None,
        dev: dpa0,
        peer_ns: None,
        peer: dpa1,
    };
    let (in0, far0) = (link_counts(None, dpa1)?, link_counts(None, dpb1)?.rx);
    let (busy0, cpu0) = (busy_ns(&engine), worker_cpu_ns());
    let (sent, elapsed) = send_for(&a.sender, &from, frames, a.seconds)?;
    // Read at once: what the device did while offered the load (it then drains the
    // frames its rx ring still holds, counted below in the totals).
    let (busy1, cpu1) = (busy_ns(&engine), worker_cpu_ns());
    let (in1, far1) = (link_counts(None, dpa1)?, link_counts(None, dpb1)?.rx);
    let far = settle(|| link_counts(None, dpb1).map(|c| c.rx))?;
    let in2 = link_counts(None, dpa1)?;
    let report = engine.report();
    let port_counters = engine.port_counters();
    let counted = session_packets(&engine, specs, a.workers)?;
    let stop = engine.stop();
    Ok(DeviceRun {
        sent,
        elapsed,
        arrived_sending: in1.rx - in0.rx,
        arrived: in2.rx - in0.rx,
        veth_drops: in2.rx_dropped - in0.rx_dropped,
        delivered_sending: far1 - far0,
        delivered: far - far0,
        busy_ns: busy1.0 - busy0.0,
        busy_packets: busy1.1 - busy0.1,
        on_cpu_ns: cpu1.saturating_sub(cpu0),
        report,
        port_counters,
        counted,
        crashed: stop.crashed,
        install,
        port_counts_its_drops: a.port != "dpdk",
    })
}

/// `--port af_packet`, `--port af_xdp` or `--port dpdk`: (a) the device: the sender on
/// veth `dpa0` sends 64-byte frames of N offloaded sessions into the device's outside
/// port (`dpa1`); the worker forwards them out of its inside port (`dpb0`), and
/// `dpb1`, the far end, drops them (counted by the kernel). (b) the kernel baseline:
/// the same sender, in namespace `src`, sends to a router namespace that forwards to a
/// third (`ip_forward`, static neighbour). (c) the same router forwarding only what
/// its conntrack knows as established (nftables `ct state established accept`, the
/// sessions made established first). Each reports frames forwarded per second while
/// the sender ran; (a) also whether the device was saturated (it dropped what its port
/// received) and how busy its worker was.
pub fn run(a: &Args) -> Result<bool, String> {
    check_prerequisites()?;
    let log = |s: String| {
        if a.json {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    };
    let tag = format!("{:x}", std::process::id());
    let mut v = Veths::default();
    let links = device_veths(&mut v, &tag)?;

    let proto = if a.tcp { PROTO_TCP } else { PROTO_UDP };
    let specs: Vec<SessionSpec> = (0..a.sessions).map(|i| session(i, proto)).collect();
    let frames: Arc<Vec<Vec<u8>>> = Arc::new(
        specs
            .iter()
            .map(|s| {
                let mut buf = [0u8; 128];
                let n = frame(s, false, &mut buf);
                buf[..n].to_vec()
            })
            .collect(),
    );

    let d = measure_device(
        a,
        links.each_ref().map(|l| l.as_str()),
        &specs,
        frames.clone(),
    )?;
    log_device(a, &d, &log);

    let kernel = measure_kernel(&mut v, &tag, &specs, &frames, a.seconds, &log)?;
    let (tracked, not_established) = (kernel.tracked, kernel.not_established);
    let best = |test: &str| {
        kernel
            .runs
            .iter()
            .filter(|k| k.test == test)
            .map(KernelRun::mpps)
            .fold(0.0, f64::max)
    };
    let (baseline_mpps, conntrack_mpps) = (best("routing"), best("conntrack"));
    let kernel = kernel.runs;
    drop(v);

    let ok = verify(a, &d, tracked, not_established, &log);
    let mpps = d.rate(d.delivered_sending);
    let h = &d.report.latency.packet_ns;
    let json = serde_json::json!({
        "port": a.port,
        "sender": a.sender,
        "workers": a.workers,
        "sessions": a.sessions,
        "packets": d.sent,
        "seconds": a.seconds,
        "mpps_per_worker": round2(mpps / a.workers as f64),
        "ns_per_packet": round2(1e3 / (mpps / a.workers as f64)),
        "baseline_mpps": round2(baseline_mpps),
        "ratio_to_baseline": round2(mpps / baseline_mpps),
        "conntrack_mpps": round2(conntrack_mpps),
        "ratio_to_conntrack": round2(mpps / conntrack_mpps),
        "sender_mpps": round2(d.rate(d.sent)),
        "kernel_runs": kernel.iter().map(|k| serde_json::json!({
            "test": k.test,
            "sender": k.sender,
            "own_core": k.own_core,
            "sender_mpps": round2(k.sent_mpps()),
            "forwarded_mpps": round2(k.mpps()),
        })).collect::<Vec<_>>(),
        "offered_mpps": round2(d.rate(d.arrived_sending)),
        "p50_ns": h.value_at_quantile(0.5),
        "p99_ns": h.value_at_quantile(0.99),
        "p999_ns": h.value_at_quantile(0.999),
        "bytes_per_session": round2(d.report.table_bytes as f64 / a.sessions as f64),
        "hits": d.report.total.hits,
        "misses": d.misses(),
        "arrived": d.arrived,
        "veth_drops": d.veth_drops,
        "delivered": d.delivered,
        "kernel_drops": d.port_drops(),
        "uncounted_kernel_drops": d.uncounted_port_drops(),
        "tx_drops": d.tx_drops(),
        "device_drops": d.device_drops(),
        "saturated": d.saturated(),
        "handoffs": d.counter("outside", "handoffs"),
        "idle_percent": round2(100.0 * d.report.total.idle_polls as f64 / d.report.total.polls.max(1) as f64),
        "worker_busy_percent": round2(d.busy_percent(a.workers)),
        "worker_on_cpu_percent": round2(d.on_cpu_percent(a.workers)),
        "worker_ns_per_packet": round2(d.busy_ns / d.busy_packets.max(1) as f64),
        "session_counter_total": d.counted,
        "install_seconds": round2(d.install.as_secs_f64()),
        "verified": ok,
    });
    if a.json {
        println!("{json}");
    }
    Ok(ok)
}

/// Root, and the tools the set-up and the kernel baselines run.
fn check_prerequisites() -> Result<(), String> {
    // SAFETY: plain libc call.
    if unsafe { libc::geteuid() } != 0 {
        return Err("--port needs root (veth pairs, AF_PACKET, BPF)".into());
    }
    for (tool, what) in [("nft", "nftables"), ("ethtool", "ethtool")] {
        if std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_err()
        {
            return Err(format!("--port needs {tool} (Debian: {what})"));
        }
    }
    Ok(())
}

/// The device's veths' MACs: the sender's end `dpa0`, the outside port's `dpa1`, the
/// inside port's `dpb0`, the far end `dpb1`. Each port is opened with its veth's MAC.
const SENDER_MAC: [u8; 6] = [2, 0xbe, 0, 0, 0, 1];
const OUTSIDE_MAC: [u8; 6] = [2, 0xbe, 0, 0, 0, 2];
const INSIDE_MAC: [u8; 6] = [2, 0xbe, 0, 0, 0, 3];
const FAR_END_MAC: [u8; 6] = [2, 0xbe, 0, 0, 0, 4];

/// The device's two veth pairs: `dpa0`-`dpa1` (the sender's end and the device's
/// outside port) and `dpb0`-`dpb1` (the device's inside port and the far end), each
/// name suffixed with `tag`.
fn device_veths(v: &mut Veths, tag: &str) -> Result<[String; 4], String> {
    let links = ["dpa0", "dpa1", "dpb0", "dpb1"].map(|l| format!("{l}{tag}"));
    let [dpa0, dpa1, dpb0, dpb1] = &links;
    v.pair(dpa0, SENDER_MAC, None, dpa1, OUTSIDE_MAC, None)?;
    v.pair(dpb0, INSIDE_MAC, None, dpb1, FAR_END_MAC, None)?;
    Ok(links)
}

/// The device's lines: what it was offered, what it forwarded and dropped, whether
/// that was its own limit, and what its core spent.
fn log_device(a: &Args, d: &DeviceRun, log: &impl Fn(String)) {
    let busy = d.busy_percent(a.workers);
    log(format!(
        "{} device, {} sender: sender {} frames ({:.2} Mpps) in {:.2?}; device's port \
         received {} ({:.2} Mpps offered; the veth counted {} dropped), far end \
         received {} ({:.2} Mpps while the sender ran)",
        a.port,
        a.sender,
        d.sent,
        d.rate(d.sent),
        d.elapsed,
        d.arrived,
        d.rate(d.arrived_sending),
        d.veth_drops,
        d.delivered,
        d.rate(d.delivered_sending),
    ));
    if d.uncounted_port_drops() > 0 {
        log(format!(
            "{} of the port's rx drops are not in its counters (DPDK 22.11's \
             net_af_packet reports none): what reached the veth and the device did not \
             receive",
            d.uncounted_port_drops()
        ));
    }
    log(format!(
        "device drops {} (port rx {}, tx {}, hand-off {}; hand-offs {}); worker busy \
         {busy:.1}% of its core while the sender ran, {:.0} ns a packet in the worker; \
         it was on its core {:.1}% of that time (less: other processes took turns)",
        d.device_drops(),
        d.port_drops(),
        d.tx_drops(),
        d.counter("outside", "handoff_drops"),
        d.counter("outside", "handoffs"),
        d.busy_ns / d.busy_packets.max(1) as f64,
        d.on_cpu_percent(a.workers),
    ));
    for port in ["outside", "inside"] {
        let nonzero: Vec<String> = d
            .port_counters
            .iter()
            .filter(|(p, _)| p == port)
            .flat_map(|(_, cs)| cs.iter())
            .filter(|(_, v)| *v != 0)
            .map(|(n, v)| format!("{n} {v}"))
            .collect();
        log(format!("{port} port counters: {}", nonzero.join(", ")));
    }
    log(if d.saturated() {
        format!(
            "device saturated: it dropped {:.1}% of what its port received; the figure \
             is the device's own limit{}",
            100.0 * d.device_drops() as f64 / d.arrived.max(1) as f64,
            if busy < 90.0 {
                ", but its worker still had idle time: the limit is in the port's \
                 kernel side (see its counters), not the worker's core"
            } else {
                ""
            }
        )
    } else {
        "device NOT saturated: it forwarded everything its port received; the figure is \
         the sender's limit, not the device's"
            .to_string()
    });
}

/// The run's own check: every packet a hit of an installed session, the sessions'
/// counters equal to the hits, every frame that reached the device's port either
/// received or counted as a port drop, nothing delivered that was not a hit, and the
/// conntrack baseline really established-only.
fn verify(
    a: &Args,
    d: &DeviceRun,
    tracked: u64,
    not_established: u64,
    log: &impl Fn(String),
) -> bool {
    let hits = d.report.total.hits;
    let received = hits + d.misses();
    let accounted = received + d.port_drops() + d.counter("outside", "rx_too_long");
    let ok = d.misses() == 0
        && d.counted == hits
        && d.crashed == 0
        && d.delivered <= hits
        && accounted == d.arrived
        && tracked >= a.sessions as u64
        && not_established == 0;
    log(format!(
        "verify: hits {hits} misses {} session counters {}; port received {} = device \
         received {received} + port drops {}; far end {}; conntrack tracked {tracked}, \
         not established {not_established}: {}",
        d.misses(),
        d.counted,
        d.arrived,
        d.port_drops(),
        d.delivered,
        if ok { "ok" } else { "MISMATCH" }
    ));
    ok
}
