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
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapParser, PcapWriter};
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};

use super::{Port, PortError, PortQueue};
use crate::packet::{Burst, PacketBuf, PacketPool};
use crate::steer::Steering;

/// Packets that may wait for the writer thread (all queues together). More is a tx drop.
pub const OUTPUT_QUEUE: usize = 4096;

/// Snap length written in the output header: the longest frame a pool buffer holds.
const OUTPUT_SNAPLEN: u32 = u16::MAX as u32;

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
}

/// Counters and the writer's state, shared by the port, its queues, the writer thread
/// and every `PcapStatus`.
#[derive(Default)]
struct StatusInner {
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

    /// A handle on the port's counters and writer state; it outlives the port.
    pub fn status(&self) -> PcapStatus {
        self.status.clone()
    }
}
