//! The real-port benchmark's kernel baselines: a router namespace forwarding the
//! sessions' frames (b) plainly and (c) only as established connections of its
//! conntrack (nftables), each with the same senders as the device, at the best of
//! `KERNEL_SETUPS`.

use std::sync::Arc;
use std::time::Duration;

use dataplane::SessionSpec;

use super::sender::{send_for, send_once, sender_socket, SendFrom};
use super::veths::{in_netns, ip, link_counts, mac_str, settle, steer_receive, Veths};
use super::{frame, worker_core};

/// The kernel baselines' namespaces and links: `src` (`s0`) -> `rtr` (`r0`, `r1`) ->
/// `dst` (`d0`).
pub struct Router {
    pub src: String,
    pub rtr: String,
    pub dst: String,
    pub s0: String,
    pub r0: String,
    pub r1: String,
    pub d0: String,
}

impl Router {
    /// The sender's place for the baselines: `s0`, received by the router's `r0`.
    pub fn send_from(&self) -> SendFrom<'_> {
        SendFrom {
            ns: Some(&self.src),
            dev: &self.s0,
            peer_ns: Some(&self.rtr),
            peer: &self.r0,
        }
    }
}

/// One kernel baseline measurement.
pub struct KernelRun {
    /// `routing` or `conntrack`.
    pub test: &'static str,
    pub sender: &'static str,
    /// The router had the worker's core to itself (else it shared the sender's).
    pub own_core: bool,
    pub sent: u64,
    pub forwarded: u64,
    pub elapsed: Duration,
}

impl KernelRun {
    pub fn sent_mpps(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    pub fn mpps(&self) -> f64 {
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
pub const KERNEL_SETUPS: [(&str, bool); 3] = [("xdp", true), ("af_packet", true), ("xdp", false)];

/// Sends `to_router` for `secs` in each of `KERNEL_SETUPS`; what the router forwarded
/// (its `r1` transmit) while each sent.
pub fn router_runs(
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
pub struct Conntrack {
    pub runs: Vec<KernelRun>,
    /// Connections conntrack held after the warm-up.
    pub tracked: u64,
    /// Frames the established-only rules dropped (must be 0).
    pub not_established: u64,
}

/// (c) The router forwarding only what its conntrack knows as established: every
/// session made established first (its frame out, then a reply), then `to_router`
/// (the sessions' frames addressed to the router) sent for `secs` by each sender.
pub fn conntrack_forwarding(
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
pub const CONNTRACK_WARM_UP: &str = "\
table inet dpbench {
  chain forward {
    type filter hook forward priority filter; policy accept;
    ct state established,new accept
  }
}
";

/// Then only what conntrack knows as established passes; the rest is counted.
pub const CONNTRACK_ESTABLISHED: &str = "\
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
pub fn nft(ns: &str, rules: &str) -> Result<(), String> {
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
pub fn nft_drops(ns: &str) -> Result<u64, String> {
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
pub fn conntrack_count(ns: &str) -> Result<u64, String> {
    in_netns(Some(ns), || {
        std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
            .map_err(|e| format!("nf_conntrack_count: {e}"))
            .and_then(|s| s.trim().parse::<u64>().map_err(|e| e.to_string()))
    })?
}

/// Raises the host's `nf_conntrack_max` for the run (conntrack in every namespace
/// shares it) and puts the old value back when dropped.
pub struct ConntrackMax(Option<u64>);

pub const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

impl ConntrackMax {
    pub fn at_least(n: u64) -> Result<ConntrackMax, String> {
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

/// The kernel baselines' links and namespaces (the router forwards, static
/// neighbours, so no ARP is in the measurement).
pub fn build_router(v: &mut Veths, tag: &str) -> Result<Router, String> {
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
pub const ROUTER_MAC: [u8; 6] = [2, 0xbf, 0, 0, 0, 2];
pub const DST_MAC: [u8; 6] = [2, 0xbf, 0, 0, 0, 4];
/// The router's next hop for the sessions' destinations, behind `d0`.
pub const NEXT_HOP_MAC: [u8; 6] = [2, 0xbf, 0, 0, 0, 5];

/// The kernel baselines' results: every run, and conntrack's view of the sessions.
pub struct KernelBaselines {
    pub runs: Vec<KernelRun>,
    pub tracked: u64,
    pub not_established: u64,
}

/// (b) and (c): a router namespace forwarding the sessions' frames (addressed to it)
/// plainly, then only as conntrack's established connections; each run logged.
pub fn measure_kernel(
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
