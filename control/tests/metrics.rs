//! The Prometheus endpoint, scraped over real HTTP the way Prometheus does: typed
//! counters, gauges and histograms with the device's real numbers, per worker and
//! port; the same text from `offloadctl metrics`; clients that never speak do not
//! hold it; and every query of the Grafana dashboard names a metric it serves.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use control::client::ApiVersion;
use control::testing::TestDevice;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const EVENT: Duration = Duration::from_secs(30);

/// One HTTP/1.1 request on a connection of its own; the whole answer.
async fn http(addr: SocketAddr, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(EVENT, s.read_to_end(&mut out))
        .await
        .expect("the endpoint answers and closes")
        .unwrap();
    String::from_utf8(out).expect("UTF-8")
}

/// The body of a 200 answer.
fn body(answer: &str) -> &str {
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer.split_once("\r\n\r\n").unwrap().1
}

/// The value of the sample whose line starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn type_of(text: &str, family: &str) -> String {
    let prefix = format!("# TYPE {family} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no TYPE line for {family}"))
        .to_string()
}

/// Every metric name the text has samples of.
fn names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_serves_typed_counters_gauges_and_histograms_with_the_device_numbers() {
    let mut dev = TestDevice::start_with("", true).await;
    let addr = dev.metrics_addr().expect("the endpoint is on by default");
    let mut c = dev.client(ApiVersion::V2).await;
    assert_eq!(c.add(vec![v4(1)]).await.unwrap().request_status, 0);
    let pool = dataplane::packet::PacketPool::new(64, 2048).unwrap();
    for _ in 0..10 {
        send(dev.ring("outside"), &pool, &v4(1), true, 0, 100);
        send(dev.ring("inside"), &pool, &v4(1), false, 0, 100);
    }
    let text = wait_for("20 packets counted", EVENT, || async {
        let text = body(&http(addr, "GET", "/metrics").await).to_string();
        (sample(&text, "offloadd_worker_hits_total{worker=\"0\"}") == 20.0).then_some(text)
    })
    .await;

    assert_eq!(type_of(&text, "offloadd_worker_hits_total"), "counter");
    assert_eq!(type_of(&text, "offloadd_sessions"), "gauge");
    assert_eq!(sample(&text, "offloadd_sessions"), 1.0);
    assert_eq!(
        sample(
            &text,
            "offloadd_session_adds_total{worker=\"0\",outcome=\"accepted\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&text, "offloadd_api_add_requests_total"),
        1.0,
        "control-plane counters too"
    );
    assert_eq!(
        sample(
            &text,
            "offloadd_port_rx_packets_total{port=\"outside\",role=\"lif 1\"}"
        ),
        10.0
    );
    assert_eq!(
        sample(
            &text,
            "offloadd_port_tx_packets_total{port=\"inside\",role=\"lif 2\"}"
        ),
        10.0
    );
    for h in [
        "offloadd_packet_latency_seconds",
        "offloadd_add_latency_seconds",
    ] {
        assert_eq!(type_of(&text, h), "histogram");
        let count = sample(&text, &format!("{h}_count"));
        assert!(count >= 1.0, "{h} has observations");
        assert_eq!(sample(&text, &format!("{h}_bucket{{le=\"+Inf\"}}")), count);
        assert!(sample(&text, &format!("{h}_sum")) > 0.0);
        let per_worker = format!("offloadd_worker_{}", &h["offloadd_".len()..]);
        assert_eq!(type_of(&text, &per_worker), "histogram");
        assert_eq!(
            sample(&text, &format!("{per_worker}_count{{worker=\"0\"}}")),
            count,
            "one worker: its histogram is the merged one"
        );
    }
    // Buckets are cumulative.
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("offloadd_packet_latency_seconds_bucket{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        buckets.len() > 5 && buckets.windows(2).all(|w| w[0] <= w[1]),
        "{buckets:?}"
    );

    // offloadctl metrics prints the same families.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_offloadctl"))
        .args(["--server", &dev.url, "--ca"])
        .arg(dev.cert(control::certs::CA_CERT))
        .arg("metrics")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ctl = String::from_utf8(out.stdout).unwrap();
    assert_eq!(names(&ctl), names(&text));
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_paths_and_methods_get_http_errors_and_silent_clients_do_not_hold_the_endpoint() {
    let dev = TestDevice::start("").await;
    let addr = dev.metrics_addr().unwrap();
    assert!(http(addr, "GET", "/nope").await.starts_with("HTTP/1.1 404"));
    let post = http(addr, "POST", "/metrics").await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    assert!(post.to_lowercase().contains("allow: get, head"), "{post}");

    // Clients that connect and never send a byte.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let text = http(addr, "GET", "/metrics").await;
    assert!(body(&text).contains("# TYPE offloadd_sessions gauge"));
    // Each is closed once its time to send a request is up.
    for mut s in silent {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(EVENT, s.read(&mut buf))
            .await
            .expect("the endpoint closes a silent connection")
            .unwrap_or(0);
        assert!(n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"));
    }
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_listen_turns_the_endpoint_off() {
    let dev = TestDevice::start("[metrics]\nlisten = \"\"\n").await;
    assert!(dev.metrics_addr().is_none());
    dev.stop().await;
}

/// The Grafana dashboard in the repository asks only for metrics the device
/// serves: every `offloadd_*` name in its queries is in a scrape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_names_a_metric_the_device_serves() {
    let dev = TestDevice::start("").await;
    let text = body(&http(dev.metrics_addr().unwrap(), "GET", "/metrics").await).to_string();
    let served = names(&text);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana/offloadd.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("dashboard JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 8, "the dashboard has its panels: {exprs:?}");
    for expr in &exprs {
        let used = metric_names(expr);
        assert!(!used.is_empty(), "{expr:?} names no offloadd metric");
        for name in used {
            assert!(
                served.contains(&name),
                "{expr:?} asks for {name}, which the device does not serve"
            );
        }
    }
    dev.stop().await;
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// `offloadd_*` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("offloadd_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// docs/metrics.md names every metric family the device serves, in full and in
/// backticks, so a reader can search it for any name a scrape shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_device_serves_is_documented() {
    let dev = TestDevice::start("").await;
    let text = body(&http(dev.metrics_addr().unwrap(), "GET", "/metrics").await).to_string();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
    let docs = std::fs::read_to_string(path).unwrap();
    let families: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert!(families.len() > 30, "a full scrape: {families:?}");
    let missing: Vec<&str> = families
        .iter()
        .copied()
        .filter(|f| !docs.contains(&format!("`{f}`")))
        .collect();
    assert!(missing.is_empty(), "not in docs/metrics.md: {missing:#?}");
    dev.stop().await;
}
