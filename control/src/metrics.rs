//! The device's numbers as Prometheus metrics: counters typed `counter`, levels
//! `gauge`, the latency histograms as Prometheus histograms with buckets, per worker
//! and merged, encoded by `prometheus-client` in the Prometheus text format.
//!
//! Each scrape encodes one `Snapshot`: one report the workers answer between two
//! polls (the same as `offloadctl stats` reads), so nothing is counted or shared on
//! the hot path for it. Served over HTTP at `metrics.listen` (`metrics_http.rs`) and
//! by the admin GetMetrics call (`offloadctl metrics`). Every name is listed in
//! docs/metrics.md.

use std::fmt;

use dataplane::stats::{EngineReport, Latency};
use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use proto::admin::Stats;

use crate::refusal;

/// The text format's media type, for HTTP answers.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the packet-processing histogram's buckets, in nanoseconds.
const PACKET_BUCKETS_NS: [u64; 14] = [
    10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 50_000, 100_000, 1_000_000, 10_000_000,
];

/// Upper bounds of the add-to-live histogram's buckets, in nanoseconds.
const ADD_BUCKETS_NS: [u64; 14] = [
    1_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

/// Labels of one sample.
type Labels = Vec<(&'static str, String)>;

/// The samples of one family.
type Rows = Vec<(Labels, u64)>;

/// A metric read from one record: name, help, how to read it.
type Field<T> = (&'static str, &'static str, fn(&T) -> u64);

/// A latency histogram: its kind, what it measures, where it is, its buckets.
type LatencyKind = (
    &'static str,
    &'static str,
    fn(&Latency) -> &Histogram<u64>,
    &'static [u64],
);

/// Everything one scrape shows.
#[derive(Debug)]
pub struct Snapshot {
    pub stats: Stats,
    pub report: EngineReport,
    /// The control plane's counters (`ControlCounters::list`).
    pub control: Vec<(String, u64)>,
    /// Port backend counters: port, counter, value.
    pub backend: Vec<(String, String, u64)>,
    /// Neighbour entries by state name.
    pub neighbours: Vec<(String, u64)>,
}

impl Snapshot {
    /// The Prometheus text of this snapshot.
    pub fn text(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        self.device_levels(&mut e)?;
        self.api_counters(&mut e)?;
        self.worker_levels(&mut e)?;
        self.worker_counters(&mut e)?;
        self.port_counters(&mut e)?;
        self.latency(&mut e)
    }
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, rows: &[(Labels, u64)]) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(*v as i64).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, u64)],
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn one(v: u64) -> [(Labels, u64); 1] {
    [(Vec::new(), v)]
}

fn worker_label(w: u32) -> Labels {
    vec![("worker", w.to_string())]
}

/// Worker counters that form one family with a label, by the counter's name.
fn labelled(name: &str) -> Option<(&'static str, &'static str, String)> {
    let by_value = |family, label, value: &str| Some((family, label, value.to_string()));
    match name {
        "closed_finack" => by_value("sessions_closed", "cause", "finack"),
        "closed_rst" => by_value("sessions_closed", "cause", "rst"),
        "closed_timeout" => by_value("sessions_closed", "cause", "timeout"),
        "adds" => by_value("session_adds", "outcome", "accepted"),
        "add_exists" => by_value("session_adds", "outcome", "exists"),
        "add_full" => by_value("session_adds", "outcome", "full"),
        "add_invalid" => by_value("session_adds", "outcome", "invalid"),
        _ => name
            .strip_prefix("tcp_invalid_")
            .and_then(|reason| by_value("tcp_invalid", "reason", reason)),
    }
}

/// Help text of the control plane's counters.
fn control_help(name: &str) -> &'static str {
    match name {
        "api_add_calls" => "AddSession calls.",
        "api_add_requests" => "Sessions AddSession calls asked for.",
        "api_get_calls" => "GetSession calls.",
        "api_delete_calls" => "DeleteSession calls.",
        "api_list_calls" => "GetAllSessions calls.",
        "api_closed_calls" => "GetClosedSessions and AckedClosedSessions calls.",
        "api_closed_delivered" => "Closed records delivered (forgotten by the device).",
        "api_closed_given_back" => "Closed records given back by streams that ended first.",
        "api_closed_acked" => "Closed records acked on AckedClosedSessions.",
        "api_closed_acks_ignored" => "Acks naming no record outstanding on their stream.",
        "api_connections_refused" => "API connections closed at once: api.max_connections open.",
        "api_connections_closed_idle" => "API connections closed after api.idle_timeout_ms idle.",
        "api_accept_fd_limit" => "Times accept failed (descriptor limit) and backed off.",
        _ => "Control-plane counter.",
    }
}

/// Help text of the worker counters that are a family of their own (the same words
/// as docs/metrics.md).
fn worker_help(name: &str) -> &'static str {
    match name {
        "rx" => "Frames received on all ports.",
        "hits" => "Frames of an offloaded session.",
        "misses" => "TCP/UDP frames of no offloaded session (sent to the firewall port).",
        "not_flow" => "Well-formed frames that are no TCP/UDP flow (sent to the firewall port).",
        "malformed" => "Frames that cannot be read (sent to the firewall port).",
        "rx_no_lif" => "Frames received on a port that carries no lif (dropped).",
        "forwarded" => "Frames sent on toward the other side.",
        "dropped" => "Frames of _DROP sessions.",
        "to_firewall" => "Frames and copies sent to the firewall port.",
        "to_collector" => "Mirror copies sent to the collector port.",
        "copy_failures" => "Copies not made: the packet pool was empty.",
        "retag_failures" => "Forwarded frames dropped because a VLAN tag could not be pushed.",
        "polls" => "Worker loop iterations.",
        "idle_polls" => "Worker loop iterations that found no work.",
        "forwarded_unresolved" => "Forwarded frames whose next hop was not resolved.",
        "neighbour_requests" => "ARP requests and neighbour solicitations sent.",
        "neighbour_requests_deferred" => {
            "Neighbour requests held back by the rate limit, sent later."
        }
        "neighbour_replies" => "Answers heard from next hops.",
        "neighbour_updates" => "Other news heard from next hops.",
        "neighbour_failures" => "Next hops that stopped answering.",
        "neighbour_table_full" => "Sessions whose next hop found the neighbour table full.",
        "deletes" => "Sessions removed by DeleteSession.",
        "closed_sent" => "Closed records handed to the control plane.",
        "feed_full" => "Times the closed-record feed was full and records waited in the worker.",
        _ => "Worker counter (docs/metrics.md).",
    }
}

/// Help text of the labelled worker families.
fn family_help(family: &str) -> &'static str {
    match family {
        "sessions_closed" => "Sessions the dataplane closed, by cause.",
        "session_adds" => "Session adds the workers handled, by outcome.",
        "tcp_invalid" => "TCP control packets that changed nothing, by reason.",
        _ => "Worker counter.",
    }
}

impl Snapshot {
    fn device_levels(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let s = &self.stats;
        let mut m = e.encode_descriptor(
            "offloadd_build",
            "The device's version and boot id (random at each start).",
            None,
            MetricType::Info,
        )?;
        m.encode_info(&[
            ("version", s.version.clone()),
            ("boot_id", s.boot_id.clone()),
        ])?;
        let levels: [(&str, &str, u64); 7] = [
            (
                "offloadd_sessions",
                "Sessions in the flow tables.",
                s.sessions,
            ),
            (
                "offloadd_session_capacity",
                "Sessions the device can hold.",
                s.max_sessions,
            ),
            (
                "offloadd_closed_pending",
                "Closed sessions not yet delivered.",
                s.closed_pending,
            ),
            (
                "offloadd_closed_streams",
                "GetClosedSessions and AckedClosedSessions streams open.",
                s.closed_streams,
            ),
            (
                "offloadd_connections_open",
                "API connections open.",
                s.connections_open,
            ),
            (
                "offloadd_start_time_seconds",
                "Start time, seconds since the Unix epoch.",
                s.start_time,
            ),
            (
                "offloadd_uptime_seconds",
                "Seconds since the start.",
                s.uptime_seconds,
            ),
        ];
        for (name, help, v) in levels {
            gauge(e, name, help, &one(v))?;
        }
        let rows: Rows = self
            .neighbours
            .iter()
            .map(|(state, n)| (vec![("state", state.clone())], *n))
            .collect();
        gauge(
            e,
            "offloadd_neighbours",
            "Neighbour table entries, by state.",
            &rows,
        )
    }

    fn api_counters(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let (refusals, others): (Vec<_>, Vec<_>) = self
            .control
            .iter()
            .partition(|(name, _)| name.starts_with(refusal::COUNTER_PREFIX));
        let rows: Rows = refusals
            .iter()
            .map(|(name, v)| {
                let reason = &name[refusal::COUNTER_PREFIX.len()..];
                (vec![("reason", reason.to_string())], *v)
            })
            .collect();
        counter(
            e,
            "offloadd_api_rejected",
            "Sessions AddSession refused, by reason.",
            &rows,
        )?;
        for (name, v) in others {
            let name = format!("offloadd_{name}");
            counter(
                e,
                &name,
                control_help(name.trim_start_matches("offloadd_")),
                &one(*v),
            )?;
        }
        Ok(())
    }

    fn worker_levels(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let ws = &self.stats.worker_stats;
        let levels: [Field<proto::admin::WorkerStats>; 4] = [
            (
                "offloadd_worker_sessions",
                "Sessions in the worker's table.",
                |w| w.sessions,
            ),
            (
                "offloadd_worker_session_capacity",
                "Sessions the worker's table holds.",
                |w| w.capacity,
            ),
            (
                "offloadd_worker_closed_waiting",
                "Closed records waiting in the worker.",
                |w| w.closed_waiting,
            ),
            (
                "offloadd_worker_table_bytes",
                "Memory of the worker's flow table.",
                |w| w.table_bytes,
            ),
        ];
        for (name, help, get) in levels {
            let rows: Rows = ws
                .iter()
                .map(|w| (worker_label(w.worker), get(w)))
                .collect();
            gauge(e, name, help, &rows)?;
        }
        Ok(())
    }

    fn worker_counters(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        // Family name -> (help, rows), in the order first seen.
        let mut families: Vec<(String, &'static str, Rows)> = Vec::new();
        for w in &self.stats.worker_stats {
            for c in &w.counters {
                let (family, help, mut labels) = match labelled(&c.name) {
                    Some((family, label, value)) => (
                        family.to_string(),
                        family_help(family),
                        vec![(label, value)],
                    ),
                    None => (
                        format!("worker_{}", c.name),
                        worker_help(&c.name),
                        Vec::new(),
                    ),
                };
                labels.insert(0, ("worker", w.worker.to_string()));
                match families.iter_mut().find(|f| f.0 == family) {
                    Some(f) => f.2.push((labels, c.value)),
                    None => families.push((family, help, vec![(labels, c.value)])),
                }
            }
        }
        for (family, help, rows) in families {
            counter(e, &format!("offloadd_{family}"), help, &rows)?;
        }
        Ok(())
    }

    fn port_counters(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let ports = &self.stats.port_stats;
        let label =
            |p: &proto::admin::PortStats| vec![("port", p.name.clone()), ("role", p.role.clone())];
        let per_port: [Field<proto::admin::PortStats>; 3] = [
            (
                "offloadd_port_rx_packets",
                "Frames received on the port.",
                |p| p.rx,
            ),
            (
                "offloadd_port_tx_packets",
                "Frames sent on the port.",
                |p| p.tx,
            ),
            (
                "offloadd_port_tx_drops",
                "Frames the port's queues refused.",
                |p| p.tx_drops,
            ),
        ];
        for (name, help, get) in per_port {
            let rows: Rows = ports.iter().map(|p| (label(p), get(p))).collect();
            counter(e, name, help, &rows)?;
        }
        let rows: Rows = self
            .backend
            .iter()
            .map(|(port, name, v)| (vec![("port", port.clone()), ("counter", name.clone())], *v))
            .collect();
        counter(
            e,
            "offloadd_port_backend",
            "Backend events of a port (af_packet, af_xdp: hand-offs, drops), by counter.",
            &rows,
        )
    }

    fn latency(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let kinds: [LatencyKind; 2] = [
            (
                "packet",
                "Time a worker spent on each packet",
                |l| &l.packet_ns,
                &PACKET_BUCKETS_NS,
            ),
            (
                "add",
                "Time from an add command's arrival at its worker to the session being live",
                |l| &l.add_ns,
                &ADD_BUCKETS_NS,
            ),
        ];
        for (kind, what, get, bounds) in kinds {
            let name = format!("offloadd_{kind}_latency_seconds");
            let m = e.encode_descriptor(
                &name,
                &format!("{what}, all workers."),
                None,
                MetricType::Histogram,
            )?;
            histogram(get(&self.report.latency), bounds).encode(m)?;
            let name = format!("offloadd_worker_{kind}_latency_seconds");
            let mut m = e.encode_descriptor(
                &name,
                &format!("{what}, by worker."),
                None,
                MetricType::Histogram,
            )?;
            for w in &self.report.workers {
                let labels = worker_label(w.worker as u32);
                histogram(get(&w.latency), bounds).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// An HDR histogram as a Prometheus one: cumulative counts at each bound, in
/// seconds (`encode` hands the encoder each bucket's own count, which it sums up
/// again). The HDR histogram keeps 3 significant digits, so a value within 0.1% of
/// a bound may be counted on either side of it.
struct PromHistogram {
    sum_s: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

fn histogram(h: &Histogram<u64>, bounds_ns: &[u64]) -> PromHistogram {
    let mut buckets: Vec<(f64, u64)> = bounds_ns
        .iter()
        .map(|&le| (le as f64 / 1e9, cumulative(h, le)))
        .collect();
    buckets.push((f64::INFINITY, h.len()));
    PromHistogram {
        sum_s: h.mean() * h.len() as f64 / 1e9,
        count: h.len(),
        buckets,
    }
}

/// Values recorded at or below `le`.
fn cumulative(h: &Histogram<u64>, le: u64) -> u64 {
    if h.is_empty() {
        return 0;
    }
    h.count_between(0, le)
}

impl PromHistogram {
    fn encode(&self, mut m: prometheus_client::encoding::MetricEncoder) -> fmt::Result {
        let mut below = 0;
        let own: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .map(|&(le, cumulative)| {
                let n = cumulative.saturating_sub(below);
                below = below.max(cumulative);
                (le, n)
            })
            .collect();
        m.encode_histogram::<NoLabelSet>(self.sum_s, self.count, &own, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_with_every_value() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for v in [15, 15, 60, 700, 3_000_000] {
            h.record(v).unwrap();
        }
        let p = histogram(&h, &PACKET_BUCKETS_NS);
        let at = |le_ns: u64| {
            p.buckets
                .iter()
                .find(|b| (b.0 - le_ns as f64 / 1e9).abs() < 1e-15)
                .unwrap()
                .1
        };
        assert_eq!(at(10), 0);
        assert_eq!(at(20), 2);
        assert_eq!(at(100), 3);
        assert_eq!(at(1_000), 4);
        assert_eq!(at(10_000_000), 5);
        assert_eq!(p.buckets.last().unwrap(), &(f64::INFINITY, 5));
        assert_eq!(p.count, 5);
        let sum_ns = p.sum_s * 1e9;
        assert!(
            (sum_ns - 3_000_790.0).abs() / 3_000_790.0 < 0.01,
            "{sum_ns}"
        );
    }

    #[test]
    fn worker_counters_with_a_cause_outcome_or_reason_are_one_family() {
        assert_eq!(
            labelled("closed_rst"),
            Some(("sessions_closed", "cause", "rst".into()))
        );
        assert_eq!(
            labelled("add_full"),
            Some(("session_adds", "outcome", "full".into()))
        );
        assert_eq!(
            labelled("tcp_invalid_out_of_window"),
            Some(("tcp_invalid", "reason", "out_of_window".into()))
        );
        assert_eq!(labelled("hits"), None);
    }
}
