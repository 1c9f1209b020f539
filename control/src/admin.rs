//! `offloadd.admin.v1.Admin`: the device's counters and latency histograms, read from
//! the workers on demand (a report command each), never kept here.

use std::sync::Arc;

use dataplane::stats::EngineReport;
use hdrhistogram::serialization::{Serializer, V2Serializer};
use hdrhistogram::Histogram;
use proto::admin::{
    ClosedAck, Counter, Histogram as WireHistogram, Latency, LatencyRequest, ListSessionsRequest,
    Metrics, MetricsRequest, Neighbour, Neighbours, NeighboursRequest, PortStats, SessionView,
    SessionViews, Stats, StatsRequest, WorkerStats,
};
use tonic::{Request, Response, Status, Streaming};

use crate::acked::{acked_closed_records, AckedStream};
use crate::device::{ControlCounters, Device};
use crate::metrics::Snapshot;

#[derive(Clone)]
pub struct Admin {
    pub device: Arc<Device>,
}

/// The named counters of a serializable struct, in field order.
fn counters_of<T: serde::Serialize>(v: &T) -> Vec<Counter> {
    let mut out = Vec::new();
    if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(v) {
        for (name, value) in map {
            if let Some(value) = value.as_u64() {
                out.push(Counter { name, value });
            }
        }
    }
    out
}

fn hdr_v2(h: &Histogram<u64>) -> Vec<u8> {
    let mut buf = Vec::new();
    // Writing into a Vec cannot fail for a valid histogram.
    let _ = V2Serializer::new().serialize(h, &mut buf);
    buf
}

impl Admin {
    async fn report(&self) -> Result<EngineReport, Status> {
        let d = self.device.clone();
        tokio::task::spawn_blocking(move || d.engine.report())
            .await
            .map_err(|e| Status::internal(format!("report failed: {e}")))
    }

    pub fn stats_of(&self, r: &EngineReport) -> Stats {
        let d = &self.device;
        let mut counters = counters_of(&r.total);
        counters.extend(
            d.counters
                .list()
                .into_iter()
                .map(|(name, value)| Counter { name, value }),
        );
        // Backend counters (af_packet: hand-offs, kernel drops) as port_<name>_<counter>.
        for (port, cs) in d.engine.port_counters() {
            counters.extend(cs.into_iter().map(|(n, v)| Counter {
                name: format!("port_{port}_{n}"),
                value: v,
            }));
        }
        Stats {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: d.started.elapsed().as_secs(),
            workers: d.engine.workers() as u32,
            max_sessions: d.config.dataplane.max_sessions as u64,
            sessions: r.sessions as u64,
            closed_pending: d.feed.len() as u64,
            closed_streams: d
                .counters
                .closed_streams_open
                .load(std::sync::atomic::Ordering::Relaxed),
            boot_id: d.boot.id.clone(),
            start_time: d.boot.start_time_unix(),
            connections_open: d
                .counters
                .connections_open
                .load(std::sync::atomic::Ordering::Relaxed),
            counters,
            worker_stats: r
                .workers
                .iter()
                .map(|w| WorkerStats {
                    worker: w.worker as u32,
                    core: w.core.map_or(-1, |c| c as i32),
                    sessions: w.sessions as u64,
                    capacity: w.capacity as u64,
                    closed_waiting: w.closed_waiting as u64,
                    table_bytes: w.table_bytes as u64,
                    counters: counters_of(&w.counters),
                })
                .collect(),
            port_stats: r
                .ports
                .iter()
                .enumerate()
                .map(|(i, p)| PortStats {
                    name: p.name.clone(),
                    rx: p.rx,
                    tx: p.tx,
                    tx_drops: p.tx_drops,
                    role: d.port_roles.get(i).cloned().unwrap_or_default(),
                })
                .collect(),
        }
    }

    /// The numbers of one report as Prometheus metrics (`metrics.rs`).
    pub fn snapshot(&self, report: EngineReport) -> Snapshot {
        let d = &self.device;
        let backend = d
            .engine
            .port_counters()
            .into_iter()
            .flat_map(|(port, cs)| {
                cs.into_iter()
                    .map(move |(n, v)| (port.clone(), n.to_string(), v))
            })
            .collect();
        // Every state, 0 included, so a dashboard's series do not come and go.
        let mut neighbours: Vec<(String, u64)> = dataplane::neighbour::State::ALL
            .iter()
            .map(|s| (s.name().to_string(), 0))
            .collect();
        for n in d.engine.neighbours() {
            if let Some((_, count)) = neighbours.iter_mut().find(|(s, _)| s == n.state.name()) {
                *count += 1;
            }
        }
        Snapshot {
            stats: self.stats_of(&report),
            report,
            control: d.counters.list(),
            backend,
            neighbours,
        }
    }

    /// The Prometheus text of the device now.
    pub async fn metrics_text(&self) -> Result<String, Status> {
        let r = self.report().await?;
        Ok(self.snapshot(r).text())
    }
}

/// A session as ListSessions sends it.
fn session_view(
    v: &Result<dataplane::session::SessionView, dataplane::session::SessionInfo>,
) -> SessionView {
    use dataplane::session::bytes_addr;
    match v {
        Ok(v) => SessionView {
            session: Some(crate::wire::response_from_info(&v.info)),
            live: true,
            protocol: match v.key.proto {
                dataplane::wire::PROTO_TCP => "tcp".into(),
                dataplane::wire::PROTO_UDP => "udp".into(),
                p => p.to_string(),
            },
            source: bytes_addr(v.key.v6, &v.key.src).to_string(),
            source_port: v.key.sport.into(),
            destination: bytes_addr(v.key.v6, &v.key.dst).to_string(),
            destination_port: v.key.dport.into(),
            in_lif: v.key.lif,
            out_lif: v.out_lif,
            action: format!("{:?}", v.action).to_lowercase(),
        },
        Err(info) => SessionView {
            session: Some(crate::wire::response_from_info(info)),
            ..SessionView::default()
        },
    }
}

/// The neighbour table as the admin service sends it (ports by name).
pub fn neighbours_of(device: &Device) -> Neighbours {
    let names = device.engine.port_names();
    let neighbours = device
        .engine
        .neighbours()
        .into_iter()
        .map(|n| Neighbour {
            addr: n.addr.to_string(),
            mac: n.mac.map(crate::config::format_mac).unwrap_or_default(),
            port: n
                .port
                .and_then(|p| names.get(p).cloned())
                .unwrap_or_default(),
            state: n.state.name().to_string(),
            age_ms: n.age_ms,
            source: match n.source {
                dataplane::neighbour::Source::Static => "static",
                dataplane::neighbour::Source::Learned => "learned",
            }
            .to_string(),
            sessions: n.sessions,
        })
        .collect();
    Neighbours { neighbours }
}

#[tonic::async_trait]
impl proto::admin::admin_server::Admin for Admin {
    async fn get_stats(&self, _: Request<StatsRequest>) -> Result<Response<Stats>, Status> {
        let r = self.report().await?;
        Ok(Response::new(self.stats_of(&r)))
    }

    async fn get_latency(&self, _: Request<LatencyRequest>) -> Result<Response<Latency>, Status> {
        let r = self.report().await?;
        let histograms = [("packet", &r.latency.packet_ns), ("add", &r.latency.add_ns)]
            .into_iter()
            .map(|(name, h)| WireHistogram {
                name: name.to_string(),
                unit: "ns".to_string(),
                count: h.len(),
                hdr_v2: hdr_v2(h),
            })
            .collect();
        Ok(Response::new(Latency { histograms }))
    }

    async fn get_neighbours(
        &self,
        _: Request<NeighboursRequest>,
    ) -> Result<Response<Neighbours>, Status> {
        Ok(Response::new(neighbours_of(&self.device)))
    }

    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<SessionViews>, Status> {
        let d = &self.device;
        let r = request.into_inner();
        let cap = d.config.api.list_cap;
        let limit = match r.limit {
            0 => cap,
            n => n.min(cap),
        };
        let (page, more) = d.directory.after(r.after, None, limit as usize);
        let sessions = d.views(&page).await.iter().map(session_view).collect();
        Ok(Response::new(SessionViews { sessions, more }))
    }

    type AckedClosedSessionsStream = AckedStream;

    async fn acked_closed_sessions(
        &self,
        request: Request<Streaming<ClosedAck>>,
    ) -> Result<Response<AckedStream>, Status> {
        ControlCounters::bump(&self.device.counters.closed_calls, 1);
        Ok(Response::new(acked_closed_records(
            self.device.clone(),
            request.into_inner(),
        )))
    }

    async fn get_metrics(&self, _: Request<MetricsRequest>) -> Result<Response<Metrics>, Status> {
        Ok(Response::new(Metrics {
            text: self.metrics_text().await?,
        }))
    }
}
