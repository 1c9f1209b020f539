//! The ring device: a port made of in-process rings, one rx and one tx ring per queue.
//!
//! `RingPort` is the device side (opened into per-worker queues); `RingPeer` is the
//! other end of the wire, held by whoever plays the network (a test, the benchmark,
//! the traffic simulator). The peer steers each injected frame to the queue of the
//! worker that owns its session with the same symmetric hash a NIC's RSS and the
//! control plane use, so both directions of a session reach the same worker.

use std::sync::{Arc, OnceLock};
use std::thread::Thread;

use super::spsc::{self, Consumer, Producer};
use super::{Port, PortError, PortQueue};
use crate::packet::{Burst, PacketBuf};
use crate::steer::Steering;
use crate::wire;

type Wakers = Arc<[OnceLock<Thread>]>;

/// The device side of a ring port.
pub struct RingPort {
    name: String,
    mac: [u8; 6],
    queues: Vec<(Consumer<PacketBuf>, Producer<PacketBuf>)>,
    wakers: Wakers,
}

/// The network side of a ring port: injects frames into its rx queues and collects
/// what the device transmits.
pub struct RingPeer {
    rx: Vec<Producer<PacketBuf>>,
    tx: Vec<Consumer<PacketBuf>>,
    steering: Steering,
    wakers: Wakers,
}

/// A ring port with `queues` queue pairs of `ring_size` slots each, and its peer.
pub fn ring_port(
    name: &str,
    mac: [u8; 6],
    queues: usize,
    ring_size: usize,
) -> (RingPort, RingPeer) {
    let queues = queues.max(1);
    let mut device = Vec::with_capacity(queues);
    let mut rx = Vec::with_capacity(queues);
    let mut tx = Vec::with_capacity(queues);
    for _ in 0..queues {
        let (rx_prod, rx_cons) = spsc::ring(ring_size);
        let (tx_prod, tx_cons) = spsc::ring(ring_size);
        device.push((rx_cons, tx_prod));
        rx.push(rx_prod);
        tx.push(tx_cons);
    }
    let wakers: Wakers = (0..queues).map(|_| OnceLock::new()).collect();
    (
        RingPort {
            name: name.to_string(),
            mac,
            queues: device,
            wakers: wakers.clone(),
        },
        RingPeer {
            rx,
            tx,
            steering: Steering::new(queues),
            wakers,
        },
    )
}

struct RingQueue {
    rx: Consumer<PacketBuf>,
    tx: Producer<PacketBuf>,
}

impl PortQueue for RingQueue {
    #[inline]
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        self.rx.pop_into(burst)
    }

    #[inline]
    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        self.tx.push_from(burst)
    }
}

impl Port for RingPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn open(&mut self, queues: usize) -> Result<Vec<Box<dyn PortQueue>>, PortError> {
        if queues != self.queues.len() {
            return Err(PortError::new(
                &self.name,
                format!(
                    "ring port was made with {} queues, the device has {} workers",
                    self.queues.len(),
                    queues
                ),
            ));
        }
        Ok(self
            .queues
            .drain(..)
            .map(|(rx, tx)| Box::new(RingQueue { rx, tx }) as Box<dyn PortQueue>)
            .collect())
    }

    fn set_waker(&mut self, queue: usize, waker: Thread) {
        if let Some(slot) = self.wakers.get(queue) {
            let _ = slot.set(waker);
        }
    }
}

impl RingPeer {
    /// Number of queues (= workers).
    pub fn queues(&self) -> usize {
        self.rx.len()
    }

    /// The queue a NIC's RSS would put this frame on: the owning worker of its flow;
    /// frames that are not flows go to queue 0.
    pub fn queue_of(&self, frame: &[u8]) -> usize {
        if self.rx.len() == 1 {
            return 0;
        }
        match wire::parse(frame) {
            Ok(f) => self.steering.worker(f.v6, &f.src, &f.dst, f.sport, f.dport),
            Err(_) => 0,
        }
    }

    /// Injects one frame on the queue that owns it; gives it back if that ring is full.
    pub fn inject(&mut self, pkt: PacketBuf) -> Result<(), PacketBuf> {
        let q = self.queue_of(pkt.data());
        self.inject_to(q, pkt)
    }

    /// Injects one frame on queue `q`.
    pub fn inject_to(&mut self, q: usize, pkt: PacketBuf) -> Result<(), PacketBuf> {
        self.rx[q].push(pkt)?;
        self.wake(q);
        Ok(())
    }

    /// Injects a burst already known to belong to queue `q`; what did not fit stays.
    pub fn inject_burst(&mut self, q: usize, burst: &mut Burst) -> usize {
        let n = self.rx[q].push_from(burst);
        if n > 0 {
            self.wake(q);
        }
        n
    }

    fn wake(&self, q: usize) {
        if let Some(t) = self.wakers[q].get() {
            t.unpark();
        }
    }

    /// Moves what the device transmitted on queue `q` into `out`; returns how many.
    pub fn collect_queue(&mut self, q: usize, out: &mut Burst) -> usize {
        self.tx[q].pop_into(out)
    }

    /// Moves everything the device transmitted (all queues) into `out`.
    pub fn collect(&mut self, out: &mut Vec<PacketBuf>) -> usize {
        let mut n = 0;
        for tx in &mut self.tx {
            while let Some(p) = tx.pop() {
                out.push(p);
                n += 1;
            }
        }
        n
    }

    /// Frames waiting in the rx rings (injected, not yet taken by a worker).
    pub fn pending_rx(&self) -> usize {
        self.rx.iter().map(|p| p.len()).sum()
    }
}
