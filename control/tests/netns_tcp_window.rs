//! Window tracking on real interfaces: af_packet ports on veth pairs between network
//! namespaces; forged TCP control packets change nothing, real kernel connections
//! picked up mid-stream are not hurt (the scenario is in
//! `common/scenario/tcp_window.rs`). Needs root; skipped otherwise (fails under CI).

mod common;

use common::scenario::{tcp_windows_over_veth_pairs, Backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tcp_packets_change_nothing_and_real_connections_are_not_hurt() {
    tcp_windows_over_veth_pairs(Backend {
        keys: "backend = \"af_packet\"\nblock_size = 65536\nblock_count = 16\n\
               tx_frames = 512\npool_buffers = 4096\n",
        prefix: "tw",
        queues: 1,
        workers: 2,
        attach: "",
        extra: "",
    })
    .await;
}
