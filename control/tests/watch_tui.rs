//! `offloadctl watch` driven in a real terminal: tmux runs it in an 80x24 pane, the
//! test reads the screen with `capture-pane` and types with `send-keys`. It sorts,
//! follows a resize, says so when the device goes away, notices it came back
//! restarted, and quits on `q`.

mod common;

use std::time::{Duration, Instant};

use common::pane::{Pane, EVENT};
use common::*;
use control::client::ApiVersion;
use control::testing::{missing_tool, skip_or_fail, TestDevice};

const PLAINTEXT: &str = "[api]\nplaintext = true\n";

/// The first row of the session table (the line under the header).
fn first_row(screen: &str) -> String {
    let mut lines = screen.lines().skip_while(|l| !l.starts_with("ID "));
    lines.next();
    lines.next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_in_a_real_terminal_sorts_resizes_survives_a_restart_and_quits() {
    if let Some(why) = missing_tool("tmux") {
        return skip_or_fail(&why);
    }
    let mut dev = TestDevice::start_with(PLAINTEXT, true).await;
    let port = dev.running_addr().port();
    let mut c = dev.client(ApiVersion::V2).await;
    let r = c.add((1..=30).map(v4).collect()).await.unwrap();
    assert_eq!(r.request_status, 0);
    let pool = dataplane::packet::PacketPool::new(64, 2048).unwrap();
    for _ in 0..5 {
        send(dev.ring("outside"), &pool, &v4(5), true, 0, 64);
    }

    let command = format!(
        "{} --server http://127.0.0.1:{port} watch --interval 0.2",
        env!("CARGO_BIN_EXE_offloadctl")
    );
    let pane = Pane::start(&command, 80, 24);
    pane.wait_for("the device and a page of sessions", |s| {
        s.contains("sessions 30 of") && s.contains("1-18 of 30")
    })
    .await;

    // Seven columns right of ID is PKTS, sorted most first: session 5 leads.
    for _ in 0..7 {
        pane.keys(">");
    }
    let s = pane
        .wait_for("sorted by packets", |s| s.contains("PKTS▼"))
        .await;
    let row = first_row(&s);
    assert!(
        row.starts_with("5 "),
        "session 5 has the packets: {row}\n{s}"
    );

    // A bigger window: more columns, every session on one page.
    assert!(pane
        .tmux(&["resize-window", "-t", &pane.name, "-x", "120", "-y", "40"])
        .status
        .success());
    pane.wait_for("the wider, taller view", |s| {
        s.contains("LIFS") && s.contains("1-30 of 30")
    })
    .await;

    // The device goes away: said on screen, the view stays.
    dev.stop().await;
    pane.wait_for("the device reported unreachable", |s| {
        s.contains("device unreachable since")
    })
    .await;
    assert!(pane.alive());

    // A new device on the same port: noticed as a restart.
    let dev = TestDevice::start_listening(PLAINTEXT, false, &format!("127.0.0.1:{port}")).await;
    let mut c = dev.client(ApiVersion::V2).await;
    assert_eq!(c.add(vec![v4(100)]).await.unwrap().request_status, 0);
    pane.wait_for("the device back, restarted", |s| {
        s.contains("new boot id") && s.contains("sessions 1 of")
    })
    .await;

    pane.keys("q");
    let deadline = Instant::now() + EVENT;
    while pane.alive() {
        assert!(Instant::now() < deadline, "watch quits on q");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    dev.stop().await;
}
