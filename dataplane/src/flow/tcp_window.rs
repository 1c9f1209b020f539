//! TCP window tracking: which RST, FIN and last ACK of a session may change its state.
//!
//! The model is Linux conntrack's `tcp_in_window` in its pick-up mode: sessions are
//! offloaded established, so the device never saw the handshake and learns each
//! direction from the first packet it sees of it. Per direction it keeps the sequence
//! number just past the furthest segment (`end`, conntrack's `td_end`) and the largest
//! window that direction announced (`win`, raw, with a scale estimate; conntrack's
//! `td_maxwin`). A segment from one side is in the window when it ends no more than
//! the other side's window below `end` (an old retransmission) and starts no more than
//! that window above it (conntrack's lower bound, and an upper bound a little looser
//! than its `td_maxend`, which would need the acks kept as well).
//!
//! The window scale is announced only in the SYNs, which the device usually did not
//! see. It is learnt from evidence instead: when a side's data runs further ahead of
//! `end` than the other side's raw window allows, that window must be scaled, and its
//! scale estimate grows just enough to cover the jump (conntrack grows `td_maxwin` by
//! the overshoot in the same way), up to the largest scale there is (14). Only packets
//! that change no state do that; a RST, FIN or last ACK must be in the window as it is.
//!
//! A side that has sent nothing yet is seeded from the other side's acknowledgement
//! (what it will send next), as conntrack does. When neither side is known, a packet
//! that would change the state is not believed (`Verdict::NoWindow`): see DESIGN.md.
//!
//! 13 bytes per session (`#[repr(packed)]`), kept in the cold record: the hot entry
//! does not grow, and only TCP packets read it.

use crate::wire::tcp::Segment;
use crate::wire::tcp_flags;

/// The largest window scale shift (RFC 7323).
pub const MAX_SCALE: u8 = 14;
/// The window taken for a side that has announced none yet: the largest unscaled one
/// (conntrack takes the raw window of the first packet in pick-up mode).
pub const UNKNOWN_WINDOW: u32 = 65_535;

/// Both directions' windows of one session. All-zero: nothing seen yet.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpWindow {
    /// By direction (`Dir as usize`): the sequence number just past the furthest
    /// segment seen.
    end: [u32; 2],
    /// By direction: the largest window field it sent outside a SYN (unscaled); 0 for
    /// none yet.
    win: [u16; 2],
    /// A nibble per direction (bits 0-3 in, 4-7 out): 0 when the direction is not
    /// known yet, else 1 + the scale shift of its windows as far as evidence goes.
    sides: u8,
}

/// What a packet that would change the session's state is to the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    InWindow,
    OutOfWindow,
    /// Nothing is known of the sending side: nothing to check against.
    NoWindow,
}

/// `a` comes after `b` in sequence space (RFC 9293 arithmetic, modulo 2^32).
#[inline]
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl TcpWindow {
    /// Whether direction `d` has been seen (or seeded from the other's ack).
    #[inline(always)]
    pub fn known(&self, d: usize) -> bool {
        self.nibble(d) != 0
    }

    /// The sequence number just past what direction `d` has sent, if known.
    pub fn end(&self, d: usize) -> Option<u32> {
        self.known(d).then(|| self.end[d])
    }

    /// The scale shift taken for direction `d`'s windows.
    #[inline(always)]
    pub fn scale(&self, d: usize) -> u8 {
        self.nibble(d).saturating_sub(1)
    }

    #[inline(always)]
    fn nibble(&self, d: usize) -> u8 {
        (self.sides >> (4 * d)) & 0xf
    }

    fn set_scale(&mut self, d: usize, scale: u8) {
        let shift = 4 * d;
        self.sides = (self.sides & !(0xf << shift)) | ((scale.min(MAX_SCALE) + 1) << shift);
    }

    /// The window direction `o` has offered the other side: its largest window,
    /// scaled by the estimate.
    #[inline(always)]
    fn offered(&self, o: usize) -> u32 {
        self.offered_with(o, self.scale(o))
    }

    /// Whether a segment of direction `d` ends no more than `window` below `end` and
    /// starts no more than `window` above it.
    fn in_window(&self, d: usize, seg: &Segment, window: u32) -> bool {
        let end = self.end[d];
        !after(end.wrapping_sub(window), seg.end()) && !after(seg.seq, end.wrapping_add(window))
    }

    /// Whether a packet of direction `d` that would change the session's state (RST,
    /// a first FIN, the last ACK) is in the window. Changes nothing.
    pub fn check(&self, d: usize, seg: &Segment) -> Verdict {
        if !self.known(d) {
            return Verdict::NoWindow;
        }
        if self.in_window(d, seg, self.offered(1 - d)) {
            Verdict::InWindow
        } else {
            Verdict::OutOfWindow
        }
    }

    /// Takes in a packet of direction `d`: the first of a direction starts it; one in
    /// the window (or ahead of it by what a scaled window would allow) moves it on.
    /// Others (far outside: forged, or of another connection) change nothing.
    ///
    /// For a packet that would change the session's state, call this only once
    /// `check` said `InWindow` and its checksums are right.
    #[inline(always)]
    pub fn note(&mut self, d: usize, seg: &Segment) {
        if !self.known(d) {
            self.end[d] = seg.end();
            self.set_scale(d, 0);
            return self.take_fields(d, seg);
        }
        let window = self.offered(1 - d);
        // How far the segment's end lies past `end` (negative: before it).
        let ahead = seg.end().wrapping_sub(self.end[d]) as i32;
        if ahead > 0 {
            if ahead as u32 > window && !self.widen(d, ahead as u32) {
                return;
            }
            self.end[d] = seg.end();
        } else if ahead.unsigned_abs() > window {
            // Older than a window (or far off): nothing to learn from it.
            return;
        }
        self.take_fields(d, seg)
    }

    /// Data of direction `d` ahead of `end` by `beyond`, more than the other side's
    /// window allows: evidence of a larger scale when some scale allows it (then the
    /// estimate grows; true), far off otherwise (false).
    #[cold]
    #[inline(never)]
    fn widen(&mut self, d: usize, beyond: u32) -> bool {
        let o = 1 - d;
        if beyond > self.offered_with(o, MAX_SCALE) {
            return false;
        }
        self.grow_scale(o, beyond);
        true
    }

    /// The window a segment announces, and the other side's start from its ack.
    #[inline(always)]
    fn take_fields(&mut self, d: usize, seg: &Segment) {
        // A SYN's window is never scaled: not comparable with the others.
        if seg.flags & tcp_flags::SYN == 0 && seg.window > self.win[d] {
            self.win[d] = seg.window;
        }
        let o = 1 - d;
        if seg.flags & tcp_flags::ACK != 0 && !self.known(o) {
            // What `d` acknowledges is where the other side goes on from.
            self.end[o] = seg.ack;
            self.set_scale(o, 0);
        }
    }

    /// The smallest scale of direction `o`'s windows that covers a jump of `beyond`.
    fn grow_scale(&mut self, o: usize, beyond: u32) {
        let mut scale = self.scale(o);
        while scale < MAX_SCALE && self.offered_with(o, scale) < beyond {
            scale += 1;
        }
        self.set_scale(o, scale);
    }

    /// `offered` with another scale.
    #[inline(always)]
    fn offered_with(&self, o: usize, scale: u8) -> u32 {
        let raw = match self.win[o] {
            0 => UNKNOWN_WINDOW,
            w => u32::from(w),
        };
        raw << scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcp_flags::{ACK, FIN, RST, SYN};

    const IN: usize = 0;
    const OUT: usize = 1;

    fn seg(seq: u32, ack: u32, window: u16, flags: u8, payload: u32) -> Segment {
        let len = payload + u32::from(flags & SYN != 0) + u32::from(flags & FIN != 0);
        Segment {
            seq,
            ack,
            window,
            flags,
            len,
        }
    }

    /// A session picked up mid-stream: in sends from `a`, out from `b`, each
    /// announcing `window` (raw).
    fn picked_up(a: u32, b: u32, window: u16) -> TcpWindow {
        let mut w = TcpWindow::default();
        w.note(IN, &seg(a, b, window, ACK, 100));
        w.note(OUT, &seg(b, a.wrapping_add(100), window, ACK, 50));
        w
    }

    #[test]
    fn size_is_thirteen_bytes() {
        assert_eq!(std::mem::size_of::<TcpWindow>(), 13);
    }

    #[test]
    fn first_packet_starts_its_side_and_seeds_the_other_from_its_ack() {
        let mut w = TcpWindow::default();
        assert_eq!(w.check(IN, &seg(5, 0, 100, RST, 0)), Verdict::NoWindow);
        w.note(IN, &seg(1000, 7000, 512, ACK, 100));
        assert_eq!(w.end(IN), Some(1100));
        assert_eq!(w.end(OUT), Some(7000), "seeded from the ack");
        // The silent side's RST is checked against what was acknowledged of it.
        assert_eq!(w.check(OUT, &seg(7000, 0, 0, RST, 0)), Verdict::InWindow);
        assert_eq!(
            w.check(OUT, &seg(7000 + (1 << 30), 0, 0, RST, 0)),
            Verdict::OutOfWindow
        );
    }

    #[test]
    fn without_an_ack_the_other_side_stays_unknown() {
        let mut w = TcpWindow::default();
        w.note(IN, &seg(1000, 0, 512, SYN, 0));
        assert_eq!(w.end(IN), Some(1001), "a SYN takes one number");
        assert_eq!(w.end(OUT), None);
        assert_eq!(w.check(OUT, &seg(1, 0, 0, RST, 0)), Verdict::NoWindow);
    }

    #[test]
    fn rst_fin_and_ack_in_and_out_of_the_window() {
        let w = picked_up(10_000, 50_000, 1000);
        for (d, end) in [(IN, 10_100), (OUT, 50_050)] {
            for flags in [RST, RST | ACK, FIN | ACK, ACK] {
                let at = |seq: u32| w.check(d, &seg(seq, 0, 0, flags, 0));
                assert_eq!(at(end), Verdict::InWindow, "at the end");
                assert_eq!(at(end + 1000), Verdict::InWindow, "a window ahead");
                assert_eq!(at(end + 1001), Verdict::OutOfWindow, "beyond");
                assert_eq!(at(end - 1000), Verdict::InWindow, "a window behind");
                // The lower bound is on the segment's end (a FIN takes a number).
                let older = end - 1001 - u32::from(flags & FIN != 0);
                assert_eq!(at(older), Verdict::OutOfWindow, "older");
                assert_eq!(at(end ^ 0x8000_0000), Verdict::OutOfWindow, "far off");
            }
        }
    }

    #[test]
    fn sequence_numbers_wrap_around() {
        let start = u32::MAX - 40;
        let mut w = picked_up(start, 3, 1000);
        assert_eq!(w.end(IN), Some(start.wrapping_add(100)), "past zero");
        assert_eq!(w.check(IN, &seg(59, 0, 0, RST, 0)), Verdict::InWindow);
        assert_eq!(
            w.check(IN, &seg(start - 800, 0, 0, RST, 0)),
            Verdict::InWindow,
            "before the wrap, within a window"
        );
        assert_eq!(
            w.check(IN, &seg(59 + 1001, 0, 0, RST, 0)),
            Verdict::OutOfWindow
        );
        // Data goes on across the wrap.
        w.note(IN, &seg(59, 53, 1000, ACK, 500));
        assert_eq!(w.end(IN), Some(559));
        assert_eq!(w.check(IN, &seg(559, 0, 0, FIN, 0)), Verdict::InWindow);
    }

    #[test]
    fn data_moves_the_window_on() {
        let mut w = picked_up(10_000, 50_000, 1000);
        let mut seq = 10_100;
        for _ in 0..1000 {
            w.note(IN, &seg(seq, 50_050, 1000, ACK, 900));
            seq += 900;
        }
        assert_eq!(w.end(IN), Some(seq));
        assert_eq!(w.check(IN, &seg(seq, 0, 0, RST, 0)), Verdict::InWindow);
        assert_eq!(
            w.check(IN, &seg(10_100, 0, 0, RST, 0)),
            Verdict::OutOfWindow
        );
        // A retransmission from the past moves nothing back.
        w.note(IN, &seg(seq - 1800, 50_050, 1000, ACK, 900));
        assert_eq!(w.end(IN), Some(seq));
    }

    #[test]
    fn window_scale_is_learnt_from_data_ahead_of_the_raw_window() {
        // The receiver announces 512 raw (scale 7 really: 64 KiB).
        let mut w = picked_up(10_000, 50_000, 512);
        assert_eq!(w.scale(OUT), 0);
        // The sender has 8 segments of 1448 in flight: a jump of 11584.
        w.note(IN, &seg(10_100 + 7 * 1448, 50_050, 512, ACK, 1448));
        assert_eq!(w.end(IN), Some(10_100 + 8 * 1448));
        assert_eq!(w.scale(OUT), 5, "512 << 5 = 16384 covers 11584");
        // The window checks now take the scaled window.
        let end = 10_100 + 8 * 1448;
        assert_eq!(
            w.check(IN, &seg(end + 16_000, 0, 0, RST, 0)),
            Verdict::InWindow
        );
        assert_eq!(
            w.check(IN, &seg(end + 16_385, 0, 0, RST, 0)),
            Verdict::OutOfWindow
        );
        // The other way stays unscaled.
        assert_eq!(w.scale(IN), 0);
    }

    #[test]
    fn scale_grows_no_further_than_fourteen() {
        let mut w = picked_up(10_000, 50_000, 1);
        // 1 << 14 covers a jump of at most 16384; a jump beyond is ignored.
        w.note(IN, &seg(10_100, 50_050, 1, ACK, 20_000));
        assert_eq!(w.end(IN), Some(10_100));
        w.note(IN, &seg(10_100, 50_050, 1, ACK, 16_000));
        assert_eq!(w.scale(OUT), 14);
        assert_eq!(w.end(IN), Some(26_100));
    }

    #[test]
    fn forged_packets_far_off_change_nothing() {
        let mut w = picked_up(10_000, 50_000, 1000);
        let before = w;
        for (d, end) in [(IN, 10_100u32), (OUT, 50_050)] {
            for off in [
                1 << 31,
                1 << 28,
                0u32.wrapping_sub(1 << 28),
                0u32.wrapping_sub(2000),
            ] {
                w.note(d, &seg(end.wrapping_add(off), 12345, 65535, ACK, 100));
            }
        }
        assert_eq!(w, before);
    }

    #[test]
    fn the_window_field_is_the_largest_seen_and_not_a_syns() {
        let mut w = TcpWindow::default();
        w.note(IN, &seg(1, 0, 64240, SYN, 0));
        w.note(OUT, &seg(9, 2, 65160, SYN | ACK, 0));
        assert_eq!({ w.win }, [0, 0]);
        w.note(IN, &seg(2, 10, 502, ACK, 0));
        w.note(IN, &seg(2, 10, 400, ACK, 0));
        assert_eq!({ w.win }, [502, 0]);
    }

    #[test]
    fn an_accepted_fin_takes_a_number() {
        let mut w = picked_up(10_000, 50_000, 1000);
        let fin = seg(10_100, 50_050, 1000, FIN | ACK, 0);
        assert_eq!(w.check(IN, &fin), Verdict::InWindow);
        w.note(IN, &fin);
        assert_eq!(w.end(IN), Some(10_101));
        // The last ACK from the other side, and a RST right after the FIN.
        let last = seg(50_050, 10_101, 1000, ACK, 0);
        assert_eq!(w.check(OUT, &last), Verdict::InWindow);
        assert_eq!(w.check(IN, &seg(10_101, 0, 0, RST, 0)), Verdict::InWindow);
    }
}
