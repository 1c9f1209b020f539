//! The Internet checksum (RFC 1071) and the TCP/UDP pseudo-headers it covers.

/// One's-complement sum of `data` as big-endian 16-bit words, a trailing odd byte
/// padded with zero. Carries are kept in the wide accumulator and folded by `fold`.
pub fn sum(data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    let mut acc: u64 = words
        .by_ref()
        .map(|word| u64::from(u16::from_be_bytes([word[0], word[1]])))
        .sum();
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds the carries of a wide one's-complement sum into 16 bits.
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum to store in a header: the complement of the folded sum.
pub fn checksum(acc: u64) -> u16 {
    !fold(acc)
}

/// The addresses of the IP header a TCP or UDP checksum covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PseudoHeader {
    V4 { src: [u8; 4], dst: [u8; 4] },
    V6 { src: [u8; 16], dst: [u8; 16] },
}

impl PseudoHeader {
    /// Sum of the pseudo-header for an upper-layer packet of `protocol` and `len` bytes.
    pub fn sum(&self, protocol: u8, len: usize) -> u64 {
        // Only the low 32 bits of the length are on the wire (16 for IPv4, whose
        // total length cannot exceed them anyway).
        let len = len as u32;
        match self {
            PseudoHeader::V4 { src, dst } => {
                sum(src) + sum(dst) + u64::from(protocol) + u64::from(len & 0xffff)
            }
            PseudoHeader::V6 { src, dst } => {
                sum(src)
                    + sum(dst)
                    + u64::from(len >> 16)
                    + u64::from(len & 0xffff)
                    + u64::from(protocol)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(sum(&data)), !0xddf2);
    }

    #[test]
    fn odd_length_pads_last_byte() {
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(sum(&[]), 0);
    }

    #[test]
    fn fold_handles_many_carries() {
        // 100 000 words of 0xffff: a sum far above 32 bits of carries still folds.
        let data = vec![0xff; 200_000];
        assert_eq!(fold(sum(&data)), 0xffff);
    }

    #[test]
    fn pseudo_headers() {
        let v4 = PseudoHeader::V4 {
            src: [192, 168, 0, 1],
            dst: [192, 168, 0, 199],
        };
        assert_eq!(v4.sum(17, 8), 0xc0a8 + 0x0001 + 0xc0a8 + 0x00c7 + 17 + 8);
        let mut src = [0; 16];
        src[15] = 1;
        let v6 = PseudoHeader::V6 { src, dst: src };
        assert_eq!(v6.sum(6, 0x1_0002), 1 + 1 + 1 + 2 + 6);
    }
}
