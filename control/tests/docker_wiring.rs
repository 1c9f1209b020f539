//! The docker demo's wiring without docker: `docker/device.sh`, both roles of
//! `docker/host.sh` and the firewall's `offloadctl add` of `docker/compose.yaml` run
//! as they are, in network namespaces standing in for the containers (the services
//! share the device's namespace, as `network_mode: service:device` makes them). The
//! hosts' UDP datagrams and their echoes must cross the device and show in the
//! session's counters in both directions.
//!
//! Needs root, `ip`, `socat` and `ethtool` (`.ci/run` installs them); skipped with the
//! reason printed otherwise, and failing under `CI=true`. Everything it starts is killed and every namespace it
//! made is removed, also when it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use control::testing::{missing_tool, not_root, skip_or_fail};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn unavailable() -> Option<String> {
    not_root()
        .or_else(|| missing_tool("ip"))
        .or_else(|| missing_tool("socat"))
        .or_else(|| missing_tool("ethtool"))
}

/// The stand-in containers: processes (each in its own process group) and
/// namespaces, all removed on drop.
struct Compose {
    device_ns: String,
    host_ns: Vec<String>,
    children: Vec<Child>,
    path: String,
}

impl Compose {
    fn new(tag: &str) -> Compose {
        let bin = Path::new(env!("CARGO_BIN_EXE_offloadd"))
            .parent()
            .expect("the binaries' folder")
            .to_path_buf();
        Compose {
            device_ns: format!("dkdev-{tag}"),
            host_ns: vec![format!("dkout-{tag}"), format!("dkin-{tag}")],
            children: Vec::new(),
            // offloadd and offloadctl first, as in the image (/usr/local/bin).
            path: format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        }
    }

    /// A command run inside the device's namespace, as a service of compose.yaml.
    fn service(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.device_ns, program])
            .current_dir(repo())
            .env("PATH", &self.path);
        c
    }

    fn start(&mut self, mut c: Command, log: &Path) {
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = c
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn");
        self.children.push(child);
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        for c in &mut self.children {
            // SAFETY: signals the process group the child leads (made by process_group(0)).
            unsafe { libc::kill(-(c.id() as i32), libc::SIGTERM) };
        }
        for c in &mut self.children {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: as above; the group may already be gone.
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
            let _ = c.wait();
        }
        // The device's namespace holds the veth pairs; deleting it removes them. The
        // hosts' namespaces were made inside `ip netns exec` (a mount namespace of its
        // own): only their files are left here.
        for ns in self.host_ns.iter().chain([&self.device_ns]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            let _ = std::fs::remove_file(format!("/run/netns/{ns}"));
        }
    }
}

/// Both directions' packet counters of session 1, read with offloadctl.
fn counters(compose: &Compose) -> Option<(u64, u64, String)> {
    let out = compose
        .service("offloadctl")
        .args(["--ca", "certs/ca.crt", "--json", "get", "1"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let j: serde_json::Value = serde_json::from_str(text.lines().next()?).ok()?;
    Some((j["in_packets"].as_u64()?, j["out_packets"].as_u64()?, text))
}

#[test]
fn compose_services_carry_the_udp_session_through_the_device() {
    if let Some(why) = unavailable() {
        skip_or_fail(&format!("{why} (needs root, ip, socat and ethtool)"));
        return;
    }
    let tag = format!("{:x}", std::process::id());
    let mut compose = Compose::new(&tag);
    let logs = std::env::temp_dir().join(format!("offloadd-docker-wiring-{tag}"));
    std::fs::create_dir_all(&logs).expect("log folder");
    let out = Command::new("ip")
        .args(["netns", "add", &compose.device_ns])
        .output()
        .expect("ip");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // device: the wiring, then offloadd on docker/offloadd.toml (from the checkout).
    let mut device = compose.service("sh");
    device
        .arg("docker/device.sh")
        .env("OFFLOADD_CONFIG", repo().join("docker/offloadd.toml"));
    compose.start(device, &logs.join("device.log"));

    // The healthcheck: `offloadctl stats` answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = compose
            .service("offloadctl")
            .args(["--ca", "certs/ca.crt", "stats"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the device never became healthy: {}",
            std::fs::read_to_string(logs.join("device.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // firewall: offloads the session before the hosts talk.
    let add = compose
        .service("offloadctl")
        .args([
            "--ca",
            "certs/ca.crt",
            "add",
            "--id",
            "1",
            "--src",
            "10.0.0.1",
            "--sport",
            "5000",
            "--dst",
            "10.0.0.2",
            "--dport",
            "5001",
            "--proto",
            "udp",
            "--action",
            "forward",
            "--timeout",
            "60",
        ])
        .output()
        .expect("offloadctl add");
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );

    // outside-host (the server) and inside-host (the client), with compose.yaml's
    // environment.
    let hosts = [
        (
            "outside",
            "10.0.0.1/24",
            "10.0.0.2",
            "02:00:00:00:0a:02",
            "server",
            "5000",
            "",
        ),
        (
            "inside",
            "10.0.0.2/24",
            "10.0.0.1",
            "02:00:00:00:0a:01",
            "client",
            "5001",
            "5000",
        ),
    ];
    for (i, (side, addr, peer, peer_mac, role, port, peer_port)) in hosts.into_iter().enumerate() {
        let mut host = compose.service("sh");
        host.arg("docker/host.sh")
            .env("SIDE", side)
            .env("ADDR", addr)
            .env("PEER", peer)
            .env("PEER_MAC", peer_mac)
            .env("ROLE", role)
            .env("PORT", port)
            .env("NETNS", &compose.host_ns[i]);
        if !peer_port.is_empty() {
            host.env("PEER_PORT", peer_port);
        }
        compose.start(host, &logs.join(format!("{side}.log")));
    }

    // A datagram a second each way: three of each cross the device.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    loop {
        if let Some((inp, outp, text)) = counters(&compose) {
            if inp >= 3 && outp >= 3 {
                break;
            }
            last = text;
        }
        if Instant::now() >= deadline {
            let log = |f: &str| std::fs::read_to_string(logs.join(f)).unwrap_or_default();
            panic!(
                "the session did not carry traffic both ways: {last}\ndevice: {}\n\
                 outside: {}\ninside: {}",
                log("device.log"),
                log("outside.log"),
                log("inside.log")
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // The server's socat -v log shows the datagrams it echoed (not necessarily the
    // first: the client may send before the server listens).
    let outside = std::fs::read_to_string(logs.join("outside.log")).unwrap_or_default();
    let echoed = outside
        .lines()
        .filter(|l| l.starts_with("hello ") && l.ends_with(" from 10.0.0.2/24"))
        .count();
    assert!(echoed >= 2, "{outside}");
    drop(compose);
    let _ = std::fs::remove_dir_all(&logs);
}
