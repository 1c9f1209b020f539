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

use crate::body_layer::{BodyLayer, WrapBody};

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

/// Adds `ExtraTrailers` to the trailers of the response that carries them.
pub struct Trailers;

impl WrapBody for Trailers {
    type Marker = ExtraTrailers;

    fn wrap(ExtraTrailers(extra): ExtraTrailers, inner: tonic::body::Body) -> tonic::body::Body {
        tonic::body::Body::new(TrailersBody {
            inner,
            extra: Some(extra),
        })
    }
}

/// Wraps the bodies of responses that carry `ExtraTrailers`.
pub type TrailersLayer = BodyLayer<Trailers>;
