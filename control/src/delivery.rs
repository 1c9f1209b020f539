//! When a closed record counts as delivered: once the HTTP/2 transport of a live
//! stream has taken the gRPC message that carries it.
//!
//! GetClosedSessions takes records from the feed into a `Ledger`, in the order it
//! sends them. `DeliveryLayer` wraps the response body of such a call and counts
//! the gRPC messages (5-byte length-prefixed frames) in each chunk the HTTP/2 server
//! takes from it: the server asks for a chunk only for a live stream with room to
//! send, so a chunk taken is a chunk handed to the transport, and the records of the
//! messages it completes are forgotten then. If the body is dropped first (the
//! client went away, the connection broke), the ledger gives every record not yet
//! handed over back to the feed.
//!
//! Confirming later (say, when the server asks for the next chunk) would send a
//! record twice whenever a client read it and then hung up; the contract asks for
//! once.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};

use crate::body_layer::{BodyLayer, WrapBody};
use crate::device::{ControlCounters, Device};

/// Records one stream has taken and not yet seen delivered, in sending order.
pub struct Ledger {
    device: Arc<Device>,
    taken: Mutex<VecDeque<u64>>,
}

impl Ledger {
    pub fn new(device: Arc<Device>) -> Ledger {
        ControlCounters::bump(&device.counters.closed_streams_open, 1);
        Ledger {
            device,
            taken: Mutex::new(VecDeque::new()),
        }
    }

    fn taken(&self) -> std::sync::MutexGuard<'_, VecDeque<u64>> {
        self.taken.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream is about to send these records, in this order.
    pub fn taken_ids(&self, ids: impl IntoIterator<Item = u64>) {
        self.taken().extend(ids);
    }

    /// A record taken was deleted before it was sent: it will not be.
    pub fn not_sent(&self, id: u64) {
        let mut t = self.taken();
        if let Some(p) = t.iter().position(|&x| x == id) {
            t.remove(p);
        }
    }

    /// The first `n` records sent are in the transport.
    fn delivered(&self, n: usize) {
        let ids: Vec<u64> = {
            let mut t = self.taken();
            let n = n.min(t.len());
            t.drain(..n).collect()
        };
        if ids.is_empty() {
            return;
        }
        let d = &self.device;
        // Only ids whose record this was: a deleted one may name a new session.
        for id in d.feed.delivered(ids.iter().copied()) {
            d.directory.remove(id);
        }
        ControlCounters::bump(&d.counters.closed_delivered, ids.len() as u64);
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.device
            .counters
            .closed_streams_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let ids: Vec<u64> = self.taken().drain(..).collect();
        if !ids.is_empty() {
            let d = &self.device;
            ControlCounters::bump(&d.counters.closed_given_back, ids.len() as u64);
            tracing::info!(
                records = ids.len(),
                "a GetClosedSessions stream ended before its transport took them; given back"
            );
            d.feed.give_back(&ids);
        }
    }
}

/// Put in the extensions of a GetClosedSessions response for `DeliveryLayer`.
#[derive(Clone)]
pub struct LedgerHandle(pub Arc<Ledger>);

/// Counts complete gRPC messages in a byte stream.
#[derive(Default)]
pub struct MessageCounter {
    header: [u8; 5],
    have: usize,
    body_left: u64,
}

impl MessageCounter {
    /// Messages that end inside `data`.
    pub fn feed(&mut self, mut data: &[u8]) -> usize {
        let mut done = 0;
        while !data.is_empty() {
            if self.have < 5 {
                let n = (5 - self.have).min(data.len());
                self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                data = &data[n..];
                if self.have == 5 {
                    let len = u32::from_be_bytes([
                        self.header[1],
                        self.header[2],
                        self.header[3],
                        self.header[4],
                    ]);
                    self.body_left = len as u64;
                    if len == 0 {
                        done += 1;
                        self.have = 0;
                    }
                }
            } else {
                let n = (self.body_left as usize).min(data.len());
                self.body_left -= n as u64;
                data = &data[n..];
                if self.body_left == 0 {
                    done += 1;
                    self.have = 0;
                }
            }
        }
        done
    }
}

/// A response body that confirms delivery to its ledger as the server takes it.
pub struct DeliveryBody<B> {
    inner: B,
    ledger: Arc<Ledger>,
    counter: MessageCounter,
}

impl<B: Body<Data = Bytes> + Unpin> Body for DeliveryBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let complete = this.counter.feed(data.chunk());
                this.ledger.delivered(complete);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Counts the closed records of the response that carries a `LedgerHandle` as its
/// body sends them.
pub struct Delivery;

impl WrapBody for Delivery {
    type Marker = LedgerHandle;

    fn wrap(LedgerHandle(ledger): LedgerHandle, inner: tonic::body::Body) -> tonic::body::Body {
        tonic::body::Body::new(DeliveryBody {
            inner,
            ledger,
            counter: MessageCounter::default(),
        })
    }
}

/// Wraps the bodies of responses that carry a `LedgerHandle`.
pub type DeliveryLayer = BodyLayer<Delivery>;

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend_from_slice(&len.to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len as usize));
        m
    }

    #[test]
    fn counts_messages_across_any_chunking() {
        let mut all = Vec::new();
        for len in [10, 0, 300, 1, 5] {
            all.extend(message(len));
        }
        for chunk in [1, 2, 3, 5, 7, 64, 1000] {
            let mut c = MessageCounter::default();
            let total: usize = all.chunks(chunk).map(|p| c.feed(p)).sum();
            assert_eq!(total, 5, "chunks of {chunk}");
        }
        let mut c = MessageCounter::default();
        assert_eq!(c.feed(&all[..14]), 0, "the first message is 15 bytes");
        assert_eq!(c.feed(&all[14..15]), 1);
        assert_eq!(c.feed(&all[15..20]), 1, "the empty message");
    }
}
