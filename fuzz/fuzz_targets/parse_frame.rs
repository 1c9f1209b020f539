//! `wire::parse` on arbitrary bytes: it must not panic, what it returns must be
//! consistent with the frame, and its IPv4 fast path must agree with the general path.
#![no_main]

use dataplane::wire::{self, ethernet, FrameSpec, PROTO_TCP, PROTO_UDP};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The IPv4 fast path answers as the general parser wherever it answers.
    if let Some(fast) = wire::frame::parse_plain_ipv4(data) {
        assert_eq!(Ok(fast), wire::frame::parse_general(data));
    }
    let Ok(info) = wire::parse(data) else {
        return;
    };
    let l3 = usize::from(info.l3_offset);
    assert!(l3 < data.len());
    assert!(l3 == ethernet::HEADER_LEN || l3 == ethernet::HEADER_LEN + ethernet::VLAN_TAG_LEN);
    assert!(info.proto == PROTO_TCP || info.proto == PROTO_UDP);
    assert!(info.vlan <= ethernet::VID_MASK);
    assert_eq!(info.v6, data[l3] >> 4 == 6);
    if !info.v6 {
        assert!(info.src[4..].iter().chain(&info.dst[4..]).all(|&b| b == 0));
    }
    if info.proto == PROTO_UDP {
        assert_eq!(info.tcp_flags, 0);
    }

    // Rebuilding the flow parses back to the same fields.
    let spec = FrameSpec {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        vlan: info.vlan,
        v6: info.v6,
        proto: info.proto,
        src: info.src,
        dst: info.dst,
        sport: info.sport,
        dport: info.dport,
        tcp_flags: info.tcp_flags,
        payload_len: data.len() % 64,
    };
    let mut buf = [0u8; 256];
    let len = wire::build(&spec, &mut buf).expect("a parsed flow can be built");
    let again = wire::parse(&buf[..len]).expect("a built frame parses");
    assert_eq!(
        (again.vlan, again.v6, again.proto),
        (info.vlan, info.v6, info.proto)
    );
    assert_eq!((again.src, again.dst), (info.src, info.dst));
    assert_eq!(
        (again.sport, again.dport, again.tcp_flags),
        (info.sport, info.dport, info.tcp_flags)
    );
});
