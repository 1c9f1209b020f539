//! The life of one learned neighbour entry, as Linux's neighbour code runs it
//! (RFC 4861 7.3.2 and its ARP counterpart), over a clock in nanoseconds:
//!
//! ```text
//!  new, in use ─► INCOMPLETE ──(probes unanswered)──► FAILED ──(retry)──► INCOMPLETE
//!                    │ reply                              ▲
//!                    ▼                                    │ probes unanswered
//!  reply ──────► REACHABLE ──(reachable elapsed)──► STALE ──(in use, delay)──► PROBE
//!                    ▲                                                        │
//!                    └─────────────────────── reply ──────────────────────────┘
//! ```
//!
//! An unsolicited frame from the neighbour (its own request, a gratuitous ARP, an
//! unsolicited NA) gives an unknown entry a MAC in STALE, or replaces a changed MAC
//! in STALE; only an answer to the device's request makes it REACHABLE. An entry no
//! session names sends nothing. `Entry` decides; the worker sends and publishes.

use super::frames::Heard;
use super::State;

/// The timers and retry counts of resolution (Linux's defaults, except the retry of
/// failed entries, which Linux leaves to the next packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// A reply keeps an entry REACHABLE this long (base_reachable_time: 30 s).
    pub reachable_ns: u64,
    /// Between two requests for one entry (retrans_time: 1 s).
    pub retrans_ns: u64,
    /// Requests before an entry fails (mcast_solicit / ucast_solicit: 3).
    pub probes: u32,
    /// A STALE entry in use waits this long before it is probed (delay_first_probe:
    /// 5 s).
    pub delay_ns: u64,
    /// A FAILED entry in use is tried again after this long.
    pub retry_ns: u64,
}

impl Default for Timers {
    fn default() -> Timers {
        Timers {
            reachable_ns: 30_000_000_000,
            retrans_ns: 1_000_000_000,
            probes: 3,
            delay_ns: 5_000_000_000,
            retry_ns: 5_000_000_000,
        }
    }
}

/// A request to send for an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// To everyone: broadcast ARP, NS to the solicited-node multicast address.
    Broadcast,
    /// To the MAC the entry has, to confirm it.
    Unicast([u8; 6]),
}

/// What a step of the resolver did to an entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// The state or MAC changed: publish it.
    pub changed: bool,
    /// A request to send now.
    pub probe: Option<Probe>,
    /// The entry has just failed.
    pub failed: bool,
    /// A reply confirmed the entry (publish the new age even if nothing changed).
    pub confirmed: bool,
}

/// The resolver's own record of one learned entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub state: State,
    pub mac: Option<[u8; 6]>,
    /// Requests sent in the current INCOMPLETE or PROBE round.
    sent: u32,
    /// When the next timer of the state runs out.
    due_ns: u64,
    /// The sequence number of the last report taken (`Slot::last_heard`).
    pub heard_seq: u64,
}

impl Entry {
    /// A new entry: INCOMPLETE, or NOARP where it cannot be resolved.
    pub fn new(can_resolve: bool) -> Entry {
        Entry {
            state: if can_resolve {
                State::Incomplete
            } else {
                State::Noarp
            },
            mac: None,
            sent: 0,
            due_ns: 0,
            heard_seq: 0,
        }
    }

    /// Whether frames for this entry may use its MAC.
    pub fn usable(&self) -> bool {
        self.mac.is_some() && matches!(self.state, State::Reachable | State::Stale | State::Probe)
    }

    fn enter(&mut self, state: State, due_ns: u64) {
        self.state = state;
        self.sent = 0;
        self.due_ns = due_ns;
    }

    /// Takes a frame heard from the neighbour.
    pub fn heard(&mut self, heard: Heard, now: u64, t: &Timers) -> Step {
        if self.state == State::Noarp {
            return Step::default();
        }
        let before = (self.state, self.mac);
        match (heard.mac, heard.solicited) {
            (Some(mac), true) => {
                self.mac = Some(mac);
                self.enter(State::Reachable, now + t.reachable_ns);
            }
            // An answer that names no MAC (an NA without its option) confirms the
            // one the entry has.
            (None, true) if self.mac.is_some() => {
                self.enter(State::Reachable, now + t.reachable_ns);
            }
            (Some(mac), false) if self.mac != Some(mac) || !self.usable() => {
                self.mac = Some(mac);
                self.enter(State::Stale, now + t.delay_ns);
            }
            _ => return Step::default(),
        }
        Step {
            changed: (self.state, self.mac) != before,
            confirmed: heard.solicited,
            ..Step::default()
        }
    }

    /// Runs the entry's timers; `in_use`: sessions name it.
    pub fn tick(&mut self, now: u64, in_use: bool, t: &Timers) -> Step {
        let mut step = Step::default();
        match self.state {
            State::Permanent | State::Noarp => {}
            State::Reachable => {
                if now >= self.due_ns {
                    self.enter(State::Stale, now + t.delay_ns);
                    step.changed = true;
                }
            }
            State::Stale => {
                if in_use && now >= self.due_ns {
                    self.enter(State::Probe, now);
                    step.changed = true;
                    step.probe = self.next_probe(now, t, &mut step);
                }
            }
            State::Incomplete | State::Probe => {
                if in_use && now >= self.due_ns {
                    step.probe = self.next_probe(now, t, &mut step);
                }
            }
            State::Failed => {
                if in_use && now >= self.due_ns {
                    self.enter(State::Incomplete, now);
                    step.changed = true;
                    step.probe = self.next_probe(now, t, &mut step);
                }
            }
        }
        step
    }

    /// The next request of an INCOMPLETE or PROBE round, or the failure that ends a
    /// round whose requests were all sent.
    fn next_probe(&mut self, now: u64, t: &Timers, step: &mut Step) -> Option<Probe> {
        if self.sent >= t.probes {
            self.mac = None;
            self.enter(State::Failed, now + t.retry_ns);
            step.changed = true;
            step.failed = true;
            return None;
        }
        self.sent += 1;
        self.due_ns = now + t.retrans_ns;
        match (self.state, self.mac) {
            (State::Probe, Some(mac)) => Some(Probe::Unicast(mac)),
            _ => Some(Probe::Broadcast),
        }
    }

    /// A request the rate limit did not let out: tried again at the next run.
    pub fn unsend(&mut self, now: u64) {
        self.sent = self.sent.saturating_sub(1);
        self.due_ns = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 7];
    const OTHER: [u8; 6] = [2, 0, 0, 0, 0, 8];
    const S: u64 = 1_000_000_000;

    fn reply(mac: [u8; 6]) -> Heard {
        Heard {
            mac: Some(mac),
            solicited: true,
        }
    }

    fn unsolicited(mac: [u8; 6]) -> Heard {
        Heard {
            mac: Some(mac),
            solicited: false,
        }
    }

    #[test]
    fn unanswered_requests_fail_then_retry() {
        let t = Timers::default();
        let mut e = Entry::new(true);
        assert_eq!(e.tick(0, true, &t).probe, Some(Probe::Broadcast));
        assert_eq!(e.tick(S / 2, true, &t).probe, None, "not before retrans");
        assert_eq!(e.tick(S, true, &t).probe, Some(Probe::Broadcast));
        assert_eq!(e.tick(2 * S, true, &t).probe, Some(Probe::Broadcast));
        let step = e.tick(3 * S, true, &t);
        assert!(step.failed && step.changed && step.probe.is_none());
        assert_eq!(e.state, State::Failed);
        assert!(!e.tick(7 * S, true, &t).changed, "retry waits");
        let step = e.tick(8 * S, true, &t);
        assert_eq!(e.state, State::Incomplete);
        assert_eq!(step.probe, Some(Probe::Broadcast));
    }

    #[test]
    fn an_entry_no_session_uses_sends_nothing() {
        let t = Timers::default();
        let mut e = Entry::new(true);
        for s in 0..100 {
            assert_eq!(e.tick(s * S, false, &t), Step::default());
        }
        assert_eq!(e.state, State::Incomplete);
    }

    #[test]
    fn a_reply_makes_it_reachable_then_stale_then_probed() {
        let t = Timers::default();
        let mut e = Entry::new(true);
        e.tick(0, true, &t);
        let step = e.heard(reply(MAC), S / 10, &t);
        assert!(step.changed && step.confirmed);
        assert!(e.usable());
        assert_eq!(e.state, State::Reachable);
        let t30 = S / 10 + t.reachable_ns;
        assert!(!e.tick(t30 - 1, true, &t).changed);
        assert!(e.tick(t30, true, &t).changed);
        assert_eq!(e.state, State::Stale);
        assert!(e.usable(), "stale entries still forward");
        assert_eq!(e.tick(t30 + t.delay_ns - 1, true, &t).probe, None);
        let step = e.tick(t30 + t.delay_ns, true, &t);
        assert_eq!(e.state, State::Probe);
        assert_eq!(step.probe, Some(Probe::Unicast(MAC)));
        // Confirmed: reachable again.
        e.heard(reply(MAC), t30 + t.delay_ns + S / 2, &t);
        assert_eq!(e.state, State::Reachable);
    }

    #[test]
    fn a_silent_neighbour_fails_from_probe_and_stops_forwarding() {
        let t = Timers::default();
        let mut e = Entry::new(true);
        e.heard(reply(MAC), 0, &t);
        let mut now = t.reachable_ns;
        e.tick(now, true, &t);
        now += t.delay_ns;
        let mut unicast = 0;
        let mut failed = false;
        for _ in 0..5 {
            let step = e.tick(now, true, &t);
            unicast += usize::from(step.probe == Some(Probe::Unicast(MAC)));
            failed |= step.failed;
            now += t.retrans_ns;
        }
        assert_eq!(unicast, 3);
        assert!(failed);
        assert_eq!(e.state, State::Failed);
        assert!(!e.usable());
        assert_eq!(e.mac, None);
    }

    #[test]
    fn a_stale_entry_no_session_uses_is_not_probed() {
        let t = Timers::default();
        let mut e = Entry::new(true);
        e.heard(reply(MAC), 0, &t);
        e.tick(t.reachable_ns, false, &t);
        assert_eq!(e.state, State::Stale);
        assert_eq!(e.tick(t.reachable_ns * 10, false, &t).probe, None);
        assert_eq!(e.state, State::Stale);
    }

    #[test]
    fn unsolicited_frames_give_stale_entries_and_changed_macs() {
        let t = Timers::default();
        let mut e = Entry::new(true);
        assert!(e.heard(unsolicited(MAC), 0, &t).changed);
        assert_eq!((e.state, e.mac), (State::Stale, Some(MAC)));
        e.heard(reply(MAC), S, &t);
        assert_eq!(e.state, State::Reachable);
        // The same MAC again, unsolicited: nothing changes.
        assert!(!e.heard(unsolicited(MAC), 2 * S, &t).changed);
        assert_eq!(e.state, State::Reachable);
        // A new MAC replaces the old one, unconfirmed.
        assert!(e.heard(unsolicited(OTHER), 3 * S, &t).changed);
        assert_eq!((e.state, e.mac), (State::Stale, Some(OTHER)));
    }

    #[test]
    fn an_answer_without_a_mac_confirms_only_a_known_one() {
        let t = Timers::default();
        let mut e = Entry::new(true);
        let bare = Heard {
            mac: None,
            solicited: true,
        };
        assert!(!e.heard(bare, 0, &t).changed);
        assert_eq!(e.state, State::Incomplete);
        e.heard(unsolicited(MAC), 0, &t);
        e.heard(bare, S, &t);
        assert_eq!((e.state, e.mac), (State::Reachable, Some(MAC)));
    }

    #[test]
    fn noarp_entries_never_change() {
        let t = Timers::default();
        let mut e = Entry::new(false);
        assert_eq!(e.heard(reply(MAC), 0, &t), Step::default());
        assert_eq!(e.tick(100 * S, true, &t), Step::default());
        assert_eq!(e.state, State::Noarp);
    }

    #[test]
    fn an_unsent_request_is_tried_again_without_counting() {
        let t = Timers::default();
        let mut e = Entry::new(true);
        for i in 0..10 {
            assert_eq!(e.tick(i, true, &t).probe, Some(Probe::Broadcast));
            e.unsend(i);
        }
        assert_eq!(e.state, State::Incomplete);
    }
}
