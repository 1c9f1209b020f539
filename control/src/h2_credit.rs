//! Watching an API connection's HTTP/2 frames (in the clear, under hyper and above
//! TLS) for what proves a client received a stream's bytes.
//!
//! hyper and tonic hide the HTTP/2 stream of a call and the client's flow control
//! from the service, so `CreditIo` wraps the connection's IO and reads the frames as
//! they pass, without changing them, into the connection's `CreditBook`:
//! - written DATA frames: which stream carries which bytes. A stream is matched to
//!   the response body that produced its first bytes (`CreditBook::await_match`);
//!   the first gRPC message of a GetClosedSessions body names a record no other
//!   stream holds, so the match is exact. A stream whose bytes match no waiting body
//!   (or more than one) is never credited: its records go back when it ends.
//! - WINDOW_UPDATE from the client on a matched stream: the client's HTTP/2 stack
//!   returns credit for bytes its application consumed.
//! - RST_STREAM (either way), or the connection's end: the stream is over.
//! - Clients return no credit for a stream's last bytes, so a body about to end asks
//!   for a PING of the device's own once its bytes are all written
//!   (`CreditBook::prove_with_ping`), and a stream that ends (END_STREAM) without
//!   having asked gets one after its end; the client's ACK proves its stack read
//!   every byte before the PING. The PING goes with hyper's next write, or from the
//!   read side when hyper has nothing to write. Its ACK is taken out of what hyper
//!   reads (hyper never sent that PING).
//!
//! What a matched stream is told is `StreamDelivery`; `delivery.rs` decides what it
//! means for closed records.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::h2_frames::{
    ping_frame, ClientFrame, FrameHeader, DATA, DEFAULT_WINDOW, HEADER_LEN, PREFACE, RST_STREAM,
};

/// What the wire says about a response body's stream.
pub trait StreamDelivery: Send + Sync {
    /// `bytes` more of the body were written to the connection.
    fn written(&self, bytes: u64);
    /// The client returned `bytes` of stream credit.
    fn credited(&self, bytes: u64);
    /// The device ended the stream and the client's stack has read all of it.
    fn received_all(&self);
    /// The stream ended otherwise (reset, connection gone): what is not proved
    /// received never will be.
    fn ended(&self);
}

/// The first bytes of the PINGs the device sends; the rest is a sequence number.
const PING_MAGIC: &[u8; 4] = b"offl";

/// Streams tracked before the ones credited without data are forgotten.
const MAX_UNSEEN_TRACKS: usize = 1024;

/// How far a stream's first bytes are compared before giving up on a match.
const MATCH_LIMIT: usize = 64 * 1024;

type Delivery = Arc<dyn StreamDelivery>;

/// A response body waiting for its stream to be seen on the wire.
struct Waiting {
    body: Delivery,
    first: Bytes,
}

enum Track {
    /// Bytes seen so far on a stream not yet matched, and the credit the client gave
    /// it meanwhile (a client with a window of 0 gives credit before any data).
    Matching(Vec<u8>, u64),
    Matched(Delivery),
    /// Not a waiting body's stream.
    Other,
}

#[derive(Default)]
struct BookState {
    streams: HashMap<u32, Track>,
    waiting: Vec<Waiting>,
    /// Ended by the device (or about to be), waiting for the next PING.
    finished: Vec<Delivery>,
    /// The connection's task, woken to send a PING when hyper has nothing to write.
    task: Option<std::task::Waker>,
    /// PINGs sent and not yet acked, with the streams they prove.
    pinged: VecDeque<(u32, Vec<Delivery>)>,
    next_ping: u32,
    closed: bool,
}

/// One connection's record of which streams carry watched bodies, and what the
/// client has proved about them.
pub struct CreditBook {
    /// The client's SETTINGS_INITIAL_WINDOW_SIZE.
    peer_window: AtomicU32,
    state: Mutex<BookState>,
}

impl std::fmt::Debug for CreditBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreditBook")
            .field("peer_window", &self.peer_window())
            .finish_non_exhaustive()
    }
}

impl Default for CreditBook {
    fn default() -> Self {
        CreditBook {
            peer_window: AtomicU32::new(DEFAULT_WINDOW),
            state: Mutex::new(BookState::default()),
        }
    }
}

/// Whether a stream's first bytes `seen` may be the body that starts with `first`.
fn agrees(seen: &[u8], first: &[u8]) -> bool {
    let n = seen.len().min(first.len());
    seen[..n] == first[..n]
}

/// Bytes of the first gRPC message (5-byte prefix and body) at the start of `first`.
fn first_message_len(first: &[u8]) -> usize {
    match first.get(..5) {
        Some(h) => 5 + u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize,
        None => first.len(),
    }
    .min(first.len())
}

/// What the bytes seen so far on a stream say about its body.
enum Matched {
    Body(usize),
    None,
    NotYet,
}

impl BookState {
    fn match_seen(&self, seen: &[u8]) -> Matched {
        let mut found = self
            .waiting
            .iter()
            .enumerate()
            .filter(|(_, w)| agrees(seen, &w.first));
        match (found.next(), found.next()) {
            (None, _) => Matched::None,
            (Some((i, w)), None) if seen.len() >= first_message_len(&w.first) => Matched::Body(i),
            _ if seen.len() >= MATCH_LIMIT => Matched::None,
            _ => Matched::NotYet,
        }
    }

    fn data_written(&mut self, stream: u32, piece: &[u8]) {
        let track = self
            .streams
            .remove(&stream)
            .unwrap_or(Track::Matching(Vec::new(), 0));
        let track = match track {
            Track::Matched(d) => {
                d.written(piece.len() as u64);
                Track::Matched(d)
            }
            Track::Other => Track::Other,
            Track::Matching(mut seen, credit) => {
                seen.extend_from_slice(piece);
                match self.match_seen(&seen) {
                    Matched::Body(i) => {
                        let w = self.waiting.swap_remove(i);
                        w.body.written(seen.len() as u64);
                        if credit > 0 {
                            w.body.credited(credit);
                        }
                        Track::Matched(w.body)
                    }
                    Matched::None => Track::Other,
                    Matched::NotYet => Track::Matching(seen, credit),
                }
            }
        };
        self.streams.insert(stream, track);
    }

    /// The device ended `stream` normally (`reset`: with RST_STREAM).
    fn stream_ended_by_device(&mut self, stream: u32, reset: bool) {
        if let Some(Track::Matched(d)) = self.streams.remove(&stream) {
            if reset {
                d.ended();
            } else {
                self.finished.push(d);
            }
        }
    }

    fn credit(&mut self, stream: u32, increment: u64) {
        if self.streams.len() >= MAX_UNSEEN_TRACKS && !self.streams.contains_key(&stream) {
            // Credit for streams that never carried data (or ended before it came):
            // forget it rather than grow without bound.
            self.streams
                .retain(|_, t| !matches!(t, Track::Matching(seen, _) if seen.is_empty()));
        }
        match self
            .streams
            .entry(stream)
            .or_insert(Track::Matching(Vec::new(), 0))
        {
            Track::Matched(d) => d.credited(increment),
            Track::Matching(_, credit) => *credit += increment,
            Track::Other => {}
        }
    }

    fn ping_acked(&mut self, seq: u32) {
        while self
            .pinged
            .front()
            .is_some_and(|(s, _)| s.wrapping_sub(seq) as i32 <= 0)
        {
            if let Some((_, proved)) = self.pinged.pop_front() {
                proved.iter().for_each(|d| d.received_all());
            }
        }
    }
}

impl CreditBook {
    fn state(&self) -> std::sync::MutexGuard<'_, BookState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The window the client gives each new stream.
    pub fn peer_window(&self) -> u32 {
        self.peer_window.load(Ordering::Relaxed)
    }

    /// A body handed its first bytes, `first`, to hyper: the stream that writes them
    /// is its stream.
    /// All of `body`'s bytes are written and it is about to end: the next PING
    /// proves it (`StreamDelivery::received_all`), sent at once.
    pub fn prove_with_ping(&self, body: Delivery) {
        let mut s = self.state();
        if s.closed {
            drop(s);
            body.ended();
            return;
        }
        s.finished.push(body);
        if let Some(t) = s.task.take() {
            t.wake();
        }
    }

    fn set_task(&self, waker: &std::task::Waker) {
        let mut s = self.state();
        if !s.task.as_ref().is_some_and(|t| t.will_wake(waker)) {
            s.task = Some(waker.clone());
        }
    }

    pub fn await_match(&self, body: Delivery, first: Bytes) {
        let mut s = self.state();
        if s.closed {
            drop(s);
            body.ended();
            return;
        }
        s.waiting.push(Waiting { body, first });
    }

    /// A frame the client sent; true if it is the device's own (not for hyper).
    fn client_frame(&self, frame: ClientFrame) -> bool {
        match frame {
            ClientFrame::WindowUpdate { stream, increment } if stream != 0 => {
                self.state().credit(stream, increment as u64);
                false
            }
            ClientFrame::Reset { stream } => {
                if let Some(Track::Matched(d)) = self.state().streams.remove(&stream) {
                    d.ended();
                }
                false
            }
            ClientFrame::InitialWindow(w) => {
                self.peer_window.store(w, Ordering::Relaxed);
                false
            }
            ClientFrame::PingAck(p) if p[..4] == PING_MAGIC[..] => {
                self.state()
                    .ping_acked(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
                true
            }
            _ => false,
        }
    }

    /// A PING to send now, if streams wait for one.
    fn ping_to_send(&self) -> Option<[u8; 8]> {
        let mut s = self.state();
        if s.finished.is_empty() {
            return None;
        }
        let seq = s.next_ping;
        s.next_ping = seq.wrapping_add(1);
        let proved = std::mem::take(&mut s.finished);
        s.pinged.push_back((seq, proved));
        let mut p = [0u8; 8];
        p[..4].copy_from_slice(PING_MAGIC);
        p[4..].copy_from_slice(&seq.to_be_bytes());
        Some(p)
    }

    /// The connection is gone: every stream still watched has ended.
    fn close(&self) {
        let mut s = self.state();
        s.closed = true;
        let mut ended: Vec<Delivery> = Vec::new();
        ended.extend(s.streams.drain().filter_map(|(_, t)| match t {
            Track::Matched(d) => Some(d),
            _ => None,
        }));
        ended.extend(s.waiting.drain(..).map(|w| w.body));
        ended.append(&mut s.finished);
        ended.extend(s.pinged.drain(..).flat_map(|(_, p)| p));
        drop(s);
        ended.iter().for_each(|d| d.ended());
    }
}

/// The client's bytes, parsed frame by frame before hyper reads them.
#[derive(Default)]
struct ReadWatch {
    buf: BytesMut,
    /// Bytes at the head of `buf` (and beyond) to hand to hyper as they are.
    pass: usize,
    preface_seen: bool,
    /// Not HTTP/2 as expected: everything passes unparsed (hyper rejects it).
    blind: bool,
    eof: bool,
}

/// What to do with the bytes at the head of the read buffer.
enum ReadStep {
    Pass(usize),
    Frame(usize, ClientFrame),
    NeedMore,
}

impl ReadWatch {
    fn step(&mut self) -> ReadStep {
        if self.blind {
            return ReadStep::Pass(usize::MAX);
        }
        if !self.preface_seen {
            let n = self.buf.len().min(PREFACE.len());
            if self.buf[..n] != PREFACE[..n] {
                self.blind = true;
                return ReadStep::Pass(usize::MAX);
            }
            if n < PREFACE.len() {
                return ReadStep::NeedMore;
            }
            self.preface_seen = true;
            return ReadStep::Pass(PREFACE.len());
        }
        let Some(h) = FrameHeader::parse(&self.buf) else {
            return ReadStep::NeedMore;
        };
        if !h.payload_needed() {
            return ReadStep::Pass(h.frame_len());
        }
        match self.buf.get(HEADER_LEN..h.frame_len()) {
            Some(payload) => ReadStep::Frame(h.frame_len(), ClientFrame::parse(&h, payload)),
            None => ReadStep::NeedMore,
        }
    }
}

/// What the read side does next.
enum ReadNext {
    /// Hand hyper up to this many bytes from the head of the buffer.
    Hand(usize),
    /// Read more from the connection.
    Fill,
    Eof,
}

impl ReadWatch {
    /// Parses what the buffer holds (telling `book` what the client sent) up to the
    /// next bytes for hyper.
    fn next(&mut self, book: &CreditBook) -> ReadNext {
        loop {
            if self.buf.is_empty() {
                return if self.eof {
                    ReadNext::Eof
                } else {
                    ReadNext::Fill
                };
            }
            if self.pass > 0 {
                return ReadNext::Hand(self.pass.min(self.buf.len()));
            }
            match self.step() {
                ReadStep::Pass(n) => self.pass = n,
                ReadStep::Frame(n, frame) => {
                    if book.client_frame(frame) {
                        self.buf.advance(n);
                    } else {
                        self.pass = n;
                    }
                }
                // A frame cut short by EOF: hyper sees it and the EOF.
                ReadStep::NeedMore if self.eof => self.blind = true,
                ReadStep::NeedMore => return ReadNext::Fill,
            }
        }
    }

    fn handed(&mut self, n: usize) {
        self.buf.advance(n);
        self.pass -= n;
    }
}

/// The device's bytes, parsed frame by frame as the connection takes them.
#[derive(Default)]
struct WriteWatch {
    head: [u8; HEADER_LEN],
    have: usize,
    frame: Option<FrameHeader>,
    payload_left: usize,
    in_header_block: bool,
}

impl WriteWatch {
    /// Between frames, and not inside a header block: a frame may go in here.
    fn at_boundary(&self) -> bool {
        self.frame.is_none() && self.have == 0 && !self.in_header_block
    }

    fn feed(&mut self, mut bytes: &[u8], book: &CreditBook) {
        while !bytes.is_empty() {
            let Some(h) = self.frame else {
                let n = (HEADER_LEN - self.have).min(bytes.len());
                self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                self.have += n;
                bytes = &bytes[n..];
                if let Some(h) = FrameHeader::parse(&self.head[..self.have]) {
                    self.have = 0;
                    self.frame = Some(h);
                    self.payload_left = h.len as usize;
                    self.end_if_done(book);
                }
                continue;
            };
            let n = self.payload_left.min(bytes.len());
            if h.kind == DATA && h.stream != 0 {
                book.state().data_written(h.stream, &bytes[..n]);
            }
            self.payload_left -= n;
            bytes = &bytes[n..];
            self.end_if_done(book);
        }
    }

    fn end_if_done(&mut self, book: &CreditBook) {
        let Some(h) = self.frame.filter(|_| self.payload_left == 0) else {
            return;
        };
        self.frame = None;
        self.in_header_block = h.opens_header_block();
        if h.stream != 0 && (h.ends_stream() || h.kind == RST_STREAM) {
            book.state()
                .stream_ended_by_device(h.stream, h.kind == RST_STREAM);
        }
    }
}

/// A connection's IO with its HTTP/2 frames watched (see the module comment).
pub struct CreditIo<IO> {
    io: IO,
    book: Arc<CreditBook>,
    read: ReadWatch,
    write: WriteWatch,
    /// A PING of the device's being written, and how much of it is.
    ping: Option<([u8; HEADER_LEN + 8], usize)>,
}

impl<IO> CreditIo<IO> {
    pub fn new(io: IO, book: Arc<CreditBook>) -> CreditIo<IO> {
        CreditIo {
            io,
            book,
            read: ReadWatch::default(),
            write: WriteWatch::default(),
            ping: None,
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO> Drop for CreditIo<IO> {
    fn drop(&mut self) {
        self.book.close();
    }
}

/// Bytes read from the client per read of the underlying IO.
const READ_CHUNK: usize = 16 * 1024;

impl<IO: AsyncRead + Unpin> CreditIo<IO> {
    /// Reads more of the client's bytes into the watch buffer; false at EOF.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        self.read.buf.reserve(READ_CHUNK);
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.read.buf
        ))?;
        Poll::Ready(Ok(n > 0))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for CreditIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // The PING a stream about to end asked for goes now if hyper is not writing.
        this.book.set_task(cx.waker());
        if let Poll::Ready(Ok(true)) = this.poll_ping(cx) {
            let _ = Pin::new(&mut this.io).poll_flush(cx);
        }
        loop {
            match this.read.next(&this.book) {
                ReadNext::Hand(n) => {
                    let n = n.min(out.remaining());
                    out.put_slice(&this.read.buf[..n]);
                    this.read.handed(n);
                    return Poll::Ready(Ok(()));
                }
                ReadNext::Eof => return Poll::Ready(Ok(())),
                ReadNext::Fill => {
                    if !ready!(this.fill(cx))? {
                        this.read.eof = true;
                    }
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> CreditIo<IO> {
    /// Writes the device's PING, if one is due and a frame may go in now; whether
    /// it wrote one.
    fn poll_ping(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.ping.is_none() && self.write.at_boundary() {
            self.ping = self.book.ping_to_send().map(|p| (ping_frame(p), 0));
        }
        let wrote = self.ping.is_some();
        while let Some((frame, done)) = &mut self.ping {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &frame[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
            if *done == frame.len() {
                self.ping = None;
            }
        }
        Poll::Ready(Ok(wrote))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for CreditIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_ping(cx))?;
        let n = ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
        this.write.feed(&buf[..n], &this.book);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_ping(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A stream told nothing useful: the fuzz target's.
struct Untold;

impl StreamDelivery for Untold {
    fn written(&self, _: u64) {}
    fn credited(&self, _: u64) {}
    fn received_all(&self) {}
    fn ended(&self) {}
}

/// Both sides of a connection through the watch, without IO: `client` as hyper would
/// read it (in pieces of `piece` bytes), `server` as hyper would write it, with one
/// body waiting whose first bytes are `first`. Returns the client bytes handed to
/// hyper: all of them except the device's own PING ACKs. For the fuzz target
/// `h2_frames`; no input may make it panic or loop.
pub fn replay(client: &[u8], server: &[u8], first: &[u8], piece: usize) -> usize {
    let book = CreditBook::default();
    book.await_match(Arc::new(Untold), Bytes::copy_from_slice(first));
    let mut write = WriteWatch::default();
    server
        .chunks(piece.max(1))
        .for_each(|p| write.feed(p, &book));
    let _ = write.at_boundary() && book.ping_to_send().is_some();
    let mut read = ReadWatch::default();
    let mut pieces = client.chunks(piece.max(1));
    let mut handed = 0;
    loop {
        match read.next(&book) {
            ReadNext::Hand(n) => {
                read.handed(n);
                handed += n;
            }
            ReadNext::Eof => break,
            ReadNext::Fill => match pieces.next() {
                Some(p) => read.buf.extend_from_slice(p),
                None => read.eof = true,
            },
        }
    }
    book.close();
    handed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2_frames::{
        FLAG_ACK, FLAG_END_HEADERS, FLAG_END_STREAM, HEADERS, PING,
        WINDOW_UPDATE as WINDOW_UPDATE_KIND,
    };
    use std::sync::Mutex as StdMutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn message(body: &[u8]) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&(body.len() as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    /// What a watched stream was told.
    #[derive(Default)]
    struct Told(StdMutex<Vec<String>>);

    impl Told {
        fn said(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    impl StreamDelivery for Told {
        fn written(&self, bytes: u64) {
            self.0.lock().unwrap().push(format!("written {bytes}"));
        }
        fn credited(&self, bytes: u64) {
            self.0.lock().unwrap().push(format!("credited {bytes}"));
        }
        fn received_all(&self) {
            self.0.lock().unwrap().push("received all".into());
        }
        fn ended(&self) {
            self.0.lock().unwrap().push("ended".into());
        }
    }

    fn watched(first: &[u8]) -> (Arc<CreditBook>, Arc<Told>) {
        let book = Arc::new(CreditBook::default());
        let told = Arc::new(Told::default());
        book.await_match(told.clone(), Bytes::copy_from_slice(first));
        (book, told)
    }

    fn feed_in_pieces(w: &mut WriteWatch, bytes: &[u8], piece: usize, book: &CreditBook) {
        bytes.chunks(piece).for_each(|p| w.feed(p, book));
    }

    #[test]
    fn a_stream_is_matched_by_its_first_message_in_any_pieces() {
        let first = message(b"record 7");
        for piece in [1, 2, 9, 100] {
            let (book, told) = watched(&first);
            let mut w = WriteWatch::default();
            let mut wire = frame(DATA, 0, 1, &message(b"record 7")); // another body's
            wire.extend(frame(DATA, 0, 3, &first[..4]));
            wire.extend(frame(DATA, 0, 3, &first[4..]));
            feed_in_pieces(&mut w, &wire, piece, &book);
            assert_eq!(
                told.said(),
                vec![format!("written {}", first.len())],
                "{piece}"
            );
            assert!(matches!(
                book.state().streams.get(&1),
                Some(Track::Matched(_))
            ));
            assert!(
                matches!(book.state().streams.get(&3), Some(Track::Other)),
                "the second stream with the same bytes matches nothing left"
            );
        }
    }

    #[test]
    fn credit_reset_and_the_end_reach_the_matched_stream() {
        let first = message(b"r1");
        let (book, told) = watched(&first);
        let mut w = WriteWatch::default();
        w.feed(&frame(DATA, 0, 5, &first), &book);
        assert!(!book.client_frame(ClientFrame::WindowUpdate {
            stream: 5,
            increment: 7
        }));
        book.client_frame(ClientFrame::WindowUpdate {
            stream: 0,
            increment: 100,
        });
        book.client_frame(ClientFrame::Reset { stream: 5 });
        book.client_frame(ClientFrame::WindowUpdate {
            stream: 5,
            increment: 7,
        });
        assert_eq!(told.said(), ["written 7", "credited 7", "ended"]);
    }

    #[test]
    fn credit_before_the_first_data_counts_once_the_stream_is_matched() {
        let first = message(b"r1");
        let (book, told) = watched(&first);
        book.client_frame(ClientFrame::WindowUpdate {
            stream: 9,
            increment: 5,
        });
        let mut w = WriteWatch::default();
        w.feed(&frame(DATA, 0, 9, &first), &book);
        assert_eq!(told.said(), ["written 7", "credited 5"]);
    }

    #[test]
    fn a_stream_the_device_ends_is_proved_by_a_ping_ack() {
        let first = message(b"r1");
        let (book, told) = watched(&first);
        let mut w = WriteWatch::default();
        w.feed(&frame(DATA, 0, 1, &first), &book);
        // Trailers in two frames: no PING may go between them.
        w.feed(&frame(HEADERS, FLAG_END_STREAM, 1, b"x"), &book);
        assert!(!w.at_boundary(), "inside a header block");
        w.feed(&frame(0x9, FLAG_END_HEADERS, 1, b"y"), &book);
        assert!(w.at_boundary());
        let p = book.ping_to_send().unwrap();
        assert!(
            book.ping_to_send().is_none(),
            "one PING for what ended before it"
        );
        assert!(
            !book.client_frame(ClientFrame::PingAck(*b"12345678")),
            "hyper's"
        );
        assert_eq!(told.said(), ["written 7"]);
        assert!(book.client_frame(ClientFrame::PingAck(p)), "the device's");
        assert_eq!(told.said(), ["written 7", "received all"]);
    }

    #[test]
    fn the_connection_end_ends_every_watched_stream() {
        let (book, told) = watched(&message(b"never written"));
        book.close();
        assert_eq!(told.said(), ["ended"]);
        let late = Arc::new(Told::default());
        book.await_match(late.clone(), Bytes::from_static(b"x"));
        assert_eq!(late.said(), ["ended"], "after the end: at once");
    }

    /// The whole IO: frames pass both ways unchanged, except the device's PING ACKs.
    #[tokio::test]
    async fn io_passes_frames_and_takes_out_only_its_own_ping_acks() {
        let first = message(b"r1");
        let (book, told) = watched(&first);
        let (server_end, mut client) = tokio::io::duplex(64 * 1024);
        let mut io = CreditIo::new(server_end, book.clone());

        let mut from_client = PREFACE.to_vec();
        let mut settings = Vec::new();
        settings.extend_from_slice(&[0, 4, 0, 0, 3, 232]);
        from_client.extend(frame(0x4, 0, 0, &settings));
        client.write_all(&from_client).await.unwrap();
        let mut got = vec![0u8; from_client.len()];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(got, from_client);
        assert_eq!(book.peer_window(), 1000);

        io.write_all(&frame(DATA, FLAG_END_STREAM, 1, &first))
            .await
            .unwrap();
        io.flush().await.unwrap();
        let mut sent = vec![0u8; HEADER_LEN + first.len() + HEADER_LEN + 8];
        client.read_exact(&mut sent).await.unwrap();
        let ping = &sent[HEADER_LEN + first.len()..];
        assert_eq!(ping[3], PING, "the device's PING follows the stream's end");

        let mut reply = frame(PING, FLAG_ACK, 0, &ping[HEADER_LEN..]);
        let hypers = frame(PING, FLAG_ACK, 0, b"hyper's!");
        reply.extend(&hypers);
        client.write_all(&reply).await.unwrap();
        let mut got = vec![0u8; hypers.len()];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(got, hypers, "only hyper's own ACK reaches hyper");
        assert_eq!(told.said(), ["written 7", "received all"]);
        drop(client);
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[test]
    fn replay_hands_hyper_everything_but_the_devices_ping_acks() {
        let mut client = PREFACE.to_vec();
        client.extend(frame(WINDOW_UPDATE_KIND, 0, 1, &7u32.to_be_bytes()));
        let ours = frame(PING, FLAG_ACK, 0, b"offl\0\0\0\0");
        client.extend(&ours);
        client.extend(frame(DATA, 0, 1, &[0; 40]));
        let server = frame(DATA, FLAG_END_STREAM, 1, &message(b"r1"));
        for piece in [1, 3, 9, 1000] {
            let handed = replay(&client, &server, &message(b"r1"), piece);
            assert_eq!(handed, client.len() - ours.len(), "{piece}");
        }
        assert_eq!(
            replay(b"GET /", &[0xff; 20], b"", 2),
            5,
            "not HTTP/2: all passes"
        );
    }

    #[test]
    fn replay_survives_random_frames() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(10);
        for _ in 0..5_000 {
            // Mostly well-formed headers with random kinds, flags and lengths.
            let mut wire = PREFACE.to_vec();
            let mut server = Vec::new();
            for _ in 0..rng.gen_range(0..8) {
                let len = rng.gen_range(0..40);
                let payload: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                let f = frame(
                    rng.gen_range(0..11),
                    rng.gen(),
                    rng.gen_range(0..4),
                    &payload,
                );
                wire.extend(&f);
                server.extend(&f);
            }
            let cut = rng.gen_range(0..=wire.len());
            let piece = rng.gen_range(1..30);
            let handed = replay(&wire[..cut], &server, &server, piece);
            assert!(handed <= cut);
            assert_eq!((cut - handed) % 17, 0, "only whole PING ACKs are taken out");
        }
    }

    #[tokio::test]
    async fn not_http2_passes_unparsed() {
        let book = Arc::new(CreditBook::default());
        let (server_end, mut client) = tokio::io::duplex(1024);
        let mut io = CreditIo::new(server_end, book);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        drop(client);
        let mut got = Vec::new();
        io.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");
    }
}
