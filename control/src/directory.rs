//! The session directory: which worker holds each session id, in id order.
//!
//! It is the control plane's only table of sessions and holds no counters (those
//! live in the workers). It keeps ids unique across workers (an id is reserved
//! before its add is sent, so two streams cannot offload one id twice) and gives
//! GetAllSessions its order. An id stays here until its session is deleted or its
//! closed record has been delivered.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Bound;
use std::sync::Mutex;

/// Hashes an id with one multiply. The set it serves holds only the adds in flight
/// (a few rounds: `api.add_batch` x `api.add_batches_in_flight` per worker), so ids
/// chosen to collide cost at most a scan of that many; SipHash cost 8% of the
/// control plane's work per add.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        let h = (id ^ (id >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 29);
    }
}

#[derive(Default)]
struct Ids {
    /// Every id present (held or being added) -> its worker.
    workers: BTreeMap<u64, u16>,
    /// The ids sent to a worker whose answer is not back yet: a few rounds' worth,
    /// so an accepted add costs one walk of the tree, not two.
    adding: HashSet<u64, BuildHasherDefault<IdHasher>>,
}

impl Ids {
    /// Accepted, not waiting for its worker's answer.
    fn held(&self, id: u64) -> bool {
        self.adding.is_empty() || !self.adding.contains(&id)
    }
}

#[derive(Default)]
pub struct Directory {
    ids: Mutex<Ids>,
}

impl Directory {
    fn ids(&self) -> std::sync::MutexGuard<'_, Ids> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims `id` for an add on `worker`; false if the id is taken.
    pub fn reserve(&self, id: u64, worker: usize) -> bool {
        let mut ids = self.ids();
        // One walk of the tree, not a lookup and then an insert.
        match ids.workers.entry(id) {
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(worker as u16);
                ids.adding.insert(id);
                true
            }
        }
    }

    /// The adds of `ids` were accepted (one lock for a worker's whole answer).
    pub fn confirm(&self, ids: &[u64]) {
        let mut map = self.ids();
        for id in ids {
            map.adding.remove(id);
        }
    }

    /// The add of `id` was refused, or the session is gone for good.
    pub fn remove(&self, id: u64) {
        let mut ids = self.ids();
        ids.workers.remove(&id);
        ids.adding.remove(&id);
    }

    /// The worker holding `id`, if its add was accepted.
    pub fn get(&self, id: u64) -> Option<usize> {
        let ids = self.ids();
        if !ids.held(id) {
            return None;
        }
        ids.workers.get(&id).map(|&w| w as usize)
    }

    /// Held sessions with ids above `after` (all, for None), leaving out `hidden`, at
    /// most `limit`, in order; and whether more follow.
    pub fn after(
        &self,
        after: Option<u64>,
        hidden: Option<u64>,
        limit: usize,
    ) -> (Vec<(u64, usize)>, bool) {
        let ids = self.ids();
        let start = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        let mut held = ids
            .workers
            .range((start, Bound::Unbounded))
            .filter(|(&id, _)| ids.held(id) && Some(id) != hidden)
            .map(|(&id, &w)| (id, w as usize));
        let page: Vec<_> = held.by_ref().take(limit).collect();
        let more = held.next().is_some();
        (page, more)
    }

    /// Held sessions `skip..skip + limit` in id order.
    pub fn slice(&self, skip: usize, limit: usize) -> Vec<(u64, usize)> {
        let ids = self.ids();
        ids.workers
            .iter()
            .filter(|(&id, _)| ids.held(id))
            .skip(skip)
            .take(limit)
            .map(|(&id, &w)| (id, w as usize))
            .collect()
    }

    /// Ids present (held or being added).
    pub fn len(&self) -> usize {
        self.ids().workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_confirm_page() {
        let d = Directory::default();
        for id in [5, 0, 9, 3] {
            assert!(d.reserve(id, id as usize % 2));
        }
        assert!(!d.reserve(5, 0), "taken");
        assert_eq!(d.get(5), None, "not confirmed yet");
        d.confirm(&[5, 0, 3]);
        assert_eq!(d.get(5), Some(1));
        assert_eq!(
            d.after(None, None, 10),
            (vec![(0, 0), (3, 1), (5, 1)], false)
        );
        assert_eq!(d.after(None, None, 2), (vec![(0, 0), (3, 1)], true));
        assert_eq!(d.after(Some(3), None, 10).0, vec![(5, 1)]);
        assert_eq!(d.after(Some(0), None, 10).0, vec![(3, 1), (5, 1)]);
        assert_eq!(d.after(None, Some(3), 10).0, vec![(0, 0), (5, 1)]);
        assert_eq!(d.slice(1, 1), vec![(3, 1)]);
        d.remove(9);
        d.remove(3);
        assert_eq!(d.len(), 2);
        assert!(d.reserve(3, 0));
    }
}
