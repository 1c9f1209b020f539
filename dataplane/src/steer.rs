//! Symmetric receive-side steering: which worker owns a session.
//!
//! Toeplitz hash with the symmetric key (0x6d5a repeated) over source and destination
//! address and port, exactly what a NIC computes for RSS when programmed with that key:
//! swapping source and destination gives the same hash, so both directions of a
//! session land on the same worker. Worker = redirection table[hash % table size].
//! NICs are programmed with the same key and table; the ring device and the control
//! plane compute it here.

/// The symmetric RSS key: 0x6d5a repeated (40 bytes, enough for IPv6 + ports).
pub const RSS_KEY: [u8; 40] = {
    let mut k = [0u8; 40];
    let mut i = 0;
    while i < 40 {
        k[i] = if i % 2 == 0 { 0x6d } else { 0x5a };
        i += 1;
    }
    k
};

/// Entries of the redirection table (what most NICs use).
pub const RETA_SIZE: usize = 128;

/// Toeplitz hash of `input` with `key` (bit-serial reference; `Toeplitz` is the fast
/// table-driven form).
pub fn toeplitz_reference(key: &[u8], input: &[u8]) -> u32 {
    let mut result = 0u32;
    let mut window = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    for (i, byte) in input.iter().enumerate() {
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                result ^= window;
            }
            let next_bit_index = (i + 4) * 8 + bit;
            let next = key
                .get(next_bit_index / 8)
                .map(|b| (b >> (7 - next_bit_index % 8)) & 1)
                .unwrap_or(0);
            window = (window << 1) | next as u32;
        }
    }
    result
}

/// Table-driven Toeplitz over the symmetric key: one lookup per input byte.
pub struct Toeplitz {
    // table[i][b] = hash contribution of byte value b at input position i.
    table: Box<[[u32; 256]; 36]>,
}

impl Default for Toeplitz {
    fn default() -> Self {
        Self::new()
    }
}

impl Toeplitz {
    pub fn new() -> Toeplitz {
        let mut table = Box::new([[0u32; 256]; 36]);
        for (i, row) in table.iter_mut().enumerate() {
            for (b, slot) in row.iter_mut().enumerate() {
                // Contribution of byte b at position i is linear: hash of an input with
                // only that byte set.
                let mut input = [0u8; 36];
                input[i] = b as u8;
                *slot = toeplitz_reference(&RSS_KEY, &input[..=i]);
            }
        }
        Toeplitz { table }
    }

    #[inline]
    fn hash_bytes(&self, input: &[u8]) -> u32 {
        let mut h = 0;
        for (i, &b) in input.iter().enumerate() {
            h ^= self.table[i][b as usize];
        }
        h
    }

    /// The hash of an IPv4 flow: src addr, dst addr, src port, dst port (RSS order).
    pub fn hash_v4(&self, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> u32 {
        let mut input = [0u8; 12];
        input[0..4].copy_from_slice(&src);
        input[4..8].copy_from_slice(&dst);
        input[8..10].copy_from_slice(&sport.to_be_bytes());
        input[10..12].copy_from_slice(&dport.to_be_bytes());
        self.hash_bytes(&input)
    }

    /// The hash of an IPv6 flow.
    pub fn hash_v6(&self, src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> u32 {
        let mut input = [0u8; 36];
        input[0..16].copy_from_slice(&src);
        input[16..32].copy_from_slice(&dst);
        input[32..34].copy_from_slice(&sport.to_be_bytes());
        input[34..36].copy_from_slice(&dport.to_be_bytes());
        self.hash_bytes(&input)
    }

    /// The hash of a flow given as (version, addresses, ports); IPv4 addresses sit in
    /// the first four bytes.
    pub fn hash(&self, v6: bool, src: &[u8; 16], dst: &[u8; 16], sport: u16, dport: u16) -> u32 {
        if v6 {
            self.hash_v6(*src, *dst, sport, dport)
        } else {
            let s = [src[0], src[1], src[2], src[3]];
            let d = [dst[0], dst[1], dst[2], dst[3]];
            self.hash_v4(s, d, sport, dport)
        }
    }
}

/// The redirection table: hash -> queue (= worker).
#[derive(Clone, Debug)]
pub struct Reta {
    entries: Vec<u16>,
    /// The queue every entry names, when they all name one (one worker): the owner
    /// of a flow is then known without hashing it.
    only: Option<u16>,
}

impl Reta {
    /// Round-robin over `queues`, as NICs and `ethtool -X equal` set it.
    pub fn round_robin(queues: usize) -> Reta {
        let queues = queues.max(1);
        Reta::new((0..RETA_SIZE).map(|i| (i % queues) as u16).collect())
    }

    fn new(entries: Vec<u16>) -> Reta {
        let only = match entries.split_first() {
            Some((&q, rest)) if rest.iter().all(|&r| r == q) => Some(q),
            _ => None,
        };
        Reta { entries, only }
    }

    /// The queue of every flow, when all entries name the same one.
    #[inline]
    pub fn only(&self) -> Option<usize> {
        self.only.map(usize::from)
    }

    #[inline]
    pub fn queue(&self, hash: u32) -> usize {
        self.entries[hash as usize % self.entries.len()] as usize
    }

    pub fn entries(&self) -> &[u16] {
        &self.entries
    }
}

/// The hash and redirection table together: flow -> owning worker.
pub struct Steering {
    pub toeplitz: Toeplitz,
    pub reta: Reta,
}

impl Steering {
    pub fn new(workers: usize) -> Steering {
        Steering {
            toeplitz: Toeplitz::new(),
            reta: Reta::round_robin(workers),
        }
    }

    /// The worker that owns the flow (either direction).
    pub fn worker(
        &self,
        v6: bool,
        src: &[u8; 16],
        dst: &[u8; 16],
        sport: u16,
        dport: u16,
    ) -> usize {
        if let Some(q) = self.reta.only() {
            return q;
        }
        self.reta
            .queue(self.toeplitz.hash(v6, src, dst, sport, dport))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Verification vectors from Microsoft's RSS specification (non-symmetric key).
    const MS_KEY: [u8; 40] = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f,
        0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
        0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ];

    #[test]
    fn reference_matches_microsoft_vector() {
        // 66.9.149.187:2794 -> 161.142.100.80:1766, TCP/IPv4 hash 0x51ccc178.
        let mut input = vec![66, 9, 149, 187, 161, 142, 100, 80];
        input.extend_from_slice(&2794u16.to_be_bytes());
        input.extend_from_slice(&1766u16.to_be_bytes());
        assert_eq!(toeplitz_reference(&MS_KEY, &input), 0x51cc_c178);
    }

    #[test]
    fn table_matches_reference() {
        let t = Toeplitz::new();
        let src = [10, 0, 0, 1];
        let dst = [192, 168, 7, 9];
        let mut input = vec![];
        input.extend_from_slice(&src);
        input.extend_from_slice(&dst);
        input.extend_from_slice(&1234u16.to_be_bytes());
        input.extend_from_slice(&80u16.to_be_bytes());
        assert_eq!(
            t.hash_v4(src, dst, 1234, 80),
            toeplitz_reference(&RSS_KEY, &input)
        );
    }

    #[test]
    fn symmetric_both_versions() {
        let t = Toeplitz::new();
        for i in 0..200u32 {
            let a = (i * 7919).to_be_bytes();
            let b = (i * 104_729 + 3).to_be_bytes();
            let (p, q) = ((i * 31) as u16, (i * 17 + 5) as u16);
            assert_eq!(t.hash_v4(a, b, p, q), t.hash_v4(b, a, q, p));
            let mut a6 = [0u8; 16];
            let mut b6 = [0u8; 16];
            a6[12..].copy_from_slice(&a);
            b6[3..7].copy_from_slice(&b);
            assert_eq!(t.hash_v6(a6, b6, p, q), t.hash_v6(b6, a6, q, p));
        }
    }

    #[test]
    fn steering_spreads_over_workers() {
        let s = Steering::new(2);
        let mut seen = [0; 2];
        for i in 0..1000u32 {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&(0x0a00_0000 + i).to_be_bytes());
            let b = [10, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            seen[s.worker(false, &a, &b, 1000 + i as u16, 80)] += 1;
        }
        assert!(seen[0] > 300 && seen[1] > 300, "{seen:?}");
    }

    #[test]
    fn one_queue_is_known_without_hashing() {
        assert_eq!(Reta::round_robin(1).only(), Some(0));
        assert_eq!(Reta::round_robin(2).only(), None);
        let one = Steering::new(1);
        let a = [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(one.worker(false, &a, &a, 1, 2), 0);
    }
}
