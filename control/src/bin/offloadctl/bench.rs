//! `bench add|get|closed`: a load generator that checks every answer.
//!
//! - add: N sessions in AddSession calls of `--batch` sessions over `--streams`
//!   concurrent connections. ops = sessions, latency = per AddSession call. Then Gets
//!   a random sample and checks each is live, reads the device's add-to-live p99
//!   (admin GetLatency "add"), and deletes what it added.
//! - get: adds N sessions (not timed), then N GetSession calls from `--streams`
//!   concurrent callers. ops = Gets, latency = per Get. Deletes what it added.
//! - closed: adds N sessions with idle timeout 1 s, waits until the device holds them
//!   all as closed, then drains them with `--streams` concurrent GetClosedSessions
//!   streams of at most `--batch` records per call. ops = records, latency = per
//!   record (time since the previous record on the same stream, or since the call
//!   started). Checks each id arrives exactly once, closed by timeout.
//!
//! Sessions use ids from `--first-id` on and UDP tuples derived from the id, so runs
//! with different first ids never collide. Any mismatch makes the exit code non-zero.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use control::client::SessionClient;
use control::wire::{
    add_status_name, close_code_name, request_from_spec, request_status_name, state_name,
};
use dataplane::session::{Action, SessionSpec};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use proto::admin::{LatencyRequest, StatsRequest};
use proto::v2::{
    RequestStatus, SessionCloseCode, SessionRequest, SessionRequestArgs, SessionState,
};
use rand::SeedableRng;
use serde_json::{json, Value};
use tokio_stream::StreamExt;

use crate::output::{duration_ns, us};
use crate::progress::{self, count};
use crate::sessions::walk;
use crate::{status_line, Conn};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Add,
    Get,
    Closed,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "\
add:    ops = sessions added; latency per AddSession call of --batch sessions.
        Then checks a random sample is live, reports the device's add-to-live p99.
get:    ops = GetSession calls; latency per call.
closed: ops = closed records; latency per record (time since the previous record
        on the same stream, or since the call started).
Every answer is checked; any mismatch makes the exit code 1. With --json stdout is
one line, the result object (ops, seconds, ops_per_s, p50_us, p99_us, p999_us,
max_us, errors, ...), and the text lines go to stderr. On a terminal (not with
--json) each phase, the clean-up included, shows a progress bar on stderr.")]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    pub kind: Kind,
    /// Sessions to add.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub sessions: u64,
    /// Concurrent AddSession streams / callers / GetClosedSessions streams.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub streams: u64,
    /// Sessions per AddSession call; records per GetClosedSessions call (closed).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    /// First session id of the bench's sessions.
    #[arg(long, default_value_t = 1_000_000_000)]
    pub first_id: u64,
    /// Gets that check sessions are live after `bench add`.
    #[arg(long, default_value_t = 1000)]
    pub sample: u64,
    /// Leave the sessions on the device (add, get).
    #[arg(long)]
    pub keep: bool,
}

/// Counts mismatches and keeps the first few for the report.
#[derive(Default)]
pub struct Errors {
    pub count: u64,
    pub first: Vec<String>,
}

impl Errors {
    pub fn push(&mut self, e: String) {
        self.count += 1;
        if self.first.len() < 10 {
            self.first.push(e);
        }
    }

    fn merge(&mut self, o: Errors) {
        self.count += o.count;
        for e in o.first {
            if self.first.len() < 10 {
                self.first.push(e);
            }
        }
    }
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// The bench's session `id`: UDP from 10.a.b.c (the id's low 24 bits) and a port from
/// the bits above, to 172.31.255.1:9, forwarded, with the given idle timeout.
pub fn session(id: u64, timeout_s: u32) -> SessionRequest {
    let src = Ipv4Addr::new(10, (id >> 16) as u8, (id >> 8) as u8, id as u8);
    let sport = 1024 + ((id >> 24) % 64_000) as u16;
    let mut s = SessionSpec::new(
        id,
        1,
        2,
        17,
        src.into(),
        sport,
        Ipv4Addr::new(172, 31, 255, 1).into(),
        9,
        Action::Forward,
    );
    s.timeout_s = timeout_s;
    request_from_spec(&s)
}

/// What a timed phase measured.
pub struct Phase {
    pub ops: u64,
    pub seconds: f64,
    pub latency: Histogram<u64>,
    pub errors: Errors,
}

/// The result object (the last line with --json).
pub fn result_json(kind: &str, unit: &str, p: &Phase, extra: Value) -> Value {
    let q = |q: f64| us(p.latency.value_at_quantile(q));
    let mut j = json!({
        "bench": kind,
        "ops": p.ops,
        "seconds": (p.seconds * 1e6).round() / 1e6,
        "ops_per_s": if p.seconds > 0.0 { (p.ops as f64 / p.seconds).round() } else { 0.0 },
        "latency_per": unit,
        "p50_us": q(0.5),
        "p99_us": q(0.99),
        "p999_us": q(0.999),
        "max_us": us(p.latency.max()),
        "errors": p.errors.count,
    });
    if let (Value::Object(m), Value::Object(e)) = (&mut j, extra) {
        m.extend(e);
    }
    j
}

/// Opens one connection per stream.
async fn clients(conn: &Conn, n: u64) -> Result<Vec<SessionClient>, String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(conn.sessions().await?);
    }
    Ok(out)
}

/// Adds `ids` in calls of `batch` over one task per client, counting them on `bar`
/// (cleared at the end). Every session must be accepted.
async fn add_all(
    clients: Vec<SessionClient>,
    ids: &[u64],
    batch: usize,
    timeout_s: u32,
    bar: ProgressBar,
) -> Phase {
    let mut chunks: Vec<Vec<SessionRequest>> = ids
        .chunks(batch)
        .map(|c| c.iter().map(|id| session(*id, timeout_s)).collect())
        .collect();
    chunks.reverse();
    let queue = Arc::new(Mutex::new(chunks));
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let (queue, bar) = (queue.clone(), bar.clone());
            tokio::spawn(async move {
                let (mut h, mut errors, mut ops) = (histogram(), Errors::default(), 0u64);
                loop {
                    let Some(chunk) = queue.lock().unwrap().pop() else {
                        break;
                    };
                    let n = chunk.len() as u64;
                    let t0 = Instant::now();
                    let r = c.add(chunk).await;
                    let _ = h.record(t0.elapsed().as_nanos() as u64);
                    bar.inc(n);
                    match r {
                        Ok(r) => {
                            ops += n - r.response_error.len() as u64;
                            for e in &r.response_error {
                                errors.push(format!(
                                    "add {}: {}",
                                    e.session_id,
                                    add_status_name(e.error_status)
                                ));
                            }
                            if r.response_error.is_empty() && r.request_status != 0 {
                                errors.push(format!(
                                    "AddSession answered {} without naming a session",
                                    add_status_name(r.request_status)
                                ));
                            }
                        }
                        Err(s) => {
                            for _ in 0..n {
                                errors.push(status_line("AddSession failed", &s));
                            }
                        }
                    }
                }
                (h, errors, ops)
            })
        })
        .collect();
    let p = join(tasks, start).await;
    bar.finish_and_clear();
    p
}

async fn join(
    tasks: Vec<tokio::task::JoinHandle<(Histogram<u64>, Errors, u64)>>,
    start: Instant,
) -> Phase {
    let mut p = Phase {
        ops: 0,
        seconds: 0.0,
        latency: histogram(),
        errors: Errors::default(),
    };
    for t in tasks {
        match t.await {
            Ok((h, e, ops)) => {
                let _ = p.latency.add(&h);
                p.errors.merge(e);
                p.ops += ops;
            }
            Err(e) => p.errors.push(format!("a bench task failed: {e}")),
        }
    }
    p.seconds = start.elapsed().as_secs_f64();
    p
}

/// Gets (or deletes) every id, spread over one task per client, counting them on
/// `bar` (cleared at the end). Each answer must be the session asked for; `live` also
/// wants it ESTABLISHED.
async fn get_all(
    clients: Vec<SessionClient>,
    ids: Arc<Vec<u64>>,
    delete: bool,
    live: bool,
    bar: ProgressBar,
) -> Phase {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let (ids, next, bar) = (ids.clone(), next.clone(), bar.clone());
            tokio::spawn(async move {
                let (mut h, mut errors, mut ops) = (histogram(), Errors::default(), 0u64);
                while let Some(&id) = ids.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let t0 = Instant::now();
                    let r = if delete {
                        c.delete(id).await
                    } else {
                        c.get(id).await
                    };
                    let _ = h.record(t0.elapsed().as_nanos() as u64);
                    bar.inc(1);
                    match check_session(id, r, live) {
                        Ok(()) => ops += 1,
                        Err(e) => errors.push(e),
                    }
                }
                (h, errors, ops)
            })
        })
        .collect();
    let p = join(tasks, start).await;
    bar.finish_and_clear();
    p
}

pub fn check_session(
    id: u64,
    r: Result<proto::v2::SessionResponse, tonic::Status>,
    live: bool,
) -> Result<(), String> {
    let r = r.map_err(|s| status_line(&format!("session {id}"), &s))?;
    if r.request_status != RequestStatus::Accepted as i32 {
        return Err(format!(
            "session {id}: {}",
            request_status_name(r.request_status)
        ));
    }
    if r.session_id != id {
        return Err(format!("asked for session {id}, got {}", r.session_id));
    }
    if live && r.session_state != SessionState::Established as i32 {
        return Err(format!("session {id} is {}", state_name(r.session_state)));
    }
    Ok(())
}

/// Prints human lines (to stderr under --json, so the JSON stays the last line).
fn say(conn: &Conn, s: String) {
    if conn.json {
        eprintln!("{s}");
    } else {
        out!("{s}");
    }
}

fn latency_line(what: &str, h: &Histogram<u64>) -> String {
    let q = |q| duration_ns(h.value_at_quantile(q) as f64);
    format!(
        "  per {what}: p50 {}  p99 {}  p99.9 {}  max {}",
        q(0.5),
        q(0.99),
        q(0.999),
        duration_ns(h.max() as f64)
    )
}

pub async fn run(conn: &Conn, a: BenchArgs) -> Result<(), String> {
    let ids: Vec<u64> = (a.first_id..a.first_id.saturating_add(a.sessions)).collect();
    let ids = Arc::new(ids);
    let (result, mut errors) = match a.kind {
        Kind::Add => bench_add(conn, &a, ids.clone()).await?,
        Kind::Get => bench_get(conn, &a, ids.clone()).await?,
        Kind::Closed => bench_closed(conn, &a, ids.clone()).await?,
    };
    if !a.keep && a.kind != Kind::Closed {
        // Cleanup is not measured: many calls in flight on each connection.
        let c = clients(conn, a.streams).await?;
        let many: Vec<SessionClient> = (0..c.len() * 16).map(|i| c[i % c.len()].clone()).collect();
        let n = ids.len() as u64;
        let bar = progress::bar(conn.json, n, format!("removing {} sessions", count(n)));
        let d = get_all(many, ids.clone(), true, false, bar).await;
        say(
            conn,
            format!("  deleted {} sessions in {:.3} s", d.ops, d.seconds),
        );
        errors.merge(d.errors);
    }
    for e in &errors.first {
        eprintln!("offloadctl: bench: {e}");
    }
    let mut result = result;
    result["errors"] = json!(errors.count);
    if conn.json {
        out!("{result}");
    } else {
        out!("  errors: {}", errors.count);
    }
    if errors.count > 0 {
        return Err(format!("bench {:?}: {} errors", a.kind, errors.count).to_lowercase());
    }
    Ok(())
}

/// The bar of an add phase.
fn adding(conn: &Conn, ids: &[u64]) -> ProgressBar {
    let n = ids.len() as u64;
    progress::bar(conn.json, n, format!("adding {} sessions", count(n)))
}

fn add_report(conn: &Conn, a: &BenchArgs, p: &Phase) {
    say(
        conn,
        format!(
            "  added {} of {} sessions in {:.3} s: {:.0} sessions/s ({} per call, {} streams)",
            p.ops,
            a.sessions,
            p.seconds,
            p.ops as f64 / p.seconds.max(1e-9),
            a.batch,
            a.streams
        ),
    );
}

async fn bench_add(
    conn: &Conn,
    a: &BenchArgs,
    ids: Arc<Vec<u64>>,
) -> Result<(Value, Errors), String> {
    say(conn, format!("bench add: {} sessions", a.sessions));
    // The device's histogram counts since it started: this run is after - before.
    let before = device_add_histogram(conn).await;
    let c = clients(conn, a.streams).await?;
    let mut p = add_all(c, &ids, a.batch as usize, 600, adding(conn, &ids)).await;
    add_report(conn, a, &p);
    say(conn, latency_line("AddSession call", &p.latency));

    // A random sample must be live.
    let mut rng = rand::rngs::SmallRng::seed_from_u64(a.first_id);
    let k = (a.sample as usize).min(ids.len());
    let sample: Vec<u64> = rand::seq::index::sample(&mut rng, ids.len(), k)
        .into_iter()
        .map(|i| ids[i])
        .collect();
    let c = clients(conn, a.streams).await?;
    let bar = progress::bar(
        conn.json,
        k as u64,
        format!("checking {} sessions are live", count(k as u64)),
    );
    let s = get_all(c, Arc::new(sample), false, true, bar).await;
    say(
        conn,
        format!("  sample: {} of {k} Gets found the session live", s.ops),
    );
    let sample_errors = s.errors.count;
    p.errors.merge(s.errors);

    let add_p99 = match (before, device_add_histogram(conn).await) {
        (Ok(b), Ok(mut after)) => after
            .subtract(&b)
            .map(|_| after.value_at_quantile(0.99))
            .map_err(|e| format!("histograms do not subtract: {e:?}")),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    match &add_p99 {
        Ok(v) => say(
            conn,
            format!("  device add-to-live p99: {}", duration_ns(*v as f64)),
        ),
        Err(e) => say(conn, format!("  device add-to-live p99: unavailable ({e})")),
    }
    let extra = json!({
        "sessions": a.sessions, "streams": a.streams, "batch": a.batch,
        "calls": p.latency.len(),
        "sample_checked": k, "sample_errors": sample_errors,
        "add_to_live_p99_us": add_p99.ok().map(us),
    });
    Ok((result_json("add", "AddSession call", &p, extra), p.errors))
}

/// The device's "add" histogram (AddSession received -> live in the worker, ns).
async fn device_add_histogram(conn: &Conn) -> Result<hdrhistogram::Histogram<u64>, String> {
    let mut admin = control::client::admin(conn.channel().await?);
    let l = admin
        .get_latency(LatencyRequest {})
        .await
        .map_err(|s| status_line("GetLatency", &s))?
        .into_inner();
    let h = l
        .histograms
        .iter()
        .find(|h| h.name == "add")
        .ok_or("no \"add\" histogram")?;
    crate::latency::decode(&h.name, &h.hdr_v2)
}

async fn bench_get(
    conn: &Conn,
    a: &BenchArgs,
    ids: Arc<Vec<u64>>,
) -> Result<(Value, Errors), String> {
    say(conn, format!("bench get: {} sessions", a.sessions));
    let c = clients(conn, a.streams).await?;
    let added = add_all(c, &ids, a.batch as usize, 600, adding(conn, &ids)).await;
    add_report(conn, a, &added);
    let c = clients(conn, a.streams).await?;
    let n = ids.len() as u64;
    let bar = progress::bar(conn.json, n, format!("getting {} sessions", count(n)));
    let mut p = get_all(c, ids, false, false, bar).await;
    say(
        conn,
        format!(
            "  {} Gets in {:.3} s: {:.0} Gets/s ({} callers)",
            p.ops,
            p.seconds,
            p.ops as f64 / p.seconds.max(1e-9),
            a.streams
        ),
    );
    say(conn, latency_line("Get", &p.latency));
    let extra = json!({
        "sessions": a.sessions, "streams": a.streams,
        "add_seconds": added.seconds, "add_errors": added.errors.count,
    });
    p.errors.merge(added.errors);
    Ok((result_json("get", "GetSession call", &p, extra), p.errors))
}

async fn bench_closed(
    conn: &Conn,
    a: &BenchArgs,
    ids: Arc<Vec<u64>>,
) -> Result<(Value, Errors), String> {
    say(
        conn,
        format!(
            "bench closed: {} sessions with idle timeout 1 s",
            a.sessions
        ),
    );
    let ch = conn.channel().await?;
    let mut admin = control::client::admin(ch.clone());
    let pending = |s: Result<tonic::Response<proto::admin::Stats>, tonic::Status>| {
        s.ok().map(|s| s.into_inner().closed_pending)
    };
    let base = pending(admin.get_stats(StatsRequest {}).await);
    let c = clients(conn, a.streams).await?;
    let added = add_all(c, &ids, a.batch as usize, 1, adding(conn, &ids)).await;
    add_report(conn, a, &added);

    // Wait until all are closed: the device's count of pending closed records, checked
    // now and then against the sessions' own states.
    let t0 = Instant::now();
    let deadline = Duration::from_secs(30 + a.sessions / 10_000);
    let mut lister = conn.session_client(ch);
    let (lo, hi) = (a.first_id, a.first_id.saturating_add(a.sessions));
    let mut polls = 0u64;
    let bar = progress::bar(
        conn.json,
        added.ops,
        format!("waiting for {} sessions to close", count(added.ops)),
    );
    loop {
        let p = pending(admin.get_stats(StatsRequest {}).await);
        if let (Some(b), Some(p)) = (base, p) {
            bar.set_position(p.saturating_sub(b).min(added.ops));
            if p >= b + added.ops {
                break;
            }
        }
        if polls % 20 == 19 || base.is_none() {
            let all = walk(&mut lister, 1000, lo.checked_sub(1), None)
                .await
                .map_err(|s| status_line("GetAllSessions failed", &s))?;
            let closed = all
                .iter()
                .filter(|s| (lo..hi).contains(&s.session_id))
                .filter(|s| s.session_state == SessionState::Closed as i32)
                .count() as u64;
            bar.set_position(closed.min(added.ops));
            if closed >= added.ops {
                break;
            }
            if t0.elapsed() > deadline {
                return Err(format!(
                    "only {closed} of {} sessions closed after {:.0} s",
                    added.ops,
                    t0.elapsed().as_secs_f64()
                ));
            }
        }
        polls += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish_and_clear();
    let wait = t0.elapsed().as_secs_f64();
    say(conn, format!("  all closed after {wait:.3} s"));

    // Drain with concurrent streams.
    let start = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let cap = a.batch.min(u64::from(u32::MAX)) as u32;
    let bar = progress::bar(
        conn.json,
        added.ops,
        format!("draining {} closed records", count(added.ops)),
    );
    let tasks: Vec<_> = clients(conn, a.streams)
        .await?
        .into_iter()
        .map(|c| {
            let (received, bar) = (received.clone(), bar.clone());
            tokio::spawn(drain(c, cap, received, added.ops, bar))
        })
        .collect();
    let mut p = Phase {
        ops: 0,
        seconds: 0.0,
        latency: histogram(),
        errors: added.errors,
    };
    let mut all = Vec::new();
    for t in tasks {
        match t.await {
            Ok((h, e, got)) => {
                let _ = p.latency.add(&h);
                p.errors.merge(e);
                all.extend(got);
            }
            Err(e) => p.errors.push(format!("a bench task failed: {e}")),
        }
    }
    p.seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let (ops, foreign) = check_closed(&all, lo, hi, &mut p.errors);
    p.ops = ops;
    say(
        conn,
        format!(
            "  {} closed records in {:.3} s: {:.0} records/s ({} streams, at most {} per call)",
            p.ops,
            p.seconds,
            p.ops as f64 / p.seconds.max(1e-9),
            a.streams,
            a.batch
        ),
    );
    if foreign > 0 {
        say(
            conn,
            format!("  also drained {foreign} closed records of other sessions"),
        );
    }
    say(conn, latency_line("record", &p.latency));
    let extra = json!({
        "sessions": a.sessions, "streams": a.streams, "batch": a.batch,
        "add_seconds": added.seconds, "wait_seconds": wait, "foreign": foreign,
    });
    Ok((result_json("closed", "record", &p, extra), p.errors))
}

/// One draining stream: GetClosedSessions calls of at most `cap` records until all
/// `expected` records (counted over every stream) are in, or the device has had
/// nothing for a while (records may still be on their way from the workers). Each
/// record moves `bar` on.
async fn drain(
    mut c: SessionClient,
    cap: u32,
    received: Arc<AtomicU64>,
    expected: u64,
    bar: ProgressBar,
) -> (Histogram<u64>, Errors, Vec<(u64, i32, i32)>) {
    let mut h = histogram();
    let mut got = Vec::new();
    let mut errors = Errors::default();
    let mut empty_calls = 0;
    while received.load(Ordering::Relaxed) < expected && errors.count == 0 {
        let args = SessionRequestArgs {
            page_size: cap,
            ..Default::default()
        };
        let mut t = Instant::now();
        let mut n = 0;
        match c.closed(args, false).await {
            Ok(mut s) => {
                while let Some(r) = s.next().await {
                    match r {
                        Ok(r) => {
                            let _ = h.record(t.elapsed().as_nanos() as u64);
                            t = Instant::now();
                            n += 1;
                            bar.inc(1);
                            got.push((r.session_id, r.session_close_code, r.session_state));
                        }
                        Err(s) => errors.push(status_line("GetClosedSessions stream", &s)),
                    }
                }
            }
            Err(s) => errors.push(status_line("GetClosedSessions failed", &s)),
        }
        received.fetch_add(n, Ordering::Relaxed);
        if n > 0 {
            empty_calls = 0;
        } else if empty_calls == 50 {
            break;
        } else {
            empty_calls += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    (h, errors, got)
}

/// Every id in lo..hi exactly once, closed by timeout; returns (ours, foreign).
pub fn check_closed(got: &[(u64, i32, i32)], lo: u64, hi: u64, errors: &mut Errors) -> (u64, u64) {
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut foreign = 0;
    for &(id, code, state) in got {
        if !(lo..hi).contains(&id) {
            foreign += 1;
            continue;
        }
        *seen.entry(id).or_default() += 1;
        if code != SessionCloseCode::Timeout as i32 {
            errors.push(format!(
                "session {id} closed with {}",
                close_code_name(code)
            ));
        }
        if state != SessionState::Closed as i32 {
            errors.push(format!("closed record of {id} says {}", state_name(state)));
        }
    }
    for (id, n) in &seen {
        if *n > 1 {
            errors.push(format!("session {id} reported {n} times"));
        }
    }
    let missing = (hi - lo) - seen.len() as u64;
    if missing > 0 {
        let first = (lo..hi).find(|id| !seen.contains_key(id)).unwrap_or(lo);
        errors.push(format!(
            "{missing} sessions never reported closed (first: {first})"
        ));
    }
    (seen.len() as u64, foreign)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_sessions_are_valid_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for id in (1_000_000_000..1_000_000_000 + 300_000).step_by(7) {
            let r = session(id, 1);
            let s = control::wire::spec_from_request(&r).unwrap();
            assert_eq!((s.id, s.timeout_s), (id, 1));
            assert!(seen.insert((s.src, s.sport)));
        }
    }

    #[test]
    fn closed_records_are_checked_exactly_once() {
        let ok = |id| {
            (
                id,
                SessionCloseCode::Timeout as i32,
                SessionState::Closed as i32,
            )
        };
        let mut e = Errors::default();
        assert_eq!(
            check_closed(&[ok(10), ok(11), ok(99)], 10, 12, &mut e),
            (2, 1)
        );
        assert_eq!(e.count, 0);
        let mut e = Errors::default();
        check_closed(&[ok(10), ok(10), (11, 1, 3)], 10, 13, &mut e);
        assert_eq!(e.count, 3, "{:?}", e.first);
        assert!(e.first.iter().any(|m| m.contains("reported 2 times")));
        assert!(e.first.iter().any(|m| m.contains("_FINACK")));
        assert!(e
            .first
            .iter()
            .any(|m| m.contains("1 sessions never reported closed (first: 12)")));
    }

    #[test]
    fn result_has_the_promised_fields() {
        let mut h = histogram();
        for v in 1..=100 {
            h.record(v * 1000).unwrap();
        }
        let p = Phase {
            ops: 500,
            seconds: 0.25,
            latency: h,
            errors: Errors::default(),
        };
        let j = result_json("get", "GetSession call", &p, json!({"extra": 1}));
        for k in [
            "ops",
            "seconds",
            "ops_per_s",
            "p50_us",
            "p99_us",
            "p999_us",
            "errors",
            "extra",
        ] {
            assert!(j.get(k).is_some(), "{k} in {j}");
        }
        assert_eq!(j["ops_per_s"], 2000.0);
        assert_eq!(j["p50_us"], 50.0);
        assert_eq!(j["p99_us"], 99.0);
    }

    #[test]
    fn get_answers_are_checked() {
        let ok = proto::v2::SessionResponse {
            session_id: 5,
            ..Default::default()
        };
        assert!(check_session(5, Ok(ok), true).is_ok());
        assert!(check_session(6, Ok(ok), false)
            .unwrap_err()
            .contains("got 5"));
        let closed = proto::v2::SessionResponse {
            session_state: 3,
            ..ok
        };
        assert!(check_session(5, Ok(closed), true)
            .unwrap_err()
            .contains("_CLOSED"));
        assert!(check_session(5, Err(tonic::Status::not_found("x")), false).is_err());
    }
}
