//! Progress of `offloadctl bench` and `fw-sim`: drawn on a real terminal (tmux, every
//! byte written to it recorded with `pipe-pane`), and nowhere else: not with --json
//! on a terminal, not when stderr is a pipe.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::pane::{Pane, EVENT};
use control::testing::{missing_tool, skip_or_fail, TestDevice};
use serde_json::Value;

const PLAINTEXT: &str = "[api]\nplaintext = true\n[dataplane]\ntick_ms = 20\n";

/// A bench small enough for a busy box: 300 sessions in calls of 50.
const BENCH: &str = "bench add --sessions 300 --batch 50 --sample 50 --streams 2";

/// What the bars say (the lines bench prints say "bench add", "added", "deleted").
const BAR_TEXTS: [&str; 3] = [
    "adding 300 sessions",
    "checking 50 sessions are live",
    "removing 300 sessions",
];

const OFFLOADCTL: &str = env!("CARGO_BIN_EXE_offloadctl");

/// The offloadctl command line to reach `dev`.
fn offloadctl(dev: &TestDevice) -> String {
    format!("{OFFLOADCTL} --server http://{}", dev.running_addr())
}

/// What a command in a terminal left: its exit status, the screen at the end and
/// everything it wrote to the terminal.
struct Terminal {
    code: i32,
    screen: String,
    written: String,
}

/// Runs `command` in an 80x24 terminal until it ends and has written `last`.
async fn in_terminal(command: &str, last: &str) -> Terminal {
    let dir = tempfile::tempdir().unwrap();
    let pane = Pane::start_recorded(command, 80, 24, dir.path());
    let code = pane.wait_exit().await;
    // What tmux read from the terminal reaches the log through a pipe: wait for the
    // program's last line.
    let screen = pane.screen();
    let deadline = Instant::now() + EVENT;
    loop {
        let written = pane.written();
        if written.contains(last) {
            return Terminal {
                code,
                screen,
                written,
            };
        }
        assert!(
            Instant::now() < deadline,
            "the log never got the last line; screen:\n{screen}\nlog:\n{written:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_shows_progress_on_a_terminal_only() {
    if let Some(why) = missing_tool("tmux") {
        return skip_or_fail(&why);
    }
    let dev = TestDevice::start(PLAINTEXT).await;
    let dir = tempfile::tempdir().unwrap();
    let ctl = offloadctl(&dev);

    // Text on a terminal: every phase drew its bar, the clean-up said what it removes,
    // and the bars are gone from the screen at the end, the results stay.
    let t = in_terminal(&format!("{ctl} {BENCH}"), "errors: 0").await;
    assert_eq!(t.code, 0, "screen:\n{}", t.screen);
    for text in BAR_TEXTS {
        assert!(t.written.contains(text), "{text:?} drawn: {:?}", t.written);
    }
    assert!(t.screen.contains("deleted 300 sessions"), "{}", t.screen);
    assert!(t.screen.contains("errors: 0"), "{}", t.screen);
    for text in BAR_TEXTS {
        assert!(!t.screen.contains(text), "{text:?} cleared:\n{}", t.screen);
    }

    // --json on a terminal: the human lines on stderr, no bar; the JSON in the file.
    let json_file = dir.path().join("result.json");
    let command = format!("{ctl} --json {BENCH} > '{}'", json_file.display());
    let t = in_terminal(&command, "deleted 300 sessions").await;
    assert_eq!(t.code, 0, "screen:\n{}", t.screen);
    assert!(
        t.written.contains("bench add: 300 sessions"),
        "{:?}",
        t.written
    );
    assert_no_progress(&t.written);
    let result = std::fs::read_to_string(&json_file).unwrap();
    let j: Value = serde_json::from_str(result.trim_end()).expect(&result);
    assert_eq!(
        (j["ops"].as_u64(), j["errors"].as_u64()),
        (Some(300), Some(0))
    );
    dev.stop().await;
}

/// No bar, no spinner, no terminal control in what a command wrote.
fn assert_no_progress(written: &str) {
    for text in BAR_TEXTS {
        assert!(!written.contains(text), "{text:?} in {written:?}");
    }
    assert!(!written.contains('\x1b'), "escape sequences in {written:?}");
    assert!(!written.contains("/300 "), "a bar in {written:?}");
}

/// offloadctl against `dev` with stdout and stderr piped (off the runtime's threads).
async fn piped(dev: &TestDevice, args: &str) -> (i32, String, String) {
    let server = format!("http://{}", dev.running_addr());
    let args: Vec<String> = args.split(' ').map(String::from).collect();
    tokio::task::spawn_blocking(move || {
        let o = Command::new(OFFLOADCTL)
            .args(["--server", &server])
            .args(args)
            .output()
            .expect("offloadctl runs");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (
            o.status.code().unwrap_or(-1),
            text(&o.stdout),
            text(&o.stderr),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_and_fw_sim_piped_show_no_progress() {
    let dev = TestDevice::start(PLAINTEXT).await;

    let (code, out, err) = piped(&dev, BENCH).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(err, "", "nothing on stderr");
    assert!(out.starts_with("bench add: 300 sessions\n"), "{out}");
    assert!(out.contains("deleted 300 sessions") && out.ends_with("errors: 0\n"));
    assert_no_progress(&out);

    let (code, out, err) = piped(&dev, &format!("--json {BENCH}")).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_no_progress(&err);
    assert!(err.contains("deleted 300 sessions"), "{err}");
    let j: Value = serde_json::from_str(out.trim_end()).expect(&out);
    assert_eq!(j["ops"].as_u64(), Some(300));

    let sim = "fw-sim --loops 2 --interval 0.1 --batch 8 --seed 3";
    let (code, out, err) = piped(&dev, sim).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(err, "");
    assert!(out.contains("\ntotal after 2 loops: offered "), "{out}");
    assert_no_progress(&out);
    assert!(!out.contains("offloads/s"), "no status line: {out}");
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fw_sim_keeps_a_status_line_on_a_terminal() {
    if let Some(why) = missing_tool("tmux") {
        return skip_or_fail(&why);
    }
    let dev = TestDevice::start(PLAINTEXT).await;
    let dir = tempfile::tempdir().unwrap();
    // Runs until Ctrl-C: the status line under the events keeps the running totals.
    let command = format!("{} fw-sim --interval 0.2 --batch 4", offloadctl(&dev));
    let pane = Pane::start_recorded(&command, 100, 30, dir.path());
    let screen = pane
        .wait_for("the status line after a few loops", |s| {
            last_line(s).contains(" offloaded, ")
                && last_line(s).contains(" closes/s")
                && s.contains("loop 3: offered ")
        })
        .await;
    assert!(screen.contains("  add "), "the events above it:\n{screen}");
    pane.keys("C-c");
    assert_eq!(pane.wait_exit().await, 0, "{}", pane.screen());
    let s = pane.screen();
    assert!(s.contains("total after "), "{s}");
    let written = pane.written();
    assert!(
        !s.contains(" closes/s"),
        "the status line is cleared:\n{s}\nwritten: {written:?}"
    );
    dev.stop().await;
}

/// The last line of a screen with anything on it.
fn last_line(screen: &str) -> &str {
    screen.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("")
}
