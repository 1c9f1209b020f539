//! Text and JSON forms of what the device answers: aligned tables, sessions, times.

use control::wire::{close_code_name, request_status_name, state_name};
use proto::v2::SessionResponse;
use serde_json::{json, Value};

/// Writes to stdout and flushes; a closed stdout ends the program (see `out!`).
pub fn emit(s: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if o.write_all(s.as_bytes()).and_then(|_| o.flush()).is_err() {
        std::process::exit(141);
    }
}

/// A text table: a header row and rows of cells, numbers right-aligned.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines (no trailing newline on the last one).
    pub fn render(&self) -> String {
        let n = self.header.len();
        let mut width = vec![0; n];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(n) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        // A column is numeric when every body cell looks like a number.
        let numeric: Vec<bool> = (0..n)
            .map(|i| {
                !self.rows.is_empty()
                    && self.rows.iter().all(|r| {
                        r.get(i).is_some_and(|c| {
                            !c.is_empty()
                                && c.chars()
                                    .all(|ch| ch.is_ascii_digit() || ".-/".contains(ch))
                        })
                    })
            })
            .collect();
        let mut out = Vec::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for i in 0..n {
                let c = r.get(i).map(String::as_str).unwrap_or("");
                let pad = width[i] - c.chars().count();
                if i > 0 {
                    line.push_str("  ");
                }
                if numeric[i] {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    if i + 1 < n {
                        line.push_str(&" ".repeat(pad));
                    }
                }
            }
            out.push(line.trim_end().to_string());
        }
        out.join("\n")
    }
}

/// Seconds since the Unix epoch as `YYYY-MM-DD hh:mm:ss.mmm` (UTC).
pub fn utc(ts: &prost_types::Timestamp) -> String {
    let secs = ts.seconds;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ts.nanos.max(0) / 1_000_000
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (the era-based method: 400-year eras of 146097 days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn time_or_dash(t: &Option<prost_types::Timestamp>) -> String {
    match t {
        Some(t) if t.seconds != 0 || t.nanos != 0 => utc(t),
        _ => "-".into(),
    }
}

fn time_json(t: &Option<prost_types::Timestamp>) -> Value {
    match t {
        Some(t) if t.seconds != 0 || t.nanos != 0 => {
            json!(t.seconds as f64 + f64::from(t.nanos) / 1e9)
        }
        _ => Value::Null,
    }
}

/// Enum names without the leading underscore of the wire names, for tables.
pub fn short(name: &str) -> &str {
    name.trim_start_matches('_')
}

/// A session as JSON: the wire fields, enums by name, times as Unix seconds.
pub fn session_json(r: &SessionResponse) -> Value {
    json!({
        "session_id": r.session_id,
        "state": state_name(r.session_state),
        "close_code": close_code_name(r.session_close_code),
        "request_status": request_status_name(r.request_status),
        "in_packets": r.in_packets,
        "in_bytes": r.in_bytes,
        "out_packets": r.out_packets,
        "out_bytes": r.out_bytes,
        "start_time": time_json(&r.start_time),
        "end_time": time_json(&r.end_time),
    })
}

/// One session, for `get` and `delete`.
pub fn session_text(r: &SessionResponse) -> String {
    format!(
        "session {}\n  state       {}\n  close code  {}\n  in          {} packets, {} bytes\n  out         {} packets, {} bytes\n  start       {}\n  end         {}",
        r.session_id,
        short(state_name(r.session_state)),
        short(close_code_name(r.session_close_code)),
        r.in_packets,
        r.in_bytes,
        r.out_packets,
        r.out_bytes,
        time_or_dash(&r.start_time),
        time_or_dash(&r.end_time),
    )
}

pub const SESSION_HEADER: &[&str] = &[
    "ID",
    "STATE",
    "CLOSE",
    "IN_PKTS",
    "IN_BYTES",
    "OUT_PKTS",
    "OUT_BYTES",
    "START",
    "END",
];

/// One session as a row under `SESSION_HEADER`.
pub fn session_row(r: &SessionResponse) -> Vec<String> {
    vec![
        r.session_id.to_string(),
        short(state_name(r.session_state)).into(),
        short(close_code_name(r.session_close_code)).into(),
        r.in_packets.to_string(),
        r.in_bytes.to_string(),
        r.out_packets.to_string(),
        r.out_bytes.to_string(),
        time_or_dash(&r.start_time),
        time_or_dash(&r.end_time),
    ]
}

/// A count of nanoseconds for people: ns, µs, ms or s with three significant digits.
pub fn duration_ns(v: f64) -> String {
    if v < 1e3 {
        format!("{v:.0} ns")
    } else if v < 1e6 {
        format!("{:.3} µs", v / 1e3)
    } else if v < 1e9 {
        format!("{:.3} ms", v / 1e6)
    } else {
        format!("{:.3} s", v / 1e9)
    }
}

/// Microseconds from nanoseconds, rounded to 0.1 (the unit of bench's JSON).
pub fn us(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_text_left_and_numbers_right() {
        let mut t = Table::new(&["ID", "STATE", "IN"]);
        t.row(vec!["7".into(), "ESTABLISHED".into(), "12".into()]);
        t.row(vec!["1000".into(), "CLOSED".into(), "3".into()]);
        assert_eq!(
            t.render(),
            "  ID  STATE        IN\n   7  ESTABLISHED  12\n1000  CLOSED        3"
        );
    }

    #[test]
    fn utc_dates() {
        let t = |s| {
            utc(&prost_types::Timestamp {
                seconds: s,
                nanos: 5_000_000,
            })
        };
        assert_eq!(t(0), "1970-01-01 00:00:00.005");
        assert_eq!(t(951_782_400), "2000-02-29 00:00:00.005");
        assert_eq!(t(1_735_689_599), "2024-12-31 23:59:59.005");
    }

    #[test]
    fn session_text_and_json() {
        let r = SessionResponse {
            session_id: 9,
            in_packets: 3,
            session_state: 3,
            session_close_code: 3,
            start_time: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        };
        let t = session_text(&r);
        assert!(t.contains("state       CLOSED"), "{t}");
        assert!(t.contains("close code  TIMEOUT"), "{t}");
        assert!(t.contains("end         -"), "{t}");
        let j = session_json(&r);
        assert_eq!(j["close_code"], "_TIMEOUT");
        assert_eq!(j["start_time"], 1.0);
        assert_eq!(j["end_time"], Value::Null);
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ns(39.0), "39 ns");
        assert_eq!(duration_ns(1500.0), "1.500 µs");
        assert_eq!(duration_ns(2.5e7), "25.000 ms");
        assert_eq!(us(1_234_567), 1234.6);
    }
}
