//! The hot path: received packets are parsed, looked up and acted on.
//!
//! Packets flow through a rolling software pipeline (one `Pipe` per port), each
//! stage a few packets behind the one before it, so that several cache misses are in
//! flight at any time and each has had the time of a few packets to arrive:
//! 0. 8-16 packets ahead of stage 1 (`HEADER_FETCH`, refilled in batches of
//!    `HEADER_AHEAD`): prefetch the frame's headers, into L2 only (an L1 prefetch
//!    would hold one of the few L1 miss buffers the bucket and entry prefetches
//!    need; `prefetch::read_l2`);
//! 1. with at least `HEADER_AHEAD` received packets behind it: parse, build the key,
//!    hash it, prefetch its index bucket;
//! 2. `BUCKET_AHEAD` packets later: match the tag in the bucket, prefetch the entry;
//! 3. `ENTRY_AHEAD` packets later: compare the key, count, apply the action, queue
//!    for transmit.
//!
//! The pipeline rolls across bursts: while more packets are waiting (a full burst was
//! received), the last packets of a burst stay in the pipe, their early stages done,
//! and finish during the next call; when the queue ran dry (a short burst) the pipe
//! is drained at once, so a lone packet is never held back.
//!
//! Stage 2 remembers the entry it prefetched (a `Probe`: the first tag match in the
//! home bucket, under the index's epoch). Stage 3 checks that one entry against the
//! key instead of matching tags again; if the index changed in between (a command, or
//! a close by an earlier packet) or the entry is not the key's, it looks the key up
//! in full. A change costs a lookup, never a wrong answer.
//!
//! Rules: no allocation, no locks, no syscalls (transmit is batched in `flush_port`),
//! counters are plain fields of the worker.

use super::Worker;
use crate::flow::{Dir, FlowKey, Probe};
use crate::neighbour::Route;
use crate::packet::{Burst, PacketBuf, BURST};
use crate::session::Action;
use crate::wire::{ethernet, frame, tcp_flags, FrameInfo, Unparsed, PROTO_TCP};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Flow,
    NotFlow,
    Malformed,
}

const ACTION_DROP: u8 = Action::Drop as u8;
const ACTION_MIRROR: u8 = Action::Mirror as u8;
const ACTION_SNOOP: u8 = Action::Snoop as u8;
const CONTROL_FLAGS: u8 = tcp_flags::SYN | tcp_flags::FIN | tcp_flags::RST;

/// Packets between a frame's header prefetch and its parse.
const HEADER_AHEAD: u32 = 8;
/// Headers prefetched ahead of the parse stage (at most; refilled when fewer than
/// `HEADER_AHEAD` are left).
const HEADER_FETCH: u32 = 2 * HEADER_AHEAD;
/// Packets between a bucket's prefetch and the tag match that reads it.
const BUCKET_AHEAD: u32 = 8;
/// Packets between an entry's prefetch and the packet's use of it.
const ENTRY_AHEAD: u32 = 8;
/// Slots in a pipe: what stays in it between calls (the three distances) plus one
/// burst, rounded up to a power of two.
const PIPE: usize = 64;
const _: () = assert!(
    (HEADER_AHEAD + BUCKET_AHEAD + ENTRY_AHEAD) as usize + BURST <= PIPE && PIPE.is_power_of_two()
);

/// The packets of one port in flight through the stages: a ring of `PIPE` slots
/// indexed by free-running counters, with `done <= matched <= parsed <= received`.
pub(super) struct Pipe {
    pkts: [Option<PacketBuf>; PIPE],
    keys: [FlowKey; PIPE],
    hashes: [u64; PIPE],
    probes: [Probe; PIPE],
    tcp: [u8; PIPE],
    /// Offset of the IP header (TCP packets find their segment from it).
    l3: [u8; PIPE],
    kinds: [Kind; PIPE],
    /// Packets that entered the pipe.
    received: u32,
    /// Packets whose headers were prefetched (at most `HEADER_FETCH` past `parsed`).
    fetched: u32,
    /// Packets through stage 1 (parsed, bucket prefetched).
    parsed: u32,
    /// Packets through stage 2 (entry prefetched).
    matched: u32,
    /// Packets through stage 3 (gone from the pipe).
    done: u32,
}

impl Pipe {
    pub(super) fn new() -> Box<Pipe> {
        Box::new(Pipe {
            pkts: std::array::from_fn(|_| None),
            keys: [FlowKey::default(); PIPE],
            hashes: [0; PIPE],
            probes: [Probe::NONE; PIPE],
            tcp: [0; PIPE],
            l3: [0; PIPE],
            kinds: [Kind::NotFlow; PIPE],
            received: 0,
            fetched: 0,
            parsed: 0,
            matched: 0,
            done: 0,
        })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.done == self.received
    }
}

#[inline(always)]
fn at(i: u32) -> usize {
    i as usize & (PIPE - 1)
}

/// Stage 0: prefetches headers up to `HEADER_FETCH` packets past the parse stage, no
/// further: with a whole burst prefetched at once on receive, the bucket prefetches
/// stalled at 1M sessions (too many misses in flight, it seems; DESIGN.md).
#[inline(always)]
fn fetch_headers(pipe: &mut Pipe) {
    let ahead = pipe.received.wrapping_sub(pipe.parsed).min(HEADER_FETCH);
    let limit = pipe.parsed.wrapping_add(ahead);
    // `fetched` only moves toward `limit`, which only grows.
    while pipe.fetched != limit {
        if let Some(p) = &pipe.pkts[at(pipe.fetched)] {
            p.prefetch();
        }
        pipe.fetched = pipe.fetched.wrapping_add(1);
    }
}

impl Worker {
    /// Receives a burst from port `p` and moves the port's pipe on. Returns the
    /// packets received and the packets finished.
    pub(super) fn receive(&mut self, p: usize) -> (usize, usize) {
        let mut burst = Burst::new();
        let n = self.ports[p].queue.rx_burst(&mut burst);
        self.ports[p].counters.rx += n as u64;
        self.counters.rx += n as u64;
        let Some(lif) = self.ports[p].lif else {
            // Not session traffic: counted, and the buffers go back to the pool.
            self.counters.rx_no_lif += n as u64;
            return (n, 0);
        };
        let mut pipe = self.ports[p].pipe.take().expect("the pipe is in its port");
        let mut done = 0;
        if n > 0 || !pipe.is_empty() {
            for pkt in burst.drain(..) {
                pipe.pkts[at(pipe.received)] = Some(pkt);
                pipe.received += 1;
            }
            fetch_headers(&mut pipe);
            // A short burst means the queue is empty: finish everything now rather
            // than hold packets for traffic that may not come.
            done = self.advance(p, lif, &mut pipe, n < BURST);
        }
        self.ports[p].pipe = Some(pipe);
        (n, done)
    }

    /// Finishes every packet in port `p`'s pipe (the worker is stopping); returns
    /// how many there were.
    pub(super) fn drain_pipe(&mut self, p: usize) -> usize {
        let Some(lif) = self.ports[p].lif else {
            return 0;
        };
        let mut pipe = self.ports[p].pipe.take().expect("the pipe is in its port");
        let done = self.advance(p, lif, &mut pipe, true);
        self.ports[p].pipe = Some(pipe);
        done
    }

    /// Runs the stages, each its distance behind the one before; returns the packets
    /// finished. When draining, a stage whose predecessor has taken every packet in
    /// the pipe stops keeping its distance (no packet will come to fill the gap): the
    /// stages then sweep the rest one after the other, each issuing all its
    /// prefetches before the next stage needs them, as a burst-at-a-time loop would.
    fn advance(&mut self, p: usize, lif: u16, pipe: &mut Pipe, drain: bool) -> usize {
        let first = pipe.done;
        loop {
            self.advance_in_step(p, lif, pipe);
            let mut moved = false;
            let parse_all = drain && pipe.parsed < pipe.received;
            if parse_all || pipe.received - pipe.parsed > HEADER_AHEAD {
                self.parse_and_fetch(pipe, lif);
                moved = true;
            }
            let parsed_all = drain && pipe.parsed == pipe.received;
            if (parsed_all && pipe.matched < pipe.parsed)
                || pipe.parsed - pipe.matched > BUCKET_AHEAD
            {
                self.match_stage(pipe);
                moved = true;
            }
            let matched_all = parsed_all && pipe.matched == pipe.parsed;
            if (matched_all && pipe.done < pipe.matched) || pipe.matched - pipe.done > ENTRY_AHEAD {
                self.finish_stage(p, pipe);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        (pipe.done - first) as usize
    }

    /// The steady state, where most packets go: while each stage is exactly its
    /// distance behind the one before and packets wait beyond the header distance,
    /// the three stages move together, a packet each per step, in the order the
    /// loop of `advance` would move them, without its checks per stage.
    #[inline(always)]
    fn advance_in_step(&mut self, p: usize, lif: u16, pipe: &mut Pipe) {
        if pipe.parsed - pipe.matched != BUCKET_AHEAD || pipe.matched - pipe.done != ENTRY_AHEAD {
            return;
        }
        let steps = (pipe.received - pipe.parsed).saturating_sub(HEADER_AHEAD);
        for _ in 0..steps {
            self.parse_and_fetch(pipe, lif);
            self.match_stage(pipe);
            self.finish_stage(p, pipe);
        }
    }

    /// Stage 1, and the header prefetches it needs next, refilled in batches: a
    /// check per packet, a loop per `HEADER_AHEAD`.
    #[inline(always)]
    fn parse_and_fetch(&mut self, pipe: &mut Pipe, lif: u16) {
        self.parse_stage(pipe, lif);
        if pipe.fetched.wrapping_sub(pipe.parsed) < HEADER_AHEAD {
            fetch_headers(pipe);
        }
    }

    /// Stage 2: match the tag in the bucket, prefetch the entry (and a TCP
    /// session's window).
    #[inline(always)]
    fn match_stage(&mut self, pipe: &mut Pipe) {
        let i = at(pipe.matched);
        if pipe.kinds[i] == Kind::Flow {
            let probe = self.table.prefetch_entry(pipe.hashes[i]);
            if pipe.keys[i].proto == PROTO_TCP {
                self.table.prefetch_tcp_window(probe);
            }
            pipe.probes[i] = probe;
        }
        pipe.matched += 1;
    }

    /// Stage 1: parse, key, hash, prefetch the bucket.
    #[inline(always)]
    fn parse_stage(&mut self, pipe: &mut Pipe, lif: u16) {
        let i = at(pipe.parsed);
        pipe.parsed += 1;
        let pkt = pipe.pkts[i].as_ref().expect("a received packet");
        let data = pkt.data();
        // `wire::parse` in two steps, so the common case never builds a `Result`.
        pipe.kinds[i] = match frame::parse_plain_ipv4(data) {
            Some(f) => self.keep_key(pipe, i, &f, lif),
            None => match frame::parse_general(data) {
                Ok(f) => self.keep_key(pipe, i, &f, lif),
                Err(Unparsed::NotFlow(_)) => Kind::NotFlow,
                Err(Unparsed::Malformed(_)) => Kind::Malformed,
            },
        };
    }

    /// Stage 1, a flow: key, hash, prefetch the bucket.
    #[inline(always)]
    fn keep_key(&mut self, pipe: &mut Pipe, i: usize, f: &FrameInfo, lif: u16) -> Kind {
        let key = FlowKey::of_frame(f, lif);
        let hash = key.hash();
        self.table.prefetch_bucket(hash);
        pipe.keys[i] = key;
        pipe.hashes[i] = hash;
        pipe.tcp[i] = if f.proto == PROTO_TCP { f.tcp_flags } else { 0 };
        pipe.l3[i] = f.l3_offset as u8;
        Kind::Flow
    }

    /// Stage 3: look up, count, act.
    #[inline(always)]
    fn finish_stage(&mut self, p: usize, pipe: &mut Pipe) {
        let i = at(pipe.done);
        pipe.done += 1;
        let pkt = pipe.pkts[i].take().expect("a received packet");
        match pipe.kinds[i] {
            Kind::Flow => {
                let key = &pipe.keys[i];
                match self
                    .table
                    .lookup_probed(key, pipe.hashes[i], pipe.probes[i])
                {
                    Some((slot, dir)) => {
                        let vlan = (key.lif >> 16) as u16;
                        self.hit(slot, dir, vlan, pipe.tcp[i], pipe.l3[i], pkt)
                    }
                    None => {
                        self.counters.misses += 1;
                        self.send_to_firewall(pkt);
                    }
                }
            }
            Kind::NotFlow => {
                self.counters.not_flow += 1;
                // ARP and ND frames may answer for a next hop; they go on to the
                // firewall all the same, as every frame the device does not own.
                if self.plan.neighbours.can_resolve(p as u8) {
                    self.learn_from(p, pkt.data());
                }
                self.send_to_firewall(pkt);
            }
            Kind::Malformed => {
                self.counters.malformed += 1;
                self.send_to_firewall(pkt);
            }
        }
    }

    /// A packet of the session in `slot`, going `dir`, that arrived tagged `vlan`.
    #[inline(always)]
    fn hit(&mut self, slot: u32, dir: Dir, vlan: u16, tcp: u8, l3: u8, pkt: PacketBuf) {
        self.counters.hits += 1;
        let e = self
            .table
            .count(slot, dir, pkt.len() as u16, self.clock.tick);
        // Where the packet goes: the other side's lif (its port and VLAN) and, going
        // in, the session's next hop.
        let (lif, next_hop) = match dir {
            Dir::In => (e.out_lif, e.next_hop),
            Dir::Out => (e.in_lif, 0),
        };
        let port = self.lif_port[lif as u16 as usize];
        let to_vlan = (lif >> 16) as u16;
        let action = e.action();
        // TCP: window tracking, and whether the packet may change the session's
        // state (checked while the frame is as it came in).
        let close_flags = if e.proto == PROTO_TCP {
            let (state, v6) = (e.state(), e.v6());
            self.track_tcp(slot, dir, state, pkt.data(), l3.into(), v6)
        } else {
            None
        };

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
        if let Some(flags) = close_flags {
            self.on_tcp_close_flags(slot, dir, flags);
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

    /// Sends a session's packet on: VLAN tag of the target lif, next-hop MAC. `port`
    /// is the target lif's port; a next hop may name another.
    #[inline(always)]
    fn forward(
        &mut self,
        mut pkt: PacketBuf,
        mut port: u8,
        from_vlan: u16,
        to_vlan: u16,
        next_hop: u16,
    ) {
        if from_vlan != to_vlan && !retag(&mut pkt, from_vlan, to_vlan) {
            self.counters.retag_failures += 1;
            return;
        }
        let dst = if next_hop == 0 {
            self.ports[port as usize].next_hop_mac
        } else {
            match self.plan.neighbours.route(usize::from(next_hop - 1)) {
                Route::Mac { mac, port: via } => {
                    port = via.unwrap_or(port);
                    Some(mac)
                }
                Route::Unresolved => {
                    self.counters.forwarded_unresolved += 1;
                    self.ports[port as usize].next_hop_mac
                }
            }
        };
        let out = &self.ports[port as usize];
        if let Some(mac) = dst {
            let src = out.mac;
            let data = pkt.data_mut();
            data[0..6].copy_from_slice(&mac);
            data[6..12].copy_from_slice(&src);
        }
        self.counters.forwarded += 1;
        self.send(port as usize, pkt);
    }

    #[inline(always)]
    pub(super) fn send(&mut self, port: usize, pkt: PacketBuf) {
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
