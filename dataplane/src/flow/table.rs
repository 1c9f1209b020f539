//! The flow table of one worker: a slab of 64-byte hot entries, a parallel slab of
//! cold records, and a compact index.
//!
//! - Hot entries (`Entry`, one cache line): everything a packet reads or writes: the
//!   key, the action and state, the next hop, the last-seen tick and the low bits of
//!   the per-direction counters. A hit touches this line and nothing else.
//! - Cold records (`Cold`): the 64-bit counter totals the low bits carry into, and
//!   what only commands and the timer wheel use (id, times, timeout, wheel links).
//! - Index: open addressing over 64-byte buckets of 10 (tag, slot) pairs, probed
//!   bucket by bucket. A bucket's `overflow` counts the keys that probed past it, so a
//!   lookup stops at the first bucket with no match and no overflow, and a removal
//!   needs no tombstones. Both directions of a session hash alike (`FlowKey::hash`),
//!   so a session has one reference, and its entry, compared with the key, says which
//!   way the packet goes.
//! - Ids: the client's session id -> slot, for commands only (`flow::ids`).
//! - Free slots: a chain through the free cold records, then the slots never used.
//!
//! Lookups are split into stages (`prefetch_bucket`, `prefetch_entry`, `lookup`) so
//! that the caller can keep many cache misses in flight.
//!
//! Counters: a hit adds to a 32-bit byte counter and a 16-bit packet counter in the
//! hot line. The packet whose addition wraps one of them counts the wrap (2^32
//! bytes, 2^16 packets) in the cold record at once (`fold_carry`, a branch taken at
//! most once per 65536 packets of a direction), so `total = wraps * 2^k + hot` is
//! exact at every moment, whatever the packet rate: no timer
//! has to visit the entry before a counter can wrap. See worker/DESIGN.md.

use super::ids::IdIndex;
use super::key::{Dir, FlowKey};
use super::tcp_window::TcpWindow;
use crate::mem::{Region, ReserveError};
use crate::prefetch;

/// Largest capacity.
pub const MAX_CAPACITY: usize = 1 << 30;

/// The hot part of a session: what every packet of it reads and writes, in one cache
/// line. All-zero is a valid (unused) entry.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub in_lif: u32,
    pub out_lif: u32,
    /// Worker clock tick of the last packet (or of the add).
    pub last_seen: u32,
    /// Low 32 bits of the byte counters, by direction (`Dir as usize`); the carries
    /// are in `Cold::bytes`.
    pub bytes: [u32; 2],
    /// Low 16 bits of the packet counters, by direction; carries in `Cold::packets`.
    pub packets: [u16; 2],
    /// 1 + index in the worker's next-hop table; 0: the out port's default.
    pub next_hop: u16,
    pub proto: u8,
    /// Action (bits 0-1), `SessionState` (bits 2-3), IPv6 (bit 4): packed so that
    /// the entry fits one cache line. Read through `action()`, `state()`, `v6()`.
    pub meta: u8,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 64);

const META_ACTION: u8 = 0b11;
const META_STATE_SHIFT: u8 = 2;
const META_STATE: u8 = 0b11 << META_STATE_SHIFT;
const META_V6: u8 = 1 << 4;

/// The cold part of a session: counter totals and what commands and the timer wheel
/// use. All-zero is a valid (unused) record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cold {
    /// TCP only: the sequence windows both ways (`flow::tcp_window`). First, with
    /// `fin` right after it: the record starts at a multiple of 16 bytes, so these 14
    /// bytes never straddle a cache line and one prefetch brings them.
    pub tcp: TcpWindow,
    /// FIN seen: bit 0 from the source (in), bit 1 from the destination (out).
    pub fin: u8,
    /// `CloseCause` as a number once closed.
    pub cause: u8,
    /// Worker bookkeeping bits (see `worker::sessions`).
    pub flags: u8,
    /// Wraps of `Entry::packets`, by direction: 2^16 packets each (exact up to 2^48
    /// packets a direction, 33 days at 100 Mpps; it then stays at its last value).
    pub packets: [u32; 2],
    /// Wraps of `Entry::bytes`, by direction: 2^32 bytes each (exact to 2^64).
    pub bytes: [u32; 2],
    pub id: u64,
    /// Wall clock at the add, ns since the Unix epoch.
    pub start_ns: u64,
    pub timeout_ticks: u32,
    /// The tick whose wheel slot holds the entry. Once closed: the next closed
    /// record waiting for the feed (`flow::closed_queue`).
    pub sched: u32,
    /// While live: the wheel's next and previous links (slot + 1, 0 = none).
    /// Once closed: the end time, ns since the Unix epoch (`end_ns`).
    /// While free: `timer[0]` is the next free slot + 1 (0 = none).
    pub timer: [u32; 2],
}

// One cache line: the slab starts on a page, so every record is one line.
const _: () = assert!(std::mem::size_of::<Cold>() == 64);

impl Entry {
    /// The `meta` byte of a session with this action, state and address family.
    pub fn pack_meta(action: u8, state: u8, v6: bool) -> u8 {
        debug_assert!(action <= META_ACTION && state <= 3);
        action | (state << META_STATE_SHIFT) | if v6 { META_V6 } else { 0 }
    }

    /// The worker's action code (`Action as u8`).
    #[inline(always)]
    pub fn action(&self) -> u8 {
        self.meta & META_ACTION
    }

    /// `SessionState` as a number.
    #[inline(always)]
    pub fn state(&self) -> u8 {
        (self.meta & META_STATE) >> META_STATE_SHIFT
    }

    #[inline]
    pub fn set_state(&mut self, state: u8) {
        self.meta = (self.meta & !META_STATE) | ((state << META_STATE_SHIFT) & META_STATE);
    }

    #[inline(always)]
    pub fn v6(&self) -> bool {
        self.meta & META_V6 != 0
    }

    /// The key of packets going in direction `dir`.
    #[inline]
    pub fn key(&self, dir: Dir) -> FlowKey {
        let k = FlowKey {
            lif: self.in_lif,
            v6: self.v6(),
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

    /// Which way `key` goes in this session, if it is one of its two keys (`In` when
    /// both are the same key).
    #[inline(always)]
    pub fn direction_of(&self, key: &FlowKey) -> Option<Dir> {
        if key.proto != self.proto || key.v6 != self.v6() {
            return None;
        }
        if key.lif == self.in_lif
            && key.sport == self.sport
            && key.dport == self.dport
            && key.src == self.src
            && key.dst == self.dst
        {
            return Some(Dir::In);
        }
        if key.lif == self.out_lif
            && key.sport == self.dport
            && key.dport == self.sport
            && key.src == self.dst
            && key.dst == self.src
        {
            return Some(Dir::Out);
        }
        None
    }
}

impl Cold {
    pub fn end_ns(&self) -> u64 {
        (u64::from(self.timer[0]) << 32) | u64::from(self.timer[1])
    }

    /// Stores the end time; only once the entry has left the timer wheel.
    pub fn set_end_ns(&mut self, ns: u64) {
        self.timer = [(ns >> 32) as u32, ns as u32];
    }
}

/// A session's counters, 64-bit, in one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub packets: u64,
    pub bytes: u64,
}

const WAYS: usize = 10;

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Bucket {
    /// 0: empty way; otherwise the key's tag (never 0).
    tags: [u16; WAYS],
    /// The session's slot.
    refs: [u32; WAYS],
    /// Keys whose home is an earlier bucket that probed past this one.
    overflow: u32,
}

const _: () = assert!(std::mem::size_of::<Bucket>() == 64);

impl Bucket {
    /// The ways holding `tag`: bit 2w is set when way w matches (the layout SSE2's
    /// byte mask gives; `way_of` turns a bit back into a way).
    #[inline(always)]
    fn matching(&self, tag: u16) -> u32 {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::*;
            // SAFETY: SSE2 is part of x86_64; the two unaligned loads read tags 0-7
            // and tags 2-9, both inside `tags` (20 bytes).
            unsafe {
                let want = _mm_set1_epi16(tag as i16);
                let p = self.tags.as_ptr();
                let low = _mm_loadu_si128(p as *const __m128i);
                let high = _mm_loadu_si128(p.add(2) as *const __m128i);
                // Two mask bits per 16-bit lane: keep the lower one. The second load
                // starts two ways later: its bits move up by four.
                let low = _mm_movemask_epi8(_mm_cmpeq_epi16(low, want)) as u32;
                let high = _mm_movemask_epi8(_mm_cmpeq_epi16(high, want)) as u32;
                (low | (high << 4)) & 0x55555
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let mut m = 0;
            for w in 0..WAYS {
                m |= u32::from(self.tags[w] == tag) << (2 * w);
            }
            m
        }
    }
}

/// The way of the lowest bit of a `Bucket::matching` mask.
#[inline(always)]
fn way_of(mask: u32) -> usize {
    (mask.trailing_zeros() / 2) as usize
}

#[inline(always)]
fn tag_of(hash: u64) -> u16 {
    (hash >> 48) as u16 | 1
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
    cold: Region<Cold>,
    /// The first free slot + 1 (0 = none); each free record links the next.
    free: u32,
    /// Slots below this have been used; the ones above never were (and are free).
    fresh: u32,
    /// Slots taken.
    used: usize,
    ids: IdIndex,
    /// Changes whenever a reference enters or leaves the index: a `Probe` taken
    /// under another epoch is not trusted.
    epoch: u32,
}

/// What the entry-prefetch stage found: the first reference whose tag matched in the
/// key's home bucket, under the index's epoch then. The last stage checks that one
/// entry against the key instead of matching tags again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    r: u32,
    epoch: u32,
}

impl Probe {
    /// No candidate: the last stage does a full lookup.
    pub const NONE: Probe = Probe {
        r: u32::MAX,
        epoch: 0,
    };
}

impl FlowTable {
    /// Reserves room for `capacity` sessions (at most `MAX_CAPACITY`).
    pub fn with_capacity(capacity: usize) -> Result<FlowTable, ReserveError> {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        // One reference per session, buckets at most half full: then about 0.5% of
        // the sessions live past their home bucket (6% at 75% of 8 ways), and one
        // away from home costs its lookups two dependent cache misses (DESIGN.md).
        let buckets = capacity.div_ceil(WAYS / 2) + 1;
        FlowTable::with_index(capacity, buckets)
    }

    /// `capacity` sessions over `buckets` index buckets, which must have a way for
    /// each session (an insert relies on finding a free one).
    fn with_index(capacity: usize, buckets: usize) -> Result<FlowTable, ReserveError> {
        assert!(
            capacity <= WAYS * buckets,
            "an index too small for its table"
        );
        let index = Region::zeroed(buckets)?;
        let entries = Region::zeroed(capacity)?;
        let cold = Region::zeroed(capacity)?;
        let ids = IdIndex::with_capacity(capacity)?;
        Ok(FlowTable {
            index,
            entries,
            cold,
            free: 0,
            fresh: 0,
            used: 0,
            ids,
            epoch: 0,
        })
    }

    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Slots in use (live sessions and closed ones not yet handed over).
    pub fn len(&self) -> usize {
        self.used
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Memory reserved for the table, all parts.
    pub fn bytes(&self) -> usize {
        self.index.bytes() + self.entries.bytes() + self.cold.bytes() + self.ids.bytes()
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

    /// The key's home bucket. `home` is below the index's length by construction
    /// (a 32-bit hash times the length, shifted down 32 bits), so no bounds check.
    #[inline(always)]
    fn home_bucket(&self, hash: u64) -> &Bucket {
        let b = self.home(hash);
        debug_assert!(b < self.index.len());
        // SAFETY: b < index.len(), see above.
        unsafe { self.index.get_unchecked(b) }
    }

    /// The entry of a slot the index holds. Every slot in the index (and so in a
    /// `Probe`) was taken by `insert` from below the capacity, so no bounds check.
    #[inline(always)]
    fn indexed(&self, slot: u32) -> &Entry {
        debug_assert!((slot as usize) < self.entries.len());
        // SAFETY: slot < entries.len(), see above.
        unsafe { &*self.entries.as_ptr().add(slot as usize) }
    }

    /// Stage 1 of a lookup: bring the key's home bucket toward the cache.
    #[inline(always)]
    pub fn prefetch_bucket(&self, hash: u64) {
        prefetch::read(self.home_bucket(hash));
    }

    /// Stage 2: bring the entry of the first tag match toward the cache (one line),
    /// and say which it was for `lookup_probed`; with no match in an overflowed home
    /// bucket, bring the next bucket instead.
    #[inline(always)]
    pub fn prefetch_entry(&self, hash: u64) -> Probe {
        let b = self.home_bucket(hash);
        let m = b.matching(tag_of(hash));
        if m == 0 {
            // The key may have overflowed into the next bucket (0.5% of keys): bring
            // that in for the last stage's full lookup, which then waits for one
            // miss (the entry) instead of two.
            if b.overflow != 0 {
                prefetch::read(&self.index[self.next(self.home(hash))]);
            }
            return Probe::NONE;
        }
        let r = b.refs[way_of(m)];
        prefetch::write(self.indexed(r));
        Probe {
            r,
            epoch: self.epoch,
        }
    }

    /// Stage 2, TCP only: bring the candidate's TCP window (cold record) toward the
    /// cache too, for `tcp_window` in the last stage.
    #[inline(always)]
    pub fn prefetch_tcp_window(&self, probe: Probe) {
        if probe.r != Probe::NONE.r {
            prefetch::write(&self.cold[probe.r as usize].tcp);
        }
    }

    /// Stage 3: `lookup`, starting with the probe's candidate. The candidate is the
    /// answer `lookup` would give when the index has not changed since the probe
    /// (same epoch: same first tag match in the home bucket) and its entry matches
    /// the key; otherwise the full lookup runs.
    #[inline(always)]
    pub fn lookup_probed(&self, key: &FlowKey, hash: u64, probe: Probe) -> Option<(u32, Dir)> {
        if probe.epoch == self.epoch && probe.r != Probe::NONE.r {
            if let Some(dir) = self.indexed(probe.r).direction_of(key) {
                return Some((probe.r, dir));
            }
        }
        self.lookup(key, hash)
    }

    /// Stage 3: the slot and direction of the session `key` belongs to.
    #[inline(always)]
    pub fn lookup(&self, key: &FlowKey, hash: u64) -> Option<(u32, Dir)> {
        let tag = tag_of(hash);
        let mut b = self.home(hash);
        for _ in 0..self.index.len() {
            let bucket = &self.index[b];
            let mut m = bucket.matching(tag);
            while m != 0 {
                let r = bucket.refs[way_of(m)];
                if let Some(dir) = self.indexed(r).direction_of(key) {
                    return Some((r, dir));
                }
                m &= m - 1;
            }
            if bucket.overflow == 0 {
                return None;
            }
            b = self.next(b);
        }
        None
    }

    /// Counts one packet of `len` bytes going `dir` in the session in `slot`, seen at
    /// tick `now`, and returns the entry. Touches the hot line only, except for the
    /// packet that wraps a low counter (see the module note).
    #[inline(always)]
    pub fn count(&mut self, slot: u32, dir: Dir, len: u16, now: u32) -> &Entry {
        let d = dir as usize;
        let e = &mut self.entries[slot as usize];
        e.last_seen = now;
        let (bytes, byte_carry) = e.bytes[d].overflowing_add(u32::from(len));
        e.bytes[d] = bytes;
        let packets = e.packets[d].wrapping_add(1);
        e.packets[d] = packets;
        if byte_carry | (packets == 0) {
            self.fold_carry(slot, d, byte_carry, packets == 0);
        }
        &self.entries[slot as usize]
    }

    /// A low counter wrapped: its 64-bit total takes the wrapped amount.
    #[cold]
    #[inline(never)]
    fn fold_carry(&mut self, slot: u32, d: usize, bytes: bool, packets: bool) {
        let c = &mut self.cold[slot as usize];
        if bytes {
            // 2^64 bytes: wraps as a 64-bit total would.
            c.bytes[d] = c.bytes[d].wrapping_add(1);
        }
        if packets {
            c.packets[d] = c.packets[d].saturating_add(1);
        }
    }

    /// The session's 64-bit counters in direction `dir`: the carried total plus what
    /// the hot line holds now.
    pub fn totals(&self, slot: u32, dir: Dir) -> Totals {
        let d = dir as usize;
        let e = &self.entries[slot as usize];
        let c = &self.cold[slot as usize];
        Totals {
            packets: (u64::from(c.packets[d]) << 16) + u64::from(e.packets[d]),
            bytes: (u64::from(c.bytes[d]) << 32) + u64::from(e.bytes[d]),
        }
    }

    /// Brings toward the cache what `insert` of a session with this id and key hash
    /// reads first (its id's way, its key's home bucket), so that a batch of adds can
    /// overlap their misses.
    #[inline]
    pub fn prefetch_insert(&self, id: u64, hash: u64) {
        self.ids.prefetch(id);
        prefetch::write(self.home_bucket(hash));
    }

    /// Adds a session. Its id and both of its keys must be new.
    pub fn insert(&mut self, entry: &Entry, cold: &Cold) -> Result<u32, InsertError> {
        if self.slot_of(cold.id).is_some() {
            return Err(InsertError::Exists);
        }
        let kin = entry.key(Dir::In);
        let kout = entry.key(Dir::Out);
        if self.lookup(&kin, kin.hash()).is_some() || self.lookup(&kout, kout.hash()).is_some() {
            return Err(InsertError::Exists);
        }
        let slot = self.take_slot().ok_or(InsertError::Full)?;
        self.entries[slot as usize] = *entry;
        self.cold[slot as usize] = *cold;
        self.index_insert(kin.hash(), slot);
        self.ids.insert(cold.id, slot);
        Ok(slot)
    }

    /// A free slot, taken: the last one freed, else the first never used.
    fn take_slot(&mut self) -> Option<u32> {
        let slot = if self.free != 0 {
            let slot = self.free - 1;
            self.free = self.cold[slot as usize].timer[0];
            self.cold[slot as usize].timer[0] = 0;
            slot
        } else if (self.fresh as usize) < self.entries.len() {
            self.fresh += 1;
            self.fresh - 1
        } else {
            return None;
        };
        self.used += 1;
        Some(slot)
    }

    fn index_insert(&mut self, hash: u64, r: u32) {
        self.epoch = self.epoch.wrapping_add(1);
        let tag = tag_of(hash);
        let mut b = self.home(hash);
        // Fewer sessions than ways, so a free way is always found.
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
        self.epoch = self.epoch.wrapping_add(1);
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
        let kin = self.entries[slot as usize].key(Dir::In);
        self.index_remove(kin.hash(), slot);
    }

    /// Forgets the id of the session in `slot` (the slot stays taken); the id can be
    /// used again at once.
    pub fn forget_id(&mut self, slot: u32) {
        let id = self.cold[slot as usize].id;
        let cold = &self.cold;
        self.ids.remove(id, slot, &|s: u32| cold[s as usize].id);
    }

    /// Frees a slot that is no longer indexed.
    pub fn release(&mut self, slot: u32) {
        self.forget_id(slot);
        self.entries[slot as usize] = Entry::default();
        self.cold[slot as usize] = Cold::default();
        self.cold[slot as usize].timer[0] = self.free;
        self.free = slot + 1;
        self.used -= 1;
    }

    pub fn slot_of(&self, id: u64) -> Option<u32> {
        let cold = &self.cold;
        self.ids.get(id, &|s: u32| cold[s as usize].id)
    }

    #[inline(always)]
    pub fn entry(&self, slot: u32) -> &Entry {
        &self.entries[slot as usize]
    }

    #[inline(always)]
    pub fn entry_mut(&mut self, slot: u32) -> &mut Entry {
        &mut self.entries[slot as usize]
    }

    #[inline]
    pub fn cold(&self, slot: u32) -> &Cold {
        &self.cold[slot as usize]
    }

    #[inline]
    pub fn cold_mut(&mut self, slot: u32) -> &mut Cold {
        &mut self.cold[slot as usize]
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap as StdMap;

    /// A session as the table stores it: hot entry and cold record.
    type Sess = (Entry, Cold);

    fn put(t: &mut FlowTable, s: &Sess) -> Result<u32, InsertError> {
        t.insert(&s.0, &s.1)
    }

    fn entry(id: u64, n: u32, in_lif: u32, out_lif: u32, v6: bool) -> Sess {
        let mut e = Entry {
            in_lif,
            out_lif,
            meta: Entry::pack_meta(1, 0, v6),
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
        (
            e,
            Cold {
                id,
                ..Cold::default()
            },
        )
    }

    #[test]
    fn both_directions_find_the_entry() {
        let mut t = FlowTable::with_capacity(16).unwrap();
        let e = entry(7, 1, 1, 2, false);
        let slot = put(&mut t, &e).unwrap();
        let kin = e.0.key(Dir::In);
        let kout = e.0.key(Dir::Out);
        assert_eq!(t.lookup(&kin, kin.hash()), Some((slot, Dir::In)));
        assert_eq!(t.lookup(&kout, kout.hash()), Some((slot, Dir::Out)));
        // The in-key on the wrong lif is not the session.
        let wrong = FlowKey { lif: 2, ..kin };
        assert_eq!(t.lookup(&wrong, wrong.hash()), None);
        assert_eq!(t.slot_of(7), Some(slot));
    }

    #[test]
    fn counters_stay_exact_across_wraps() {
        let mut t = FlowTable::with_capacity(2).unwrap();
        let s = put(&mut t, &entry(1, 1, 1, 2, false)).unwrap();
        // 200k packets of 60000 bytes: the 16-bit packet counter wraps 3 times and
        // the 32-bit byte counter twice.
        for i in 0..200_000u32 {
            t.count(s, Dir::In, 60_000, i);
        }
        for _ in 0..70_000 {
            t.count(s, Dir::Out, 64, 7);
        }
        let want_in = Totals {
            packets: 200_000,
            bytes: 12_000_000_000,
        };
        assert_eq!(t.totals(s, Dir::In), want_in);
        let want_out = Totals {
            packets: 70_000,
            bytes: 70_000 * 64,
        };
        assert_eq!(t.totals(s, Dir::Out), want_out);
        assert_eq!(t.entry(s).last_seen, 7);
        // Nothing of the key or the state was touched.
        assert_eq!(
            t.entry(s).key(Dir::In),
            entry(1, 1, 1, 2, false).0.key(Dir::In)
        );
        assert_eq!(t.entry(s).action(), 1);
    }

    #[test]
    fn totals_reach_their_widths() {
        let mut t = FlowTable::with_capacity(2).unwrap();
        let s = put(&mut t, &entry(1, 1, 1, 2, false)).unwrap();
        t.cold_mut(s).bytes[0] = u32::MAX;
        t.cold_mut(s).packets[0] = u32::MAX - 1;
        for _ in 0..65_536 {
            t.count(s, Dir::In, 1, 0);
        }
        let got = t.totals(s, Dir::In);
        assert_eq!(got.bytes, u64::MAX - (1 << 32) + 1 + 65_536);
        assert_eq!(got.packets, (1 << 48) - (1 << 16));
        // Past 2^48 packets the count stays, it never wraps to a small number.
        for _ in 0..65_536 {
            t.count(s, Dir::In, 1, 0);
        }
        assert_eq!(t.totals(s, Dir::In).packets, (1 << 48) - (1 << 16));
    }

    #[test]
    fn meta_packs_action_state_family() {
        let mut e = Entry {
            meta: Entry::pack_meta(3, 2, true),
            ..Entry::default()
        };
        assert_eq!((e.action(), e.state(), e.v6()), (3, 2, true));
        e.set_state(3);
        assert_eq!((e.action(), e.state(), e.v6()), (3, 3, true));
        e.set_state(0);
        assert_eq!((e.action(), e.state(), e.v6()), (3, 0, true));
    }

    #[test]
    fn duplicates_by_id_and_by_key() {
        let mut t = FlowTable::with_capacity(16).unwrap();
        put(&mut t, &entry(1, 1, 1, 2, false)).unwrap();
        assert_eq!(
            put(&mut t, &entry(1, 2, 1, 2, false)),
            Err(InsertError::Exists)
        );
        assert_eq!(
            put(&mut t, &entry(2, 1, 1, 2, false)),
            Err(InsertError::Exists)
        );
        // The reverse of an offloaded session is that session.
        let mut rev = entry(3, 1, 2, 1, false);
        std::mem::swap(&mut rev.0.src, &mut rev.0.dst);
        std::mem::swap(&mut rev.0.sport, &mut rev.0.dport);
        assert_eq!(put(&mut t, &rev), Err(InsertError::Exists));
        // Same addresses on other lifs is another session.
        put(&mut t, &entry(4, 1, 3, 4, false)).unwrap();
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn full_is_an_answer() {
        let mut t = FlowTable::with_capacity(3).unwrap();
        for i in 0..3 {
            put(&mut t, &entry(i, i as u32, 1, 2, false)).unwrap();
        }
        assert_eq!(
            put(&mut t, &entry(9, 9, 1, 2, false)),
            Err(InsertError::Full)
        );
        let s = t.slot_of(1).unwrap();
        t.unindex(s);
        t.release(s);
        put(&mut t, &entry(9, 9, 1, 2, false)).unwrap();
    }

    #[test]
    fn overflow_chains_survive_removal() {
        // Sessions whose `in` keys share one home bucket, more than it has ways, so
        // that probes run across buckets.
        let mut t = FlowTable::with_capacity(40).unwrap();
        let crowded = |s: &Sess| {
            let k = s.0.key(Dir::In);
            t.home(k.hash()) == 0
        };
        let es: Vec<Sess> = (0..)
            .map(|i| entry(i, i as u32 * 7919, 1, 2, i % 2 == 0))
            .filter(crowded)
            .take(40)
            .collect();
        let slots: Vec<u32> = es.iter().map(|e| put(&mut t, e).unwrap()).collect();
        for i in (0..40).step_by(3) {
            t.unindex(slots[i]);
            t.release(slots[i]);
        }
        for (i, e) in es.iter().enumerate() {
            let k = e.0.key(Dir::Out);
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
        assert_eq!(left, 40 - 14);
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
        let s = put(&mut t, &entry(5, 1, 1, 2, false)).unwrap();
        t.unindex(s);
        t.forget_id(s);
        let s2 = put(&mut t, &entry(5, 1, 1, 2, false)).unwrap();
        assert_ne!(s, s2);
        t.release(s); // the old slot goes; the id stays with the new one
        assert_eq!(t.slot_of(5), Some(s2));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64, u32, bool),
        /// Out of the index, slot and id kept (a closed session not yet handed over).
        Unindex(u64),
        Remove(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..64, 0u32..48, any::<bool>()).prop_map(|(i, n, v6)| Op::Insert(i, n, v6)),
            (0u64..64).prop_map(Op::Unindex),
            (0u64..64).prop_map(Op::Remove),
        ]
    }

    proptest! {
        // The table against a model: a map from id to entry, with keys unique.
        #[test]
        fn matches_a_model(ops in proptest::collection::vec(op(), 1..300)) {
            // An index 80% full when the table is, so that keys overflow their home
            // buckets and probes run across buckets (a table of `with_capacity`
            // keeps them half full, where overflows are rare).
            let cap = 24;
            let mut t = FlowTable::with_index(cap, 3).unwrap();
            // id -> session, and whether it is still in the index.
            let mut model: StdMap<u64, (Sess, bool)> = StdMap::new();
            // Every key the ops can make, both directions: probes taken before an op
            // must give what a fresh lookup gives after it.
            let keys: Vec<FlowKey> = (0..48u32)
                .flat_map(|n| [false, true].map(|v6| entry(0, n, 1, 2, v6)))
                .flat_map(|s| [s.0.key(Dir::In), s.0.key(Dir::Out)])
                .collect();
            for op in ops {
                let probes: Vec<Probe> = keys.iter().map(|k| t.prefetch_entry(k.hash())).collect();
                match op {
                    Op::Insert(id, n, v6) => {
                        let e = entry(id, n, 1, 2, v6);
                        let clash = model.contains_key(&id)
                            || model
                                .values()
                                .any(|(m, indexed)| *indexed && m.0.key(Dir::In) == e.0.key(Dir::In));
                        let got = put(&mut t, &e);
                        if clash {
                            prop_assert_eq!(got, Err(InsertError::Exists));
                        } else if model.len() == cap {
                            prop_assert_eq!(got, Err(InsertError::Full));
                        } else {
                            prop_assert!(got.is_ok());
                            model.insert(id, (e, true));
                        }
                    }
                    Op::Unindex(id) => {
                        if let Some((_, indexed)) = model.get_mut(&id).filter(|m| m.1) {
                            t.unindex(t.slot_of(id).unwrap());
                            *indexed = false;
                        }
                    }
                    Op::Remove(id) => {
                        let slot = t.slot_of(id);
                        prop_assert_eq!(slot.is_some(), model.contains_key(&id));
                        if let Some(s) = slot {
                            if model[&id].1 {
                                t.unindex(s);
                            }
                            t.release(s);
                            model.remove(&id);
                        }
                    }
                }
                prop_assert_eq!(t.len(), model.len());
                for (k, probe) in keys.iter().zip(&probes) {
                    prop_assert_eq!(t.lookup_probed(k, k.hash(), *probe), t.lookup(k, k.hash()));
                }
            }
            for n in 0..48u32 {
                for v6 in [false, true] {
                    let probe = entry(0, n, 1, 2, v6);
                    for dir in [Dir::In, Dir::Out] {
                        let k = probe.0.key(dir);
                        let want = model
                            .values()
                            .find(|(m, indexed)| *indexed && m.0.key(dir) == k)
                            .map(|(m, _)| m.1.id);
                        let got = t.lookup(&k, k.hash()).map(|(s, d)| {
                            assert_eq!(d, dir);
                            t.cold(s).id
                        });
                        prop_assert_eq!(got, want);
                    }
                }
            }
        }
    }
}
