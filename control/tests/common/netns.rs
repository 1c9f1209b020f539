//! A lab of network namespaces for tests of the af_packet device: each host is a
//! namespace with one veth (`eth0`) whose peer stays in the test's namespace, where
//! the device's af_packet ports attach. Built with `ip` from iproute2; everything the
//! lab made is removed when it is dropped, also when the test panics.
//!
//! Hosts send and receive frames through an af_packet queue opened inside their
//! namespace (a dedicated thread enters it with `setns`; the socket stays in that
//! namespace after the thread ends), so tests use the same code on both sides of the
//! wire and see every frame, VLAN tags included.

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use control::testing::{missing_tool, not_root, skip_or_fail};
use dataplane::packet::{Burst, PacketPool};
use dataplane::port::af_packet::{AfPacketOptions, AfPacketPort};
use dataplane::port::{Port, PortQueue};
use dataplane::wire::frame::{self, FrameInfo, FrameSpec};

/// Why the lab cannot run here (not root, no `ip`, no namespaces), after applying the
/// suite's skip policy (`testing::skip_or_fail`: a failure under `CI=true`); the test
/// then returns.
pub fn unavailable() -> Option<String> {
    let why = lab_unavailable()?;
    skip_or_fail(&why);
    Some(why)
}

fn lab_unavailable() -> Option<String> {
    if let Some(why) = not_root().or_else(|| missing_tool("ip")) {
        return Some(format!(
            "{why}: network namespaces and AF_PACKET need root and iproute2"
        ));
    }
    // Root in a container may still be refused namespaces: that is a missing
    // privilege, not a broken setup. Any other failure here is the test's to report.
    // Tests of one binary run at once: each probe has a name of its own.
    static PROBES: AtomicU32 = AtomicU32::new(0);
    let n = PROBES.fetch_add(1, Ordering::Relaxed);
    let probe = format!("offloadd-probe-{}-{n}", std::process::id());
    match ip(&["netns", "add", &probe]) {
        Ok(()) => {
            ip(&["netns", "del", &probe]).expect("remove the probe namespace");
            None
        }
        Err(e) if e.contains("Operation not permitted") => {
            Some(format!("cannot make namespaces here: {e}"))
        }
        Err(e) => panic!("lab setup: {e}"),
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Runs `f` on a thread inside namespace `ns`.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter_netns(&ns)?;
        Ok(f())
    })
    .join()
    .map_err(|_| "netns thread panicked".to_string())?
}

/// Runs `f` on a new thread inside namespace `ns`, without waiting for it; the
/// thread panics if it cannot enter the namespace.
pub fn spawn_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter_netns(&ns).unwrap_or_else(|e| panic!("{e}"));
        f()
    })
}

/// Moves the calling thread (a dedicated one) into namespace `ns`.
fn enter_netns(ns: &str) -> Result<(), String> {
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: setns on a namespace file we hold open; it changes this thread only.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Namespaces and links of one test run; removed on drop.
pub struct Lab {
    tag: String,
    /// Rx and tx queues of each veth end (1 unless set).
    queues: usize,
    namespaces: Vec<String>,
    links: Vec<String>,
}

static LABS: AtomicU32 = AtomicU32::new(0);

impl Lab {
    pub fn new() -> Lab {
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        Lab {
            tag: format!("{:x}{n}", std::process::id()),
            queues: 1,
            namespaces: Vec::new(),
            links: Vec::new(),
        }
    }

    /// Rx and tx queues of both ends of the veths made from now on.
    pub fn set_queues(&mut self, queues: usize) {
        self.queues = queues.max(1);
    }

    /// A host: namespace `<role>-<tag>` with `eth0` (MAC `host_mac`, the addresses
    /// given), whose peer `<prefix><tag>` (MAC `dev_mac`) is up in the test's
    /// namespace with IPv6 off (no router solicitations or MLD from our side).
    /// Returns the namespace and the peer's name.
    pub fn host(
        &mut self,
        role: &str,
        prefix: &str,
        host_mac: [u8; 6],
        dev_mac: [u8; 6],
        addrs: &[&str],
    ) -> Result<(String, String), String> {
        let ns = format!("{role}-{}", self.tag);
        let dev = format!("{prefix}{}", self.tag);
        assert!(dev.len() <= 15, "interface name {dev} too long");
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        let q = self.queues.to_string();
        let mut args = vec!["link", "add", &dev, "address"];
        let (dm, hm) = (mac(dev_mac), mac(host_mac));
        args.push(&dm);
        if self.queues > 1 {
            args.extend(["numtxqueues", &q, "numrxqueues", &q]);
        }
        args.extend([
            "type", "veth", "peer", "name", "eth0", "address", &hm, "netns", &ns,
        ]);
        if self.queues > 1 {
            args.extend(["numtxqueues", &q, "numrxqueues", &q]);
        }
        ip(&args)?;
        self.links.push(dev.clone());
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6"), "1");
        ip(&["link", "set", &dev, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        for a in addrs {
            let mut args = vec!["-n", &ns, "addr", "add", a, "dev", "eth0"];
            if a.contains(':') {
                args.push("nodad");
            }
            ip(&args)?;
        }
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        Ok((ns, dev))
    }

    /// A static neighbour in namespace `ns`.
    pub fn neighbour(&self, ns: &str, addr: &str, lladdr: [u8; 6]) -> Result<(), String> {
        ip(&[
            "-n",
            ns,
            "neigh",
            "replace",
            addr,
            "lladdr",
            &mac(lladdr),
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])
    }
}

impl Lab {
    /// `ip -s link` of every link the lab made, both ends: for failure reports.
    pub fn link_stats(&self) -> String {
        let mut out = String::new();
        let show = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        for l in &self.links {
            out += &show(&["-s", "link", "show", l]);
        }
        for ns in &self.namespaces {
            out += &format!("[{ns}]\n");
            out += &show(&["-n", ns, "-s", "link", "show", "eth0"]);
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a link takes its peer with it at once; namespace deletion alone is
        // asynchronous and would leave the peer in our namespace for a while.
        for l in self.links.drain(..) {
            let _ = ip(&["link", "del", &l]);
        }
        for ns in self.namespaces.drain(..) {
            let _ = ip(&["netns", "del", &ns]);
        }
    }
}

pub fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A host's socket. The test reads it only while it waits on that host, and the
/// kernel retires an rx block 1 ms after its first frame: frames trickling in (the
/// hosts' own IPv6 chatter reaches the firewall port too) each take a block. Many
/// small blocks keep hundreds of such frames, so none is dropped unread.
pub fn host_options() -> AfPacketOptions {
    AfPacketOptions {
        block_size: 1 << 14,
        block_count: 256,
        tx_frames: 128,
        pool_buffers: 512,
        ..AfPacketOptions::default()
    }
}

/// One end of the wire inside a host namespace: sends frames, keeps what it received.
pub struct Wire {
    pub name: String,
    queue: Box<dyn PortQueue>,
    pool: PacketPool,
    _port: AfPacketPort,
    /// Every frame received so far that parses as a TCP/UDP flow, oldest first.
    pub seen: VecDeque<(FrameInfo, Vec<u8>)>,
}

impl Wire {
    /// Opens `eth0` of namespace `ns` with one queue.
    pub fn open(ns: &str) -> Result<Wire, String> {
        let name = ns.to_string();
        in_netns(ns, move || {
            let mut port = AfPacketPort::new(&name, "eth0", [0; 6], host_options())
                .map_err(|e| e.to_string())?;
            let mut queues = port.open(1).map_err(|e| e.to_string())?;
            Ok(Wire {
                name,
                queue: queues.pop().expect("one queue"),
                pool: port.pool().clone(),
                _port: port,
                seen: VecDeque::new(),
            })
        })?
    }

    /// Builds and sends one frame; returns its length.
    pub fn send(&mut self, spec: &FrameSpec) -> usize {
        let mut buf = [0u8; 2048];
        let len = frame::build(spec, &mut buf).expect("frame builds");
        self.send_frame(&buf[..len])
    }

    /// Sends one frame as it is; returns its length.
    pub fn send_frame(&mut self, data: &[u8]) -> usize {
        let len = data.len();
        let mut burst = Burst::new();
        burst.push(self.pool.alloc_from(data).expect("pool has buffers"));
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.queue.tx_burst(&mut burst) == 0 {
            assert!(
                Instant::now() < deadline,
                "{}: tx ring stays full",
                self.name
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        len
    }

    /// Moves what arrived into `seen` (frames that are no flow are dropped).
    pub fn pump(&mut self) {
        loop {
            let mut burst = Burst::new();
            if self.queue.rx_burst(&mut burst) == 0 {
                return;
            }
            for p in burst {
                if let Ok(f) = frame::parse(p.data()) {
                    self.seen.push_back((f, p.data().to_vec()));
                }
            }
        }
    }

    /// Waits until `n` frames matching `pred` were seen (or `timeout`); returns how
    /// many match then.
    pub fn wait_for(
        &mut self,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&FrameInfo) -> bool,
    ) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            self.pump();
            let c = self.count(&pred);
            if c >= n || Instant::now() >= deadline {
                return c;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Forgets the frames seen so far (a long transfer would pile them up).
    pub fn forget(&mut self) {
        self.seen.clear();
    }

    /// The host socket's own counters (kernel drops among them).
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        self._port.counters()
    }

    pub fn count(&self, pred: impl Fn(&FrameInfo) -> bool) -> usize {
        self.seen.iter().filter(|(f, _)| pred(f)).count()
    }

    /// The frames seen that match.
    pub fn matching(&self, pred: impl Fn(&FrameInfo) -> bool) -> Vec<&[u8]> {
        self.seen
            .iter()
            .filter(|(f, _)| pred(f))
            .map(|(_, d)| d.as_slice())
            .collect()
    }
}
