//! The device on real interfaces: af_packet ports on veth pairs between network
//! namespaces, sessions offloaded over gRPC, real TCP/UDP frames (the scenario is in
//! `common/scenario.rs`, shared with the af_xdp test). Needs root; skipped otherwise.

mod common;

use common::scenario::{sessions_over_veth_pairs_between_namespaces, Backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn af_packet_sessions_over_veth_pairs_between_namespaces() {
    sessions_over_veth_pairs_between_namespaces(Backend {
        keys: "backend = \"af_packet\"\nblock_size = 65536\nblock_count = 4\n\
               tx_frames = 128\npool_buffers = 1024\n",
        prefix: "af",
        queues: 1,
        workers: 2,
        attach: "",
        extra: "",
    })
    .await;
}
