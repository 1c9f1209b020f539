//! Starting and stopping the whole device: the engine, the closed-feed pump, the
//! traffic simulator, and the gRPC server (SessionTable v1 and v2, Admin) on one port,
//! over TLS unless plaintext was asked for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dataplane::engine::StopReport;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;

use crate::admin::Admin;
use crate::api_io::{watched, ApiIo, ApiStream, ApiTls};
use crate::boot::BootLayer;
use crate::config::Config;
use crate::connections::{accept_loop, CallsLayer, Connection};
use crate::delivery::DeliveryLayer;
use crate::device::{start_engine, Device, RingEnd};
use crate::metrics_http::MetricsEndpoint;
use crate::service::SessionTable;
use crate::simulator::Simulator;
use crate::trailers::TrailersLayer;

/// A device that is serving.
pub struct RunningDevice {
    pub device: Arc<Device>,
    addrs: Vec<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    pump: Option<std::thread::JoinHandle<()>>,
    simulator: Option<Simulator>,
    /// The outside ends of the ring ports, when the caller asked to drive them.
    pub ring_ends: Vec<RingEnd>,
    /// The Prometheus endpoint, unless `metrics.listen` is empty.
    metrics: Option<MetricsEndpoint>,
}

/// What stopping found.
#[derive(Debug)]
pub struct StopSummary {
    pub engine: StopReport,
    /// Closed records the control plane held that no client collected.
    pub closed_held: usize,
}

/// Starts everything and begins serving; errors are one line for the operator.
pub async fn start(config: Config) -> Result<RunningDevice, String> {
    start_with(config, false).await
}

/// `start`, and with `keep_rings` the outside ends of the ring ports are handed to
/// the caller (a test sends and collects frames itself) instead of being drained or
/// simulated.
pub async fn start_with(config: Config, keep_rings: bool) -> Result<RunningDevice, String> {
    let tls = if config.api.plaintext {
        None
    } else {
        Some(ApiTls::from_config(&config)?)
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&config.api.listen)
        .await
        .map_err(|e| format!("api.listen = {:?}: {e}", config.api.listen))?
        .collect();
    let mut listeners = Vec::new();
    for a in &addrs {
        if listeners
            .iter()
            .any(|l: &TcpListener| l.local_addr().ok() == Some(*a))
        {
            continue;
        }
        match TcpListener::bind(a).await {
            Ok(l) => listeners.push(l),
            // localhost may name ::1 on a host without IPv6; one address is enough.
            Err(e) if addrs.len() > 1 => tracing::warn!("cannot listen on {a}: {e}"),
            Err(e) => {
                return Err(format!(
                    "api.listen = {:?}: cannot listen on {a}: {e}",
                    config.api.listen
                ))
            }
        }
    }
    if listeners.is_empty() {
        return Err(format!(
            "api.listen = {:?}: no address to listen on",
            config.api.listen
        ));
    }
    let bound: Vec<SocketAddr> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();

    let metrics_listener = match config.metrics.listen.as_str() {
        "" => None,
        listen => Some(MetricsEndpoint::bind(listen).await?),
    };
    let (engine, mut ring_ends) = start_engine(&config)?;
    let mut device = Device::new(engine, config);
    let kept = if keep_rings {
        std::mem::take(&mut ring_ends)
    } else {
        Vec::new()
    };
    let simulator = if keep_rings {
        None
    } else if device.config.simulate.enabled {
        let (sim, offers) = Simulator::start(device.config.simulate.clone(), ring_ends);
        device.simulator = Some(offers);
        Some(sim)
    } else {
        Some(Simulator::drain_only(ring_ends))
    };
    let device = Arc::new(device);
    let pump = device.start_pump();

    let api = &device.config.api;
    let table = SessionTable {
        device: device.clone(),
    };
    let max = api.max_message_bytes;
    let v2 = proto::v2::session_table_server::SessionTableServer::new(table.clone())
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let v1 = proto::v1::session_table_server::SessionTableServer::new(table)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let admin = proto::admin::admin_server::AdminServer::new(Admin {
        device: device.clone(),
    })
    .max_encoding_message_size(64 << 20);

    let builder = Server::builder()
        .max_concurrent_streams(api.max_concurrent_streams)
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    let metrics = match metrics_listener {
        Some(l) => Some(MetricsEndpoint::start(l, device.clone())?),
        None => None,
    };
    let incoming = accept_all(listeners, &device, tls);
    let (tx, rx) = oneshot::channel::<()>();
    let router = builder
        .layer(CallsLayer)
        .layer(BootLayer::new(&device.boot))
        .layer(DeliveryLayer::new())
        .layer(TrailersLayer::new())
        .layer(crate::oversized::layer())
        .add_service(v2)
        .add_service(v1)
        .add_service(admin);
    let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = rx.await;
    }));
    tracing::info!(
        addrs = ?bound,
        tls = !device.config.api.plaintext,
        workers = device.engine.workers(),
        max_sessions = device.config.dataplane.max_sessions,
        boot_id = %device.boot.id,
        "offloadd serving openoffload.v1/v2.SessionTable and offloadd.admin.v1.Admin"
    );
    Ok(RunningDevice {
        device,
        addrs: bound,
        shutdown: Some(tx),
        server,
        pump: Some(pump),
        simulator,
        ring_ends: kept,
        metrics,
    })
}

/// Closed records the device holds: in the feed, and waiting in the workers.
async fn closed_not_collected(device: &Arc<Device>) -> usize {
    let d = device.clone();
    let in_workers = tokio::task::spawn_blocking(move || d.engine.report())
        .await
        .map_or(0, |r| r.workers.iter().map(|w| w.closed_waiting).sum());
    device.feed.len() + in_workers
}

/// Most session ids named in the log when stopping drops sessions.
const DROPPED_IDS_LOGGED: usize = 100;

/// A stop loses every session (live, or closed and not yet delivered): the log names
/// them, so an operator can tell the firewall which to take back.
fn log_dropped_sessions(device: &Device) {
    let total = device.directory.len();
    if total == 0 {
        return;
    }
    let named: Vec<String> = device
        .directory
        .slice(0, DROPPED_IDS_LOGGED)
        .into_iter()
        .map(|(id, _)| id.to_string())
        .collect();
    let more = total - named.len();
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    tracing::warn!(
        dropped = total,
        boot_id = %device.boot.id,
        "stopping drops {total} sessions: ids {}{more}",
        named.join(" ")
    );
}

/// The connections accepted on every listener, within `api.max_connections`, each
/// after its TLS handshake (done concurrently) unless plaintext; the listeners close
/// when the server drops the stream.
fn accept_all(
    listeners: Vec<TcpListener>,
    device: &Arc<Device>,
    tls: Option<ApiTls>,
) -> ReceiverStream<std::io::Result<ApiIo>> {
    let (accepted_tx, accepted) = mpsc::channel(16);
    for l in listeners {
        tokio::spawn(accept_loop(l, device.clone(), accepted_tx.clone()));
    }
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(secure_all(accepted, tx, tls));
    ReceiverStream::new(rx)
}

/// Hands each accepted connection to the server, after its TLS handshake; returns
/// (ending the accept loops) when the server is gone.
async fn secure_all(
    mut accepted: mpsc::Receiver<std::io::Result<Connection>>,
    out: mpsc::Sender<std::io::Result<ApiIo>>,
    tls: Option<ApiTls>,
) {
    loop {
        let next = tokio::select! {
            _ = out.closed() => return,
            next = accepted.recv() => next,
        };
        let Some(Ok(connection)) = next else {
            return;
        };
        let Some(tls) = tls.clone() else {
            if out
                .send(Ok(watched(ApiStream::Plain(connection))))
                .await
                .is_err()
            {
                return;
            }
            continue;
        };
        let out = out.clone();
        tokio::spawn(async move {
            match tls.accept(connection).await {
                Ok(stream) => {
                    let _ = out.send(Ok(watched(stream))).await;
                }
                Err(e) => tracing::debug!("TLS handshake failed: {e}"),
            }
        });
    }
}

impl RunningDevice {
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Where the Prometheus endpoint listens, if it does.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.addr)
    }

    /// The drain before a stop: adds are refused from now on (UNAVAILABLE), and this
    /// waits up to `api.drain_ms` for GetClosedSessions to collect every closed
    /// record. The server keeps serving meanwhile.
    pub async fn drain(&self) {
        let device = &self.device;
        device.add_rounds.close();
        let limit = Duration::from_millis(device.config.api.drain_ms);
        let deadline = tokio::time::Instant::now() + limit;
        tracing::info!(
            closed = closed_not_collected(device).await,
            "draining: adds refused; waiting up to {} ms for GetClosedSessions",
            limit.as_millis()
        );
        loop {
            let left = closed_not_collected(device).await;
            if left == 0 {
                tracing::info!("drained: every closed record collected");
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("drain time up: {left} closed records not collected");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops serving (open follow streams are cut after a grace period), then stops
    /// the simulator and the workers.
    pub async fn shutdown(mut self) -> StopSummary {
        self.device.stopping.send_replace(true);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let server = &mut self.server;
        if tokio::time::timeout(Duration::from_secs(2), &mut *server)
            .await
            .is_err()
        {
            server.abort();
        }
        if let Some(m) = self.metrics.take() {
            m.stop().await;
        }
        log_dropped_sessions(&self.device);
        if let Some(sim) = self.simulator.take() {
            sim.stop();
        }
        let device = self.device.clone();
        let engine = tokio::task::spawn_blocking(move || device.stop())
            .await
            .unwrap_or_default();
        if let Some(p) = self.pump.take() {
            let _ = tokio::task::spawn_blocking(move || p.join()).await;
        }
        StopSummary {
            engine,
            closed_held: self.device.feed.len(),
        }
    }
}
