//! `neighbours`: the device's neighbour table (next hops, static and learned) from the
//! admin service: address, MAC, port, state, age, source and the sessions using each.

use proto::admin::{Neighbour, NeighboursRequest};
use serde_json::{json, Value};

use crate::output::Table;
use crate::{status_line, Conn};

pub async fn fetch(conn: &Conn) -> Result<Vec<Neighbour>, String> {
    let mut a = control::client::admin(conn.channel().await?);
    a.get_neighbours(NeighboursRequest {})
        .await
        .map(|r| r.into_inner().neighbours)
        .map_err(|s| status_line("GetNeighbours failed", &s))
}

pub fn to_json(n: &Neighbour) -> Value {
    json!({
        "addr": n.addr,
        "mac": (!n.mac.is_empty()).then_some(&n.mac),
        "port": (!n.port.is_empty()).then_some(&n.port),
        "state": n.state,
        "age_ms": n.age_ms,
        "source": n.source,
        "sessions": n.sessions,
    })
}

/// Seconds with one decimal: ages are read by people, by the second.
fn age(ms: u64) -> String {
    format!("{}.{}s", ms / 1000, ms % 1000 / 100)
}

pub fn to_text(list: &[Neighbour]) -> String {
    if list.is_empty() {
        return "no next hops: no [[next_hop]] in the config, and no session names one".into();
    }
    let mut t = Table::new(&[
        "ADDRESS", "MAC", "PORT", "STATE", "AGE", "SOURCE", "SESSIONS",
    ]);
    for n in list {
        let or_dash = |s: &str| {
            if s.is_empty() {
                "-".to_string()
            } else {
                s.to_string()
            }
        };
        t.row(vec![
            n.addr.clone(),
            or_dash(&n.mac),
            if n.port.is_empty() {
                "(out port)".into()
            } else {
                n.port.clone()
            },
            n.state.clone(),
            age(n.age_ms),
            n.source.clone(),
            n.sessions.to_string(),
        ]);
    }
    t.render()
}

pub async fn run(conn: &Conn) -> Result<(), String> {
    let list = fetch(conn).await?;
    if conn.json {
        for n in &list {
            out!("{}", to_json(n));
        }
    } else {
        out!("{}", to_text(&list));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(mac: &str, port: &str, state: &str) -> Neighbour {
        Neighbour {
            addr: "192.168.0.1".into(),
            mac: mac.into(),
            port: port.into(),
            state: state.into(),
            age_ms: 1234,
            source: "learned".into(),
            sessions: 3,
        }
    }

    #[test]
    fn text_shows_every_column_and_dashes_for_what_is_unknown() {
        let text = to_text(&[
            entry("02:00:00:00:00:01", "inside", "reachable"),
            entry("", "inside", "incomplete"),
            entry("02:00:00:00:00:02", "", "permanent"),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        for col in [
            "ADDRESS", "MAC", "PORT", "STATE", "AGE", "SOURCE", "SESSIONS",
        ] {
            assert!(lines[0].contains(col), "{col}");
        }
        assert!(lines[1].contains("02:00:00:00:00:01") && lines[1].contains("reachable"));
        assert!(lines[1].contains("1.2s"));
        assert!(lines[2].contains(" - ") && lines[2].contains("incomplete"));
        assert!(lines[3].contains("(out port)"));
        assert!(to_text(&[]).starts_with("no next hops"));
    }

    #[test]
    fn json_has_nulls_for_what_is_unknown() {
        let v = to_json(&entry("", "", "incomplete"));
        assert_eq!(v["mac"], Value::Null);
        assert_eq!(v["port"], Value::Null);
        assert_eq!(v["state"], "incomplete");
        assert_eq!(v["sessions"], 3);
        assert_eq!(v["age_ms"], 1234);
    }
}
