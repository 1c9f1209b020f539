//! `fw-sim`: a firewall in miniature, the OpenOffload demo. It offloads batches of new
//! sessions (IPv4 and IPv6, TCP and UDP, every action, short idle timeouts), repeats a
//! few live ones on purpose to show `_SESSION_ALREADY_EXISTS`, collects closed sessions
//! with GetClosedSessions, and offloads the closed ones again under new ids in the next
//! loop. It keeps its own table of what it believes is offloaded. On a terminal a
//! status line under the output keeps the running totals and rates (progress.rs).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use control::client::SessionClient;
use control::wire::{add_status_name, close_code_name, request_from_spec};
use dataplane::session::{bytes_addr, Action, SessionSpec};
use indicatif::ProgressBar;
use proto::v2::{AddSessionStatus, SessionRequestArgs};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio_stream::StreamExt;

use crate::output::short;
use crate::progress::{self, count};
use crate::sessions::{add_outcome, walk};
use crate::watch::positive;
use crate::{status_line, Conn};

#[derive(clap::Args, Debug)]
pub struct FwSimArgs {
    /// Loops to run (0: until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub loops: u64,
    /// New sessions offered per loop.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Seconds between loops.
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    pub interval: f64,
    /// Idle timeouts are drawn from 1..=this many seconds.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_timeout: u32,
    #[arg(long, default_value_t = 1)]
    pub in_lif: u32,
    #[arg(long, default_value_t = 2)]
    pub out_lif: u32,
    /// Seed of the session generator (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// What one loop did.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct LoopCount {
    pub offered: u64,
    pub accepted: u64,
    pub table_full: u64,
    pub exists: u64,
    pub rejected: u64,
    pub closed: u64,
}

struct Sim {
    rng: SmallRng,
    next_id: u64,
    /// What the simulator believes is on the device; None for sessions it found there
    /// at start (their tuple is unknown).
    live: BTreeMap<u64, Option<SessionSpec>>,
    /// Closed or refused sessions to offer again, under a new id, in the next loop.
    again: Vec<SessionSpec>,
    a: FwSimArgs,
}

const DPORTS_TCP: [u16; 5] = [22, 80, 443, 8080, 3306];
const DPORTS_UDP: [u16; 3] = [53, 123, 4789];

impl Sim {
    fn new_session(&mut self) -> SessionSpec {
        let r = &mut self.rng;
        let tcp = r.gen_bool(0.6);
        let (src, dst): (IpAddr, IpAddr) = if r.gen_bool(0.3) {
            (
                Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, r.gen(), r.gen()).into(),
                Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, r.gen_range(1..256)).into(),
            )
        } else {
            (
                Ipv4Addr::new(10, r.gen(), r.gen(), r.gen_range(1..255)).into(),
                Ipv4Addr::new(192, 0, 2, r.gen_range(1..255)).into(),
            )
        };
        let dport = if tcp {
            DPORTS_TCP[r.gen_range(0..DPORTS_TCP.len())]
        } else {
            DPORTS_UDP[r.gen_range(0..DPORTS_UDP.len())]
        };
        let action = match r.gen_range(0..10) {
            0..=4 => Action::Forward,
            5..=6 => Action::Drop,
            7 => Action::Mirror,
            _ => Action::Snoop,
        };
        let mut s = SessionSpec::new(
            0,
            self.a.in_lif,
            self.a.out_lif,
            if tcp { 6 } else { 17 },
            src,
            r.gen_range(1024..=65535),
            dst,
            dport,
            action,
        );
        s.timeout_s = r.gen_range(1..=self.a.max_timeout);
        s
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// This loop's offers: sessions to offer again first, then new ones, then a few
    /// repeats of live sessions (same id and tuple: the device must say "exists").
    fn batch(&mut self) -> Vec<(SessionSpec, bool)> {
        let mut out = Vec::new();
        let n = self.again.len().min(self.a.batch);
        let again: Vec<SessionSpec> = self.again.drain(..n).collect();
        for mut s in again {
            s.id = self.take_id();
            out.push((s, false));
        }
        while out.len() < self.a.batch {
            let mut s = self.new_session();
            s.id = self.take_id();
            out.push((s, false));
        }
        let known: Vec<&SessionSpec> = self.live.values().flatten().collect();
        if !known.is_empty() {
            for _ in 0..(self.a.batch / 8).max(1) {
                let s = known[self.rng.gen_range(0..known.len())].clone();
                out.push((s, true));
            }
        }
        out
    }
}

pub fn describe(s: &SessionSpec) -> String {
    let ep = |a: &[u8; 16], p: u16| match bytes_addr(s.v6, a) {
        IpAddr::V4(a) => format!("{a}:{p}"),
        IpAddr::V6(a) => format!("[{a}]:{p}"),
    };
    format!(
        "{} {} -> {} {:?} idle {}s",
        if s.proto == 6 { "tcp" } else { "udp" },
        ep(&s.src, s.sport),
        ep(&s.dst, s.dport),
        s.action,
        s.timeout_s
    )
    .to_lowercase()
}

/// A status for people: "accepted", "table full", "already exists", "rejected".
pub fn outcome_text(status: i32) -> String {
    short(add_status_name(status))
        .trim_start_matches("SESSION_")
        .replace('_', " ")
        .to_lowercase()
}

/// A line on stdout, with the status line (if shown) moved out of its way.
fn print(status: &ProgressBar, line: String) {
    status.suspend(|| out!("{line}"));
}

/// The status line: the loop, the running totals and their rates, e.g.
/// "loop 3/10: 21 offloaded, 14 live, 7 closed; 7.0 offloads/s, 2.3 closes/s".
fn status_text(i: u64, loops: u64, total: &LoopCount, live: usize, seconds: f64) -> String {
    let of = if loops == 0 {
        String::new()
    } else {
        format!("/{loops}")
    };
    let rate = |n: u64| n as f64 / seconds.max(1e-9);
    format!(
        "loop {i}{of}: {} offloaded, {} live, {} closed; {:.1} offloads/s, {:.1} closes/s",
        count(total.accepted),
        count(live as u64),
        count(total.closed),
        rate(total.accepted),
        rate(total.closed)
    )
}

async fn one_loop(
    sim: &mut Sim,
    c: &mut SessionClient,
    json: bool,
    bar: &ProgressBar,
) -> Result<LoopCount, String> {
    let mut n = LoopCount::default();
    let batch = sim.batch();
    let requests = batch.iter().map(|(s, _)| request_from_spec(s)).collect();
    let r = c
        .add(requests)
        .await
        .map_err(|s| status_line("AddSession failed", &s))?;
    for (i, (spec, repeat)) in batch.into_iter().enumerate() {
        n.offered += 1;
        let status = add_outcome(&r, i, spec.id);
        match AddSessionStatus::try_from(status) {
            Ok(AddSessionStatus::SessionAccepted) => {
                n.accepted += 1;
                sim.live.insert(spec.id, Some(spec.clone()));
            }
            Ok(AddSessionStatus::SessionAlreadyExists) => n.exists += 1,
            Ok(AddSessionStatus::SessionTableFull) => {
                n.table_full += 1;
                sim.again.push(spec.clone());
            }
            _ => n.rejected += 1,
        }
        if json {
            let j = json!({"event": "add", "session_id": spec.id, "repeat": repeat,
                           "session": describe(&spec), "status": add_status_name(status)});
            out!("{j}");
        } else {
            let what = if repeat { " (repeat)" } else { "" };
            let line = format!(
                "  add {:>6} {}{what}: {}",
                spec.id,
                describe(&spec),
                outcome_text(status)
            );
            print(bar, line);
        }
    }

    let args = SessionRequestArgs::default();
    let err = |s: tonic::Status| status_line("GetClosedSessions failed", &s);
    let mut stream = c.closed(args, false).await.map_err(err)?;
    while let Some(rec) = stream.next().await {
        let rec = rec.map_err(err)?;
        n.closed += 1;
        let mine = sim.live.remove(&rec.session_id);
        if let Some(Some(spec)) = &mine {
            sim.again.push(spec.clone());
        }
        let cause = close_code_name(rec.session_close_code);
        if json {
            let j = json!({"event": "closed", "session_id": rec.session_id, "close_code": cause,
                           "known": mine.is_some(), "in_packets": rec.in_packets, "in_bytes": rec.in_bytes,
                           "out_packets": rec.out_packets, "out_bytes": rec.out_bytes});
            out!("{j}");
        } else {
            let line = format!(
                "  closed {:>3} {}: in {} pkts {} bytes, out {} pkts {} bytes{}",
                rec.session_id,
                short(cause),
                rec.in_packets,
                rec.in_bytes,
                rec.out_packets,
                rec.out_bytes,
                if mine.is_some() {
                    ""
                } else {
                    " (not in the simulator's table)"
                }
            );
            print(bar, line);
        }
    }
    Ok(n)
}

pub async fn run(conn: &Conn, a: FwSimArgs) -> Result<(), String> {
    let mut c = conn.sessions().await?;
    let existing = walk(&mut c, 1000, None, None)
        .await
        .map_err(|s| status_line("GetAllSessions failed", &s))?;
    let seed = a.seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        t.map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    let mut sim = Sim {
        rng: SmallRng::seed_from_u64(seed),
        next_id: existing.last().map_or(1, |s| s.session_id.wrapping_add(1)),
        live: existing.iter().map(|s| (s.session_id, None)).collect(),
        again: Vec::new(),
        a,
    };
    if !conn.json {
        out!(
            "fw-sim: {} sessions already offloaded; new ids start at {}",
            existing.len(),
            sim.next_id
        );
    }
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut total = LoopCount::default();
    let mut i = 0;
    let status = progress::spinner(conn.json, "loop 1".into());
    let start = Instant::now();
    while sim.a.loops == 0 || i < sim.a.loops {
        i += 1;
        if !conn.json {
            print(&status, format!("loop {i}"));
        }
        let n = one_loop(&mut sim, &mut c, conn.json, &status).await?;
        let live = sim.live.len();
        if conn.json {
            let j = json!({"event": "loop", "loop": i, "offered": n.offered, "accepted": n.accepted,
                           "table_full": n.table_full, "already_exists": n.exists,
                           "rejected": n.rejected, "closed": n.closed, "live": live});
            out!("{j}");
        } else {
            print(&status, format!(
                "loop {i}: offered {}, accepted {}, table full {}, already exists {}, rejected {}; closed {}; live {live}",
                n.offered, n.accepted, n.table_full, n.exists, n.rejected, n.closed
            ));
        }
        total.offered += n.offered;
        total.accepted += n.accepted;
        total.table_full += n.table_full;
        total.exists += n.exists;
        total.rejected += n.rejected;
        total.closed += n.closed;
        let seconds = start.elapsed().as_secs_f64();
        status.set_message(status_text(i, sim.a.loops, &total, live, seconds));
        if sim.a.loops != 0 && i == sim.a.loops {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(sim.a.interval)) => {}
            _ = &mut ctrl_c => break,
        }
    }
    status.finish_and_clear();
    if !conn.json {
        out!(
            "total after {i} loops: offered {}, accepted {}, table full {}, already exists {}, rejected {}; closed {}; live {}",
            total.offered, total.accepted, total.table_full, total.exists, total.rejected,
            total.closed, sim.live.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(batch: usize) -> Sim {
        Sim {
            rng: SmallRng::seed_from_u64(7),
            next_id: 100,
            live: BTreeMap::new(),
            again: Vec::new(),
            a: FwSimArgs {
                loops: 1,
                batch,
                interval: 1.0,
                max_timeout: 5,
                in_lif: 1,
                out_lif: 2,
                seed: None,
            },
        }
    }

    #[test]
    fn batches_mix_families_protocols_and_repeat_live_sessions() {
        let mut s = sim(64);
        let b = s.batch();
        assert_eq!(b.len(), 64, "nothing live yet: no repeats");
        let ids: Vec<u64> = b.iter().map(|x| x.0.id).collect();
        assert_eq!(ids, (100..164).collect::<Vec<_>>());
        assert!(b.iter().any(|x| x.0.v6) && b.iter().any(|x| !x.0.v6));
        assert!(b.iter().any(|x| x.0.proto == 6) && b.iter().any(|x| x.0.proto == 17));
        assert!(b.iter().all(|x| (1..=5).contains(&x.0.timeout_s)));
        // Every generated request is valid on the wire.
        for (spec, _) in &b {
            control::wire::spec_from_request(&request_from_spec(spec)).unwrap();
        }
        s.live.insert(100, Some(b[0].0.clone()));
        s.again.push(b[1].0.clone());
        let b2 = s.batch();
        assert_eq!(b2.len(), 64 + 8);
        assert_eq!(b2[0].0.id, 164, "offered again under a new id");
        assert_eq!((b2[0].0.sport, b2[0].0.dst), (b[1].0.sport, b[1].0.dst));
        assert!(b2[64..].iter().all(|x| x.1 && x.0.id == 100));
    }

    #[test]
    fn texts() {
        assert_eq!(outcome_text(0), "accepted");
        assert_eq!(outcome_text(2), "table full");
        assert_eq!(outcome_text(4), "already exists");
        let mut s = SessionSpec::new(
            1,
            1,
            2,
            17,
            "2001:db8::1".parse().unwrap(),
            5000,
            "2001:db8::2".parse().unwrap(),
            53,
            Action::Snoop,
        );
        s.timeout_s = 3;
        assert_eq!(
            describe(&s),
            "udp [2001:db8::1]:5000 -> [2001:db8::2]:53 snoop idle 3s"
        );
    }
}
