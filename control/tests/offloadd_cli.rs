//! The offloadd binary: bad flags and configs are one-line errors with exit code 2;
//! a good config serves until SIGTERM and then stops cleanly, naming the sessions
//! the stop drops.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use control::client::{ClientOptions, SessionClient};

/// Runs offloadd with `args` and returns its exit code and stderr; a run that is
/// still going after 20 s (it accepted what it should have refused) is killed and
/// reported as exit code -1.
fn offloadd(args: &[&str]) -> (i32, String) {
    offloadd_in(SOURCE_TREE, args)
}

/// The root of the source tree: `config/offloadd.toml` is found from there.
const SOURCE_TREE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// `offloadd`, run in `dir`.
fn offloadd_in(dir: &str, args: &[&str]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_offloadd"))
        .args(args)
        .args(["--metrics-listen", "127.0.0.1:0"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run offloadd");
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait for offloadd") {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
    (code, err)
}

#[test]
fn bad_flags_and_configs_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let workers0 = write("w.toml", "[dataplane]\nworkers = 0\n");
    let typo = write("t.toml", "[dataplane]\nmax_sesions = 5\n");
    let nocert = write("c.toml", "[tls]\ncert = \"missing.crt\"\n");
    let client_ca = write("ca.toml", "[tls]\nclient_ca = \"ca.crt\"\n");
    let plaintext_ca = write(
        "pca.toml",
        "[api]\nplaintext = true\n[tls]\nclient_ca = \"ca.crt\"\n",
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--bogus"], "--bogus"),
        (vec!["--workers", "two"], "two"),
        (
            vec!["--config", "/nonexistent/offloadd.toml"],
            "/nonexistent/offloadd.toml",
        ),
        (vec!["--config", &workers0], "dataplane.workers"),
        (vec!["--config", &typo], "max_sesions"),
        (
            vec!["--config", &nocert, "--listen", "127.0.0.1:0"],
            "tls.cert",
        ),
        (vec!["--listen", "nowhere"], "api.listen"),
        (vec!["--max-sessions", "0"], "dataplane.max_sessions"),
        (
            vec!["--config", &client_ca, "--plaintext"],
            "--plaintext with tls.client_ca",
        ),
        (
            vec!["--config", &plaintext_ca],
            "api.plaintext = true with tls.client_ca",
        ),
    ];
    // No --config, run where there is no config/offloadd.toml (and none installed).
    if !std::path::Path::new("/etc/offloadd/offloadd.toml").exists() {
        let (code, err) = offloadd_in(&dir.path().to_string_lossy(), &[]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("tried /etc/offloadd/offloadd.toml, config/offloadd.toml")
                && err.contains("--config"),
            "{err}"
        );
    }
    for (args, key) in cases {
        let (code, err) = offloadd(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.contains("INFO")).collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line: {err}");
        assert!(lines[0].contains(key), "{args:?}: names {key}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// A running offloadd and its log, read line by line from a thread so the test waits
/// for what it expects (generous deadline) rather than for a fixed time.
struct Offloadd {
    child: Child,
    lines: Receiver<String>,
    reader: std::thread::JoinHandle<()>,
    log: String,
}

impl Offloadd {
    fn start(args: &[&str]) -> Offloadd {
        Offloadd::spawn(Offloadd::command(args))
    }

    /// offloadd allowed to run on `cpu` only (its affinity, as `taskset -c` sets it).
    fn start_on_cpu(cpu: usize, args: &[&str]) -> Offloadd {
        use std::os::unix::process::CommandExt;
        let mut cmd = Offloadd::command(args);
        // SAFETY: between fork and exec only async-signal-safe calls (sched_setaffinity).
        unsafe {
            cmd.pre_exec(move || {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Offloadd::spawn(cmd)
    }

    fn command(args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_offloadd"));
        // Tests run side by side: a metrics endpoint on a port of its own.
        cmd.args(args)
            .args(["--metrics-listen", "127.0.0.1:0"])
            .current_dir(SOURCE_TREE)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .env("RUST_LOG", "info");
        cmd
    }

    fn spawn(mut cmd: Command) -> Offloadd {
        let mut child = cmd.spawn().expect("start offloadd");
        let stderr = child.stderr.take().unwrap();
        let (line_tx, lines) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        Offloadd {
            child,
            lines,
            reader,
            log: String::new(),
        }
    }

    /// Reads the log until a line contains `text`; that line.
    fn wait_for(&mut self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log += &(line.clone() + "\n");
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(e) => panic!("no {text:?} in the log ({e}): {}", self.log),
            }
        }
    }

    /// Sends SIGTERM; the exit status and the whole log.
    fn sigterm(mut self) -> (std::process::ExitStatus, String) {
        assert!(self.child.try_wait().unwrap().is_none(), "still serving");
        self.send_sigterm();
        self.exit()
    }

    fn send_sigterm(&self) {
        unsafe {
            libc_kill(self.child.id() as i32, 15);
        }
    }

    /// Waits for the exit; the exit status and the whole log.
    fn exit(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        self.reader.join().unwrap();
        self.log.extend(self.lines.try_iter().map(|l| l + "\n"));
        (status, self.log)
    }
}

/// The port in the "serving" line (`addrs=[127.0.0.1:PORT]`).
fn port_of(serving: &str) -> u16 {
    let at = serving.find("127.0.0.1:").expect("an address") + "127.0.0.1:".len();
    let digits: String = serving[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().expect("a port")
}

/// Workers beyond the CPUs offloadd may use, a core listed twice and a core outside
/// its affinity are each a warning; the device serves anyway. offloadd runs on one
/// CPU of this process's; the core outside is another of them (on a machine with a
/// single CPU that case is left out).
#[test]
fn workers_and_cores_beyond_the_allowed_cpus_are_warnings() {
    let ours = control::cpus::allowed();
    let (first, other) = (ours[0], ours.get(1).copied().unwrap_or(ours[0]));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cores.toml");
    std::fs::write(
        &config,
        format!(
            "[api]\nlisten = \"127.0.0.1:0\"\nplaintext = true\n\
             [dataplane]\nworkers = 3\ncores = [{first}, {first}, {other}]\n"
        ),
    )
    .unwrap();
    let mut d = Offloadd::start_on_cpu(first, &["--config", config.to_str().unwrap()]);
    d.wait_for("serving");
    let (status, log) = d.sigterm();
    assert!(status.success(), "{log}");
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    let mut wanted = vec![
        format!("dataplane.workers = 3 but offloadd may use 1 CPU(s) ({first})"),
        format!("dataplane.cores lists core {first} more than once"),
    ];
    if other != first {
        wanted.push(format!(
            "dataplane.cores: core {other} is not among the CPUs offloadd may use ({first})"
        ));
    }
    for want in &wanted {
        assert!(
            warnings.iter().any(|l| l.contains(want.as_str())),
            "no {want:?} in {log}"
        );
    }
    assert_eq!(warnings.len(), wanted.len(), "{log}");
}

#[test]
fn serves_then_stops_cleanly_on_sigterm() {
    let mut d = Offloadd::start(&["--listen", "127.0.0.1:0", "--plaintext", "--simulate"]);
    d.wait_for("serving");
    let (status, log) = d.sigterm();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("closed sessions not delivered to any client: 0"),
        "{log}"
    );
}

#[test]
fn sigterm_names_the_sessions_it_drops() {
    let mut d = Offloadd::start(&["--listen", "127.0.0.1:0", "--plaintext"]);
    let port = port_of(&d.wait_for("serving"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let o = ClientOptions::new(format!("http://127.0.0.1:{port}"));
        let mut c = SessionClient::connect(&o).await.expect("connect");
        let sessions: Vec<_> = (1..=105).map(common::v4).collect();
        assert_eq!(c.add(sessions).await.unwrap().request_status, 0);
    });
    let (status, log) = d.sigterm();
    assert!(status.success(), "{log}");
    let first_100: Vec<String> = (1..=100).map(|id| id.to_string()).collect();
    let expected = format!(
        "stopping drops 105 sessions: ids {} and 5 more",
        first_100.join(" ")
    );
    assert!(log.contains(&expected), "{log}");
}

/// A config with a drain of `drain_ms` and a 20 ms timer tick, written into `dir`.
fn drain_config(dir: &std::path::Path, drain_ms: u64) -> String {
    let path = dir.join("drain.toml");
    let text =
        format!("[api]\nplaintext = true\ndrain_ms = {drain_ms}\n[dataplane]\ntick_ms = 20\n");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Adds session 1 with a 1 s idle timeout and waits until it has closed and its
/// record waits for GetClosedSessions.
async fn one_closed_session(port: u16) -> SessionClient {
    let o = ClientOptions::new(format!("http://127.0.0.1:{port}"));
    let mut c = SessionClient::connect(&o).await.expect("connect");
    let mut s = common::v4(1);
    s.cache_timeout = 1;
    assert_eq!(c.add(vec![s]).await.unwrap().request_status, 0);
    let mut admin = control::client::admin(control::client::connect_channel(&o).await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = admin
            .get_stats(proto::admin::StatsRequest {})
            .await
            .unwrap()
            .into_inner();
        if stats.closed_pending == 1 {
            return c;
        }
        assert!(Instant::now() < deadline, "session 1 never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn the_drain_refuses_adds_and_stops_once_the_closed_records_are_collected() {
    let dir = tempfile::tempdir().unwrap();
    let config = drain_config(dir.path(), 60_000);
    let mut d = Offloadd::start(&["--config", &config, "--listen", "127.0.0.1:0"]);
    let port = port_of(&d.wait_for("serving"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut c = runtime.block_on(one_closed_session(port));
    let asked = Instant::now();
    d.send_sigterm();
    d.wait_for("draining");
    runtime.block_on(async {
        let refused = c
            .add(vec![common::v4(2)])
            .await
            .expect_err("an add while draining");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        // A collector reads to the stream's end: a record counts as collected once
        // the client proved it has it (docs/behaviour.md, Delivery).
        let closed = c
            .closed(proto::v2::SessionRequestArgs::default(), false)
            .await
            .expect("GetClosedSessions while draining");
        let ids: Vec<u64> = futures::StreamExt::collect::<Vec<_>>(closed)
            .await
            .into_iter()
            .map(|r| r.expect("ok").session_id)
            .collect();
        assert_eq!(ids, [1]);
    });
    let (status, log) = d.exit();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("drained: every closed record collected"),
        "{log}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(50),
        "waited for the drain time, not for the collection: {log}"
    );
}

#[test]
fn the_drain_ends_at_its_time_limit_when_nobody_collects() {
    let dir = tempfile::tempdir().unwrap();
    let config = drain_config(dir.path(), 1000);
    let mut d = Offloadd::start(&["--config", &config, "--listen", "127.0.0.1:0"]);
    let port = port_of(&d.wait_for("serving"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(one_closed_session(port));
    let (status, log) = d.sigterm();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("drain time up: 1 closed records not collected"),
        "{log}"
    );
    assert!(
        log.contains("closed sessions not delivered to any client: 1"),
        "{log}"
    );
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
