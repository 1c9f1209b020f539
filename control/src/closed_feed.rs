//! The closed-session feed: closed records (FIN, RST, timeout) that the workers
//! handed over and GetClosedSessions has not delivered yet.
//!
//! A record goes through three steps: *held* (readable by GetSession and
//! GetAllSessions, waiting), *taken* (a stream is sending it; still readable), and
//! *delivered* (the transport of a live stream accepted it: forgotten). A stream
//! that ends before its records were accepted gives them back, first in line, so a
//! client that disconnects loses nothing.
//!
//! Records move from the engine's channel into the feed on a pump thread, and on
//! demand before any lookup, under one lock, so a session the worker no longer has
//! is always found here. At most `dataplane.closed_held` records are out of the
//! workers (in the channel or here) at any time: a worker sends a record only with
//! room (`Engine::closed_room`), and the feed gives the room back when it forgets a
//! record (delivered or deleted). Beyond that the back-pressure reaches the workers
//! (their closed sessions wait in the table, where lookups find them, and a full
//! table refuses adds), so nothing is ever dropped and no lookup moves a record
//! past the bound.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::Receiver;
use dataplane::session::SessionInfo;
use tokio::sync::Notify;

struct Held {
    info: SessionInfo,
    taken: bool,
    /// The stream that took it has handed it to the transport: DeleteSession can no
    /// longer stop it going out, so it leaves it.
    sending: bool,
}

#[derive(Default)]
struct Records {
    by_id: HashMap<u64, Held>,
    /// Ids waiting to be taken, in close order (may name removed ids: skipped).
    queue: VecDeque<u64>,
}

pub struct ClosedFeed {
    records: Mutex<Records>,
    source: Receiver<SessionInfo>,
    /// The workers' room for records: one more for each record forgotten.
    room: Arc<AtomicUsize>,
    /// Woken when records arrive or come back.
    pub arrived: Notify,
}

impl ClosedFeed {
    pub fn new(source: Receiver<SessionInfo>, room: Arc<AtomicUsize>) -> ClosedFeed {
        ClosedFeed {
            records: Mutex::new(Records::default()),
            source,
            room,
            arrived: Notify::new(),
        }
    }

    /// `n` records forgotten: the workers may send as many more.
    fn forgotten(&self, n: usize) {
        if n > 0 {
            self.room.fetch_add(n, Ordering::AcqRel);
        }
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the records the workers sent into the feed (the room bounds them); how
    /// many moved.
    pub fn pull(&self) -> usize {
        let mut r = self.records();
        let mut moved = 0;
        while let Ok(info) = self.source.try_recv() {
            r.queue.push_back(info.id);
            r.by_id.insert(
                info.id,
                Held {
                    info,
                    taken: false,
                    sending: false,
                },
            );
            moved += 1;
        }
        drop(r);
        if moved > 0 {
            self.arrived.notify_waiters();
        }
        moved
    }

    /// The pump: waits for records from the workers and pulls them in, until `stop`.
    pub fn pump(&self, stop: &std::sync::atomic::AtomicBool) {
        while !stop.load(Ordering::Acquire) {
            let mut sel = crossbeam_channel::Select::new();
            sel.recv(&self.source);
            if sel.ready_timeout(Duration::from_millis(50)).is_ok() {
                self.pull();
            }
        }
    }

    /// A closed session not yet delivered (taken by a stream or not).
    pub fn find(&self, id: u64) -> Option<SessionInfo> {
        self.pull();
        self.records().by_id.get(&id).map(|h| h.info.clone())
    }

    /// Forgets a closed session (DeleteSession): it will not be delivered. A record
    /// already going out (`start_sending`) stays: its stream reports it.
    pub fn remove(&self, id: u64) -> Option<SessionInfo> {
        self.pull();
        let mut r = self.records();
        if r.by_id.get(&id).is_some_and(|h| h.sending) {
            return None;
        }
        let removed = r.by_id.remove(&id).map(|h| h.info);
        drop(r);
        self.forgotten(removed.iter().count());
        removed
    }

    /// The next record for a stream; it stays readable until delivered or given back.
    pub fn take(&self) -> Option<SessionInfo> {
        let mut one = Vec::with_capacity(1);
        self.take_into(1, &mut one);
        one.pop()
    }

    /// Up to `n` next records, in order, under one lock.
    pub fn take_into(&self, n: usize, out: &mut Vec<SessionInfo>) -> usize {
        self.pull();
        let mut r = self.records();
        let mut taken = 0;
        while taken < n {
            let Some(id) = r.queue.pop_front() else {
                break;
            };
            if let Some(h) = r.by_id.get_mut(&id).filter(|h| !h.taken) {
                h.taken = true;
                out.push(h.info.clone());
                taken += 1;
            }
        }
        taken
    }

    /// A stream is about to send this record it took: true if it is still here
    /// (from now on DeleteSession leaves it); false if it was deleted meanwhile, and
    /// must not be sent.
    pub fn start_sending(&self, id: u64) -> bool {
        match self.records().by_id.get_mut(&id).filter(|h| h.taken) {
            Some(h) => {
                h.sending = true;
                true
            }
            None => false,
        }
    }

    /// The transport accepted these records: forget them. Returns the ids forgotten
    /// (a record deleted meanwhile is not: its id may belong to a new session).
    pub fn delivered(&self, ids: impl IntoIterator<Item = u64>) -> Vec<u64> {
        let mut r = self.records();
        let mut forgotten = Vec::new();
        for id in ids {
            if r.by_id.get(&id).is_some_and(|h| h.taken) {
                r.by_id.remove(&id);
                forgotten.push(id);
            }
        }
        drop(r);
        self.forgotten(forgotten.len());
        forgotten
    }

    /// A stream ended before these were delivered: they are first in line again.
    pub fn give_back(&self, ids: &[u64]) {
        let mut r = self.records();
        for &id in ids.iter().rev() {
            if let Some(h) = r.by_id.get_mut(&id).filter(|h| h.taken) {
                h.taken = false;
                h.sending = false;
                r.queue.push_front(id);
            }
        }
        drop(r);
        if !ids.is_empty() {
            self.arrived.notify_waiters();
        }
    }

    /// Records a stream is sending now (taken, not yet delivered or given back).
    pub fn in_flight(&self) -> usize {
        self.records().by_id.values().filter(|h| h.taken).count()
    }

    /// Records held (taken or not).
    pub fn len(&self) -> usize {
        self.records().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::session::{CloseCause, SessionState};

    fn info(id: u64) -> SessionInfo {
        SessionInfo {
            id,
            in_packets: 1,
            in_bytes: 60,
            out_packets: 0,
            out_bytes: 0,
            state: SessionState::Closed,
            cause: CloseCause::Rst,
            start_ns: 1,
            end_ns: Some(2),
        }
    }

    #[test]
    fn take_deliver_give_back() {
        let (tx, rx) = crossbeam_channel::bounded(16);
        let feed = ClosedFeed::new(rx, Arc::new(AtomicUsize::new(100)));
        for id in [3, 1, 2] {
            tx.send(info(id)).unwrap();
        }
        assert_eq!(feed.take().unwrap().id, 3);
        assert_eq!(feed.take().unwrap().id, 1);
        assert!(feed.find(1).is_some(), "taken is still readable");
        feed.delivered([3]);
        assert!(feed.find(3).is_none());
        feed.give_back(&[1]);
        assert_eq!(feed.take().unwrap().id, 1, "given back goes first");
        assert_eq!(feed.take().unwrap().id, 2);
        assert!(feed.take().is_none());
        assert_eq!(feed.remove(2).unwrap().id, 2);
        feed.delivered([1, 2]);
        assert!(feed.is_empty());
    }

    #[test]
    fn a_record_going_out_is_not_deleted_and_a_deleted_one_does_not_go_out() {
        let (tx, rx) = crossbeam_channel::bounded(16);
        let feed = ClosedFeed::new(rx, Arc::new(AtomicUsize::new(100)));
        for id in [1, 2] {
            tx.send(info(id)).unwrap();
        }
        assert_eq!(feed.take().unwrap().id, 1);
        assert_eq!(feed.take().unwrap().id, 2);
        assert!(feed.start_sending(1));
        assert!(feed.remove(1).is_none(), "going out: its stream reports it");
        assert!(feed.remove(2).is_some(), "taken, not yet going out");
        assert!(!feed.start_sending(2), "deleted: must not be sent");
        assert_eq!(feed.delivered([1, 2]), vec![1], "2 was not delivered");
        assert!(feed.is_empty());
    }

    #[test]
    fn forgotten_records_give_the_room_back() {
        let (tx, rx) = crossbeam_channel::bounded(16);
        let room = Arc::new(AtomicUsize::new(0));
        let feed = ClosedFeed::new(rx, room.clone());
        for id in 0..3 {
            tx.send(info(id)).unwrap();
        }
        assert_eq!(feed.take().unwrap().id, 0);
        feed.delivered([0]);
        assert_eq!(room.load(Ordering::Acquire), 1, "delivered");
        assert!(feed.remove(1).is_some());
        assert_eq!(room.load(Ordering::Acquire), 2, "deleted");
        assert!(feed.find(2).is_some());
        feed.give_back(&[]);
        assert_eq!(room.load(Ordering::Acquire), 2, "held: no room back");
    }
}
