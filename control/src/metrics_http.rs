//! The Prometheus endpoint: HTTP/1.1 on `metrics.listen`, `GET /metrics` answering
//! the text of `metrics.rs`.
//!
//! A scraper opens a connection, asks, reads and goes; the endpoint is on
//! localhost by default and has no TLS. So each connection serves one request
//! (no keep-alive), gets `HEADER_TIMEOUT` to send it and `CONNECTION_TIMEOUT` in
//! all, and at most `MAX_CONNECTIONS` are served at once (one more is closed at
//! once): a client that never speaks or never reads cannot hold the endpoint.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};

use crate::admin::Admin;
use crate::device::Device;

const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_CONNECTIONS: usize = 64;

/// The endpoint, listening.
pub struct MetricsEndpoint {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsEndpoint {
    /// Binds `listen` (host:port); done before anything else starts, so a port in
    /// use stops the device before it has started its workers.
    pub async fn bind(listen: &str) -> Result<TcpListener, String> {
        TcpListener::bind(listen)
            .await
            .map_err(|e| format!("metrics.listen = {listen:?}: cannot listen: {e}"))
    }

    /// Serves on `listener` until stopped.
    pub fn start(listener: TcpListener, device: Arc<Device>) -> Result<MetricsEndpoint, String> {
        let addr = listener
            .local_addr()
            .map_err(|e| format!("metrics.listen: {e}"))?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, Admin { device }, stopped));
        tracing::info!(%addr, "Prometheus metrics at http://{addr}/metrics");
        Ok(MetricsEndpoint {
            addr,
            stop: Some(stop),
            task,
        })
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

async fn accept_loop(listener: TcpListener, admin: Admin, mut stopped: oneshot::Receiver<()>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, most likely: wait rather than spin.
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue; // Dropping the stream closes it.
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, serve(stream, admin)).await;
        });
    }
}

async fn serve(stream: tokio::net::TcpStream, admin: Admin) {
    let service = hyper::service::service_fn(move |req| {
        let admin = admin.clone();
        async move { Ok::<_, Infallible>(answer(&admin, &req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn answer(admin: &Admin, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/metrics" => match admin.metrics_text().await {
            Ok(text) => {
                let mut r = Response::new(Full::new(Bytes::from(text)));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
                );
                r
            }
            Err(status) => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{}\n", status.message()),
            ),
        },
        "/" => plain(StatusCode::OK, "offloadd: Prometheus metrics at /metrics\n"),
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        ),
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
