//! `watch --once`: one frame without terminal control codes, for scripts and logs;
//! with `--json`, one JSON object (the device line and the session rows).

use super::model::{age, si_rate, Device, Row};
use crate::output::Table;
use crate::stats::uptime;

/// One frame as text.
pub fn text(d: &Device, rows: &[Row], more: bool) -> String {
    let mut out = format!(
        "offloadd {}  up {}  workers {}  boot {}\n\
         sessions {} of {}  closed waiting {}  refused {}\n",
        d.version,
        uptime(d.uptime_s),
        d.workers,
        d.boot_id,
        d.sessions,
        d.capacity,
        d.closed_pending,
        d.refusals,
    );
    out.push_str(&format!(
        "pps in {}  out {}  adds/s {}\n\n",
        si_rate(d.rx_pps),
        si_rate(d.tx_pps),
        si_rate(d.adds_per_s)
    ));
    let mut t = Table::new(&[
        "ID",
        "TUPLE",
        "PROTO",
        "LIFS",
        "ACTION",
        "STATE",
        "AGE",
        "IN_PKTS",
        "OUT_PKTS",
        "IN_BYTES",
        "OUT_BYTES",
    ]);
    for r in rows {
        t.row(vec![
            r.id.to_string(),
            r.tuple.clone(),
            r.protocol.clone(),
            r.lifs.clone(),
            r.action.clone(),
            r.state.clone(),
            age(r.age_s),
            r.packets[0].to_string(),
            r.packets[1].to_string(),
            r.bytes[0].to_string(),
            r.bytes[1].to_string(),
        ]);
    }
    out.push_str(&t.render());
    let more = if more { " (the device holds more)" } else { "" };
    out.push_str(&format!("\n{} sessions shown{more}\n", rows.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::super::model::{device, rows, tests::sample, tests::view};
    use super::*;

    #[test]
    fn one_frame_has_the_device_and_a_row_per_session_and_no_control_codes() {
        let s = sample(
            std::time::Instant::now(),
            vec![view(42, [30, 10], true)],
            100,
        );
        let t = text(&device(&s, None), &rows(&s, None), false);
        assert!(t.starts_with("offloadd "), "{t}");
        assert!(t.contains("sessions 4 of 19  closed waiting 1"), "{t}");
        assert!(t.contains("ID  TUPLE"), "{t}");
        let row = t.lines().find(|l| l.starts_with("42")).unwrap();
        assert!(row.contains("10.0.0.1:1042 -> 10.1.0.2:53"), "{row}");
        assert!(t.ends_with("1 sessions shown\n"), "{t}");
        assert!(!t.contains('\x1b'));
    }
}
