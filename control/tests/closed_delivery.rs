//! GetClosedSessions loses nothing when readers go away (issue 10 §1), against a real
//! device over TLS: 20,000 closed records; raw HTTP/2 readers with a 1,000-byte
//! window that stop reading and reset or drop their connection (exactly what their
//! applications read is delivered); grpcio readers SIGKILLed mid-stream; then a clean
//! reader drains the rest. Every id arrives; the only ids that arrive twice are ones
//! a killed grpcio reader read before its HTTP/2 stack returned credit for them.
//!
//! The same for Admin/AckedClosedSessions, with readers that go away between
//! receiving records and acking them.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use common::*;
use control::client::ApiVersion;
use control::testing::{skip_or_fail, TestDevice};
use futures::StreamExt;
use prost::Message;
use proto::admin::ClosedAck;
use proto::v2::{SessionRequestArgs, SessionResponse};
use tokio::io::{AsyncBufReadExt, BufReader};

const RECORDS: u64 = 20_000;
/// The raw readers' stream window (SETTINGS_INITIAL_WINDOW_SIZE).
const RAW_WINDOW: u32 = 1_000;
const CONFIG: &str = "[dataplane]\ntick_ms = 20\n[api]\nack_window = 5000\n";

/// Who received which ids.
#[derive(Default)]
struct Tally {
    by_reader: Vec<(String, Vec<u64>)>,
}

impl Tally {
    fn add(&mut self, reader: String, ids: Vec<u64>) {
        println!("{reader}: received {}", ids.len());
        self.by_reader.push((reader, ids));
    }

    /// Records the readers from `since` on received.
    fn received(&self, since: usize) -> usize {
        self.by_reader[since..].iter().map(|(_, i)| i.len()).sum()
    }

    /// Prints how far the device's count of delivered records (`delivered`, since
    /// the last call) is from what the readers since then received.
    fn compare(&self, since: usize, what: &str, delivered: u64) {
        let received = self.received(since);
        println!("{what}: received {received}, the device counted {delivered} delivered");
    }

    /// Every id in 0..RECORDS exactly once: (lost, duplicated) otherwise.
    fn lost_and_duplicated(&self) -> (Vec<u64>, Vec<u64>) {
        let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
        for id in self.by_reader.iter().flat_map(|(_, ids)| ids) {
            *seen.entry(*id).or_default() += 1;
        }
        let lost = (0..RECORDS).filter(|i| !seen.contains_key(i)).collect();
        let dup = seen
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(i, _)| i)
            .collect();
        (lost, dup)
    }

    fn assert_exactly_once(&self) {
        let (lost, dup) = self.lost_and_duplicated();
        println!("lost {}, duplicated {}", lost.len(), dup.len());
        assert!(
            lost.is_empty() && dup.is_empty(),
            "lost {} (first {:?}), duplicated {} (first {:?})",
            lost.len(),
            &lost[..lost.len().min(10)],
            dup.len(),
            &dup[..dup.len().min(10)]
        );
    }
}

/// `f`, which must be done within 20 s.
async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within 20 s"))
}

fn addr(dev: &TestDevice) -> SocketAddr {
    dev.running.as_ref().unwrap().local_addrs()[0]
}

/// A gRPC message: the 5-byte prefix and `m`.
fn grpc_message(m: &impl Message) -> Bytes {
    let body = m.encode_to_vec();
    let mut b = BytesMut::with_capacity(5 + body.len());
    b.extend_from_slice(&[0]);
    b.extend_from_slice(&(body.len() as u32).to_be_bytes());
    b.extend_from_slice(&body);
    b.freeze()
}

/// The complete gRPC messages at the head of `buf`, taken out of it.
fn take_messages(buf: &mut BytesMut, out: &mut Vec<u64>) {
    while buf.len() >= 5 {
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if buf.len() < 5 + len {
            return;
        }
        buf.advance(5);
        let m = SessionResponse::decode(buf.split_to(len).freeze()).expect("a SessionResponse");
        out.push(m.session_id);
    }
}

/// Bytes a raw reader releases to h2 at once: with none unclaimed before, a release
/// of a third of the window or more always makes h2 send a WINDOW_UPDATE for all of it
/// (h2 0.4 `FlowControl::unclaimed_capacity`: at least half the window left), so
/// after each release everything consumed has been credited.
const RELEASE_BATCH: usize = (RAW_WINDOW as usize).div_ceil(3);

/// How a raw reader goes away.
#[derive(Clone, Copy, Debug)]
enum Leave {
    ResetStream,
    DropConnection,
}

/// A raw HTTP/2 GetClosedSessions reader (following) with a `RAW_WINDOW` stream
/// window: reads at least `want` records, stops reading where all it consumed has
/// been credited (and the server has that credit), lets the server fill its window,
/// and goes away. Returns the ids its application read.
async fn raw_reader(addr: SocketAddr, ca: &Path, want: usize, leave: Leave) -> Vec<u64> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tls::tls_over(tcp, ca).await.expect("TLS");
    let (client, mut conn) = within(
        "HTTP/2 handshake",
        h2::client::Builder::new()
            .initial_window_size(RAW_WINDOW)
            .handshake::<_, Bytes>(tls),
    )
    .await
    .expect("HTTP/2 handshake");
    let mut pings = conn.ping_pong().expect("ping_pong");
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = within("ready to send", client.ready()).await.unwrap();
    let req = http::Request::builder()
        .method("POST")
        .uri("https://localhost/openoffload.v2.SessionTable/GetClosedSessions")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("offloadd-follow", "1")
        .body(())
        .unwrap();
    let (response, mut request_body) = client.send_request(req, false).unwrap();
    request_body
        .send_data(grpc_message(&SessionRequestArgs::default()), true)
        .unwrap();
    let response = within("response headers", response)
        .await
        .expect("response headers");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut ids = Vec::new();
    let mut buf = BytesMut::new();
    let mut consumed = 0;
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(20), body.data())
            .await
            .expect("data within 20 s")
            .expect("the stream goes on")
            .expect("data");
        buf.extend_from_slice(&chunk);
        take_messages(&mut buf, &mut ids);
        consumed += chunk.len();
        if consumed >= RELEASE_BATCH {
            body.flow_control().release_capacity(consumed).unwrap();
            consumed = 0;
            if ids.len() >= want {
                break;
            }
        }
    }
    // Two round trips: the second PING leaves after the WINDOW_UPDATE did.
    for _ in 0..2 {
        within("pong", pings.ping(h2::Ping::opaque()))
            .await
            .expect("pong");
    }
    // Not reading any more: the server fills the window, and the reader goes away.
    match leave {
        Leave::ResetStream => {
            request_body.send_reset(h2::Reason::CANCEL);
            within("pong", pings.ping(h2::Ping::opaque()))
                .await
                .expect("pong");
            drop(body);
            driver.abort();
        }
        Leave::DropConnection => {
            driver.abort();
            drop(body);
        }
    }
    ids
}

fn python() -> Option<String> {
    let p = std::env::var("OFFLOADD_PYTHON").ok();
    if p.is_none() {
        skip_or_fail("set OFFLOADD_PYTHON to a python with grpcio and grpcio-tools");
    }
    p
}

/// Generates the v2 Python stubs into the device's directory.
fn python_stubs(python: &str, dev: &TestDevice) -> std::path::PathBuf {
    let stubs = dev.certs().join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    let gen = std::process::Command::new(python)
        .args(["-m", "grpc_tools.protoc", "-I", proto_dir])
        .arg(format!("--python_out={}", stubs.display()))
        .arg(format!("--grpc_python_out={}", stubs.display()))
        .arg("openoffload_v2.proto")
        .output()
        .expect("run grpc_tools.protoc");
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    stubs
}

/// A grpcio reader SIGKILLed `after` its first record: the ids it wrote.
async fn python_reader_killed(
    python: &str,
    dev: &TestDevice,
    stubs: &Path,
    after: Duration,
) -> Vec<u64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/closed_reader.py");
    let mut child = tokio::process::Command::new(python)
        .arg(script)
        .args(["--port", &addr(dev).port().to_string()])
        .arg("--root")
        .arg(dev.cert(control::certs::SERVER_CERT))
        .arg("--stubs")
        .arg(stubs)
        .args(grpcio_options())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run the python reader");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("a first record within 30 s")
        .unwrap()
        .expect("a first record");
    let mut ids = vec![first.parse::<u64>().unwrap()];
    let reading = async {
        while let Ok(Some(l)) = lines.next_line().await {
            ids.push(l.parse::<u64>().unwrap());
        }
    };
    let kill = async {
        tokio::time::sleep(after).await;
        child.start_kill().expect("SIGKILL");
    };
    tokio::join!(reading, kill);
    let _ = child.wait().await;
    ids
}

/// grpcio's channel options for the killed readers: no BDP window growth, and no
/// lookahead, so its stack gives stream credit for the next message when the
/// application asks for it (docs/behaviour.md). `OFFLOADD_GRPCIO_OPTIONS` (options
/// separated by spaces; empty: grpcio's defaults) replaces them to measure others.
const GRPCIO_OPTIONS: &str = "grpc.http2.bdp_probe=0 grpc.http2.lookahead_bytes=0";
/// Records a killed grpcio reader may have read after the last credit the device
/// received from it: the one it asked for last, if it was killed between writing it
/// and its credit reaching the device.
const GRPCIO_CREDIT_LAG: usize = 1;

fn grpcio_options() -> Vec<String> {
    let options = std::env::var("OFFLOADD_GRPCIO_OPTIONS").unwrap_or(GRPCIO_OPTIONS.into());
    println!("grpcio options: {options:?}");
    options
        .split_whitespace()
        .flat_map(|o| ["--option".to_string(), o.to_string()])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_go_away_lose_nothing() {
    let Some(python) = python() else { return };
    let dev = TestDevice::start(CONFIG).await;
    let mut c = dev.client(ApiVersion::V2).await;
    closed_records(&dev, &mut c, RECORDS).await;
    let ca = dev.cert(control::certs::CA_CERT);
    let mut tally = Tally::default();
    let delivered = || {
        dev.device()
            .counters
            .closed_delivered
            .load(Ordering::Relaxed)
    };

    // Ten raw readers at once, each holding a full window when it goes away: exactly
    // what their applications read is delivered.
    let raw = (0..10).map(|i| {
        let leave = if i % 2 == 0 {
            Leave::ResetStream
        } else {
            Leave::DropConnection
        };
        let ca = ca.clone();
        let addr = addr(&dev);
        async move { (i, leave, raw_reader(addr, &ca, 20 + 15 * i, leave).await) }
    });
    for (i, leave, ids) in futures::future::join_all(raw).await {
        tally.add(format!("raw reader {i} ({leave:?})"), ids);
    }
    wait_nothing_in_flight(&dev).await;
    let raw_received = tally.received(0);
    tally.compare(0, "raw readers", delivered());
    assert_eq!(
        delivered(),
        raw_received as u64,
        "delivered = what they read"
    );

    // Five grpcio readers SIGKILLed mid-stream.
    let stubs = python_stubs(&python, &dev);
    let before = delivered();
    for i in 0..5u64 {
        let after = Duration::from_millis(200 + 75 * i);
        let one = delivered();
        let ids = python_reader_killed(&python, &dev, &stubs, after).await;
        tally.add(format!("grpcio reader {i} (SIGKILL after {after:?})"), ids);
        wait_nothing_in_flight(&dev).await;
        tally.compare(10 + i as usize, "  it", delivered() - one);
    }
    tally.compare(10, "grpcio readers", delivered() - before);

    let rest: Vec<u64> = c
        .closed(SessionRequestArgs::default(), false)
        .await
        .unwrap()
        .map(|r| r.unwrap().session_id)
        .collect()
        .await;
    tally.add("clean reader".into(), rest);
    let (lost, dup) = tally.lost_and_duplicated();
    println!("lost {}, duplicated {}", lost.len(), dup.len());
    assert!(
        lost.is_empty(),
        "lost {}: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    // Sent twice only what a killed grpcio reader read before its credit came.
    let by_grpcio: std::collections::BTreeSet<u64> = tally.by_reader[10..15]
        .iter()
        .flat_map(|(_, ids)| ids.iter().copied())
        .collect();
    assert!(dup.iter().all(|id| by_grpcio.contains(id)), "{dup:?}");
    assert!(
        dup.len() <= 5 * GRPCIO_CREDIT_LAG,
        "{} duplicated",
        dup.len()
    );
    // The clean reader's stream ended only once its stack had acked the PING that
    // proves it has everything: by then the device has forgotten every record.
    assert!(
        dev.device().feed.is_empty(),
        "{} held",
        dev.device().feed.len()
    );
    dev.stop().await;
}

/// One AckedClosedSessions reader (tonic): receives `n` records, acks the first
/// `acked`, and goes away with the rest received and not acked. Returns what it acked.
async fn acked_reader_leaving(dev: &TestDevice, n: usize, acked: usize) -> Vec<u64> {
    let (acks, ack_stream) = futures::channel::mpsc::unbounded();
    let mut records = dev
        .admin()
        .await
        .acked_closed_sessions(ack_stream)
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let r = tokio::time::timeout(Duration::from_secs(20), records.next())
            .await
            .expect("a record within 20 s")
            .expect("the stream goes on")
            .expect("a record");
        got.push(r.session.unwrap().session_id);
    }
    acks.unbounded_send(ClosedAck {
        session_ids: got[..acked].to_vec(),
    })
    .unwrap();
    // Applied: the feed forgot every acked record.
    let feed = &dev.device().feed;
    wait_for("acks applied", Duration::from_secs(20), || async {
        got[..acked]
            .iter()
            .all(|&id| feed.find(id).is_none())
            .then_some(())
    })
    .await;
    got.truncate(acked);
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_readers_that_go_away_before_acking_lose_nothing() {
    let dev = TestDevice::start(CONFIG).await;
    let mut c = dev.client(ApiVersion::V2).await;
    closed_records(&dev, &mut c, RECORDS).await;
    let mut tally = Tally::default();

    // Ten at once, each dropped with records received and not acked.
    let readers = (0..10).map(|i| {
        let dev = &dev;
        async move {
            (
                i,
                acked_reader_leaving(dev, 300 + 50 * i, 100 + 40 * i).await,
            )
        }
    });
    for (i, ids) in futures::future::join_all(readers).await {
        tally.add(format!("acked reader {i}"), ids);
    }
    wait_nothing_in_flight(&dev).await;
    for i in 0..5 {
        let ids = acked_reader_leaving(&dev, 1000 + 200 * i, 500 + 100 * i).await;
        tally.add(format!("acked reader {}", 10 + i), ids);
        wait_nothing_in_flight(&dev).await;
    }

    // One more acks everything it gets, in batches, until none is left.
    let mut left = RECORDS as usize - tally.by_reader.iter().map(|(_, i)| i.len()).sum::<usize>();
    let mut ids = Vec::new();
    while left > 0 {
        let n = left.min(1000);
        ids.extend(acked_reader_leaving(&dev, n, n).await);
        left -= n;
    }
    tally.add("clean acked reader".into(), ids);
    tally.assert_exactly_once();
    wait_for("the feed is empty", Duration::from_secs(15), || async {
        dev.device().feed.is_empty().then_some(())
    })
    .await;
    dev.stop().await;
}
