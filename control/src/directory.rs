//! The session directory: which worker holds each session id, in id order.
//!
//! It is the control plane's only table of sessions and holds no counters (those
//! live in the workers). It keeps ids unique across workers (an id is reserved
//! before its add is sent, so two streams cannot offload one id twice) and gives
//! GetAllSessions its order. An id stays here until its session is deleted or its
//! closed record has been delivered.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// Sent to the worker, answer not back yet.
    Adding,
    /// Accepted: live in its worker, or closed and waiting for delivery.
    Held,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub worker: u16,
    pub presence: Presence,
}

#[derive(Default)]
pub struct Directory {
    ids: Mutex<BTreeMap<u64, Entry>>,
}

impl Directory {
    fn ids(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims `id` for an add on `worker`; false if the id is taken.
    pub fn reserve(&self, id: u64, worker: usize) -> bool {
        // One walk of the tree, not a lookup and then an insert.
        match self.ids().entry(id) {
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(Entry {
                    worker: worker as u16,
                    presence: Presence::Adding,
                });
                true
            }
        }
    }

    /// The adds of `ids` were accepted (one lock for a worker's whole answer).
    pub fn confirm(&self, ids: &[u64]) {
        let mut map = self.ids();
        for id in ids {
            if let Some(e) = map.get_mut(id) {
                e.presence = Presence::Held;
            }
        }
    }

    /// The add of `id` was refused, or the session is gone for good.
    pub fn remove(&self, id: u64) {
        self.ids().remove(&id);
    }

    /// The worker holding `id`, if its add was accepted.
    pub fn get(&self, id: u64) -> Option<usize> {
        self.ids()
            .get(&id)
            .filter(|e| e.presence == Presence::Held)
            .map(|e| e.worker as usize)
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
            .range((start, Bound::Unbounded))
            .filter(|(&id, e)| e.presence == Presence::Held && Some(id) != hidden)
            .map(|(&id, e)| (id, e.worker as usize));
        let page: Vec<_> = held.by_ref().take(limit).collect();
        let more = held.next().is_some();
        (page, more)
    }

    /// Held sessions `skip..skip + limit` in id order.
    pub fn slice(&self, skip: usize, limit: usize) -> Vec<(u64, usize)> {
        self.ids()
            .iter()
            .filter(|(_, e)| e.presence == Presence::Held)
            .skip(skip)
            .take(limit)
            .map(|(&id, e)| (id, e.worker as usize))
            .collect()
    }

    /// Ids present (held or being added).
    pub fn len(&self) -> usize {
        self.ids().len()
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
