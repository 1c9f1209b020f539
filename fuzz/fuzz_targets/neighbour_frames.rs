//! ARP and Neighbour Discovery on arbitrary bytes: what a worker reads from every
//! non-flow frame of a port that resolves next hops. Nothing may panic; a parsed
//! `Repr` must emit and parse back to itself; a frame that teaches a MAC teaches a
//! unicast one.
#![no_main]

use dataplane::neighbour::heard_in_frame;
use dataplane::wire::{arp, ndisc};
use libfuzzer_sys::fuzz_target;

const SRC: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const DST: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 1];

fuzz_target!(|data: &[u8]| {
    if let Some((_, heard)) = heard_in_frame(data, [2, 0, 0, 0, 0, 1]) {
        if let Some(mac) = heard.mac {
            assert!(mac[0] & 1 == 0 && mac != [0; 6], "learned {mac:02x?}");
        }
    }

    if let Ok(packet) = arp::Packet::new_checked(data) {
        if let Ok(repr) = arp::Repr::parse(&packet) {
            let mut out = [0u8; arp::PACKET_LEN];
            repr.emit(&mut arp::Packet::new_unchecked(&mut out[..]));
            let back = arp::Packet::new_checked(&out[..]).expect("emitted packet checks");
            assert_eq!(arp::Repr::parse(&back), Ok(repr));
        }
    }

    if let Ok(packet) = ndisc::Packet::new_checked(data) {
        let _ = (packet.flags(), packet.target(), packet.options());
        if let Ok(repr) = ndisc::Repr::parse(&packet, SRC, DST) {
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(&mut ndisc::Packet::new_unchecked(&mut out[..]), SRC, DST);
            let back = ndisc::Packet::new_checked(&out[..]).expect("emitted message checks");
            assert_eq!(ndisc::Repr::parse(&back, SRC, DST), Ok(repr));
        }
    }
});
