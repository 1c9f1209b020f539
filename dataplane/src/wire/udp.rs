//! UDP headers (RFC 768) and their checksum over the pseudo-header (RFC 8200 section
//! 8.1 for IPv6, where the checksum is mandatory).

use super::checksum::{self, PseudoHeader};
use super::Malformed;
use super::PROTO_UDP;

pub const HEADER_LEN: usize = 8;

mod field {
    use std::ops::Range;

    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// A view of a UDP datagram in a byte buffer (normally the IP payload). The buffer
/// may be longer than the datagram; `payload` ends where the length field says.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checking it; accessors panic if it is shorter than the
    /// header or the length claims.
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps `buffer` after `check_len`: after that no accessor can panic.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Malformed> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Length field >= 8 (`UdpHeader` otherwise) and within the buffer (`Truncated`
    /// otherwise).
    pub fn check_len(&self) -> Result<(), Malformed> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Malformed::Truncated);
        }
        let length = usize::from(self.len());
        if length < HEADER_LEN {
            return Err(Malformed::UdpHeader);
        }
        if length > len {
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

    /// The length field: header plus payload.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// Whether the checksum over `pseudo` and the datagram is right. Over IPv4 a zero
    /// checksum means "none" and passes; over IPv6 it is not allowed and fails.
    pub fn verify_checksum(&self, pseudo: &PseudoHeader) -> bool {
        if self.checksum() == 0 {
            return matches!(pseudo, PseudoHeader::V4 { .. });
        }
        checksum::fold(self.checksum_acc(pseudo)) == 0xffff
    }

    /// Sum of the pseudo-header and the datagram as it is (checksum field included).
    fn checksum_acc(&self, pseudo: &PseudoHeader) -> u64 {
        let data = self.buffer.as_ref();
        // The length field bounds the datagram; an unchecked view may claim more than
        // the buffer, so clamp rather than panic.
        let datagram = data.get(..usize::from(self.len())).unwrap_or(data);
        pseudo.sum(PROTO_UDP, datagram.len()) + checksum::sum(datagram)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::SRC_PORT], value);
    }

    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::DST_PORT], value);
    }

    pub fn set_len(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::LENGTH], value);
    }

    pub fn set_checksum(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// Computes and stores the checksum over `pseudo` and the datagram: write the
    /// payload first. A computed zero is sent as 0xffff, since zero on the wire means
    /// "no checksum" (and is invalid over IPv6).
    pub fn fill_checksum(&mut self, pseudo: &PseudoHeader) {
        self.set_checksum(0);
        let sum = checksum::checksum(self.checksum_acc(pseudo));
        self.set_checksum(if sum == 0 { 0xffff } else { sum });
    }
}

/// The fields of a UDP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    /// Bytes after the header.
    pub payload_len: usize,
}

impl Repr {
    /// Reads a checked datagram. The checksum is not verified (see
    /// `Packet::verify_checksum`).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Malformed> {
        packet.check_len()?;
        Ok(Repr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: usize::from(packet.len()) - HEADER_LEN,
        })
    }

    pub fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The length field; None when the datagram is too long for 16 bits.
    pub fn len_field(&self) -> Option<u16> {
        u16::try_from(self.payload_len.checked_add(HEADER_LEN)?).ok()
    }

    /// Writes the header with a zero checksum; write the payload, then
    /// `Packet::fill_checksum`. A length too long for the field is written as 65535;
    /// callers check `len_field` first.
    ///
    /// # Panics
    /// If the buffer is shorter than 8 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(self.len_field().unwrap_or(u16::MAX));
        packet.set_checksum(0);
    }
}

fn read_u16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

fn write_u16(bytes: &mut [u8], value: u16) {
    bytes.copy_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const PSEUDO_V4: PseudoHeader = PseudoHeader::V4 {
        src: [192, 168, 0, 1],
        dst: [192, 168, 0, 199],
    };

    /// A DNS-looking datagram from 192.168.0.1:53000 to 192.168.0.199:53 with four
    /// bytes of data, checksummed.
    const DATAGRAM: [u8; 12] = [
        0xcf, 0x08, 0x00, 0x35, // ports
        0x00, 0x0c, 0x9b, 0x4b, // length 12, checksum
        0x12, 0x34, 0x01, 0x00, // data
    ];

    #[test]
    fn reads_known_header() {
        let packet = Packet::new_checked(&DATAGRAM[..]).unwrap();
        assert_eq!(packet.src_port(), 53000);
        assert_eq!(packet.dst_port(), 53);
        assert_eq!(packet.len(), 12);
        assert_eq!(packet.checksum(), 0x9b4b);
        assert_eq!(packet.payload(), &[0x12, 0x34, 0x01, 0x00]);
        assert!(packet.verify_checksum(&PSEUDO_V4));
        assert_eq!(
            Repr::parse(&packet),
            Ok(Repr {
                src_port: 53000,
                dst_port: 53,
                payload_len: 4
            })
        );
    }

    #[test]
    fn bytes_past_the_length_are_not_payload() {
        let mut bytes = DATAGRAM.to_vec();
        bytes.extend([0xff; 5]);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.payload().len(), 4);
        assert!(packet.verify_checksum(&PSEUDO_V4));
    }

    #[test]
    fn every_truncation_is_an_error() {
        for len in 0..DATAGRAM.len() {
            assert_eq!(
                Packet::new_checked(&DATAGRAM[..len]).err(),
                Some(Malformed::Truncated),
                "len {len}"
            );
        }
    }

    #[test]
    fn bad_length_is_rejected() {
        for length in 0..8u8 {
            let mut bytes = DATAGRAM;
            bytes[5] = length;
            assert_eq!(
                Packet::new_checked(&bytes[..]).err(),
                Some(Malformed::UdpHeader)
            );
        }
        let mut bytes = DATAGRAM;
        bytes[5] = 13;
        assert_eq!(
            Packet::new_checked(&bytes[..]).err(),
            Some(Malformed::Truncated)
        );
    }

    #[test]
    fn zero_checksum_means_none_only_over_ipv4() {
        let mut bytes = DATAGRAM;
        bytes[6..8].fill(0);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(packet.verify_checksum(&PSEUDO_V4));
        let pseudo_v6 = PseudoHeader::V6 {
            src: [1; 16],
            dst: [2; 16],
        };
        assert!(!packet.verify_checksum(&pseudo_v6));
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // Choose the payload so that the sum over everything else is 0xffff: then the
        // checksum comes out as zero and must be written as 0xffff.
        let repr = Repr {
            src_port: 1,
            dst_port: 2,
            payload_len: 2,
        };
        let mut bytes = [0; 10];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        repr.emit(&mut packet);
        let rest =
            checksum::fold(PSEUDO_V4.sum(PROTO_UDP, 10) + checksum::sum(&[0, 1, 0, 2, 0, 10]));
        packet
            .payload_mut()
            .copy_from_slice(&(0xffff - rest).to_be_bytes());
        packet.fill_checksum(&PSEUDO_V4);
        assert_eq!(packet.checksum(), 0xffff);
        assert!(packet.verify_checksum(&PSEUDO_V4));
    }

    #[test]
    fn emit_round_trips_with_checksum() {
        let repr = Repr {
            src_port: 4789,
            dst_port: 65535,
            payload_len: 5,
        };
        let pseudo = PseudoHeader::V6 {
            src: [0xfd; 16],
            dst: [0x11; 16],
        };
        let mut bytes = [0xcc; 13];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        repr.emit(&mut packet);
        packet.payload_mut().copy_from_slice(b"abcde");
        packet.fill_checksum(&pseudo);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(packet.verify_checksum(&pseudo));
        assert!(!packet.verify_checksum(&PSEUDO_V4));
        assert_eq!(Repr::parse(&packet), Ok(repr));
        assert_eq!(
            Repr {
                payload_len: 65_528,
                ..repr
            }
            .len_field(),
            None
        );
        assert_eq!(
            Repr {
                payload_len: 65_527,
                ..repr
            }
            .len_field(),
            Some(65_535)
        );
    }

    #[test]
    fn unchecked_view_with_long_length_does_not_panic_on_checksum() {
        let mut bytes = DATAGRAM;
        bytes[4] = 0xff;
        let packet = Packet::new_unchecked(&bytes[..]);
        assert!(!packet.verify_checksum(&PSEUDO_V4));
    }
}
