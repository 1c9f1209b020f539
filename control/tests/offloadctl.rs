//! offloadctl as a user runs it: the binary against a real in-process device (TLS on
//! loopback, ring dataplane), checking what it prints and its exit code.

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use control::testing::TestDevice;
use serde_json::Value;

struct Run {
    code: i32,
    out: String,
    err: String,
}

fn run(args: Vec<String>) -> Run {
    let o: Output = Command::new(env!("CARGO_BIN_EXE_offloadctl"))
        .args(&args)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("offloadctl runs");
    Run {
        code: o.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Runs offloadctl against `dev` (off the runtime's threads: the device runs there).
async fn ctl(dev: &TestDevice, args: &[&str]) -> Run {
    let mut all = vec![
        "--server".to_string(),
        dev.url.clone(),
        "--ca".to_string(),
        dev.cert(control::certs::CA_CERT).display().to_string(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || run(all)).await.unwrap()
}

fn ok(r: &Run) -> &str {
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.out, r.err);
    &r.out
}

fn failed(r: &Run) -> &str {
    assert_eq!(r.code, 1, "stdout:\n{}\nstderr:\n{}", r.out, r.err);
    assert_eq!(r.err.lines().count(), 1, "one line on stderr: {}", r.err);
    &r.err
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect()
}

const V4: &[&str] = &[
    "add", "--id", "7", "--src", "10.0.0.1", "--sport", "1234", "--dst", "10.0.0.2", "--dport",
    "80",
];

/// Session 8: IPv6 UDP.
const V6: &[&str] = &[
    "add",
    "--id",
    "8",
    "--src",
    "2001:db8::1",
    "--sport",
    "5000",
    "--dst",
    "2001:db8::2",
    "--dport",
    "53",
    "--proto",
    "udp",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_get_list_delete() {
    let dev = TestDevice::start("").await;
    assert_eq!(ok(&ctl(&dev, V4).await), "session 7: accepted\n");
    let mut v6 = V6.to_vec();
    v6.extend(["--action", "mirror", "--timeout", "60"]);
    ok(&ctl(&dev, &v6).await);
    let e = failed(&ctl(&dev, V4).await).to_string();
    assert_eq!(
        e,
        "offloadctl: session 7 rejected: session id 7 already exists (_SESSION_ALREADY_EXISTS)\n"
    );
    // The device's reason, not a bare status name.
    let mut unknown_lif = V4.to_vec();
    unknown_lif[2] = "9";
    unknown_lif.extend(["--out-lif", "9"]);
    let e = failed(&ctl(&dev, &unknown_lif).await).to_string();
    assert_eq!(
        e,
        "offloadctl: session 9 rejected: unknown lif 9 in out_lif (lifs: 1, 2) (_SESSION_REJECTED)\n"
    );
    let mut json = vec!["--json"];
    json.extend(&unknown_lif);
    let r = ctl(&dev, &json).await;
    failed(&r);
    let j = &json_lines(&r.out)[0];
    assert_eq!(j["status"], "_SESSION_REJECTED");
    assert_eq!(j["reason"], "unknown_lif");
    assert_eq!(j["detail"], "unknown lif 9 in out_lif (lifs: 1, 2)");
    // Counted by reason, in text and JSON.
    let st = ctl(&dev, &["stats"]).await;
    let line = |name: &str| {
        ok(&st)
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
    };
    assert_eq!(line("api_rejected_unknown_lif").as_deref(), Some("2"));
    assert_eq!(line("api_rejected_id_exists").as_deref(), Some("1"));
    let st = ctl(&dev, &["--json", "stats"]).await;
    let j = &json_lines(ok(&st))[0];
    assert_eq!(j["counters"]["api_rejected_unknown_lif"], 2);
    assert_eq!(j["counters"]["api_rejected_table_full"], 0);

    let g = ctl(&dev, &["get", "7"]).await;
    assert!(ok(&g).contains("state       ESTABLISHED"), "{}", g.out);
    let g = ctl(&dev, &["--json", "get", "8"]).await;
    let j = &json_lines(ok(&g))[0];
    assert_eq!(j["session_id"], 8);
    assert_eq!(j["state"], "_ESTABLISHED");

    let l = ctl(&dev, &["list"]).await;
    let text = ok(&l);
    assert!(text.starts_with("ID  STATE"), "{text}");
    assert!(text.ends_with("2 sessions\n"), "{text}");
    let l = ctl(&dev, &["--json", "list", "--page", "2", "--page-size", "1"]).await;
    let page = json_lines(ok(&l));
    assert_eq!(page.len(), 1);
    assert_eq!(page[0]["session_id"], 8);
    let l = ctl(&dev, &["list", "--cursor", "7", "--page-size", "1"]).await;
    assert!(ok(&l).contains("next page: --cursor 8"), "{}", l.out);
    let l = ctl(
        &dev,
        &[
            "--json",
            "list",
            "--cursor",
            "7",
            "--all",
            "--page-size",
            "1",
        ],
    )
    .await;
    assert_eq!(json_lines(ok(&l)).len(), 1);

    let d = ctl(&dev, &["delete", "7"]).await;
    assert!(ok(&d).contains("state       CLOSED"), "{}", d.out);
    for cmd in ["get", "delete"] {
        let e = failed(&ctl(&dev, &[cmd, "7"]).await).to_string();
        assert_eq!(e, "offloadctl: session 7 does not exist\n");
    }

    // The v1 service, same table.
    let g = ctl(&dev, &["--api", "v1", "get", "8"]).await;
    assert!(ok(&g).contains("session 8"), "{}", g.out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_answered_not_found_read_the_same() {
    let dev = TestDevice::start("[api]\nunknown_session = \"not-found\"\n").await;
    let e = failed(&ctl(&dev, &["get", "3"]).await).to_string();
    assert_eq!(e, "offloadctl: session 3 does not exist\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_sessions_are_printed_once() {
    let dev = TestDevice::start("[dataplane]\ntick_ms = 20\n").await;
    let mut add: Vec<&str> = V4.to_vec();
    add.extend(["--timeout", "1"]);
    ok(&ctl(&dev, &add).await);
    let deadline = Instant::now() + Duration::from_secs(10);
    let record = loop {
        let c = ctl(&dev, &["--json", "closed"]).await;
        if let Some(r) = json_lines(ok(&c)).pop() {
            break r;
        }
        assert!(Instant::now() < deadline, "session 7 never closed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(record["session_id"], 7);
    assert_eq!(record["close_code"], "_TIMEOUT");
    assert_eq!(record["state"], "_CLOSED");
    let again = ctl(&dev, &["closed"]).await;
    assert_eq!(ok(&again), "0 closed sessions\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_follow_acks_what_it_printed() {
    let dev = TestDevice::start("[dataplane]\ntick_ms = 20\n").await;
    for id in ["1", "2", "3"] {
        let sport = format!("100{id}");
        let add = [
            "add",
            "--id",
            id,
            "--src",
            "10.0.0.1",
            "--sport",
            &sport,
            "--dst",
            "10.0.0.2",
            "--dport",
            "80",
            "--timeout",
            "1",
        ];
        ok(&ctl(&dev, &add).await);
    }
    let device = dev.device();
    let deadline = Instant::now() + Duration::from_secs(10);
    while device.feed.len() < 3 {
        assert!(Instant::now() < deadline, "sessions never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // --page-size stops the follow after two records, printed and acked.
    let first = ctl(&dev, &["--json", "closed", "--follow", "--page-size", "2"]).await;
    let printed: Vec<u64> = json_lines(ok(&first))
        .iter()
        .map(|r| r["session_id"].as_u64().unwrap())
        .collect();
    assert_eq!(printed.len(), 2, "{}", first.out);
    // The next reader gets only the record not printed.
    let rest = ctl(&dev, &["--json", "closed"]).await;
    let rest: Vec<u64> = json_lines(ok(&rest))
        .iter()
        .map(|r| r["session_id"].as_u64().unwrap())
        .collect();
    assert_eq!(rest.len(), 1);
    let all: std::collections::BTreeSet<u64> = printed.iter().chain(&rest).copied().collect();
    assert_eq!(all, (1..=3).collect());
    assert!(device.feed.is_empty(), "the printed ones are forgotten");
}

/// `offloadctl add` of session `id` that times out after a second.
async fn add_short_lived(dev: &TestDevice, id: u32) {
    let (id, sport) = (id.to_string(), (1000 + id).to_string());
    let add = [
        "add",
        "--id",
        &id,
        "--src",
        "10.0.0.1",
        "--sport",
        &sport,
        "--dst",
        "10.0.0.2",
        "--dport",
        "80",
        "--timeout",
        "1",
    ];
    ok(&ctl(dev, &add).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_follow_prints_closures_as_they_happen_until_ctrl_c() {
    use std::io::BufRead;
    let dev = TestDevice::start("[dataplane]\ntick_ms = 20\n").await;
    add_short_lived(&dev, 1).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_offloadctl"))
        .args(["--server", &dev.url, "--ca"])
        .arg(dev.cert(control::certs::CA_CERT))
        .args(["closed", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("offloadctl runs");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = lines_tx.send(line.unwrap());
        }
    });
    let next_line = || lines.recv_timeout(Duration::from_secs(20)).expect("a line");
    let line = next_line();
    assert!(line.starts_with("session 1 closed TIMEOUT"), "{line}");
    // Closed after offloadctl started: it follows.
    add_short_lived(&dev, 2).await;
    let line = next_line();
    assert!(line.starts_with("session 2 closed TIMEOUT"), "{line}");
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    assert_eq!(next_line(), "2 closed sessions");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    // Both were acked: the next reader gets neither.
    assert_eq!(ok(&ctl(&dev, &["closed"]).await), "0 closed sessions\n");
    assert!(dev.device().feed.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_latency_and_plot() {
    let dev = TestDevice::start("").await;
    ok(&ctl(&dev, V4).await);
    let s = ctl(&dev, &["stats"]).await;
    let text = ok(&s);
    assert!(text.starts_with("offloadd "), "{text}");
    for part in ["COUNTER", "adds", "WORKER", "PORT", "firewall"] {
        assert!(text.contains(part), "{part} in {text}");
    }
    let s = ctl(&dev, &["--json", "stats"]).await;
    let j = &json_lines(ok(&s))[0];
    assert_eq!(j["sessions"], 1);
    assert_eq!(j["counters"]["adds"], 1);
    assert_eq!(j["closed_streams"], 0);
    // This start's boot id and start time, as the device knows them.
    let boot = dev.device().boot.clone();
    assert_eq!(j["boot_id"], boot.id.as_str());
    assert_eq!(j["start_time"], boot.start_time_unix());
    assert!(
        text.contains(&format!("boot id {}, started ", boot.id)),
        "{text}"
    );

    // A following GetClosedSessions stream shows while it is open, and goes with it.
    let mut c = dev.client(control::client::ApiVersion::V2).await;
    let follow = c
        .closed(proto::v2::SessionRequestArgs::default(), true)
        .await
        .unwrap();
    let streams = || async {
        let s = ctl(&dev, &["--json", "stats"]).await;
        json_lines(ok(&s))[0]["closed_streams"].as_u64().unwrap()
    };
    assert_eq!(streams().await, 1);
    assert!(ok(&ctl(&dev, &["stats"]).await).contains("GetClosedSessions streams open: 1"));
    drop(follow);
    let deadline = Instant::now() + Duration::from_secs(5);
    while streams().await != 0 {
        assert!(Instant::now() < deadline, "the ended stream still counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let l = ctl(&dev, &["latency"]).await;
    let text = ok(&l);
    assert!(text.starts_with("HISTOGRAM  COUNT  P50"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("add ")), "{text}");
    let l = ctl(&dev, &["latency", "--hgrm", "--histogram", "add"]).await;
    let text = ok(&l);
    assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"));
    assert!(text.contains("#[Max     = "), "{text}");
    assert!(text.contains("Total count    =            1]"), "{text}");
    let e = failed(&ctl(&dev, &["latency", "--histogram", "nothing"]).await).to_string();
    assert!(e.contains("no histogram named"), "{e}");

    let svg = dev.certs().join("latency.svg");
    let p = ctl(&dev, &["latency", "--plot", svg.to_str().unwrap()]).await;
    ok(&p);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<?xml") && text.trim_end().ends_with("</svg>"));
    assert!(text.contains(r#"data-series="add""#), "{text}");
    assert!(text.contains(">Latency (log scale)</text>"), "{text}");
    assert!(
        text.contains(&format!("at {}, boot ", dev.url)) && text.contains(" UTC</text>"),
        "the device and the time are named: {text}"
    );
}

fn last_json(r: &Run) -> Value {
    let line = ok(r).lines().last().expect("a result line");
    serde_json::from_str(line).expect(line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_checks_every_answer() {
    let dev = TestDevice::start("[dataplane]\ntick_ms = 20\n").await;
    let common = ["--streams", "2", "--batch", "50", "--json"];
    let mut add = vec!["bench", "add", "--sessions", "300", "--sample", "50"];
    add.extend(common);
    let j = last_json(&ctl(&dev, &add).await);
    assert_eq!(
        (j["ops"].as_u64(), j["errors"].as_u64()),
        (Some(300), Some(0)),
        "{j}"
    );
    for k in [
        "seconds",
        "ops_per_s",
        "p50_us",
        "p99_us",
        "p999_us",
        "add_to_live_p99_us",
    ] {
        assert!(j[k].as_f64().is_some(), "{k} in {j}");
    }
    assert_eq!(j["calls"], 6);

    let mut get = vec!["bench", "get", "--sessions", "200"];
    get.extend(common);
    let j = last_json(&ctl(&dev, &get).await);
    assert_eq!(
        (j["ops"].as_u64(), j["errors"].as_u64()),
        (Some(200), Some(0)),
        "{j}"
    );

    let mut closed = vec!["bench", "closed", "--sessions", "200"];
    closed.extend(common);
    let j = last_json(&ctl(&dev, &closed).await);
    assert_eq!(
        (j["ops"].as_u64(), j["errors"].as_u64()),
        (Some(200), Some(0)),
        "{j}"
    );

    // Everything the benches added is gone again.
    let l = ctl(&dev, &["list"]).await;
    assert_eq!(ok(&l), "0 sessions\n");

    // A clash is an error: the sessions exist already.
    ok(&ctl(&dev, &["bench", "add", "--sessions", "10", "--keep"]).await);
    let r = ctl(&dev, &["bench", "add", "--sessions", "10", "--json"]).await;
    assert_eq!(r.code, 1);
    assert_eq!(last_json_any(&r.out)["errors"], 10);
}

fn last_json_any(out: &str) -> Value {
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fw_sim_fills_the_table_and_sessions_come_back() {
    let dev = TestDevice::start("[dataplane]\nmax_sessions = 19\ntick_ms = 20\n").await;
    let sim = ctl(
        &dev,
        &[
            "fw-sim",
            "--loops",
            "2",
            "--batch",
            "24",
            // Loop 2 needs some of loop 1's sessions (1 s timeouts) to have closed:
            // 5 s leaves 4 s for the closes even on a loaded machine.
            "--interval",
            "5",
            "--max-timeout",
            "1",
            "--seed",
            "5",
        ],
    )
    .await;
    let text = ok(&sim);
    assert!(
        text.starts_with("fw-sim: 0 sessions already offloaded"),
        "{text}"
    );
    assert!(
        text.contains("loop 1: offered 24, accepted 19, table full 5"),
        "{text}"
    );
    assert!(text.contains(": table full\n"), "{text}");
    assert!(
        text.contains(" closed TIMEOUT") || text.contains("TIMEOUT: in"),
        "{text}"
    );
    // Loop 2 offers the refused ones again under new ids, and some get in.
    let loop2 = text.lines().find(|l| l.starts_with("loop 2: ")).unwrap();
    assert!(!loop2.contains("accepted 0,"), "{loop2}");
    assert!(text.contains("(repeat): already exists"), "{text}");

    // The view of the same device, one frame.
    let w = ctl(&dev, &["watch", "--once", "--rows", "5"]).await;
    let text = ok(&w);
    assert!(text.starts_with("offloadd "), "{text}");
    assert!(text.contains(" of 19 "), "{text}");
    assert!(text.contains("ID  TUPLE"), "{text}");
    assert!(!text.contains('\x1b'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_line() {
    let dev = TestDevice::start("").await;
    // Usage errors are clap's, exit code 2.
    let r = ctl(&dev, &["get", "x"]).await;
    assert_eq!(r.code, 2, "{}", r.err);
    // A missing CA file says how to pass one.
    let r = tokio::task::spawn_blocking(|| {
        run(vec![
            "--ca".into(),
            "/nonexistent/ca.crt".into(),
            "stats".into(),
        ])
    })
    .await
    .unwrap();
    assert!(failed(&r).contains("--ca FILE"), "{}", r.err);
    // No --ca and no default CA (run in the temporary directory): names what it tried.
    if !std::path::Path::new("/etc/offloadd/certs/ca.crt").exists() {
        let r = tokio::task::spawn_blocking(|| run(vec!["stats".into()]))
            .await
            .unwrap();
        assert!(
            failed(&r).contains("tried /etc/offloadd/certs/ca.crt, certs/ca.crt"),
            "{}",
            r.err
        );
    }
    // Nobody listening.
    let r = tokio::task::spawn_blocking(|| {
        run(vec![
            "--server".into(),
            "http://127.0.0.1:9".into(),
            "stats".into(),
        ])
    })
    .await
    .unwrap();
    assert!(
        failed(&r).contains("nothing listens at 127.0.0.1:9: is offloadd running there?"),
        "{}",
        r.err
    );
    // The wrong scheme, either way, and the wrong CA: what to pass instead.
    let tls_port = dev.running_addr().port();
    let http = format!("http://127.0.0.1:{tls_port}");
    let r = tokio::task::spawn_blocking(move || run(vec!["--server".into(), http, "stats".into()]))
        .await
        .unwrap();
    assert!(
        failed(&r).contains("pass --server https://127.0.0.1:"),
        "{}",
        r.err
    );
    let plain = TestDevice::start("[api]\nplaintext = true\n").await;
    let https = format!("https://127.0.0.1:{}", plain.running_addr().port());
    let ca = dev.cert(control::certs::CA_CERT);
    let r = tokio::task::spawn_blocking(move || {
        run(vec![
            "--server".into(),
            https,
            "--ca".into(),
            ca.display().to_string(),
            "stats".into(),
        ])
    })
    .await
    .unwrap();
    assert!(
        failed(&r).contains("the device is plaintext; pass --server http://127.0.0.1:"),
        "{}",
        r.err
    );
    let other_ca = plain.cert(control::certs::CA_CERT);
    let url = dev.url.clone();
    let r = tokio::task::spawn_blocking(move || {
        run(vec![
            "--server".into(),
            url,
            "--ca".into(),
            other_ca.display().to_string(),
            "stats".into(),
        ])
    })
    .await
    .unwrap();
    assert!(
        failed(&r).contains("pass the device's CA with --ca FILE"),
        "{}",
        r.err
    );
    plain.stop().await;
    drop(dev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_takes_the_client_certificate() {
    let dev = TestDevice::start("[tls]\nclient_ca = \"ca.crt\"\n").await;
    failed(&ctl(&dev, &["stats"]).await);
    let (cert, key) = (
        dev.cert(control::certs::CLIENT_CERT),
        dev.cert(control::certs::CLIENT_KEY),
    );
    let args = [
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "stats",
    ];
    assert!(ok(&ctl(&dev, &args).await).starts_with("offloadd "));
}

#[test]
fn certs_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c");
    let r = run(vec![
        "certs".into(),
        "--out".into(),
        out.display().to_string(),
    ]);
    assert_eq!(r.code, 0, "{}", r.err);
    for f in [
        "ca.crt",
        "server.crt",
        "server.key",
        "client.crt",
        "client.key",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neighbours_lists_static_and_learned_next_hops() {
    let dev =
        TestDevice::start("[[next_hop]]\naddr = \"10.9.9.9\"\nmac = \"02:aa:bb:cc:dd:ee\"\n").await;
    // The Python clients' next hop and the C++ client's IPv6 one: no config lists them.
    let mut v4 = V4.to_vec();
    v4.extend(["--next-hop", "12.2.3.4"]);
    assert_eq!(ok(&ctl(&dev, &v4).await), "session 7: accepted\n");
    let mut v6 = V6.to_vec();
    v6.extend(["--next-hop", "1::ffff:204:160"]);
    assert_eq!(ok(&ctl(&dev, &v6).await), "session 8: accepted\n");

    let list = json_lines(ok(&ctl(&dev, &["--json", "neighbours"]).await));
    assert_eq!(list.len(), 3, "{list:?}");
    let by_addr = |a: &str| list.iter().find(|n| n["addr"] == a).expect(a).clone();
    let s = by_addr("10.9.9.9");
    assert_eq!(
        (
            &s["mac"],
            &s["state"],
            &s["source"],
            &s["port"],
            &s["sessions"]
        ),
        (
            &Value::from("02:aa:bb:cc:dd:ee"),
            &Value::from("permanent"),
            &Value::from("static"),
            &Value::Null,
            &Value::from(0)
        )
    );
    // Ring ports cannot resolve: learned entries stay NOARP, with no MAC, on the
    // session's out port (lif 2).
    for a in ["12.2.3.4", "1::ffff:204:160"] {
        let n = by_addr(a);
        assert_eq!(n["state"], "noarp", "{n}");
        assert_eq!(n["source"], "learned", "{n}");
        assert_eq!(n["mac"], Value::Null, "{n}");
        assert_eq!(n["port"], "inside", "{n}");
        assert_eq!(n["sessions"], 1, "{n}");
    }
    let text = ok(&ctl(&dev, &["neighbours"]).await).to_string();
    assert!(text.starts_with("ADDRESS"), "{text}");
    assert!(
        text.contains("12.2.3.4") && text.contains("noarp"),
        "{text}"
    );
    assert!(
        text.contains("02:aa:bb:cc:dd:ee") && text.contains("permanent"),
        "{text}"
    );

    // A deleted session no longer counts for its next hop.
    ok(&ctl(&dev, &["delete", "7"]).await);
    let list = json_lines(ok(&ctl(&dev, &["--json", "neighbours"]).await));
    let n = list.iter().find(|n| n["addr"] == "12.2.3.4").unwrap();
    assert_eq!(n["sessions"], 0, "{n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_every_id_and_cursor_0_is_not_the_start() {
    let dev = TestDevice::start("").await;
    for (k, id) in ["0", "4294967295", "5"].into_iter().enumerate() {
        let sport = (2000 + k).to_string();
        let mut add = V4.to_vec();
        add[2] = id;
        add[6] = &sport;
        ok(&ctl(&dev, &add).await);
    }
    let ids = |r: &Run| -> Vec<u64> {
        json_lines(ok(r))
            .iter()
            .map(|j| j["session_id"].as_u64().unwrap())
            .collect()
    };
    // All of them, the cursor start marker's own id included (asked for by id).
    let all = ctl(&dev, &["--json", "list", "--page-size", "1"]).await;
    assert_eq!(ids(&all), vec![0, 5, 4_294_967_295]);
    // Cursor 0 lists the ids above 0; cursor pages never show 4294967295 itself.
    let page = ctl(
        &dev,
        &["--json", "list", "--cursor", "0", "--page-size", "10"],
    )
    .await;
    assert_eq!(ids(&page), vec![5]);
    let page = ctl(
        &dev,
        &["list", "--cursor", "4294967295", "--page-size", "1"],
    )
    .await;
    assert!(ok(&page).contains("next page: --cursor 0"), "{}", page.out);
    let rest = ctl(&dev, &["--json", "list", "--cursor", "0", "--all"]).await;
    assert_eq!(ids(&rest), vec![5, 4_294_967_295]);
}

/// A follow stream the device ends by stopping says so, on one line, with how many
/// records were printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_ended_by_the_device_stopping_says_so() {
    let dev = TestDevice::start("[dataplane]\ntick_ms = 20\n").await;
    add_short_lived(&dev, 1).await;
    let child = Command::new(env!("CARGO_BIN_EXE_offloadctl"))
        .args(["--server", &dev.url, "--ca"])
        .arg(dev.cert(control::certs::CA_CERT))
        .args(["closed", "--follow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("offloadctl runs");
    let device = dev.device();
    let deadline = Instant::now() + Duration::from_secs(30);
    while device
        .counters
        .closed_acked
        .load(std::sync::atomic::Ordering::Relaxed)
        != 1
    {
        assert!(Instant::now() < deadline, "the record printed and acked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    dev.stop().await;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("the device") && err.contains("after 1 closed sessions"),
        "{err}"
    );
}

/// Every field of every `--json` output is named in docs/output-formats.md (in
/// backticks, as `field` or `parent.field`). The values of `counters` are counter
/// names, documented in docs/metrics.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_field_is_documented() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/output-formats.md");
    let docs = std::fs::read_to_string(path).unwrap();
    let dev = TestDevice::start("[dataplane]\ntick_ms = 20\n").await;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs").display().to_string();
    let mut short_lived: Vec<&str> = V4.to_vec();
    short_lived.extend(["--timeout", "1"]);
    let runs: Vec<Vec<&str>> = vec![
        short_lived,
        V6.to_vec(),
        vec!["get", "8"],
        vec!["list"],
        vec!["watch", "--once"],
        vec!["stats"],
        vec!["neighbours"],
        vec!["latency"],
        vec!["delete", "8"],
        vec!["bench", "add", "--sessions", "20", "--sample", "5"],
        vec!["bench", "get", "--sessions", "20"],
        vec!["bench", "closed", "--sessions", "20"],
        vec![
            "fw-sim",
            "--loops",
            "2",
            "--interval",
            "3",
            "--max-timeout",
            "1",
        ],
        vec!["certs", "--out", &certs],
    ];
    let mut fields = BTreeSet::new();
    for args in runs {
        let mut all = vec!["--json"];
        all.extend(&args);
        for v in json_lines(ok(&ctl(&dev, &all).await)) {
            collect_fields(&v, "", &mut fields);
        }
    }
    // Session 7 has closed by now: its record.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fields.contains("close_code")
        || ok(&ctl(&dev, &["closed"]).await) != "0 closed sessions\n"
    {
        for v in json_lines(ok(&ctl(&dev, &["--json", "closed"]).await)) {
            collect_fields(&v, "", &mut fields);
        }
        assert!(Instant::now() < deadline, "session 7 never closed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for must in [
        "event",
        "known",
        "add_to_live_p99_us",
        "wait_seconds",
        "more_sessions",
    ] {
        assert!(fields.contains(must), "{must} seen: {fields:?}");
    }
    let missing: Vec<&String> = fields
        .iter()
        .filter(|f| {
            let last = f.rsplit('.').next().unwrap();
            !docs.contains(&format!("`{f}`")) && !docs.contains(&format!("`{last}`"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "not in docs/output-formats.md: {missing:?}"
    );
}

/// The keys of `v`, nested ones as `parent.key` (array items as their parent).
fn collect_fields(v: &Value, parent: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let name = if parent.is_empty() {
                    k.clone()
                } else {
                    format!("{parent}.{k}")
                };
                out.insert(name.clone());
                if k != "counters" {
                    collect_fields(v, &name, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_fields(v, parent, out)),
        _ => {}
    }
}
