//! The shared netns scenario (`common/scenario.rs`: forwarding both ways, drop, mirror,
//! snoop, misses, TCP control copies, counters, FIN/RST/timeout closed records, with
//! real TCP and UDP frames, IPv4 and IPv6, tagged and untagged) with the device's
//! ports on DPDK `net_af_packet` vdevs over the veths (feature `dpdk`, as root,
//! without hugepages). DPDK's EAL is set up once per process: this file is its own
//! test binary with a single test.
#![cfg(feature = "dpdk")]

mod common;

use common::scenario::{sessions_over_veth_pairs_between_namespaces, Backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpdk_net_af_packet_over_veth_pairs() {
    sessions_over_veth_pairs_between_namespaces(Backend {
        keys: "backend = \"dpdk\"\n",
        prefix: "dp",
        queues: 1,
        // net_af_packet has no RSS: two workers exercise the software hand-off.
        workers: 2,
        attach: "device = \"net_af_packet{n},iface={iface},qpairs=2\"",
        extra:
            "[dpdk]\neal_args = [\"--no-huge\", \"--no-shconf\", \"-m\", \"512\", \"-l\", \"0\", \
                \"--no-telemetry\", \"--log-level\", \"lib.eal:warning\"]\nmbufs = 8191\n\
                pool_buffers = 2048\n",
    })
    .await;
}
