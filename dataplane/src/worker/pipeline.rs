//! The hot path: a received burst is parsed, looked up and acted on.
//!
//! Stages over the whole burst, so that many cache misses are in flight at once:
//! 1. prefetch every frame's headers;
//! 2. parse, build the key, hash it and prefetch its index bucket;
//! 3. find the tag and prefetch the entry;
//! 4. compare the key, count, apply the action, queue for transmit.
//!
//! Rules: no allocation, no locks, no syscalls (transmit is batched in `flush_port`),
//! counters are plain fields of the worker.

use std::time::Instant;

use super::Worker;
use crate::flow::{Dir, FlowKey};
use crate::packet::{Burst, PacketBuf, BURST};
use crate::session::{Action, SessionState};
use crate::wire::{self, ethernet, tcp_flags, Unparsed, PROTO_TCP};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Flow,
    NotFlow,
    Malformed,
}

const ACTION_DROP: u8 = Action::Drop as u8;
const ACTION_MIRROR: u8 = Action::Mirror as u8;
const ACTION_SNOOP: u8 = Action::Snoop as u8;
const CLOSING_2: u8 = SessionState::Closing2 as u8;
const CONTROL_FLAGS: u8 = tcp_flags::SYN | tcp_flags::FIN | tcp_flags::RST;

impl Worker {
    /// Receives a burst from port `p` and processes the one received the time before:
    /// the new burst's headers are prefetched now and are in cache by the next call.
    /// Returns the packets received and processed.
    pub(super) fn receive(&mut self, p: usize) -> usize {
        let mut next = Burst::new();
        let n = self.ports[p].queue.rx_burst(&mut next);
        for pkt in next.iter() {
            pkt.prefetch();
        }
        self.ports[p].counters.rx += n as u64;
        self.counters.rx += n as u64;
        let current = std::mem::replace(&mut self.ports[p].staged, next);
        let m = current.len();
        if m > 0 {
            self.process_burst(p, current);
        }
        n + m
    }

    /// Processes what `receive` holds back (the worker is stopping).
    pub(super) fn process_staged(&mut self, p: usize) {
        let current = std::mem::take(&mut self.ports[p].staged);
        if !current.is_empty() {
            self.process_burst(p, current);
        }
    }

    fn process_burst(&mut self, p: usize, burst: Burst) {
        let n = burst.len() as u64;
        let t0 = Instant::now();
        match self.ports[p].lif {
            Some(lif) => self.process(lif, burst),
            None => {
                // Not session traffic: counted, and the buffers go back to the pool.
                self.counters.rx_no_lif += n;
                drop(burst);
            }
        }
        let per_packet = t0.elapsed().as_nanos() as u64 / n;
        let _ = self.latency.packet_ns.record_n(per_packet.max(1), n);
    }

    fn process(&mut self, lif: u16, mut burst: Burst) {
        let n = burst.len();
        let mut keys = [FlowKey::default(); BURST];
        let mut hashes = [0u64; BURST];
        let mut flags = [0u8; BURST];
        let mut kinds = [Kind::NotFlow; BURST];
        for i in 0..n {
            match wire::parse(burst[i].data()) {
                Ok(f) => {
                    keys[i] = FlowKey::of_frame(&f, lif);
                    hashes[i] = keys[i].hash();
                    flags[i] = if f.proto == PROTO_TCP { f.tcp_flags } else { 0 };
                    kinds[i] = Kind::Flow;
                    self.table.prefetch_bucket(hashes[i]);
                }
                Err(Unparsed::NotFlow(_)) => kinds[i] = Kind::NotFlow,
                Err(Unparsed::Malformed(_)) => kinds[i] = Kind::Malformed,
            }
        }
        for i in 0..n {
            if kinds[i] == Kind::Flow {
                self.table.prefetch_entry(hashes[i]);
            }
        }
        for (i, pkt) in burst.drain(..).enumerate() {
            match kinds[i] {
                Kind::Flow => match self.table.lookup(&keys[i], hashes[i]) {
                    Some((slot, dir)) => {
                        self.hit(slot, dir, (keys[i].lif >> 16) as u16, flags[i], pkt)
                    }
                    None => {
                        self.counters.misses += 1;
                        self.send_to_firewall(pkt);
                    }
                },
                Kind::NotFlow => {
                    self.counters.not_flow += 1;
                    self.send_to_firewall(pkt);
                }
                Kind::Malformed => {
                    self.counters.malformed += 1;
                    self.send_to_firewall(pkt);
                }
            }
        }
    }

    /// A packet of the session in `slot`, going `dir`, that arrived tagged `vlan`.
    #[inline]
    fn hit(&mut self, slot: u32, dir: Dir, vlan: u16, tcp: u8, pkt: PacketBuf) {
        self.counters.hits += 1;
        let now = self.clock.tick;
        let e = self.table.entry_mut(slot);
        let len = pkt.len() as u64;
        e.last_seen = now;
        let (port, to_vlan, next_hop) = match dir {
            Dir::In => {
                e.in_packets += 1;
                e.in_bytes += len;
                (e.out_port, (e.out_lif >> 16) as u16, e.next_hop)
            }
            Dir::Out => {
                e.out_packets += 1;
                e.out_bytes += len;
                (e.in_port, (e.in_lif >> 16) as u16, 0)
            }
        };
        let action = e.action;
        let closing_state = e.proto == PROTO_TCP
            && (tcp & (tcp_flags::FIN | tcp_flags::RST) != 0 || e.state == CLOSING_2);

        // The firewall owns TCP state: it sees every SYN, FIN and RST.
        let control = tcp & CONTROL_FLAGS != 0;
        if (control || action == ACTION_SNOOP) && self.send_copy(self.plan.firewall_port, &pkt) {
            self.counters.to_firewall += 1;
        }
        match action {
            ACTION_DROP => {
                self.counters.dropped += 1;
                drop(pkt);
            }
            _ => {
                if action == ACTION_MIRROR {
                    if let Some(c) = self.plan.collector_port {
                        if self.send_copy(c, &pkt) {
                            self.counters.to_collector += 1;
                        }
                    }
                }
                self.forward(pkt, port, vlan, to_vlan, next_hop);
            }
        }
        if closing_state {
            self.on_tcp_close_flags(slot, dir, tcp);
        }
    }

    /// Sends a copy of `pkt` out of `port`; false (counted) when the pool is empty.
    /// The caller counts the copy by its purpose: the firewall and collector may be
    /// one port.
    fn send_copy(&mut self, port: u8, pkt: &PacketBuf) -> bool {
        match pkt.copy() {
            Some(c) => {
                self.send(port as usize, c);
                true
            }
            None => {
                self.counters.copy_failures += 1;
                false
            }
        }
    }

    fn send_to_firewall(&mut self, pkt: PacketBuf) {
        self.counters.to_firewall += 1;
        self.send(self.plan.firewall_port as usize, pkt);
    }

    /// Sends a session's packet on: VLAN tag of the target lif, next-hop MAC.
    fn forward(
        &mut self,
        mut pkt: PacketBuf,
        port: u8,
        from_vlan: u16,
        to_vlan: u16,
        next_hop: u16,
    ) {
        if !retag(&mut pkt, from_vlan, to_vlan) {
            self.counters.retag_failures += 1;
            return;
        }
        let out = &self.ports[port as usize];
        let dst = if next_hop != 0 {
            Some(self.plan.next_hops[next_hop as usize - 1].mac)
        } else {
            out.next_hop_mac
        };
        if let Some(mac) = dst {
            let src = out.mac;
            let data = pkt.data_mut();
            data[0..6].copy_from_slice(&mac);
            data[6..12].copy_from_slice(&src);
        }
        self.counters.forwarded += 1;
        self.send(port as usize, pkt);
    }

    #[inline]
    fn send(&mut self, port: usize, pkt: PacketBuf) {
        let tx = &mut self.ports[port].tx;
        tx.push(pkt);
        if tx.is_full() {
            self.flush_port(port);
        }
    }
}

/// Makes the frame carry VLAN `to` (0: untagged) instead of `from`. False when a tag
/// cannot be pushed for lack of headroom (the frame is then unchanged).
fn retag(pkt: &mut PacketBuf, from: u16, to: u16) -> bool {
    use ethernet::{ETHERTYPE_VLAN, VID_MASK, VLAN_TAG_LEN};
    if from == to {
        return true;
    }
    if from != 0 && to != 0 {
        let data = pkt.data_mut();
        let tci = u16::from_be_bytes([data[14], data[15]]);
        let tci = (tci & !VID_MASK) | (to & VID_MASK);
        data[14..16].copy_from_slice(&tci.to_be_bytes());
    } else if from == 0 {
        if !pkt.push_front(VLAN_TAG_LEN) {
            return false;
        }
        let data = pkt.data_mut();
        data.copy_within(VLAN_TAG_LEN..VLAN_TAG_LEN + 12, 0);
        data[12..14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        data[14..16].copy_from_slice(&(to & VID_MASK).to_be_bytes());
    } else {
        let data = pkt.data_mut();
        data.copy_within(0..12, VLAN_TAG_LEN);
        pkt.pull_front(VLAN_TAG_LEN);
        // A minimum-size frame is now 4 bytes short: pad it as a NIC would.
        let len = pkt.len();
        if len < ethernet::MIN_FRAME_LEN && pkt.tailroom() >= ethernet::MIN_FRAME_LEN {
            pkt.set_len(ethernet::MIN_FRAME_LEN);
            pkt.data_mut()[len..].fill(0);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::PacketPool;

    fn frame(tag: Option<u16>) -> Vec<u8> {
        let mut f = vec![1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2];
        if let Some(v) = tag {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&(0x2000 | v).to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0xaa]);
        f
    }

    #[test]
    fn retag_push_pop_rewrite() {
        let pool = PacketPool::new(4, 128).unwrap();
        let mut p = pool.alloc_from(&frame(None)).unwrap();
        assert!(retag(&mut p, 0, 0));
        assert_eq!(p.data(), &frame(None)[..]);
        assert!(retag(&mut p, 0, 7));
        // A pushed tag has priority 0.
        let mut want = frame(Some(7));
        want[14] &= 0x0f;
        assert_eq!(p.data(), &want[..]);

        let mut q = pool.alloc_from(&frame(Some(5))).unwrap();
        assert!(retag(&mut q, 5, 9));
        assert_eq!(q.data(), &frame(Some(9))[..], "priority bits kept");
        assert!(retag(&mut q, 9, 0));
        assert_eq!(&q.data()[..16], &frame(None)[..]);
        assert_eq!(q.len(), ethernet::MIN_FRAME_LEN, "padded to the minimum");
    }
}
