//! One tower layer for every way the device adds to what tonic sends: a handler puts
//! a marker in the extensions of its response, and the layer of that marker wraps
//! the response body (`delivery.rs` counts closed records as they are sent,
//! `trailers.rs` adds trailers). Responses without the marker pass untouched.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;

/// What a marker does to the body of the response that carries it.
pub trait WrapBody: Send + Sync + 'static {
    /// The extension a handler puts on its response to have the body wrapped.
    type Marker: Send + Sync + 'static;

    fn wrap(marker: Self::Marker, body: Body) -> Body;
}

/// Wraps the bodies of responses that carry `W::Marker`.
pub struct BodyLayer<W>(PhantomData<fn() -> W>);

impl<W> BodyLayer<W> {
    pub fn new() -> BodyLayer<W> {
        BodyLayer(PhantomData)
    }
}

impl<W> Default for BodyLayer<W> {
    fn default() -> Self {
        BodyLayer::new()
    }
}

impl<W> Clone for BodyLayer<W> {
    fn clone(&self) -> Self {
        BodyLayer::new()
    }
}

impl<S, W> tower::Layer<S> for BodyLayer<W> {
    type Service = BodyService<S, W>;

    fn layer(&self, inner: S) -> BodyService<S, W> {
        BodyService {
            inner,
            _wrap: PhantomData,
        }
    }
}

pub struct BodyService<S, W> {
    inner: S,
    _wrap: PhantomData<fn() -> W>,
}

impl<S: Clone, W> Clone for BodyService<S, W> {
    fn clone(&self) -> Self {
        BodyService {
            inner: self.inner.clone(),
            _wrap: PhantomData,
        }
    }
}

impl<S, W, Req> tower::Service<Req> for BodyService<S, W>
where
    S: tower::Service<Req, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    W: WrapBody,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut res = fut.await?;
            if let Some(marker) = res.extensions_mut().remove::<W::Marker>() {
                res = res.map(|body| W::wrap(marker, body));
            }
            Ok(res)
        })
    }
}
