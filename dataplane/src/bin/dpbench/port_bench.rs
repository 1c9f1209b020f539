//! `dpbench --port af_packet|af_xdp|dpdk`: the device on veth pairs against the
//! kernel's routing and connection tracking on the same box, with the same sender.
//!
//! The veths, namespaces and kernel baselines live here; the senders are in
//! `xdp_sender.rs` (the default) and `blast` below (an AF_PACKET tx ring).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::port::af_packet::{AfPacketOptions, AfPacketPort};
use dataplane::port::ring::ring_port;
use dataplane::port::tpacket::{self, Geometry, Socket, SocketOptions};
use dataplane::port::Port;
use dataplane::wire::{PROTO_TCP, PROTO_UDP};
use dataplane::{Engine, EngineConfig, PollMode, PortConfig, SessionSpec};

use super::{frame, round2, session, session_packets, Args, RING};
/// Runs `ip`; the error names the command.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Links and namespaces the bench made; removed on drop (also on error or panic).
#[derive(Default)]
struct Veths {
    /// (namespace, link): deleting one end of a pair deletes both.
    links: Vec<(Option<String>, String)>,
    namespaces: Vec<String>,
}

impl Drop for Veths {
    fn drop(&mut self) {
        for (ns, l) in self.links.drain(..) {
            let _ = match ns {
                Some(ns) => ip(&["-n", &ns, "link", "del", &l]),
                None => ip(&["link", "del", &l]),
            };
        }
        for n in self.namespaces.drain(..) {
            let _ = ip(&["netns", "del", &n]);
        }
    }
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Veths {
    /// A veth pair `a` (in `ns_a`, or ours) <-> `b` (in `ns_b`, or ours), both up, with
    /// the given MACs and IPv6 off on our ends.
    fn pair(
        &mut self,
        a: &str,
        mac_a: [u8; 6],
        ns_a: Option<&str>,
        b: &str,
        mac_b: [u8; 6],
        ns_b: Option<&str>,
    ) -> Result<(), String> {
        let (ma, mb) = (mac_str(mac_a), mac_str(mac_b));
        ip(&[
            "link", "add", a, "address", &ma, "type", "veth", "peer", "name", b, "address", &mb,
        ])?;
        self.links.push((None, a.to_string()));
        for (dev, ns) in [(a, ns_a), (b, ns_b)] {
            match ns {
                Some(ns) => {
                    ip(&["link", "set", dev, "netns", ns])?;
                    if dev == a {
                        self.links.last_mut().expect("pushed above").0 = Some(ns.to_string());
                    }
                    ip(&["-n", ns, "link", "set", dev, "up"])?;
                }
                None => {
                    let _ =
                        std::fs::write(format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6"), "1");
                    ip(&["link", "set", dev, "up"])?;
                }
            }
        }
        Ok(())
    }

    fn namespace(&mut self, name: &str) -> Result<(), String> {
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"])
    }
}

/// Runs `f` on a thread inside namespace `ns` (None: here).
fn in_netns<T: Send + 'static>(
    ns: Option<&str>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let path = ns.map(|n| format!("/run/netns/{n}"));
    std::thread::spawn(move || {
        if let Some(path) = path {
            use std::os::fd::AsRawFd;
            let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
            // SAFETY: setns on a namespace file we hold open; changes this thread only.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
            }
        }
        Ok(f())
    })
    .join()
    .map_err(|_| "thread panicked".to_string())?
}

/// Packets counted by an interface (`ip -s -j link`): (rx, tx).
fn link_packets(ns: Option<&str>, dev: &str) -> Result<(u64, u64), String> {
    let mut args = vec!["-s", "-j"];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    args.extend(["link", "show", "dev", dev]);
    let out = std::process::Command::new("ip")
        .args(&args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("ip -s -j link show {dev}: {e}"))?;
    let s = &v[0]["stats64"];
    let get = |d: &str| {
        s[d]["packets"]
            .as_u64()
            .ok_or(format!("no {d} packets for {dev}"))
    };
    Ok((get("rx")?, get("tx")?))
}

/// The sender: one AF_PACKET socket with a tx ring, pinned to core 0, sending the
/// frames round-robin for `secs`. Returns the frames handed to the kernel and the time.
fn blast(mut sock: Socket, frames: Arc<Vec<Vec<u8>>>, secs: u64) -> (u64, Duration) {
    core_affinity::set_for_current(core_affinity::CoreId { id: 0 });
    let (mut i, mut sent) = (0usize, 0u64);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut round = 0u32;
    loop {
        let mut n = 0;
        while n < 256 && sock.tx_put(&frames[i]) {
            i = (i + 1) % frames.len();
            n += 1;
        }
        sock.tx_kick();
        sent += n as u64;
        round = round.wrapping_add(1);
        if round.is_multiple_of(64) && Instant::now() >= end {
            break;
        }
    }
    // What is still marked goes out with a last kick.
    while sock.tx_pending() > 0 {
        sock.tx_kick();
    }
    (sent, start.elapsed())
}

fn sender_socket(ns: Option<&str>, dev: &str) -> Result<Socket, String> {
    let dev = dev.to_string();
    in_netns(ns, move || {
        let ifindex = tpacket::ifindex(&dev)?;
        Socket::open(&SocketOptions {
            ifindex,
            geometry: Geometry {
                block_size: 1 << 16,
                block_count: 1,
                frame_size: 256,
                tx_frames: 4096,
                block_timeout_ms: 1,
            },
            qdisc_bypass: true,
            promiscuous: false,
        })
    })?
}

/// The kernel baselines' namespaces and links: `src` (`s0`) -> `rtr` (`r0`, `r1`) ->
/// `dst` (`d0`).
struct Router {
    src: String,
    rtr: String,
    dst: String,
    s0: String,
    r1: String,
    d0: String,
}

/// What the conntrack baseline measured.
struct Forwarded {
    sent: u64,
    forwarded: u64,
    elapsed: Duration,
    /// Connections conntrack held after the warm-up.
    tracked: u64,
    /// Frames the established-only rules dropped (must be 0).
    not_established: u64,
}

/// (c) The router forwarding only what its conntrack knows as established: every
/// session made established first (its frame out, then a reply), then `to_router`
/// (the sessions' frames addressed to the router) sent for `secs`.
fn conntrack_forwarding(
    n: &Router,
    specs: &[SessionSpec],
    to_router: Arc<Vec<Vec<u8>>>,
    sessions: usize,
    secs: u64,
) -> Result<Forwarded, String> {
    let replies: Vec<Vec<u8>> = specs
        .iter()
        .map(|s| {
            let mut buf = [0u8; 128];
            let len = frame(s, true, &mut buf);
            buf[..6].copy_from_slice(&[2, 0xbf, 0, 0, 0, 3]); // to the router's r1
            buf[..len].to_vec()
        })
        .collect();
    let _max = ConntrackMax::at_least(2 * sessions as u64)?;
    nft(&n.rtr, CONNTRACK_WARM_UP)?;
    send_once(sender_socket(Some(&n.src), &n.s0)?, &to_router);
    let rtr = n.rtr.clone();
    let tracked = settle(move || conntrack_count(&rtr))?;
    send_once(sender_socket(Some(&n.dst), &n.d0)?, &replies);
    let (rtr, r1) = (n.rtr.clone(), n.r1.clone());
    settle(move || link_packets(Some(&rtr), &r1).map(|p| p.0))?;
    nft(&n.rtr, CONNTRACK_ESTABLISHED)?;
    let (rtr, r1) = (n.rtr.clone(), n.r1.clone());
    let fwd = move || link_packets(Some(&rtr), &r1).map(|p| p.1);
    let sock = sender_socket(Some(&n.src), &n.s0)?;
    let before = fwd()?;
    let (sent, elapsed) = std::thread::spawn(move || blast(sock, to_router, secs))
        .join()
        .map_err(|_| "sender panicked")?;
    let forwarded = settle(&fwd)? - before;
    Ok(Forwarded {
        sent,
        forwarded,
        elapsed,
        tracked,
        not_established: nft_drops(&n.rtr)?,
    })
}

/// nftables in the router namespace for the warm-up: conntrack on, everything passes.
const CONNTRACK_WARM_UP: &str = "\
table inet dpbench {
  chain forward {
    type filter hook forward priority filter; policy accept;
    ct state established,new accept
  }
}
";

/// Then only what conntrack knows as established passes; the rest is counted.
const CONNTRACK_ESTABLISHED: &str = "\
flush table inet dpbench
table inet dpbench {
  chain forward {
    type filter hook forward priority filter; policy accept;
    ct state established accept
    counter drop
  }
}
";

/// Loads `rules` into namespace `ns`'s nftables.
fn nft(ns: &str, rules: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(rules.as_bytes())
        .map_err(|e| format!("nft: {e}"))?;
    drop(stdin);
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nft -f in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Packets the established-only rule set dropped in namespace `ns`.
fn nft_drops(ns: &str) -> Result<u64, String> {
    let out = std::process::Command::new("ip")
        .args([
            "netns", "exec", ns, "nft", "-j", "list", "table", "inet", "dpbench",
        ])
        .output()
        .map_err(|e| format!("nft: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("nft -j list: {e}"))?;
    let drops = v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["rule"]["expr"].as_array())
        .flatten()
        .filter_map(|x| x["counter"]["packets"].as_u64())
        .sum();
    Ok(drops)
}

/// Connections conntrack holds in namespace `ns`.
fn conntrack_count(ns: &str) -> Result<u64, String> {
    in_netns(Some(ns), || {
        std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
            .map_err(|e| format!("nf_conntrack_count: {e}"))
            .and_then(|s| s.trim().parse::<u64>().map_err(|e| e.to_string()))
    })?
}

/// Sends each frame once and waits until the ring has sent them.
fn send_once(mut sock: Socket, frames: &[Vec<u8>]) {
    for f in frames {
        while !sock.tx_put(f) {
            sock.tx_kick();
        }
    }
    while sock.tx_pending() > 0 {
        sock.tx_kick();
    }
}

/// Raises the host's `nf_conntrack_max` for the run (conntrack in every namespace
/// shares it) and puts the old value back when dropped.
struct ConntrackMax(Option<u64>);

const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

impl ConntrackMax {
    fn at_least(n: u64) -> Result<ConntrackMax, String> {
        let read =
            std::fs::read_to_string(CONNTRACK_MAX).map_err(|e| format!("{CONNTRACK_MAX}: {e}"))?;
        let old: u64 = read
            .trim()
            .parse()
            .map_err(|e| format!("{CONNTRACK_MAX}: {e}"))?;
        if old >= n {
            return Ok(ConntrackMax(None));
        }
        std::fs::write(CONNTRACK_MAX, n.to_string())
            .map_err(|e| format!("{CONNTRACK_MAX}: {e}"))?;
        Ok(ConntrackMax(Some(old)))
    }
}

impl Drop for ConntrackMax {
    fn drop(&mut self) {
        if let Some(old) = self.0 {
            let _ = std::fs::write(CONNTRACK_MAX, old.to_string());
        }
    }
}

/// Waits until `read` stops moving (frames still in rings and backlogs); its last value.
fn settle(read: impl Fn() -> Result<u64, String>) -> Result<u64, String> {
    let mut last = read()?;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = read()?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
}

/// The device's two ports for `--port af_xdp`: AF_XDP sockets on the veths (`auto`
/// modes: native + copy on a veth), as many queues as workers.
#[cfg(feature = "afxdp")]
fn xdp_ports(outside: &str, inside: &str, _workers: usize) -> Result<[Box<dyn Port>; 2], String> {
    use dataplane::port::af_xdp::{AfXdpOptions, AfXdpPort};
    let opts = AfXdpOptions::default();
    let o = AfXdpPort::new("outside", outside, [2, 0xbe, 0, 0, 0, 2], opts.clone())
        .map_err(|e| e.to_string())?;
    let i =
        AfXdpPort::new("inside", inside, [2, 0xbe, 0, 0, 0, 3], opts).map_err(|e| e.to_string())?;
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
    let o = DpdkPort::new(&eal, "outside", &o_dev, [2, 0xbe, 0, 0, 0, 2], opts.clone())
        .map_err(|e| e.to_string())?;
    let i = DpdkPort::new(&eal, "inside", &i_dev, [2, 0xbe, 0, 0, 0, 3], opts)
        .map_err(|e| e.to_string())?;
    Ok([Box::new(o), Box::new(i)])
}

#[cfg(not(feature = "dpdk"))]
fn dpdk_ports(_outside: &str, _inside: &str) -> Result<[Box<dyn Port>; 2], String> {
    Err("--port dpdk: dpbench was built without the dpdk feature".into())
}

/// `--port af_packet`, `--port af_xdp` or `--port dpdk`: (a) the device: a sender on veth `dpa0` sends 64-byte UDP frames
/// of N offloaded sessions into the device's outside port (`dpa1`); the worker forwards
/// them out of its inside port (`dpb0`), and `dpb1`, the far end, drops them (counted
/// by the kernel). (b) the kernel baseline: the same sender, in namespace `src`, sends
/// to a router namespace that forwards to a third (`ip_forward`, static neighbour).
/// (c) the same router forwarding only what its conntrack knows as established
/// (nftables `ct state established accept`, the sessions made established first).
/// Each reports frames delivered at the far end per second.
pub fn run(a: &Args) -> Result<bool, String> {
    // SAFETY: plain libc call.
    if unsafe { libc::geteuid() } != 0 {
        return Err("--port af_packet needs root (veth pairs, AF_PACKET)".into());
    }
    if std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_err()
    {
        return Err("--port needs nft for the conntrack baseline (Debian: nftables)".into());
    }
    let log = |s: String| {
        if a.json {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    };
    let ncores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cores: Vec<usize> = (0..a.workers)
        .map(|w| (ncores - 1 - w % ncores) % ncores)
        .collect();
    let tag = format!("{:x}", std::process::id());
    let mut v = Veths::default();
    let (dpa0, dpa1, dpb0, dpb1) = (
        format!("dpa0{tag}"),
        format!("dpa1{tag}"),
        format!("dpb0{tag}"),
        format!("dpb1{tag}"),
    );
    let sender_mac = [2, 0xbe, 0, 0, 0, 1];
    let far_mac = [2, 0xbe, 0, 0, 0, 4];
    v.pair(&dpa0, sender_mac, None, &dpa1, [2, 0xbe, 0, 0, 0, 2], None)?;
    v.pair(&dpb0, [2, 0xbe, 0, 0, 0, 3], None, &dpb1, far_mac, None)?;

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

    // (a) The device.
    let [outside, inside]: [Box<dyn Port>; 2] = if a.port == "af_xdp" {
        xdp_ports(&dpa1, &dpb0, a.workers)?
    } else if a.port == "dpdk" {
        dpdk_ports(&dpa1, &dpb0)?
    } else {
        let opts = AfPacketOptions {
            block_size: 1 << 20,
            block_count: 32,
            ..AfPacketOptions::default()
        };
        let outside = AfPacketPort::new("outside", &dpa1, [2, 0xbe, 0, 0, 0, 2], opts.clone())
            .map_err(|e| e.to_string())?;
        let inside = AfPacketPort::new("inside", &dpb0, [2, 0xbe, 0, 0, 0, 3], opts)
            .map_err(|e| e.to_string())?;
        [Box::new(outside), Box::new(inside)]
    };
    let (fw, _fw_peer) = ring_port("firewall", [2, 0, 0, 0, 1, 2], a.workers, RING);
    let ports = vec![
        PortConfig {
            port: outside,
            lif: Some(1),
            next_hop_mac: None,
        },
        PortConfig {
            port: inside,
            lif: Some(2),
            next_hop_mac: None,
        },
        PortConfig {
            port: Box::new(fw),
            lif: None,
            next_hop_mac: None,
        },
    ];
    let mut cfg = EngineConfig::new(ports, 2);
    cfg.workers = a.workers;
    cfg.cores = cores;
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
    let install = t.elapsed();
    let sock = sender_socket(None, &dpa0)?;
    let far_before = link_packets(None, &dpb1)?.0;
    let f = frames.clone();
    let secs = a.seconds;
    let (sent, elapsed) = std::thread::spawn(move || blast(sock, f, secs))
        .join()
        .map_err(|_| "sender panicked")?;
    let far = settle(|| link_packets(None, &dpb1).map(|p| p.0))? - far_before;
    let mpps = far as f64 / elapsed.as_secs_f64() / 1e6;
    let sender_mpps = sent as f64 / elapsed.as_secs_f64() / 1e6;
    let report = engine.report();
    let port_counters = engine.port_counters();
    let counted = session_packets(&engine, &specs, a.workers)?;
    let stop = engine.stop();
    let counter = |port: &str, name: &str| -> u64 {
        port_counters
            .iter()
            .filter(|(p, _)| p == port)
            .flat_map(|(_, cs)| cs.iter())
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .sum()
    };
    // af_packet: rx ring full; af_xdp: the socket's rx drops and full rx ring.
    let kernel_drops = counter("outside", "kernel_drops")
        + counter("outside", "kernel_rx_dropped")
        + counter("outside", "kernel_rx_ring_full");
    let handoffs = counter("outside", "handoffs");
    let hits = report.total.hits;
    let misses = report.total.misses + report.total.not_flow + report.total.malformed;
    let tx_drops: u64 = report.ports.iter().map(|p| p.tx_drops).sum();
    // The worker's busy time: each loop that finished packets is timed and divided
    // among them in the histogram, so its sum is the time spent on them.
    let h = &report.latency.packet_ns;
    let busy_ns = h.mean() * h.len() as f64;
    let busy_percent = 100.0 * busy_ns / (elapsed.as_nanos() as f64 * a.workers as f64);
    let worker_ns_per_packet = busy_ns / h.len().max(1) as f64;
    log(format!(
        "worker busy {busy_percent:.1}% of its core while the sender ran; \
         {worker_ns_per_packet:.0} ns a packet in the worker"
    ));
    log(format!(
        "{} device: sender {sent} frames ({sender_mpps:.2} Mpps) in {elapsed:.2?}; \
         device hits {hits}, far end received {far}: {mpps:.2} Mpps \
         (outside ring drops {kernel_drops}, hand-offs {handoffs}, tx drops {tx_drops}, \
         idle loops {:.1}%)",
        a.port,
        100.0 * report.total.idle_polls as f64 / report.total.polls.max(1) as f64
    ));

    // (b) The kernel: src -> router -> dst, same sender, same frames re-addressed.
    let (src, rtr, dst) = (
        format!("dpsrc{tag}"),
        format!("dprtr{tag}"),
        format!("dpdst{tag}"),
    );
    for n in [&src, &rtr, &dst] {
        v.namespace(n)?;
    }
    let (r0_mac, d0_mac) = ([2, 0xbf, 0, 0, 0, 2], [2, 0xbf, 0, 0, 0, 4]);
    let (s0, r0, r1, d0) = (
        format!("s0{tag}"),
        format!("r0{tag}"),
        format!("r1{tag}"),
        format!("d0{tag}"),
    );
    v.pair(
        &s0,
        [2, 0xbf, 0, 0, 0, 1],
        Some(&src),
        &r0,
        r0_mac,
        Some(&rtr),
    )?;
    v.pair(
        &r1,
        [2, 0xbf, 0, 0, 0, 3],
        Some(&rtr),
        &d0,
        d0_mac,
        Some(&dst),
    )?;
    ip(&["-n", &rtr, "addr", "add", "10.0.0.254/8", "dev", &r0])?;
    ip(&["-n", &rtr, "addr", "add", "192.168.255.254/16", "dev", &r1])?;
    ip(&["-n", &dst, "addr", "add", "192.168.255.1/16", "dev", &d0])?;
    for z in 0..=255u32 {
        // The sessions' destinations 192.168.0.z sit behind dst: static neighbours, so
        // no ARP is in the measurement.
        let addr = format!("192.168.0.{z}");
        ip(&[
            "-n",
            &rtr,
            "neigh",
            "replace",
            &addr,
            "lladdr",
            &mac_str(d0_mac),
            "dev",
            &r1,
            "nud",
            "permanent",
        ])?;
    }
    in_netns(Some(&rtr), || {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
    })?
    .map_err(|e| format!("ip_forward in the router namespace: {e}"))?;
    let routed: Arc<Vec<Vec<u8>>> = Arc::new(
        frames
            .iter()
            .map(|f| {
                let mut f = f.clone();
                f[..6].copy_from_slice(&r0_mac); // to the router
                f
            })
            .collect(),
    );
    let sock = sender_socket(Some(&src), &s0)?;
    let (rtr_ns, r1_dev) = (rtr.clone(), r1.clone());
    let fwd = move || link_packets(Some(&rtr_ns), &r1_dev).map(|p| p.1);
    let before = fwd()?;
    let to_router = routed.clone();
    let (ksent, kelapsed) = std::thread::spawn(move || blast(sock, to_router, secs))
        .join()
        .map_err(|_| "sender panicked")?;
    let kfwd = settle(&fwd)? - before;
    let baseline_mpps = kfwd as f64 / kelapsed.as_secs_f64() / 1e6;
    log(format!(
        "kernel forwarding: sender {ksent} frames ({:.2} Mpps); router forwarded {kfwd}: {baseline_mpps:.2} Mpps",
        ksent as f64 / kelapsed.as_secs_f64() / 1e6
    ));

    // (c) The same router with conntrack.
    let router = Router {
        src: src.clone(),
        rtr: rtr.clone(),
        dst: dst.clone(),
        s0: s0.clone(),
        r1: r1.clone(),
        d0: d0.clone(),
    };
    let ct = conntrack_forwarding(&router, &specs, routed, a.sessions, secs)?;
    let conntrack_mpps = ct.forwarded as f64 / ct.elapsed.as_secs_f64() / 1e6;
    let (tracked, not_established) = (ct.tracked, ct.not_established);
    log(format!(
        "kernel conntrack forwarding ({tracked} connections tracked): sender {} frames \
         ({:.2} Mpps); router forwarded {}: {conntrack_mpps:.2} Mpps; \
         dropped as not established: {not_established}",
        ct.sent,
        ct.sent as f64 / ct.elapsed.as_secs_f64() / 1e6,
        ct.forwarded,
    ));
    drop(v);

    let ok = misses == 0
        && counted == hits
        && stop.crashed == 0
        && far <= hits
        && tracked >= a.sessions as u64
        && not_established == 0;
    log(format!(
        "verify: hits {hits} misses {misses} session counters {counted} far end {far}; \
         conntrack tracked {tracked}, not established {not_established}: {}",
        if ok { "ok" } else { "MISMATCH" }
    ));
    let json = serde_json::json!({
        "port": a.port,
        "workers": a.workers,
        "sessions": a.sessions,
        "packets": sent,
        "seconds": a.seconds,
        "mpps_per_worker": round2(mpps / a.workers as f64),
        "ns_per_packet": round2(1e3 / (mpps / a.workers as f64)),
        "baseline_mpps": round2(baseline_mpps),
        "ratio_to_baseline": round2(mpps / baseline_mpps),
        "conntrack_mpps": round2(conntrack_mpps),
        "ratio_to_conntrack": round2(mpps / conntrack_mpps),
        "sender_mpps": round2(sender_mpps),
        "p50_ns": h.value_at_quantile(0.5),
        "p99_ns": h.value_at_quantile(0.99),
        "p999_ns": h.value_at_quantile(0.999),
        "bytes_per_session": round2(report.table_bytes as f64 / a.sessions as f64),
        "hits": hits,
        "misses": misses,
        "delivered": far,
        "kernel_drops": kernel_drops,
        "handoffs": handoffs,
        "idle_percent": round2(100.0 * report.total.idle_polls as f64 / report.total.polls.max(1) as f64),
        "worker_busy_percent": round2(busy_percent),
        "worker_ns_per_packet": round2(worker_ns_per_packet),
        "session_counter_total": counted,
        "install_seconds": round2(install.as_secs_f64()),
        "verified": ok,
    });
    if a.json {
        println!("{json}");
    }
    Ok(ok)
}
