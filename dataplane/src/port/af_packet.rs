//! The `af_packet` port: a Linux interface (a NIC, a veth in a test) through AF_PACKET
//! sockets with memory-mapped TPACKET_V3 rings (`tpacket.rs`).
//!
//! One socket per worker queue, all bound to the interface and joined in one
//! PACKET_FANOUT group (hash mode), so the kernel spreads the interface's frames over
//! the workers by flow, both directions of a flow together. Its hash is not our
//! Toeplitz owner, so with more than one queue the queues are wrapped in the steering
//! hand-off (`handoff.rs`): the queue that receives a frame passes it to the owner.
//!
//! Buffers: received frames are copied out of the rx block into `PacketBuf`s of the
//! port's pool, so the block goes back to the kernel at once and a packet's lifetime
//! (queued to another port, handed to another worker, copied to the firewall) is not
//! tied to the ring; transmitted frames are copied into tx frames and their buffers go
//! back to the pool. One copy each way, no allocation, no syscall per packet: rx polls
//! block status words in memory, tx does one `sendto` per burst.
//!
//! The kernel takes a VLAN tag off a received frame into the ring's metadata; rx puts
//! it back, so the device sees the frame as it was on the wire.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;

use crossbeam_utils::CachePadded;

use super::handoff::PortHandoff;
use super::tpacket::{self, Geometry, Socket, SocketOptions, StatsHandle};
use super::{Port, PortError, PortQueue};
use crate::packet::{Burst, PacketBuf, PacketPool};

/// What an `af_packet` port is made with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfPacketOptions {
    /// Bytes per ring block (rx and tx), a power of two and a multiple of the page.
    pub block_size: u32,
    /// Rx blocks per queue.
    pub block_count: u32,
    /// Bytes per tx frame, header included (largest frame sent: this minus 58).
    pub frame_size: u32,
    /// Tx frames per queue (rounded up to whole blocks).
    pub tx_frames: u32,
    /// A partly filled rx block is handed over after this many ms.
    pub block_timeout_ms: u32,
    /// Fanout group id; None: the interface index (unique per network namespace).
    pub fanout_group: Option<u16>,
    /// Send past the qdisc (PACKET_QDISC_BYPASS): the device is the only sender that
    /// matters on its interfaces, and the qdisc's lock is the cost to avoid.
    pub qdisc_bypass: bool,
    /// Receive frames for every MAC (the device forwards frames not addressed to it).
    pub promiscuous: bool,
    /// Packet buffers of the port (all queues; the largest frame is frame_size).
    pub pool_buffers: u32,
    /// Slots of each queue-to-queue hand-off ring.
    pub handoff_ring: usize,
}

impl Default for AfPacketOptions {
    fn default() -> Self {
        AfPacketOptions {
            block_size: 1 << 18,
            block_count: 16,
            frame_size: 2048,
            tx_frames: 2048,
            block_timeout_ms: 1,
            fanout_group: None,
            qdisc_bypass: true,
            promiscuous: true,
            pool_buffers: 8192,
            handoff_ring: 1024,
        }
    }
}

impl AfPacketOptions {
    pub fn geometry(&self) -> Geometry {
        Geometry {
            block_size: self.block_size,
            block_count: self.block_count,
            frame_size: self.frame_size,
            tx_frames: self.tx_frames,
            block_timeout_ms: self.block_timeout_ms,
        }
    }

    /// Checks every option; the message names the bad one.
    pub fn check(&self) -> Result<(), String> {
        self.geometry().check(tpacket::page_size())?;
        if self.pool_buffers < 64 {
            return Err(format!(
                "pool_buffers = {}: must be at least 64",
                self.pool_buffers
            ));
        }
        super::check_handoff_ring(self.handoff_ring)
    }
}

/// Counters of one queue, written by its worker once per burst.
#[derive(Default)]
struct QueueCounters {
    /// Frames longer than a packet buffer (or cut short by the ring), dropped.
    rx_too_long: AtomicU64,
    /// Frames not received for want of a free packet buffer (left in the ring).
    rx_no_buffer: AtomicU64,
    /// Tx frames the kernel refused (TP_STATUS_WRONG_FORMAT).
    tx_wrong_format: AtomicU64,
    /// Frames to send longer than a tx frame holds, dropped.
    tx_too_long: AtomicU64,
    /// Kicks that left frames in the tx ring (sent by a later kick, not lost).
    tx_kick_retries: AtomicU64,
}

/// An interface opened as a port.
pub struct AfPacketPort {
    name: String,
    mac: [u8; 6],
    interface: String,
    ifindex: u32,
    options: AfPacketOptions,
    pool: PacketPool,
    handoff: PortHandoff,
    counters: Vec<Arc<CachePadded<QueueCounters>>>,
    kernel: Vec<StatsHandle>,
    /// Kernel drops read so far (the kernel resets its counter on every read).
    kernel_drops: Mutex<u64>,
}

impl AfPacketPort {
    /// A port on `interface`; checks the options, that the interface exists, and
    /// reserves the buffers. Sockets are opened by `open`.
    pub fn new(
        name: &str,
        interface: &str,
        mac: [u8; 6],
        options: AfPacketOptions,
    ) -> Result<AfPacketPort, PortError> {
        let err = |s: String| PortError::new(name, s);
        options.check().map_err(err)?;
        let ifindex = tpacket::ifindex(interface).map_err(err)?;
        let pool = PacketPool::new(options.pool_buffers, options.frame_size as usize)
            .map_err(|e| err(format!("cannot reserve packet buffers: {e}")))?;
        Ok(AfPacketPort {
            name: name.to_string(),
            mac,
            interface: interface.to_string(),
            ifindex,
            options,
            pool,
            handoff: PortHandoff::default(),
            counters: Vec::new(),
            kernel: Vec::new(),
            kernel_drops: Mutex::new(0),
        })
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The pool received frames are copied into.
    pub fn pool(&self) -> &PacketPool {
        &self.pool
    }

    /// Frames handed to another queue's worker, and frames dropped because that
    /// queue's ring was full (zero with one queue).
    pub fn handoffs(&self) -> (u64, u64) {
        self.handoff.totals()
    }
}

impl Port for AfPacketPort {
    /// An interface: ARP and ND frames go out and come back like any other.
    fn resolves_neighbours(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn open(&mut self, queues: usize) -> Result<Vec<Box<dyn PortQueue>>, PortError> {
        if !self.counters.is_empty() {
            return Err(PortError::new(&self.name, "port opened twice"));
        }
        let queues = queues.max(1);
        let so = SocketOptions {
            ifindex: self.ifindex,
            geometry: self.options.geometry(),
            qdisc_bypass: self.options.qdisc_bypass,
            promiscuous: self.options.promiscuous,
        };
        let group = self
            .options
            .fanout_group
            .unwrap_or((self.ifindex & 0xffff) as u16);
        let max_tx = so.geometry.max_tx_frame();
        let mut opened: Vec<Box<dyn PortQueue>> = Vec::with_capacity(queues);
        for q in 0..queues {
            let err = |s: String| {
                PortError::new(
                    &self.name,
                    format!("interface {} queue {q}: {s}", self.interface),
                )
            };
            let sock = Socket::open(&so).map_err(err)?;
            if queues > 1 {
                sock.join_fanout(group).map_err(err)?;
            }
            let counters = Arc::new(CachePadded::new(QueueCounters::default()));
            self.kernel.push(sock.stats_handle());
            self.counters.push(counters.clone());
            opened.push(Box::new(AfPacketQueue {
                sock,
                pool: self.pool.clone(),
                // What one port receives another sends: the same limit both ways.
                max_frame: self.pool.frame_capacity().min(max_tx),
                max_tx,
                counters,
                too_long: 0,
                no_buffer: 0,
                tx_too_long: 0,
                flush_wait: 0,
                flush_spacing: 0,
            }));
        }
        Ok(self.handoff.wrap(opened, self.options.handoff_ring))
    }

    fn set_waker(&mut self, queue: usize, waker: Thread) {
        self.handoff.set_waker(queue, waker);
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let sum = |f: fn(&QueueCounters) -> &AtomicU64| -> u64 {
            self.counters
                .iter()
                .map(|c| f(c).load(Ordering::Relaxed))
                .sum()
        };
        let mut drops = self.kernel_drops.lock().unwrap_or_else(|e| e.into_inner());
        *drops += self.kernel.iter().map(|k| k.take().drops).sum::<u64>();
        let (handed, handoff_drops) = self.handoffs();
        vec![
            ("handoffs", handed),
            ("handoff_drops", handoff_drops),
            ("kernel_drops", *drops),
            ("rx_too_long", sum(|c| &c.rx_too_long)),
            ("rx_no_buffer", sum(|c| &c.rx_no_buffer)),
            ("tx_wrong_format", sum(|c| &c.tx_wrong_format)),
            ("tx_too_long", sum(|c| &c.tx_too_long)),
            ("tx_kick_retries", sum(|c| &c.tx_kick_retries)),
        ]
    }
}

/// One socket as a queue pair.
struct AfPacketQueue {
    sock: Socket,
    pool: PacketPool,
    /// Longest frame received (longer ones are dropped) and sent.
    max_frame: usize,
    max_tx: usize,
    counters: Arc<CachePadded<QueueCounters>>,
    too_long: u64,
    no_buffer: u64,
    tx_too_long: u64,
    /// Empty polls to let pass before the next retry of a kick that left frames, and
    /// the current spacing (doubling up to `MAX_FLUSH_SPACING` while the kernel keeps
    /// refusing, e.g. with the link down): a retry is a syscall.
    flush_wait: u32,
    flush_spacing: u32,
}

/// Most empty polls between two retries of a kick that keeps leaving frames.
const MAX_FLUSH_SPACING: u32 = 64;

impl AfPacketQueue {
    /// Kicks the tx ring; counts a kick that left frames waiting.
    fn kick(&mut self) {
        let retries = self.sock.tx_kick_retries;
        self.sock.tx_kick();
        if self.sock.tx_pending() == 0 {
            (self.flush_wait, self.flush_spacing) = (0, 0);
        }
        if self.sock.tx_kick_retries != retries {
            self.counters
                .tx_kick_retries
                .store(self.sock.tx_kick_retries, Ordering::Relaxed);
        }
    }

    /// Copies a received frame into a fresh buffer, with its VLAN tag put back.
    #[inline]
    fn copy_out(pool: &PacketPool, f: &tpacket::RxFrame<'_>) -> Option<PacketBuf> {
        let mut p = pool.alloc()?;
        match f.vlan {
            None => {
                p.set_len(f.data.len());
                p.data_mut().copy_from_slice(f.data);
            }
            Some((tpid, tci)) => {
                // The kernel hands the frame over with the tag removed: MACs, then the
                // inner EtherType. Rebuild MACs, tag, rest.
                p.set_len(f.data.len() + 4);
                let d = p.data_mut();
                d[..12].copy_from_slice(&f.data[..12]);
                d[12..14].copy_from_slice(&tpid.to_be_bytes());
                d[14..16].copy_from_slice(&tci.to_be_bytes());
                d[16..].copy_from_slice(&f.data[12..]);
            }
        }
        Some(p)
    }
}

impl PortQueue for AfPacketQueue {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let start = burst.len();
        let (too_long, no_buffer) = (self.too_long, self.no_buffer);
        while !burst.is_full() {
            let Some(f) = self.sock.rx_peek() else { break };
            let tag = if f.vlan.is_some() { 4 } else { 0 };
            if f.wire_len != f.data.len()
                || f.data.len() + tag > self.max_frame
                || f.data.len() < 14
            {
                self.too_long += 1;
                self.sock.rx_advance();
                continue;
            }
            match Self::copy_out(&self.pool, &f) {
                Some(p) => {
                    burst.push(p);
                    self.sock.rx_advance();
                }
                None => {
                    // Leave it in the ring: the kernel drops (and counts) when it fills.
                    self.no_buffer += 1;
                    break;
                }
            }
        }
        if self.too_long != too_long {
            self.counters
                .rx_too_long
                .store(self.too_long, Ordering::Relaxed);
        }
        if self.no_buffer != no_buffer {
            self.counters
                .rx_no_buffer
                .store(self.no_buffer, Ordering::Relaxed);
        }
        burst.len() - start
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let (mut sent, mut done) = (0, 0);
        let too_long = self.tx_too_long;
        for p in burst.iter() {
            if p.len() > self.max_tx {
                // Would never fit: dropped here (counted) rather than block the queue.
                self.tx_too_long += 1;
            } else if self.sock.tx_put(p.data()) {
                sent += 1;
            } else {
                break; // ring full: the rest stays with the caller
            }
            done += 1;
        }
        burst.drain(..done);
        self.kick();
        if self.tx_too_long != too_long {
            self.counters
                .tx_too_long
                .store(self.tx_too_long, Ordering::Relaxed);
        }
        if self.sock.tx_wrong_format != 0 {
            self.counters
                .tx_wrong_format
                .store(self.sock.tx_wrong_format, Ordering::Relaxed);
        }
        sent
    }

    /// Kicks again whatever an earlier kick left in the tx ring, at once the first
    /// time, then less often while the kernel keeps leaving frames.
    fn flush(&mut self) {
        if self.sock.tx_pending() == 0 {
            return;
        }
        if self.flush_wait > 0 {
            self.flush_wait -= 1;
            return;
        }
        self.kick();
        if self.sock.tx_pending() != 0 {
            self.flush_spacing = (self.flush_spacing * 2).clamp(1, MAX_FLUSH_SPACING);
            self.flush_wait = self.flush_spacing;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_options_are_named() {
        assert!(AfPacketOptions::default().check().is_ok());
        let bad = [
            (
                AfPacketOptions {
                    pool_buffers: 1,
                    ..Default::default()
                },
                "pool_buffers",
            ),
            (
                AfPacketOptions {
                    handoff_ring: 0,
                    ..Default::default()
                },
                "handoff_ring",
            ),
            (
                AfPacketOptions {
                    block_size: 1000,
                    ..Default::default()
                },
                "block_size",
            ),
        ];
        for (o, word) in bad {
            let e = o.check().unwrap_err();
            assert!(e.contains(word), "{e}");
        }
    }

    #[test]
    fn missing_interface_is_a_port_error() {
        let e = AfPacketPort::new(
            "outside",
            "nope-if-42",
            [2, 0, 0, 0, 0, 1],
            Default::default(),
        )
        .err()
        .expect("no such interface");
        let s = e.to_string();
        assert!(
            s.starts_with("port outside: no such interface \"nope-if-42\""),
            "{s}"
        );
    }

    #[test]
    fn a_vlan_tag_is_put_back() {
        let pool = PacketPool::new(4, 256).unwrap();
        let mut data = vec![0u8; 60];
        data[..6].copy_from_slice(&[1; 6]);
        data[6..12].copy_from_slice(&[2; 6]);
        data[12..14].copy_from_slice(&[0x08, 0x00]);
        data[14] = 0x45;
        let f = tpacket::RxFrame {
            data: &data,
            wire_len: 60,
            vlan: Some((0x8100, 100)),
        };
        let p = AfPacketQueue::copy_out(&pool, &f).unwrap();
        assert_eq!(p.len(), 64);
        assert_eq!(&p.data()[12..18], &[0x81, 0x00, 0, 100, 0x08, 0x00]);
        assert_eq!(p.data()[18], 0x45);
        assert_eq!(&p.data()[..12], &data[..12]);
    }

    /// A kick the kernel cannot finish (the socket's send buffer is full while a slow
    /// qdisc holds earlier frames) leaves frames in the tx ring: they are counted as
    /// retries and sent by later kicks (`flush`, what an idle worker calls), none lost.
    #[test]
    fn frames_a_kick_leaves_in_the_tx_ring_go_out_on_flush() {
        use crate::port::test_veth::{missing_tool, run, skip_or_fail, Veth};
        let Some(veth) = Veth::or_skip("pk") else {
            return;
        };
        if let Some(why) = missing_tool("tc") {
            skip_or_fail(&why);
            return;
        }
        // 512 frames of 1400 bytes (~1.2 MB of socket memory) against a send buffer
        // of ~200 kB, drained at 50 Mbit/s (~120 ms for all).
        run(
            "tc",
            &[
                "qdisc", "add", "dev", &veth.a, "root", "tbf", "rate", "50mbit", "burst", "32kb",
                "latency", "2s",
            ],
        )
        .expect("slow qdisc on the veth");
        let options = AfPacketOptions {
            block_size: 1 << 16,
            block_count: 4,
            tx_frames: 1024,
            qdisc_bypass: false,
            pool_buffers: 1024,
            ..AfPacketOptions::default()
        };
        let mut port = AfPacketPort::new("p0", &veth.a, [2, 0, 0, 0, 0, 1], options).unwrap();
        let mut queues = port.open(1).unwrap();
        let q = &mut queues[0];
        let rx_packets = || -> u64 {
            std::fs::read_to_string(format!("/sys/class/net/{}/statistics/rx_packets", veth.b))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        let before = rx_packets();
        let mut frame = vec![0u8; 1400];
        frame[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        frame[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        frame[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental EtherType
        let pool = port.pool().clone();
        let mut put = 0;
        for _ in 0..16 {
            let mut burst: Burst = (0..32).map(|_| pool.alloc_from(&frame).unwrap()).collect();
            put += q.tx_burst(&mut burst);
        }
        assert_eq!(put, 512, "the tx ring holds them all");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while rx_packets() - before < 512 && std::time::Instant::now() < deadline {
            q.flush();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(rx_packets() - before, 512, "every frame arrived");
        let retries = port
            .counters()
            .into_iter()
            .find(|(n, _)| *n == "tx_kick_retries")
            .map(|(_, v)| v);
        assert!(
            retries > Some(0),
            "the kernel left frames behind: {retries:?}"
        );
    }
}
