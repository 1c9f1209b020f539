//! dpbench: how fast one worker moves the packets of offloaded sessions.
//!
//! `dpbench --sessions N --packets P [--workers W] [--tcp] [--json]`
//!
//! Builds 64-byte UDP frames (with `--tcp`: TCP ACKs, so every packet also goes
//! through window tracking) for N sessions (both directions), shuffles them (uniform
//! random over sessions), then measures in one run:
//! (a) the baseline: the same frames through the same ring ports, moved rx -> tx by a
//!     pinned thread with no parsing or lookup;
//! (b) the full pipeline: N sessions installed in the engine, every frame parsed,
//!     looked up, counted and forwarded.
//! A driver thread plays the network: it injects frames, collects what the device
//! sends and re-injects it on the port it came from, keeping every ring below its
//! size so that nothing is dropped. The benchmark checks its own result: every packet
//! must be a hit, and the sessions' counters must add up to the packets sent.
//!
//! `dpbench --port af_packet|af_xdp|dpdk [--sessions N] [--seconds S] [--workers W]
//! [--sender xdp|af_packet] [--json]` measures the device on veth pairs instead, against
//! the kernel (root only): see `port_bench.rs`.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::packet::{Burst, PacketBuf, PacketPool, BURST};
use dataplane::port::ring::{ring_port, RingPeer, RingPort};
use dataplane::port::Port;
use dataplane::stats::{EngineReport, WorkerCounters};
use dataplane::wire::{self, tcp_flags, FrameSpec, PROTO_TCP, PROTO_UDP};
use dataplane::worker::Command;
use dataplane::{Action, Engine, EngineConfig, PollMode, PortConfig, SessionSpec};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

mod kernel_baseline;
mod port_bench;
mod sender;
mod veths;
mod xdp_sender;

const RING: usize = 4096;
const FRAME: usize = 60; // 64 on the wire with the FCS

struct Args {
    sessions: usize,
    packets: u64,
    workers: usize,
    json: bool,
    /// "ring" (in-process rings) or "af_packet" (veth pairs).
    port: String,
    /// af_packet: seconds each measurement sends for.
    seconds: u64,
    /// TCP sessions and ACK frames instead of UDP.
    tcp: bool,
    /// Real ports: "xdp" (the kernel's XDP live-frames generator) or "af_packet" (an
    /// AF_PACKET tx ring).
    sender: String,
}

fn usage() -> &'static str {
    "usage: dpbench [--port ring|af_packet|af_xdp|dpdk] --sessions N [--packets P] [--seconds S] [--workers W] [--sender xdp|af_packet] [--tcp] [--json]"
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        sessions: 10_000,
        packets: 10_000_000,
        workers: 1,
        json: false,
        port: "ring".into(),
        seconds: 3,
        tcp: false,
        sender: "xdp".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--port" {
            a.port = it.next().ok_or("--port needs a value")?;
            continue;
        }
        if flag == "--sender" {
            a.sender = it.next().ok_or("--sender needs a value")?;
            continue;
        }
        let mut value = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            let v = v.replace('_', "");
            v.parse::<u64>()
                .map_err(|_| format!("{name}: {v:?} is not a whole number"))
        };
        match flag.as_str() {
            "--sessions" => a.sessions = value("--sessions")? as usize,
            "--packets" => a.packets = value("--packets")?,
            "--workers" => a.workers = value("--workers")? as usize,
            "--json" => a.json = true,
            "--tcp" => a.tcp = true,
            "--seconds" => a.seconds = value("--seconds")?,
            "-h" | "--help" => return Err(usage().into()),
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    if a.sessions == 0 || a.sessions > 100_000_000 {
        return Err("--sessions must be 1 to 100000000".into());
    }
    if a.packets == 0 {
        return Err("--packets must be at least 1".into());
    }
    if a.workers == 0 || a.workers > 64 {
        return Err("--workers must be 1 to 64".into());
    }
    if a.port == "af_xdp" && !cfg!(feature = "afxdp") {
        return Err(
            "--port af_xdp: dpbench was built without the afxdp feature (--features afxdp)".into(),
        );
    }
    if a.port == "dpdk" && !cfg!(feature = "dpdk") {
        return Err(
            "--port dpdk: dpbench was built without the dpdk feature (--features dpdk)".into(),
        );
    }
    if !["ring", "af_packet", "af_xdp", "dpdk"].contains(&a.port.as_str()) {
        return Err(format!(
            "--port {:?}: ring, af_packet, af_xdp or dpdk",
            a.port
        ));
    }
    if !["xdp", "af_packet"].contains(&a.sender.as_str()) {
        return Err(format!("--sender {:?}: xdp or af_packet", a.sender));
    }
    if a.seconds == 0 || a.seconds > 600 {
        return Err("--seconds must be 1 to 600".into());
    }
    Ok(a)
}

fn session(i: usize, proto: u8) -> SessionSpec {
    let i = i as u32;
    let src = std::net::Ipv4Addr::from(0x0a00_0000 | (i >> 8)); // 10.x.y.z
    let dst = std::net::Ipv4Addr::from(0xc0a8_0000 | (i & 0xff)); // 192.168.0.z
    SessionSpec::new(
        u64::from(i),
        1,
        2,
        proto,
        src.into(),
        1024 + (i % 50_000) as u16,
        dst.into(),
        53,
        Action::Forward,
    )
}

fn frame(s: &SessionSpec, reverse: bool, buf: &mut [u8]) -> usize {
    let (src, dst, sport, dport) = if reverse {
        (s.dst, s.src, s.dport, s.sport)
    } else {
        (s.src, s.dst, s.sport, s.dport)
    };
    let spec = FrameSpec {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        vlan: 0,
        v6: false,
        proto: s.proto,
        src,
        dst,
        sport,
        dport,
        tcp_flags: if s.proto == PROTO_TCP {
            tcp_flags::ACK
        } else {
            0
        },
        payload_len: 0,
    };
    wire::build(&spec, buf).expect("a 64-byte frame fits")
}

/// The frames waiting to be injected, by port (0 outside, 1 inside) and queue.
type Pending = [Vec<VecDeque<PacketBuf>>; 2];

/// Plays the network: injects, collects and re-injects until `packets` came back.
/// Returns the time taken and the packets that came back by the expected ports.
fn drive(
    peers: &mut [RingPeer; 2],
    fw: &mut RingPeer,
    pending: &mut Pending,
    packets: u64,
) -> (Duration, u64) {
    let queues = peers[0].queues();
    // In flight per queue and direction (by the port a frame is injected on): each
    // direction gets half the ring, so neither starves the other (both directions of
    // every session are sent) and no ring overflows.
    let cap = (RING as u64 - 2 * BURST as u64) / 2;
    let mut inflight = vec![[0u64; 2]; queues];
    let (mut injected, mut received) = (0u64, 0u64);
    let start = Instant::now();
    let mut burst = Burst::new();
    let mut stalled = 0u64;
    let mut stall_start = Instant::now();
    while received < packets {
        let before = received;
        for q in 0..queues {
            for port in 0..2 {
                // What leaves one port came in on the other: send it in again there.
                let n = peers[port].collect_queue(q, &mut burst) as u64;
                received += n;
                inflight[q][1 - port] -= n;
                pending[1 - port][q].extend(burst.drain(..));
            }
            for port in 0..2 {
                let room = cap.saturating_sub(inflight[q][port]);
                let want = (packets - injected).min(room).min(BURST as u64) as usize;
                let src = &mut pending[port][q];
                while burst.len() < want {
                    match src.pop_front() {
                        Some(p) => burst.push(p),
                        None => break,
                    }
                }
                let n = peers[port].inject_burst(q, &mut burst) as u64;
                injected += n;
                inflight[q][port] += n;
                while let Some(p) = burst.pop() {
                    src.push_front(p);
                }
            }
        }
        // Misses (there should be none) end up at the firewall: count them as lost.
        let mut junk = Vec::new();
        fw.collect(&mut junk);
        // The clock is read rarely: the driver must not be what is measured.
        if received > before {
            stalled = 0;
        } else {
            if stalled == 0 {
                stall_start = Instant::now();
            }
            stalled += 1;
            if stalled & 4095 == 0 && stall_start.elapsed() > Duration::from_secs(2) {
                break;
            }
        }
    }
    (start.elapsed(), received)
}

/// The baseline worker: moves frames rx -> tx with no parsing.
fn baseline(
    ports: [RingPort; 2],
    workers: usize,
    cores: &[usize],
) -> (Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let [mut a, mut b] = ports;
    let qa = a.open(workers).expect("ring opens");
    let qb = b.open(workers).expect("ring opens");
    let mut joins = Vec::new();
    for (w, (mut qa, mut qb)) in qa.into_iter().zip(qb).enumerate() {
        let stop = stop.clone();
        let core = cores.get(w).copied();
        joins.push(std::thread::spawn(move || {
            if let Some(c) = core {
                core_affinity::set_for_current(core_affinity::CoreId { id: c });
            }
            let mut burst = Burst::new();
            while !stop.load(Ordering::Relaxed) {
                if qa.rx_burst(&mut burst) > 0 {
                    qb.tx_burst(&mut burst);
                    burst.clear();
                }
                if qb.rx_burst(&mut burst) > 0 {
                    qa.tx_burst(&mut burst);
                    burst.clear();
                }
            }
        }));
    }
    (stop, joins)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let result = if args.port != "ring" {
        port_bench::run(&args)
    } else {
        run(&args)
    };
    match result {
        Ok(ok) => {
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("dpbench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(a: &Args) -> Result<bool, String> {
    let cores = place_threads(a.workers);
    let log = |s: String| {
        if !a.json {
            println!("{s}");
        } else {
            eprintln!("{s}");
        }
    };
    let t = Instant::now();
    let proto = if a.tcp { PROTO_TCP } else { PROTO_UDP };
    let specs: Vec<SessionSpec> = (0..a.sessions).map(|i| session(i, proto)).collect();
    let pool = PacketPool::new((2 * a.sessions + 4 * RING * a.workers) as u32, FRAME)
        .map_err(|e| format!("packet pool: {e}"))?;
    let mut pending = build_frames(&specs, &pool, a.workers)?;
    log(format!(
        "built {} frames in {:.2?}",
        2 * specs.len(),
        t.elapsed()
    ));

    let baseline_mpps = measure_baseline(a, &cores, &mut pending, &log)?;

    let (engine, mut peers, mut fw_peer) = start_pipeline(a, &cores, &log)?;
    let install = install_sessions(&engine, &specs)?;
    log(format!(
        "installed {} sessions in {install:.2?} ({:.2} M adds/s)",
        a.sessions,
        a.sessions as f64 / install.as_secs_f64() / 1e6
    ));
    // The worker loops counted before the run (install, start-up) are not the run's.
    let before = engine.report().total;
    let (secs, got) = drive(&mut peers, &mut fw_peer, &mut pending, a.packets);
    let mpps = got as f64 / secs.as_secs_f64() / 1e6 / a.workers as f64;
    log(format!(
        "pipeline: {got} packets in {secs:.2?}: {mpps:.2} Mpps per worker"
    ));
    let report = engine.report();
    log_worker_loops(&report, &before, &log);

    let counted = session_packets(&engine, &specs, a.workers)?;
    let stop = engine.stop();
    let hits = report.total.hits;
    let misses = report.total.misses + report.total.not_flow + report.total.malformed;
    let h = &report.latency.packet_ns;
    let bytes_per_session = report.table_bytes as f64 / a.sessions as f64;
    let ok = got == a.packets
        && hits == a.packets
        && misses == 0
        && counted == a.packets
        && report.total.tcp_invalid_out_of_window
            + report.total.tcp_invalid_no_window
            + report.total.tcp_invalid_bad_checksum
            == 0
        && stop.crashed == 0;
    log(format!(
        "verify: sent {} hits {hits} misses {misses} session counters {counted}: {}",
        a.packets,
        if ok { "ok" } else { "MISMATCH" }
    ));
    log(format!(
        "per packet (each loop's time / packets it finished): p50 {} ns, p99 {} ns, p99.9 {} ns; {:.1} bytes per session",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        bytes_per_session
    ));
    let json = serde_json::json!({
        "workers": a.workers,
        "sessions": a.sessions,
        "protocol": if a.tcp { "tcp" } else { "udp" },
        "packets": a.packets,
        "mpps_per_worker": round2(mpps),
        "ns_per_packet": round2(1e3 / mpps),
        "baseline_mpps": round2(baseline_mpps),
        "ratio_to_baseline": round2(mpps / baseline_mpps),
        "p50_ns": h.value_at_quantile(0.5),
        "p99_ns": h.value_at_quantile(0.99),
        "p999_ns": h.value_at_quantile(0.999),
        "bytes_per_session": round2(bytes_per_session),
        "hits": hits,
        "misses": misses,
        "session_counter_total": counted,
        "install_seconds": round2(install.as_secs_f64()),
        "verified": ok,
    });
    if a.json {
        println!("{json}");
    }
    Ok(ok)
}

/// The workers' cores (`worker_core`), and the driver (this thread) on core 0 when
/// there is one to spare.
fn place_threads(workers: usize) -> Vec<usize> {
    // Counted before this thread is pinned: the count follows its affinity.
    let placed = (0..workers).map(worker_core).collect();
    if workers < cores() {
        core_affinity::set_for_current(core_affinity::CoreId { id: 0 });
    }
    placed
}

/// The cores this thread may run on.
fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The core of worker `w`: the last cores, so that the driver or sender has core 0.
fn worker_core(w: usize) -> usize {
    let ncores = cores();
    (ncores - 1 - w % ncores) % ncores
}

/// Frames for both directions of every session, shuffled, each waiting on the port
/// and queue it is injected on (the queue the steering picks for its worker).
fn build_frames(
    specs: &[SessionSpec],
    pool: &PacketPool,
    workers: usize,
) -> Result<Pending, String> {
    let steering = dataplane::steer::Steering::new(workers);
    let mut order: Vec<(usize, bool)> = (0..specs.len())
        .flat_map(|i| [(i, false), (i, true)])
        .collect();
    order.shuffle(&mut SmallRng::seed_from_u64(7));
    let mut pending: Pending = [
        (0..workers).map(|_| VecDeque::new()).collect(),
        (0..workers).map(|_| VecDeque::new()).collect(),
    ];
    let mut buf = [0u8; 128];
    for &(i, reverse) in &order {
        let s = &specs[i];
        let n = frame(s, reverse, &mut buf);
        let p = pool.alloc_from(&buf[..n]).ok_or("packet pool exhausted")?;
        let q = steering.worker(false, &s.src, &s.dst, s.sport, s.dport);
        pending[usize::from(reverse)][q].push_back(p);
    }
    Ok(pending)
}

/// (a) The baseline: the frames through ring ports moved by `baseline` threads with
/// no parsing; Mpps per worker.
fn measure_baseline(
    a: &Args,
    cores: &[usize],
    pending: &mut Pending,
    log: &dyn Fn(String),
) -> Result<f64, String> {
    let (pa, peer_a) = ring_port("outside", [2, 0, 0, 0, 1, 0], a.workers, RING);
    let (pb, peer_b) = ring_port("inside", [2, 0, 0, 0, 1, 1], a.workers, RING);
    let (_fw_port, mut fw_peer) = ring_port("firewall", [2, 0, 0, 0, 1, 2], a.workers, RING);
    let (stop, joins) = baseline([pa, pb], a.workers, cores);
    let mut peers = [peer_a, peer_b];
    let (secs, got) = drive(&mut peers, &mut fw_peer, pending, a.packets);
    stop.store(true, Ordering::Relaxed);
    for j in joins {
        let _ = j.join();
    }
    let mpps = got as f64 / secs.as_secs_f64() / 1e6 / a.workers as f64;
    log(format!(
        "baseline: {got} packets in {secs:.2?}: {mpps:.2} Mpps per worker"
    ));
    if got != a.packets {
        return Err(format!("baseline lost packets: {got} of {}", a.packets));
    }
    // Frames left in the baseline's rings go back to the pool with them; the pipeline
    // runs on the rest.
    Ok(mpps)
}

/// (b) The engine on fresh ring ports (outside lif 1, inside lif 2, the firewall),
/// busy-polling workers on `cores`, tables for `a.sessions`.
fn start_pipeline(
    a: &Args,
    cores: &[usize],
    log: &dyn Fn(String),
) -> Result<(Engine, [RingPeer; 2], RingPeer), String> {
    let (pa, peer_a) = ring_port("outside", [2, 0, 0, 0, 1, 0], a.workers, RING);
    let (pb, peer_b) = ring_port("inside", [2, 0, 0, 0, 1, 1], a.workers, RING);
    let (pf, fw_peer) = ring_port("firewall", [2, 0, 0, 0, 1, 2], a.workers, RING);
    let port = |p: RingPort, lif: Option<u16>| PortConfig {
        port: Box::new(p),
        lif,
        next_hop_mac: None,
    };
    let ports = vec![port(pa, Some(1)), port(pb, Some(2)), port(pf, None)];
    let mut cfg = EngineConfig::new(ports, 2);
    cfg.workers = a.workers;
    cfg.cores = cores.to_vec();
    cfg.max_sessions = a.sessions;
    cfg.poll = PollMode::Busy;
    cfg.default_timeout_s = 3600;
    cfg.command_queue = 64;
    let t = Instant::now();
    let engine = Engine::start(cfg).map_err(|e| e.to_string())?;
    log(format!(
        "engine up (tables reserved) in {:.2?}",
        t.elapsed()
    ));
    Ok((engine, [peer_a, peer_b], fw_peer))
}

/// Adds every session; an error names the first one refused.
fn install_sessions(engine: &Engine, specs: &[SessionSpec]) -> Result<Duration, String> {
    let t = Instant::now();
    for chunk in specs.chunks(65_536) {
        let r = engine.add(chunk.to_vec());
        if let Some((i, e)) = r
            .iter()
            .enumerate()
            .find_map(|(i, r)| r.err().map(|e| (i, e)))
        {
            return Err(format!("session {} was not installed: {e}", chunk[i].id));
        }
    }
    Ok(t.elapsed())
}

/// How the workers spent their loops during the run, and what each port received.
fn log_worker_loops(report: &EngineReport, before: &WorkerCounters, log: &dyn Fn(String)) {
    let polls = report.total.polls - before.polls;
    let idle_polls = report.total.idle_polls - before.idle_polls;
    let busy = (polls - idle_polls).max(1);
    log(format!(
        "worker loops during the run: {polls} of which idle {idle_polls} ({:.1}%); \
         {:.1} packets received per busy loop",
        100.0 * idle_polls as f64 / polls.max(1) as f64,
        (report.total.rx - before.rx) as f64 / busy as f64
    ));
    log(format!(
        "received by port: {}",
        report
            .ports
            .iter()
            .map(|p| format!("{} {}", p.name, p.rx))
            .collect::<Vec<_>>()
            .join(", ")
    ));
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Packets of every session by its counters, asked of its owner in pages.
fn session_packets(engine: &Engine, specs: &[SessionSpec], workers: usize) -> Result<u64, String> {
    let mut by_worker: Vec<Vec<u64>> = vec![Vec::new(); workers];
    for s in specs {
        by_worker[engine.owner(s)].push(s.id);
    }
    let mut counted = 0u64;
    for (w, ids) in by_worker.into_iter().enumerate() {
        for page in ids.chunks(100_000) {
            let page = page.to_vec();
            let infos = engine
                .call(w, |reply| Command::Query { ids: page, reply })
                .ok_or("worker gone")?;
            counted += infos
                .iter()
                .flatten()
                .map(|i| i.in_packets + i.out_packets)
                .sum::<u64>();
        }
    }
    Ok(counted)
}

#[cfg(test)]
mod tests {
    /// The keys of the `json!` objects in `source` (lines `"key": value,`).
    fn json_keys(source: &str) -> Vec<&str> {
        source
            .lines()
            .map(str::trim)
            .filter_map(|l| l.strip_prefix('"')?.split_once("\": ").map(|(k, _)| k))
            .filter(|k| {
                k.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            })
            .collect()
    }

    /// With a core to spare, the driver gets core 0 and no worker does (the workers'
    /// cores must be counted before the driver's thread is pinned).
    #[test]
    fn workers_keep_off_the_drivers_core() {
        let workers = std::thread::spawn(|| (super::cores(), super::place_threads(1)))
            .join()
            .expect("placed");
        match workers {
            (1, placed) => assert_eq!(placed, vec![0]),
            (n, placed) => assert_eq!(placed, vec![n - 1]),
        }
    }

    /// Every field of dpbench's `--json` objects (ring and real ports) is named in
    /// docs/output-formats.md, in backticks.
    #[test]
    fn every_json_field_is_documented() {
        let docs = include_str!("../../../../docs/output-formats.md");
        let dpbench = &docs[docs.find("## dpbench").expect("a dpbench section")..];
        let keys: Vec<&str> = [include_str!("main.rs"), include_str!("port_bench.rs")]
            .iter()
            .flat_map(|s| json_keys(s))
            .collect();
        assert!(keys.len() > 30, "found {keys:?}");
        let missing: Vec<&&str> = keys
            .iter()
            .filter(|k| !dpbench.contains(&format!("`{k}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "not in docs/output-formats.md: {missing:?}"
        );
    }
}
