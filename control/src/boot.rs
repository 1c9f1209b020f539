//! A restart is visible: each start of the device has a boot id (128 random bits) and
//! a start time, sent as response metadata on every call of every service, so a
//! client that sees the id change knows the sessions it offloaded are gone.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;

/// Response metadata: the boot id, 32 lowercase hex digits.
pub const BOOT_ID_HEADER: &str = "offloadd-boot-id";
/// Response metadata: the start time, seconds since the Unix epoch (UTC).
pub const START_TIME_HEADER: &str = "offloadd-start-time";

/// This start of the device.
#[derive(Clone, Debug)]
pub struct Boot {
    pub id: String,
    pub started: SystemTime,
}

impl Boot {
    pub fn new() -> Boot {
        Boot {
            id: format!("{:032x}", rand::random::<u128>()),
            started: SystemTime::now(),
        }
    }

    pub fn start_time_unix(&self) -> u64 {
        self.started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

impl Default for Boot {
    fn default() -> Self {
        Boot::new()
    }
}

/// Adds the boot id and start time to the headers of every response.
#[derive(Clone)]
pub struct BootLayer {
    id: HeaderValue,
    start_time: HeaderValue,
}

impl BootLayer {
    pub fn new(boot: &Boot) -> BootLayer {
        BootLayer {
            id: HeaderValue::from_str(&boot.id).expect("hex digits are a header value"),
            start_time: HeaderValue::from(boot.start_time_unix()),
        }
    }
}

impl<S> tower::Layer<S> for BootLayer {
    type Service = BootService<S>;

    fn layer(&self, inner: S) -> BootService<S> {
        BootService {
            inner,
            headers: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct BootService<S> {
    inner: S,
    headers: BootLayer,
}

type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S, Req, ResBody> tower::Service<Req> for BootService<S>
where
    S: tower::Service<Req, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let fut = self.inner.call(req);
        let BootLayer { id, start_time } = self.headers.clone();
        Box::pin(async move {
            let mut res = fut.await?;
            let h = res.headers_mut();
            h.insert(BOOT_ID_HEADER, id);
            h.insert(START_TIME_HEADER, start_time);
            Ok(res)
        })
    }
}
