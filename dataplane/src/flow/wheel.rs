//! The session cleaner's clock: a hashed timer wheel threaded through the entries.
//!
//! Each live entry sits in the slot of the tick it is due at (`sched`), in a doubly
//! linked list whose links live in the session's cold record (`Cold::timer`), so scheduling and
//! unlinking are O(1) and need no memory of their own. Packets do not touch the
//! wheel: they only write `last_seen`. When a slot comes due the cleaner looks at each
//! entry once: idle long enough -> expire; otherwise it is rescheduled at its real
//! deadline. The work per tick is the entries due in it, never a scan of the table,
//! and each call is bounded by a budget so that a burst of expiries cannot stall the
//! packet loop.

use super::table::FlowTable;

/// Slots in the wheel; deadlines further away than this go around more than once.
pub const SLOTS: usize = 4096;

pub struct TimerWheel {
    /// First entry (slot + 1) of each wheel slot, 0 when empty.
    heads: Vec<u32>,
    /// The next tick to process.
    cursor: u32,
}

impl TimerWheel {
    pub fn new(now_tick: u32) -> TimerWheel {
        TimerWheel {
            heads: vec![0; SLOTS],
            cursor: now_tick,
        }
    }

    /// Puts `slot` in the list of tick `due` (a tick not yet processed).
    pub fn schedule(&mut self, table: &mut FlowTable, slot: u32, due: u32) {
        let due = due.max(self.cursor);
        let w = due as usize % SLOTS;
        let head = self.heads[w];
        if head != 0 {
            table.cold_mut(head - 1).timer[1] = slot + 1;
        }
        let e = table.cold_mut(slot);
        e.sched = due;
        e.timer = [head, 0];
        self.heads[w] = slot + 1;
    }

    /// Takes `slot` out of the wheel.
    pub fn unlink(&mut self, table: &mut FlowTable, slot: u32) {
        let e = table.cold(slot);
        let [next, prev] = e.timer;
        let w = e.sched as usize % SLOTS;
        if prev == 0 {
            debug_assert_eq!(self.heads[w], slot + 1);
            self.heads[w] = next;
        } else {
            table.cold_mut(prev - 1).timer[0] = next;
        }
        if next != 0 {
            table.cold_mut(next - 1).timer[1] = prev;
        }
        table.cold_mut(slot).timer = [0, 0];
    }

    /// Processes due ticks up to `now_tick`, looking at no more than `budget` entries.
    /// For each entry found in a due slot, `due_at` says when it is really due (from
    /// its `last_seen` and timeout); if that tick has passed it is unlinked and handed
    /// to `expire`, otherwise it is moved to that tick's slot. Returns the number of
    /// entries looked at.
    pub fn advance(
        &mut self,
        table: &mut FlowTable,
        now_tick: u32,
        budget: usize,
        due_at: impl Fn(&FlowTable, u32) -> u32,
        mut expire: impl FnMut(&mut FlowTable, u32),
    ) -> usize {
        let mut seen = 0;
        while self.cursor <= now_tick && seen < budget {
            let w = self.cursor as usize % SLOTS;
            // Detach the list so that entries moved to this same slot (a deadline a
            // whole turn later) are not looked at again in this pass.
            let mut cur = std::mem::take(&mut self.heads[w]);
            while cur != 0 && seen < budget {
                let slot = cur - 1;
                cur = table.cold(slot).timer[0];
                table.cold_mut(slot).timer = [0, 0];
                seen += 1;
                let due = due_at(table, slot);
                if due <= self.cursor {
                    expire(table, slot);
                } else {
                    // `due` > cursor: it never lands in the detached list.
                    self.schedule(table, slot, due);
                }
            }
            if cur != 0 {
                // Out of budget: what is left waits in its slot for the next call.
                table.cold_mut(cur - 1).timer[1] = 0;
                self.append(table, w, cur);
                return seen;
            }
            self.cursor += 1;
        }
        seen
    }

    /// Puts the list starting at `first` (slot + 1) in front of wheel slot `w`.
    fn append(&mut self, table: &mut FlowTable, w: usize, first: u32) {
        let mut last = first;
        while table.cold(last - 1).timer[0] != 0 {
            last = table.cold(last - 1).timer[0];
        }
        let head = self.heads[w];
        table.cold_mut(last - 1).timer[0] = head;
        if head != 0 {
            table.cold_mut(head - 1).timer[1] = last;
        }
        self.heads[w] = first;
    }

    /// The next tick to be processed.
    pub fn cursor(&self) -> u32 {
        self.cursor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::table::{Cold, Entry};

    fn table_with(n: u32) -> (FlowTable, Vec<u32>) {
        let mut t = FlowTable::with_capacity(n as usize).unwrap();
        let slots = (0..n)
            .map(|i| {
                let mut e = Entry {
                    proto: 6,
                    in_lif: 1,
                    out_lif: 2,
                    sport: i as u16,
                    ..Entry::default()
                };
                e.src[0] = 1;
                let c = Cold {
                    id: u64::from(i),
                    ..Cold::default()
                };
                t.insert(&e, &c).unwrap()
            })
            .collect();
        (t, slots)
    }

    fn due(t: &FlowTable, s: u32) -> u32 {
        t.entry(s).last_seen + t.cold(s).timeout_ticks
    }

    #[test]
    fn expires_exactly_when_idle_long_enough() {
        let (mut t, slots) = table_with(3);
        let mut w = TimerWheel::new(0);
        for (i, &s) in slots.iter().enumerate() {
            t.cold_mut(s).timeout_ticks = 10 * (i as u32 + 1);
            w.schedule(&mut t, s, 10 * (i as u32 + 1));
        }
        let mut gone = vec![];
        for now in 0..=30 {
            if now == 15 {
                // Slot 2's session saw a packet: its deadline moves to 45.
                t.entry_mut(slots[2]).last_seen = 15;
            }
            w.advance(&mut t, now, 100, due, |_, s| gone.push((now, s)));
        }
        assert_eq!(gone, vec![(10, slots[0]), (20, slots[1])]);
        for now in 31..=45 {
            w.advance(&mut t, now, 100, due, |_, s| gone.push((now, s)));
        }
        assert_eq!(gone.last(), Some(&(45, slots[2])));
    }

    #[test]
    fn unlink_from_anywhere_in_a_list() {
        let (mut t, slots) = table_with(5);
        let mut w = TimerWheel::new(0);
        for &s in &slots {
            w.schedule(&mut t, s, 3);
        }
        w.unlink(&mut t, slots[2]); // middle
        w.unlink(&mut t, slots[4]); // head (last scheduled)
        w.unlink(&mut t, slots[0]); // tail
        let mut gone = vec![];
        w.advance(&mut t, 3, 100, |_, _| 0, |_, s| gone.push(s));
        gone.sort();
        assert_eq!(gone, vec![slots[1], slots[3]]);
    }

    #[test]
    fn budget_leaves_the_rest_for_later() {
        let (mut t, slots) = table_with(10);
        let mut w = TimerWheel::new(0);
        for &s in &slots {
            w.schedule(&mut t, s, 1);
        }
        let mut gone = vec![];
        assert_eq!(w.advance(&mut t, 5, 4, |_, _| 0, |_, s| gone.push(s)), 4);
        assert_eq!(gone.len(), 4);
        assert_eq!(w.advance(&mut t, 5, 4, |_, _| 0, |_, s| gone.push(s)), 4);
        assert_eq!(w.advance(&mut t, 5, 4, |_, _| 0, |_, s| gone.push(s)), 2);
        gone.sort();
        assert_eq!(gone, slots);
        assert_eq!(w.cursor(), 6);
    }

    #[test]
    fn long_timeouts_go_around() {
        let (mut t, slots) = table_with(1);
        let s = slots[0];
        let mut w = TimerWheel::new(0);
        let long = SLOTS as u32 * 2 + 5;
        t.cold_mut(s).timeout_ticks = long;
        w.schedule(&mut t, s, long);
        let mut gone = vec![];
        for now in 0..=long {
            w.advance(&mut t, now, 10, due, |_, s| gone.push((now, s)));
        }
        assert_eq!(gone, vec![(long, s)]);
    }
}
