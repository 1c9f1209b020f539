//! The real-port benchmark's senders: `--sender xdp` (`xdp_sender.rs`, the default) or
//! `--sender af_packet`, an AF_PACKET tx ring (`blast`), each on core 0; and sending
//! frames once (conntrack's warm-up).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::port::tpacket::{self, Geometry, Socket, SocketOptions};

use super::veths::{enable_napi, in_netns};
use super::xdp_sender;

/// The sender: one AF_PACKET socket with a tx ring, pinned to core 0, sending the
/// frames round-robin for `secs`. Returns the frames handed to the kernel and the time.
pub fn blast(mut sock: Socket, frames: Arc<Vec<Vec<u8>>>, secs: u64) -> (u64, Duration) {
    core_affinity::set_for_current(core_affinity::CoreId { id: 0 });
    let (mut i, mut sent) = (0usize, 0u64);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut round = 0u32;
    loop {
        let mut n = 0;
        while n < 256 && sock.tx_put(&frames[i]) {
            i = (i + 1) % frames.len();
            n += 1;
        }
        sock.tx_kick();
        sent += n as u64;
        round = round.wrapping_add(1);
        if round.is_multiple_of(64) && Instant::now() >= end {
            break;
        }
    }
    // What is still marked goes out with a last kick.
    while sock.tx_pending() > 0 {
        sock.tx_kick();
    }
    (sent, start.elapsed())
}

/// Where the sender sends from: interface `dev` in namespace `ns` (None: ours), whose
/// veth peer `peer` (in `peer_ns`) receives.
pub struct SendFrom<'a> {
    pub ns: Option<&'a str>,
    pub dev: &'a str,
    pub peer_ns: Option<&'a str>,
    pub peer: &'a str,
}

/// Sends `frames` round-robin for `secs` with the chosen sender (`--sender`), on
/// core 0: the frames handed to the kernel and the time taken.
pub fn send_for(
    sender: &str,
    from: &SendFrom<'_>,
    frames: Arc<Vec<Vec<u8>>>,
    secs: u64,
) -> Result<(u64, Duration), String> {
    if sender == "af_packet" {
        let sock = sender_socket(from.ns, from.dev)?;
        return std::thread::spawn(move || blast(sock, frames, secs))
            .join()
            .map_err(|_| "sender panicked".to_string());
    }
    enable_napi(from.peer_ns, from.peer)?;
    let dev = from.dev.to_string();
    in_netns(from.ns, move || {
        core_affinity::set_for_current(core_affinity::CoreId { id: 0 });
        let ifindex = tpacket::ifindex(&dev)?;
        xdp_sender::XdpSender::new(&frames, ifindex)?.blast(secs)
    })?
}

pub fn sender_socket(ns: Option<&str>, dev: &str) -> Result<Socket, String> {
    let dev = dev.to_string();
    in_netns(ns, move || {
        let ifindex = tpacket::ifindex(&dev)?;
        Socket::open(&SocketOptions {
            ifindex,
            geometry: Geometry {
                block_size: 1 << 16,
                block_count: 1,
                frame_size: 256,
                tx_frames: 4096,
                block_timeout_ms: 1,
            },
            qdisc_bypass: true,
            promiscuous: false,
        })
    })?
}

/// Sends each frame once and waits until the ring has sent them.
pub fn send_once(mut sock: Socket, frames: &[Vec<u8>]) {
    for f in frames {
        while !sock.tx_put(f) {
            sock.tx_kick();
        }
    }
    while sock.tx_pending() > 0 {
        sock.tx_kick();
    }
}
