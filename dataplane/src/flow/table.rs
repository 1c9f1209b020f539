//! The flow table of one worker: a slab of 128-byte entries and a compact index.
//!
//! - Entries: one per session, in a slab reserved at start. Line 0 holds what every
//!   packet reads (the key, action, ports, close state, last-seen tick); line 1 the
//!   counters and what only commands and the timer wheel touch.
//! - Index: open addressing over 64-byte buckets of 8 (tag, reference) pairs, probed
//!   bucket by bucket. A bucket's `overflow` counts the keys that probed past it, so a
//!   lookup stops at the first bucket with no match and no overflow, and a removal
//!   needs no tombstones. Each session has two references (one per direction), so one
//!   probe answers "which session, which way".
//! - Ids: the client's session id -> slot, for commands only.
//!
//! Lookups for a burst are split into stages (`prefetch_bucket`, `prefetch_entry`,
//! `lookup`) so that the caller can keep many cache misses in flight.

use hashbrown::HashMap;

use super::key::{Dir, FlowKey};
use crate::mem::{Region, ReserveError};
use crate::prefetch;

/// Largest capacity: references keep the direction in their lowest bit.
pub const MAX_CAPACITY: usize = 1 << 30;

/// One session. All-zero is a valid (unused) entry.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    // Line 0: read by every packet of the session.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub in_lif: u32,
    pub out_lif: u32,
    pub proto: u8,
    pub v6: bool,
    /// The worker's action code.
    pub action: u8,
    /// `SessionState` as a number.
    pub state: u8,
    /// FIN seen: bit 0 from the source (in), bit 1 from the destination (out).
    pub fin: u8,
    /// Port that out-direction packets leave by (the in_lif's port).
    pub in_port: u8,
    /// Port that in-direction packets leave by (out_lif's, or the next hop's).
    pub out_port: u8,
    /// `CloseCause` as a number once closed.
    pub cause: u8,
    /// Worker clock tick of the last packet (or of the add).
    pub last_seen: u32,
    /// 1 + index in the worker's next-hop table; 0: the out port's default.
    pub next_hop: u16,
    /// Worker bookkeeping bits (see `worker::sessions`).
    pub flags: u8,
    pub _pad: [u8; 5],
    // Line 1: counters, and what commands and the timer wheel use.
    pub in_packets: u64,
    pub in_bytes: u64,
    pub out_packets: u64,
    pub out_bytes: u64,
    pub id: u64,
    /// Wall clock at the add, ns since the Unix epoch.
    pub start_ns: u64,
    pub timeout_ticks: u32,
    /// The tick whose wheel slot holds the entry.
    pub sched: u32,
    /// While live: the wheel's next and previous links (slot + 1, 0 = none).
    /// Once closed: the end time, ns since the Unix epoch (`end_ns`).
    pub timer: [u32; 2],
}

const _: () = assert!(std::mem::size_of::<Entry>() == 128);

impl Entry {
    /// The key of packets going in direction `dir`.
    #[inline]
    pub fn key(&self, dir: Dir) -> FlowKey {
        let k = FlowKey {
            lif: self.in_lif,
            v6: self.v6,
            proto: self.proto,
            src: self.src,
            dst: self.dst,
            sport: self.sport,
            dport: self.dport,
        };
        match dir {
            Dir::In => k,
            Dir::Out => k.reversed(self.out_lif),
        }
    }

    /// Whether `key` is this session's key for `dir`.
    #[inline(always)]
    pub fn matches(&self, key: &FlowKey, dir: Dir) -> bool {
        let common = key.proto == self.proto && key.v6 == self.v6;
        common
            && match dir {
                Dir::In => {
                    key.lif == self.in_lif
                        && key.sport == self.sport
                        && key.dport == self.dport
                        && key.src == self.src
                        && key.dst == self.dst
                }
                Dir::Out => {
                    key.lif == self.out_lif
                        && key.sport == self.dport
                        && key.dport == self.sport
                        && key.src == self.dst
                        && key.dst == self.src
                }
            }
    }

    pub fn end_ns(&self) -> u64 {
        (u64::from(self.timer[0]) << 32) | u64::from(self.timer[1])
    }

    /// Stores the end time; only once the entry has left the timer wheel.
    pub fn set_end_ns(&mut self, ns: u64) {
        self.timer = [(ns >> 32) as u32, ns as u32];
    }
}

const WAYS: usize = 8;

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Bucket {
    /// 0: empty way; otherwise the key's tag (never 0).
    tags: [u16; WAYS],
    /// slot << 1 | direction (0 in, 1 out).
    refs: [u32; WAYS],
    /// Keys whose home is an earlier bucket that probed past this one.
    overflow: u32,
    _pad: [u32; 3],
}

const _: () = assert!(std::mem::size_of::<Bucket>() == 64);

#[inline(always)]
fn tag_of(hash: u64) -> u16 {
    (hash >> 48) as u16 | 1
}

#[inline(always)]
fn dir_of(r: u32) -> Dir {
    if r & 1 == 0 {
        Dir::In
    } else {
        Dir::Out
    }
}

/// Why an insert was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// The id is present, or a key of the session is already indexed.
    Exists,
    /// Every slot is taken.
    Full,
}

pub struct FlowTable {
    index: Region<Bucket>,
    entries: Region<Entry>,
    /// Free slots, popped from the end.
    free: Vec<u32>,
    ids: HashMap<u64, u32>,
}

impl FlowTable {
    /// Reserves room for `capacity` sessions (at most `MAX_CAPACITY`).
    pub fn with_capacity(capacity: usize) -> Result<FlowTable, ReserveError> {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        // Two keys per session, buckets at most 75% full.
        let buckets = (2 * capacity).div_ceil(WAYS * 3 / 4) + 1;
        let index = Region::zeroed(buckets)?;
        let entries = Region::zeroed(capacity)?;
        let free = (0..capacity as u32).rev().collect();
        let ids = HashMap::with_capacity(capacity);
        Ok(FlowTable {
            index,
            entries,
            free,
            ids,
        })
    }

    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Slots in use (live sessions and closed ones not yet handed over).
    pub fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Memory reserved for the table, all parts.
    pub fn bytes(&self) -> usize {
        self.index.bytes()
            + self.entries.bytes()
            + self.free.capacity() * 4
            + self.ids.allocation_size()
    }

    #[inline(always)]
    fn home(&self, hash: u64) -> usize {
        (((hash & 0xffff_ffff) * self.index.len() as u64) >> 32) as usize
    }

    #[inline(always)]
    fn next(&self, b: usize) -> usize {
        if b + 1 == self.index.len() {
            0
        } else {
            b + 1
        }
    }

    /// Stage 1 of a lookup: bring the key's home bucket toward the cache.
    #[inline(always)]
    pub fn prefetch_bucket(&self, hash: u64) {
        prefetch::read(&self.index[self.home(hash)]);
    }

    /// Stage 2: bring the entry of the first tag match toward the cache (both lines).
    #[inline(always)]
    pub fn prefetch_entry(&self, hash: u64) {
        let b = &self.index[self.home(hash)];
        let tag = tag_of(hash);
        for w in 0..WAYS {
            if b.tags[w] == tag {
                let e: *const Entry = &self.entries[(b.refs[w] >> 1) as usize];
                prefetch::read(e);
                prefetch::read((e as *const u8).wrapping_add(64));
                return;
            }
        }
    }

    /// Stage 3: the slot and direction of the session `key` belongs to.
    #[inline]
    pub fn lookup(&self, key: &FlowKey, hash: u64) -> Option<(u32, Dir)> {
        let tag = tag_of(hash);
        let mut b = self.home(hash);
        for _ in 0..self.index.len() {
            let bucket = &self.index[b];
            for w in 0..WAYS {
                if bucket.tags[w] == tag {
                    let r = bucket.refs[w];
                    let dir = dir_of(r);
                    if self.entries[(r >> 1) as usize].matches(key, dir) {
                        return Some((r >> 1, dir));
                    }
                }
            }
            if bucket.overflow == 0 {
                return None;
            }
            b = self.next(b);
        }
        None
    }

    /// Adds a session. The entry's id and both of its keys must be new.
    pub fn insert(&mut self, entry: &Entry) -> Result<u32, InsertError> {
        if self.ids.contains_key(&entry.id) {
            return Err(InsertError::Exists);
        }
        let kin = entry.key(Dir::In);
        let kout = entry.key(Dir::Out);
        if self.lookup(&kin, kin.hash()).is_some() || self.lookup(&kout, kout.hash()).is_some() {
            return Err(InsertError::Exists);
        }
        let slot = self.free.pop().ok_or(InsertError::Full)?;
        self.entries[slot as usize] = *entry;
        self.index_insert(kin.hash(), slot << 1);
        if kout != kin {
            self.index_insert(kout.hash(), (slot << 1) | 1);
        }
        self.ids.insert(entry.id, slot);
        Ok(slot)
    }

    fn index_insert(&mut self, hash: u64, r: u32) {
        let tag = tag_of(hash);
        let mut b = self.home(hash);
        // At most 75% of the ways are ever used, so a free way is always found.
        loop {
            let bucket = &mut self.index[b];
            if let Some(w) = bucket.tags.iter().position(|&t| t == 0) {
                bucket.tags[w] = tag;
                bucket.refs[w] = r;
                return;
            }
            bucket.overflow += 1;
            b = self.next(b);
        }
    }

    fn index_remove(&mut self, hash: u64, r: u32) {
        let tag = tag_of(hash);
        let home = self.home(hash);
        let mut b = home;
        let mut steps = 0;
        loop {
            let bucket = &mut self.index[b];
            if let Some(w) = (0..WAYS).find(|&w| bucket.tags[w] == tag && bucket.refs[w] == r) {
                bucket.tags[w] = 0;
                bucket.refs[w] = 0;
                break;
            }
            if bucket.overflow == 0 || steps == self.index.len() {
                debug_assert!(false, "removing a reference that is not indexed");
                return;
            }
            b = self.next(b);
            steps += 1;
        }
        let mut b = home;
        for _ in 0..steps {
            self.index[b].overflow -= 1;
            b = self.next(b);
        }
    }

    /// Takes the session's keys out of the index: its packets miss from now on. The
    /// slot and id stay until `release`.
    pub fn unindex(&mut self, slot: u32) {
        let e = self.entries[slot as usize];
        let kin = e.key(Dir::In);
        let kout = e.key(Dir::Out);
        self.index_remove(kin.hash(), slot << 1);
        if kout != kin {
            self.index_remove(kout.hash(), (slot << 1) | 1);
        }
    }

    /// Forgets the id of the session in `slot` (the slot stays taken); the id can be
    /// used again at once.
    pub fn forget_id(&mut self, slot: u32) {
        let id = self.entries[slot as usize].id;
        if self.ids.get(&id) == Some(&slot) {
            self.ids.remove(&id);
        }
    }

    /// Frees a slot that is no longer indexed.
    pub fn release(&mut self, slot: u32) {
        self.forget_id(slot);
        self.entries[slot as usize] = Entry::default();
        self.free.push(slot);
    }

    pub fn slot_of(&self, id: u64) -> Option<u32> {
        self.ids.get(&id).copied()
    }

    #[inline(always)]
    pub fn entry(&self, slot: u32) -> &Entry {
        &self.entries[slot as usize]
    }

    #[inline(always)]
    pub fn entry_mut(&mut self, slot: u32) -> &mut Entry {
        &mut self.entries[slot as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap as StdMap;

    fn entry(id: u64, n: u32, in_lif: u32, out_lif: u32, v6: bool) -> Entry {
        let mut e = Entry {
            id,
            in_lif,
            out_lif,
            v6,
            proto: 17,
            sport: (n % 60_000) as u16 + 1,
            dport: 53,
            ..Entry::default()
        };
        e.src[..4].copy_from_slice(&n.to_be_bytes());
        e.dst[..4].copy_from_slice(&[192, 168, 0, 1]);
        if v6 {
            e.src[15] = 7;
            e.dst[15] = 9;
        }
        e
    }

    #[test]
    fn both_directions_find_the_entry() {
        let mut t = FlowTable::with_capacity(16).unwrap();
        let e = entry(7, 1, 1, 2, false);
        let slot = t.insert(&e).unwrap();
        let kin = e.key(Dir::In);
        let kout = e.key(Dir::Out);
        assert_eq!(t.lookup(&kin, kin.hash()), Some((slot, Dir::In)));
        assert_eq!(t.lookup(&kout, kout.hash()), Some((slot, Dir::Out)));
        // The in-key on the wrong lif is not the session.
        let wrong = FlowKey { lif: 2, ..kin };
        assert_eq!(t.lookup(&wrong, wrong.hash()), None);
        assert_eq!(t.slot_of(7), Some(slot));
    }

    #[test]
    fn duplicates_by_id_and_by_key() {
        let mut t = FlowTable::with_capacity(16).unwrap();
        t.insert(&entry(1, 1, 1, 2, false)).unwrap();
        assert_eq!(
            t.insert(&entry(1, 2, 1, 2, false)),
            Err(InsertError::Exists)
        );
        assert_eq!(
            t.insert(&entry(2, 1, 1, 2, false)),
            Err(InsertError::Exists)
        );
        // The reverse of an offloaded session is that session.
        let mut rev = entry(3, 1, 2, 1, false);
        std::mem::swap(&mut rev.src, &mut rev.dst);
        std::mem::swap(&mut rev.sport, &mut rev.dport);
        assert_eq!(t.insert(&rev), Err(InsertError::Exists));
        // Same addresses on other lifs is another session.
        t.insert(&entry(4, 1, 3, 4, false)).unwrap();
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn full_is_an_answer() {
        let mut t = FlowTable::with_capacity(3).unwrap();
        for i in 0..3 {
            t.insert(&entry(i, i as u32, 1, 2, false)).unwrap();
        }
        assert_eq!(t.insert(&entry(9, 9, 1, 2, false)), Err(InsertError::Full));
        let s = t.slot_of(1).unwrap();
        t.unindex(s);
        t.release(s);
        t.insert(&entry(9, 9, 1, 2, false)).unwrap();
    }

    #[test]
    fn overflow_chains_survive_removal() {
        // A tiny index so that probes run across buckets.
        let mut t = FlowTable::with_capacity(40).unwrap();
        let es: Vec<Entry> = (0..40)
            .map(|i| entry(i, i as u32 * 7919, 1, 2, i % 2 == 0))
            .collect();
        let slots: Vec<u32> = es.iter().map(|e| t.insert(e).unwrap()).collect();
        for i in (0..40).step_by(3) {
            t.unindex(slots[i]);
            t.release(slots[i]);
        }
        for (i, e) in es.iter().enumerate() {
            let k = e.key(Dir::Out);
            let found = t.lookup(&k, k.hash());
            if i % 3 == 0 {
                assert_eq!(found, None);
            } else {
                assert_eq!(found, Some((slots[i], Dir::Out)));
            }
        }
        let overflow: u32 = t.index.iter().map(|b| b.overflow).sum();
        let left = t
            .index
            .iter()
            .flat_map(|b| b.tags)
            .filter(|&t| t != 0)
            .count();
        assert_eq!(left, 2 * (40 - 14));
        // Removing everything leaves no overflow behind.
        for (i, &slot) in slots.iter().enumerate() {
            if i % 3 != 0 {
                t.unindex(slot);
                t.release(slot);
            }
        }
        assert!(t
            .index
            .iter()
            .all(|b| b.overflow == 0 && b.tags == [0; WAYS]));
        assert!(overflow > 0, "the test made probes cross buckets");
    }

    #[test]
    fn forget_id_lets_the_id_return() {
        let mut t = FlowTable::with_capacity(4).unwrap();
        let s = t.insert(&entry(5, 1, 1, 2, false)).unwrap();
        t.unindex(s);
        t.forget_id(s);
        let s2 = t.insert(&entry(5, 1, 1, 2, false)).unwrap();
        assert_ne!(s, s2);
        t.release(s); // the old slot goes; the id stays with the new one
        assert_eq!(t.slot_of(5), Some(s2));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64, u32, bool),
        Remove(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..64, 0u32..48, any::<bool>()).prop_map(|(i, n, v6)| Op::Insert(i, n, v6)),
            (0u64..64).prop_map(Op::Remove),
        ]
    }

    proptest! {
        // The table against a model: a map from id to entry, with keys unique.
        #[test]
        fn matches_a_model(ops in proptest::collection::vec(op(), 1..300)) {
            let cap = 24;
            let mut t = FlowTable::with_capacity(cap).unwrap();
            let mut model: StdMap<u64, Entry> = StdMap::new();
            for op in ops {
                match op {
                    Op::Insert(id, n, v6) => {
                        let e = entry(id, n, 1, 2, v6);
                        let clash = model.contains_key(&id)
                            || model.values().any(|m| m.key(Dir::In) == e.key(Dir::In));
                        let got = t.insert(&e);
                        if clash {
                            prop_assert_eq!(got, Err(InsertError::Exists));
                        } else if model.len() == cap {
                            prop_assert_eq!(got, Err(InsertError::Full));
                        } else {
                            prop_assert!(got.is_ok());
                            model.insert(id, e);
                        }
                    }
                    Op::Remove(id) => {
                        let slot = t.slot_of(id);
                        prop_assert_eq!(slot.is_some(), model.contains_key(&id));
                        if let Some(s) = slot {
                            t.unindex(s);
                            t.release(s);
                            model.remove(&id);
                        }
                    }
                }
                prop_assert_eq!(t.len(), model.len());
            }
            for n in 0..48u32 {
                for v6 in [false, true] {
                    let probe = entry(0, n, 1, 2, v6);
                    for dir in [Dir::In, Dir::Out] {
                        let k = probe.key(dir);
                        let want = model.values().find(|m| m.key(dir) == k).map(|m| m.id);
                        let got = t.lookup(&k, k.hash()).map(|(s, d)| {
                            assert_eq!(d, dir);
                            t.entry(s).id
                        });
                        prop_assert_eq!(got, want);
                    }
                }
            }
        }
    }
}
