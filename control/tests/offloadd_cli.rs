//! The offloadd binary: bad flags and configs are one-line errors with exit code 2;
//! a good config serves until SIGTERM and then stops cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs offloadd with `args` and returns its exit code and stderr; a run that is
/// still going after 20 s (it accepted what it should have refused) is killed and
/// reported as exit code -1.
fn offloadd(args: &[&str]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_offloadd"))
        .args(args)
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
    for (args, key) in cases {
        let (code, err) = offloadd(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.contains("INFO")).collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line: {err}");
        assert!(lines[0].contains(key), "{args:?}: names {key}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn serves_then_stops_cleanly_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_offloadd"))
        .args(["--listen", "127.0.0.1:0", "--plaintext", "--simulate"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .env("RUST_LOG", "info")
        .spawn()
        .expect("start offloadd");
    // Its log, line by line, from a thread: the test waits for "serving" (generous
    // deadline) rather than for a fixed time.
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
    let mut log = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log.contains("serving") {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => log += &(line + "\n"),
            Err(e) => panic!("no \"serving\" in the log ({e}): {log}"),
        }
    }
    assert!(child.try_wait().unwrap().is_none(), "still serving");
    unsafe {
        libc_kill(child.id() as i32, 15);
    }
    let status = child.wait().unwrap();
    reader.join().unwrap();
    log.extend(lines.try_iter().map(|l| l + "\n"));
    assert!(status.success(), "{log}");
    assert!(
        log.contains("closed sessions not delivered to any client: 0"),
        "{log}"
    );
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
