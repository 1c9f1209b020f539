//! The traffic simulator: sessions offloaded to a simulating device see real frames
//! in both directions and end by FIN, RST and timeout, as the dataplane counts them.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use control::client::ApiVersion;
use control::testing::TestDevice;
use futures::StreamExt;
use proto::v2::{SessionCloseCode, SessionRequestArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_sessions_carry_traffic_and_end_every_way() {
    let dev = TestDevice::start(
        "[dataplane]\ntick_ms = 20\nworkers = 2\n\
         [simulate]\nenabled = true\npackets_per_second = 5000\nfin_percent = 40\nrst_percent = 30\n\
         min_lifetime_s = 0.3\nmax_lifetime_s = 1.0\n",
    )
    .await;
    let mut c = dev.client(ApiVersion::V2).await;
    let n = 40u64;
    let reqs = (0..n)
        .map(|i| {
            let mut r = if i % 2 == 0 { v4(i) } else { v6(i) };
            r.protocol_id = if i % 4 < 3 { 6 } else { 17 };
            r.cache_timeout = 1;
            r
        })
        .collect();
    assert_eq!(c.add(reqs).await.unwrap().request_status, 0);

    let mut closed = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while (closed.len() as u64) < n && Instant::now() < deadline {
        let mut s = c
            .closed(SessionRequestArgs::default(), false)
            .await
            .unwrap();
        while let Some(r) = s.next().await {
            let r = r.unwrap();
            assert!(closed.insert(r.session_id, r).is_none(), "delivered once");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(closed.len() as u64, n, "every simulated session ended");
    let mut causes = HashMap::new();
    for r in closed.values() {
        *causes.entry(r.session_close_code).or_insert(0) += 1;
        assert!(r.in_packets + r.out_packets > 0, "{r:?} carried traffic");
        assert!(r.in_bytes >= 60 * r.in_packets && r.out_bytes >= 60 * r.out_packets);
        if r.session_close_code == SessionCloseCode::Finack as i32 {
            assert!(r.in_packets >= 2 && r.out_packets >= 1, "{r:?}");
        }
    }
    for code in [
        SessionCloseCode::Finack,
        SessionCloseCode::Rst,
        SessionCloseCode::Timeout,
    ] {
        assert!(
            causes.contains_key(&(code as i32)),
            "some {code:?}: {causes:?}"
        );
    }
    // The device counted the same traffic.
    let stats = dev
        .admin()
        .await
        .get_stats(proto::admin::StatsRequest {})
        .await
        .unwrap()
        .into_inner();
    let hits = stats
        .counters
        .iter()
        .find(|c| c.name == "hits")
        .unwrap()
        .value;
    let counted: u64 = closed.values().map(|r| r.in_packets + r.out_packets).sum();
    assert!(hits >= counted, "hits {hits} >= {counted}");
    dev.stop().await;
}
