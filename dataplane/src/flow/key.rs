//! The flow key a packet is looked up with, and its hash.
//!
//! A key is directional: the logical interface the packet arrived on, and the 5-tuple
//! as it reads on the wire. A session is indexed under two keys, one per direction
//! (`in`: arrives on `in_lif` from the session's source; `out`: arrives on `out_lif`
//! from its destination), both pointing at the one entry, so a single probe tells the
//! session and the direction.

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

    /// A 64-bit hash for the index (not the steering hash: this one only has to be
    /// fast and well mixed; it never leaves the worker).
    #[inline(always)]
    pub fn hash(&self) -> u64 {
        let head = u64::from(self.lif)
            | (u64::from(self.proto) << 32)
            | (u64::from(self.v6) << 40)
            | (u64::from(self.sport) << 48);
        // IPv4 reads the four address bytes as one word each: they were written as
        // such by the parser, so the loads are forwarded from its stores.
        let addrs = (u64::from(word4(&self.src)) << 32) | u64::from(word4(&self.dst));
        let mut h = mix(head, u64::from(self.dport));
        h = mix(h, addrs);
        if self.v6 {
            h = mix(h, word(&self.src, 4) ^ word(&self.dst, 4).rotate_left(17));
            h = mix(
                h,
                u64::from(word4_at(&self.src, 12)) | (u64::from(word4_at(&self.dst, 12)) << 32),
            );
        }
        h ^ (h >> 29)
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
    fn hash_differs_by_every_field() {
        let k = key(1, 1, 2, 1000, 53);
        let h = k.hash();
        assert_ne!(h, key(2, 1, 2, 1000, 53).hash());
        assert_ne!(h, key(1, 3, 2, 1000, 53).hash());
        assert_ne!(h, key(1, 1, 3, 1000, 53).hash());
        assert_ne!(h, key(1, 1, 2, 1001, 53).hash());
        assert_ne!(h, key(1, 1, 2, 1000, 54).hash());
        assert_ne!(h, key(1, 2, 1, 53, 1000).hash(), "directions hash apart");
        let mut t = k;
        t.proto = 6;
        assert_ne!(h, t.hash());
    }
}
