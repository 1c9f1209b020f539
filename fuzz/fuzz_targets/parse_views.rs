//! Every view and `Repr` on arbitrary bytes: checked constructors must turn all bad
//! input into errors, after which no accessor may panic, and a parsed `Repr` must
//! emit and parse back to itself.
#![no_main]

use dataplane::wire::checksum::PseudoHeader;
use dataplane::wire::{ipv4, ipv6, tcp, udp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let pseudo = PseudoHeader::V4 {
        src: [10, 0, 0, 1],
        dst: [10, 0, 0, 2],
    };

    if let Ok(packet) = ipv4::Packet::new_checked(data) {
        let _ = (packet.options(), packet.payload(), packet.verify_checksum());
        let repr = ipv4::Repr::parse(&packet).expect("checked packet parses");
        if repr.total_len().is_some() {
            let mut out = vec![0; repr.header_len() + repr.payload_len];
            repr.emit(&mut ipv4::Packet::new_unchecked(&mut out[..]));
            let back = ipv4::Packet::new_checked(&out[..]).expect("emitted header checks");
            assert!(back.verify_checksum());
            assert_eq!(ipv4::Repr::parse(&back), Ok(repr));
        }
    }

    if let Ok(packet) = ipv6::Packet::new_checked(data) {
        let _ = packet.payload();
        if let Ok(upper) = packet.upper_layer() {
            assert!(upper.offset <= packet.payload().len());
        }
        let repr = ipv6::Repr::parse(&packet).expect("checked packet parses");
        let mut out = vec![0; repr.header_len() + repr.payload_len];
        repr.emit(&mut ipv6::Packet::new_unchecked(&mut out[..]));
        assert_eq!(
            ipv6::Repr::parse(&ipv6::Packet::new_checked(&out[..]).expect("emitted header checks")),
            Ok(repr)
        );
    }
    if let Some((&next_header, rest)) = data.split_first() {
        if let Ok(upper) = ipv6::skip_extension_headers(next_header, rest) {
            assert!(upper.offset <= rest.len());
        }
    }

    if let Ok(packet) = tcp::Packet::new_checked(data) {
        let _ = (
            packet.options(),
            packet.payload(),
            packet.verify_checksum(&pseudo),
        );
        let repr = tcp::Repr::parse(&packet).expect("checked segment parses");
        let mut out = [0; tcp::HEADER_LEN];
        repr.emit(&mut tcp::Packet::new_unchecked(&mut out[..]));
        assert_eq!(
            tcp::Repr::parse(&tcp::Packet::new_checked(&out[..]).expect("emitted header checks")),
            Ok(repr)
        );
    }

    if let Ok(packet) = udp::Packet::new_checked(data) {
        let _ = (packet.payload(), packet.verify_checksum(&pseudo));
        let repr = udp::Repr::parse(&packet).expect("checked datagram parses");
        let mut out = vec![0; repr.header_len() + repr.payload_len];
        let mut view = udp::Packet::new_unchecked(&mut out[..]);
        repr.emit(&mut view);
        view.fill_checksum(&pseudo);
        let back = udp::Packet::new_checked(&out[..]).expect("emitted header checks");
        assert!(back.verify_checksum(&pseudo));
        assert_eq!(udp::Repr::parse(&back), Ok(repr));
    }
});
