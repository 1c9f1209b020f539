//! Every refusal says why: the reasons come back in the AddSession answer's trailers
//! (read with a real tonic client over TLS), the counters by reason move in the stats
//! and in the Prometheus text, and the wire answer stays the contract's.

mod common;

use std::collections::HashMap;

use common::*;
use control::client::ApiVersion;
use control::refusal::{told, Told, TRAILER_BUDGET};
use control::testing::TestDevice;
use proto::admin::{MetricsRequest, StatsRequest};
use proto::v2::AddSessionStatus;

/// lifs 1 and 2, a firewall port, no collector; capacity 4.
const NO_COLLECTOR: &str = r#"
[dataplane]
max_sessions = 4
firewall_port = "firewall"

[[port]]
name = "outside"
backend = "ring"
lif = 1
mac = "02:00:00:00:01:01"

[[port]]
name = "inside"
backend = "ring"
lif = 2
mac = "02:00:00:00:01:02"

[[port]]
name = "firewall"
backend = "ring"
mac = "02:00:00:00:01:fe"
"#;

async fn rejected_counters(dev: &TestDevice) -> HashMap<String, u64> {
    let s = dev
        .admin()
        .await
        .get_stats(StatsRequest {})
        .await
        .unwrap()
        .into_inner();
    s.counters
        .into_iter()
        .filter(|c| c.name.starts_with("api_rejected_"))
        .map(|c| (c.name, c.value))
        .collect()
}

fn told_of(id: u64, reason: &str, text: &str) -> Told {
    Told {
        session_id: id,
        reason: reason.into(),
        text: text.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_is_named_in_the_trailers_and_counted_by_reason() {
    let dev = TestDevice::start(NO_COLLECTOR).await;
    for api in [ApiVersion::V1, ApiVersion::V2] {
        let mut c = dev.client(api).await;
        let base = if api == ApiVersion::V1 { 100 } else { 200 };
        let before = rejected_counters(&dev).await;

        let first = v4(base);
        let mut bad_proto = v4(base + 1);
        bad_proto.protocol_id = 1;
        let mut bad_port = v4(base + 2);
        bad_port.source_port = 70_000;
        let mut unknown_lif = v4(base + 3);
        unknown_lif.out_lif = 9;
        let same_id = v4(base);
        let mut same_tuple = first.clone();
        same_tuple.session_id = base + 5;
        let mut mirror = v4(base + 6);
        mirror.action.as_mut().unwrap().action_type = 2;
        let mut bad_v6 = v6(base + 7);
        bad_v6.destination_ipv6 = vec![1; 3];
        let stream = vec![
            first,
            bad_proto,
            bad_port,
            unknown_lif,
            same_id,
            same_tuple,
            mirror,
            bad_v6,
        ];
        let answer = c.add_call(stream).await.unwrap();
        let (refusals, omitted) = told(answer.metadata());
        let r = answer.into_inner();
        // The contract's answer is unchanged: status numbers and the bitmask.
        assert_eq!(r.error_status, 0b1111_1110, "{r:?}");
        let statuses: Vec<(u64, i32)> = r
            .response_error
            .iter()
            .map(|e| (e.session_id, e.error_status))
            .collect();
        let rej = AddSessionStatus::SessionRejected as i32;
        let exists = AddSessionStatus::SessionAlreadyExists as i32;
        assert_eq!(
            statuses,
            vec![
                (base + 1, rej),
                (base + 2, rej),
                (base + 3, rej),
                (base, exists),
                (base + 5, exists),
                (base + 6, rej),
                (base + 7, rej),
            ]
        );
        assert_eq!(omitted, 0);
        assert_eq!(
            refusals,
            vec![
                told_of(
                    base + 1,
                    "invalid_protocol",
                    "protocol 1 is neither TCP (6) nor UDP (17)"
                ),
                told_of(base + 2, "invalid_port", "source_port 70000 above 65535"),
                told_of(
                    base + 3,
                    "unknown_lif",
                    "unknown lif 9 in out_lif (lifs: 1, 2)"
                ),
                told_of(
                    base,
                    "id_exists",
                    &format!("session id {base} already exists")
                ),
                told_of(
                    base + 5,
                    "tuple_exists",
                    &format!("7-tuple already offloaded as session {base}")
                ),
                told_of(
                    base + 6,
                    "no_collector",
                    "mirror needs a collector port (dataplane.collector_port)"
                ),
                told_of(
                    base + 7,
                    "invalid_address",
                    "destination_ipv6 has 3 bytes, not 16"
                ),
            ]
        );
        let after = rejected_counters(&dev).await;
        for (reason, n) in [
            ("invalid_protocol", 1),
            ("invalid_port", 1),
            ("unknown_lif", 1),
            ("id_exists", 1),
            ("tuple_exists", 1),
            ("no_collector", 1),
            ("invalid_address", 1),
            ("table_full", 0),
            ("invalid_action", 0),
        ] {
            let k = format!("api_rejected_{reason}");
            assert_eq!(after[&k] - before[&k], n, "{k}");
        }
        // An all-accepted call carries no refusal trailers.
        let answer = c.add_call(vec![v4(base + 50)]).await.unwrap();
        assert_eq!(told(answer.metadata()), (vec![], 0));
        c.delete(base).await.unwrap();
        c.delete(base + 50).await.unwrap();
    }

    // A full table says its capacity.
    let mut c = dev.client(ApiVersion::V2).await;
    let answer = c.add_call((300..306).map(v4).collect()).await.unwrap();
    let (refusals, _) = told(answer.metadata());
    assert_eq!(
        refusals,
        vec![
            told_of(304, "table_full", "table full (capacity 4)"),
            told_of(305, "table_full", "table full (capacity 4)"),
        ]
    );
    let counters = rejected_counters(&dev).await;
    assert_eq!(counters["api_rejected_table_full"], 2);
    assert_eq!(counters["api_rejected_unknown_lif"], 2);

    // The Prometheus text: one family, the reason as a label.
    let text = dev
        .admin()
        .await
        .get_metrics(MetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .text;
    for line in [
        "# TYPE offloadd_api_rejected_total counter",
        "offloadd_api_rejected_total{reason=\"table_full\"} 2",
        "offloadd_api_rejected_total{reason=\"unknown_lif\"} 2",
        "offloadd_api_rejected_total{reason=\"tuple_exists\"} 2",
        "offloadd_api_rejected_total{reason=\"invalid_ip_version\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trailers_stay_within_their_budget_and_count_what_they_leave_out() {
    let dev = TestDevice::start("").await;
    let mut c = dev.client(ApiVersion::V2).await;
    // The C++ client's batch: one 7-tuple under 64 ids.
    let batch: Vec<_> = (0..64)
        .map(|i| {
            let mut r = v4(0);
            r.session_id = i;
            r
        })
        .collect();
    let answer = c.add_call(batch).await.unwrap();
    let (refusals, omitted) = told(answer.metadata());
    let r = answer.into_inner();
    assert_eq!(r.response_error.len(), 63);
    assert_eq!(refusals.len() as u64 + omitted, 63);
    assert!(omitted > 0, "63 reasons do not fit {TRAILER_BUDGET} bytes");
    // The first ones, in stream order.
    for (k, t) in refusals.iter().enumerate() {
        assert_eq!(
            *t,
            told_of(
                k as u64 + 1,
                "tuple_exists",
                "7-tuple already offloaded as session 0"
            )
        );
    }
    let bytes: usize = answer_bytes(&refusals);
    assert!(bytes <= TRAILER_BUDGET, "{bytes}");
    dev.stop().await;
}

/// Trailer bytes as grpc-core counts them (key + value + 32 per entry).
fn answer_bytes(refusals: &[Told]) -> usize {
    refusals
        .iter()
        .map(|t| {
            let value = format!("{} {} {}", t.session_id, t.reason, t.text);
            control::refusal::TRAILER.len() + value.len() + 32
        })
        .sum()
}
