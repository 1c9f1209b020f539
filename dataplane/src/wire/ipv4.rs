//! IPv4 headers (RFC 791), options included in the view and skipped by the `Repr`.

use super::checksum;
use super::Malformed;

/// Length of a header without options (IHL 5).
pub const HEADER_LEN: usize = 20;
/// Length of a header with the most options IHL allows (15).
pub const MAX_HEADER_LEN: usize = 60;
/// The TTL the builders write.
pub const DEFAULT_TTL: u8 = 64;

mod field {
    use std::ops::Range;

    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

// Bits of the flags / fragment offset word.
const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet in a byte buffer.
///
/// The buffer may be longer than the packet (Ethernet pads short frames); `payload`
/// ends where the total length says.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checking it; accessors panic if it is shorter than the
    /// header or the total length claims.
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps `buffer` after `check_len`: after that no accessor can panic.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Malformed> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Version 4, IHL at least 5, header and total length within the buffer, total
    /// length at least the header length. A buffer cut short is `Truncated`; fields that contradict
    /// each other are `Ipv4Header`.
    pub fn check_len(&self) -> Result<(), Malformed> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(Malformed::Truncated);
        }
        if self.version() != 4 {
            return Err(Malformed::Ipv4Header);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Malformed::Ipv4Header);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Malformed::Ipv4Header);
        }
        // total_len >= header_len, so this also covers the options.
        if total_len > data.len() {
            return Err(Malformed::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// DSCP (6 bits) and ECN (2 bits) as one byte.
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// Header plus payload, in bytes.
    pub fn total_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    pub fn ident(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::IDENT])
    }

    pub fn dont_frag(&self) -> bool {
        self.flags_offset() & FLAG_DF != 0
    }

    pub fn more_frags(&self) -> bool {
        self.flags_offset() & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the field counts 8-byte units).
    pub fn frag_offset(&self) -> u16 {
        (self.flags_offset() & OFFSET_MASK) << 3
    }

    /// Whether this is a fragment other than the first: it carries no L4 header.
    pub fn is_non_first_fragment(&self) -> bool {
        self.flags_offset() & OFFSET_MASK != 0
    }

    fn flags_offset(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::FLG_OFF])
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    pub fn src_addr(&self) -> [u8; 4] {
        read_addr(&self.buffer.as_ref()[field::SRC])
    }

    pub fn dst_addr(&self) -> [u8; 4] {
        read_addr(&self.buffer.as_ref()[field::DST])
    }

    /// The options between the fixed header and the payload (empty for IHL 5).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The payload up to the total length (Ethernet padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }

    /// Whether the header checksum is right (options included).
    pub fn verify_checksum(&self) -> bool {
        let header = &self.buffer.as_ref()[..self.header_len()];
        checksum::fold(checksum::sum(header)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 4 and the header length in bytes (a multiple of 4, 20..=60).
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        let ihl = (header_len / 4) as u8 & 0x0f;
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ihl;
    }

    pub fn set_dscp_ecn(&mut self, value: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = value;
    }

    pub fn set_total_len(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::LENGTH], value);
    }

    pub fn set_ident(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::IDENT], value);
    }

    /// Sets DF, MF and the offset in bytes (rounded down to 8-byte units).
    pub fn set_frag(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut word = (offset >> 3) & OFFSET_MASK;
        if dont_frag {
            word |= FLAG_DF;
        }
        if more_frags {
            word |= FLAG_MF;
        }
        write_u16(&mut self.buffer.as_mut()[field::FLG_OFF], word);
    }

    pub fn set_ttl(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    pub fn set_protocol(&mut self, value: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = value;
    }

    pub fn set_checksum(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    pub fn set_src_addr(&mut self, addr: [u8; 4]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr);
    }

    pub fn set_dst_addr(&mut self, addr: [u8; 4]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr);
    }

    /// Computes and stores the header checksum over the header length already set.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let header_len = self.header_len();
        let sum = checksum::sum(&self.buffer.as_ref()[..header_len]);
        self.set_checksum(checksum::checksum(sum));
    }

    /// The payload up to the total length.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

/// The fields of an IPv4 header the device cares about. Options are not kept: `emit`
/// writes a 20-byte header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub protocol: u8,
    /// Bytes after the header (total length minus header length).
    pub payload_len: usize,
    pub ttl: u8,
    pub dscp_ecn: u8,
    pub ident: u16,
    pub dont_frag: bool,
    pub more_frags: bool,
    /// Fragment offset in bytes.
    pub frag_offset: u16,
}

impl Repr {
    /// Reads a checked packet. The checksum is not verified: the device forwards
    /// packets as they are; `Packet::verify_checksum` is there for who needs it.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Malformed> {
        packet.check_len()?;
        Ok(Repr {
            src: packet.src_addr(),
            dst: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
            ttl: packet.ttl(),
            dscp_ecn: packet.dscp_ecn(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
            more_frags: packet.more_frags(),
            frag_offset: packet.frag_offset(),
        })
    }

    /// Always 20: `emit` writes no options.
    pub fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Header plus payload; None when it does not fit the 16-bit total length.
    pub fn total_len(&self) -> Option<u16> {
        u16::try_from(self.payload_len.checked_add(HEADER_LEN)?).ok()
    }

    /// Writes the 20-byte header with its checksum. A payload too long for the total
    /// length field is written as 65535; callers check `total_len` first.
    ///
    /// # Panics
    /// If the buffer is shorter than 20 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_version_and_header_len(HEADER_LEN);
        packet.set_dscp_ecn(self.dscp_ecn);
        packet.set_total_len(self.total_len().unwrap_or(u16::MAX));
        packet.set_ident(self.ident);
        packet.set_frag(self.dont_frag, self.more_frags, self.frag_offset);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src);
        packet.set_dst_addr(self.dst);
        packet.fill_checksum();
    }
}

fn read_u16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

fn write_u16(bytes: &mut [u8], value: u16) {
    bytes.copy_from_slice(&value.to_be_bytes());
}

fn read_addr(bytes: &[u8]) -> [u8; 4] {
    [bytes[0], bytes[1], bytes[2], bytes[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header of a 60-byte TCP packet from 10.0.0.1 to 10.0.0.2 (DF, TTL 64);
    /// `packet_bytes` adds the 40 bytes its total length claims.
    const HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x3c, // version 4, IHL 5, total length 60
        0x1c, 0x46, 0x40, 0x00, // ident 0x1c46, DF
        0x40, 0x06, 0x0a, 0x74, // TTL 64, TCP, checksum
        0x0a, 0x00, 0x00, 0x01, // src
        0x0a, 0x00, 0x00, 0x02, // dst
    ];

    fn packet_bytes() -> Vec<u8> {
        let mut bytes = HEADER.to_vec();
        bytes.extend((0..40).map(|i| i as u8));
        bytes
    }

    /// A UDP first fragment (MF) with one 4-byte option, Router Alert (RFC 2113), and
    /// 8 bytes of payload.
    const WITH_OPTIONS: [u8; 32] = [
        0x46, 0x00, 0x00, 0x20, // IHL 6, total length 32
        0x00, 0x01, 0x20, 0x00, // ident 1, MF, offset 0
        0x01, 0x11, 0x62, 0xff, // TTL 1, UDP, checksum
        0xc0, 0xa8, 0x01, 0x0a, // src 192.168.1.10
        0xe0, 0x00, 0x00, 0x16, // dst 224.0.0.22
        0x94, 0x04, 0x00, 0x00, // Router Alert
        1, 2, 3, 4, 5, 6, 7, 8, // payload
    ];

    #[test]
    fn reads_known_header() {
        let bytes = packet_bytes();
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.total_len(), 60);
        assert_eq!(packet.ident(), 0x1c46);
        assert!(packet.dont_frag());
        assert!(!packet.more_frags());
        assert_eq!(packet.frag_offset(), 0);
        assert_eq!(packet.ttl(), 64);
        assert_eq!(packet.protocol(), 6);
        assert_eq!(packet.checksum(), 0x0a74);
        assert_eq!(packet.src_addr(), [10, 0, 0, 1]);
        assert_eq!(packet.dst_addr(), [10, 0, 0, 2]);
        assert!(packet.options().is_empty());
        assert_eq!(packet.payload().len(), 40);
        assert!(packet.verify_checksum());
    }

    #[test]
    fn reads_options_and_flags() {
        let packet = Packet::new_checked(&WITH_OPTIONS[..]).unwrap();
        assert_eq!(packet.header_len(), 24);
        assert_eq!(packet.options(), &[0x94, 0x04, 0x00, 0x00]);
        assert_eq!(packet.payload(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(packet.more_frags());
        assert!(!packet.dont_frag());
        assert!(!packet.is_non_first_fragment());
        assert!(packet.verify_checksum());
        let repr = Repr::parse(&packet).unwrap();
        assert_eq!(repr.payload_len, 8);
        assert_eq!(repr.protocol, 17);
        assert!(repr.more_frags);
    }

    #[test]
    fn fragment_offset_is_in_bytes() {
        let mut bytes = packet_bytes();
        bytes[6] = 0x20; // MF
        bytes[7] = 0xb9; // offset 185 units = 1480 bytes
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.frag_offset(), 1480);
        assert!(packet.is_non_first_fragment());
        assert!(!packet.verify_checksum());
    }

    #[test]
    fn padding_after_total_length_is_not_payload() {
        let mut bytes = packet_bytes();
        bytes.extend([0; 6]);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.payload().len(), 40);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = packet_bytes();
        for len in 0..bytes.len() {
            assert_eq!(
                Packet::new_checked(&bytes[..len]).err(),
                Some(Malformed::Truncated),
                "len {len}"
            );
        }
        for len in 0..WITH_OPTIONS.len() {
            assert_eq!(
                Packet::new_checked(&WITH_OPTIONS[..len]).err(),
                Some(Malformed::Truncated),
                "len {len}"
            );
        }
    }

    #[test]
    fn bad_fields_are_rejected() {
        let good = packet_bytes();
        let bad = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut bytes = good.clone();
            edit(&mut bytes);
            Packet::new_checked(bytes).err()
        };
        // IPv6 version nibble.
        assert_eq!(bad(&|b| b[0] = 0x65), Some(Malformed::Ipv4Header));
        // IHL below 5.
        for ihl in 0..5 {
            assert_eq!(bad(&|b| b[0] = 0x40 | ihl), Some(Malformed::Ipv4Header));
        }
        // IHL 15 (60 bytes of header) fits a total length of 60 but not of 56.
        assert_eq!(bad(&|b| b[0] = 0x4f), None);
        assert_eq!(
            bad(&|b| {
                b[0] = 0x4f;
                b[3] = 56;
            }),
            Some(Malformed::Ipv4Header)
        );
        // Total length below the header length.
        assert_eq!(
            bad(&|b| b[2..4].copy_from_slice(&[0, 19])),
            Some(Malformed::Ipv4Header)
        );
        // Total length beyond the buffer.
        assert_eq!(
            bad(&|b| b[2..4].copy_from_slice(&[0, 61])),
            Some(Malformed::Truncated)
        );
        assert_eq!(
            bad(&|b| b[2..4].copy_from_slice(&[0xff, 0xff])),
            Some(Malformed::Truncated)
        );
    }

    #[test]
    fn emit_round_trips() {
        let repr = Repr {
            src: [192, 0, 2, 1],
            dst: [198, 51, 100, 7],
            protocol: 17,
            payload_len: 12,
            ttl: 3,
            dscp_ecn: 0xb8,
            ident: 0xbeef,
            dont_frag: false,
            more_frags: true,
            frag_offset: 0,
        };
        let mut bytes = [0xa5; 32];
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(packet.verify_checksum());
        assert_eq!(Repr::parse(&packet), Ok(repr));
        assert_eq!(repr.total_len(), Some(32));
    }

    #[test]
    fn emit_reproduces_known_header() {
        let bytes = packet_bytes();
        let repr = Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap();
        let mut out = [0; 60];
        repr.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out[..20], HEADER);
    }

    #[test]
    fn setters_and_checksum() {
        let mut bytes = packet_bytes();
        let mut packet = Packet::new_checked(&mut bytes[..]).unwrap();
        packet.set_ttl(63);
        assert!(!packet.verify_checksum());
        packet.fill_checksum();
        assert!(packet.verify_checksum());
        packet.set_frag(false, true, 16);
        assert_eq!(packet.frag_offset(), 16);
        assert!(packet.more_frags());
        packet.payload_mut()[0] = 0xee;
        assert_eq!(packet.into_inner()[20], 0xee);
    }

    #[test]
    fn too_long_payload_has_no_total_length() {
        let repr = Repr {
            src: [0; 4],
            dst: [0; 4],
            protocol: 6,
            payload_len: 65_516,
            ttl: 1,
            dscp_ecn: 0,
            ident: 0,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
        };
        assert_eq!(repr.total_len(), None);
        assert_eq!(
            Repr {
                payload_len: 65_515,
                ..repr
            }
            .total_len(),
            Some(65_535)
        );
    }
}
