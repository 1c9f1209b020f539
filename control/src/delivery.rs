//! When a closed record counts as delivered: once the client's HTTP/2 stack has
//! proved it has the bytes of the gRPC message that carries it.
//!
//! GetClosedSessions takes records from the feed into a `Ledger`, in the order it
//! sends them. `DeliveryLayer` wraps the response body of such a call: it notes the
//! stream offset at which each record's message ends as hyper takes the body's
//! chunks, and hands the body's first bytes to the connection's `CreditBook`
//! (`h2_credit.rs`), which finds the HTTP/2 stream that writes them and from then on
//! tells the ledger what the wire says:
//! - the client returns stream credit (WINDOW_UPDATE) for bytes its application
//!   consumed: every record whose message ends within the credit, and within what
//!   was written before the credit arrived, is delivered (forgotten by the feed), in
//!   order (credit given ahead of the data, as grpc C-core does, proves nothing
//!   about bytes not yet sent);
//! - the stream is about to end (its records all sent): clients return no credit
//!   for a stream's last bytes, so the body holds back the end (trailers) and asks
//!   for a PING once everything it handed over is written; the ACK proves the
//!   client's stack read it all, the rest is delivered, and the end goes (a client
//!   that has the end has proved everything, even if it exits at once). A client
//!   silent for `END_PROOF_WAIT` gets the end anyway, with a PING after it;
//! - the stream is reset either way or the connection ends: every record not yet
//!   delivered goes back to the feed, first in line.
//!
//! Bytes handed to hyper are not proof: hyper takes a whole chunk as soon as the
//! stream has any room, and h2 buffers it beyond the client's window. So the record
//! stream also keeps what it sends within the client's window (`Ledger::room`): a
//! client that stops reading holds at most a window's worth of records, until it
//! resets, or keepalive or the idle limit ends its connection.
//!
//! A client returns credit in batches (h2 when a third to a half of the window is
//! consumed, grpc-go at a quarter), so records its application read after the last
//! credit come back if it then goes away: sent twice, never lost. A client that
//! returns credit before its application reads (a window grown ahead of reading)
//! can lose those records if it is killed; `Admin/AckedClosedSessions` (acked.rs)
//! is exact for such clients.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

use crate::body_layer::{BodyLayer, WrapBody};
use crate::device::{ControlCounters, Device};
use crate::h2_credit::{CreditBook, StreamDelivery};

/// A record taken by a stream: its message's size, and where the message ends in the
/// stream once the body has handed it to hyper.
struct Sent {
    id: u64,
    bytes: u64,
    end: Option<u64>,
}

#[derive(Default)]
struct LedgerState {
    /// Taken and not yet delivered or given back, in sending order.
    records: VecDeque<Sent>,
    /// Body bytes handed to hyper.
    handed: u64,
    /// Body bytes written to the connection, and credited by the client.
    written: u64,
    credited: u64,
    /// Bytes the client proved it consumed: credit counts only for bytes written
    /// before it arrived (a client may give credit ahead of the data, and credit
    /// for bytes not yet sent proves nothing about them).
    proved: u64,
    /// Bytes of the records the record stream has produced (the window gate).
    queued: u64,
    /// The stream is over: records taken from now on go straight back.
    over: bool,
    /// The body holds back the stream's end until a PING proves the client has it all.
    end_proof: EndProof,
    /// The body's task, woken when the end may go.
    body_task: Option<std::task::Waker>,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum EndProof {
    #[default]
    NotAsked,
    /// Waiting for every byte handed to hyper to be written.
    Asked,
    /// A PING is asked for.
    Pinged,
}

/// What the body does with the stream's end.
enum EndStep {
    Send,
    Wait,
    /// Everything is written: ask the connection for the PING, then wait.
    AskPing,
}

/// Records one stream has taken and not yet seen delivered, in sending order.
pub struct Ledger {
    device: Arc<Device>,
    /// The connection's frame watch; without one (not a watched connection) a record
    /// counts as delivered when hyper takes it.
    book: Option<Arc<CreditBook>>,
    state: Mutex<LedgerState>,
    /// Woken when credit arrives or the stream is over.
    pub changed: Notify,
}

impl Ledger {
    pub fn new(device: Arc<Device>, book: Option<Arc<CreditBook>>) -> Ledger {
        ControlCounters::bump(&device.counters.closed_streams_open, 1);
        Ledger {
            device,
            book,
            state: Mutex::new(LedgerState::default()),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LedgerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream is about to send these records (id, and bytes of its gRPC message),
    /// in this order; false if the stream is over (they went back).
    pub fn taken_ids(&self, taken: &[(u64, u64)]) -> bool {
        let mut s = self.state();
        if s.over {
            drop(s);
            self.give_back(&taken.iter().map(|t| t.0).collect::<Vec<_>>());
            return false;
        }
        for &(id, bytes) in taken {
            s.records.push_back(Sent {
                id,
                bytes,
                end: None,
            });
            s.queued += bytes;
        }
        true
    }

    /// A record taken was deleted before it was sent: it will not be.
    pub fn not_sent(&self, id: u64) {
        let mut s = self.state();
        if let Some(p) = s.records.iter().position(|r| r.id == id && r.end.is_none()) {
            let bytes = s.records.remove(p).map_or(0, |r| r.bytes);
            s.queued -= bytes;
        }
    }

    /// Bytes the stream may still produce within the client's window (<= 0: wait
    /// for `changed`).
    pub fn room(&self) -> i64 {
        let Some(book) = &self.book else {
            return i64::MAX;
        };
        let s = self.state();
        // The stream's HTTP/2 send window: initial + credit - sent (bytes queued
        // count as sent: they will be).
        book.peer_window() as i64 + s.credited as i64 - s.queued as i64
    }

    /// Whether the record stream has produced anything yet.
    pub fn has_queued(&self) -> bool {
        self.state().queued > 0
    }

    pub fn is_over(&self) -> bool {
        self.state().over
    }

    /// hyper took body bytes in which messages end at these stream offsets.
    fn handed(&self, ends: &[u64], total: u64) {
        let mut s = self.state();
        s.handed = total;
        let mut ends = ends.iter();
        for r in s.records.iter_mut().filter(|r| r.end.is_none()) {
            match ends.next() {
                Some(&e) => r.end = Some(e),
                None => break,
            }
        }
        if self.book.is_none() {
            self.deliver_up_to(s, total);
        }
    }

    /// The body is about to end the stream: whether the end may go (everything proved
    /// or settled), or must wait for a PING's ACK (`task` is woken).
    fn end_step(&self, task: &std::task::Waker) -> EndStep {
        let mut s = self.state();
        if s.over || s.records.is_empty() || self.book.is_none() {
            return EndStep::Send;
        }
        s.body_task = Some(task.clone());
        if s.end_proof == EndProof::NotAsked {
            s.end_proof = EndProof::Asked;
        }
        if s.end_proof == EndProof::Asked && s.written >= s.handed {
            s.end_proof = EndProof::Pinged;
            return EndStep::AskPing;
        }
        EndStep::Wait
    }

    fn wake_body(s: &mut LedgerState) {
        if let Some(t) = s.body_task.take() {
            t.wake();
        }
    }

    /// Delivers the records whose messages end at or before `limit`, in order.
    fn deliver_up_to(&self, mut s: std::sync::MutexGuard<'_, LedgerState>, limit: u64) {
        let mut ids = Vec::new();
        while s
            .records
            .front()
            .is_some_and(|r| r.end.is_some_and(|e| e <= limit))
        {
            ids.extend(s.records.pop_front().map(|r| r.id));
        }
        drop(s);
        if ids.is_empty() {
            return;
        }
        let d = &self.device;
        // Counted first: whoever sees them gone from the feed sees them counted.
        ControlCounters::bump(&d.counters.closed_delivered, ids.len() as u64);
        d.forget_delivered(ids);
    }

    /// Delivers what is proved (up to `limit`), gives back the rest: the stream is
    /// over.
    fn settle(&self, limit: u64) {
        let mut s = self.state();
        s.over = true;
        Ledger::wake_body(&mut s);
        let proved = s
            .records
            .iter()
            .take_while(|r| r.end.is_some_and(|e| e <= limit))
            .count();
        let rest: Vec<u64> = s.records.drain(proved..).map(|r| r.id).collect();
        self.deliver_up_to(s, limit);
        self.give_back(&rest);
        self.changed.notify_one();
    }

    fn give_back(&self, ids: &[u64]) {
        self.device.give_back_closed(
            ids,
            "a GetClosedSessions stream ended before its client proved it had them",
        );
    }

    /// hyper dropped the body: records it never handed over go back now; those
    /// handed over wait for what the wire says (or the connection's end). A body
    /// dropped before its end (the stream was reset or the connection broke) whose
    /// bytes were never written never will be: h2 drops a reset stream's queue.
    fn body_dropped(&self, ended: bool) {
        let mut s = self.state();
        let never_written = !ended && s.written == 0;
        let back: Vec<u64> = s
            .records
            .iter()
            .filter(|r| r.end.is_none() || never_written)
            .map(|r| r.id)
            .collect();
        s.records.retain(|r| r.end.is_some() && !never_written);
        if s.handed == 0 || never_written {
            s.over = true;
        }
        drop(s);
        self.give_back(&back);
    }
}

impl StreamDelivery for Ledger {
    fn written(&self, bytes: u64) {
        let mut s = self.state();
        s.written += bytes;
        if s.end_proof == EndProof::Asked && s.written >= s.handed {
            Ledger::wake_body(&mut s);
        }
    }

    fn credited(&self, bytes: u64) {
        let mut s = self.state();
        s.credited += bytes;
        s.proved = s.proved.max(s.credited.min(s.written));
        let limit = s.proved;
        self.deliver_up_to(s, limit);
        self.changed.notify_one();
    }

    fn received_all(&self) {
        let written = self.state().written;
        self.settle(written);
    }

    fn ended(&self) {
        let limit = self.state().proved;
        self.settle(limit);
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.device
            .counters
            .closed_streams_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let ids: Vec<u64> = self.state().records.drain(..).map(|r| r.id).collect();
        self.give_back(&ids);
    }
}

/// Put in the extensions of a GetClosedSessions response for `DeliveryLayer`.
#[derive(Clone)]
pub struct LedgerHandle(pub Arc<Ledger>);

/// Finds where gRPC messages end in a byte stream.
#[derive(Default)]
pub struct MessageCounter {
    header: [u8; 5],
    have: usize,
    body_left: u64,
    /// Bytes fed so far.
    offset: u64,
}

impl MessageCounter {
    /// Feeds `data`; pushes to `ends` the stream offset just past each message that
    /// ends inside it.
    pub fn feed(&mut self, mut data: &[u8], ends: &mut Vec<u64>) {
        while !data.is_empty() {
            if self.have < 5 {
                let n = (5 - self.have).min(data.len());
                self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                self.offset += n as u64;
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
                        ends.push(self.offset);
                        self.have = 0;
                    }
                }
            } else {
                let n = (self.body_left as usize).min(data.len());
                self.body_left -= n as u64;
                self.offset += n as u64;
                data = &data[n..];
                if self.body_left == 0 {
                    ends.push(self.offset);
                    self.have = 0;
                }
            }
        }
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }
}

/// A response body that tells its ledger where each record's message ends as hyper
/// takes the body, and hands its first bytes to the connection's frame watch.
pub struct DeliveryBody<B: Body> {
    inner: B,
    ledger: Arc<Ledger>,
    counter: MessageCounter,
    ends: Vec<u64>,
    /// The body has returned its end to hyper.
    ended: bool,
    /// The stream's end (trailers, or none), held back for the PING's ACK.
    held_end: Option<Option<Result<Frame<Bytes>, B::Error>>>,
    end_wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B: Body> DeliveryBody<B> {
    fn handed(&mut self, data: &Bytes) {
        if data.is_empty() {
            return;
        }
        let first = self.counter.offset() == 0;
        self.ends.clear();
        self.counter.feed(data.chunk(), &mut self.ends);
        self.ledger.handed(&self.ends, self.counter.offset());
        if first {
            if let Some(book) = &self.ledger.book {
                book.await_match(self.ledger.clone(), data.clone());
            }
        }
    }
}

// No field is pinned structurally (`inner` is polled only when it is `Unpin`).
impl<B: Body> Unpin for DeliveryBody<B> {}

impl<B: Body> Drop for DeliveryBody<B> {
    fn drop(&mut self) {
        self.ledger.body_dropped(self.ended);
    }
}

/// How long a body holds back its stream's end for the PING's ACK; past it (a client
/// that does not answer PINGs, or a stream not found on the wire) the end goes, and
/// the PING after the END_STREAM frame (`h2_credit.rs`) is the proof.
const END_PROOF_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl<B: Body> DeliveryBody<B> {
    /// Whether the stream's end (its trailers) may go now. Clients read PINGs while
    /// a stream is open, but one that exits once it has the end may never answer
    /// a PING sent after it, so the proof is asked for before the end.
    fn end_may_go(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self
            .end_wait
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(END_PROOF_WAIT)));
        if deadline.as_mut().poll(cx).is_ready() {
            return true;
        }
        match self.ledger.end_step(cx.waker()) {
            EndStep::Send => true,
            EndStep::Wait => false,
            EndStep::AskPing => {
                if let Some(book) = &self.ledger.book {
                    book.prove_with_ping(self.ledger.clone());
                }
                false
            }
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for DeliveryBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if this.held_end.is_some() {
            if !this.end_may_go(cx) {
                return Poll::Pending;
            }
            this.ended = true;
            return Poll::Ready(this.held_end.take().and_then(|end| end));
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) if frame.is_data() => {
                if let Some(data) = frame.data_ref() {
                    this.handed(data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            // Trailers or the end: held until the client has proved it has the rest.
            Poll::Ready(end @ (Some(Ok(_)) | None)) => {
                this.held_end = Some(end);
                if !this.end_may_go(cx) {
                    return Poll::Pending;
                }
                this.ended = true;
                Poll::Ready(this.held_end.take().and_then(|end| end))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held_end.is_none() && self.inner.is_end_stream()
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
            ends: Vec::new(),
            ended: false,
            held_end: None,
            end_wait: None,
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

    fn ends_of(c: &mut MessageCounter, data: &[u8]) -> Vec<u64> {
        let mut ends = Vec::new();
        c.feed(data, &mut ends);
        ends
    }

    #[test]
    fn finds_message_ends_across_any_chunking() {
        let mut all = Vec::new();
        for len in [10, 0, 300, 1, 5] {
            all.extend(message(len));
        }
        for chunk in [1, 2, 3, 5, 7, 64, 1000] {
            let mut c = MessageCounter::default();
            let ends: Vec<u64> = all.chunks(chunk).flat_map(|p| ends_of(&mut c, p)).collect();
            assert_eq!(ends, [15, 20, 325, 331, 341], "chunks of {chunk}");
        }
        let mut c = MessageCounter::default();
        assert!(
            ends_of(&mut c, &all[..14]).is_empty(),
            "the first message is 15 bytes"
        );
        assert_eq!(ends_of(&mut c, &all[14..15]), [15]);
        assert_eq!(ends_of(&mut c, &all[15..20]), [20], "the empty message");
        assert_eq!(c.offset(), 20);
    }
}
