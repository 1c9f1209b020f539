//! The offloadd binary: bad flags and configs are one-line errors with exit code 2;
//! a good config serves until SIGTERM and then stops cleanly, naming the sessions
//! the stop drops.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use control::client::{ClientOptions, SessionClient};

fn offloadd(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_offloadd"))
        .args(args)
        .output()
        .expect("run offloadd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    ];
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_offloadd"))
            .args(args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .env("RUST_LOG", "info")
            .spawn()
            .expect("start offloadd");
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
        unsafe {
            libc_kill(self.child.id() as i32, 15);
        }
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

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
