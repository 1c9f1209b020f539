//! IPv6 fixed headers (RFC 8200) and the walk over the extension headers that may sit
//! between them and TCP/UDP.

use super::Malformed;

/// The fixed header.
pub const HEADER_LEN: usize = 40;
/// The hop limit the builders write.
pub const DEFAULT_HOP_LIMIT: u8 = 64;

/// Next-header values of the extension headers the walk skips, and two it stops at.
pub const NEXT_HOP_BY_HOP: u8 = 0;
pub const NEXT_ROUTING: u8 = 43;
pub const NEXT_FRAGMENT: u8 = 44;
/// ESP encrypts what follows: the walk stops there (not TCP/UDP as far as we know).
pub const NEXT_ESP: u8 = 50;
pub const NEXT_AH: u8 = 51;
pub const NEXT_NONE: u8 = 59;
pub const NEXT_DEST_OPTS: u8 = 60;

/// How many extension headers the walk skips before it gives up. Real traffic has at
/// most a few; a long chain is an attack on whoever walks it.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// Length of the fragment header (it has no length field).
pub const FRAGMENT_HEADER_LEN: usize = 8;

mod field {
    use std::ops::Range;

    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// A view of an IPv6 packet in a byte buffer.
///
/// The buffer may be longer than the packet (Ethernet padding); `payload` ends where
/// the payload length says.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checking it; accessors panic if it is shorter than the
    /// header or the payload length claims.
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps `buffer` after `check_len`: after that no accessor can panic.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Malformed> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Version 6, header and payload within the buffer. A buffer cut short is
    /// `Truncated`, a wrong version `Ipv6Header`.
    pub fn check_len(&self) -> Result<(), Malformed> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(Malformed::Truncated);
        }
        if self.version() != 6 {
            return Err(Malformed::Ipv6Header);
        }
        if HEADER_LEN + usize::from(self.payload_len()) > data.len() {
            return Err(Malformed::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn first_word(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VER_TC_FLOW];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    pub fn traffic_class(&self) -> u8 {
        (self.first_word() >> 20) as u8
    }

    /// The 20-bit flow label.
    pub fn flow_label(&self) -> u32 {
        self.first_word() & 0x000f_ffff
    }

    /// Bytes after the fixed header, extension headers included.
    pub fn payload_len(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::LENGTH];
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    pub fn src_addr(&self) -> [u8; 16] {
        read_addr(&self.buffer.as_ref()[field::SRC])
    }

    pub fn dst_addr(&self) -> [u8; 16] {
        read_addr(&self.buffer.as_ref()[field::DST])
    }

    /// Everything after the fixed header up to the payload length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }

    /// Walks the extension headers of the payload; see `skip_extension_headers`.
    pub fn upper_layer(&self) -> Result<UpperLayer, Malformed> {
        skip_extension_headers(self.next_header(), self.payload())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes version 6 with the traffic class and flow label (low 20 bits).
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let word = (6 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&word.to_be_bytes());
    }

    pub fn set_payload_len(&mut self, value: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&value.to_be_bytes());
    }

    pub fn set_next_header(&mut self, value: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = value;
    }

    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
    }

    pub fn set_src_addr(&mut self, addr: [u8; 16]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr);
    }

    pub fn set_dst_addr(&mut self, addr: [u8; 16]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// The fixed header's fields. Extension headers are part of the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub next_header: u8,
    /// Bytes after the fixed header.
    pub payload_len: usize,
    pub hop_limit: u8,
    pub traffic_class: u8,
    /// 20 bits.
    pub flow_label: u32,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Malformed> {
        packet.check_len()?;
        Ok(Repr {
            src: packet.src_addr(),
            dst: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        })
    }

    pub fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The payload length field; None when it does not fit 16 bits (jumbograms are
    /// not supported).
    pub fn payload_len_field(&self) -> Option<u16> {
        u16::try_from(self.payload_len).ok()
    }

    /// Writes the 40-byte header. A payload too long for the field is written as
    /// 65535; callers check `payload_len_field` first.
    ///
    /// # Panics
    /// If the buffer is shorter than 40 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_version_tc_flow(self.traffic_class, self.flow_label);
        packet.set_payload_len(self.payload_len_field().unwrap_or(u16::MAX));
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src);
        packet.set_dst_addr(self.dst);
    }
}

/// A view of the fragment header (RFC 8200 section 4.5).
#[derive(Debug, Clone)]
pub struct FragmentHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> FragmentHeader<T> {
    pub fn new_unchecked(buffer: T) -> FragmentHeader<T> {
        FragmentHeader { buffer }
    }

    /// Wraps `buffer`, which must hold the 8-byte header.
    pub fn new_checked(buffer: T) -> Result<FragmentHeader<T>, Malformed> {
        if buffer.as_ref().len() < FRAGMENT_HEADER_LEN {
            return Err(Malformed::Truncated);
        }
        Ok(FragmentHeader { buffer })
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// Fragment offset in bytes (the field counts 8-byte units).
    pub fn frag_offset(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[2], b[3]]) & 0xfff8
    }

    pub fn more_frags(&self) -> bool {
        self.buffer.as_ref()[3] & 0x01 != 0
    }

    pub fn ident(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> FragmentHeader<T> {
    pub fn set_next_header(&mut self, value: u8) {
        self.buffer.as_mut()[0] = value;
    }

    /// Sets the offset in bytes (rounded down to 8-byte units) and the M flag; clears
    /// the reserved bits.
    pub fn set_frag(&mut self, offset: u16, more_frags: bool) {
        let word = (offset & 0xfff8) | u16::from(more_frags);
        let b = self.buffer.as_mut();
        b[1] = 0;
        b[2..4].copy_from_slice(&word.to_be_bytes());
    }

    pub fn set_ident(&mut self, value: u32) {
        self.buffer.as_mut()[4..8].copy_from_slice(&value.to_be_bytes());
    }
}

/// The fields of a fragment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentRepr {
    pub next_header: u8,
    /// Offset in bytes.
    pub frag_offset: u16,
    pub more_frags: bool,
    pub ident: u32,
}

impl FragmentRepr {
    pub fn parse<T: AsRef<[u8]>>(header: &FragmentHeader<T>) -> Result<FragmentRepr, Malformed> {
        if header.buffer.as_ref().len() < FRAGMENT_HEADER_LEN {
            return Err(Malformed::Truncated);
        }
        Ok(FragmentRepr {
            next_header: header.next_header(),
            frag_offset: header.frag_offset(),
            more_frags: header.more_frags(),
            ident: header.ident(),
        })
    }

    /// # Panics
    /// If the buffer is shorter than 8 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, header: &mut FragmentHeader<T>) {
        header.set_next_header(self.next_header);
        header.set_frag(self.frag_offset, self.more_frags);
        header.set_ident(self.ident);
    }

    /// Whether this is a fragment other than the first: no L4 header in it.
    pub fn is_non_first(&self) -> bool {
        self.frag_offset != 0
    }
}

/// Where the extension headers end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpperLayer {
    /// Next-header value of what follows the last header skipped (TCP, UDP, ICMPv6,
    /// ESP, No Next Header, ...).
    pub protocol: u8,
    /// Offset of it within the IPv6 payload.
    pub offset: usize,
    /// The fragment header, if the chain has one. For a non-first fragment the walk
    /// stops right after it: what follows is the middle of a packet.
    pub fragment: Option<FragmentRepr>,
}

/// Whether `next_header` is one the walk skips.
#[inline]
pub fn is_extension_header(next_header: u8) -> bool {
    matches!(
        next_header,
        NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_FRAGMENT | NEXT_AH | NEXT_DEST_OPTS
    )
}

/// Skips Hop-by-Hop, Routing, Fragment, Destination Options and AH headers at the
/// start of `payload`, where `next_header` is the fixed header's field.
///
/// A header cut by the end of the payload, or more than `MAX_EXTENSION_HEADERS` of
/// them, is `Malformed::ExtensionHeader`. Inline and allocation-free: `frame::parse`
/// calls it per packet, and the common case (TCP/UDP right away) is one compare.
#[inline]
pub fn skip_extension_headers(
    mut next_header: u8,
    payload: &[u8],
) -> Result<UpperLayer, Malformed> {
    let mut offset = 0;
    let mut fragment = None;
    let mut walked = 0;
    while is_extension_header(next_header) {
        if walked == MAX_EXTENSION_HEADERS {
            return Err(Malformed::ExtensionHeader);
        }
        walked += 1;
        let rest = payload.get(offset..).unwrap_or(&[]);
        let len = if next_header == NEXT_FRAGMENT {
            let h: &[u8; FRAGMENT_HEADER_LEN] =
                rest.first_chunk().ok_or(Malformed::ExtensionHeader)?;
            let repr = FragmentRepr {
                next_header: h[0],
                frag_offset: u16::from_be_bytes([h[2], h[3]]) & 0xfff8,
                more_frags: h[3] & 0x01 != 0,
                ident: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            };
            fragment = Some(repr);
            next_header = repr.next_header;
            if repr.is_non_first() {
                // What follows is the middle of a packet: nothing more to walk.
                return Ok(UpperLayer {
                    protocol: next_header,
                    offset: offset + FRAGMENT_HEADER_LEN,
                    fragment,
                });
            }
            FRAGMENT_HEADER_LEN
        } else {
            let h: &[u8; 2] = rest.first_chunk().ok_or(Malformed::ExtensionHeader)?;
            let len = if next_header == NEXT_AH {
                // AH counts 4-byte words, minus 2 (RFC 4302).
                (usize::from(h[1]) + 2) * 4
            } else {
                // The others count 8-byte units after the first 8 bytes.
                (usize::from(h[1]) + 1) * 8
            };
            if len > rest.len() {
                return Err(Malformed::ExtensionHeader);
            }
            next_header = h[0];
            len
        };
        offset += len;
    }
    Ok(UpperLayer {
        protocol: next_header,
        offset,
        fragment,
    })
}

fn read_addr(bytes: &[u8]) -> [u8; 16] {
    let mut addr = [0; 16];
    addr.copy_from_slice(bytes);
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    /// UDP from 2001:db8::1 port 5353 to 2001:db8::2 port 53, traffic class 0x2e, flow
    /// label 0x12345, hop limit 255, four bytes of data.
    const PACKET: [u8; 52] = [
        0x62, 0xe1, 0x23, 0x45, // version 6, traffic class 0x2e, flow label 0x12345
        0x00, 0x0c, 0x11, 0xff, // payload length 12, UDP, hop limit 255
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // src
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // dst
        0x14, 0xe9, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, // UDP header
        0xde, 0xad, 0xbe, 0xef, // data
    ];

    fn addr(last: u8) -> [u8; 16] {
        let mut a = [0; 16];
        a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        a[15] = last;
        a
    }

    /// Hop-by-Hop (8 bytes) -> Routing (24) -> Destination Options (8) -> AH (24) ->
    /// UDP: 64 bytes of extension headers.
    fn chain() -> Vec<u8> {
        let mut c = Vec::new();
        c.extend([NEXT_ROUTING, 0, 1, 4, 0, 0, 0, 0]); // PadN
        c.extend([NEXT_DEST_OPTS, 2, 0, 1]); // routing type 0, 1 segment left
        c.extend([0; 20]);
        c.extend([NEXT_AH, 0, 1, 4, 0, 0, 0, 0]);
        c.extend([17, 4, 0, 0]); // AH: 6 words
        c.extend([0xaa; 20]);
        c
    }

    #[test]
    fn reads_known_header() {
        let packet = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.traffic_class(), 0x2e);
        assert_eq!(packet.flow_label(), 0x12345);
        assert_eq!(packet.payload_len(), 12);
        assert_eq!(packet.next_header(), 17);
        assert_eq!(packet.hop_limit(), 255);
        assert_eq!(packet.src_addr(), addr(1));
        assert_eq!(packet.dst_addr(), addr(2));
        assert_eq!(packet.payload(), &PACKET[40..]);
        let upper = packet.upper_layer().unwrap();
        assert_eq!(
            upper,
            UpperLayer {
                protocol: 17,
                offset: 0,
                fragment: None
            }
        );
    }

    #[test]
    fn padding_after_payload_is_not_payload() {
        let mut bytes = PACKET.to_vec();
        bytes.extend([0; 8]);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.payload().len(), 12);
    }

    #[test]
    fn every_truncation_is_an_error() {
        for len in 0..PACKET.len() {
            assert_eq!(
                Packet::new_checked(&PACKET[..len]).err(),
                Some(Malformed::Truncated),
                "len {len}"
            );
        }
    }

    #[test]
    fn bad_fields_are_rejected() {
        let mut bytes = PACKET;
        bytes[0] = 0x42;
        assert_eq!(
            Packet::new_checked(&bytes[..]).err(),
            Some(Malformed::Ipv6Header)
        );
        let mut bytes = PACKET;
        bytes[5] = 13;
        assert_eq!(
            Packet::new_checked(&bytes[..]).err(),
            Some(Malformed::Truncated)
        );
        bytes[4] = 0xff;
        assert_eq!(
            Packet::new_checked(&bytes[..]).err(),
            Some(Malformed::Truncated)
        );
    }

    #[test]
    fn emit_round_trips() {
        let repr = Repr::parse(&Packet::new_checked(&PACKET[..]).unwrap()).unwrap();
        assert_eq!(repr.payload_len, 12);
        let mut out = PACKET;
        out[..40].fill(0);
        repr.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, PACKET);

        let repr = Repr {
            src: addr(9),
            dst: addr(10),
            next_header: NEXT_FRAGMENT,
            payload_len: 0,
            hop_limit: 1,
            traffic_class: 0xff,
            flow_label: 0xf_ffff,
        };
        let mut out = [0; 40];
        repr.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(
            Repr::parse(&Packet::new_checked(&out[..]).unwrap()),
            Ok(repr)
        );
    }

    #[test]
    fn setters_write_fields() {
        let mut bytes = PACKET;
        let mut packet = Packet::new_checked(&mut bytes[..]).unwrap();
        packet.set_next_header(6);
        packet.set_hop_limit(7);
        packet.payload_mut()[0] = 0x99;
        assert_eq!((packet.next_header(), packet.hop_limit()), (6, 7));
        assert_eq!(packet.into_inner()[40], 0x99);
        assert_eq!(
            Repr {
                payload_len: 65_536,
                ..Repr::parse(&Packet::new_unchecked(&PACKET[..])).unwrap()
            }
            .payload_len_field(),
            None
        );
    }

    #[test]
    fn skips_the_common_extension_headers() {
        let c = chain();
        assert_eq!(
            skip_extension_headers(NEXT_HOP_BY_HOP, &c),
            Ok(UpperLayer {
                protocol: 17,
                offset: 64,
                fragment: None
            })
        );
    }

    #[test]
    fn every_truncation_of_the_chain_is_an_error() {
        let c = chain();
        for len in 0..c.len() {
            assert_eq!(
                skip_extension_headers(NEXT_HOP_BY_HOP, &c[..len]),
                Err(Malformed::ExtensionHeader),
                "len {len}"
            );
        }
    }

    #[test]
    fn first_fragment_is_walked_through() {
        // Fragment header: UDP next, offset 0, M set, ident 0x01020304.
        let bytes = [17, 0, 0x00, 0x01, 1, 2, 3, 4, 0x14, 0xe9];
        let upper = skip_extension_headers(NEXT_FRAGMENT, &bytes).unwrap();
        assert_eq!(upper.protocol, 17);
        assert_eq!(upper.offset, 8);
        let frag = upper.fragment.unwrap();
        assert!(frag.more_frags && !frag.is_non_first());
        assert_eq!(frag.ident, 0x0102_0304);
    }

    #[test]
    fn non_first_fragment_stops_the_walk() {
        // Offset 1480 bytes (185 units), last fragment; what follows would look like a
        // Hop-by-Hop header but is data.
        let bytes = [NEXT_DEST_OPTS, 0, 0x05, 0xc8, 0, 0, 0, 9, 0xff];
        let upper = skip_extension_headers(NEXT_DEST_OPTS, &{
            let mut b = vec![NEXT_FRAGMENT, 0, 1, 4, 0, 0, 0, 0];
            b.extend(bytes);
            b
        })
        .unwrap();
        assert_eq!(upper.offset, 16);
        assert_eq!(upper.protocol, NEXT_DEST_OPTS);
        let frag = upper.fragment.unwrap();
        assert_eq!(frag.frag_offset, 1480);
        assert!(frag.is_non_first() && !frag.more_frags);
    }

    #[test]
    fn chain_length_is_capped() {
        let mut c = Vec::new();
        for _ in 0..MAX_EXTENSION_HEADERS - 1 {
            c.extend([NEXT_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        }
        c.extend([6, 0, 1, 4, 0, 0, 0, 0]);
        let upper = skip_extension_headers(NEXT_DEST_OPTS, &c).unwrap();
        assert_eq!(
            (upper.protocol, upper.offset),
            (6, 8 * MAX_EXTENSION_HEADERS)
        );

        let mut longer = vec![NEXT_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0];
        longer.extend(&c);
        assert_eq!(
            skip_extension_headers(NEXT_DEST_OPTS, &longer),
            Err(Malformed::ExtensionHeader)
        );
    }

    #[test]
    fn esp_and_no_next_header_end_the_walk() {
        for last in [NEXT_ESP, NEXT_NONE, 58] {
            let c = [last, 0, 1, 4, 0, 0, 0, 0];
            let upper = skip_extension_headers(NEXT_HOP_BY_HOP, &c).unwrap();
            assert_eq!((upper.protocol, upper.offset), (last, 8));
        }
        // Nothing at all to walk.
        assert_eq!(skip_extension_headers(6, &[]).map(|u| u.offset), Ok(0));
    }

    #[test]
    fn fragment_header_view_round_trips() {
        let repr = FragmentRepr {
            next_header: 6,
            frag_offset: 2960,
            more_frags: true,
            ident: 0xdead_beef,
        };
        let mut bytes = [0xff; 8];
        repr.emit(&mut FragmentHeader::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, [6, 0, 0x0b, 0x91, 0xde, 0xad, 0xbe, 0xef]);
        let header = FragmentHeader::new_checked(&bytes[..]).unwrap();
        assert_eq!(FragmentRepr::parse(&header), Ok(repr));
        for len in 0..8 {
            assert_eq!(
                FragmentHeader::new_checked(&bytes[..len]).err(),
                Some(Malformed::Truncated)
            );
        }
    }
}
