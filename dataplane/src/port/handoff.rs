//! Steering hand-off: per-worker queues of a backend that cannot steer by our hash.
//!
//! The control plane installs each session on its owner by the symmetric Toeplitz hash
//! (`steer::Steering`), and a worker only knows its own sessions. A backend whose
//! receive spreading follows another hash (AF_PACKET fanout uses the kernel's flow
//! hash) delivers many frames to the wrong worker. The design's answer: the worker
//! that receives a frame hands it to the owner over a ring; no table is shared. Done
//! here, in the port layer, so the worker loop does not know about it:
//!
//! - queue k's `rx_burst` first returns frames other queues handed to k (one SPSC ring
//!   from every other queue: single producer, single consumer, no locks), then reads
//!   its own backend queue, keeps the frames k owns and pushes the others into the
//!   ring to their owner, waking it;
//! - frames that are not TCP/UDP flows (ARP, ICMP, malformed) stay where they arrived:
//!   no session owns them, any worker sends them to the firewall;
//! - a full ring to the owner drops the frame and counts it (like a NIC queue that
//!   overflows): keeping it would make it a miss on the wrong worker.
//!
//! The frames of one flow all arrive on one backend queue (fanout hashes per flow) and
//! travel through one ring, so their order is kept. Transmit is the backend's own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;

use crossbeam_utils::CachePadded;

use super::spsc::{self, Consumer, Producer};
use super::PortQueue;
use crate::packet::{Burst, PacketBuf};
use crate::steer::Steering;
use crate::wire;

/// Threads to wake per queue, set by the engine once the workers run.
pub type Wakers = Arc<[OnceLock<Thread>]>;

/// Wakers for `queues` queues, none set yet.
pub fn wakers(queues: usize) -> Wakers {
    (0..queues).map(|_| OnceLock::new()).collect()
}

/// Counters of one queue: written by its worker once per burst, read by anyone.
#[derive(Default)]
pub struct HandoffCounters {
    /// Frames this queue received and handed to their owner.
    pub handed: AtomicU64,
    /// Frames dropped because the ring to their owner was full.
    pub dropped: AtomicU64,
}

/// The counters of every queue of one port.
pub struct HandoffStats {
    pub queues: Box<[CachePadded<HandoffCounters>]>,
}

impl HandoffStats {
    /// Frames handed over and frames dropped for a full ring, all queues together.
    pub fn totals(&self) -> (u64, u64) {
        self.queues.iter().fold((0, 0), |(h, d), q| {
            (
                h + q.handed.load(Ordering::Relaxed),
                d + q.dropped.load(Ordering::Relaxed),
            )
        })
    }
}

/// What a port keeps of its hand-off: nothing until `open` wraps its queues, then the
/// wakers the engine fills in and the counters. One per backend port, so each backend
/// does not repeat the wiring.
#[derive(Default)]
pub struct PortHandoff {
    wakers: Option<Wakers>,
    stats: Option<Arc<HandoffStats>>,
}

impl PortHandoff {
    /// Wraps `queues` (one per worker) in the hand-off; one queue needs none.
    pub fn wrap(
        &mut self,
        queues: Vec<Box<dyn PortQueue>>,
        ring: usize,
    ) -> Vec<Box<dyn PortQueue>> {
        if queues.len() < 2 {
            return queues;
        }
        let w = wakers(queues.len());
        let (wrapped, stats) = wrap(queues, ring, w.clone());
        self.wakers = Some(w);
        self.stats = Some(stats);
        wrapped
    }

    /// The worker of `queue`, for `Port::set_waker`.
    pub fn set_waker(&self, queue: usize, waker: Thread) {
        if let Some(slot) = self.wakers.as_ref().and_then(|w| w.get(queue)) {
            let _ = slot.set(waker);
        }
    }

    /// True once the queues were wrapped.
    pub fn enabled(&self) -> bool {
        self.stats.is_some()
    }

    /// Frames handed over and frames dropped for a full ring, all queues together.
    pub fn totals(&self) -> (u64, u64) {
        self.stats.as_ref().map_or((0, 0), |s| s.totals())
    }
}

/// Wraps one backend queue per worker so that each frame reaches the queue of the
/// worker that owns its flow. `ring` is the size of each queue-to-queue ring.
pub fn wrap(
    inner: Vec<Box<dyn PortQueue>>,
    ring: usize,
    wakers: Wakers,
) -> (Vec<Box<dyn PortQueue>>, Arc<HandoffStats>) {
    let n = inner.len();
    let stats = Arc::new(HandoffStats {
        queues: (0..n)
            .map(|_| CachePadded::new(HandoffCounters::default()))
            .collect(),
    });
    // out[from][to] and inbound[to] (one consumer per other queue).
    let mut out: Vec<Vec<Option<Producer<PacketBuf>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut inbound: Vec<Vec<Consumer<PacketBuf>>> = (0..n).map(|_| Vec::new()).collect();
    for (from, row) in out.iter_mut().enumerate() {
        for (to, slot) in row.iter_mut().enumerate() {
            if from != to {
                let (p, c) = spsc::ring(ring);
                *slot = Some(p);
                inbound[to].push(c);
            }
        }
    }
    let queues = inner
        .into_iter()
        .zip(out)
        .zip(inbound)
        .enumerate()
        .map(|(k, ((inner, out), inbound))| {
            Box::new(HandoffQueue {
                k,
                inner,
                steering: Steering::new(n),
                out,
                inbound,
                kept: Burst::new(),
                stats: stats.clone(),
                handed: 0,
                dropped: 0,
                wakers: wakers.clone(),
            }) as Box<dyn PortQueue>
        })
        .collect();
    (queues, stats)
}

struct HandoffQueue {
    k: usize,
    inner: Box<dyn PortQueue>,
    /// Own copy: the table is read per frame, better in this core's cache.
    steering: Steering,
    /// Ring to each other queue (None at k).
    out: Vec<Option<Producer<PacketBuf>>>,
    /// Rings from every other queue.
    inbound: Vec<Consumer<PacketBuf>>,
    /// Own frames read from the backend that did not fit the caller's burst.
    kept: Burst,
    stats: Arc<HandoffStats>,
    handed: u64,
    dropped: u64,
    wakers: Wakers,
}

impl HandoffQueue {
    /// The queue owning the frame's flow; None for frames that are not flows.
    #[inline]
    fn owner(&self, frame: &[u8]) -> Option<usize> {
        let f = wire::parse(frame).ok()?;
        Some(self.steering.worker(f.v6, &f.src, &f.dst, f.sport, f.dport))
    }

    /// Reads the backend queue and sorts what came: own frames into `burst` (or
    /// `kept` when it is full), others to their owners.
    fn read_backend(&mut self, burst: &mut Burst) {
        let mut fresh = Burst::new();
        if self.inner.rx_burst(&mut fresh) == 0 {
            return;
        }
        let mut wake = 0u64;
        let (handed, dropped) = (self.handed, self.dropped);
        for pkt in fresh.drain(..) {
            match self.owner(pkt.data()) {
                Some(o) if o != self.k => {
                    let ring = self.out[o].as_mut().expect("a ring to every other queue");
                    match ring.push(pkt) {
                        Ok(()) => {
                            self.handed += 1;
                            wake |= 1 << (o % 64);
                        }
                        Err(pkt) => {
                            self.dropped += 1;
                            drop(pkt);
                        }
                    }
                }
                _ => {
                    if burst.is_full() {
                        // Cannot fail: at most BURST frames were read.
                        self.kept.push(pkt);
                    } else {
                        burst.push(pkt);
                    }
                }
            }
        }
        // An adaptive worker may be parked: wake the owners, once per burst.
        for (o, w) in self.wakers.iter().enumerate() {
            if wake & (1 << (o % 64)) != 0 {
                if let Some(t) = w.get() {
                    t.unpark();
                }
            }
        }
        let c = &self.stats.queues[self.k];
        if self.handed != handed {
            c.handed.store(self.handed, Ordering::Relaxed);
        }
        if self.dropped != dropped {
            c.dropped.store(self.dropped, Ordering::Relaxed);
        }
    }
}

impl PortQueue for HandoffQueue {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let start = burst.len();
        // Oldest first: own frames kept from last time, then frames handed to us.
        let take = self.kept.len().min(burst.capacity() - burst.len());
        burst.extend(self.kept.drain(..take));
        for ring in &mut self.inbound {
            if burst.is_full() {
                break;
            }
            ring.pop_into(burst);
        }
        if self.kept.is_empty() && !burst.is_full() {
            self.read_backend(burst);
        }
        burst.len() - start
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        self.inner.tx_burst(burst)
    }

    fn flush(&mut self) {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::PacketPool;
    use crate::wire::frame::{build, FrameSpec};
    use crate::wire::PROTO_UDP;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// A backend queue fed by the test.
    struct Fake {
        rx: Arc<Mutex<VecDeque<PacketBuf>>>,
    }

    impl PortQueue for Fake {
        fn rx_burst(&mut self, burst: &mut Burst) -> usize {
            let mut q = self.rx.lock().unwrap();
            let mut n = 0;
            while !burst.is_full() {
                match q.pop_front() {
                    Some(p) => {
                        burst.push(p);
                        n += 1;
                    }
                    None => break,
                }
            }
            n
        }

        fn tx_burst(&mut self, burst: &mut Burst) -> usize {
            let n = burst.len();
            burst.clear();
            n
        }
    }

    fn udp(pool: &PacketPool, i: u16, reverse: bool) -> PacketBuf {
        let a = [
            10,
            0,
            (i >> 8) as u8,
            i as u8,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        let b = [10, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let (src, dst, sport, dport) = if reverse {
            (b, a, 53, 1000 + i)
        } else {
            (a, b, 1000 + i, 53)
        };
        let spec = FrameSpec {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            vlan: 0,
            v6: false,
            proto: PROTO_UDP,
            src,
            dst,
            sport,
            dport,
            tcp_flags: 0,
            payload_len: 2,
        };
        let mut buf = [0u8; 128];
        let n = build(&spec, &mut buf).unwrap();
        pool.alloc_from(&buf[..n]).unwrap()
    }

    fn arp(pool: &PacketPool) -> PacketBuf {
        let mut f = [0u8; 60];
        f[12] = 0x08;
        f[13] = 0x06;
        pool.alloc_from(&f).unwrap()
    }

    type Feeds = Vec<Arc<Mutex<VecDeque<PacketBuf>>>>;

    fn setup(n: usize, ring: usize) -> (Vec<Box<dyn PortQueue>>, Feeds, Arc<HandoffStats>) {
        let feeds: Feeds = (0..n).map(|_| Arc::default()).collect();
        let inner = feeds
            .iter()
            .map(|f| Box::new(Fake { rx: f.clone() }) as Box<dyn PortQueue>)
            .collect();
        let (q, s) = wrap(inner, ring, wakers(n));
        (q, feeds, s)
    }

    fn drain(q: &mut dyn PortQueue) -> Vec<PacketBuf> {
        let mut all = Vec::new();
        loop {
            let mut b = Burst::new();
            if q.rx_burst(&mut b) == 0 {
                return all;
            }
            all.extend(b);
        }
    }

    #[test]
    fn every_frame_reaches_its_owner_in_order() {
        let pool = PacketPool::new(4096, 128).unwrap();
        let steering = Steering::new(3);
        let (mut qs, feeds, stats) = setup(3, 1024);
        // Frames of 200 flows, both directions, all arriving on queue 0 or 2 by a
        // "kernel hash" that is not ours.
        let mut expect: Vec<Vec<(u16, bool)>> = vec![Vec::new(); 3];
        let mut misrouted = 0;
        for round in 0..3 {
            for i in 0..200u16 {
                let reverse = round == 1;
                let p = udp(&pool, i, reverse);
                let f = wire::parse(p.data()).unwrap();
                let owner = steering.worker(false, &f.src, &f.dst, f.sport, f.dport);
                let arrives = if i % 2 == 0 { 0 } else { 2 };
                misrouted += usize::from(owner != arrives);
                expect[owner].push((i, reverse));
                feeds[arrives].lock().unwrap().push_back(p);
            }
        }
        // Queue 0 and 2 read (and hand over) first; then everyone drains.
        let mut got: Vec<Vec<PacketBuf>> = (0..3).map(|_| Vec::new()).collect();
        // Each queue polls once per round, as its worker would.
        for _ in 0..100 {
            for (k, q) in qs.iter_mut().enumerate() {
                let mut b = Burst::new();
                q.rx_burst(&mut b);
                got[k].extend(b);
            }
        }
        for (k, frames) in got.iter().enumerate() {
            let seen: Vec<(u16, bool)> = frames
                .iter()
                .map(|p| {
                    let f = wire::parse(p.data()).unwrap();
                    if f.dport == 53 {
                        (f.sport - 1000, false)
                    } else {
                        (f.dport - 1000, true)
                    }
                })
                .collect();
            // Per flow, frames keep their order; every frame is at its owner.
            let mut want = expect[k].clone();
            let mut have = seen.clone();
            want.sort_by_key(|&(i, _)| i);
            have.sort_by_key(|&(i, _)| i);
            assert_eq!(have, want, "queue {k}");
        }
        assert!(misrouted > 100, "{misrouted}");
        assert_eq!(stats.totals(), (misrouted as u64, 0));
    }

    #[test]
    fn non_flows_stay_and_full_rings_drop() {
        let pool = PacketPool::new(256, 128).unwrap();
        let steering = Steering::new(2);
        let (mut qs, feeds, stats) = setup(2, 4);
        feeds[1].lock().unwrap().push_back(arp(&pool));
        // Ten frames owned by queue 0, arriving on queue 1: the ring holds 4.
        let mut sent = 0;
        let mut i = 0;
        while sent < 10 {
            let p = udp(&pool, i, false);
            let f = wire::parse(p.data()).unwrap();
            if steering.worker(false, &f.src, &f.dst, f.sport, f.dport) == 0 {
                feeds[1].lock().unwrap().push_back(p);
                sent += 1;
            }
            i += 1;
        }
        let at1 = drain(qs[1].as_mut());
        assert_eq!(at1.len(), 1, "the ARP frame stays on the queue it came to");
        assert!(wire::parse(at1[0].data()).is_err());
        assert_eq!(drain(qs[0].as_mut()).len(), 4);
        assert_eq!(stats.totals(), (4, 6));
        drop(at1);
        assert_eq!(
            pool.available(),
            256,
            "dropped frames went back to the pool"
        );
    }

    #[test]
    fn own_frames_beyond_the_burst_are_kept_for_next_time() {
        let pool = PacketPool::new(256, 128).unwrap();
        let steering = Steering::new(2);
        let (mut qs, feeds, _) = setup(2, 64);
        // 40 frames for queue 1 handed over by queue 0, plus 32 own frames on queue 1.
        let (mut to1_via0, mut own1) = (0, 0);
        let mut i = 0;
        while to1_via0 < 40 || own1 < 32 {
            let p = udp(&pool, i, false);
            let f = wire::parse(p.data()).unwrap();
            if steering.worker(false, &f.src, &f.dst, f.sport, f.dport) == 1 {
                if to1_via0 < 40 {
                    feeds[0].lock().unwrap().push_back(p);
                    to1_via0 += 1;
                } else if own1 < 32 {
                    feeds[1].lock().unwrap().push_back(p);
                    own1 += 1;
                }
            }
            i += 1;
        }
        // Queue 0 hands over a burst per call and receives nothing itself.
        for _ in 0..2 {
            assert_eq!(qs[0].rx_burst(&mut Burst::new()), 0);
        }
        assert!(feeds[0].lock().unwrap().is_empty());
        let mut b = Burst::new();
        b.push(udp(&pool, 60000, false));
        // 31 places left: filled from the ring; own frames wait.
        assert_eq!(qs[1].rx_burst(&mut b), 31);
        assert_eq!(drain(qs[1].as_mut()).len(), 9 + 32);
    }
}
