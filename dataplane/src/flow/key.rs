//! The flow key a packet is looked up with, and its hash.
//!
//! A key is directional: the logical interface the packet arrived on, and the 5-tuple
//! as it reads on the wire (`in`: arrives on `in_lif` from the session's source;
//! `out`: arrives on `out_lif` from its destination). Its hash is not: both
//! directions of a session hash alike, so the index holds one reference a session
//! and the entry, compared with the key, tells the direction. The lif is left out
//! of the hash for the same reason (each direction has its own); sessions that share
//! a 5-tuple on other lifs share a bucket and are told apart by their entries.

use crate::wire::FrameInfo;

/// Which way a packet goes relative to the session as it was offloaded. As a number
/// (`dir as usize`) it indexes per-direction counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// From the session's source toward its destination (arrives on `in_lif`).
    In = 0,
    /// The reverse (arrives on `out_lif`).
    Out = 1,
}

/// A directional lookup key. IPv4 addresses sit in the first four bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowKey {
    /// VLAN id in the upper 16 bits, the port's lif in the lower 16.
    pub lif: u32,
    pub v6: bool,
    pub proto: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
}

const K: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
fn mix(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(K).rotate_left(31)
}

#[inline(always)]
fn word(b: &[u8; 16], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[i..i + 8]);
    u64::from_ne_bytes(w)
}

impl FlowKey {
    /// The key of a parsed frame that arrived on a port whose lif is `port_lif`.
    #[inline(always)]
    pub fn of_frame(f: &FrameInfo, port_lif: u16) -> FlowKey {
        FlowKey {
            lif: (u32::from(f.vlan) << 16) | u32::from(port_lif),
            v6: f.v6,
            proto: f.proto,
            src: f.src,
            dst: f.dst,
            sport: f.sport,
            dport: f.dport,
        }
    }

    /// The same key seen from the other side, arriving on `lif`.
    pub fn reversed(&self, lif: u32) -> FlowKey {
        FlowKey {
            lif,
            v6: self.v6,
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
        }
    }

    /// A 64-bit hash for the index, the same for both directions of a session (not
    /// the steering hash: this one only has to be fast and well mixed; it never
    /// leaves the worker). Each end (address, port) is one word; the smaller goes
    /// first, which does not care which end is the source.
    #[inline(always)]
    pub fn hash(&self) -> u64 {
        let a = end_word(&self.src, self.sport, self.v6);
        let b = end_word(&self.dst, self.dport, self.v6);
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        // `lo` before `hi`, each through its own multiply: mixing them together
        // first (lo ^ hi) would hash a flow and the flow with its ports swapped
        // alike.
        let h = mix(
            mix(u64::from(self.proto) | (u64::from(self.v6) << 8), lo),
            hi,
        );
        h ^ (h >> 29)
    }
}

/// One end of a flow as a word: IPv4 address and port side by side (the address
/// bytes are read as one word: the parser wrote them as such, so the load is
/// forwarded from its store); IPv6 mixes in the other twelve bytes.
#[inline(always)]
fn end_word(addr: &[u8; 16], port: u16, v6: bool) -> u64 {
    let w = u64::from(word4(addr)) | (u64::from(port) << 32);
    if v6 {
        mix(mix(w, word(addr, 4)), u64::from(word4_at(addr, 12)))
    } else {
        w
    }
}

#[inline(always)]
fn word4(b: &[u8; 16]) -> u32 {
    word4_at(b, 0)
}

#[inline(always)]
fn word4_at(b: &[u8; 16], i: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[i..i + 4]);
    u32::from_ne_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(lif: u32, s: u8, d: u8, sp: u16, dp: u16) -> FlowKey {
        let mut src = [0; 16];
        let mut dst = [0; 16];
        src[..4].copy_from_slice(&[10, 0, 0, s]);
        dst[..4].copy_from_slice(&[10, 0, 1, d]);
        FlowKey {
            lif,
            v6: false,
            proto: 17,
            src,
            dst,
            sport: sp,
            dport: dp,
        }
    }

    #[test]
    fn reversed_twice_is_identity() {
        let k = key(1, 1, 2, 1000, 53);
        assert_eq!(k.reversed(2).reversed(1), k);
    }

    #[test]
    fn both_directions_hash_alike() {
        let k = key(1, 1, 2, 1000, 53);
        assert_eq!(k.hash(), k.reversed(2).hash());
        let mut v6 = k;
        v6.v6 = true;
        v6.src[8] = 1;
        v6.dst[13] = 2;
        assert_eq!(v6.hash(), v6.reversed(7).hash());
        assert_ne!(v6.hash(), k.hash());
    }

    #[test]
    fn hash_differs_by_every_field_but_the_lif() {
        let k = key(1, 1, 2, 1000, 53);
        let h = k.hash();
        assert_eq!(h, key(2, 1, 2, 1000, 53).hash());
        assert_ne!(h, key(1, 3, 2, 1000, 53).hash());
        assert_ne!(h, key(1, 1, 3, 1000, 53).hash());
        assert_ne!(h, key(1, 1, 2, 1001, 53).hash());
        assert_ne!(h, key(1, 1, 2, 1000, 54).hash());
        // An end's address and port stay together: swapping ports alone is another flow.
        assert_ne!(h, key(1, 1, 2, 53, 1000).hash());
        let mut v6 = k;
        v6.v6 = true;
        for i in 4..16 {
            let mut a = v6;
            a.src[i] ^= 1;
            assert_ne!(a.hash(), v6.hash(), "address byte {i}");
        }
        let mut t = k;
        t.proto = 6;
        assert_ne!(h, t.hash());
    }
}
