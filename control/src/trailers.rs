//! Extra gRPC trailers on a response: a handler puts `ExtraTrailers` in the
//! extensions of its response, and `TrailersLayer` adds them to the trailers that
//! tonic ends the response body with (next to `grpc-status`). tonic has no call for
//! trailers of a successful unary answer; AddSession uses this for the reasons of
//! refused sessions.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// Trailers to add to this response.
#[derive(Clone, Default, Debug)]
pub struct ExtraTrailers(pub HeaderMap);

/// A response body whose trailers get `extra`.
pub struct TrailersBody<B> {
    inner: B,
    extra: Option<HeaderMap>,
}

impl<B: Body<Data = Bytes> + Unpin> Body for TrailersBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => {
                let mut trailers = match frame.into_trailers() {
                    Ok(t) => t,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                };
                if let Some(extra) = this.extra.take() {
                    for (k, v) in extra.iter() {
                        trailers.append(k, v.clone());
                    }
                }
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps the bodies of responses that carry `ExtraTrailers`.
#[derive(Clone, Copy, Default)]
pub struct TrailersLayer;

impl<S> tower::Layer<S> for TrailersLayer {
    type Service = TrailersService<S>;

    fn layer(&self, inner: S) -> TrailersService<S> {
        TrailersService { inner }
    }
}

#[derive(Clone)]
pub struct TrailersService<S> {
    inner: S,
}

impl<S, Req> tower::Service<Req> for TrailersService<S>
where
    S: tower::Service<Req, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
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
            if let Some(ExtraTrailers(extra)) = res.extensions_mut().remove::<ExtraTrailers>() {
                res = res.map(|inner| {
                    tonic::body::Body::new(TrailersBody {
                        inner,
                        extra: Some(extra),
                    })
                });
            }
            Ok(res)
        })
    }
}
