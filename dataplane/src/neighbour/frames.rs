//! The frames of resolution: requests the device sends for a next hop, and what it
//! learns from the ARP and Neighbour Discovery frames it receives.
//!
//! Requests follow what Linux accepts from a host it has never seen: an ARP request
//! from 0.0.0.0 (a probe, RFC 5227) when the port has no IPv4 address, which Linux
//! answers for its own addresses; an NS from the port's IPv6 address, or its
//! link-local address made from the MAC, carrying the MAC in a source link-layer
//! option so that the answer can come back unicast. Only untagged frames are sent and
//! read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::resolver::Probe;
use crate::wire::{arp, ethernet, ipv6, ndisc};

/// What a frame from a neighbour said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heard {
    /// Its MAC, when the frame carries one.
    pub mac: Option<[u8; 6]>,
    /// An answer to the device: an ARP reply to the port's MAC, a solicited NA.
    pub solicited: bool,
}

/// The addresses a port sends requests from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestSource {
    pub mac: [u8; 6],
    /// None: ARP probes from 0.0.0.0.
    pub ipv4: Option<Ipv4Addr>,
    /// None: the link-local address made from the MAC.
    pub ipv6: Option<Ipv6Addr>,
}

/// Longest request: Ethernet, IPv6, NS with its option.
pub const MAX_REQUEST_LEN: usize = ethernet::HEADER_LEN + 40 + ndisc::HEADER_LEN + 8;

const BROADCAST: [u8; 6] = [0xff; 6];

/// Writes the request for `target` into `buf`; returns its length.
pub fn write_request(
    buf: &mut [u8; MAX_REQUEST_LEN],
    from: &RequestSource,
    target: IpAddr,
    probe: Probe,
) -> usize {
    buf.fill(0);
    match target {
        IpAddr::V4(t) => write_arp_request(buf, from, t, probe),
        IpAddr::V6(t) => write_solicitation(buf, from, t, probe),
    }
}

fn write_ethernet(buf: &mut [u8], dst: [u8; 6], src: [u8; 6], ethertype: u16) {
    let repr = ethernet::Repr {
        dst,
        src,
        vlan: None,
        ethertype,
    };
    repr.emit(&mut ethernet::EthernetFrame::new_unchecked(buf));
}

fn write_arp_request(
    buf: &mut [u8],
    from: &RequestSource,
    target: Ipv4Addr,
    probe: Probe,
) -> usize {
    let dst = match probe {
        Probe::Broadcast => BROADCAST,
        Probe::Unicast(mac) => mac,
    };
    write_ethernet(buf, dst, from.mac, ethernet::ETHERTYPE_ARP);
    let repr = arp::Repr {
        operation: arp::Operation::Request,
        sender_mac: from.mac,
        sender_ip: from.ipv4.map_or([0; 4], |a| a.octets()),
        target_mac: [0; 6],
        target_ip: target.octets(),
    };
    let end = ethernet::HEADER_LEN + arp::PACKET_LEN;
    repr.emit(&mut arp::Packet::new_unchecked(
        &mut buf[ethernet::HEADER_LEN..end],
    ));
    // Padded to the minimum frame, as a NIC would.
    ethernet::MIN_FRAME_LEN
}

fn write_solicitation(
    buf: &mut [u8],
    from: &RequestSource,
    target: Ipv6Addr,
    probe: Probe,
) -> usize {
    let src = from.ipv6.unwrap_or_else(|| link_local(from.mac)).octets();
    let (dst_mac, dst) = match probe {
        Probe::Broadcast => {
            let group = solicited_node(target);
            let o = group.octets();
            ([0x33, 0x33, o[12], o[13], o[14], o[15]], group.octets())
        }
        Probe::Unicast(mac) => (mac, target.octets()),
    };
    write_ethernet(buf, dst_mac, from.mac, ethernet::ETHERTYPE_IPV6);
    let ns = ndisc::Repr::Solicit {
        target: target.octets(),
        source_mac: Some(from.mac),
    };
    let ip = ipv6::Repr {
        src,
        dst,
        next_header: ndisc::NEXT_HEADER_ICMPV6,
        payload_len: ns.buffer_len(),
        hop_limit: ndisc::HOP_LIMIT,
        traffic_class: 0,
        flow_label: 0,
    };
    let l3 = ethernet::HEADER_LEN;
    let l4 = l3 + ip.header_len();
    let end = l4 + ns.buffer_len();
    ip.emit(&mut ipv6::Packet::new_unchecked(&mut buf[l3..l4]));
    ns.emit(
        &mut ndisc::Packet::new_unchecked(&mut buf[l4..end]),
        src,
        dst,
    );
    end
}

/// fe80::/64 with the modified EUI-64 interface id of `mac` (RFC 4291 appendix A).
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a[0] = 0xfe;
    a[1] = 0x80;
    a[8..11].copy_from_slice(&[mac[0] ^ 0x02, mac[1], mac[2]]);
    a[11] = 0xff;
    a[12] = 0xfe;
    a[13..16].copy_from_slice(&mac[3..6]);
    Ipv6Addr::from(a)
}

/// ff02::1:ffXX:XXXX, the group an NS for `target` goes to.
pub fn solicited_node(target: Ipv6Addr) -> Ipv6Addr {
    let t = target.octets();
    let mut a = [0u8; 16];
    a[0] = 0xff;
    a[1] = 0x02;
    a[11] = 0x01;
    a[12] = 0xff;
    a[13..16].copy_from_slice(&t[13..16]);
    Ipv6Addr::from(a)
}

/// A MAC a neighbour may have: not multicast or broadcast, not all zero.
fn is_unicast(mac: [u8; 6]) -> bool {
    mac[0] & 1 == 0 && mac != [0; 6]
}

/// The neighbour an ARP or ND frame received on a port with MAC `port_mac` speaks
/// for, and what it said; None for any other frame, and for ARP and ND frames that
/// fail their checks (length, types, checksum, hop limit, addresses).
pub fn heard_in_frame(frame: &[u8], port_mac: [u8; 6]) -> Option<(IpAddr, Heard)> {
    let eth = ethernet::EthernetFrame::new_checked(frame).ok()?;
    match eth.ethertype() {
        ethernet::ETHERTYPE_ARP => heard_in_arp(eth.payload(), port_mac),
        ethernet::ETHERTYPE_IPV6 => heard_in_ndisc(eth.payload()),
        _ => None,
    }
}

fn heard_in_arp(payload: &[u8], port_mac: [u8; 6]) -> Option<(IpAddr, Heard)> {
    let a = arp::Repr::parse(&arp::Packet::new_checked(payload).ok()?).ok()?;
    if !is_unicast(a.sender_mac) || a.sender_ip == [0; 4] {
        return None;
    }
    let heard = Heard {
        mac: Some(a.sender_mac),
        solicited: a.operation == arp::Operation::Reply && a.target_mac == port_mac,
    };
    Some((IpAddr::from(a.sender_ip), heard))
}

fn heard_in_ndisc(payload: &[u8]) -> Option<(IpAddr, Heard)> {
    let packet = ipv6::Packet::new_checked(payload).ok()?;
    let ip = ipv6::Repr::parse(&packet).ok()?;
    if ip.next_header != ndisc::NEXT_HEADER_ICMPV6 || ip.hop_limit != ndisc::HOP_LIMIT {
        return None;
    }
    let message = ndisc::Packet::new_checked(packet.payload()).ok()?;
    match ndisc::Repr::parse(&message, ip.src, ip.dst).ok()? {
        ndisc::Repr::Advert {
            flags,
            target,
            target_mac,
        } => {
            // A solicited NA to a multicast group is invalid (RFC 4861 7.1.2).
            if flags.solicited && ip.dst[0] == 0xff {
                return None;
            }
            let heard = Heard {
                mac: target_mac.filter(|&m| is_unicast(m)),
                solicited: flags.solicited,
            };
            Some((IpAddr::from(target), heard))
        }
        ndisc::Repr::Solicit { source_mac, .. } => {
            // The sender tells its own MAC; a DAD probe (from ::) tells nothing.
            let mac = source_mac.filter(|&m| is_unicast(m))?;
            if ip.src == [0; 16] {
                return None;
            }
            let heard = Heard {
                mac: Some(mac),
                solicited: false,
            };
            Some((IpAddr::from(ip.src), heard))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORT: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
    const ROUTER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x20];

    fn source() -> RequestSource {
        RequestSource {
            mac: PORT,
            ipv4: None,
            ipv6: None,
        }
    }

    fn request(target: &str, probe: Probe, from: &RequestSource) -> Vec<u8> {
        let mut buf = [0u8; MAX_REQUEST_LEN];
        let n = write_request(&mut buf, from, target.parse().unwrap(), probe);
        buf[..n].to_vec()
    }

    #[test]
    fn an_arp_probe_is_a_broadcast_request_from_zero() {
        let f = request("192.168.0.1", Probe::Broadcast, &source());
        assert_eq!(f.len(), 60);
        assert_eq!(&f[0..6], &BROADCAST);
        assert_eq!(&f[6..12], &PORT);
        let a = arp::Repr::parse(&arp::Packet::new_checked(&f[14..]).unwrap()).unwrap();
        assert_eq!(a.operation, arp::Operation::Request);
        assert_eq!((a.sender_mac, a.sender_ip), (PORT, [0; 4]));
        assert_eq!(a.target_ip, [192, 168, 0, 1]);
        // With an address, and unicast to confirm a known MAC.
        let mut from = source();
        from.ipv4 = Some(Ipv4Addr::new(192, 168, 0, 254));
        let f = request("192.168.0.1", Probe::Unicast(ROUTER), &from);
        assert_eq!(&f[0..6], &ROUTER);
        assert_eq!(&f[28..32], &[192, 168, 0, 254]);
    }

    #[test]
    fn a_solicitation_goes_to_the_solicited_node_group_from_link_local() {
        let f = request("1::ffff:204:160", Probe::Broadcast, &source());
        assert_eq!(&f[0..6], &[0x33, 0x33, 0xff, 0x04, 0x01, 0x60]);
        let ip = ipv6::Repr::parse(&ipv6::Packet::new_checked(&f[14..]).unwrap()).unwrap();
        assert_eq!(Ipv6Addr::from(ip.src), link_local(PORT));
        assert_eq!(ip.src[8], 0x00, "universal/local bit flipped");
        assert_eq!(
            Ipv6Addr::from(ip.dst),
            "ff02::1:ff04:160".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(ip.hop_limit, 255);
        let m = ndisc::Packet::new_checked(&f[54..]).unwrap();
        assert_eq!(
            ndisc::Repr::parse(&m, ip.src, ip.dst),
            Ok(ndisc::Repr::Solicit {
                target: "1::ffff:204:160".parse::<Ipv6Addr>().unwrap().octets(),
                source_mac: Some(PORT),
            })
        );
        let f = request("1::1", Probe::Unicast(ROUTER), &source());
        assert_eq!(&f[0..6], &ROUTER);
        assert_eq!(&f[38..54], &"1::1".parse::<Ipv6Addr>().unwrap().octets());
    }

    fn arp_frame(op: arp::Operation, sender: [u8; 6], ip: [u8; 4], target: [u8; 6]) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        write_ethernet(&mut f, target, sender, ethernet::ETHERTYPE_ARP);
        arp::Repr {
            operation: op,
            sender_mac: sender,
            sender_ip: ip,
            target_mac: target,
            target_ip: [0; 4],
        }
        .emit(&mut arp::Packet::new_unchecked(&mut f[14..42]));
        f
    }

    #[test]
    fn arp_replies_to_us_are_answers_and_others_are_news() {
        let ip = [192, 168, 0, 1];
        let reply = arp_frame(arp::Operation::Reply, ROUTER, ip, PORT);
        let want = Heard {
            mac: Some(ROUTER),
            solicited: true,
        };
        assert_eq!(heard_in_frame(&reply, PORT), Some((IpAddr::from(ip), want)));
        let elsewhere = arp_frame(arp::Operation::Reply, ROUTER, ip, [2, 9, 9, 9, 9, 9]);
        assert!(!heard_in_frame(&elsewhere, PORT).unwrap().1.solicited);
        let gratuitous = arp_frame(arp::Operation::Request, ROUTER, ip, BROADCAST);
        assert!(!heard_in_frame(&gratuitous, PORT).unwrap().1.solicited);
        // A sender with no address, or a multicast MAC, tells nothing.
        assert_eq!(
            heard_in_frame(
                &arp_frame(arp::Operation::Reply, ROUTER, [0; 4], PORT),
                PORT
            ),
            None
        );
        assert_eq!(
            heard_in_frame(&arp_frame(arp::Operation::Reply, BROADCAST, ip, PORT), PORT),
            None
        );
        assert_eq!(heard_in_frame(&reply[..30], PORT), None, "cut");
    }

    fn na_frame(
        flags: ndisc::AdvertFlags,
        target: &str,
        mac: Option<[u8; 6]>,
        dst: &str,
        hops: u8,
    ) -> Vec<u8> {
        let na = ndisc::Repr::Advert {
            flags,
            target: target.parse::<Ipv6Addr>().unwrap().octets(),
            target_mac: mac,
        };
        let src = link_local(ROUTER).octets();
        let dst = dst.parse::<Ipv6Addr>().unwrap().octets();
        let mut f = vec![0u8; 14 + 40 + na.buffer_len()];
        write_ethernet(&mut f, PORT, ROUTER, ethernet::ETHERTYPE_IPV6);
        ipv6::Repr {
            src,
            dst,
            next_header: ndisc::NEXT_HEADER_ICMPV6,
            payload_len: na.buffer_len(),
            hop_limit: hops,
            traffic_class: 0,
            flow_label: 0,
        }
        .emit(&mut ipv6::Packet::new_unchecked(&mut f[14..54]));
        na.emit(&mut ndisc::Packet::new_unchecked(&mut f[54..]), src, dst);
        f
    }

    #[test]
    fn advertisements_are_read_with_their_checks() {
        let solicited = ndisc::AdvertFlags {
            router: true,
            solicited: true,
            override_: true,
        };
        let target: IpAddr = "1::ffff:204:160".parse().unwrap();
        let ours = link_local(PORT).to_string();
        let f = na_frame(solicited, "1::ffff:204:160", Some(ROUTER), &ours, 255);
        assert_eq!(
            heard_in_frame(&f, PORT),
            Some((
                target,
                Heard {
                    mac: Some(ROUTER),
                    solicited: true
                }
            ))
        );
        // Through a router (hop limit < 255), or solicited to a group: not believed.
        assert_eq!(
            heard_in_frame(
                &na_frame(solicited, "1::ffff:204:160", Some(ROUTER), &ours, 64),
                PORT
            ),
            None
        );
        assert_eq!(
            heard_in_frame(
                &na_frame(solicited, "1::ffff:204:160", Some(ROUTER), "ff02::1", 255),
                PORT
            ),
            None
        );
        // A damaged checksum.
        let mut bad = f.clone();
        bad[60] ^= 0xff;
        assert_eq!(heard_in_frame(&bad, PORT), None);
        // Unsolicited, no option: news without a MAC.
        let f = na_frame(
            ndisc::AdvertFlags::default(),
            "1::ffff:204:160",
            None,
            "ff02::1",
            255,
        );
        assert_eq!(
            heard_in_frame(&f, PORT),
            Some((
                target,
                Heard {
                    mac: None,
                    solicited: false
                }
            ))
        );
    }

    #[test]
    fn solicitations_from_a_neighbour_tell_its_mac() {
        let mut from = source();
        from.mac = ROUTER;
        from.ipv6 = Some("fd00::1".parse().unwrap());
        let f = request("fd00::2", Probe::Broadcast, &from);
        assert_eq!(
            heard_in_frame(&f, PORT),
            Some((
                "fd00::1".parse().unwrap(),
                Heard {
                    mac: Some(ROUTER),
                    solicited: false
                }
            ))
        );
    }

    #[test]
    fn other_frames_tell_nothing() {
        assert_eq!(heard_in_frame(&[], PORT), None);
        assert_eq!(heard_in_frame(&[0u8; 60], PORT), None);
        let mut ipv4 = vec![0u8; 60];
        ipv4[12..14].copy_from_slice(&ethernet::ETHERTYPE_IPV4.to_be_bytes());
        assert_eq!(heard_in_frame(&ipv4, PORT), None);
    }

    use proptest::prelude::*;

    /// A request and an answer of each family, to mutate.
    fn valid_frames() -> Vec<Vec<u8>> {
        let mut from = source();
        from.mac = ROUTER;
        vec![
            request("192.168.0.1", Probe::Broadcast, &from),
            request("fd00::2", Probe::Broadcast, &from),
            arp_frame(arp::Operation::Reply, ROUTER, [192, 168, 0, 1], PORT),
            na_frame(
                ndisc::AdvertFlags {
                    router: false,
                    solicited: true,
                    override_: true,
                },
                "fd00::1",
                Some(ROUTER),
                "fe80::1",
                255,
            ),
        ]
    }

    proptest! {
        /// Whatever arrives, learning never panics and teaches only unicast MACs.
        #[test]
        fn mutated_frames_teach_only_unicast_macs(
            which in 0usize..4,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut f = valid_frames().swap_remove(which);
            for (at, v) in edits {
                let i = at.index(f.len());
                f[i] = v;
            }
            f.truncate(cut.index(f.len() + 1));
            if let Some((_, heard)) = heard_in_frame(&f, PORT) {
                if let Some(mac) = heard.mac {
                    prop_assert!(is_unicast(mac));
                }
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = heard_in_frame(&bytes, PORT);
        }
    }
}
