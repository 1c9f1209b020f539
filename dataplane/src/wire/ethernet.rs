//! Ethernet II frames (without FCS) and the 802.1Q tag.

use super::Malformed;

/// Destination, source and EtherType.
pub const HEADER_LEN: usize = 14;
/// TPID + TCI of one 802.1Q tag; the EtherType of the payload follows it.
pub const VLAN_TAG_LEN: usize = 4;
/// The shortest frame a NIC sends, FCS not counted (64 bytes on the wire).
pub const MIN_FRAME_LEN: usize = 60;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// 802.1ad service tag: the outer tag of a QinQ frame.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// The 12 bits of the TCI that carry the VLAN id.
pub const VID_MASK: u16 = 0x0fff;

mod field {
    use std::ops::Range;

    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const TAG_TCI: Range<usize> = 14..16;
    pub const TAG_ETHERTYPE: Range<usize> = 16..18;
}

/// Whether `ethertype` is the TPID of a VLAN tag rather than a payload type.
#[inline]
pub fn is_vlan_tpid(ethertype: u16) -> bool {
    ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ
}

/// One VLAN tag: its TPID and the fields of its TCI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanTag {
    /// ETHERTYPE_VLAN or ETHERTYPE_QINQ.
    pub tpid: u16,
    /// Priority code point (3 bits).
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN id (12 bits).
    pub vid: u16,
}

impl VlanTag {
    /// A plain 802.1Q tag for `vid`, priority 0.
    pub fn new(vid: u16) -> VlanTag {
        VlanTag {
            tpid: ETHERTYPE_VLAN,
            pcp: 0,
            dei: false,
            vid: vid & VID_MASK,
        }
    }

    fn from_tci(tpid: u16, tci: u16) -> VlanTag {
        VlanTag {
            tpid,
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
            vid: tci & VID_MASK,
        }
    }

    fn tci(&self) -> u16 {
        (u16::from(self.pcp & 0x7) << 13) | (u16::from(self.dei) << 12) | (self.vid & VID_MASK)
    }
}

/// A view of an Ethernet frame in a byte buffer.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` without checking it; accessors panic if it is shorter than 14
    /// bytes.
    pub fn new_unchecked(buffer: T) -> EthernetFrame<T> {
        EthernetFrame { buffer }
    }

    /// Wraps `buffer`, which must hold at least the 14-byte header.
    pub fn new_checked(buffer: T) -> Result<EthernetFrame<T>, Malformed> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Malformed::Truncated);
        }
        Ok(EthernetFrame { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn dst(&self) -> [u8; 6] {
        read_mac(&self.buffer.as_ref()[field::DST])
    }

    pub fn src(&self) -> [u8; 6] {
        read_mac(&self.buffer.as_ref()[field::SRC])
    }

    /// The EtherType at offset 12: a VLAN TPID for a tagged frame.
    pub fn ethertype(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::ETHERTYPE])
    }

    /// Everything after the 14-byte header (for a tagged frame, starting with the
    /// tag's TCI).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// The outer VLAN tag and the EtherType that follows it, or None for an untagged
    /// frame. A tag cut by the end of the frame is `Malformed::Truncated`.
    pub fn vlan_tag(&self) -> Result<Option<(VlanTag, u16)>, Malformed> {
        let tpid = self.ethertype();
        if !is_vlan_tpid(tpid) {
            return Ok(None);
        }
        let data = self.buffer.as_ref();
        let tci = data.get(field::TAG_TCI).ok_or(Malformed::Truncated)?;
        let inner = data.get(field::TAG_ETHERTYPE).ok_or(Malformed::Truncated)?;
        Ok(Some((
            VlanTag::from_tci(tpid, read_u16(tci)),
            read_u16(inner),
        )))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&mac);
    }

    pub fn set_src(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&mac);
    }

    pub fn set_ethertype(&mut self, ethertype: u16) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&ethertype.to_be_bytes());
    }

    /// Writes `tag` at offset 12 followed by `inner_ethertype`.
    ///
    /// # Panics
    /// If the buffer is shorter than 18 bytes.
    pub fn set_vlan_tag(&mut self, tag: VlanTag, inner_ethertype: u16) {
        self.set_ethertype(tag.tpid);
        let data = self.buffer.as_mut();
        data[field::TAG_TCI].copy_from_slice(&tag.tci().to_be_bytes());
        data[field::TAG_ETHERTYPE].copy_from_slice(&inner_ethertype.to_be_bytes());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// An Ethernet header with at most one VLAN tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub vlan: Option<VlanTag>,
    /// EtherType of the payload (after the tag when there is one).
    pub ethertype: u16,
}

impl Repr {
    /// Reads the header and the outer tag if any; a second tag is left in the payload
    /// (`ethertype` is then its TPID).
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Result<Repr, Malformed> {
        let (vlan, ethertype) = match frame.vlan_tag()? {
            Some((tag, inner)) => (Some(tag), inner),
            None => (None, frame.ethertype()),
        };
        Ok(Repr {
            dst: frame.dst(),
            src: frame.src(),
            vlan,
            ethertype,
        })
    }

    /// 14, or 18 with a tag: where the payload starts.
    pub fn header_len(&self) -> usize {
        match self.vlan {
            Some(_) => HEADER_LEN + VLAN_TAG_LEN,
            None => HEADER_LEN,
        }
    }

    /// # Panics
    /// If the buffer is shorter than `header_len()`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut EthernetFrame<T>) {
        frame.set_dst(self.dst);
        frame.set_src(self.src);
        match self.vlan {
            Some(tag) => frame.set_vlan_tag(tag, self.ethertype),
            None => frame.set_ethertype(self.ethertype),
        }
    }
}

fn read_mac(bytes: &[u8]) -> [u8; 6] {
    let mut mac = [0; 6];
    mac.copy_from_slice(bytes);
    mac
}

fn read_u16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNTAGGED: [u8; 16] = [
        0x02, 0, 0, 0, 0, 0x01, // dst
        0x02, 0, 0, 0, 0, 0x02, // src
        0x08, 0x06, // ARP
        0xaa, 0xbb, // payload
    ];

    const TAGGED: [u8; 18] = [
        0x02, 0, 0, 0, 0, 0x01, // dst
        0x02, 0, 0, 0, 0, 0x02, // src
        0x81, 0x00, // TPID
        0xb0, 0x64, // PCP 5, DEI 1, VID 100
        0x86, 0xdd, // IPv6
    ];

    #[test]
    fn reads_untagged_header() {
        let frame = EthernetFrame::new_checked(&UNTAGGED[..]).unwrap();
        assert_eq!(frame.dst(), [0x02, 0, 0, 0, 0, 0x01]);
        assert_eq!(frame.src(), [0x02, 0, 0, 0, 0, 0x02]);
        assert_eq!(frame.ethertype(), ETHERTYPE_ARP);
        assert_eq!(frame.payload(), &[0xaa, 0xbb]);
        assert_eq!(frame.vlan_tag(), Ok(None));
        let repr = Repr::parse(&frame).unwrap();
        assert_eq!(repr.vlan, None);
        assert_eq!(repr.ethertype, ETHERTYPE_ARP);
        assert_eq!(repr.header_len(), 14);
    }

    #[test]
    fn reads_vlan_tag() {
        let frame = EthernetFrame::new_checked(&TAGGED[..]).unwrap();
        let tag = VlanTag {
            tpid: ETHERTYPE_VLAN,
            pcp: 5,
            dei: true,
            vid: 100,
        };
        assert_eq!(frame.vlan_tag(), Ok(Some((tag, ETHERTYPE_IPV6))));
        let repr = Repr::parse(&frame).unwrap();
        assert_eq!(repr.vlan, Some(tag));
        assert_eq!(repr.ethertype, ETHERTYPE_IPV6);
        assert_eq!(repr.header_len(), 18);
    }

    #[test]
    fn accepts_qinq_outer_tpid() {
        let mut bytes = TAGGED;
        bytes[12..14].copy_from_slice(&ETHERTYPE_QINQ.to_be_bytes());
        let frame = EthernetFrame::new_checked(&bytes[..]).unwrap();
        let (tag, inner) = frame.vlan_tag().unwrap().unwrap();
        assert_eq!(
            (tag.tpid, tag.vid, inner),
            (ETHERTYPE_QINQ, 100, ETHERTYPE_IPV6)
        );
    }

    #[test]
    fn short_frames_are_truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                EthernetFrame::new_checked(&UNTAGGED[..len]).err(),
                Some(Malformed::Truncated)
            );
        }
        for len in HEADER_LEN..TAGGED.len() {
            let frame = EthernetFrame::new_checked(&TAGGED[..len]).unwrap();
            assert_eq!(frame.vlan_tag(), Err(Malformed::Truncated));
            assert_eq!(Repr::parse(&frame), Err(Malformed::Truncated));
        }
    }

    #[test]
    fn emit_round_trips() {
        for bytes in [&UNTAGGED[..14], &TAGGED[..]] {
            let repr = Repr::parse(&EthernetFrame::new_checked(bytes).unwrap()).unwrap();
            let mut out = vec![0; repr.header_len()];
            repr.emit(&mut EthernetFrame::new_unchecked(&mut out[..]));
            assert_eq!(out, bytes);
        }
    }

    #[test]
    fn setters_write_fields() {
        let mut bytes = [0u8; 20];
        let mut frame = EthernetFrame::new_checked(&mut bytes[..]).unwrap();
        frame.set_dst([1, 2, 3, 4, 5, 6]);
        frame.set_src([7, 8, 9, 10, 11, 12]);
        frame.set_ethertype(ETHERTYPE_IPV4);
        frame.payload_mut()[0] = 0x45;
        assert_eq!(frame.dst(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(frame.src(), [7, 8, 9, 10, 11, 12]);
        assert_eq!(frame.ethertype(), ETHERTYPE_IPV4);
        frame.set_vlan_tag(VlanTag::new(4095), ETHERTYPE_IPV4);
        assert_eq!(
            frame.vlan_tag(),
            Ok(Some((VlanTag::new(4095), ETHERTYPE_IPV4)))
        );
        assert_eq!(
            frame.into_inner()[12..18],
            [0x81, 0x00, 0x0f, 0xff, 0x08, 0x00]
        );
    }
}
