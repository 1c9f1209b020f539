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
//! This file owns the veths, namespaces, the device's run and the kernel baselines;
//! the senders are `xdp_sender.rs` (the default) and `blast` below (an AF_PACKET tx
//! ring).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::port::af_packet::{AfPacketOptions, AfPacketPort};
use dataplane::port::ring::ring_port;
use dataplane::port::tpacket::{self, Geometry, Socket, SocketOptions};
use dataplane::port::Port;
use dataplane::wire::{PROTO_TCP, PROTO_UDP};
use dataplane::{Engine, EngineConfig, PollMode, PortConfig, SessionSpec};

use super::xdp_sender;
use super::{frame, round2, session, session_packets, Args, RING};

/// Runs `cmd args`; the error names the command and carries its stderr.
fn command(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd} {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    command("ip", args)
}

/// Turns on the veth's NAPI receive path (GRO), without which it refuses the XDP
/// sender's frames.
fn enable_napi(ns: Option<&str>, dev: &str) -> Result<(), String> {
    let gro_on = ["-K", dev, "gro", "on"];
    match ns {
        Some(ns) => ip(&[&["netns", "exec", ns, "ethtool"], &gro_on[..]].concat()),
        None => command("ethtool", &gro_on),
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

/// An interface's counters (`ip -s -j link`: its `stats64` object).
fn link_stats(ns: Option<&str>, dev: &str) -> Result<serde_json::Value, String> {
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
    Ok(v[0]["stats64"].clone())
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

/// Where the sender sends from: interface `dev` in namespace `ns` (None: ours), whose
/// veth peer `peer` (in `peer_ns`) receives.
struct SendFrom<'a> {
    ns: Option<&'a str>,
    dev: &'a str,
    peer_ns: Option<&'a str>,
    peer: &'a str,
}

/// Sends `frames` round-robin for `secs` with the chosen sender (`--sender`), on
/// core 0: the frames handed to the kernel and the time taken.
fn send_for(
    sender: &str,
    from: &SendFrom<'_>,
    frames: Arc<Vec<Vec<u8>>>,
    secs: u64,
) -> Result<(u64, Duration), String> {
    if sender == "af_packet" {
        let sock = sender_socket(from.ns, from.dev)?;
        return std::thread::spawn(move || blast(sock, frames, secs))
            .join()
            .map_err(|_| "sender panicked".to_string());
    }
    enable_napi(from.peer_ns, from.peer)?;
    let dev = from.dev.to_string();
    in_netns(from.ns, move || {
        core_affinity::set_for_current(core_affinity::CoreId { id: 0 });
        let ifindex = tpacket::ifindex(&dev)?;
        xdp_sender::XdpSender::new(&frames, ifindex)?.blast(secs)
    })?
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
    r0: String,
    r1: String,
    d0: String,
}

impl Router {
    /// The sender's place for the baselines: `s0`, received by the router's `r0`.
    fn send_from(&self) -> SendFrom<'_> {
        SendFrom {
            ns: Some(&self.src),
            dev: &self.s0,
            peer_ns: Some(&self.rtr),
            peer: &self.r0,
        }
    }
}

/// One kernel baseline measurement.
struct KernelRun {
    /// `routing` or `conntrack`.
    test: &'static str,
    sender: &'static str,
    /// The router had the worker's core to itself (else it shared the sender's).
    own_core: bool,
    sent: u64,
    forwarded: u64,
    elapsed: Duration,
}

impl KernelRun {
    fn sent_mpps(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    fn mpps(&self) -> f64 {
        self.forwarded as f64 / self.elapsed.as_secs_f64() / 1e6
    }
}

/// How each kernel baseline is measured: the sender, and whether the router has the
/// worker's core to itself (RPS steers its receive there; the sender's core only
/// delivers to it, as it delivers to the device's port) or runs on the sender's core
/// (a veth receives on the core that sent). Each baseline counts at its best of these:
/// a router flooded across cores forwards less than one offered about its limit
/// (measured: conntrack forwarded 0.26 Mpps of the XDP sender's 1.1 on its own core,
/// all of the AF_PACKET sender's 0.4-0.5), and on the sender's core the kernel paces
/// the XDP sender by itself.
const KERNEL_SETUPS: [(&str, bool); 3] = [("xdp", true), ("af_packet", true), ("xdp", false)];

/// Sends `to_router` for `secs` in each of `KERNEL_SETUPS`; what the router forwarded
/// (its `r1` transmit) while each sent.
fn router_runs(
    test: &'static str,
    n: &Router,
    to_router: &Arc<Vec<Vec<u8>>>,
    secs: u64,
) -> Result<Vec<KernelRun>, String> {
    let fwd = || link_counts(Some(&n.rtr), &n.r1).map(|c| c.tx);
    let mut runs = Vec::new();
    for (sender, own_core) in KERNEL_SETUPS {
        steer_receive(Some(&n.rtr), &n.r0, own_core.then(|| worker_core(0)))?;
        let before = fwd()?;
        let (sent, elapsed) = send_for(sender, &n.send_from(), to_router.clone(), secs)?;
        let forwarded = fwd()? - before;
        settle(fwd)?;
        runs.push(KernelRun {
            test,
            sender,
            own_core,
            sent,
            forwarded,
            elapsed,
        });
    }
    Ok(runs)
}

/// What the conntrack baseline measured.
struct Conntrack {
    runs: Vec<KernelRun>,
    /// Connections conntrack held after the warm-up.
    tracked: u64,
    /// Frames the established-only rules dropped (must be 0).
    not_established: u64,
}

/// (c) The router forwarding only what its conntrack knows as established: every
/// session made established first (its frame out, then a reply), then `to_router`
/// (the sessions' frames addressed to the router) sent for `secs` by each sender.
fn conntrack_forwarding(
    n: &Router,
    specs: &[SessionSpec],
    to_router: &Arc<Vec<Vec<u8>>>,
    secs: u64,
) -> Result<Conntrack, String> {
    let replies: Vec<Vec<u8>> = specs
        .iter()
        .map(|s| {
            let mut buf = [0u8; 128];
            let len = frame(s, true, &mut buf);
            buf[..6].copy_from_slice(&[2, 0xbf, 0, 0, 0, 3]); // to the router's r1
            buf[..len].to_vec()
        })
        .collect();
    let _max = ConntrackMax::at_least(2 * specs.len() as u64)?;
    nft(&n.rtr, CONNTRACK_WARM_UP)?;
    send_once(sender_socket(Some(&n.src), &n.s0)?, to_router);
    let rtr = n.rtr.clone();
    let tracked = settle(move || conntrack_count(&rtr))?;
    send_once(sender_socket(Some(&n.dst), &n.d0)?, &replies);
    let (rtr, r1) = (n.rtr.clone(), n.r1.clone());
    settle(move || link_counts(Some(&rtr), &r1).map(|c| c.rx))?;
    nft(&n.rtr, CONNTRACK_ESTABLISHED)?;
    Ok(Conntrack {
        runs: router_runs("conntrack", n, to_router, secs)?,
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

/// Interface counters of one link (`ip -s -j link`).
#[derive(Clone, Copy, Default)]
struct LinkCounts {
    rx: u64,
    tx: u64,
    rx_dropped: u64,
}

fn link_counts(ns: Option<&str>, dev: &str) -> Result<LinkCounts, String> {
    let s = link_stats(ns, dev)?;
    let get = |d: &str, f: &str| s[d][f].as_u64().ok_or(format!("no {d} {f} for {dev}"));
    Ok(LinkCounts {
        rx: get("rx", "packets")?,
        tx: get("tx", "packets")?,
        rx_dropped: get("rx", "dropped")?,
    })
}

/// Steers the receive of `dev` (in `ns`) to `cpu` (RPS): its kernel work then runs
/// there, not on the core that sent the frames over the veth (None: RPS off).
fn steer_receive(ns: Option<&str>, dev: &str, cpu: Option<usize>) -> Result<(), String> {
    let path = format!("/sys/class/net/{dev}/queues/rx-0/rps_cpus");
    let mask = format!("{:x}", cpu.map_or(0, |c| 1u64 << c));
    match ns {
        // sysfs shows a namespace's links only when mounted inside it: `ip netns exec`.
        Some(ns) => ip(&[
            "netns",
            "exec",
            ns,
            "sh",
            "-c",
            &format!("echo {mask} > {path}"),
        ]),
        None => std::fs::write(&path, &mask).map_err(|e| format!("{path}: {e}")),
    }
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
            let o = AfPacketPort::new("outside", outside, [2, 0xbe, 0, 0, 0, 2], opts.clone())
                .map_err(|e| e.to_string())?;
            let i = AfPacketPort::new("inside", inside, [2, 0xbe, 0, 0, 0, 3], opts)
                .map_err(|e| e.to_string())?;
            Ok([Box::new(o), Box::new(i)])
        }
    }
}

/// The core of worker `w`: the last cores, so that the sender has core 0.
fn worker_core(w: usize) -> usize {
    let ncores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (ncores - 1 - w % ncores) % ncores
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

/// The kernel baselines' links and namespaces (the router forwards, static
/// neighbours, so no ARP is in the measurement).
fn build_router(v: &mut Veths, tag: &str) -> Result<Router, String> {
    let n = Router {
        src: format!("dpsrc{tag}"),
        rtr: format!("dprtr{tag}"),
        dst: format!("dpdst{tag}"),
        s0: format!("s0{tag}"),
        r0: format!("r0{tag}"),
        r1: format!("r1{tag}"),
        d0: format!("d0{tag}"),
    };
    for ns in [&n.src, &n.rtr, &n.dst] {
        v.namespace(ns)?;
    }
    let (src, rtr, dst) = (
        Some(n.src.as_str()),
        Some(n.rtr.as_str()),
        Some(n.dst.as_str()),
    );
    v.pair(&n.s0, [2, 0xbf, 0, 0, 0, 1], src, &n.r0, ROUTER_MAC, rtr)?;
    v.pair(&n.r1, [2, 0xbf, 0, 0, 0, 3], rtr, &n.d0, DST_MAC, dst)?;
    ip(&["-n", &n.rtr, "addr", "add", "10.0.0.254/8", "dev", &n.r0])?;
    ip(&[
        "-n",
        &n.rtr,
        "addr",
        "add",
        "192.168.255.254/16",
        "dev",
        &n.r1,
    ])?;
    ip(&[
        "-n",
        &n.dst,
        "addr",
        "add",
        "192.168.255.1/16",
        "dev",
        &n.d0,
    ])?;
    for z in 0..=255u32 {
        // The sessions' destinations 192.168.0.z sit behind dst, at a MAC that is not
        // d0's: d0 drops the frames on arrival as not its own, as the device's far end
        // does. (Addressed to d0, each frame would go up its IP stack, find no route,
        // and cost an ICMP rate-limit lookup per source: measured, the kernel baseline
        // then runs at half its rate.)
        let addr = format!("192.168.0.{z}");
        let mac = mac_str(NEXT_HOP_MAC);
        ip(&[
            "-n",
            &n.rtr,
            "neigh",
            "replace",
            &addr,
            "lladdr",
            &mac,
            "dev",
            &n.r1,
            "nud",
            "permanent",
        ])?;
    }
    in_netns(rtr, || std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))?
        .map_err(|e| format!("ip_forward in the router namespace: {e}"))?;
    Ok(n)
}

/// The router's `r0` and the far end's `d0`.
const ROUTER_MAC: [u8; 6] = [2, 0xbf, 0, 0, 0, 2];
const DST_MAC: [u8; 6] = [2, 0xbf, 0, 0, 0, 4];
/// The router's next hop for the sessions' destinations, behind `d0`.
const NEXT_HOP_MAC: [u8; 6] = [2, 0xbf, 0, 0, 0, 5];

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

/// The device's two veth pairs: `dpa0`-`dpa1` (the sender's end and the device's
/// outside port) and `dpb0`-`dpb1` (the device's inside port and the far end), each
/// name suffixed with `tag`.
fn device_veths(v: &mut Veths, tag: &str) -> Result<[String; 4], String> {
    let links = ["dpa0", "dpa1", "dpb0", "dpb1"].map(|l| format!("{l}{tag}"));
    let [dpa0, dpa1, dpb0, dpb1] = &links;
    v.pair(
        dpa0,
        [2, 0xbe, 0, 0, 0, 1],
        None,
        dpa1,
        [2, 0xbe, 0, 0, 0, 2],
        None,
    )?;
    v.pair(
        dpb0,
        [2, 0xbe, 0, 0, 0, 3],
        None,
        dpb1,
        [2, 0xbe, 0, 0, 0, 4],
        None,
    )?;
    Ok(links)
}

/// The kernel baselines' results: every run, and conntrack's view of the sessions.
struct KernelBaselines {
    runs: Vec<KernelRun>,
    tracked: u64,
    not_established: u64,
}

/// (b) and (c): a router namespace forwarding the sessions' frames (addressed to it)
/// plainly, then only as conntrack's established connections; each run logged.
fn measure_kernel(
    v: &mut Veths,
    tag: &str,
    specs: &[SessionSpec],
    frames: &[Vec<u8>],
    seconds: u64,
    log: &impl Fn(String),
) -> Result<KernelBaselines, String> {
    let router = build_router(v, tag)?;
    let routed: Arc<Vec<Vec<u8>>> = Arc::new(
        frames
            .iter()
            .map(|f| {
                let mut f = f.clone();
                f[..6].copy_from_slice(&ROUTER_MAC);
                f
            })
            .collect(),
    );
    let mut runs = router_runs("routing", &router, &routed, seconds)?;
    let ct = conntrack_forwarding(&router, specs, &routed, seconds)?;
    runs.extend(ct.runs);
    for k in &runs {
        log(format!(
            "kernel {}, {} sender, router on {} core: sender {} frames ({:.2} Mpps); \
             router forwarded {}: {:.2} Mpps",
            k.test,
            k.sender,
            if k.own_core {
                "its own"
            } else {
                "the sender's"
            },
            k.sent,
            k.sent_mpps(),
            k.forwarded,
            k.mpps()
        ));
    }
    log(format!(
        "kernel conntrack: {} connections tracked, dropped as not established: {}",
        ct.tracked, ct.not_established
    ));
    Ok(KernelBaselines {
        runs,
        tracked: ct.tracked,
        not_established: ct.not_established,
    })
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
