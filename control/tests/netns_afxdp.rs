//! The device on real interfaces through AF_XDP (cargo feature `afxdp`): af_xdp ports
//! on veth pairs between network namespaces, sessions offloaded over gRPC, real TCP
//! and UDP frames, IPv4 and IPv6, tagged and untagged; checks forwarding, drop,
//! mirror, snoop, misses, counters and closed records (the scenario is
//! `common/scenario.rs`, shared with the af_packet test). Needs root; skipped (with
//! the reason) otherwise.
#![cfg(feature = "afxdp")]

mod common;

use common::scenario::{sessions_over_veth_pairs_between_namespaces, Backend};

/// Small UMEMs: tests send tens of frames, and start fast.
const SMALL: &str = "frame_count = 512\nfill_size = 256\ncomp_size = 256\nrx_size = 256\n\
                     tx_size = 256\npool_buffers = 1024\n";

/// Two workers on veths with two queues each, modes chosen by `auto` (native + copy on
/// a veth): frames that arrive on the wrong worker's queue are handed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn af_xdp_native_two_workers_over_veth_pairs() {
    sessions_over_veth_pairs_between_namespaces(Backend {
        keys: &format!("backend = \"af_xdp\"\nxdp_mode = \"auto\"\nzero_copy = \"auto\"\n{SMALL}"),
        prefix: "xn",
        queues: 2,
        workers: 2,
        attach: "",
        extra: "",
    })
    .await;
}

/// Generic (skb) XDP, copy mode, one worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn af_xdp_skb_one_worker_over_veth_pairs() {
    sessions_over_veth_pairs_between_namespaces(Backend {
        keys: &format!("backend = \"af_xdp\"\nxdp_mode = \"skb\"\nzero_copy = false\n{SMALL}"),
        prefix: "xs",
        queues: 1,
        workers: 1,
        attach: "",
        extra: "",
    })
    .await;
}
