//! ARP for IPv4 over Ethernet (RFC 826): the only form the device sends (requests for
//! its next hops) and learns from (replies, requests and gratuitous announcements).

use super::Malformed;

/// An Ethernet/IPv4 ARP packet: 8 bytes of header and two MAC/IPv4 pairs.
pub const PACKET_LEN: usize = 28;
pub const HTYPE_ETHERNET: u16 = 1;
pub const PTYPE_IPV4: u16 = 0x0800;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

mod field {
    use std::ops::Range;

    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// A view of an ARP packet (the Ethernet payload) in a byte buffer.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checking it; accessors panic if it is shorter than
    /// `PACKET_LEN`.
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps `buffer`, which must hold the 28 bytes of an Ethernet/IPv4 packet.
    /// Trailing bytes (the padding of a minimum-size frame) are allowed.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Malformed> {
        if buffer.as_ref().len() < PACKET_LEN {
            return Err(Malformed::Truncated);
        }
        Ok(Packet { buffer })
    }

    pub fn htype(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::HTYPE])
    }

    pub fn ptype(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::PTYPE])
    }

    pub fn hlen(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    pub fn plen(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    pub fn operation(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::OPER])
    }

    pub fn sender_mac(&self) -> [u8; 6] {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::SHA]);
        m
    }

    pub fn sender_ip(&self) -> [u8; 4] {
        let mut a = [0; 4];
        a.copy_from_slice(&self.buffer.as_ref()[field::SPA]);
        a
    }

    pub fn target_mac(&self) -> [u8; 6] {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::THA]);
        m
    }

    pub fn target_ip(&self) -> [u8; 4] {
        let mut a = [0; 4];
        a.copy_from_slice(&self.buffer.as_ref()[field::TPA]);
        a
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_fixed_header(&mut self, op: u16) {
        let b = self.buffer.as_mut();
        b[field::HTYPE].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
        b[field::PTYPE].copy_from_slice(&PTYPE_IPV4.to_be_bytes());
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
        b[field::OPER].copy_from_slice(&op.to_be_bytes());
    }

    fn set_addresses(&mut self, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) {
        let b = self.buffer.as_mut();
        b[field::SHA].copy_from_slice(&sha);
        b[field::SPA].copy_from_slice(&spa);
        b[field::THA].copy_from_slice(&tha);
        b[field::TPA].copy_from_slice(&tpa);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Request,
    Reply,
}

/// An Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub operation: Operation,
    pub sender_mac: [u8; 6],
    pub sender_ip: [u8; 4],
    pub target_mac: [u8; 6],
    pub target_ip: [u8; 4],
}

impl Repr {
    /// Reads an Ethernet/IPv4 request or reply; any other hardware or protocol type,
    /// address length or operation is `Malformed::Arp`.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Malformed> {
        if packet.htype() != HTYPE_ETHERNET
            || packet.ptype() != PTYPE_IPV4
            || packet.hlen() != 6
            || packet.plen() != 4
        {
            return Err(Malformed::Arp);
        }
        let operation = match packet.operation() {
            OP_REQUEST => Operation::Request,
            OP_REPLY => Operation::Reply,
            _ => return Err(Malformed::Arp),
        };
        Ok(Repr {
            operation,
            sender_mac: packet.sender_mac(),
            sender_ip: packet.sender_ip(),
            target_mac: packet.target_mac(),
            target_ip: packet.target_ip(),
        })
    }

    /// # Panics
    /// If the buffer is shorter than `PACKET_LEN`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_fixed_header(match self.operation {
            Operation::Request => OP_REQUEST,
            Operation::Reply => OP_REPLY,
        });
        packet.set_addresses(
            self.sender_mac,
            self.sender_ip,
            self.target_mac,
            self.target_ip,
        );
    }
}

fn read_u16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply from 10.0.0.1 (02:..:01) to 10.0.0.2 (02:..:02), as tcpdump shows it.
    const REPLY: [u8; PACKET_LEN] = [
        0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x02, // Ethernet, IPv4, reply
        0x02, 0, 0, 0, 0, 0x01, 10, 0, 0, 1, // sender
        0x02, 0, 0, 0, 0, 0x02, 10, 0, 0, 2, // target
    ];

    fn reply() -> Repr {
        Repr {
            operation: Operation::Reply,
            sender_mac: [2, 0, 0, 0, 0, 1],
            sender_ip: [10, 0, 0, 1],
            target_mac: [2, 0, 0, 0, 0, 2],
            target_ip: [10, 0, 0, 2],
        }
    }

    #[test]
    fn parse_reads_every_field() {
        let p = Packet::new_checked(&REPLY[..]).unwrap();
        assert_eq!(Repr::parse(&p), Ok(reply()));
    }

    #[test]
    fn emit_writes_what_parse_reads() {
        let mut buf = [0xffu8; PACKET_LEN];
        reply().emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, REPLY);
        let mut req = reply();
        req.operation = Operation::Request;
        req.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(
            Repr::parse(&Packet::new_checked(&buf[..]).unwrap()),
            Ok(req)
        );
    }

    #[test]
    fn padding_after_the_packet_is_allowed() {
        let mut padded = REPLY.to_vec();
        padded.extend_from_slice(&[0; 18]);
        let p = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(Repr::parse(&p), Ok(reply()));
    }

    #[test]
    fn short_or_foreign_packets_are_errors() {
        for len in 0..PACKET_LEN {
            assert_eq!(
                Packet::new_checked(&REPLY[..len]).err(),
                Some(Malformed::Truncated)
            );
        }
        // Hardware type, protocol type, lengths and operation each break it.
        for (at, value) in [(1, 6), (2, 0x86), (4, 8), (5, 16), (7, 3), (7, 0)] {
            let mut bad = REPLY;
            bad[at] = value;
            let p = Packet::new_checked(&bad[..]).unwrap();
            assert_eq!(Repr::parse(&p), Err(Malformed::Arp), "byte {at} = {value}");
        }
    }
}
