//! What `watch` shows, worked out from two samples of the device: the device line
//! (packet rates, sessions, adds, closes by cause, refusals) and one row per
//! session with its rates, sorted and paged. No terminal here: `view.rs` draws it,
//! `once.rs` prints it.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use proto::admin::{SessionView, Stats};
use serde_json::{json, Value};

use crate::output::short;
use crate::stats::counter;
use control::wire::state_name;

/// One reading of the device.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    pub wall: SystemTime,
    pub stats: Stats,
    pub sessions: Vec<SessionView>,
    /// The device holds more sessions than were read.
    pub more: bool,
}

/// The device line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Device {
    pub version: String,
    pub boot_id: String,
    pub uptime_s: u64,
    pub workers: u32,
    pub sessions: u64,
    pub capacity: u64,
    pub closed_pending: u64,
    /// Per second, since the previous sample (None on the first).
    pub rx_pps: Option<f64>,
    pub tx_pps: Option<f64>,
    pub adds_per_s: Option<f64>,
    /// FIN, RST, timeout, delete.
    pub closes_per_s: Option<[f64; 4]>,
    pub refusals_per_s: Option<f64>,
    pub refusals: u64,
}

/// One session row.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub id: u64,
    /// "src:port -> dst:port", or "-" for a closed session the device keeps only the
    /// record of.
    pub tuple: String,
    pub protocol: String,
    pub lifs: String,
    pub action: String,
    pub state: String,
    pub age_s: f64,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// Packets per second in and out since the previous sample.
    pub pps: Option<[f64; 2]>,
}

/// The columns the session table can be sorted by, in screen order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    Id,
    Tuple,
    Protocol,
    Lifs,
    Action,
    State,
    Age,
    Packets,
    Bytes,
    Rate,
}

impl Column {
    pub const ALL: [Column; 10] = [
        Column::Id,
        Column::Tuple,
        Column::Protocol,
        Column::Lifs,
        Column::Action,
        Column::State,
        Column::Age,
        Column::Packets,
        Column::Bytes,
        Column::Rate,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Column::Id => "ID",
            Column::Tuple => "TUPLE",
            Column::Protocol => "PROTO",
            Column::Lifs => "LIFS",
            Column::Action => "ACTION",
            Column::State => "STATE",
            Column::Age => "AGE",
            Column::Packets => "PKTS",
            Column::Bytes => "BYTES",
            Column::Rate => "PPS",
        }
    }

    /// The next column to the right (`right`) or left, wrapping.
    pub fn step(self, right: bool) -> Column {
        let i = Column::ALL.iter().position(|&c| c == self).unwrap_or(0);
        let n = Column::ALL.len();
        Column::ALL[if right { (i + 1) % n } else { (i + n - 1) % n }]
    }
}

/// How the table is sorted and which part of it is on screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Order {
    pub by: Column,
    pub descending: bool,
    /// The first row shown.
    pub first: usize,
}

impl Default for Order {
    fn default() -> Self {
        Order {
            by: Column::Id,
            descending: false,
            first: 0,
        }
    }
}

impl Order {
    /// Moves the first row shown by `delta`, keeping a page of `page` rows inside
    /// the `rows` there are.
    pub fn scroll(&mut self, delta: isize, page: usize, rows: usize) {
        let last = rows.saturating_sub(page.max(1));
        self.first = self.first.saturating_add_signed(delta).min(last);
    }
}

/// Per second between two counter readings.
fn per_s(now: u64, before: u64, dt: f64) -> f64 {
    now.saturating_sub(before) as f64 / dt
}

fn refusals(s: &Stats) -> u64 {
    s.counters
        .iter()
        .filter(|c| c.name.starts_with(control::refusal::COUNTER_PREFIX))
        .map(|c| c.value)
        .sum()
}

fn tx(s: &Stats) -> u64 {
    s.port_stats.iter().map(|p| p.tx).sum()
}

/// The device line from the latest sample and the one before it.
pub fn device(now: &Sample, before: Option<&Sample>) -> Device {
    let s = &now.stats;
    let dt = before
        .map(|b| now.at.duration_since(b.at).as_secs_f64())
        .filter(|&dt| dt > 0.0);
    let rate =
        |f: &dyn Fn(&Stats) -> u64| before.zip(dt).map(|(b, dt)| per_s(f(s), f(&b.stats), dt));
    let closes = before.zip(dt).map(|(b, dt)| {
        ["closed_finack", "closed_rst", "closed_timeout", "deletes"]
            .map(|n| per_s(counter(s, n), counter(&b.stats, n), dt))
    });
    Device {
        version: s.version.clone(),
        boot_id: s.boot_id.clone(),
        uptime_s: s.uptime_seconds,
        workers: s.workers,
        sessions: s.sessions,
        capacity: s.max_sessions,
        closed_pending: s.closed_pending,
        rx_pps: rate(&|s| counter(s, "rx")),
        tx_pps: rate(&tx),
        adds_per_s: rate(&|s| counter(s, "adds")),
        closes_per_s: closes,
        refusals_per_s: rate(&refusals),
        refusals: refusals(s),
    }
}

/// The session rows of the latest sample, in id order, with rates against the one
/// before.
pub fn rows(now: &Sample, before: Option<&Sample>) -> Vec<Row> {
    let dt = before
        .map(|b| now.at.duration_since(b.at).as_secs_f64())
        .filter(|&dt| dt > 0.0);
    let earlier: HashMap<u64, [u64; 2]> = before
        .map(|b| b.sessions.iter().map(|v| (id(v), packets(v))).collect())
        .unwrap_or_default();
    now.sessions
        .iter()
        .map(|v| {
            let p = packets(v);
            let pps = dt
                .zip(earlier.get(&id(v)))
                .map(|(dt, e)| [per_s(p[0], e[0], dt), per_s(p[1], e[1], dt)]);
            row(v, now.wall, p, pps)
        })
        .collect()
}

fn id(v: &SessionView) -> u64 {
    v.session.as_ref().map_or(0, |s| s.session_id)
}

fn packets(v: &SessionView) -> [u64; 2] {
    v.session
        .as_ref()
        .map_or([0, 0], |s| [s.in_packets, s.out_packets])
}

fn seconds(t: &Option<prost_types::Timestamp>) -> Option<f64> {
    t.as_ref().map(|t| t.seconds as f64 + t.nanos as f64 / 1e9)
}

fn row(v: &SessionView, wall: SystemTime, packets: [u64; 2], pps: Option<[f64; 2]>) -> Row {
    let s = v.session.unwrap_or_default();
    let now_s = wall
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64();
    let end = seconds(&s.end_time).unwrap_or(now_s);
    let age_s = seconds(&s.start_time).map_or(0.0, |start| (end - start).max(0.0));
    let endpoint = |addr: &str, port: u32| {
        if addr.contains(':') {
            format!("[{addr}]:{port}")
        } else {
            format!("{addr}:{port}")
        }
    };
    let (tuple, lifs) = if v.live {
        (
            format!(
                "{} -> {}",
                endpoint(&v.source, v.source_port),
                endpoint(&v.destination, v.destination_port)
            ),
            format!("{}/{}", v.in_lif, v.out_lif),
        )
    } else {
        ("-".to_string(), "-".to_string())
    };
    Row {
        id: s.session_id,
        tuple,
        protocol: if v.live {
            v.protocol.clone()
        } else {
            "-".into()
        },
        lifs,
        action: if v.live { v.action.clone() } else { "-".into() },
        state: short(state_name(s.session_state)).to_lowercase(),
        age_s,
        packets,
        bytes: [s.in_bytes, s.out_bytes],
        pps,
    }
}

/// Sorts `rows` as `order` says (ties by id, so the order is stable).
pub fn sort(rows: &mut [Row], order: &Order) {
    let total_pps = |r: &Row| r.pps.map_or(-1.0, |p| p[0] + p[1]);
    rows.sort_by(|a, b| {
        let o = match order.by {
            Column::Id => a.id.cmp(&b.id),
            Column::Tuple => a.tuple.cmp(&b.tuple),
            Column::Protocol => a.protocol.cmp(&b.protocol),
            Column::Lifs => a.lifs.cmp(&b.lifs),
            Column::Action => a.action.cmp(&b.action),
            Column::State => a.state.cmp(&b.state),
            Column::Age => a.age_s.total_cmp(&b.age_s),
            Column::Packets => (a.packets[0] + a.packets[1]).cmp(&(b.packets[0] + b.packets[1])),
            Column::Bytes => (a.bytes[0] + a.bytes[1]).cmp(&(b.bytes[0] + b.bytes[1])),
            Column::Rate => total_pps(a).total_cmp(&total_pps(b)),
        };
        let o = if order.descending { o.reverse() } else { o };
        o.then(a.id.cmp(&b.id))
    });
}

/// A count with a unit prefix: 950, 12.3k, 4.56M, 7.89G.
pub fn si(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// A rate, or "-" before there are two samples.
pub fn si_rate(v: Option<f64>) -> String {
    v.map_or("-".into(), si)
}

/// An age as a person reads it: 42s, 7m05s, 3h12m, 2d04h.
pub fn age(s: f64) -> String {
    let s = s as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{:02}h", s / 86_400, s / 3600 % 24),
    }
}

/// `watch --once --json`: the device line and every session row read.
pub fn to_json(d: &Device, rows: &[Row], more: bool) -> Value {
    let closes = d
        .closes_per_s
        .map(|c| json!({ "finack": c[0], "rst": c[1], "timeout": c[2], "deleted": c[3] }));
    json!({
        "device": {
            "version": d.version,
            "boot_id": d.boot_id,
            "uptime_seconds": d.uptime_s,
            "workers": d.workers,
            "sessions": d.sessions,
            "capacity": d.capacity,
            "closed_pending": d.closed_pending,
            "rx_pps": d.rx_pps,
            "tx_pps": d.tx_pps,
            "adds_per_s": d.adds_per_s,
            "closes_per_s": closes,
            "refusals": d.refusals,
            "refusals_per_s": d.refusals_per_s,
        },
        "sessions": rows.iter().map(|r| json!({
            "session_id": r.id,
            "tuple": r.tuple,
            "protocol": r.protocol,
            "lifs": r.lifs,
            "action": r.action,
            "state": r.state,
            "age_seconds": r.age_s,
            "in_packets": r.packets[0],
            "out_packets": r.packets[1],
            "in_bytes": r.bytes[0],
            "out_bytes": r.bytes[1],
            "in_pps": r.pps.map(|p| p[0]),
            "out_pps": r.pps.map(|p| p[1]),
        })).collect::<Vec<_>>(),
        "more_sessions": more,
    })
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use proto::v2::SessionResponse;

    pub fn view(id: u64, packets: [u64; 2], live: bool) -> SessionView {
        SessionView {
            session: Some(SessionResponse {
                session_id: id,
                in_packets: packets[0],
                out_packets: packets[1],
                in_bytes: packets[0] * 100,
                out_bytes: packets[1] * 100,
                start_time: Some(prost_types::Timestamp {
                    seconds: 1000,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            live,
            protocol: "udp".into(),
            source: if id.is_multiple_of(2) {
                "10.0.0.1".into()
            } else {
                "2001:db8::1".into()
            },
            source_port: 1000 + id as u32,
            destination: "10.1.0.2".into(),
            destination_port: 53,
            in_lif: 1,
            out_lif: 2,
            action: "forward".into(),
        }
    }

    pub fn sample(at: Instant, sessions: Vec<SessionView>, rx: u64) -> Sample {
        let mut stats = crate::stats::tests::sample();
        for c in &mut stats.counters {
            if c.name == "rx" {
                c.value = rx;
            }
        }
        Sample {
            at,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1090),
            stats,
            sessions,
            more: false,
        }
    }

    #[test]
    fn rates_need_two_samples_and_come_from_the_differences() {
        let t0 = Instant::now();
        let first = sample(t0, vec![view(2, [10, 5], true)], 100);
        let second = sample(
            t0 + Duration::from_secs(2),
            vec![view(2, [30, 5], true)],
            300,
        );
        let d = device(&first, None);
        assert_eq!((d.rx_pps, d.sessions, d.capacity), (None, 4, 19));
        let d = device(&second, Some(&first));
        assert_eq!(d.rx_pps, Some(100.0));
        let r = rows(&second, Some(&first));
        assert_eq!(r[0].pps, Some([10.0, 0.0]));
        assert_eq!(r[0].tuple, "10.0.0.1:1002 -> 10.1.0.2:53");
        assert_eq!((r[0].lifs.as_str(), r[0].age_s), ("1/2", 90.0));
        assert_eq!(rows(&first, None)[0].pps, None);
    }

    #[test]
    fn closed_sessions_show_their_record_only_and_v6_tuples_are_bracketed() {
        let s = sample(
            Instant::now(),
            vec![view(3, [1, 1], false), view(5, [1, 1], true)],
            0,
        );
        let r = rows(&s, None);
        assert_eq!((r[0].tuple.as_str(), r[0].action.as_str()), ("-", "-"));
        assert_eq!(r[1].tuple, "[2001:db8::1]:1005 -> 10.1.0.2:53");
    }

    #[test]
    fn sorting_by_any_column_either_way_ties_by_id() {
        let s = sample(
            Instant::now(),
            vec![
                view(1, [5, 0], true),
                view(2, [50, 0], true),
                view(3, [5, 0], true),
            ],
            0,
        );
        let mut r = rows(&s, None);
        let mut o = Order {
            by: Column::Packets,
            descending: true,
            first: 0,
        };
        sort(&mut r, &o);
        assert_eq!(r.iter().map(|r| r.id).collect::<Vec<_>>(), [2, 1, 3]);
        o.descending = false;
        sort(&mut r, &o);
        assert_eq!(r.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 3, 2]);
        assert_eq!(Column::Id.step(false), Column::Rate);
        assert_eq!(Column::Rate.step(true), Column::Id);
    }

    #[test]
    fn paging_stays_inside_the_rows() {
        let mut o = Order::default();
        o.scroll(10, 20, 25);
        assert_eq!(o.first, 5, "the last page is full");
        o.scroll(-100, 20, 25);
        assert_eq!(o.first, 0);
        o.scroll(5, 20, 3);
        assert_eq!(o.first, 0, "fewer rows than a page");
    }

    #[test]
    fn numbers_read_as_a_person_reads_them() {
        assert_eq!(si(950.0), "950");
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(si(4_560_000.0), "4.56M");
        assert_eq!(age(42.0), "42s");
        assert_eq!(age(425.0), "7m05s");
        assert_eq!(age(3.0 * 86_400.0 + 7200.0), "3d02h");
    }
}
