//! The client's session id -> the table slot holding it, for commands only (packets
//! never look here).
//!
//! Open addressing with linear probing over one reserved array of `u32`, at most 3/4
//! full. The ids themselves live in the sessions' cold records, so a way holds only
//! `slot + 1` in its low bits and, in the bits the table's capacity leaves free, a tag
//! of the id's hash: most probes past a different id are answered by the tag, without
//! reading that id's cold record. Removal shifts later members of the run back
//! (no tombstones), so a lookup's cost never grows with the table's history.
//!
//! About 5.3 bytes a session; the hash map it replaced took about 28.

use crate::mem::{Region, ReserveError};

/// Looks up the id a slot holds (the table's cold records).
pub trait IdOf {
    fn id_of(&self, slot: u32) -> u64;
}

impl<F: Fn(u32) -> u64> IdOf for F {
    fn id_of(&self, slot: u32) -> u64 {
        self(slot)
    }
}

pub struct IdIndex {
    /// 0: empty; otherwise `tag << slot_bits | (slot + 1)`.
    ways: Region<u32>,
    /// Bits that hold `slot + 1`; the rest hold the tag.
    slot_bits: u32,
}

/// Mixes sequential ids (clients often count) over the whole word.
#[inline]
fn hash(id: u64) -> u64 {
    let h = (id ^ (id >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 29)
}

impl IdIndex {
    /// Room for `capacity` ids (at most `2^31 - 1`).
    pub fn with_capacity(capacity: usize) -> Result<IdIndex, ReserveError> {
        let capacity = capacity.clamp(1, (1 << 31) - 1);
        // At most 3/4 full: an absent id is known after about 8 ways.
        let ways = Region::zeroed(capacity + capacity / 3 + 1)?;
        let slot_bits = usize::BITS - capacity.leading_zeros();
        Ok(IdIndex { ways, slot_bits })
    }

    /// Memory reserved for the index.
    pub fn bytes(&self) -> usize {
        self.ways.bytes()
    }

    #[inline]
    fn home(&self, h: u64) -> usize {
        (((h >> 32) * self.ways.len() as u64) >> 32) as usize
    }

    #[inline]
    fn next(&self, w: usize) -> usize {
        if w + 1 == self.ways.len() {
            0
        } else {
            w + 1
        }
    }

    /// The tag bits of a way for hash `h` (zero when the capacity leaves none).
    #[inline]
    fn tag(&self, h: u64) -> u32 {
        if self.slot_bits >= 32 {
            0
        } else {
            (h as u32) << self.slot_bits
        }
    }

    #[inline]
    fn slot_of_way(&self, way: u32) -> u32 {
        (way & self.slot_mask()) - 1
    }

    #[inline]
    fn slot_mask(&self) -> u32 {
        if self.slot_bits >= 32 {
            u32::MAX
        } else {
            (1 << self.slot_bits) - 1
        }
    }

    /// Brings the line where a lookup or insert of `id` starts toward the cache.
    #[inline]
    pub fn prefetch(&self, id: u64) {
        crate::prefetch::write(&self.ways[self.home(hash(id))]);
    }

    /// The way holding `id`, if any.
    fn find(&self, id: u64, ids: &impl IdOf) -> Option<usize> {
        let h = hash(id);
        let tag = self.tag(h);
        let mut w = self.home(h);
        loop {
            let way = self.ways[w];
            if way == 0 {
                return None;
            }
            if way & !self.slot_mask() == tag && ids.id_of(self.slot_of_way(way)) == id {
                return Some(w);
            }
            w = self.next(w);
        }
    }

    /// The slot holding `id`.
    pub fn get(&self, id: u64, ids: &impl IdOf) -> Option<u32> {
        self.find(id, ids).map(|w| self.slot_of_way(self.ways[w]))
    }

    /// Adds `id` -> `slot`. The id must be absent and the index must have room (at most
    /// the capacity's number of ids): the table checks both first.
    pub fn insert(&mut self, id: u64, slot: u32) {
        debug_assert!(slot < self.slot_mask());
        let h = hash(id);
        let mut w = self.home(h);
        while self.ways[w] != 0 {
            w = self.next(w);
        }
        self.ways[w] = self.tag(h) | (slot + 1);
    }

    /// Removes `id` if it maps to `slot`; returns whether it did.
    pub fn remove(&mut self, id: u64, slot: u32, ids: &impl IdOf) -> bool {
        match self.find(id, ids) {
            Some(w) if self.slot_of_way(self.ways[w]) == slot => {
                self.close_gap(w, ids);
                true
            }
            _ => false,
        }
    }

    /// Empties way `gap` and moves back every later member of its run that may live
    /// there (its home is not between the gap and where it sits), so that no lookup
    /// stops early at the new hole.
    fn close_gap(&mut self, mut gap: usize, ids: &impl IdOf) {
        let mut w = gap;
        loop {
            w = self.next(w);
            let way = self.ways[w];
            if way == 0 {
                break;
            }
            let home = self.home(hash(ids.id_of(self.slot_of_way(way))));
            let stays = if gap <= w {
                gap < home && home <= w
            } else {
                gap < home || home <= w
            };
            if !stays {
                self.ways[gap] = way;
                gap = w;
            }
        }
        self.ways[gap] = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// The slots' ids, as the cold records would hold them.
    struct Ids(Vec<u64>);

    impl IdOf for Ids {
        fn id_of(&self, slot: u32) -> u64 {
            self.0[slot as usize]
        }
    }

    #[test]
    fn finds_what_it_holds() {
        let ids = Ids(vec![10, 11, 12, u64::MAX]);
        let mut ix = IdIndex::with_capacity(4).unwrap();
        for (slot, &id) in ids.0.iter().enumerate() {
            ix.insert(id, slot as u32);
        }
        for (slot, &id) in ids.0.iter().enumerate() {
            assert_eq!(ix.get(id, &ids), Some(slot as u32));
        }
        assert_eq!(ix.get(13, &ids), None);
        // Only the pair that is there is removed.
        assert!(!ix.remove(11, 0, &ids));
        assert!(ix.remove(11, 1, &ids));
        assert_eq!(ix.get(11, &ids), None);
        assert_eq!(ix.get(12, &ids), Some(2));
    }

    #[test]
    fn full_index_of_sequential_ids() {
        let n = 100_000;
        let ids = Ids((0..n as u64).map(|i| i + 1_000).collect());
        let mut ix = IdIndex::with_capacity(n).unwrap();
        for (slot, &id) in ids.0.iter().enumerate() {
            ix.insert(id, slot as u32);
        }
        for (slot, &id) in ids.0.iter().enumerate() {
            assert_eq!(ix.get(id, &ids), Some(slot as u32));
        }
        assert_eq!(ix.get(999, &ids), None);
        assert!(ix.bytes() < n * 6, "{} bytes for {n} ids", ix.bytes());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64),
        Remove(u64),
    }

    proptest! {
        // Against a model, in an index small enough that runs wrap around its end
        // and removals shift members back across it.
        #[test]
        fn matches_a_model(ops in proptest::collection::vec(
            prop_oneof![(0u64..40).prop_map(Op::Insert), (0u64..40).prop_map(Op::Remove)],
            1..400,
        )) {
            let cap = 12;
            let mut ix = IdIndex::with_capacity(cap).unwrap();
            let mut slots = Ids(vec![u64::MAX; cap]);
            let mut model: HashMap<u64, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(id) if !model.contains_key(&id) && model.len() < cap => {
                        let slot = (0..cap as u32).find(|s| !model.values().any(|v| v == s)).unwrap();
                        slots.0[slot as usize] = id;
                        ix.insert(id, slot);
                        model.insert(id, slot);
                    }
                    Op::Insert(_) => {}
                    Op::Remove(id) => {
                        let removed = model.get(&id).is_some_and(|&s| ix.remove(id, s, &slots));
                        prop_assert_eq!(removed, model.remove(&id).is_some());
                    }
                }
                for id in 0..40 {
                    prop_assert_eq!(ix.get(id, &slots), model.get(&id).copied());
                }
            }
        }
    }
}
