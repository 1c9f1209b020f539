//! The session cleaner: idle expiry through the timer wheel, and the hand-over of
//! closed records to the closed-session feed.
//!
//! A closed session keeps its slot until its record is in the feed, so a slow
//! consumer loses nothing: records wait in the worker (counted as back-pressure), and
//! when they fill the table, adds are answered "table full" rather than memory grown.

use crossbeam_channel::TrySendError;

use super::sessions::FLAG_SUPPRESS;
use super::{Worker, AGING_BUDGET, CLOSED_BUDGET};
use crate::flow::FlowTable;
use crate::session::{CloseCause, SessionState};

/// The tick at which a session has been idle for its whole timeout: `last_seen` is
/// the tick its last packet arrived in, so one more tick makes sure the idle time is
/// never short of the timeout.
pub(super) fn due_tick(t: &FlowTable, slot: u32) -> u32 {
    t.entry(slot)
        .last_seen
        .saturating_add(t.cold(slot).timeout_ticks)
        .saturating_add(1)
}

impl Worker {
    /// Expires sessions idle past their timeout; returns entries looked at.
    pub(super) fn age(&mut self) -> usize {
        let now = self.clock.tick;
        if self.wheel.cursor() > now {
            // Nothing due yet: the common case, checked before any other work.
            return 0;
        }
        let mut expired = arrayvec::ArrayVec::<u32, AGING_BUDGET>::new();
        let seen = self
            .wheel
            .advance(&mut self.table, now, AGING_BUDGET, due_tick, |_, slot| {
                expired.push(slot)
            });
        for &slot in &expired {
            // Both FINs were seen and only the last ACK went missing: still a FIN close.
            let cause = if self.table.entry(slot).state() == SessionState::Closing2 as u8 {
                CloseCause::FinAck
            } else {
                CloseCause::Timeout
            };
            self.close_unlinked(slot, cause);
        }
        seen
    }

    /// Moves waiting closed records into the feed while it has room; returns how many
    /// slots were freed.
    pub(super) fn hand_over_closed(&mut self) -> usize {
        let mut done = 0;
        while done < CLOSED_BUDGET {
            let Some(slot) = self.closed_waiting.front() else {
                break;
            };
            if self.table.cold(slot).flags & FLAG_SUPPRESS == 0 {
                match self.closed_feed.try_send(self.info(slot)) {
                    Ok(()) => self.counters.closed_sent += 1,
                    Err(TrySendError::Full(_)) => {
                        self.counters.feed_full += 1;
                        break;
                    }
                    // Nobody reads the feed any more (the engine is stopping): keep
                    // the records, they are counted as undelivered at exit.
                    Err(TrySendError::Disconnected(_)) => break,
                }
            }
            self.closed_waiting.pop(&mut self.table);
            self.release(slot);
            done += 1;
        }
        done
    }
}
