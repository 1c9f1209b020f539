//! `watch`: a refreshing full-screen view of the device and its sessions, like top.
//! Each frame reads the device's stats and a page of sessions (GetAllSessions, cursor
//! style); packet rates are the counter differences between two frames.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proto::admin::{Stats, StatsRequest};
use proto::v2::SessionResponse;

use crate::output::{short, Table, SESSION_HEADER};
use crate::sessions::walk;
use crate::stats::{counter, uptime};
use crate::{status_line, Conn};
use control::wire::{close_code_name, state_name};

#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    pub interval: f64,
    /// Print one frame without terminal control codes, then exit.
    #[arg(long)]
    pub once: bool,
    /// Sessions shown per frame.
    #[arg(long, default_value_t = 40)]
    pub rows: usize,
    /// Show sessions with ids above this one [default: from the first].
    #[arg(long)]
    pub start: Option<u64>,
}

pub fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

/// What the previous frame saw, for rates.
#[derive(Default)]
pub struct Previous {
    pub at: Option<Instant>,
    pub rx: u64,
    pub tx: u64,
    pub packets: HashMap<u64, (u64, u64)>,
}

fn rate(now: u64, before: Option<u64>, dt: Option<f64>) -> String {
    match (before, dt) {
        (Some(b), Some(dt)) if dt > 0.0 => format!("{:.0}", now.saturating_sub(b) as f64 / dt),
        _ => "-".into(),
    }
}

/// One frame as text. `dt` is the time since the previous frame (None on the first).
pub fn frame(
    stats: &Result<Stats, String>,
    sessions: &[SessionResponse],
    prev: &Previous,
    dt: Option<f64>,
) -> String {
    let mut out = String::new();
    match stats {
        Ok(s) => {
            let tx: u64 = s.port_stats.iter().map(|p| p.tx).sum();
            let rx = counter(s, "rx");
            let prev_rx = prev.at.map(|_| prev.rx);
            let prev_tx = prev.at.map(|_| prev.tx);
            out.push_str(&format!(
                "offloadd {}  up {}  workers {}\n\
                 sessions {} of {}  closed waiting {}\n\
                 rx {} ({} pkt/s)  tx {} ({} pkt/s)  hits {}  misses {}\n\
                 adds {}  table full {}  closed: finack {}  rst {}  timeout {}  deleted {}\n",
                s.version,
                uptime(s.uptime_seconds),
                s.workers,
                s.sessions,
                s.max_sessions,
                s.closed_pending,
                rx,
                rate(rx, prev_rx, dt),
                tx,
                rate(tx, prev_tx, dt),
                counter(s, "hits"),
                counter(s, "misses"),
                counter(s, "adds"),
                counter(s, "add_full"),
                counter(s, "closed_finack"),
                counter(s, "closed_rst"),
                counter(s, "closed_timeout"),
                counter(s, "deletes"),
            ));
        }
        Err(e) => out.push_str(&format!("device stats unavailable: {e}\n")),
    }
    out.push('\n');
    // The list's columns up to the byte counts, then the rates.
    let mut header = SESSION_HEADER[..7].to_vec();
    header.extend(["IN_PPS", "OUT_PPS"]);
    let mut t = Table::new(&header);
    for s in sessions {
        let before = prev.packets.get(&s.session_id);
        t.row(vec![
            s.session_id.to_string(),
            short(state_name(s.session_state)).into(),
            short(close_code_name(s.session_close_code)).into(),
            s.in_packets.to_string(),
            s.in_bytes.to_string(),
            s.out_packets.to_string(),
            s.out_bytes.to_string(),
            rate(s.in_packets, before.map(|b| b.0), dt),
            rate(s.out_packets, before.map(|b| b.1), dt),
        ]);
    }
    out.push_str(&t.render());
    out.push_str(&format!("\n{} sessions shown\n", sessions.len()));
    out
}

pub async fn run(conn: &Conn, a: WatchArgs) -> Result<(), String> {
    let ch = conn.channel().await?;
    let mut sessions = conn.session_client(ch.clone());
    let mut admin = control::client::admin(ch);
    let mut prev = Previous::default();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let stats = admin
            .get_stats(StatsRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| status_line("GetStats failed", &s));
        let list = walk(
            &mut sessions,
            a.rows.clamp(1, 1000) as u32,
            a.start,
            Some(a.rows),
        )
        .await
        .map_err(|s| status_line("GetAllSessions failed", &s))?;
        let now = Instant::now();
        let dt = prev.at.map(|t| now.duration_since(t).as_secs_f64());
        let text = frame(&stats, &list, &prev, dt);
        if a.once {
            out_raw!("{text}");
            return Ok(());
        }
        // Home, clear the screen, then the frame.
        out_raw!("\x1b[H\x1b[2J{text}");
        prev = Previous {
            at: Some(now),
            rx: stats.as_ref().map(|s| counter(s, "rx")).unwrap_or(0),
            tx: stats
                .as_ref()
                .map(|s| s.port_stats.iter().map(|p| p.tx).sum())
                .unwrap_or(0),
            packets: list
                .iter()
                .map(|s| (s.session_id, (s.in_packets, s.out_packets)))
                .collect(),
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(a.interval)) => {}
            _ = &mut ctrl_c => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_shows_device_and_rates() {
        let s = crate::stats::tests::sample();
        let sess = vec![SessionResponse {
            session_id: 42,
            in_packets: 30,
            out_packets: 10,
            ..Default::default()
        }];
        let first = frame(&Ok(s.clone()), &sess, &Previous::default(), None);
        assert!(
            first.contains("sessions 4 of 19  closed waiting 1"),
            "{first}"
        );
        assert!(
            first.contains("rx 100 (- pkt/s)  tx 40 (- pkt/s)"),
            "{first}"
        );
        assert!(
            first.contains("closed: finack 0  rst 0  timeout 2"),
            "{first}"
        );
        assert!(!first.contains('\x1b'));
        let prev = Previous {
            at: Some(Instant::now()),
            rx: 50,
            tx: 40,
            packets: [(42, (10, 10))].into_iter().collect(),
        };
        let next = frame(&Ok(s), &sess, &prev, Some(2.0));
        assert!(
            next.contains("rx 100 (25 pkt/s)  tx 40 (0 pkt/s)"),
            "{next}"
        );
        let row = next
            .lines()
            .find(|l| l.trim_start().starts_with("42"))
            .unwrap();
        assert!(row.ends_with("10        0"), "{row}");
        let down = frame(
            &Err("GetStats failed: Unimplemented".into()),
            &[],
            &prev,
            None,
        );
        assert!(down.starts_with("device stats unavailable"), "{down}");
        assert!(down.ends_with("0 sessions shown\n"));
    }

    #[test]
    fn interval_must_be_positive() {
        assert!(positive("0.5").is_ok());
        assert!(positive("0").is_err());
        assert!(positive("x").is_err());
    }
}
