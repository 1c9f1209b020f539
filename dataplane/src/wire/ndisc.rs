//! IPv6 Neighbour Discovery (RFC 4861): Neighbour Solicitation and Advertisement, the
//! ICMPv6 messages the device sends for its next hops and learns from, with their
//! link-layer address options. The view covers the ICMPv6 message (the IPv6 payload);
//! its checksum covers the IPv6 pseudo-header, so parse and emit take the addresses.

use super::checksum::{self, PseudoHeader};
use super::Malformed;

/// IPv6 next header of ICMPv6.
pub const NEXT_HEADER_ICMPV6: u8 = 58;
pub const TYPE_SOLICIT: u8 = 135;
pub const TYPE_ADVERT: u8 = 136;
/// Type, code, checksum, 4 bytes of flags/reserved, the 16-byte target.
pub const HEADER_LEN: usize = 24;
/// A source or target link-layer address option for Ethernet: 8 bytes.
pub const LL_OPTION_LEN: usize = 8;
const OPTION_SOURCE_LL: u8 = 1;
const OPTION_TARGET_LL: u8 = 2;
/// ND messages are sent with hop limit 255; anything less came through a router
/// (RFC 4861 7.1.1) and is not believed.
pub const HOP_LIMIT: u8 = 255;

const FLAG_ROUTER: u8 = 0x80;
const FLAG_SOLICITED: u8 = 0x40;
const FLAG_OVERRIDE: u8 = 0x20;

mod field {
    use std::ops::Range;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const FLAGS: usize = 4;
    pub const RESERVED: Range<usize> = 4..8;
    pub const TARGET: Range<usize> = 8..24;
    pub const OPTIONS: usize = 24;
}

/// A view of an NS or NA message in a byte buffer.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checking it; accessors panic if it is shorter than
    /// `HEADER_LEN`.
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps `buffer` (exactly the ICMPv6 message), which must hold the 24-byte
    /// header.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Malformed> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Malformed::Truncated);
        }
        Ok(Packet { buffer })
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    pub fn checksum(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The R, S and O bits of an advertisement (zero in a solicitation).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn target(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::TARGET]);
        a
    }

    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..]
    }

    /// Whether the checksum over the message and the pseudo-header of `src`, `dst`
    /// is right.
    pub fn verify_checksum(&self, src: [u8; 16], dst: [u8; 16]) -> bool {
        let data = self.buffer.as_ref();
        let pseudo = PseudoHeader::V6 { src, dst }.sum(NEXT_HEADER_ICMPV6, data.len());
        checksum::fold(pseudo + checksum::sum(data)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn fill_checksum(&mut self, src: [u8; 16], dst: [u8; 16]) {
        self.buffer.as_mut()[field::CHECKSUM].fill(0);
        let data = self.buffer.as_ref();
        let pseudo = PseudoHeader::V6 { src, dst }.sum(NEXT_HEADER_ICMPV6, data.len());
        let sum = checksum::checksum(pseudo + checksum::sum(data));
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    }
}

/// Flags of an advertisement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdvertFlags {
    pub router: bool,
    /// An answer to a solicitation: the sender confirms it is reachable.
    pub solicited: bool,
    /// The link-layer address is to replace a cached one.
    pub override_: bool,
}

impl AdvertFlags {
    fn from_byte(b: u8) -> AdvertFlags {
        AdvertFlags {
            router: b & FLAG_ROUTER != 0,
            solicited: b & FLAG_SOLICITED != 0,
            override_: b & FLAG_OVERRIDE != 0,
        }
    }

    fn byte(&self) -> u8 {
        (if self.router { FLAG_ROUTER } else { 0 })
            | (if self.solicited { FLAG_SOLICITED } else { 0 })
            | (if self.override_ { FLAG_OVERRIDE } else { 0 })
    }
}

/// A Neighbour Solicitation or Advertisement with its Ethernet link-layer option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repr {
    Solicit {
        target: [u8; 16],
        /// The sender's MAC (source link-layer address option).
        source_mac: Option<[u8; 6]>,
    },
    Advert {
        flags: AdvertFlags,
        target: [u8; 16],
        /// The target's MAC (target link-layer address option).
        target_mac: Option<[u8; 6]>,
    },
}

impl Repr {
    /// Reads an NS or NA sent from `src` to `dst`: code 0, a right checksum, options
    /// that each have a non-zero length and fit; any other ICMPv6 type, or a message
    /// failing those checks, is `Malformed::Ndisc`.
    pub fn parse<T: AsRef<[u8]>>(
        packet: &Packet<T>,
        src: [u8; 16],
        dst: [u8; 16],
    ) -> Result<Repr, Malformed> {
        let ll_option = match packet.msg_type() {
            TYPE_SOLICIT => OPTION_SOURCE_LL,
            TYPE_ADVERT => OPTION_TARGET_LL,
            _ => return Err(Malformed::Ndisc),
        };
        if packet.code() != 0 || !packet.verify_checksum(src, dst) {
            return Err(Malformed::Ndisc);
        }
        let mac = find_ll_option(packet.options(), ll_option)?;
        Ok(if packet.msg_type() == TYPE_SOLICIT {
            Repr::Solicit {
                target: packet.target(),
                source_mac: mac,
            }
        } else {
            Repr::Advert {
                flags: AdvertFlags::from_byte(packet.flags()),
                target: packet.target(),
                target_mac: mac,
            }
        })
    }

    /// Bytes `emit` writes: the header and the link-layer option if any.
    pub fn buffer_len(&self) -> usize {
        let has_option = match self {
            Repr::Solicit { source_mac, .. } => source_mac.is_some(),
            Repr::Advert { target_mac, .. } => target_mac.is_some(),
        };
        HEADER_LEN + if has_option { LL_OPTION_LEN } else { 0 }
    }

    /// Writes the message and its checksum for a packet from `src` to `dst`.
    ///
    /// # Panics
    /// If the buffer is not exactly `buffer_len()` bytes (the checksum covers all of
    /// it).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        src: [u8; 16],
        dst: [u8; 16],
    ) {
        assert_eq!(packet.buffer.as_ref().len(), self.buffer_len());
        let (msg_type, flags, target, option) = match *self {
            Repr::Solicit { target, source_mac } => (
                TYPE_SOLICIT,
                0,
                target,
                source_mac.map(|m| (OPTION_SOURCE_LL, m)),
            ),
            Repr::Advert {
                flags,
                target,
                target_mac,
            } => (
                TYPE_ADVERT,
                flags.byte(),
                target,
                target_mac.map(|m| (OPTION_TARGET_LL, m)),
            ),
        };
        let b = packet.buffer.as_mut();
        b[field::TYPE] = msg_type;
        b[field::CODE] = 0;
        b[field::RESERVED].fill(0);
        b[field::FLAGS] = flags;
        b[field::TARGET].copy_from_slice(&target);
        if let Some((kind, mac)) = option {
            let o = &mut b[field::OPTIONS..field::OPTIONS + LL_OPTION_LEN];
            o[0] = kind;
            o[1] = 1;
            o[2..].copy_from_slice(&mac);
        }
        packet.fill_checksum(src, dst);
    }
}

/// The MAC of the first link-layer option of `kind`; options with length 0 or that
/// run past the end make the message malformed (RFC 4861 4.6).
fn find_ll_option(mut options: &[u8], kind: u8) -> Result<Option<[u8; 6]>, Malformed> {
    let mut found = None;
    while !options.is_empty() {
        let [t, units, ..] = *options else {
            return Err(Malformed::Ndisc);
        };
        let len = usize::from(units) * 8;
        if len == 0 || len > options.len() {
            return Err(Malformed::Ndisc);
        }
        if t == kind && found.is_none() && len == LL_OPTION_LEN {
            let mut mac = [0; 6];
            mac.copy_from_slice(&options[2..8]);
            found = Some(mac);
        }
        options = &options[len..];
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const TARGET: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];

    fn emitted(repr: &Repr) -> Vec<u8> {
        let mut buf = vec![0xaa; repr.buffer_len()];
        repr.emit(&mut Packet::new_unchecked(&mut buf[..]), SRC, DST);
        buf
    }

    #[test]
    fn solicitation_round_trips_with_its_option() {
        let ns = Repr::Solicit {
            target: TARGET,
            source_mac: Some([2, 0, 0, 0, 0, 1]),
        };
        let buf = emitted(&ns);
        assert_eq!(buf.len(), 32);
        assert_eq!(&buf[..2], &[135, 0]);
        assert_eq!(&buf[24..32], &[1, 1, 2, 0, 0, 0, 0, 1]);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Repr::parse(&p, SRC, DST), Ok(ns));
    }

    #[test]
    fn advertisement_round_trips_with_and_without_option() {
        for mac in [Some([2, 0, 0, 0, 0, 9]), None] {
            let na = Repr::Advert {
                flags: AdvertFlags {
                    router: true,
                    solicited: true,
                    override_: false,
                },
                target: TARGET,
                target_mac: mac,
            };
            let buf = emitted(&na);
            assert_eq!(buf[4], 0xc0);
            let p = Packet::new_checked(&buf[..]).unwrap();
            assert_eq!(Repr::parse(&p, SRC, DST), Ok(na));
        }
    }

    /// The checksum is the one `ping6`'s kernel would accept: verified against a sum
    /// computed independently over the pseudo-header and message.
    #[test]
    fn checksum_covers_the_pseudo_header() {
        let buf = emitted(&Repr::Solicit {
            target: TARGET,
            source_mac: None,
        });
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.verify_checksum(DST, DST), "another source");
        let mut bytes: Vec<u8> = Vec::new();
        bytes.extend_from_slice(&SRC);
        bytes.extend_from_slice(&DST);
        bytes.extend_from_slice(&(buf.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, NEXT_HEADER_ICMPV6]);
        bytes.extend_from_slice(&buf);
        assert_eq!(checksum::fold(checksum::sum(&bytes)), 0xffff);
    }

    #[test]
    fn damaged_messages_are_errors() {
        let good = emitted(&Repr::Advert {
            flags: AdvertFlags::default(),
            target: TARGET,
            target_mac: Some([2, 0, 0, 0, 0, 9]),
        });
        for len in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&good[..len]).err(),
                Some(Malformed::Truncated)
            );
        }
        let parse = |b: &[u8]| Repr::parse(&Packet::new_checked(b).unwrap(), SRC, DST);
        let mut bad = good.clone();
        bad[20] ^= 1;
        assert_eq!(parse(&bad), Err(Malformed::Ndisc), "checksum");
        // An echo request (128) is not ND, whatever its checksum.
        let mut echo = good.clone();
        echo[0] = 128;
        assert_eq!(parse(&echo), Err(Malformed::Ndisc));
        // Options: zero length, running past the end.
        for (units, cut) in [(0u8, 0usize), (2, 0), (1, 4)] {
            let mut b = good.clone();
            b[25] = units;
            b.truncate(b.len() - cut);
            let mut p = Packet::new_unchecked(&mut b[..]);
            p.fill_checksum(SRC, DST);
            assert_eq!(parse(&b), Err(Malformed::Ndisc), "units {units} cut {cut}");
        }
    }

    #[test]
    fn unknown_options_are_skipped() {
        let mut b = emitted(&Repr::Advert {
            flags: AdvertFlags::default(),
            target: TARGET,
            target_mac: Some([2, 0, 0, 0, 0, 9]),
        });
        // A nonce option (type 14, 8 bytes) in front of the link-layer option.
        let mut opts = vec![14, 1, 1, 2, 3, 4, 5, 6];
        opts.extend_from_slice(&b[24..]);
        b.truncate(24);
        b.extend_from_slice(&opts);
        Packet::new_unchecked(&mut b[..]).fill_checksum(SRC, DST);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(matches!(
            Repr::parse(&p, SRC, DST),
            Ok(Repr::Advert {
                target_mac: Some([2, 0, 0, 0, 0, 9]),
                ..
            })
        ));
    }
}
