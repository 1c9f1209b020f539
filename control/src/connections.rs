//! Bounds on API connections: at most `api.max_connections` open (one accepted
//! beyond is closed at once), none idle longer than `api.idle_timeout_ms`, and an
//! accept loop that backs off when the process is out of file descriptors instead
//! of spinning on a listener that stays readable.
//!
//! A connection is idle while no call is open on it: from its accept (so one that
//! never finishes TLS or never sends the HTTP/2 preface counts too) or from its last
//! call's end. `CallsLayer` counts the open calls of each connection (a call is open
//! until its response body is done or dropped, so a long GetClosedSessions stream
//! keeps its connection); `Connection` fails its reads once the idle time is up,
//! which ends the connection under TLS and HTTP/2 alike.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use crate::device::{ControlCounters, Device};
use crate::h2_credit::CreditBook;

/// Accept backoff at the descriptor limit: starts here, doubles up to `BACKOFF_MAX`.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(100);
/// At most one "over the cap" warning this often (with the count since the last).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(1);

/// Open calls of one connection, and since when it has had none.
#[derive(Debug)]
pub struct Calls {
    open: AtomicUsize,
    idle_since: Mutex<Instant>,
    /// The connection's reader, woken when the last open call ends (its idle time
    /// starts then).
    reader: Mutex<Option<Waker>>,
}

impl Calls {
    fn new() -> Calls {
        Calls {
            open: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            reader: Mutex::new(None),
        }
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Option<Waker>> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Has `waker` woken when the last open call ends; false if none is open now.
    fn wake_when_idle(&self, waker: &Waker) -> bool {
        *self.reader() = Some(waker.clone());
        self.open.load(Ordering::SeqCst) > 0
    }

    fn call_ended(&self) {
        // The idle time starts before the count can reach zero, so a reader never
        // sees zero calls with a stale start.
        *self.idle_since() = Instant::now();
        if self.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Some(w) = self.reader().take() {
                w.wake();
            }
        }
    }

    fn idle_since(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.idle_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the connection's idle time is up, if no call is open.
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        let since = *self.idle_since();
        (self.open.load(Ordering::SeqCst) == 0).then_some(since + timeout)
    }
}

/// What tonic puts in the extensions of each request of a connection.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    pub remote: Option<SocketAddr>,
    calls: Arc<Calls>,
    /// What the connection's HTTP/2 frames prove the client received.
    pub credit: Arc<CreditBook>,
}

/// An accepted TCP connection, counted open until dropped, whose reads fail once it
/// has been idle for the timeout.
pub struct Connection {
    tcp: TcpStream,
    info: ConnectionInfo,
    device: Arc<Device>,
    idle_timeout: Duration,
    idle_timer: Pin<Box<Sleep>>,
    closed_idle: bool,
}

impl Connection {
    fn new(tcp: TcpStream, device: Arc<Device>) -> Connection {
        ControlCounters::bump(&device.counters.connections_open, 1);
        let idle_timeout = Duration::from_millis(device.config.api.idle_timeout_ms);
        Connection {
            info: ConnectionInfo {
                remote: tcp.peer_addr().ok(),
                calls: Arc::new(Calls::new()),
                credit: Arc::new(CreditBook::default()),
            },
            tcp,
            device,
            idle_timeout,
            idle_timer: Box::pin(tokio::time::sleep(idle_timeout)),
            closed_idle: false,
        }
    }

    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// Whether the idle time is up; otherwise `cx` is woken when it may be: at the
    /// idle deadline, or when the last open call ends.
    fn idle_time_is_up(&mut self, cx: &mut Context<'_>) -> bool {
        if self.closed_idle {
            return true;
        }
        loop {
            let Some(deadline) = self.info.calls.idle_deadline(self.idle_timeout) else {
                if self.info.calls.wake_when_idle(cx.waker()) {
                    return false;
                }
                continue;
            };
            if deadline <= Instant::now() {
                self.close_idle();
                return true;
            }
            if self.idle_timer.deadline() != deadline {
                self.idle_timer.as_mut().reset(deadline);
            }
            if self.idle_timer.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }

    fn close_idle(&mut self) {
        self.closed_idle = true;
        ControlCounters::bump(&self.device.counters.connections_closed_idle, 1);
        tracing::debug!(peer = ?self.info.remote, "closing an idle connection");
    }

    fn idle_error() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "connection idle: closed")
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.device
            .counters
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.idle_time_is_up(cx) {
            return Poll::Ready(Err(Connection::idle_error()));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.closed_idle {
            return Poll::Ready(Err(Connection::idle_error()));
        }
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Accepts on `listener` until `out` is closed (the server stopped), sending each
/// connection within the cap to `out`.
pub async fn accept_loop(
    listener: TcpListener,
    device: Arc<Device>,
    out: mpsc::Sender<io::Result<Connection>>,
) {
    let mut refusals = RefusalLog::default();
    let mut fd_limit = FdLimitBackoff::default();
    loop {
        let accepted = tokio::select! {
            _ = out.closed() => return,
            a = listener.accept() => a,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => {
                fd_limit.ended();
                tcp
            }
            Err(e) => {
                let pause = fd_limit.failed(&e, &device);
                tokio::select! {
                    _ = out.closed() => return,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let open = device.counters.connections_open.load(Ordering::Relaxed);
        if open >= device.config.api.max_connections as u64 {
            ControlCounters::bump(&device.counters.connections_refused, 1);
            refusals.refused(device.config.api.max_connections);
            drop(tcp);
            continue;
        }
        let _ = tcp.set_nodelay(true);
        if out
            .send(Ok(Connection::new(tcp, device.clone())))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Warns of connections over the cap at most once per `REFUSAL_LOG_EVERY`.
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl RefusalLog {
    fn refused(&mut self, cap: usize) {
        self.unlogged += 1;
        if self.last.is_some_and(|t| t.elapsed() < REFUSAL_LOG_EVERY) {
            return;
        }
        tracing::warn!(
            refused = self.unlogged,
            "api.max_connections = {cap} connections are open: closed new ones at accept"
        );
        self.last = Some(Instant::now());
        self.unlogged = 0;
    }
}

/// The pause after a failed accept: growing while accept keeps failing (out of file
/// descriptors, the usual cause, leaves the listener readable, so retrying at once
/// would spin), logged once per episode.
#[derive(Default)]
struct FdLimitBackoff {
    pause: Option<Duration>,
}

impl FdLimitBackoff {
    fn failed(&mut self, e: &io::Error, device: &Device) -> Duration {
        let pause = match self.pause {
            None => {
                ControlCounters::bump(&device.counters.accept_fd_limit, 1);
                tracing::warn!(
                    "accept failed: {e}; retrying every {}-{} ms until it works again",
                    BACKOFF_MIN.as_millis(),
                    BACKOFF_MAX.as_millis()
                );
                BACKOFF_MIN
            }
            Some(p) => (p * 2).min(BACKOFF_MAX),
        };
        self.pause = Some(pause);
        pause
    }

    fn ended(&mut self) {
        if self.pause.take().is_some() {
            tracing::info!("accept works again");
        }
    }
}

/// Counts the open calls of each connection (see the module comment).
#[derive(Clone, Default)]
pub struct CallsLayer;

impl<S> tower::Layer<S> for CallsLayer {
    type Service = CallsService<S>;

    fn layer(&self, inner: S) -> CallsService<S> {
        CallsService { inner }
    }
}

#[derive(Clone)]
pub struct CallsService<S> {
    inner: S,
}

type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody> tower::Service<http::Request<ReqBody>> for CallsService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let open = req
            .extensions()
            .get::<ConnectionInfo>()
            .map(|c| OpenCall::new(c.calls.clone()));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?;
            Ok(match open {
                Some(open) => {
                    res.map(|body| tonic::body::Body::new(CallBody { body, _open: open }))
                }
                None => res,
            })
        })
    }
}

/// One open call: counted from the request until the response body is done.
struct OpenCall(Arc<Calls>);

impl OpenCall {
    fn new(calls: Arc<Calls>) -> OpenCall {
        calls.open.fetch_add(1, Ordering::SeqCst);
        OpenCall(calls)
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        self.0.call_ended();
    }
}

/// A response body that keeps its call open until the body is dropped.
struct CallBody {
    body: tonic::body::Body,
    _open: OpenCall,
}

impl Body for CallBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
