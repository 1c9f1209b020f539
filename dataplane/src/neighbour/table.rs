//! The neighbour table all workers share: fixed slots made at add time, read by the
//! hot path through one atomic word each.
//!
//! A slot is made once (`intern`, under the index lock, when a session first names a
//! next hop) and never moves or changes its address, so a session keeps its slot
//! number in its entry. What changes is published in atomics: the route word that
//! the hot path reads (resolved bit, port, MAC), written by the resolver only when
//! the entry changes; what a worker last heard from the neighbour (posted by any
//! worker, read by the resolver); how many sessions name it; the state and when it
//! last changed, for listings.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use super::frames::Heard;
use super::{NeighbourView, Source, State};

/// Route word: the neighbour is resolved (the hot path writes its MAC).
const RESOLVED: u64 = 1 << 63;
/// Route word: port + 1 in these 8 bits; 0: the session's own out port.
const PORT_SHIFT: u32 = 48;
const MAC_MASK: u64 = (1 << 48) - 1;

/// Heard word: a MAC is in the low 48 bits.
const HEARD_MAC: u64 = 1 << 48;
/// Heard word: an answer to the device (ARP reply to its MAC, solicited NA).
const HEARD_SOLICITED: u64 = 1 << 49;
/// Heard word: a counter in the top bits, so the resolver sees each new report.
const HEARD_SEQ_SHIFT: u32 = 50;

/// Slots a table may have: entries carry a slot as a u16, 0 meaning none.
pub const MAX_SLOTS: usize = u16::MAX as usize - 1;

/// Where a forwarded frame goes for a next hop, as the hot path reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Write this MAC and leave by `port` (None: the session's out port).
    Mac { mac: [u8; 6], port: Option<u8> },
    /// Not resolved: forward as with no next hop.
    Unresolved,
}

impl Route {
    fn word(self) -> u64 {
        match self {
            Route::Unresolved => 0,
            Route::Mac { mac, port } => {
                let port = port.map_or(0, |p| u64::from(p) + 1);
                RESOLVED | (port << PORT_SHIFT) | mac_word(mac)
            }
        }
    }

    #[inline(always)]
    pub fn from_word(w: u64) -> Route {
        if w & RESOLVED == 0 {
            return Route::Unresolved;
        }
        let port = ((w >> PORT_SHIFT) & 0xff) as u8;
        Route::Mac {
            mac: word_mac(w),
            port: port.checked_sub(1),
        }
    }
}

fn mac_word(mac: [u8; 6]) -> u64 {
    let mut b = [0u8; 8];
    b[2..].copy_from_slice(&mac);
    u64::from_be_bytes(b)
}

#[inline(always)]
fn word_mac(w: u64) -> [u8; 6] {
    let b = (w & MAC_MASK).to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// What never changes about a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    pub addr: IpAddr,
    /// The port it is reached by; None: a static entry for every port.
    pub port: Option<u8>,
    pub source: Source,
}

/// One neighbour.
#[derive(Default)]
pub struct Slot {
    info: OnceLock<SlotInfo>,
    route: AtomicU64,
    heard: AtomicU64,
    sessions: AtomicU32,
    state: AtomicU8,
    changed_ns: AtomicU64,
}

impl Slot {
    /// Set before the slot is published (`NeighbourTable::len`).
    pub fn info(&self) -> SlotInfo {
        *self.info.get().expect("published slots have their info")
    }

    /// Reports a frame heard from this neighbour to the resolver. Two reports between
    /// two resolver runs keep the later one, as a newer answer replaces an older.
    pub fn post(&self, heard: Heard) {
        let seq = (self.heard.load(Ordering::Relaxed) >> HEARD_SEQ_SHIFT).wrapping_add(1);
        let mut w = seq << HEARD_SEQ_SHIFT;
        if let Some(mac) = heard.mac {
            w |= HEARD_MAC | mac_word(mac);
        }
        if heard.solicited {
            w |= HEARD_SOLICITED;
        }
        self.heard.store(w, Ordering::Release);
    }

    /// The last report and its sequence number (0 before any).
    pub fn last_heard(&self) -> (u64, Heard) {
        let w = self.heard.load(Ordering::Acquire);
        let heard = Heard {
            mac: (w & HEARD_MAC != 0).then(|| word_mac(w)),
            solicited: w & HEARD_SOLICITED != 0,
        };
        (w >> HEARD_SEQ_SHIFT, heard)
    }

    /// Sessions that name this neighbour now.
    pub fn sessions(&self) -> u32 {
        self.sessions.load(Ordering::Relaxed)
    }

    pub fn state(&self) -> State {
        State::from_code(self.state.load(Ordering::Relaxed))
    }

    /// The route the hot path reads, as it reads it.
    pub fn route(&self) -> Route {
        Route::from_word(self.route.load(Ordering::Relaxed))
    }

    /// Publishes a new state (the resolver, or the table for static entries).
    pub fn publish(&self, state: State, route: Route, now_ns: u64) {
        self.route.store(route.word(), Ordering::Relaxed);
        self.state.store(state.code(), Ordering::Relaxed);
        self.changed_ns.store(now_ns, Ordering::Relaxed);
    }

    /// Records that the entry was confirmed (a reply) without changing its route.
    pub fn touch(&self, now_ns: u64) {
        self.changed_ns.store(now_ns, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Index {
    statics: HashMap<IpAddr, u16>,
    learned: HashMap<(IpAddr, u8), u16>,
}

/// Every neighbour the device knows, static and learned.
pub struct NeighbourTable {
    slots: Box<[Slot]>,
    /// Slots published (their info set); grows, never shrinks.
    len: AtomicUsize,
    index: Mutex<Index>,
    /// Whether each port's backend can send and receive ARP and ND.
    resolving_ports: Vec<bool>,
    epoch: Instant,
}

/// A static entry: address, MAC, port (None: every port).
pub type StaticNeighbour = (IpAddr, [u8; 6], Option<u8>);

impl NeighbourTable {
    /// A table of `capacity` slots (at most `MAX_SLOTS`), the static entries first.
    /// Addresses must be unique among statics; `capacity` must hold them.
    pub fn new(
        capacity: usize,
        statics: &[StaticNeighbour],
        resolving_ports: Vec<bool>,
    ) -> Result<NeighbourTable, String> {
        if capacity > MAX_SLOTS || capacity < statics.len() {
            return Err(format!(
                "neighbour table of {capacity} entries: must hold the {} static ones and \
                 be at most {MAX_SLOTS}",
                statics.len()
            ));
        }
        let table = NeighbourTable {
            slots: (0..capacity).map(|_| Slot::default()).collect(),
            len: AtomicUsize::new(0),
            index: Mutex::new(Index::default()),
            resolving_ports,
            epoch: Instant::now(),
        };
        {
            let mut index = table.lock_index();
            for &(addr, mac, port) in statics {
                if index.statics.contains_key(&addr) {
                    return Err(format!("next hop {addr} listed twice"));
                }
                let info = SlotInfo {
                    addr,
                    port,
                    source: Source::Static,
                };
                let i = table.make_slot(info, State::Permanent, Route::Mac { mac, port });
                index.statics.insert(addr, i);
            }
        }
        Ok(table)
    }

    fn lock_index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fills the next slot and publishes it; the caller holds the index lock.
    fn make_slot(&self, info: SlotInfo, state: State, route: Route) -> u16 {
        let i = self.len.load(Ordering::Relaxed);
        let slot = &self.slots[i];
        let _ = slot.info.set(info);
        slot.publish(state, route, self.now_ns());
        self.len.store(i + 1, Ordering::Release);
        i as u16
    }

    /// The slot for next hop `addr` of a session leaving by `out_port`: the static
    /// entry if the config has one, else the learned entry of that port, made now if
    /// new. None when the table is full.
    pub fn intern(&self, addr: IpAddr, out_port: u8) -> Option<u16> {
        let mut index = self.lock_index();
        if let Some(&i) = index.statics.get(&addr) {
            return Some(i);
        }
        if let Some(&i) = index.learned.get(&(addr, out_port)) {
            return Some(i);
        }
        if self.len.load(Ordering::Relaxed) == self.slots.len() {
            return None;
        }
        let state = if self.can_resolve(out_port) {
            State::Incomplete
        } else {
            State::Noarp
        };
        let info = SlotInfo {
            addr,
            port: Some(out_port),
            source: Source::Learned,
        };
        let i = self.make_slot(info, state, Route::Unresolved);
        index.learned.insert((addr, out_port), i);
        Some(i)
    }

    /// Slots published so far.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// A published slot.
    pub fn slot(&self, i: usize) -> &Slot {
        &self.slots[i]
    }

    /// The hot path's read: where a frame for the next hop in slot `i` goes.
    #[inline(always)]
    pub fn route(&self, i: usize) -> Route {
        Route::from_word(self.slots[i].route.load(Ordering::Relaxed))
    }

    /// A session now names slot `i` (counted so that only next hops in use are
    /// resolved), or no longer does.
    pub fn add_session(&self, i: usize) {
        self.slots[i].sessions.fetch_add(1, Ordering::Relaxed);
    }

    pub fn remove_session(&self, i: usize) {
        let _ = self.slots[i]
            .sessions
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Whether port `p` can resolve neighbours (a backend on a real interface).
    pub fn can_resolve(&self, p: u8) -> bool {
        self.resolving_ports
            .get(usize::from(p))
            .copied()
            .unwrap_or(false)
    }

    /// Nanoseconds since the table was made: the resolver's clock and the ages'.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Every entry, in the order they were made.
    pub fn list(&self) -> Vec<NeighbourView> {
        let now = self.now_ns();
        (0..self.len())
            .map(|i| {
                let s = &self.slots[i];
                let info = s.info();
                let mac = match s.route() {
                    Route::Mac { mac, .. } => Some(mac),
                    Route::Unresolved => None,
                };
                NeighbourView {
                    addr: info.addr,
                    mac,
                    port: info.port.map(usize::from),
                    state: s.state(),
                    age_ms: now.saturating_sub(s.changed_ns.load(Ordering::Relaxed)) / 1_000_000,
                    source: info.source,
                    sessions: s.sessions(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn route_words_round_trip() {
        for route in [
            Route::Unresolved,
            Route::Mac {
                mac: [0xfe, 1, 2, 3, 4, 0xff],
                port: None,
            },
            Route::Mac {
                mac: [2, 0, 0, 0, 0, 1],
                port: Some(0),
            },
            Route::Mac {
                mac: [0; 6],
                port: Some(254),
            },
        ] {
            assert_eq!(Route::from_word(route.word()), route);
        }
    }

    #[test]
    fn statics_win_and_learned_entries_are_per_port() {
        let t = NeighbourTable::new(
            4,
            &[(v4("10.0.0.1"), [2, 0, 0, 0, 0, 1], None)],
            vec![true, false],
        )
        .unwrap();
        assert_eq!(t.intern(v4("10.0.0.1"), 1), Some(0));
        assert_eq!(t.intern(v4("12.2.3.4"), 0), Some(1));
        assert_eq!(t.intern(v4("12.2.3.4"), 0), Some(1), "the same slot again");
        assert_eq!(t.intern(v4("12.2.3.4"), 1), Some(2), "another port");
        assert_eq!(t.intern(v4("192.168.0.1"), 0), Some(3));
        assert_eq!(t.intern(v4("192.168.0.2"), 0), None, "full");
        let list = t.list();
        assert_eq!(list.len(), 4);
        assert_eq!(list[0].state, State::Permanent);
        assert_eq!(list[0].mac, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(list[1].state, State::Incomplete, "port 0 resolves");
        assert_eq!(list[2].state, State::Noarp, "port 1 does not");
        assert_eq!(t.route(1), Route::Unresolved);
    }

    #[test]
    fn posts_carry_a_new_sequence_each() {
        let t = NeighbourTable::new(1, &[], vec![true]).unwrap();
        let s = t.slot(t.intern(v4("10.0.0.9"), 0).unwrap() as usize);
        assert_eq!(s.last_heard().0, 0);
        let h = Heard {
            mac: Some([2, 1, 2, 3, 4, 5]),
            solicited: true,
        };
        s.post(h);
        assert_eq!(s.last_heard(), (1, h));
        let g = Heard {
            mac: None,
            solicited: false,
        };
        s.post(g);
        assert_eq!(s.last_heard(), (2, g));
    }

    #[test]
    fn session_counts_do_not_go_below_zero() {
        let t = NeighbourTable::new(1, &[], vec![true]).unwrap();
        t.intern(v4("10.0.0.9"), 0);
        t.add_session(0);
        t.remove_session(0);
        t.remove_session(0);
        assert_eq!(t.slot(0).sessions(), 0);
    }

    #[test]
    fn bad_sizes_are_errors() {
        let s = [(v4("10.0.0.1"), [2; 6], None)];
        assert!(NeighbourTable::new(0, &s, vec![]).is_err());
        assert!(NeighbourTable::new(MAX_SLOTS + 1, &[], vec![]).is_err());
        let twice = [s[0], s[0]];
        assert!(NeighbourTable::new(2, &twice, vec![]).is_err());
    }
}
