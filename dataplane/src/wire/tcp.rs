//! TCP headers (RFC 9293): ports, sequence numbers, flags, and the checksum over the
//! pseudo-header. Options are kept in the view and skipped by the `Repr`.

use super::checksum::{self, PseudoHeader};
use super::Malformed;
use super::PROTO_TCP;

/// Length of a header without options (data offset 5).
pub const HEADER_LEN: usize = 20;
/// The window the builders advertise.
pub const DEFAULT_WINDOW: u16 = 65_535;

mod field {
    use std::ops::Range;

    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const ACK: Range<usize> = 8..12;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
}

/// What window tracking reads of a segment: its place in the sequence space, the
/// acknowledgement and the window it announces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub seq: u32,
    pub ack: u32,
    /// The window field as sent (not scaled).
    pub window: u16,
    pub flags: u8,
    /// Sequence space the segment takes: payload bytes, plus one each for SYN and FIN.
    pub len: u32,
}

impl Segment {
    /// The segment of a whole TCP header plus payload (`buffer` ends where the IP
    /// packet ends); None when the header does not fit.
    pub fn of(buffer: &[u8]) -> Option<Segment> {
        let p = Packet::new_checked(buffer).ok()?;
        let flags = p.flags();
        let syn_fin = u32::from(flags & super::tcp_flags::SYN != 0)
            + u32::from(flags & super::tcp_flags::FIN != 0);
        Some(Segment {
            seq: p.seq_number(),
            ack: p.ack_number(),
            window: p.window(),
            flags,
            len: (buffer.len() - p.header_len()) as u32 + syn_fin,
        })
    }

    /// The sequence number just past the segment.
    pub fn end(&self) -> u32 {
        self.seq.wrapping_add(self.len)
    }
}

/// A view of a TCP segment in a byte buffer that ends where the segment ends (the IP
/// payload), since the checksum covers all of it.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checking it; accessors panic if it is shorter than the
    /// header.
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps `buffer` after `check_len`: after that no accessor can panic.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Malformed> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Data offset >= 5 (`TcpHeader` otherwise) and the header with its options within
    /// the buffer (`Truncated` otherwise).
    pub fn check_len(&self) -> Result<(), Malformed> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Malformed::Truncated);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Malformed::TcpHeader);
        }
        if header_len > len {
            return Err(Malformed::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn src_port(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::SRC_PORT])
    }

    pub fn dst_port(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::DST_PORT])
    }

    pub fn seq_number(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::SEQ])
    }

    pub fn ack_number(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::ACK])
    }

    /// Header length in bytes (data offset * 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    /// The flags byte (CWR ECE URG ACK PSH RST SYN FIN); see `wire::tcp_flags`.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn window(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::WINDOW])
    }

    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    pub fn urgent(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::URGENT])
    }

    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Whether the checksum over `pseudo` and the whole buffer is right.
    pub fn verify_checksum(&self, pseudo: &PseudoHeader) -> bool {
        let data = self.buffer.as_ref();
        let acc = pseudo.sum(PROTO_TCP, data.len()) + checksum::sum(data);
        checksum::fold(acc) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::SRC_PORT], value);
    }

    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::DST_PORT], value);
    }

    pub fn set_seq_number(&mut self, value: u32) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&value.to_be_bytes());
    }

    pub fn set_ack_number(&mut self, value: u32) {
        self.buffer.as_mut()[field::ACK].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the data offset from a header length in bytes (a multiple of 4, 20..=60);
    /// clears the reserved bits and NS.
    pub fn set_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::DATA_OFFSET] = ((header_len / 4) as u8 & 0x0f) << 4;
    }

    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    pub fn set_window(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::WINDOW], value);
    }

    pub fn set_checksum(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    pub fn set_urgent(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::URGENT], value);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }

    /// Computes and stores the checksum over `pseudo` and the whole buffer: write the
    /// payload first.
    pub fn fill_checksum(&mut self, pseudo: &PseudoHeader) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let acc = pseudo.sum(PROTO_TCP, data.len()) + checksum::sum(data);
        self.set_checksum(checksum::checksum(acc));
    }
}

/// The fields of a TCP header the device and the builders use. Options are not kept:
/// `emit` writes a 20-byte header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq_number: u32,
    pub ack_number: u32,
    pub flags: u8,
    pub window: u16,
    pub urgent: u16,
}

impl Repr {
    /// Reads a checked segment. The checksum is not verified (see
    /// `Packet::verify_checksum`).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Malformed> {
        packet.check_len()?;
        Ok(Repr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq_number: packet.seq_number(),
            ack_number: packet.ack_number(),
            flags: packet.flags(),
            window: packet.window(),
            urgent: packet.urgent(),
        })
    }

    /// Always 20: `emit` writes no options.
    pub fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the 20-byte header with a zero checksum; write the payload, then
    /// `Packet::fill_checksum`.
    ///
    /// # Panics
    /// If the buffer is shorter than 20 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq_number);
        packet.set_ack_number(self.ack_number);
        packet.set_header_len(HEADER_LEN);
        packet.set_flags(self.flags);
        packet.set_window(self.window);
        packet.set_checksum(0);
        packet.set_urgent(self.urgent);
    }
}

fn read_u16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

fn read_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn write_u16(bytes: &mut [u8], value: u16) {
    bytes.copy_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::super::tcp_flags;
    use super::*;

    const PSEUDO: PseudoHeader = PseudoHeader::V4 {
        src: [10, 0, 0, 1],
        dst: [10, 0, 0, 2],
    };

    /// A SYN from port 49152 to 80 with MSS 1460, SACK permitted, a timestamp,
    /// NOP and window scale 7 (data offset 10), checksummed for 10.0.0.1 -> 10.0.0.2.
    const SYN: [u8; 40] = [
        0xc0, 0x00, 0x00, 0x50, // ports
        0x12, 0x34, 0x56, 0x78, // seq
        0x00, 0x00, 0x00, 0x00, // ack
        0xa0, 0x02, 0xfa, 0xf0, // data offset 10, SYN, window 64240
        0x2d, 0xce, 0x00, 0x00, // checksum, urgent
        0x02, 0x04, 0x05, 0xb4, // MSS 1460
        0x04, 0x02, 0x08, 0x0a, // SACK permitted, timestamp...
        0x00, 0x01, 0xe2, 0x40, 0x00, 0x00, 0x00, 0x00, // ...values
        0x01, 0x03, 0x03, 0x07, // NOP, window scale 7
    ];

    #[test]
    fn reads_known_header() {
        let packet = Packet::new_checked(&SYN[..]).unwrap();
        assert_eq!(packet.src_port(), 49152);
        assert_eq!(packet.dst_port(), 80);
        assert_eq!(packet.seq_number(), 0x1234_5678);
        assert_eq!(packet.ack_number(), 0);
        assert_eq!(packet.header_len(), 40);
        assert_eq!(packet.flags(), tcp_flags::SYN);
        assert_eq!(packet.window(), 64240);
        assert_eq!(packet.checksum(), 0x2dce);
        assert_eq!(packet.urgent(), 0);
        assert_eq!(packet.options().len(), 20);
        assert_eq!(packet.options()[..4], [0x02, 0x04, 0x05, 0xb4]);
        assert!(packet.payload().is_empty());
        assert!(packet.verify_checksum(&PSEUDO));
        let other = PseudoHeader::V4 {
            src: [10, 0, 0, 3],
            dst: [10, 0, 0, 2],
        };
        assert!(!packet.verify_checksum(&other));
    }

    #[test]
    fn segment_counts_syn_fin_and_payload() {
        let syn = Segment::of(&SYN).unwrap();
        assert_eq!((syn.seq, syn.ack, syn.window), (0x1234_5678, 0, 64240));
        assert_eq!(syn.len, 1, "a SYN takes one number");
        let mut data = SYN.to_vec();
        data[13] = tcp_flags::FIN | tcp_flags::ACK;
        data.extend_from_slice(&[0; 10]);
        let fin = Segment::of(&data).unwrap();
        assert_eq!(fin.len, 11, "10 payload bytes and the FIN");
        let mut wrap = fin;
        wrap.seq = u32::MAX - 4;
        assert_eq!(wrap.end(), 6, "the end wraps around");
        assert_eq!(Segment::of(&SYN[..39]), None, "a header cut short");
    }

    #[test]
    fn every_truncation_is_an_error() {
        for len in 0..SYN.len() {
            assert_eq!(
                Packet::new_checked(&SYN[..len]).err(),
                Some(Malformed::Truncated),
                "len {len}"
            );
        }
    }

    #[test]
    fn bad_data_offset_is_rejected() {
        for offset in 0..5u8 {
            let mut bytes = SYN;
            bytes[12] = offset << 4;
            assert_eq!(
                Packet::new_checked(&bytes[..]).err(),
                Some(Malformed::TcpHeader)
            );
        }
        // Offset 11 claims 44 bytes of header in a 40-byte segment.
        let mut bytes = SYN;
        bytes[12] = 0xb0;
        assert_eq!(
            Packet::new_checked(&bytes[..]).err(),
            Some(Malformed::Truncated)
        );
    }

    #[test]
    fn emit_round_trips_with_checksum() {
        let repr = Repr {
            src_port: 443,
            dst_port: 50_000,
            seq_number: 0xffff_fffe,
            ack_number: 7,
            flags: tcp_flags::ACK | tcp_flags::PSH | tcp_flags::FIN,
            window: 512,
            urgent: 0,
        };
        let payload = b"hello, world!";
        let mut bytes = vec![0xee; HEADER_LEN + payload.len()];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        repr.emit(&mut packet);
        packet.payload_mut().copy_from_slice(payload);
        let pseudo = PseudoHeader::V6 {
            src: [0x20; 16],
            dst: [0xfe; 16],
        };
        packet.fill_checksum(&pseudo);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(packet.verify_checksum(&pseudo));
        assert_eq!(packet.payload(), payload);
        assert_eq!(Repr::parse(&packet), Ok(repr));
    }

    #[test]
    fn repr_skips_options() {
        let packet = Packet::new_checked(&SYN[..]).unwrap();
        let repr = Repr::parse(&packet).unwrap();
        let mut out = [0; HEADER_LEN];
        repr.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out[..12], SYN[..12]);
        assert_eq!(out[12], 0x50);
        assert_eq!(out[13..16], SYN[13..16]);
    }

    #[test]
    fn checksum_changes_with_payload() {
        let mut bytes = SYN.to_vec();
        bytes.push(0x01);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(!packet.verify_checksum(&PSEUDO));
        let mut packet = Packet::new_checked(&mut bytes[..]).unwrap();
        packet.fill_checksum(&PSEUDO);
        assert!(packet.verify_checksum(&PSEUDO));
    }
}
