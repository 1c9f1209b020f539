//! Whole-frame parse (Ethernet [802.1Q] IPv4|IPv6 TCP|UDP) into flow fields, and the
//! matching builder used by tests, benchmarks and the traffic simulator.

use super::checksum::PseudoHeader;
use super::{
    ethernet, ipv4, ipv6, tcp, tcp_flags, udp, Malformed, NotFlow, Unparsed, PROTO_TCP, PROTO_UDP,
};

/// What a flow lookup needs from a frame. Addresses are in network order; an IPv4
/// address sits in the first four bytes and the other twelve are zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameInfo {
    /// VLAN id of the (single) 802.1Q tag, 0 when untagged.
    pub vlan: u16,
    /// Offset of the IP header (14, or 18 with a tag).
    pub l3_offset: u16,
    pub v6: bool,
    /// PROTO_TCP or PROTO_UDP.
    pub proto: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
}

/// Reads the flow fields of `frame`. Never panics.
///
/// The hot path: one call per packet. Each header is bounds-checked once by taking a
/// fixed-size array of it, so the field reads after that need no checks; nothing is
/// allocated and no checksum is verified (the device forwards frames as they are).
///
/// Errors: a frame cut short of what its headers claim is `Truncated`; header fields
/// that contradict each other are the header's own variant. An L4 header that does not
/// fit the IP packet is `TcpHeader`/`UdpHeader`, not `Truncated`: the IP length says
/// the packet is complete. A non-first fragment is `NotFlow::Fragment` whatever its
/// protocol; a first fragment is a flow (its UDP length may exceed the fragment).
#[inline]
pub fn parse(frame: &[u8]) -> Result<FrameInfo, Unparsed> {
    match parse_plain_ipv4(frame) {
        Some(info) => Ok(info),
        None => parse_general(frame),
    }
}

/// The common case in a few checks: untagged IPv4 without options, not a fragment,
/// TCP or UDP whose header fits the packet. `None` sends the frame to the general
/// parser, which gives the same answer for every frame this one takes (a property
/// test checks it) and names what is wrong with the others.
#[inline(always)]
pub fn parse_plain_ipv4(frame: &[u8]) -> Option<FrameInfo> {
    const L3: usize = ethernet::HEADER_LEN;
    const L4: usize = L3 + ipv4::HEADER_LEN;
    // Every frame on a wire is at least 60 bytes: room for a TCP header.
    let h: &[u8; L4 + tcp::HEADER_LEN] = frame.first_chunk()?;
    let total_len = usize::from(be16(h[L3 + 2], h[L3 + 3]));
    // No options (IHL 5), neither more fragments nor an offset, within the frame.
    if h[12..15] != [0x08, 0x00, 0x45]
        || be16(h[L3 + 6], h[L3 + 7]) & 0x3fff != 0
        || total_len < ipv4::HEADER_LEN
        || L3 + total_len > frame.len()
    {
        return None;
    }
    let l4_len = total_len - ipv4::HEADER_LEN;
    let proto = h[L3 + 9];
    let tcp_flags = if proto == PROTO_TCP {
        let header_len = usize::from(h[L4 + 12] >> 4) * 4;
        if header_len < tcp::HEADER_LEN || header_len > l4_len {
            return None;
        }
        h[L4 + 13]
    } else if proto == PROTO_UDP {
        let length = usize::from(be16(h[L4 + 4], h[L4 + 5]));
        if l4_len < udp::HEADER_LEN || length < udp::HEADER_LEN || length > l4_len {
            return None;
        }
        0
    } else {
        return None;
    };
    Some(FrameInfo {
        vlan: 0,
        l3_offset: L3 as u16,
        v6: false,
        proto,
        src: v4_in_16([h[L3 + 12], h[L3 + 13], h[L3 + 14], h[L3 + 15]]),
        dst: v4_in_16([h[L3 + 16], h[L3 + 17], h[L3 + 18], h[L3 + 19]]),
        sport: be16(h[L4], h[L4 + 1]),
        dport: be16(h[L4 + 2], h[L4 + 3]),
        tcp_flags,
    })
}

/// Every frame, every header kind: what `parse` does when the fast path declines.
#[inline(never)]
pub fn parse_general(frame: &[u8]) -> Result<FrameInfo, Unparsed> {
    let eth: &[u8; ethernet::HEADER_LEN] = frame.first_chunk().ok_or(TRUNCATED)?;
    let mut ethertype = be16(eth[12], eth[13]);
    let mut l3_offset = ethernet::HEADER_LEN;
    let mut vlan = 0;
    if ethernet::is_vlan_tpid(ethertype) {
        let tag: &[u8; ethernet::VLAN_TAG_LEN] = frame
            .get(ethernet::HEADER_LEN..)
            .and_then(|rest| rest.first_chunk())
            .ok_or(TRUNCATED)?;
        vlan = be16(tag[0], tag[1]) & ethernet::VID_MASK;
        ethertype = be16(tag[2], tag[3]);
        l3_offset += ethernet::VLAN_TAG_LEN;
    }
    // Cannot fail (the header and tag were there), but `get` keeps it panic-free.
    let l3 = frame.get(l3_offset..).unwrap_or(&[]);
    let mut info = FrameInfo {
        vlan,
        // At most 18.
        l3_offset: l3_offset as u16,
        ..FrameInfo::default()
    };
    // A second tag (QinQ) also lands here: the device keys on one VLAN only.
    let (proto, l4, first_fragment) = match ethertype {
        ethernet::ETHERTYPE_IPV4 => parse_ipv4(l3, &mut info)?,
        ethernet::ETHERTYPE_IPV6 => parse_ipv6(l3, &mut info)?,
        _ => return Err(Unparsed::NotFlow(NotFlow::NotIp)),
    };
    info.proto = proto;
    if proto == PROTO_TCP {
        let tcp: &[u8; tcp::HEADER_LEN] = l4.first_chunk().ok_or(TCP_HEADER)?;
        let header_len = usize::from(tcp[12] >> 4) * 4;
        if header_len < tcp::HEADER_LEN || header_len > l4.len() {
            return Err(TCP_HEADER);
        }
        info.sport = be16(tcp[0], tcp[1]);
        info.dport = be16(tcp[2], tcp[3]);
        info.tcp_flags = tcp[13];
    } else {
        let udp: &[u8; udp::HEADER_LEN] = l4.first_chunk().ok_or(UDP_HEADER)?;
        let length = usize::from(be16(udp[4], udp[5]));
        // A first fragment holds only the start of the datagram the length covers.
        if length < udp::HEADER_LEN || (length > l4.len() && !first_fragment) {
            return Err(UDP_HEADER);
        }
        info.sport = be16(udp[0], udp[1]);
        info.dport = be16(udp[2], udp[3]);
    }
    Ok(info)
}

const TRUNCATED: Unparsed = Unparsed::Malformed(Malformed::Truncated);
const TCP_HEADER: Unparsed = Unparsed::Malformed(Malformed::TcpHeader);
const UDP_HEADER: Unparsed = Unparsed::Malformed(Malformed::UdpHeader);

/// Reads an IPv4 header into `info`; returns the protocol (TCP or UDP), the L4 bytes
/// up to the total length, and whether this is a first fragment with more to come.
#[inline(always)]
fn parse_ipv4<'a>(ip: &'a [u8], info: &mut FrameInfo) -> Result<(u8, &'a [u8], bool), Unparsed> {
    let h: &[u8; ipv4::HEADER_LEN] = ip.first_chunk().ok_or(TRUNCATED)?;
    let header_len = usize::from(h[0] & 0x0f) * 4;
    if h[0] >> 4 != 4 || header_len < ipv4::HEADER_LEN {
        return Err(Unparsed::Malformed(Malformed::Ipv4Header));
    }
    let total_len = usize::from(be16(h[2], h[3]));
    if total_len < header_len {
        return Err(Unparsed::Malformed(Malformed::Ipv4Header));
    }
    // Also covers the options, since total_len >= header_len.
    let l4 = ip.get(header_len..total_len).ok_or(TRUNCATED)?;
    let flags_offset = be16(h[6], h[7]);
    if flags_offset & 0x1fff != 0 {
        return Err(Unparsed::NotFlow(NotFlow::Fragment));
    }
    let proto = h[9];
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Err(Unparsed::NotFlow(NotFlow::NotTcpUdp));
    }
    info.src[..4].copy_from_slice(&h[12..16]);
    info.dst[..4].copy_from_slice(&h[16..20]);
    Ok((proto, l4, flags_offset & 0x2000 != 0))
}

/// Reads an IPv6 header and walks its extension headers; returns what `parse_ipv4`
/// does.
#[inline(always)]
fn parse_ipv6<'a>(ip: &'a [u8], info: &mut FrameInfo) -> Result<(u8, &'a [u8], bool), Unparsed> {
    let h: &[u8; ipv6::HEADER_LEN] = ip.first_chunk().ok_or(TRUNCATED)?;
    if h[0] >> 4 != 6 {
        return Err(Unparsed::Malformed(Malformed::Ipv6Header));
    }
    let end = ipv6::HEADER_LEN + usize::from(be16(h[4], h[5]));
    let payload = ip.get(ipv6::HEADER_LEN..end).ok_or(TRUNCATED)?;
    let upper = ipv6::skip_extension_headers(h[6], payload).map_err(Unparsed::Malformed)?;
    let mut more_frags = false;
    if let Some(fragment) = upper.fragment {
        if fragment.is_non_first() {
            return Err(Unparsed::NotFlow(NotFlow::Fragment));
        }
        more_frags = fragment.more_frags;
    }
    if upper.protocol != PROTO_TCP && upper.protocol != PROTO_UDP {
        return Err(Unparsed::NotFlow(NotFlow::NotTcpUdp));
    }
    info.v6 = true;
    info.src.copy_from_slice(&h[8..24]);
    info.dst.copy_from_slice(&h[24..40]);
    // The walk stays within the payload; `get` keeps that panic-free regardless.
    let l4 = payload.get(upper.offset..).unwrap_or(&[]);
    Ok((upper.protocol, l4, more_frags))
}

/// Where the TCP segment of a frame lies, for window tracking and for the checksums
/// of the packets that would change a session's state. Found again from the IP header
/// (the hot path's parse keeps only the flow fields), only for TCP packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpFrame {
    pub l3: usize,
    /// Start of the TCP header and end of the IP packet (Ethernet padding excluded).
    pub l4: usize,
    pub end: usize,
    pub v6: bool,
}

/// The TCP segment of a frame that `parse` took as a TCP flow, whose IP header starts
/// at `l3` (IPv6 when `v6`): what window tracking reads of every TCP packet.
pub fn tcp_segment(frame: &[u8], l3: usize, v6: bool) -> Option<tcp::Segment> {
    if v6 {
        tcp_segment_v6(frame, l3)
    } else {
        tcp_segment_v4(frame, l3)
    }
}

/// `tcp_segment` of an IPv4 frame, read in place in a few checks (the hot path's).
#[inline(always)]
pub fn tcp_segment_v4(frame: &[u8], l3: usize) -> Option<tcp::Segment> {
    let ip: &[u8; ipv4::HEADER_LEN] = frame.get(l3..)?.first_chunk()?;
    let l4 = l3 + usize::from(ip[0] & 0x0f) * 4;
    let end = l3 + usize::from(be16(ip[2], ip[3]));
    if end > frame.len() || ip[9] != PROTO_TCP {
        return None;
    }
    let h: &[u8; tcp::HEADER_LEN] = frame.get(l4..end)?.first_chunk()?;
    let header_len = usize::from(h[12] >> 4) * 4;
    if header_len < tcp::HEADER_LEN {
        return None;
    }
    let payload = (end - l4).checked_sub(header_len)?;
    let flags = h[13];
    let syn_fin = u32::from(flags & tcp_flags::SYN != 0) + u32::from(flags & tcp_flags::FIN != 0);
    Some(tcp::Segment {
        seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        ack: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        window: be16(h[14], h[15]),
        flags,
        len: payload as u32 + syn_fin,
    })
}

/// `tcp_segment` of an IPv6 frame: its headers walked (`TcpFrame::locate`).
pub fn tcp_segment_v6(frame: &[u8], l3: usize) -> Option<tcp::Segment> {
    TcpFrame::locate(frame, l3, true)?.segment(frame)
}

impl TcpFrame {
    /// Finds the TCP segment of `frame`, whose IP header starts at `l3` (IPv6 when
    /// `v6`). None when the headers do not say where a whole TCP header is; `parse`
    /// has already refused such frames, so a flow packet always has one.
    pub fn locate(frame: &[u8], l3: usize, v6: bool) -> Option<TcpFrame> {
        let ip = frame.get(l3..)?;
        let (l4, end, proto) = if v6 {
            let h: &[u8; ipv6::HEADER_LEN] = ip.first_chunk()?;
            let end = ipv6::HEADER_LEN + usize::from(be16(h[4], h[5]));
            let upper = ipv6::skip_extension_headers(h[6], ip.get(ipv6::HEADER_LEN..end)?).ok()?;
            (ipv6::HEADER_LEN + upper.offset, end, upper.protocol)
        } else {
            let h: &[u8; ipv4::HEADER_LEN] = ip.first_chunk()?;
            let header_len = usize::from(h[0] & 0x0f) * 4;
            (header_len, usize::from(be16(h[2], h[3])), h[9])
        };
        let tcp = TcpFrame {
            l3,
            l4: l3 + l4,
            end: l3 + end,
            v6,
        };
        let fits = proto == PROTO_TCP && tcp.l4 <= tcp.end && tcp.end <= frame.len();
        fits.then_some(tcp)
    }

    /// Sequence number, ack, window, flags and length of the segment.
    pub fn segment(&self, frame: &[u8]) -> Option<tcp::Segment> {
        tcp::Segment::of(frame.get(self.l4..self.end)?)
    }

    /// Whether the IPv4 header checksum (IPv6 has none) and the TCP checksum over the
    /// pseudo-header and the whole segment are right. A segment of a locally sent
    /// packet whose checksum a NIC was to fill in (checksum offload) is not right.
    pub fn checksums_ok(&self, frame: &[u8]) -> bool {
        let (Some(ip), Some(l4)) = (frame.get(self.l3..self.end), frame.get(self.l4..self.end))
        else {
            return false;
        };
        let pseudo = if self.v6 {
            let Ok(h) = ipv6::Packet::new_checked(ip) else {
                return false;
            };
            PseudoHeader::V6 {
                src: h.src_addr(),
                dst: h.dst_addr(),
            }
        } else {
            let Ok(h) = ipv4::Packet::new_checked(ip) else {
                return false;
            };
            if !h.verify_checksum() {
                return false;
            }
            PseudoHeader::V4 {
                src: h.src_addr(),
                dst: h.dst_addr(),
            }
        };
        tcp::Packet::new_checked(l4).is_ok_and(|t| t.verify_checksum(&pseudo))
    }
}

/// An IPv4 address as the flow key holds it: the first four bytes, the rest zero.
#[inline(always)]
fn v4_in_16(a: [u8; 4]) -> [u8; 16] {
    u128::from(u32::from_le_bytes(a)).to_le_bytes()
}

#[inline(always)]
fn be16(hi: u8, lo: u8) -> u16 {
    u16::from_be_bytes([hi, lo])
}

/// A frame to build: what tests, the benchmark and the simulator send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// 0 = untagged.
    pub vlan: u16,
    pub v6: bool,
    pub proto: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    /// L4 payload length in bytes (filled with a repeating pattern).
    pub payload_len: usize,
}

/// Sequence and acknowledgement numbers `build` writes into TCP segments; the ack
/// only when the ACK flag is set. The side with the lower (address, port) sends
/// `BUILD_SEQ` and acknowledges `BUILD_ACK`, the other side the reverse: each side
/// acknowledges what the other sends, so built frames of both directions of a
/// session lie in each other's windows (window tracking, `flow::tcp_window`).
pub const BUILD_SEQ: u32 = 0x0100_0000;
pub const BUILD_ACK: u32 = 0x0200_0000;

/// The (seq, ack) `build` writes for `spec` (see `BUILD_SEQ`).
pub fn build_seq_ack(spec: &FrameSpec) -> (u32, u32) {
    if (spec.src, spec.sport) <= (spec.dst, spec.dport) {
        (BUILD_SEQ, BUILD_ACK)
    } else {
        (BUILD_ACK, BUILD_SEQ)
    }
}

/// The byte at `index` of a built payload: a repeating 0..=255 ramp, so a truncated or
/// shifted payload shows.
#[inline]
pub fn payload_byte(index: usize) -> u8 {
    index as u8
}

/// Length of the frame `build` would write for `spec` (padding included), or None if
/// the spec cannot be encoded: protocol other than TCP/UDP, VLAN id above 4095, or a
/// payload too long for the IP or UDP length fields.
pub fn built_len(spec: &FrameSpec) -> Option<usize> {
    Some(layout(spec)?.frame_len)
}

/// Where `build` puts each header.
struct Layout {
    l3_offset: usize,
    l4_offset: usize,
    l4_len: usize,
    l4_header_len: usize,
    /// End of the IP packet.
    ip_end: usize,
    /// `ip_end` padded to the Ethernet minimum.
    frame_len: usize,
}

fn layout(spec: &FrameSpec) -> Option<Layout> {
    let l4_header_len = match spec.proto {
        PROTO_TCP => tcp::HEADER_LEN,
        PROTO_UDP => udp::HEADER_LEN,
        _ => return None,
    };
    if spec.vlan > ethernet::VID_MASK {
        return None;
    }
    let l3_offset = if spec.vlan != 0 {
        ethernet::HEADER_LEN + ethernet::VLAN_TAG_LEN
    } else {
        ethernet::HEADER_LEN
    };
    let l3_header_len = if spec.v6 {
        ipv6::HEADER_LEN
    } else {
        ipv4::HEADER_LEN
    };
    let l4_len = spec.payload_len.checked_add(l4_header_len)?;
    // IPv4 counts its header in the total length, IPv6 does not; UDP's own length
    // field is 16 bits either way (no jumbograms).
    let limit = if spec.v6 {
        usize::from(u16::MAX)
    } else {
        usize::from(u16::MAX) - ipv4::HEADER_LEN
    };
    if l4_len > limit {
        return None;
    }
    let l4_offset = l3_offset + l3_header_len;
    let ip_end = l4_offset + l4_len;
    Some(Layout {
        l3_offset,
        l4_offset,
        l4_len,
        l4_header_len,
        ip_end,
        frame_len: ip_end.max(ethernet::MIN_FRAME_LEN),
    })
}

/// Writes the frame into `buf` with valid IPv4 header checksum and TCP/UDP checksums;
/// returns its length, or None if `buf` is too small or the spec cannot be encoded
/// (see `built_len`).
///
/// The frame: Ethernet, an 802.1Q tag when `spec.vlan != 0`, IPv4 (no options, DF,
/// TTL 64) or IPv6 (hop limit 64), TCP (data offset 5, `BUILD_SEQ`, `BUILD_ACK`,
/// window 65535) or UDP, `payload_len` bytes of `payload_byte`, then zero padding up
/// to 60 bytes as a NIC would add. Bytes of `buf` past the returned length are left
/// alone.
pub fn build(spec: &FrameSpec, buf: &mut [u8]) -> Option<usize> {
    let layout = layout(spec)?;
    let frame = buf.get_mut(..layout.frame_len)?;

    let (ethertype, pseudo) = if spec.v6 {
        let pseudo = PseudoHeader::V6 {
            src: spec.src,
            dst: spec.dst,
        };
        (ethernet::ETHERTYPE_IPV6, pseudo)
    } else {
        let pseudo = PseudoHeader::V4 {
            src: first4(&spec.src),
            dst: first4(&spec.dst),
        };
        (ethernet::ETHERTYPE_IPV4, pseudo)
    };
    let eth = ethernet::Repr {
        dst: spec.dst_mac,
        src: spec.src_mac,
        vlan: (spec.vlan != 0).then(|| ethernet::VlanTag::new(spec.vlan)),
        ethertype,
    };
    eth.emit(&mut ethernet::EthernetFrame::new_unchecked(&mut frame[..]));

    let ip = &mut frame[layout.l3_offset..layout.ip_end];
    if spec.v6 {
        let repr = ipv6::Repr {
            src: spec.src,
            dst: spec.dst,
            next_header: spec.proto,
            payload_len: layout.l4_len,
            hop_limit: ipv6::DEFAULT_HOP_LIMIT,
            traffic_class: 0,
            flow_label: 0,
        };
        repr.emit(&mut ipv6::Packet::new_unchecked(ip));
    } else {
        let repr = ipv4::Repr {
            src: first4(&spec.src),
            dst: first4(&spec.dst),
            protocol: spec.proto,
            payload_len: layout.l4_len,
            ttl: ipv4::DEFAULT_TTL,
            dscp_ecn: 0,
            ident: 0,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        };
        repr.emit(&mut ipv4::Packet::new_unchecked(ip));
    }

    let l4 = &mut frame[layout.l4_offset..layout.ip_end];
    for (i, byte) in l4[layout.l4_header_len..].iter_mut().enumerate() {
        *byte = payload_byte(i);
    }
    if spec.proto == PROTO_TCP {
        let has_ack = spec.tcp_flags & tcp_flags::ACK != 0;
        let (seq, ack) = build_seq_ack(spec);
        let repr = tcp::Repr {
            src_port: spec.sport,
            dst_port: spec.dport,
            seq_number: seq,
            ack_number: if has_ack { ack } else { 0 },
            flags: spec.tcp_flags,
            window: tcp::DEFAULT_WINDOW,
            urgent: 0,
        };
        let mut packet = tcp::Packet::new_unchecked(l4);
        repr.emit(&mut packet);
        packet.fill_checksum(&pseudo);
    } else {
        let repr = udp::Repr {
            src_port: spec.sport,
            dst_port: spec.dport,
            payload_len: spec.payload_len,
        };
        let mut packet = udp::Packet::new_unchecked(l4);
        repr.emit(&mut packet);
        packet.fill_checksum(&pseudo);
    }

    frame[layout.ip_end..].fill(0);
    Some(layout.frame_len)
}

/// Rewrites the sequence and acknowledgement numbers of a TCP frame (`build`'s, or
/// any other) and its TCP checksum to match: what tests use to place segments in or
/// out of a session's window. None when the frame is no TCP segment.
pub fn set_tcp_numbers(frame: &mut [u8], seq: u32, ack: u32) -> Option<()> {
    let info = parse(frame).ok()?;
    let at = TcpFrame::locate(frame, info.l3_offset.into(), info.v6)?;
    let pseudo = if info.v6 {
        PseudoHeader::V6 {
            src: info.src,
            dst: info.dst,
        }
    } else {
        PseudoHeader::V4 {
            src: first4(&info.src),
            dst: first4(&info.dst),
        }
    };
    let mut tcp = tcp::Packet::new_checked(frame.get_mut(at.l4..at.end)?).ok()?;
    tcp.set_seq_number(seq);
    tcp.set_ack_number(ack);
    tcp.fill_checksum(&pseudo);
    Some(())
}

fn first4(addr: &[u8; 16]) -> [u8; 4] {
    [addr[0], addr[1], addr[2], addr[3]]
}

#[cfg(test)]
mod tests {
    use super::super::checksum;
    use super::*;
    use proptest::prelude::*;

    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut addr = [0; 16];
        addr[..4].copy_from_slice(&a);
        addr
    }

    fn v6(last: u8) -> [u8; 16] {
        let mut addr = [0; 16];
        addr[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        addr[15] = last;
        addr
    }

    fn spec(is_v6: bool, proto: u8, vlan: u16, payload_len: usize) -> FrameSpec {
        FrameSpec {
            src_mac: MAC_A,
            dst_mac: MAC_B,
            vlan,
            v6: is_v6,
            proto,
            src: if is_v6 { v6(1) } else { v4([192, 0, 2, 1]) },
            dst: if is_v6 { v6(2) } else { v4([198, 51, 100, 7]) },
            sport: 1234,
            dport: 53,
            tcp_flags: if proto == PROTO_TCP {
                tcp_flags::SYN | tcp_flags::ACK
            } else {
                0
            },
            payload_len,
        }
    }

    fn build_vec(spec: &FrameSpec) -> Vec<u8> {
        let mut buf = vec![0xa5; 70_000];
        let len = build(spec, &mut buf).expect("spec fits");
        buf.truncate(len);
        buf
    }

    #[test]
    fn tcp_frame_locates_segment_and_verifies_checksums() {
        for (is_v6, vlan) in [(false, 0), (false, 7), (true, 0), (true, 7)] {
            let mut s = spec(is_v6, PROTO_TCP, vlan, 33);
            s.tcp_flags = tcp_flags::FIN | tcp_flags::ACK;
            let mut f = build_vec(&s);
            let info = parse(&f).unwrap();
            let t = TcpFrame::locate(&f, info.l3_offset.into(), is_v6).unwrap();
            let seg = t.segment(&f).unwrap();
            assert_eq!(
                tcp_segment(&f, t.l3, is_v6),
                Some(seg),
                "the same, read in place"
            );
            assert_eq!((seg.seq, seg.ack), build_seq_ack(&s));
            assert_eq!(seg.len, 34, "33 payload bytes and the FIN");
            assert_eq!(seg.window, tcp::DEFAULT_WINDOW);
            assert!(t.checksums_ok(&f), "v6 {is_v6} vlan {vlan}");
            // A payload byte flipped: the TCP checksum is wrong.
            let last = t.end - 1;
            f[last] ^= 0x40;
            assert!(!t.checksums_ok(&f));
            f[last] ^= 0x40;
            // Ethernet padding is outside the checksums.
            f.extend_from_slice(&[0xee; 8]);
            assert!(t.checksums_ok(&f));
            if !is_v6 {
                // The TTL changed without the header checksum following.
                f[t.l3 + 8] -= 1;
                assert!(!t.checksums_ok(&f), "IPv4 header checksum");
            }
        }
    }

    #[test]
    fn set_tcp_numbers_keeps_checksums_right() {
        for is_v6 in [false, true] {
            let mut f = build_vec(&spec(is_v6, PROTO_TCP, 5, 20));
            set_tcp_numbers(&mut f, 0xdead_beef, 17).unwrap();
            let info = parse(&f).unwrap();
            let t = TcpFrame::locate(&f, info.l3_offset.into(), is_v6).unwrap();
            let seg = t.segment(&f).unwrap();
            assert_eq!((seg.seq, seg.ack), (0xdead_beef, 17));
            assert!(t.checksums_ok(&f));
        }
        let mut udp = build_vec(&spec(false, PROTO_UDP, 0, 20));
        assert_eq!(set_tcp_numbers(&mut udp, 1, 2), None);
    }

    #[test]
    fn tcp_frame_refuses_what_is_no_tcp_segment() {
        let udp = build_vec(&spec(false, PROTO_UDP, 0, 10));
        assert_eq!(TcpFrame::locate(&udp, 14, false), None);
        let tcp = build_vec(&spec(false, PROTO_TCP, 0, 10));
        assert_eq!(TcpFrame::locate(&tcp[..40], 14, false), None, "cut short");
        assert_eq!(TcpFrame::locate(&tcp, 70, false), None, "past the end");
        assert_eq!(tcp_segment(&udp, 14, false), None);
        assert_eq!(tcp_segment(&tcp[..40], 14, false), None, "cut short");
        let t = TcpFrame::locate(&tcp, 14, false).unwrap();
        let mut bad = tcp.clone();
        bad[t.l4 + 12] = 0x40; // data offset 4
        assert_eq!(t.segment(&bad), None);
        assert_eq!(tcp_segment(&bad, 14, false), None);
        assert!(!t.checksums_ok(&bad));
    }

    #[test]
    fn built_sides_acknowledge_each_other() {
        let a = spec(false, PROTO_TCP, 0, 0);
        let b = FrameSpec {
            src: a.dst,
            dst: a.src,
            sport: a.dport,
            dport: a.sport,
            ..a.clone()
        };
        let (sa, aa) = build_seq_ack(&a);
        let (sb, ab) = build_seq_ack(&b);
        assert_eq!((sa, aa), (ab, sb));
        assert_ne!(sa, sb);
    }

    /// What `parse` must return for a frame built from `spec`.
    fn expected(spec: &FrameSpec) -> FrameInfo {
        let mut src = spec.src;
        let mut dst = spec.dst;
        if !spec.v6 {
            src[4..].fill(0);
            dst[4..].fill(0);
        }
        FrameInfo {
            vlan: spec.vlan,
            l3_offset: if spec.vlan != 0 { 18 } else { 14 },
            v6: spec.v6,
            proto: spec.proto,
            src,
            dst,
            sport: spec.sport,
            dport: spec.dport,
            tcp_flags: if spec.proto == PROTO_TCP {
                spec.tcp_flags
            } else {
                0
            },
        }
    }

    /// End of the IP packet in a built frame (where padding starts).
    fn ip_end(spec: &FrameSpec) -> usize {
        let l3 = usize::from(expected(spec).l3_offset);
        let ip_header = if spec.v6 { 40 } else { 20 };
        let l4_header = if spec.proto == PROTO_TCP { 20 } else { 8 };
        l3 + ip_header + l4_header + spec.payload_len
    }

    /// Checks the built frame's lengths, payload, padding and checksums, computing the
    /// checksums from the bytes with `checksum::sum` rather than with the views.
    fn check_built(frame: &[u8], spec: &FrameSpec) {
        let l3 = usize::from(expected(spec).l3_offset);
        let end = ip_end(spec);
        assert_eq!(frame.len(), end.max(60));
        assert!(frame[end..].iter().all(|&b| b == 0), "padding is zero");
        let (l4, mut pseudo) = if spec.v6 {
            let ip = &frame[l3..end];
            assert_eq!(
                usize::from(u16::from_be_bytes([ip[4], ip[5]])),
                end - l3 - 40
            );
            let l4 = &ip[40..];
            let mut pseudo = Vec::new();
            pseudo.extend(&ip[8..40]);
            pseudo.extend((l4.len() as u32).to_be_bytes());
            pseudo.extend([0, 0, 0, spec.proto]);
            (l4, pseudo)
        } else {
            let ip = &frame[l3..end];
            assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), end - l3);
            assert_eq!(
                checksum::fold(checksum::sum(&ip[..20])),
                0xffff,
                "IPv4 checksum"
            );
            let l4 = &ip[20..];
            let mut pseudo = Vec::new();
            pseudo.extend(&ip[12..20]);
            pseudo.extend([0, spec.proto]);
            pseudo.extend((l4.len() as u16).to_be_bytes());
            (l4, pseudo)
        };
        let l4_header = if spec.proto == PROTO_TCP { 20 } else { 8 };
        for (i, &b) in l4[l4_header..].iter().enumerate() {
            assert_eq!(b, payload_byte(i));
        }
        if spec.proto == PROTO_UDP {
            assert_ne!(
                u16::from_be_bytes([l4[6], l4[7]]),
                0,
                "UDP checksum present"
            );
            assert_eq!(usize::from(u16::from_be_bytes([l4[4], l4[5]])), l4.len());
        }
        pseudo.extend(l4);
        assert_eq!(
            checksum::fold(checksum::sum(&pseudo)),
            0xffff,
            "L4 checksum"
        );
    }

    /// Inserts IPv6 extension headers after the fixed header of a built frame. Each
    /// header is (its type, its bytes); the next-header bytes and the payload length
    /// are fixed up.
    fn with_v6_ext(frame: &[u8], l3: usize, headers: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let proto = frame[l3 + 6];
        let mut chain = Vec::new();
        for (i, (_, bytes)) in headers.iter().enumerate() {
            let mut bytes = bytes.clone();
            bytes[0] = headers.get(i + 1).map_or(proto, |h| h.0);
            chain.extend(bytes);
        }
        let mut out = frame[..l3 + 40].to_vec();
        out[l3 + 6] = headers.first().map_or(proto, |h| h.0);
        let plen = u16::from_be_bytes([out[l3 + 4], out[l3 + 5]]) + chain.len() as u16;
        out[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
        out.extend(chain);
        out.extend(&frame[l3 + 40..]);
        out
    }

    fn opts8(kind: u8) -> (u8, Vec<u8>) {
        (kind, vec![0, 0, 1, 4, 0, 0, 0, 0])
    }

    fn fragment(offset: u16, more: bool) -> (u8, Vec<u8>) {
        let word = offset | u16::from(more);
        let [hi, lo] = word.to_be_bytes();
        (ipv6::NEXT_FRAGMENT, vec![0, 0, hi, lo, 0, 0, 0x12, 0x34])
    }

    fn err_malformed(m: Malformed) -> Result<FrameInfo, Unparsed> {
        Err(Unparsed::Malformed(m))
    }

    fn err_not_flow(n: NotFlow) -> Result<FrameInfo, Unparsed> {
        Err(Unparsed::NotFlow(n))
    }

    #[test]
    fn builds_known_ipv4_udp_frame() {
        let spec = spec(false, PROTO_UDP, 100, 4);
        #[rustfmt::skip]
        let known: [u8; 60] = [
            0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // MACs
            0x81, 0x00, 0x00, 0x64, 0x08, 0x00, // VLAN 100, IPv4
            0x45, 0x00, 0x00, 0x20, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x4e, 0x91,
            0xc0, 0x00, 0x02, 0x01, 0xc6, 0x33, 0x64, 0x07, // 192.0.2.1 -> 198.51.100.7
            0x04, 0xd2, 0x00, 0x35, 0x00, 0x0c, 0x0c, 0x8f, // UDP 1234 -> 53
            0x00, 0x01, 0x02, 0x03, // payload
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding to 60
        ];
        assert_eq!(build_vec(&spec), known);
        assert_eq!(parse(&known), Ok(expected(&spec)));
    }

    #[test]
    fn builds_known_ipv6_tcp_frame() {
        let spec = spec(true, PROTO_TCP, 0, 0);
        let mut known = vec![
            0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd,
        ];
        known.extend([0x60, 0x00, 0x00, 0x00, 0x00, 0x14, 0x06, 0x40]);
        known.extend(v6(1));
        known.extend(v6(2));
        #[rustfmt::skip]
        known.extend([
            0x01, 0xbb, 0xc3, 0x50, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,
            0x50, 0x12, 0xff, 0xff, 0x8c, 0x52, 0x00, 0x00,
        ]);
        let spec = FrameSpec {
            sport: 443,
            dport: 50_000,
            ..spec
        };
        assert_eq!(build_vec(&spec), known);
        assert_eq!(parse(&known), Ok(expected(&spec)));
    }

    #[test]
    fn round_trips_every_combination() {
        for is_v6 in [false, true] {
            for proto in [PROTO_TCP, PROTO_UDP] {
                for vlan in [0, 1, 100, 4095] {
                    for payload_len in [0, 1, 5, 6, 100, 1460] {
                        let spec = spec(is_v6, proto, vlan, payload_len);
                        let frame = build_vec(&spec);
                        check_built(&frame, &spec);
                        assert_eq!(parse(&frame), Ok(expected(&spec)), "{spec:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_prefix_is_truncated_or_whole() {
        for is_v6 in [false, true] {
            for proto in [PROTO_TCP, PROTO_UDP] {
                for vlan in [0, 7] {
                    let spec = spec(is_v6, proto, vlan, 3);
                    let frame = build_vec(&spec);
                    let end = ip_end(&spec);
                    for len in 0..=frame.len() {
                        let got = parse(&frame[..len]);
                        if len >= end {
                            // Only padding is missing: the IP length is all that counts.
                            assert_eq!(got, Ok(expected(&spec)), "len {len}");
                        } else {
                            assert_eq!(got, err_malformed(Malformed::Truncated), "len {len}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_prefix_with_extension_headers_is_truncated() {
        let spec = spec(true, PROTO_TCP, 0, 0);
        let frame = with_v6_ext(
            &build_vec(&spec),
            14,
            &[
                opts8(ipv6::NEXT_HOP_BY_HOP),
                fragment(0, true),
                opts8(ipv6::NEXT_DEST_OPTS),
            ],
        );
        assert_eq!(parse(&frame), Ok(expected(&spec)));
        for len in 0..frame.len() {
            assert_eq!(
                parse(&frame[..len]),
                err_malformed(Malformed::Truncated),
                "len {len}"
            );
        }
    }

    #[test]
    fn build_needs_room() {
        for spec in [spec(false, PROTO_TCP, 0, 0), spec(true, PROTO_UDP, 9, 200)] {
            let len = built_len(&spec).unwrap();
            let mut buf = vec![0; len];
            for short in 0..len {
                assert_eq!(build(&spec, &mut buf[..short]), None);
            }
            assert_eq!(build(&spec, &mut buf), Some(len));
        }
    }

    #[test]
    fn build_leaves_the_rest_of_the_buffer_alone() {
        let spec = spec(false, PROTO_UDP, 0, 100);
        let mut buf = vec![0xa5; 300];
        let len = build(&spec, &mut buf).unwrap();
        assert_eq!(len, 14 + 20 + 8 + 100);
        assert!(buf[len..].iter().all(|&b| b == 0xa5));
    }

    #[test]
    fn build_rejects_specs_it_cannot_encode() {
        let mut buf = vec![0; 70_000];
        assert_eq!(build(&spec(false, 1, 0, 0), &mut buf), None);
        assert_eq!(build(&spec(false, PROTO_TCP, 4096, 0), &mut buf), None);
        assert_eq!(
            build(&spec(false, PROTO_TCP, 0, usize::MAX), &mut buf),
            None
        );
        // IPv4 total length: 20 + 20 + payload <= 65535.
        assert_eq!(build(&spec(false, PROTO_TCP, 0, 65_496), &mut buf), None);
        assert_eq!(
            build(&spec(false, PROTO_TCP, 0, 65_495), &mut buf),
            Some(65_549)
        );
        // UDP length over IPv6: 8 + payload <= 65535.
        assert_eq!(build(&spec(true, PROTO_UDP, 0, 65_528), &mut buf), None);
        let biggest = spec(true, PROTO_UDP, 0, 65_527);
        let frame = build_vec(&biggest);
        check_built(&frame, &biggest);
        assert_eq!(parse(&frame), Ok(expected(&biggest)));
    }

    #[test]
    fn one_tag_of_either_tpid_is_a_vlan() {
        let spec = spec(false, PROTO_TCP, 300, 0);
        let mut frame = build_vec(&spec);
        frame[12..14].copy_from_slice(&ethernet::ETHERTYPE_QINQ.to_be_bytes());
        let info = parse(&frame).unwrap();
        assert_eq!((info.vlan, info.l3_offset), (300, 18));
        // The PCP and DEI bits are not part of the id.
        frame[14] |= 0xf0;
        assert_eq!(parse(&frame).unwrap().vlan, 300);
    }

    #[test]
    fn a_second_tag_is_not_ip() {
        for (outer, inner) in [
            (ethernet::ETHERTYPE_QINQ, ethernet::ETHERTYPE_VLAN),
            (ethernet::ETHERTYPE_VLAN, ethernet::ETHERTYPE_VLAN),
        ] {
            let inner_frame = build_vec(&spec(false, PROTO_UDP, 20, 10));
            // Outer tag 10 in front of the tagged frame.
            let mut frame = inner_frame[..12].to_vec();
            frame.extend(outer.to_be_bytes());
            frame.extend([0x00, 10]);
            frame.extend(inner.to_be_bytes());
            frame.extend(&inner_frame[14..]);
            assert_eq!(parse(&frame), err_not_flow(NotFlow::NotIp));
        }
    }

    #[test]
    fn arp_and_other_ethertypes_are_not_ip() {
        // An ARP request for 192.0.2.7 from 192.0.2.1, padded to 60.
        let mut arp = vec![0xff; 6];
        arp.extend(MAC_A);
        arp.extend(ethernet::ETHERTYPE_ARP.to_be_bytes());
        arp.extend([0, 1, 8, 0, 6, 4, 0, 1]);
        arp.extend(MAC_A);
        arp.extend([192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 192, 0, 2, 7]);
        arp.resize(60, 0);
        assert_eq!(parse(&arp), err_not_flow(NotFlow::NotIp));
        // LLDP, and an 802.3 length field.
        for ethertype in [0x88cc_u16, 0x0040] {
            arp[12..14].copy_from_slice(&ethertype.to_be_bytes());
            assert_eq!(parse(&arp), err_not_flow(NotFlow::NotIp));
        }
        // A tagged ARP too.
        let mut tagged = arp[..12].to_vec();
        tagged.extend([0x81, 0x00, 0x00, 0x05, 0x08, 0x06]);
        tagged.extend(&arp[14..]);
        assert_eq!(parse(&tagged), err_not_flow(NotFlow::NotIp));
    }

    #[test]
    fn icmp_and_other_protocols_are_not_tcp_udp() {
        // IPv4 echo request: build a UDP frame and relabel it (checksums do not matter).
        let mut frame = build_vec(&spec(false, PROTO_UDP, 0, 8));
        for proto in [1, 47, 50, 132] {
            frame[14 + 9] = proto;
            assert_eq!(parse(&frame), err_not_flow(NotFlow::NotTcpUdp), "{proto}");
        }
        let mut frame = build_vec(&spec(true, PROTO_UDP, 0, 8));
        for proto in [58, ipv6::NEXT_ESP, ipv6::NEXT_NONE] {
            frame[14 + 6] = proto;
            assert_eq!(parse(&frame), err_not_flow(NotFlow::NotTcpUdp), "{proto}");
        }
    }

    #[test]
    fn ipv4_fragments() {
        for proto in [PROTO_TCP, PROTO_UDP, 1] {
            let mut frame = build_vec(&spec(false, PROTO_UDP, 0, 40));
            frame[14 + 9] = proto;
            // Offset 8 bytes (1 unit), with and without MF: not the first fragment.
            for flags in [0x20, 0x00, 0x40] {
                frame[14 + 6] = flags;
                frame[14 + 7] = 1;
                assert_eq!(parse(&frame), err_not_flow(NotFlow::Fragment));
            }
            // The highest offset.
            frame[14 + 6..14 + 8].copy_from_slice(&[0x1f, 0xff]);
            assert_eq!(parse(&frame), err_not_flow(NotFlow::Fragment));
        }
    }

    #[test]
    fn ipv4_first_fragment_is_a_flow() {
        let spec = spec(false, PROTO_UDP, 0, 100);
        let mut frame = build_vec(&spec);
        // MF set, offset 0, and the packet cut to 16 bytes of UDP payload: the UDP
        // length (108) now exceeds the fragment.
        frame[14 + 6] = 0x20;
        frame[14 + 2..14 + 4].copy_from_slice(&(20u16 + 8 + 16).to_be_bytes());
        assert_eq!(parse(&frame), Ok(expected(&spec)));
        // Without MF the same packet is inconsistent.
        frame[14 + 6] = 0x40;
        assert_eq!(parse(&frame), err_malformed(Malformed::UdpHeader));

        let spec = FrameSpec {
            proto: PROTO_TCP,
            tcp_flags: tcp_flags::PSH | tcp_flags::ACK,
            ..spec
        };
        let mut frame = build_vec(&spec);
        frame[14 + 6] = 0x20;
        assert_eq!(parse(&frame), Ok(expected(&spec)));
    }

    #[test]
    fn ipv4_options_are_skipped() {
        let spec = spec(false, PROTO_TCP, 42, 10);
        let frame = build_vec(&spec);
        let l3 = 18;
        // 8 bytes of options: Router Alert and four NOPs.
        let mut with_options = frame[..l3 + 20].to_vec();
        with_options.extend([0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x01]);
        with_options.extend(&frame[l3 + 20..]);
        with_options[l3] = 0x47;
        let total = u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]) + 8;
        with_options[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
        assert_eq!(parse(&with_options), Ok(expected(&spec)));
        // Every prefix short of the IP packet is truncated.
        for len in 0..l3 + usize::from(total) {
            assert_eq!(
                parse(&with_options[..len]),
                err_malformed(Malformed::Truncated)
            );
        }
    }

    #[test]
    fn bad_ipv4_headers() {
        let frame = build_vec(&spec(false, PROTO_TCP, 0, 10));
        let edit = |at: usize, bytes: &[u8]| {
            let mut f = frame.clone();
            f[14 + at..14 + at + bytes.len()].copy_from_slice(bytes);
            parse(&f)
        };
        assert_eq!(edit(0, &[0x65]), err_malformed(Malformed::Ipv4Header));
        assert_eq!(edit(0, &[0x05]), err_malformed(Malformed::Ipv4Header));
        for ihl in 0..5 {
            assert_eq!(edit(0, &[0x40 | ihl]), err_malformed(Malformed::Ipv4Header));
        }
        // IHL 15 (60 bytes) beyond the total length of 50.
        assert_eq!(edit(0, &[0x4f]), err_malformed(Malformed::Ipv4Header));
        assert_eq!(edit(2, &[0, 19]), err_malformed(Malformed::Ipv4Header));
        assert_eq!(edit(2, &[0, 0]), err_malformed(Malformed::Ipv4Header));
        assert_eq!(edit(2, &[0, 51]), err_malformed(Malformed::Truncated));
        assert_eq!(edit(2, &[0xff, 0xff]), err_malformed(Malformed::Truncated));
        // IPv4 version in an IPv6 EtherType and the reverse.
        let mut f = frame.clone();
        f[12..14].copy_from_slice(&ethernet::ETHERTYPE_IPV6.to_be_bytes());
        let mut long = f.clone();
        long.resize(100, 0);
        assert_eq!(parse(&long), err_malformed(Malformed::Ipv6Header));
    }

    #[test]
    fn bad_ipv6_headers() {
        let frame = build_vec(&spec(true, PROTO_UDP, 0, 10));
        let mut f = frame.clone();
        f[14] = 0x40;
        assert_eq!(parse(&f), err_malformed(Malformed::Ipv6Header));
        let mut f = frame.clone();
        f[14 + 5] += 1;
        assert_eq!(parse(&f), err_malformed(Malformed::Truncated));
        // Payload length 0: no room for the UDP header.
        let mut f = frame.clone();
        f[14 + 4..14 + 6].fill(0);
        assert_eq!(parse(&f), err_malformed(Malformed::UdpHeader));
    }

    #[test]
    fn bad_l4_headers() {
        let frame = build_vec(&spec(false, PROTO_TCP, 0, 10));
        let l4 = 14 + 20;
        for offset in [0u8, 4, 8, 9, 15] {
            let mut f = frame.clone();
            f[l4 + 12] = offset << 4;
            assert_eq!(
                parse(&f),
                err_malformed(Malformed::TcpHeader),
                "offset {offset}"
            );
        }
        // Data offset 7 (28 bytes) fits 30 bytes of segment.
        let mut f = frame.clone();
        f[l4 + 12] = 0x70;
        assert!(parse(&f).is_ok());
        // An IP packet too short for the TCP header.
        let mut f = frame.clone();
        f[14 + 3] = 20 + 19;
        assert_eq!(parse(&f), err_malformed(Malformed::TcpHeader));

        let frame = build_vec(&spec(true, PROTO_UDP, 0, 10));
        let l4 = 14 + 40;
        for length in [0u16, 7, 19, 1000] {
            let mut f = frame.clone();
            f[l4 + 4..l4 + 6].copy_from_slice(&length.to_be_bytes());
            assert_eq!(
                parse(&f),
                err_malformed(Malformed::UdpHeader),
                "length {length}"
            );
        }
        // A UDP length shorter than the IP payload is fine (surplus is ignored).
        let mut f = frame.clone();
        f[l4 + 5] = 8;
        assert!(parse(&f).is_ok());
        let mut f = frame.clone();
        f[14 + 5] = 7;
        assert_eq!(
            parse(&f[..14 + 40 + 7]),
            err_malformed(Malformed::UdpHeader)
        );
    }

    #[test]
    fn ipv6_extension_headers_are_skipped() {
        let spec = spec(true, PROTO_TCP, 12, 33);
        let frame = build_vec(&spec);
        let routing = (ipv6::NEXT_ROUTING, {
            let mut r = vec![0, 2, 0, 1];
            r.resize(24, 0);
            r
        });
        let ah = (ipv6::NEXT_AH, {
            let mut r = vec![0, 4];
            r.resize(24, 0xab);
            r
        });
        let chains = [
            vec![opts8(ipv6::NEXT_HOP_BY_HOP)],
            vec![
                opts8(ipv6::NEXT_HOP_BY_HOP),
                routing.clone(),
                opts8(ipv6::NEXT_DEST_OPTS),
            ],
            vec![routing, fragment(0, false), ah, opts8(ipv6::NEXT_DEST_OPTS)],
            vec![fragment(0, true)],
            vec![opts8(ipv6::NEXT_DEST_OPTS); ipv6::MAX_EXTENSION_HEADERS],
        ];
        for chain in chains {
            let f = with_v6_ext(&frame, 18, &chain);
            assert_eq!(parse(&f), Ok(expected(&spec)), "{chain:?}");
        }
    }

    #[test]
    fn ipv6_fragments() {
        let spec = spec(true, PROTO_UDP, 0, 100);
        let frame = build_vec(&spec);
        for more in [false, true] {
            let f = with_v6_ext(&frame, 14, &[fragment(1480, more)]);
            assert_eq!(parse(&f), err_not_flow(NotFlow::Fragment));
            let f = with_v6_ext(
                &frame,
                14,
                &[opts8(ipv6::NEXT_HOP_BY_HOP), fragment(8, more)],
            );
            assert_eq!(parse(&f), err_not_flow(NotFlow::Fragment));
        }
        // A first fragment cut to 16 bytes of UDP payload: the UDP length exceeds it.
        let mut f = with_v6_ext(&frame, 14, &[fragment(0, true)]);
        let plen = 8 + 8 + 16;
        f[14 + 4..14 + 6].copy_from_slice(&(plen as u16).to_be_bytes());
        f.truncate(14 + 40 + plen);
        assert_eq!(parse(&f), Ok(expected(&spec)));
        // As an atomic fragment (no M) the same bytes are inconsistent.
        f[14 + 40 + 3] = 0;
        assert_eq!(parse(&f), err_malformed(Malformed::UdpHeader));
    }

    #[test]
    fn ipv6_bad_extension_chains() {
        let frame = build_vec(&spec(true, PROTO_TCP, 0, 0));
        let too_many = vec![opts8(ipv6::NEXT_DEST_OPTS); ipv6::MAX_EXTENSION_HEADERS + 1];
        assert_eq!(
            parse(&with_v6_ext(&frame, 14, &too_many)),
            err_malformed(Malformed::ExtensionHeader)
        );
        // A chain that the payload length cuts short (the frame itself is whole).
        let chain = [opts8(ipv6::NEXT_HOP_BY_HOP), opts8(ipv6::NEXT_DEST_OPTS)];
        let full = with_v6_ext(&frame, 14, &chain);
        for plen in 0..16u16 {
            let mut f = full.clone();
            f[14 + 4..14 + 6].copy_from_slice(&plen.to_be_bytes());
            assert_eq!(
                parse(&f),
                err_malformed(Malformed::ExtensionHeader),
                "{plen}"
            );
        }
        // A header whose length runs past the payload.
        let mut f = full.clone();
        f[14 + 40 + 1] = 200;
        assert_eq!(parse(&f), err_malformed(Malformed::ExtensionHeader));
    }

    fn arb_spec() -> impl Strategy<Value = FrameSpec> {
        (
            (any::<[u8; 6]>(), any::<[u8; 6]>(), 0..4096u16),
            (any::<bool>(), prop_oneof![Just(PROTO_TCP), Just(PROTO_UDP)]),
            (any::<[u8; 16]>(), any::<[u8; 16]>()),
            (any::<u16>(), any::<u16>(), any::<u8>(), 0..1600usize),
        )
            .prop_map(
                |(
                    (src_mac, dst_mac, vlan),
                    (v6, proto),
                    (src, dst),
                    (sport, dport, flags, len),
                )| {
                    FrameSpec {
                        src_mac,
                        dst_mac,
                        vlan,
                        v6,
                        proto,
                        src,
                        dst,
                        sport,
                        dport,
                        tcp_flags: flags,
                        payload_len: len,
                    }
                },
            )
    }

    /// Invariants of any successful parse.
    fn check_info(frame: &[u8], info: &FrameInfo) {
        assert!(usize::from(info.l3_offset) < frame.len());
        assert!(info.l3_offset == 14 || info.l3_offset == 18);
        assert!(info.proto == PROTO_TCP || info.proto == PROTO_UDP);
        assert!(info.vlan <= ethernet::VID_MASK);
        if !info.v6 {
            assert!(info.src[4..].iter().chain(&info.dst[4..]).all(|&b| b == 0));
        }
        if info.proto == PROTO_UDP {
            assert_eq!(info.tcp_flags, 0);
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(info) = parse(&bytes) {
                check_info(&bytes, &info);
            }
        }

        #[test]
        fn parse_never_panics_on_mutated_frames(
            spec in arb_spec(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut frame = build_vec(&spec);
            for (at, value) in edits {
                let i = at.index(frame.len());
                frame[i] = value;
            }
            let len = cut.index(frame.len() + 1);
            if let Ok(info) = parse(&frame[..len]) {
                check_info(&frame[..len], &info);
            }
            // The fast path answers as the general parser wherever it answers.
            if let Some(fast) = parse_plain_ipv4(&frame[..len]) {
                prop_assert_eq!(Ok(fast), parse_general(&frame[..len]));
            }
        }

        #[test]
        fn build_parse_round_trips(spec in arb_spec()) {
            let frame = build_vec(&spec);
            check_built(&frame, &spec);
            prop_assert_eq!(parse(&frame), Ok(expected(&spec)));
            // Untagged IPv4 takes the fast path.
            let fast = (!spec.v6 && spec.vlan == 0).then(|| expected(&spec));
            prop_assert_eq!(parse_plain_ipv4(&frame), fast);
            prop_assert_eq!(built_len(&spec), Some(frame.len()));
        }
    }
}
