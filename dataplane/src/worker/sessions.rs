//! Session logic of a worker: commands (add, delete, query, report) and the TCP close
//! state machine. Nothing here runs per packet except `track_tcp` (every TCP packet of
//! a session: window tracking, `flow::tcp_window`) and `on_tcp_close_flags`, which the
//! hot path calls only for a RST, FIN or last ACK that the window let through.

use std::sync::atomic::Ordering;

use super::{Added, Command, Worker};
use crate::flow::Verdict;
use crate::flow::{Cold, Dir, Entry, FlowKey, InsertError};
use crate::session::{
    Action, AddError, CloseCause, SessionInfo, SessionSpec, SessionState, SessionView,
};
use crate::wire::frame::{self, TcpFrame};
use crate::wire::tcp::Segment;
use crate::wire::{tcp_flags, PROTO_TCP, PROTO_UDP};

/// Entry flag: deleted while its closed record waited for the feed; the record is
/// not to be sent.
pub(super) const FLAG_SUPPRESS: u8 = 1;

/// Adds between a session's prefetches and its insert: enough to overlap their
/// misses, few enough that the lines are still there.
const ADD_AHEAD: usize = 8;

impl Worker {
    pub(super) fn run_command(&mut self, cmd: Command) {
        match cmd {
            Command::Add {
                specs,
                received,
                reply,
            } => {
                for spec in specs.iter().take(ADD_AHEAD) {
                    self.prefetch_add(spec);
                }
                let results = specs
                    .iter()
                    .enumerate()
                    .map(|(i, spec)| {
                        if let Some(next) = specs.get(i + ADD_AHEAD) {
                            self.prefetch_add(next);
                        }
                        let r = self.add(spec);
                        if r.is_ok() {
                            if let Some(t) = received.get(i).or(received.last()) {
                                let ns = t.elapsed().as_nanos() as u64;
                                let _ = self.latency.add_ns.record(ns.max(1));
                            }
                        }
                        r
                    })
                    .collect();
                reply(Added { specs, results });
            }
            Command::Delete { id, reply } => {
                let info = self.delete(id);
                reply(info);
            }
            Command::Query { ids, reply } => {
                let infos = ids.iter().map(|&id| self.query(id)).collect();
                reply(infos);
            }
            Command::Describe { ids, reply } => {
                let views = ids.iter().map(|&id| self.describe(id)).collect();
                reply(views);
            }
            Command::Report { reply } => reply(self.report()),
        }
    }

    /// Brings toward the cache what adding `spec` reads first (its id's place in the
    /// id index, its key's index bucket).
    fn prefetch_add(&self, spec: &SessionSpec) {
        let key = FlowKey {
            lif: spec.in_lif,
            v6: spec.v6,
            proto: spec.proto,
            src: spec.src,
            dst: spec.dst,
            sport: spec.sport,
            dport: spec.dport,
        };
        self.table.prefetch_insert(spec.id, key.hash());
    }

    fn add(&mut self, spec: &SessionSpec) -> Result<(), AddError> {
        let r = self.try_add(spec);
        match r {
            Ok(()) => self.counters.adds += 1,
            Err(AddError::IdExists | AddError::TupleExists { .. }) => self.counters.add_exists += 1,
            Err(AddError::TableFull) => self.counters.add_full += 1,
            Err(_) => self.counters.add_invalid += 1,
        }
        r
    }

    fn try_add(&mut self, spec: &SessionSpec) -> Result<(), AddError> {
        if spec.proto != PROTO_TCP && spec.proto != PROTO_UDP {
            return Err(AddError::BadProtocol);
        }
        // The ports themselves are not stored: the hot path finds them from the lifs
        // (`Worker::lif_port`) and the next hop, which keeps the entry one cache line.
        let known = |lif: u32| self.plan.lif_ports.contains_key(&(lif as u16));
        if !known(spec.in_lif) || !known(spec.out_lif) {
            return Err(AddError::UnknownLif);
        }
        if spec.action == crate::session::Action::Mirror && self.plan.collector_port.is_none() {
            return Err(AddError::NoCollector);
        }
        // Capacity is device-wide: take a place before taking a slot.
        let max = self.plan.max_sessions;
        if self
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err()
        {
            return Err(AddError::TableFull);
        }
        // Any next hop is accepted: one the config does not list is learned (the
        // neighbour table), and until it is resolved frames go out as with none.
        let out_port = self.lif_port[usize::from(spec.out_lif as u16)];
        let next_hop = self.next_hop_slot(spec.next_hop, out_port);
        let timeout = if spec.timeout_s == 0 {
            self.default_timeout
        } else {
            self.clock.ticks(spec.timeout_s)
        };
        let entry = Entry {
            src: spec.src,
            dst: spec.dst,
            sport: spec.sport,
            dport: spec.dport,
            in_lif: spec.in_lif,
            out_lif: spec.out_lif,
            proto: spec.proto,
            meta: Entry::pack_meta(spec.action as u8, SessionState::Established as u8, spec.v6),
            last_seen: self.clock.tick,
            next_hop,
            ..Entry::default()
        };
        let cold = Cold {
            id: spec.id,
            start_ns: self.clock.wall_ns,
            timeout_ticks: timeout,
            ..Cold::default()
        };
        match self.table.insert(&entry, &cold) {
            Ok(slot) => {
                if next_hop != 0 {
                    self.plan.neighbours.add_session(usize::from(next_hop - 1));
                }
                self.wheel.schedule(
                    &mut self.table,
                    slot,
                    self.clock.tick.saturating_add(timeout),
                );
                Ok(())
            }
            Err(e) => {
                self.live.fetch_sub(1, Ordering::AcqRel);
                Err(match e {
                    InsertError::Exists => self.holder_of(spec, &entry),
                    InsertError::Full => AddError::TableFull,
                })
            }
        }
    }

    /// What an insert refused as present: the id itself, or the session that holds
    /// the same 7-tuple (in either direction), so the refusal can name it.
    fn holder_of(&self, spec: &SessionSpec, entry: &Entry) -> AddError {
        if self.table.slot_of(spec.id).is_some() {
            return AddError::IdExists;
        }
        [Dir::In, Dir::Out]
            .into_iter()
            .find_map(|d| {
                let k = entry.key(d);
                self.table.lookup(&k, k.hash())
            })
            .map_or(AddError::IdExists, |(slot, _)| AddError::TupleExists {
                id: self.table.cold(slot).id,
            })
    }

    /// Removes a session at once and returns its final state. A session already
    /// closed and waiting for the feed is answered as closed, and its record is not
    /// sent any more.
    fn delete(&mut self, id: u64) -> Option<SessionInfo> {
        let slot = self.table.slot_of(id)?;
        self.counters.deletes += 1;
        if self.table.entry(slot).state() == SessionState::Closed as u8 {
            let info = self.info(slot);
            self.table.cold_mut(slot).flags |= FLAG_SUPPRESS;
            self.table.forget_id(slot);
            return Some(info);
        }
        self.wheel.unlink(&mut self.table, slot);
        self.unindex(slot);
        let wall = self.clock.wall_ns;
        self.table
            .entry_mut(slot)
            .set_state(SessionState::Closed as u8);
        let c = self.table.cold_mut(slot);
        c.cause = CloseCause::Deleted as u8;
        c.set_end_ns(wall);
        let info = self.info(slot);
        self.release(slot);
        Some(info)
    }

    fn query(&self, id: u64) -> Option<SessionInfo> {
        self.table.slot_of(id).map(|slot| self.info(slot))
    }

    fn describe(&self, id: u64) -> Option<SessionView> {
        let slot = self.table.slot_of(id)?;
        let e = self.table.entry(slot);
        Some(SessionView {
            info: self.info(slot),
            key: e.key(Dir::In),
            out_lif: e.out_lif,
            // Stored from an `Action`: always one.
            action: Action::from_code(e.action()).unwrap_or(Action::Drop),
        })
    }

    pub(super) fn info(&self, slot: u32) -> SessionInfo {
        let state = SessionState::from_code(self.table.entry(slot).state());
        let c = self.table.cold(slot);
        // 64-bit totals: what carried into the cold record plus the hot low bits.
        let t_in = self.table.totals(slot, Dir::In);
        let t_out = self.table.totals(slot, Dir::Out);
        SessionInfo {
            id: c.id,
            in_packets: t_in.packets,
            in_bytes: t_in.bytes,
            out_packets: t_out.packets,
            out_bytes: t_out.bytes,
            state,
            cause: CloseCause::from_code(c.cause),
            start_ns: c.start_ns,
            end_ns: (state == SessionState::Closed).then(|| c.end_ns()),
        }
    }

    /// Every TCP packet of a live session, once counted: window tracking. Returns the
    /// packet's flags when it is to change the session's state (`on_tcp_close_flags`,
    /// once the packet is sent on): a RST, a side's first FIN or the last ACK, whose
    /// sequence number is in its side's window and whose checksums are right. Other
    /// packets only move the window; their checksums are never computed.
    #[inline(always)]
    pub(super) fn track_tcp(
        &mut self,
        slot: u32,
        dir: Dir,
        state: u8,
        frame: &[u8],
        l3: usize,
        v6: bool,
    ) -> Option<u8> {
        // `parse` took the frame as a TCP flow: the segment is there. IPv6 apart, so
        // that the IPv4 segment stays in registers.
        if v6 {
            return self.track_tcp_v6(slot, dir, state, frame, l3);
        }
        let seg = frame::tcp_segment_v4(frame, l3)?;
        self.track_segment(slot, dir, state, &seg, frame, l3, false)
    }

    #[inline(never)]
    fn track_tcp_v6(
        &mut self,
        slot: u32,
        dir: Dir,
        state: u8,
        frame: &[u8],
        l3: usize,
    ) -> Option<u8> {
        let seg = frame::tcp_segment_v6(frame, l3)?;
        self.track_segment(slot, dir, state, &seg, frame, l3, true)
    }

    /// `track_tcp` once the segment is read.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn track_segment(
        &mut self,
        slot: u32,
        dir: Dir,
        state: u8,
        seg: &Segment,
        frame: &[u8],
        l3: usize,
        v6: bool,
    ) -> Option<u8> {
        let c = self.table.cold_mut(slot);
        if !would_change_state(seg.flags, state, c.fin, dir) {
            c.tcp.note(dir as usize, seg);
            return None;
        }
        self.judge_state_change(slot, dir as usize, seg, frame, l3, v6)
    }

    /// A packet that would change the session's state: believed only when in the
    /// window with right checksums; otherwise counted by reason (`tcp_invalid_*`).
    #[inline(never)]
    fn judge_state_change(
        &mut self,
        slot: u32,
        d: usize,
        seg: &Segment,
        frame: &[u8],
        l3: usize,
        v6: bool,
    ) -> Option<u8> {
        let window = &mut self.table.cold_mut(slot).tcp;
        let checksums_ok =
            |f: &[u8]| TcpFrame::locate(f, l3, v6).is_some_and(|t| t.checksums_ok(f));
        match window.check(d, seg) {
            Verdict::OutOfWindow => self.counters.tcp_invalid_out_of_window += 1,
            Verdict::NoWindow => self.counters.tcp_invalid_no_window += 1,
            Verdict::InWindow if !checksums_ok(frame) => {
                self.counters.tcp_invalid_bad_checksum += 1
            }
            Verdict::InWindow => {
                window.note(d, seg);
                return Some(seg.flags);
            }
        }
        None
    }

    /// FIN, RST, or any packet of a session in CLOSING_2 (after the packet was
    /// counted and handled).
    pub(super) fn on_tcp_close_flags(&mut self, slot: u32, dir: Dir, flags: u8) {
        if flags & tcp_flags::RST != 0 {
            return self.close(slot, CloseCause::Rst);
        }
        if self.table.entry(slot).state() == SessionState::Closing2 as u8 {
            // Both FINs were seen: the ACK of the last one ends the session.
            if flags & tcp_flags::ACK != 0 && flags & tcp_flags::FIN == 0 {
                self.close(slot, CloseCause::FinAck);
            }
            return;
        }
        if flags & tcp_flags::FIN != 0 {
            let c = self.table.cold_mut(slot);
            c.fin |= match dir {
                Dir::In => 1,
                Dir::Out => 2,
            };
            let state = if c.fin == 3 {
                SessionState::Closing2
            } else {
                SessionState::Closing1
            };
            self.table.entry_mut(slot).set_state(state as u8);
        }
    }

    /// Ends a live session: out of the index and the wheel, its record queued for
    /// the closed-session feed.
    pub(super) fn close(&mut self, slot: u32, cause: CloseCause) {
        self.wheel.unlink(&mut self.table, slot);
        self.close_unlinked(slot, cause);
    }

    /// As `close`, for an entry the wheel has already let go of.
    pub(super) fn close_unlinked(&mut self, slot: u32, cause: CloseCause) {
        self.unindex(slot);
        let wall = self.clock.wall_ns;
        self.table
            .entry_mut(slot)
            .set_state(SessionState::Closed as u8);
        let c = self.table.cold_mut(slot);
        c.cause = cause as u8;
        c.set_end_ns(wall);
        match cause {
            CloseCause::FinAck => self.counters.closed_finack += 1,
            CloseCause::Rst => self.counters.closed_rst += 1,
            CloseCause::Timeout => self.counters.closed_timeout += 1,
            CloseCause::NotClosed | CloseCause::Deleted => {}
        }
        self.closed_waiting.push(&mut self.table, slot);
    }

    /// Takes a live session out of the index: its packets are misses from now on,
    /// and its next hop has one session fewer to resolve for.
    fn unindex(&mut self, slot: u32) {
        self.table.unindex(slot);
        let next_hop = self.table.entry(slot).next_hop;
        if next_hop != 0 {
            self.plan
                .neighbours
                .remove_session(usize::from(next_hop - 1));
        }
    }

    /// Gives a slot back, and its place in the device-wide capacity.
    pub(super) fn release(&mut self, slot: u32) {
        self.table.release(slot);
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether a TCP packet with `flags`, going `dir` in a session in `state` whose FIN
/// bits are `fin`, would change its state: a RST, the side's first FIN, or in CLOSING_2
/// the ACK (without FIN) that ends the session.
#[inline(always)]
fn would_change_state(flags: u8, state: u8, fin: u8, dir: Dir) -> bool {
    let fin_bit = match dir {
        Dir::In => 1,
        Dir::Out => 2,
    };
    flags & tcp_flags::RST != 0
        || (flags & tcp_flags::FIN != 0 && fin & fin_bit == 0)
        || (state == SessionState::Closing2 as u8
            && flags & tcp_flags::ACK != 0
            && flags & tcp_flags::FIN == 0)
}
