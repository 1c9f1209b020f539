//! Closed sessions waiting for room in the closed-record feed, oldest first: a queue
//! threaded through their cold records (`Cold::sched`, free once an entry has left
//! the timer wheel), so it needs no memory of its own and can never be full.

use super::table::FlowTable;

#[derive(Default)]
pub struct ClosedQueue {
    /// First and last slot + 1 (0: empty).
    head: u32,
    tail: u32,
    len: usize,
}

impl ClosedQueue {
    /// Puts `slot` (closed, out of the wheel) at the back.
    pub fn push(&mut self, table: &mut FlowTable, slot: u32) {
        table.cold_mut(slot).sched = 0;
        if self.tail == 0 {
            self.head = slot + 1;
        } else {
            table.cold_mut(self.tail - 1).sched = slot + 1;
        }
        self.tail = slot + 1;
        self.len += 1;
    }

    /// The oldest slot waiting.
    pub fn front(&self) -> Option<u32> {
        self.head.checked_sub(1)
    }

    /// Takes the oldest slot out.
    pub fn pop(&mut self, table: &mut FlowTable) -> Option<u32> {
        let slot = self.front()?;
        let next = std::mem::take(&mut table.cold_mut(slot).sched);
        self.head = next;
        if next == 0 {
            self.tail = 0;
        }
        self.len -= 1;
        Some(slot)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::table::{Cold, Entry};

    #[test]
    fn first_in_first_out_through_the_cold_records() {
        let mut t = FlowTable::with_capacity(8).unwrap();
        let slots: Vec<u32> = (0..5u64)
            .map(|id| {
                let mut e = Entry {
                    in_lif: 1,
                    out_lif: 2,
                    proto: 17,
                    ..Entry::default()
                };
                e.src[0] = id as u8;
                t.insert(
                    &e,
                    &Cold {
                        id,
                        ..Cold::default()
                    },
                )
                .unwrap()
            })
            .collect();
        let mut q = ClosedQueue::default();
        assert_eq!(q.pop(&mut t), None);
        for &s in &slots[..3] {
            q.push(&mut t, s);
        }
        assert_eq!(q.pop(&mut t), Some(slots[0]));
        q.push(&mut t, slots[3]);
        assert_eq!(q.len(), 3);
        let rest: Vec<u32> = std::iter::from_fn(|| q.pop(&mut t)).collect();
        assert_eq!(rest, vec![slots[1], slots[2], slots[3]]);
        assert!(q.is_empty() && q.front().is_none());
        // Empty again: a push starts a new queue.
        q.push(&mut t, slots[4]);
        assert_eq!(q.front(), Some(slots[4]));
        assert!(slots.iter().all(|&s| s == slots[4] || t.cold(s).sched == 0));
    }
}
