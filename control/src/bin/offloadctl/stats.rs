//! `stats`: the device's counters from the admin service, per device, worker and port.

use proto::admin::{Counter, Stats, StatsRequest};
use serde_json::{json, Map, Value};

use crate::output::Table;
use crate::{status_line, Conn};

pub async fn fetch(conn: &Conn) -> Result<Stats, String> {
    let mut a = control::client::admin(conn.channel().await?);
    a.get_stats(StatsRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|s| status_line("GetStats failed", &s))
}

/// A device counter by name (0 when the device does not report it).
pub fn counter(s: &Stats, name: &str) -> u64 {
    find(&s.counters, name).unwrap_or(0)
}

fn find(c: &[Counter], name: &str) -> Option<u64> {
    c.iter().find(|c| c.name == name).map(|c| c.value)
}

fn counters_json(c: &[Counter]) -> Value {
    let m: Map<String, Value> = c.iter().map(|c| (c.name.clone(), json!(c.value))).collect();
    Value::Object(m)
}

pub fn to_json(s: &Stats) -> Value {
    json!({
        "version": s.version,
        "uptime_seconds": s.uptime_seconds,
        "workers": s.workers,
        "max_sessions": s.max_sessions,
        "sessions": s.sessions,
        "closed_pending": s.closed_pending,
        "closed_streams": s.closed_streams,
        "connections_open": s.connections_open,
        "boot_id": s.boot_id,
        "start_time": s.start_time,
        "counters": counters_json(&s.counters),
        "worker_stats": s.worker_stats.iter().map(|w| json!({
            "worker": w.worker,
            "core": w.core,
            "sessions": w.sessions,
            "capacity": w.capacity,
            "closed_waiting": w.closed_waiting,
            "table_bytes": w.table_bytes,
            "counters": counters_json(&w.counters),
        })).collect::<Vec<_>>(),
        "port_stats": s.port_stats.iter().map(|p| json!({
            "name": p.name,
            "role": p.role,
            "rx": p.rx,
            "tx": p.tx,
            "tx_drops": p.tx_drops,
        })).collect::<Vec<_>>(),
    })
}

pub fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

pub fn to_text(s: &Stats) -> String {
    let mut out = format!(
        "offloadd {}, up {}, {} workers\nsessions {} of {} (closed, waiting for GetClosedSessions: {}; \
         GetClosedSessions streams open: {})\nAPI connections open: {}\nboot id {}, started {} UTC\n\n",
        s.version,
        uptime(s.uptime_seconds),
        s.workers,
        s.sessions,
        s.max_sessions,
        s.closed_pending,
        s.closed_streams,
        s.connections_open,
        s.boot_id,
        crate::output::utc(&prost_types::Timestamp {
            seconds: s.start_time as i64,
            nanos: 0
        })
    );

    // Counters: one row per name, the device total then each worker.
    let mut header = vec!["COUNTER".to_string(), "DEVICE".to_string()];
    header.extend(s.worker_stats.iter().map(|w| format!("W{}", w.worker)));
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut t = Table::new(&header);
    let mut names: Vec<&str> = s.counters.iter().map(|c| c.name.as_str()).collect();
    for w in &s.worker_stats {
        for c in &w.counters {
            if !names.contains(&c.name.as_str()) {
                names.push(&c.name);
            }
        }
    }
    for name in names {
        let mut row = vec![
            name.to_string(),
            find(&s.counters, name).map_or("-".into(), |v| v.to_string()),
        ];
        for w in &s.worker_stats {
            row.push(find(&w.counters, name).map_or("-".into(), |v| v.to_string()));
        }
        t.row(row);
    }
    out.push_str(&t.render());

    let mut t = Table::new(&[
        "WORKER",
        "CORE",
        "SESSIONS",
        "CAPACITY",
        "CLOSED_WAITING",
        "TABLE_MB",
    ]);
    for w in &s.worker_stats {
        t.row(vec![
            w.worker.to_string(),
            if w.core < 0 {
                "-".into()
            } else {
                w.core.to_string()
            },
            w.sessions.to_string(),
            w.capacity.to_string(),
            w.closed_waiting.to_string(),
            format!("{:.1}", w.table_bytes as f64 / (1 << 20) as f64),
        ]);
    }
    out.push_str("\n\n");
    out.push_str(&t.render());

    let mut t = Table::new(&["PORT", "ROLE", "RX", "TX", "TX_DROPS"]);
    for p in &s.port_stats {
        t.row(vec![
            p.name.clone(),
            p.role.clone(),
            p.rx.to_string(),
            p.tx.to_string(),
            p.tx_drops.to_string(),
        ]);
    }
    out.push_str("\n\n");
    out.push_str(&t.render());
    out
}

pub async fn run(conn: &Conn) -> Result<(), String> {
    let s = fetch(conn).await?;
    if conn.json {
        out!("{}", to_json(&s));
    } else {
        out!("{}", to_text(&s));
    }
    Ok(())
}

/// `metrics`: the same numbers as the device's Prometheus endpoint serves, in the
/// Prometheus text format (already machine-readable: `--json` changes nothing).
pub async fn metrics(conn: &Conn) -> Result<(), String> {
    let mut a = control::client::admin(conn.channel().await?);
    let text = a
        .get_metrics(proto::admin::MetricsRequest {})
        .await
        .map(|r| r.into_inner().text)
        .map_err(|s| status_line("GetMetrics failed", &s))?;
    out_raw!("{text}");
    Ok(())
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use proto::admin::{PortStats, WorkerStats};

    pub fn sample() -> Stats {
        let c = |n: &str, v| Counter {
            name: n.into(),
            value: v,
        };
        Stats {
            version: "0.1.0".into(),
            uptime_seconds: 3725,
            workers: 1,
            max_sessions: 19,
            sessions: 4,
            closed_pending: 1,
            closed_streams: 2,
            connections_open: 3,
            boot_id: "00112233445566778899aabbccddeeff".into(),
            start_time: 1_700_000_000,
            counters: vec![c("rx", 100), c("misses", 7), c("closed_timeout", 2)],
            worker_stats: vec![WorkerStats {
                worker: 0,
                core: -1,
                sessions: 4,
                capacity: 24,
                closed_waiting: 0,
                table_bytes: 3 << 20,
                counters: vec![c("rx", 100), c("misses", 7)],
            }],
            port_stats: vec![PortStats {
                name: "ring0".into(),
                rx: 60,
                tx: 40,
                tx_drops: 0,
                role: "lif 1".into(),
            }],
        }
    }

    #[test]
    fn text_has_every_part() {
        let t = to_text(&sample());
        assert!(
            t.starts_with("offloadd 0.1.0, up 01:02:05, 1 workers\nsessions 4 of 19"),
            "{t}"
        );
        assert!(
            t.contains(
                "API connections open: 3\nboot id 00112233445566778899aabbccddeeff, \
                 started 2023-11-14 22:13:20.000 UTC\n"
            ),
            "{t}"
        );
        assert!(t.contains("COUNTER         DEVICE   W0"), "{t}");
        assert!(t.contains("closed_timeout       2    -"), "{t}");
        assert!(t.contains("ring0  lif 1"), "{t}");
        assert!(
            t.contains("     0     -         4        24               0       3.0"),
            "{t}"
        );
    }

    #[test]
    fn json_names_counters() {
        let j = to_json(&sample());
        assert_eq!(j["counters"]["misses"], 7);
        assert_eq!(j["worker_stats"][0]["counters"]["rx"], 100);
        assert_eq!(j["port_stats"][0]["role"], "lif 1");
        assert_eq!(counter(&sample(), "nothing"), 0);
    }
}
