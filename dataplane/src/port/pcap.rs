//! The `pcap` port: replays a capture file as the port's input and writes what the port
//! sends to a capture file.
//!
//! It is for running the device against recorded traffic (tests, debugging a field
//! capture, reproducing a bug) and for recording what the device sends, without a NIC.
//!
//! - Input: the whole capture (pcap with microsecond or nanosecond timestamps, either
//!   byte order, or pcapng) is read into memory when the port is created, so a missing,
//!   corrupt or unsuitable file is an error at start and never a surprise on a worker.
//!   Only Ethernet captures are accepted, and a frame longer than the pool's buffers is
//!   refused (never cut short). Frames the capture itself stored cut short (snap length)
//!   are replayed as stored. `open(n)` spreads the frames over the `n` queues the way a
//!   NIC's RSS would (`Steering`, so both directions of a flow land on one queue; frames
//!   that are not TCP/UDP flows go to queue 0), and each queue replays its frames in file
//!   order, as fast as its worker polls (timestamps are ignored), then stays empty.
//! - Output: every queue hands sent packets to one writer thread owned by the port over
//!   a bounded channel; the thread writes them to one Ethernet pcap (nanosecond
//!   timestamps of when they were written) and drops them, which returns the buffers to
//!   their pool. A full channel is a tx drop. The thread flushes and ends when the port
//!   and all its queues are dropped. Without an output file, sent packets are dropped.
//!
//! What it must not do: file I/O, locks or allocation on a worker thread. `rx_burst`
//! copies from memory into pool buffers; `tx_burst` is a `try_send` per packet.
//! `PcapStatus` lets tests and the device see progress and wait for the file to be
//! complete.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use pcap_file::pcap::{PcapHeader, PcapParser};
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};

use super::{Port, PortError, PortQueue};
use crate::packet::{Burst, PacketBuf, PacketPool};
use crate::steer::Steering;

/// Packets that may wait for the writer thread (all queues together). More is a tx drop.
pub const OUTPUT_QUEUE: usize = 4096;

/// Snap length written in the output header: the longest frame a pool buffer holds.
const OUTPUT_SNAPLEN: u32 = u16::MAX as u32;

/// The writer flushes at least this often under steady load, so `frames_written`
/// moves even when the channel is never empty.
const FLUSH_BATCH: usize = 1024;

/// The frames of an input capture, back to back, in file order.
struct Capture {
    bytes: Vec<u8>,
    /// (offset in `bytes`, length) of each frame.
    frames: Vec<(usize, usize)>,
}

impl Capture {
    fn frame(&self, i: usize) -> &[u8] {
        let (off, len) = self.frames[i];
        &self.bytes[off..off + len]
    }

    /// Appends a frame; one longer than `max_frame` is refused, never cut short.
    fn push(&mut self, frame: &[u8], max_frame: usize) -> Result<(), String> {
        if frame.len() > max_frame {
            return Err(format!(
                "frame {} is {} bytes, longer than the {} bytes a packet buffer holds",
                self.frames.len() + 1,
                frame.len(),
                max_frame
            ));
        }
        self.frames.push((self.bytes.len(), frame.len()));
        self.bytes.extend_from_slice(frame);
        Ok(())
    }
}

/// Counters and the writer's state, shared by the port, its queues, the writer thread
/// and every `PcapStatus`.
#[derive(Default)]
struct StatusInner {
    /// Replay waits while set (`PcapPort::hold`), so sessions can be installed first.
    held: AtomicBool,
    loaded: AtomicU64,
    delivered: AtomicU64,
    sent: AtomicU64,
    written: AtomicU64,
    state: Mutex<WriterState>,
    changed: Condvar,
}

#[derive(Default)]
struct WriterState {
    closed: bool,
    error: Option<String>,
}

impl StatusInner {
    fn state(&self) -> MutexGuard<'_, WriterState> {
        // The state is two plain fields: a panic elsewhere cannot leave it half-changed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        // Taking the lock orders this with a waiter's check-then-wait.
        drop(self.state());
        self.changed.notify_all();
    }

    fn close(&self) {
        self.state().closed = true;
        self.changed.notify_all();
    }
}

/// A handle on a pcap port's progress, for tests and the device. Cloning shares it.
#[derive(Clone)]
pub struct PcapStatus {
    inner: Arc<StatusInner>,
}

impl PcapStatus {
    /// Lets a held replay start.
    pub fn release(&self) {
        self.inner.held.store(false, Ordering::Relaxed);
    }

    /// Frames read from the input capture (0 without input).
    pub fn frames_loaded(&self) -> u64 {
        self.inner.loaded.load(Ordering::Relaxed)
    }

    /// Frames handed to workers by `rx_burst` so far, all queues together.
    pub fn frames_delivered(&self) -> u64 {
        self.inner.delivered.load(Ordering::Relaxed)
    }

    /// Frames accepted by `tx_burst` so far, all queues together (written later, or
    /// dropped when the port has no output file).
    pub fn frames_sent(&self) -> u64 {
        self.inner.sent.load(Ordering::Relaxed)
    }

    /// Frames written and flushed to the output file so far.
    pub fn frames_written(&self) -> u64 {
        self.inner.written.load(Ordering::Acquire)
    }

    /// The first error writing the output file, if any (later packets are dropped).
    pub fn write_error(&self) -> Option<String> {
        self.inner.state().error.clone()
    }

    /// True once the port and all its queues are dropped and the output file (if any)
    /// is flushed and closed.
    pub fn is_closed(&self) -> bool {
        self.inner.state().closed
    }

    /// Waits until at least `n` frames are in the output file; false on timeout, or if
    /// the writer closed with fewer.
    pub fn wait_written(&self, n: u64, timeout: Duration) -> bool {
        self.wait(timeout, |s, st| s.frames_written() >= n || st.closed);
        self.frames_written() >= n
    }

    /// Waits until the port and all its queues are dropped and the output file is
    /// complete; false on timeout.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        self.wait(timeout, |_, st| st.closed)
    }

    fn wait(&self, timeout: Duration, done: impl Fn(&Self, &WriterState) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.inner.state();
        loop {
            if done(self, &st) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = match self.inner.changed.wait_timeout(st, deadline - now) {
                Ok((st, _)) => st,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

impl std::fmt::Debug for PcapStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapStatus")
            .field("loaded", &self.frames_loaded())
            .field("delivered", &self.frames_delivered())
            .field("sent", &self.frames_sent())
            .field("written", &self.frames_written())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// The sending side of the output, shared by the port and its queues. When the last
/// one is dropped the channel disconnects and the writer thread flushes and ends (or,
/// without an output file, the status is closed right here).
struct Output {
    tx: Option<Sender<PacketBuf>>,
    status: Arc<StatusInner>,
}

impl Drop for Output {
    fn drop(&mut self) {
        if self.tx.take().is_none() {
            self.status.close();
        }
    }
}

/// A port that replays a capture and records what it sends. See the module doc.
pub struct PcapPort {
    name: String,
    mac: [u8; 6],
    pool: PacketPool,
    input: Option<Capture>,
    output: Arc<Output>,
    status: PcapStatus,
    opened: bool,
}

impl PcapPort {
    /// Reads `input` (if any) whole and creates or truncates `output` (if any), starting
    /// its writer thread. `pool` supplies the buffers received frames are copied into;
    /// every input frame must fit in one.
    pub fn new(
        name: &str,
        mac: [u8; 6],
        input: Option<&Path>,
        output: Option<&Path>,
        pool: PacketPool,
    ) -> Result<PcapPort, PortError> {
        let err = |reason: String| PortError::new(name, reason);
        let status = Arc::new(StatusInner::default());

        let input_path = input;
        let input = match input {
            Some(path) => {
                let cap = load(path, pool.frame_capacity()).map_err(err)?;
                status
                    .loaded
                    .store(cap.frames.len() as u64, Ordering::Relaxed);
                Some(cap)
            }
            None => None,
        };

        let tx = match output {
            Some(path) => {
                if let Some(inp) = input_path {
                    if same_file(inp, path) {
                        return Err(err(format!(
                            "output capture {} is the input capture: it would be overwritten",
                            path.display()
                        )));
                    }
                }
                Some(start_writer(name, path, &status).map_err(err)?)
            }
            None => None,
        };

        Ok(PcapPort {
            name: name.to_string(),
            mac,
            pool,
            input,
            output: Arc::new(Output {
                tx,
                status: status.clone(),
            }),
            status: PcapStatus { inner: status },
            opened: false,
        })
    }

    /// Holds the replay back until `PcapStatus::release` (for example until the
    /// sessions the capture belongs to are installed).
    pub fn hold(&self) {
        self.status.inner.held.store(true, Ordering::Relaxed);
    }

    /// A handle on the port's counters and writer state; it outlives the port.
    pub fn status(&self) -> PcapStatus {
        self.status.clone()
    }
}

impl Port for PcapPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn open(&mut self, queues: usize) -> Result<Vec<Box<dyn PortQueue>>, PortError> {
        if self.opened {
            return Err(PortError::new(&self.name, "pcap port is already open"));
        }
        if queues == 0 {
            return Err(PortError::new(
                &self.name,
                "a port needs at least one queue",
            ));
        }
        self.opened = true;

        let input = self.input.take().map(Arc::new);
        let mut lists: Vec<Vec<usize>> = vec![Vec::new(); queues];
        if let Some(cap) = &input {
            let all = 0..cap.frames.len();
            if queues == 1 {
                // Nothing to choose: skip parsing every frame.
                lists[0] = all.collect();
            } else {
                let steering = Steering::new(queues);
                for i in all {
                    lists[queue_for(&steering, cap.frame(i))].push(i);
                }
            }
        }

        Ok(lists
            .into_iter()
            .map(|frames| {
                Box::new(PcapQueue {
                    input: input.clone(),
                    frames,
                    next: 0,
                    pool: self.pool.clone(),
                    output: self.output.clone(),
                    status: self.status.inner.clone(),
                }) as Box<dyn PortQueue>
            })
            .collect())
    }
}

/// The queue a NIC's RSS would put `frame` on: the owner of its flow, or queue 0 for
/// frames that are not TCP/UDP flows.
fn queue_for(steering: &Steering, frame: &[u8]) -> usize {
    match crate::wire::parse(frame) {
        Ok(f) => steering.worker(f.v6, &f.src, &f.dst, f.sport, f.dport),
        Err(_) => 0,
    }
}

/// One queue of a pcap port: replays its share of the capture and sends to the writer.
struct PcapQueue {
    input: Option<Arc<Capture>>,
    /// Indices of this queue's frames in the capture, in file order.
    frames: Vec<usize>,
    /// Next entry of `frames` to deliver.
    next: usize,
    pool: PacketPool,
    output: Arc<Output>,
    status: Arc<StatusInner>,
}

impl PortQueue for PcapQueue {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let Some(cap) = &self.input else {
            return 0;
        };
        if self.status.held.load(Ordering::Relaxed) {
            return 0;
        }
        let mut n = 0;
        while !burst.is_full() && self.next < self.frames.len() {
            let frame = cap.frame(self.frames[self.next]);
            // `load` refused frames longer than a buffer, so `None` means the pool is
            // empty: stop here and deliver this frame on a later call.
            let Some(pkt) = self.pool.alloc_from(frame) else {
                break;
            };
            burst.push(pkt);
            self.next += 1;
            n += 1;
        }
        if n > 0 {
            // Once per burst, not per packet.
            self.status.delivered.fetch_add(n as u64, Ordering::Relaxed);
        }
        n
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let sent = match &self.output.tx {
            None => {
                // No output file: sending is dropping (the buffers go back to the pool).
                let n = burst.len();
                burst.clear();
                n
            }
            Some(tx) => {
                let mut sent = 0;
                let mut unsent = Burst::new();
                for pkt in burst.drain(..) {
                    // Once one does not fit, keep the rest in order behind it.
                    if !unsent.is_empty() {
                        unsent.push(pkt);
                        continue;
                    }
                    match tx.try_send(pkt) {
                        Ok(()) => sent += 1,
                        // Disconnected only if the writer thread died; same answer.
                        Err(TrySendError::Full(pkt) | TrySendError::Disconnected(pkt)) => {
                            unsent.push(pkt)
                        }
                    }
                }
                *burst = unsent;
                sent
            }
        };
        if sent > 0 {
            self.status.sent.fetch_add(sent as u64, Ordering::Relaxed);
        }
        sent
    }
}

/// pcap magic numbers as the first four bytes read big-endian: microsecond and
/// nanosecond timestamps, each in both byte orders.
const PCAP_MAGICS: [u32; 4] = [0xa1b2_c3d4, 0xd4c3_b2a1, 0xa1b2_3c4d, 0x4d3c_b2a1];

/// Block type of a pcapng section header block (the same in both byte orders).
const PCAPNG_MAGIC: u32 = 0x0a0d_0d0a;

/// Reads a whole capture file. Frames are numbered from 1 in messages, as Wireshark
/// numbers them.
fn load(path: &Path, max_frame: usize) -> Result<Capture, String> {
    let data = std::fs::read(path)
        .map_err(|e| format!("cannot read input capture {}: {}", path.display(), e))?;
    parse_capture(&data, max_frame).map_err(|e| format!("input capture {}: {}", path.display(), e))
}

/// Parses a pcap or pcapng file held in memory.
fn parse_capture(data: &[u8], max_frame: usize) -> Result<Capture, String> {
    if data.is_empty() {
        return Err("the file is empty".to_string());
    }
    let Some(head) = data.first_chunk::<4>() else {
        return Err(format!(
            "{} bytes is too short for a pcap or pcapng file",
            data.len()
        ));
    };
    let magic = u32::from_be_bytes(*head);
    let mut cap = Capture {
        bytes: Vec::with_capacity(data.len()),
        frames: Vec::new(),
    };
    if PCAP_MAGICS.contains(&magic) {
        parse_pcap(data, max_frame, &mut cap)?;
    } else if magic == PCAPNG_MAGIC {
        parse_pcapng(data, max_frame, &mut cap)?;
    } else {
        return Err(format!(
            "not a pcap or pcapng file (it starts with {:02x?})",
            head
        ));
    }
    Ok(cap)
}

fn parse_pcap(data: &[u8], max_frame: usize, cap: &mut Capture) -> Result<(), String> {
    let (mut rest, parser) =
        PcapParser::new(data).map_err(|e| format!("bad pcap file header: {}", describe(&e)))?;
    let link = parser.header().datalink;
    if link != DataLink::ETHERNET {
        return Err(not_ethernet(link));
    }
    while !rest.is_empty() {
        let offset = data.len() - rest.len();
        // Raw packets: the lengths are taken as stored. The checked form would refuse
        // frames whose original length exceeds the snap length, which is exactly what
        // a capture with a short snap length holds.
        let (rem, pkt) = parser.next_raw_packet(rest).map_err(|e| {
            format!(
                "frame {} at byte {}: {}",
                cap.frames.len() + 1,
                offset,
                describe(&e)
            )
        })?;
        cap.push(&pkt.data, max_frame)?;
        rest = rem;
    }
    Ok(())
}

fn parse_pcapng(data: &[u8], max_frame: usize, cap: &mut Capture) -> Result<(), String> {
    let (mut rest, mut parser) = PcapNgParser::new(data)
        .map_err(|e| format!("bad pcapng section header: {}", describe(&e)))?;
    while !rest.is_empty() {
        let offset = data.len() - rest.len();
        let (rem, block) = parser
            .next_block(rest)
            .map_err(|e| format!("bad pcapng block at byte {}: {}", offset, describe(&e)))?;
        rest = rem;
        let (iface, frame, simple_len) = match &block {
            Block::EnhancedPacket(p) => (p.interface_id, &p.data[..], None),
            Block::Packet(p) => (u32::from(p.interface_id), &p.data[..], None),
            // A simple packet block's data runs to the end of the block, padding
            // included; its length is min(original length, snap length).
            Block::SimplePacket(p) => (0, &p.data[..], Some(p.original_len as usize)),
            // Section headers and interface descriptions are kept by the parser; the
            // other blocks (statistics, names, ...) say nothing about frames.
            _ => continue,
        };
        let n = cap.frames.len() + 1;
        let Some(desc) = parser.interfaces().get(iface as usize) else {
            return Err(format!(
                "frame {n} is on interface {iface}, which no interface description block declares"
            ));
        };
        if desc.linktype != DataLink::ETHERNET {
            return Err(format!("frame {n}: {}", not_ethernet(desc.linktype)));
        }
        let frame = match simple_len {
            Some(orig) => {
                let mut len = orig.min(frame.len());
                if desc.snaplen != 0 {
                    len = len.min(desc.snaplen as usize);
                }
                &frame[..len]
            }
            None => frame,
        };
        cap.push(frame, max_frame)?;
    }
    Ok(())
}

fn not_ethernet(link: DataLink) -> String {
    format!(
        "link type {:?} ({}); only Ethernet (1) captures are accepted",
        link,
        u32::from(link)
    )
}

fn describe(e: &PcapError) -> String {
    match e {
        PcapError::IncompleteBuffer => "the file ends in the middle of it (truncated)".to_string(),
        e => format!("corrupt ({})", e),
    }
}

/// True if `a` and `b` name the same file. Paths that do not both exist (the output is
/// often not created yet) are compared as written.
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Creates or truncates `path`, writes the pcap file header and starts the writer
/// thread; returns the sending side of its channel.
fn start_writer(
    name: &str,
    path: &Path,
    status: &Arc<StatusInner>,
) -> Result<Sender<PacketBuf>, String> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        format!("cannot {} output capture {}: {}", what, path.display(), e)
    };
    let file = File::create(path).map_err(|e| failed("create", &e))?;
    let mut out = BufWriter::with_capacity(1 << 16, file);
    let header = PcapHeader {
        snaplen: OUTPUT_SNAPLEN,
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::NanoSecond,
        endianness: Endianness::native(),
        ..PcapHeader::default()
    };
    // Encoded into memory first: the crate reports I/O errors without their cause.
    let mut encoded = Vec::with_capacity(24);
    header
        .write_to(&mut encoded)
        .map_err(|e| failed("encode the header of", &e))?;
    out.write_all(&encoded).map_err(|e| failed("write", &e))?;
    // The file is a valid (empty) capture from the start, and a file that cannot be
    // written at all is an error now rather than later on the writer thread.
    out.flush().map_err(|e| failed("write", &e))?;

    let (tx, rx) = crossbeam_channel::bounded(OUTPUT_QUEUE);
    let recorder = Recorder {
        out,
        path: path.to_path_buf(),
        status: status.clone(),
        failed: false,
        unflushed: 0,
        written: 0,
    };
    std::thread::Builder::new()
        .name(format!("pcap-out-{name}"))
        .spawn(move || recorder.run(rx))
        .map_err(|e| failed("start the writer thread for", &e))?;
    Ok(tx)
}

/// The writer thread's state.
struct Recorder {
    out: BufWriter<File>,
    path: PathBuf,
    status: Arc<StatusInner>,
    /// Set by the first write error; later packets are dropped unwritten.
    failed: bool,
    /// Records written into `out` since the last flush.
    unflushed: u64,
    /// Records flushed to the file.
    written: u64,
}

impl Recorder {
    fn run(mut self, rx: Receiver<PacketBuf>) {
        // `recv` fails only once every sender is gone: the port and its queues dropped.
        while let Ok(pkt) = rx.recv() {
            self.record(pkt);
            // Take what else is waiting before flushing: one write per batch rather
            // than one per packet.
            for _ in 1..FLUSH_BATCH {
                match rx.try_recv() {
                    Ok(pkt) => self.record(pkt),
                    Err(_) => break,
                }
            }
            self.flush();
        }
        self.flush();
        // Dropping closes the file; with `failed` set its last flush fails quietly.
        drop(self.out);
        self.status.close();
    }

    /// Writes one record (native byte order, like the header); the buffer goes back to
    /// its pool when `pkt` is dropped here.
    fn record(&mut self, pkt: PacketBuf) {
        if self.failed {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // pcap seconds are 32 bits: they run out in 2106.
        let secs = u32::try_from(now.as_secs()).unwrap_or(u32::MAX);
        // At most u16::MAX: a pool buffer never holds more.
        let len = pkt.len() as u32;
        let mut head = [0u8; 16];
        head[0..4].copy_from_slice(&secs.to_ne_bytes());
        head[4..8].copy_from_slice(&now.subsec_nanos().to_ne_bytes());
        head[8..12].copy_from_slice(&len.to_ne_bytes()); // stored length
        head[12..16].copy_from_slice(&len.to_ne_bytes()); // length on the wire
        let result = self
            .out
            .write_all(&head)
            .and_then(|()| self.out.write_all(pkt.data()));
        match result {
            Ok(()) => self.unflushed += 1,
            Err(e) => self.fail(e),
        }
    }

    fn flush(&mut self) {
        if self.failed || self.unflushed == 0 {
            return;
        }
        match self.out.flush() {
            Ok(()) => {
                self.written += self.unflushed;
                self.unflushed = 0;
                self.status.written.store(self.written, Ordering::Release);
                self.status.notify();
            }
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, e: io::Error) {
        self.failed = true;
        let mut st = self.status.state();
        if st.error.is_none() {
            st.error = Some(format!(
                "writing output capture {}: {}",
                self.path.display(),
                e
            ));
        }
        drop(st);
        self.status.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcap::{PcapPacket, PcapWriter};
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
    use pcap_file::pcapng::blocks::simple_packet::SimplePacketBlock;
    use pcap_file::pcapng::PcapNgWriter;
    use std::borrow::Cow;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const WAIT: Duration = Duration::from_secs(30);

    /// Frames of assorted lengths whose bytes say which frame they are. They are not
    /// IP, so nothing parses them when a port is opened with one queue.
    fn test_frames(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let len = 60 + (i * 97) % 1400;
                (0..len).map(|j| (i * 31 + j * 13) as u8).collect()
            })
            .collect()
    }

    fn pcap_header(ts: TsResolution, endianness: Endianness) -> PcapHeader {
        PcapHeader {
            ts_resolution: ts,
            endianness,
            ..PcapHeader::default()
        }
    }

    fn write_pcap(path: &Path, frames: &[Vec<u8>], header: PcapHeader) {
        let mut w = PcapWriter::with_header(File::create(path).unwrap(), header).unwrap();
        for (i, f) in frames.iter().enumerate() {
            let ts = Duration::from_micros(1_700_000_000_000_000 + i as u64);
            w.write_packet(&PcapPacket::new(ts, f.len() as u32, f))
                .unwrap();
        }
    }

    /// Every frame but the last in enhanced packet blocks, the last in a simple packet
    /// block, all on one interface of `link` type.
    fn write_pcapng(path: &Path, frames: &[Vec<u8>], endianness: Endianness, link: DataLink) {
        let file = File::create(path).unwrap();
        let mut w = PcapNgWriter::with_endianness(file, endianness).unwrap();
        w.write_pcapng_block(InterfaceDescriptionBlock::new(link, 0))
            .unwrap();
        let (last, rest) = frames.split_last().unwrap();
        for (i, f) in rest.iter().enumerate() {
            w.write_pcapng_block(epb(0, i, f)).unwrap();
        }
        w.write_pcapng_block(SimplePacketBlock {
            original_len: last.len() as u32,
            data: Cow::Borrowed(&last[..]),
        })
        .unwrap();
    }

    fn epb(iface: u32, i: usize, frame: &[u8]) -> EnhancedPacketBlock<'_> {
        EnhancedPacketBlock {
            interface_id: iface,
            timestamp: Duration::from_micros(i as u64),
            original_len: frame.len() as u32,
            data: Cow::Borrowed(frame),
            options: vec![],
        }
    }

    fn pool() -> PacketPool {
        PacketPool::new(256, 2048).unwrap()
    }

    /// Everything the queue delivers until it is empty.
    fn drain(q: &mut dyn PortQueue) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let mut burst = Burst::new();
            let n = q.rx_burst(&mut burst);
            assert_eq!(n, burst.len());
            if n == 0 {
                return out;
            }
            out.extend(burst.iter().map(|p| p.data().to_vec()));
        }
    }

    fn burst_of(pool: &PacketPool, frames: &[Vec<u8>]) -> Burst {
        frames.iter().map(|f| pool.alloc_from(f).unwrap()).collect()
    }

    /// The header and frames of a pcap file, read with pcap_file's checked parser.
    fn read_pcap(path: &Path) -> (PcapHeader, Vec<(Duration, Vec<u8>)>) {
        let data = std::fs::read(path).unwrap();
        let (mut rest, parser) = PcapParser::new(&data).unwrap();
        let mut frames = Vec::new();
        while !rest.is_empty() {
            let (rem, pkt) = parser.next_packet(rest).unwrap();
            assert_eq!(pkt.orig_len as usize, pkt.data.len());
            frames.push((pkt.timestamp, pkt.data.into_owned()));
            rest = rem;
        }
        (parser.header(), frames)
    }

    fn load_err(path: &Path, max_frame: usize) -> String {
        match load(path, max_frame) {
            Ok(cap) => panic!("{} loaded {} frames", path.display(), cap.frames.len()),
            Err(e) => e,
        }
    }

    #[test]
    fn loads_pcap_and_pcapng_in_both_byte_orders() {
        let dir = tempfile::tempdir().unwrap();
        let frames = test_frames(50);
        let mut files = Vec::new();
        for ts in [TsResolution::MicroSecond, TsResolution::NanoSecond] {
            for e in [Endianness::Little, Endianness::Big] {
                let path = dir.path().join(format!("{ts:?}-{e:?}.pcap"));
                write_pcap(&path, &frames, pcap_header(ts, e));
                files.push(path);
            }
        }
        for e in [Endianness::Little, Endianness::Big] {
            let path = dir.path().join(format!("{e:?}.pcapng"));
            write_pcapng(&path, &frames, e, DataLink::ETHERNET);
            files.push(path);
        }
        for path in &files {
            let cap = load(path, 2048).unwrap();
            assert_eq!(cap.frames.len(), frames.len(), "{}", path.display());
            for (i, f) in frames.iter().enumerate() {
                assert_eq!(cap.frame(i), &f[..], "frame {i} of {}", path.display());
            }
        }
    }

    #[test]
    fn frames_cut_by_the_capture_replay_as_stored() {
        // Snap length 64: the file stores 64 bytes of a 1500-byte frame. The original
        // length exceeding the snap length is normal, not corruption.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.pcap");
        let header = PcapHeader {
            snaplen: 64,
            ..pcap_header(TsResolution::MicroSecond, Endianness::Little)
        };
        let mut w = PcapWriter::with_header(File::create(&path).unwrap(), header).unwrap();
        let stored = [7u8; 64];
        w.write_packet(&PcapPacket::new(Duration::ZERO, 1500, &stored))
            .unwrap();
        drop(w);
        let cap = load(&path, 128).unwrap();
        assert_eq!(cap.frames.len(), 1);
        assert_eq!(cap.frame(0), &stored[..]);
    }

    #[test]
    fn replays_every_frame_in_order_on_one_queue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.pcap");
        let frames = test_frames(100);
        write_pcap(
            &path,
            &frames,
            pcap_header(TsResolution::NanoSecond, Endianness::Little),
        );
        let pool = pool();
        let mut port = PcapPort::new("p0", MAC, Some(&path), None, pool.clone()).unwrap();
        assert_eq!(port.name(), "p0");
        assert_eq!(port.mac(), MAC);
        let status = port.status();
        assert_eq!(status.frames_loaded(), 100);
        assert_eq!(status.frames_delivered(), 0);

        let mut queues = port.open(1).unwrap();
        assert_eq!(queues.len(), 1);
        assert_eq!(drain(&mut *queues[0]), frames);
        assert_eq!(status.frames_delivered(), 100);
        // Replayed once, then empty for good.
        assert!(drain(&mut *queues[0]).is_empty());
        assert_eq!(status.frames_delivered(), 100);
        assert_eq!(pool.available(), pool.capacity() as usize);
    }

    #[test]
    fn small_pool_delivers_everything_as_buffers_return() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.pcapng");
        let frames = test_frames(9);
        write_pcapng(&path, &frames, Endianness::Little, DataLink::ETHERNET);
        let pool = PacketPool::new(2, 2048).unwrap();
        let mut port = PcapPort::new("p0", MAC, Some(&path), None, pool.clone()).unwrap();
        let mut q = port.open(1).unwrap().pop().unwrap();

        let mut got = Vec::new();
        let mut calls = 0;
        while got.len() < frames.len() {
            calls += 1;
            assert!(calls < 100, "stuck after {} frames", got.len());
            let mut burst = Burst::new();
            let n = q.rx_burst(&mut burst);
            assert!(n <= 2);
            // The pool is empty while the worker holds both buffers: nothing more, and
            // nothing lost.
            let mut more = Burst::new();
            assert_eq!(q.rx_burst(&mut more), 0);
            got.extend(burst.iter().map(|p| p.data().to_vec()));
        }
        assert_eq!(got, frames);
        assert!(drain(&mut *q).is_empty());
        assert_eq!(port.status().frames_delivered(), 9);
    }

    /// Ethernet + IPv4 + UDP, checksummed, 8 payload bytes.
    fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8 + 8];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&MAC);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&36u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = crate::wire::PROTO_UDP;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        let sum = ipv4_checksum(ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let udp = &mut f[34..];
        udp[0..2].copy_from_slice(&sport.to_be_bytes());
        udp[2..4].copy_from_slice(&dport.to_be_bytes());
        udp[4..6].copy_from_slice(&16u16.to_be_bytes());
        // UDP checksum 0: none, which IPv4 allows.
        f
    }

    /// RFC 1071 over a header whose checksum field is zero.
    fn ipv4_checksum(header: &[u8]) -> u16 {
        let mut acc: u32 = header
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    fn arp() -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[0..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&MAC);
        f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        f
    }

    #[test]
    fn spreads_flows_like_rss() {
        let queues = 2;
        let steering = Steering::new(queues);
        let owner = |a: [u8; 4], b: [u8; 4], p: u16, q: u16| {
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src[..4].copy_from_slice(&a);
            dst[..4].copy_from_slice(&b);
            steering.worker(false, &src, &dst, p, q)
        };

        // 40 flows, each seen in both directions, with ARP frames in between.
        let mut frames = Vec::new();
        let mut expect = vec![Vec::new(); queues];
        for i in 0..40u16 {
            let a = [10, 0, (i >> 8) as u8, i as u8];
            let b = [192, 168, 1, 1];
            let (p, q) = (1000 + i * 7, 53);
            let k = owner(a, b, p, q);
            for f in [udp4(a, b, p, q), udp4(b, a, q, p)] {
                expect[k].push(f.clone());
                frames.push(f);
            }
            if i % 10 == 0 {
                expect[0].push(arp());
                frames.push(arp());
            }
        }
        assert!(
            expect.iter().all(|e| !e.is_empty()),
            "the flows should land on every queue"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flows.pcap");
        write_pcap(
            &path,
            &frames,
            pcap_header(TsResolution::MicroSecond, Endianness::Little),
        );
        let mut port = PcapPort::new("p0", MAC, Some(&path), None, pool()).unwrap();
        let mut qs = port.open(queues).unwrap();
        assert_eq!(qs.len(), queues);
        for (k, q) in qs.iter_mut().enumerate() {
            assert_eq!(drain(&mut **q), expect[k], "queue {k}");
        }
        assert_eq!(port.status().frames_delivered(), frames.len() as u64);
    }

    #[test]
    fn unreadable_inputs_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();

        let missing = dir.path().join("missing.pcap");
        let e = PcapPort::new("p9", MAC, Some(&missing), None, pool())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("p9") && e.contains("cannot read"), "{e}");
        assert!(e.contains(&missing.display().to_string()), "{e}");

        let empty = dir.path().join("empty.pcap");
        std::fs::write(&empty, b"").unwrap();
        let e = load_err(&empty, 2048);
        assert!(
            e.contains("empty") && e.contains(&empty.display().to_string()),
            "{e}"
        );

        let tiny = dir.path().join("tiny.pcap");
        std::fs::write(&tiny, [0xd4, 0xc3]).unwrap();
        assert!(load_err(&tiny, 2048).contains("too short"));

        let garbage = dir.path().join("garbage.pcap");
        std::fs::write(&garbage, b"GET / HTTP/1.1\r\nHost: example\r\n\r\n").unwrap();
        let e = load_err(&garbage, 2048);
        assert!(e.contains("not a pcap or pcapng file"), "{e}");

        // Cut in the middle of the third frame.
        let frames = test_frames(3);
        let whole = dir.path().join("whole.pcap");
        write_pcap(
            &whole,
            &frames,
            pcap_header(TsResolution::MicroSecond, Endianness::Little),
        );
        let data = std::fs::read(&whole).unwrap();
        let cut = dir.path().join("cut.pcap");
        std::fs::write(&cut, &data[..data.len() - 10]).unwrap();
        let e = load_err(&cut, 2048);
        assert!(e.contains("frame 3") && e.contains("truncated"), "{e}");

        // A header cut short.
        std::fs::write(&cut, &data[..20]).unwrap();
        let e = load_err(&cut, 2048);
        assert!(
            e.contains("pcap file header") && e.contains("truncated"),
            "{e}"
        );

        let whole = dir.path().join("whole.pcapng");
        write_pcapng(&whole, &frames, Endianness::Big, DataLink::ETHERNET);
        let data = std::fs::read(&whole).unwrap();
        let cut = dir.path().join("cut.pcapng");
        std::fs::write(&cut, &data[..data.len() - 3]).unwrap();
        let e = load_err(&cut, 2048);
        assert!(e.contains("pcapng block") && e.contains("truncated"), "{e}");
    }

    #[test]
    fn non_ethernet_captures_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let frames = test_frames(3);

        let path = dir.path().join("sll.pcap");
        let header = PcapHeader {
            datalink: DataLink::LINUX_SLL,
            ..pcap_header(TsResolution::MicroSecond, Endianness::Little)
        };
        write_pcap(&path, &frames, header);
        let e = load_err(&path, 2048);
        assert!(
            e.contains("link type LINUX_SLL (113)") && e.contains("Ethernet"),
            "{e}"
        );

        let path = dir.path().join("raw.pcapng");
        write_pcapng(&path, &frames, Endianness::Little, DataLink::RAW);
        let e = load_err(&path, 2048);
        assert!(e.contains("frame 1") && e.contains("link type RAW"), "{e}");

        // An interface that is not Ethernet is fine until a frame comes from it.
        let path = dir.path().join("mixed.pcapng");
        let mut w = PcapNgWriter::new(File::create(&path).unwrap()).unwrap();
        w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0))
            .unwrap();
        w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::LINUX_SLL, 0))
            .unwrap();
        w.write_pcapng_block(epb(0, 0, &frames[0])).unwrap();
        w.write_pcapng_block(epb(0, 1, &frames[1])).unwrap();
        drop(w);
        assert_eq!(load(&path, 2048).unwrap().frames.len(), 2);
        let mut w = PcapNgWriter::new(File::options().append(true).open(&path).unwrap()).unwrap();
        // (A second section: its interfaces replace the first one's.)
        w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::LINUX_SLL, 0))
            .unwrap();
        w.write_pcapng_block(epb(0, 2, &frames[2])).unwrap();
        drop(w);
        let e = load_err(&path, 2048);
        assert!(e.contains("frame 3") && e.contains("LINUX_SLL"), "{e}");
    }

    #[test]
    fn oversize_frame_is_refused_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.pcap");
        let frames = vec![
            vec![1u8; 100],
            vec![2u8; 128],
            vec![3u8; 200],
            vec![4u8; 60],
        ];
        write_pcap(
            &path,
            &frames,
            pcap_header(TsResolution::MicroSecond, Endianness::Big),
        );
        let pool = PacketPool::new(4, 128).unwrap();
        assert_eq!(pool.frame_capacity(), 128);
        let e = PcapPort::new("p0", MAC, Some(&path), None, pool)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("frame 3 is 200 bytes") && e.contains("128"),
            "{e}"
        );
    }

    /// Where a capture's records end: after the pcap file header and each record
    /// (big-endian, as `cut_or_damaged...` writes it), or after each pcapng block
    /// (little-endian). The file's own length is the last.
    fn record_ends(data: &[u8], pcapng: bool) -> Vec<usize> {
        let mut ends = Vec::new();
        let mut at = if pcapng { 0 } else { 24 };
        if !pcapng {
            ends.push(at);
        }
        while at < data.len() {
            at += if pcapng {
                u32::from_le_bytes(data[at + 4..at + 8].try_into().unwrap()) as usize
            } else {
                16 + u32::from_be_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize
            };
            ends.push(at);
        }
        assert_eq!(ends.last(), Some(&data.len()));
        ends
    }

    /// One line that says what is wrong and, past the file header, where.
    fn assert_useful(e: &str, len: usize) {
        assert!(!e.is_empty() && !e.contains('\n'), "{len}: {e:?}");
        let says_where = e.contains("at byte") || e.contains("frame ");
        let says_what = e.contains("too short") || e.contains("empty") || e.contains("header");
        assert!(says_where || says_what, "cut at {len}: {e}");
    }

    #[test]
    fn cut_or_damaged_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let frames = test_frames(4);
        let pcap = dir.path().join("a.pcap");
        write_pcap(
            &pcap,
            &frames,
            pcap_header(TsResolution::NanoSecond, Endianness::Big),
        );
        let pcapng = dir.path().join("a.pcapng");
        write_pcapng(&pcapng, &frames, Endianness::Little, DataLink::ETHERNET);
        for (path, is_pcapng) in [(pcap, false), (pcapng, true)] {
            let data = std::fs::read(&path).unwrap();
            let ends = record_ends(&data, is_pcapng);
            for len in 0..data.len() {
                // A cut where a record ends is a shorter capture, the frames before
                // it; anywhere else, an error that says what and where.
                match parse_capture(&data[..len], 2048) {
                    Ok(cap) => {
                        assert!(ends.contains(&len), "a cut at {len} parsed");
                        let got: Vec<&[u8]> = (0..cap.frames.len()).map(|i| cap.frame(i)).collect();
                        assert!(got.len() < frames.len());
                        assert_eq!(
                            got,
                            frames[..got.len()]
                                .iter()
                                .map(|f| &f[..])
                                .collect::<Vec<_>>()
                        );
                    }
                    Err(e) => {
                        assert!(!ends.contains(&len) || len == 0, "cut at {len}: {e}");
                        assert_useful(&e, len);
                    }
                }
            }
            // A damaged byte may leave a valid capture (a payload or timestamp byte);
            // otherwise the error is one line. The magic number is always checked.
            for i in 0..data.len() {
                for flip in [0x01, 0x80, 0xff] {
                    let mut bad = data.clone();
                    bad[i] ^= flip;
                    if let Err(e) = parse_capture(&bad, 2048) {
                        assert!(!e.is_empty() && !e.contains('\n'), "byte {i}: {e:?}");
                    }
                }
            }
            let mut bad = data.clone();
            bad[0] ^= 0x80;
            let e = parse_capture(&bad, 2048).err().expect("a bad magic number");
            assert!(e.starts_with("not a pcap or pcapng file"), "{e}");
        }
    }

    #[test]
    fn records_what_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.pcap");
        let pool = pool();
        let mut port = PcapPort::new("p0", MAC, None, Some(&out), pool.clone()).unwrap();
        let status = port.status();
        assert_eq!(status.frames_loaded(), 0);
        let mut qs = port.open(2).unwrap();
        // No input: nothing to receive.
        assert!(drain(&mut *qs[0]).is_empty());

        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let frames = test_frames(70);
        let mut expect = Vec::new();
        for (k, chunk) in frames.chunks(BURST_SIZE).enumerate() {
            let mut burst = burst_of(&pool, chunk);
            assert_eq!(qs[k % 2].tx_burst(&mut burst), chunk.len());
            assert!(burst.is_empty());
            expect.extend_from_slice(chunk);
        }
        assert_eq!(status.frames_sent(), 70);
        // Flushed while the port lives: the writer does not wait for more.
        assert!(status.wait_written(70, WAIT), "{status:?}");
        assert!(!status.is_closed());

        drop(port);
        assert!(
            !status.wait_closed(Duration::from_millis(50)),
            "queues still live"
        );
        drop(qs);
        assert!(status.wait_closed(WAIT), "{status:?}");
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(status.write_error(), None);
        assert_eq!(pool.available(), pool.capacity() as usize);

        let (header, got) = read_pcap(&out);
        assert_eq!(header.datalink, DataLink::ETHERNET);
        assert_eq!(header.ts_resolution, TsResolution::NanoSecond);
        assert_eq!(header.snaplen, OUTPUT_SNAPLEN);
        assert_eq!(got.len(), expect.len());
        for (i, ((ts, data), want)) in got.iter().zip(&expect).enumerate() {
            assert_eq!(data, want, "frame {i}");
            assert!(*ts >= before && *ts <= after, "frame {i} at {ts:?}");
        }
    }

    const BURST_SIZE: usize = crate::packet::BURST;

    #[test]
    fn replay_and_record_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.pcap");
        let output = dir.path().join("out.pcap");
        let frames = test_frames(200);
        write_pcap(
            &input,
            &frames,
            pcap_header(TsResolution::MicroSecond, Endianness::Little),
        );
        let pool = PacketPool::new(64, 2048).unwrap();
        let mut port = PcapPort::new("p0", MAC, Some(&input), Some(&output), pool.clone()).unwrap();
        let status = port.status();
        let mut q = port.open(1).unwrap().pop().unwrap();
        drop(port);

        // A worker that sends back whatever it receives. The pool is smaller than the
        // capture: an empty receive can mean the buffers are still with the writer.
        let deadline = Instant::now() + WAIT;
        while status.frames_delivered() < 200 {
            assert!(Instant::now() < deadline, "{status:?}");
            let mut burst = Burst::new();
            if q.rx_burst(&mut burst) == 0 {
                std::thread::yield_now();
            }
            while !burst.is_empty() {
                // A full channel is the worker's drop; here it just tries again.
                if q.tx_burst(&mut burst) == 0 {
                    std::thread::yield_now();
                }
            }
        }
        q.flush();
        assert_eq!(status.frames_loaded(), 200);
        assert_eq!(status.frames_delivered(), 200);
        assert_eq!(status.frames_sent(), 200);
        drop(q);
        assert!(status.wait_closed(WAIT), "{status:?}");
        assert_eq!(status.frames_written(), 200);
        let (_, got) = read_pcap(&output);
        let got: Vec<Vec<u8>> = got.into_iter().map(|(_, f)| f).collect();
        assert_eq!(got, frames);
    }

    #[test]
    fn without_output_sent_packets_are_dropped() {
        let pool = pool();
        let mut port = PcapPort::new("p0", MAC, None, None, pool.clone()).unwrap();
        let status = port.status();
        let mut q = port.open(1).unwrap().pop().unwrap();
        let mut burst = burst_of(&pool, &test_frames(5));
        assert_eq!(q.tx_burst(&mut burst), 5);
        assert!(burst.is_empty());
        assert_eq!(status.frames_sent(), 5);
        assert_eq!(status.frames_written(), 0);
        assert_eq!(pool.available(), pool.capacity() as usize);
        drop(port);
        assert!(!status.is_closed());
        drop(q);
        assert!(status.is_closed());
        assert!(!status.wait_written(1, Duration::from_millis(10)));
    }

    #[test]
    fn full_channel_leaves_packets_in_the_burst() {
        use std::io::Read;
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::OpenOptionsExt;

        // The output is a pipe nobody reads yet: the writer blocks once the pipe is
        // full, then the channel fills up.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out.pcap");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        // Opened first and non-blocking, so creating the output does not wait for it.
        let mut reader = File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();

        let pool = PacketPool::new(OUTPUT_QUEUE as u32 + 2048, 1024).unwrap();
        let mut port = PcapPort::new("p0", MAC, None, Some(&fifo), pool.clone()).unwrap();
        let status = port.status();
        let mut q = port.open(1).unwrap().pop().unwrap();

        let mut sent = 0u32;
        let mut refused = None;
        for _ in 0..(OUTPUT_QUEUE + 2048) / BURST_SIZE {
            let mut burst: Burst = (0..BURST_SIZE as u32)
                .map(|i| {
                    pool.alloc_from(&[(sent + i).to_be_bytes(); 250].concat())
                        .unwrap()
                })
                .collect();
            let n = q.tx_burst(&mut burst);
            sent += n as u32;
            if n < BURST_SIZE {
                refused = Some((n, burst));
                break;
            }
        }
        let (n, rest) = refused.expect("the channel never filled up");
        // The unsent packets stay in the burst, in order, starting with the first unsent.
        assert_eq!(rest.len(), BURST_SIZE - n);
        assert_eq!(&rest[0].data()[..4], &sent.to_be_bytes());
        assert_eq!(status.frames_sent(), u64::from(sent));
        drop(rest); // the caller's tx drop

        let read_all = std::thread::spawn(move || {
            let mut data = Vec::new();
            let mut chunk = vec![0u8; 1 << 16];
            loop {
                match reader.read(&mut chunk) {
                    Ok(0) => return data, // the writer closed the file
                    Ok(n) => data.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(e) => panic!("reading the pipe: {e}"),
                }
            }
        });
        drop(port);
        drop(q);
        assert!(status.wait_closed(WAIT), "{status:?}");
        assert_eq!(status.frames_written(), u64::from(sent));
        let data = read_all.join().unwrap();

        let (mut rest, parser) = PcapParser::new(&data).unwrap();
        let mut seq = 0u32;
        while !rest.is_empty() {
            let (rem, pkt) = parser.next_packet(rest).unwrap();
            assert_eq!(&pkt.data[..4], &seq.to_be_bytes());
            seq += 1;
            rest = rem;
        }
        assert_eq!(seq, sent);
        assert_eq!(pool.available(), pool.capacity() as usize);
    }

    #[test]
    fn output_may_not_be_the_input() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.pcap");
        let frames = test_frames(3);
        write_pcap(
            &input,
            &frames,
            pcap_header(TsResolution::MicroSecond, Endianness::Little),
        );
        let other_spelling = dir.path().join(".").join("in.pcap");
        for output in [&input, &other_spelling] {
            let e = PcapPort::new("p0", MAC, Some(&input), Some(output), pool())
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("is the input capture"), "{e}");
        }
        // And it was left alone.
        assert_eq!(load(&input, 2048).unwrap().frames.len(), 3);
    }

    #[test]
    fn same_file_compares_real_files_or_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, b"x").unwrap();
        std::fs::write(&b, b"x").unwrap();
        assert!(same_file(&a, &a));
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert!(same_file(&a, &dir.path().join("sub/../a")));
        assert!(!same_file(&a, &b));
        let missing = dir.path().join("missing");
        assert!(!same_file(&a, &missing));
        assert!(same_file(&missing, &missing));
        assert!(!same_file(&missing, &dir.path().join("other")));
    }

    #[test]
    fn open_is_once_and_needs_a_queue() {
        let mut port = PcapPort::new("p0", MAC, None, None, pool()).unwrap();
        let e = port.open(0).err().unwrap().to_string();
        assert!(e.contains("at least one queue"), "{e}");
        assert_eq!(port.open(3).unwrap().len(), 3);
        let e = port.open(3).err().unwrap().to_string();
        assert!(e.contains("p0") && e.contains("already open"), "{e}");
    }

    #[test]
    fn unwritable_output_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("no/such/dir/out.pcap");
        let e = PcapPort::new("p0", MAC, None, Some(&out), pool())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cannot create output capture"), "{e}");

        let full = Path::new("/dev/full");
        if full.exists() {
            let e = PcapPort::new("p0", MAC, None, Some(full), pool())
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("cannot write output capture /dev/full"), "{e}");
        }
    }
}
