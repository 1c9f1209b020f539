//! The HTTP/2 frame watch (control's `h2_frames` and `h2_credit`) on arbitrary bytes
//! from both sides: no input may make it panic or loop, and every client byte reaches
//! hyper except the device's own PING ACKs (17 bytes each).
#![no_main]

use control::h2_credit::replay;
use control::h2_frames::{ClientFrame, FrameHeader, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(h) = FrameHeader::parse(data) {
        let payload = data.get(HEADER_LEN..).unwrap_or_default();
        let _ = ClientFrame::parse(&h, payload);
    }
    let (head, rest) = data.split_at(data.len().min(2));
    let piece = head.first().map_or(1, |&b| b as usize + 1);
    let cut = head.get(1).map_or(0, |&b| b as usize).min(rest.len());
    let (client, server) = rest.split_at(cut);
    let first = server.get(HEADER_LEN..).unwrap_or_default();
    let handed = replay(client, server, first, piece);
    assert!(handed <= client.len());
    assert_eq!((client.len() - handed) % 17, 0);
});
