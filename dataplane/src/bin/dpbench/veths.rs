//! The real-port benchmark's links: veth pairs and namespaces it makes (and removes
//! when dropped), `ip` and `ethtool` runs, interface counters, where a link's receive
//! runs (RPS), and waiting for counters to settle.

use std::time::Duration;

/// Runs `cmd args`; the error names the command and carries its stderr.
pub fn command(cmd: &str, args: &[&str]) -> Result<(), String> {
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

pub fn ip(args: &[&str]) -> Result<(), String> {
    command("ip", args)
}

/// Turns on the veth's NAPI receive path (GRO), without which it refuses the XDP
/// sender's frames.
pub fn enable_napi(ns: Option<&str>, dev: &str) -> Result<(), String> {
    let gro_on = ["-K", dev, "gro", "on"];
    match ns {
        Some(ns) => ip(&[&["netns", "exec", ns, "ethtool"], &gro_on[..]].concat()),
        None => command("ethtool", &gro_on),
    }
}

/// Links and namespaces the bench made; removed on drop (also on error or panic).
#[derive(Default)]
pub struct Veths {
    /// (namespace, link): deleting one end of a pair deletes both.
    pub links: Vec<(Option<String>, String)>,
    pub namespaces: Vec<String>,
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

pub fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Veths {
    /// A veth pair `a` (in `ns_a`, or ours) <-> `b` (in `ns_b`, or ours), both up, with
    /// the given MACs and IPv6 off on our ends.
    pub fn pair(
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

    pub fn namespace(&mut self, name: &str) -> Result<(), String> {
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"])
    }
}

/// Runs `f` on a thread inside namespace `ns` (None: here).
pub fn in_netns<T: Send + 'static>(
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
pub fn link_stats(ns: Option<&str>, dev: &str) -> Result<serde_json::Value, String> {
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

/// Waits until `read` stops moving (frames still in rings and backlogs); its last value.
pub fn settle(read: impl Fn() -> Result<u64, String>) -> Result<u64, String> {
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

/// Interface counters of one link (`ip -s -j link`).
#[derive(Clone, Copy, Default)]
pub struct LinkCounts {
    pub rx: u64,
    pub tx: u64,
    pub rx_dropped: u64,
}

pub fn link_counts(ns: Option<&str>, dev: &str) -> Result<LinkCounts, String> {
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
pub fn steer_receive(ns: Option<&str>, dev: &str, cpu: Option<usize>) -> Result<(), String> {
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
