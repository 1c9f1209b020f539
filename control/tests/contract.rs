//! What the README states where the OpenOffload contract is silent ("API behaviour
//! decided where the contract is silent"), one test per statement, against a real
//! device: TLS on loopback, generated clients, ring ports carrying real frames.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use common::*;
use control::client::{connect_channel, ApiVersion, SessionClient};
use control::testing::TestDevice;
use control::wire::ipv4_to_wire;
use dataplane::packet::{PacketBuf, PacketPool};
use futures::StreamExt;
use proto::v2::{
    AddSessionStatus, RequestStatus, SessionCloseCode, SessionRequest, SessionRequestArgs,
    SessionResponse, SessionState,
};

const APIS: [ApiVersion; 2] = [ApiVersion::V1, ApiVersion::V2];

/// Deadline for an event that should come (a record, a session going live).
const EVENT: Duration = Duration::from_secs(20);

/// How long a stream must stay quiet to count as "kept open": 50 ticks of 20 ms.
const QUIET: Duration = Duration::from_secs(1);

fn args(page_size: u32, page: u32, start_session: u64) -> SessionRequestArgs {
    SessionRequestArgs {
        page_size,
        page,
        start_session,
    }
}

fn pool() -> PacketPool {
    PacketPool::new(256, 2048).unwrap()
}

/// Waits until the device holds `n` closed records not yet delivered.
async fn feed_holds(dev: &TestDevice, n: usize) {
    let device = dev.device();
    wait_for("closed records in the feed", EVENT, || async {
        (device.feed.len() == n).then_some(())
    })
    .await;
}

/// The next record an open GetClosedSessions stream pushes.
async fn pushed(
    s: &mut (impl futures::Stream<Item = Result<SessionResponse, tonic::Status>> + Unpin),
) -> SessionResponse {
    tokio::time::timeout(EVENT, s.next())
        .await
        .expect("the closure is pushed")
        .expect("the stream is open")
        .expect("a record, not an error")
}

/// Every record a GetClosedSessions call (not following) answers.
async fn closed_now(c: &mut SessionClient) -> Vec<SessionResponse> {
    c.closed(args(0, 0, 0), false)
        .await
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_follow_config_keeps_every_closed_stream_open() {
    let cfg = "[api]\nclosed_follow = true\n[dataplane]\ntick_ms = 20\n";
    let mut dev = TestDevice::start_with(cfg, true).await;
    let pool = pool();
    let mut c = dev.client(ApiVersion::V2).await;
    assert_eq!(c.add(vec![v4(1)]).await.unwrap().request_status, 0);
    // No follow metadata: the config alone keeps the stream open.
    let mut s = c.closed(args(0, 0, 0), false).await.unwrap();
    assert!(
        tokio::time::timeout(QUIET, s.next()).await.is_err(),
        "the stream ended or answered with nothing closed"
    );
    reset(dev.ring("outside"), &pool, &v4(1), true);
    let r = pushed(&mut s).await;
    assert_eq!(
        (r.session_id, r.session_close_code),
        (1, SessionCloseCode::Rst as i32)
    );
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_device_ends_a_follow_stream_with_unavailable() {
    let mut dev = TestDevice::start_with("[dataplane]\ntick_ms = 20\n", true).await;
    let pool = pool();
    let mut c = dev.client(ApiVersion::V2).await;
    assert_eq!(c.add(vec![v4(1)]).await.unwrap().request_status, 0);
    let mut s = c.closed(args(0, 0, 0), true).await.unwrap();
    reset(dev.ring("outside"), &pool, &v4(1), true);
    assert_eq!(pushed(&mut s).await.session_id, 1);
    // The stream now waits for more; the device stops under it.
    let stop = tokio::spawn(dev.stop());
    let end = tokio::time::timeout(EVENT, s.next())
        .await
        .expect("the stream ends when the device stops")
        .expect("with a status, not a silent end");
    let status = end.expect_err("UNAVAILABLE");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "the device is stopping");
    stop.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_size_ends_a_follow_stream() {
    let mut dev = TestDevice::start_with("[dataplane]\ntick_ms = 20\n", true).await;
    let pool = pool();
    let mut c = dev.client(ApiVersion::V2).await;
    assert_eq!(
        c.add(vec![v4(1), v4(2), v4(3)])
            .await
            .unwrap()
            .request_status,
        0
    );
    let mut s = c.closed(args(2, 0, 0), true).await.unwrap();
    for id in 1..=3 {
        reset(dev.ring("outside"), &pool, &v4(id), true);
    }
    let mut got = Vec::new();
    while let Some(r) = tokio::time::timeout(EVENT, s.next())
        .await
        .expect("two records, then the end of the stream")
    {
        got.push(r.unwrap().session_id);
    }
    assert_eq!(got.len(), 2, "{got:?}");
    // The third stays for the next call.
    let rest: Vec<u64> = closed_now(&mut c)
        .await
        .iter()
        .map(|r| r.session_id)
        .collect();
    assert_eq!(rest.len(), 1);
    assert!(!got.contains(&rest[0]));
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_answers_closed_with_final_counters_and_unknown_close_code() {
    let mut dev = TestDevice::start_with("[dataplane]\ntick_ms = 20\n", true).await;
    let pool = pool();
    for (k, api) in APIS.into_iter().enumerate() {
        let mut c = dev.client(api).await;
        let r = v4(10 + k as u64);
        assert_eq!(c.add(vec![r.clone()]).await.unwrap().request_status, 0);
        let mut bytes = 0;
        for _ in 0..3 {
            bytes += send(dev.ring("outside"), &pool, &r, true, ACK, 100) as u64;
        }
        bytes += send(dev.ring("inside"), &pool, &r, false, ACK, 10) as u64;
        let id = r.session_id;
        wait_for("the frames counted", EVENT, || {
            let mut c = c.clone();
            async move {
                let g = c.get(id).await.unwrap();
                (g.in_packets == 3 && g.out_packets == 1).then_some(())
            }
        })
        .await;
        let d = c.delete(id).await.unwrap();
        assert_eq!(d.session_id, id);
        assert_eq!(d.request_status, RequestStatus::Accepted as i32);
        assert_eq!(d.session_state, SessionState::Closed as i32);
        assert_eq!(
            d.session_close_code,
            SessionCloseCode::UnknownCloseCode as i32
        );
        assert_eq!((d.in_packets, d.out_packets), (3, 1));
        assert_eq!(d.in_bytes + d.out_bytes, bytes);
        assert!(d.end_time.is_some(), "{d:?}");
        // A delete is not a closure to report.
        assert!(closed_now(&mut c).await.is_empty());
    }
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_closed_undelivered_session_forgets_it() {
    let mut dev = TestDevice::start_with("[dataplane]\ntick_ms = 20\n", true).await;
    let pool = pool();
    let mut c = dev.client(ApiVersion::V2).await;
    assert_eq!(c.add(vec![v4(1), v4(2)]).await.unwrap().request_status, 0);
    reset(dev.ring("outside"), &pool, &v4(1), true);
    reset(dev.ring("outside"), &pool, &v4(2), true);
    feed_holds(&dev, 2).await;
    let d = c.delete(1).await.unwrap();
    assert_eq!(d.request_status, RequestStatus::Accepted as i32, "{d:?}");
    assert_eq!(d.session_state, SessionState::Closed as i32);
    assert_eq!(
        d.session_close_code,
        SessionCloseCode::Rst as i32,
        "its RST record"
    );
    assert_eq!(d.in_packets, 2, "the ACK and the RST");
    // Forgotten: not delivered, not found, its id free again.
    let rest: Vec<u64> = closed_now(&mut c)
        .await
        .iter()
        .map(|r| r.session_id)
        .collect();
    assert_eq!(rest, vec![2]);
    assert_eq!(
        c.get(1).await.unwrap().request_status,
        RequestStatus::RejectedSessionNonexistent as i32
    );
    assert_eq!(c.add(vec![v4(1)]).await.unwrap().request_status, 0);
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_of_closed_undelivered_sessions_stay_taken() {
    let mut dev = TestDevice::start_with("[dataplane]\ntick_ms = 20\n", true).await;
    let pool = pool();
    let mut c = dev.client(ApiVersion::V2).await;
    assert_eq!(c.add(vec![v4(1)]).await.unwrap().request_status, 0);
    reset(dev.ring("outside"), &pool, &v4(1), true);
    feed_holds(&dev, 1).await;
    // The same id on another 5-tuple: still taken.
    let mut again = v4(1);
    again.source_port += 1;
    let r = c.add(vec![again.clone()]).await.unwrap();
    assert_eq!(
        r.request_status,
        AddSessionStatus::SessionAlreadyExists as i32,
        "{r:?}"
    );
    assert_eq!(closed_now(&mut c).await.len(), 1);
    // Delivered: free.
    assert_eq!(c.add(vec![again]).await.unwrap().request_status, 0);
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_in_band_carry_the_id_and_unknown_state() {
    let dev = TestDevice::start("").await;
    for api in APIS {
        let mut c = dev.client(api).await;
        for answer in [
            c.get(424_242).await.unwrap(),
            c.delete(424_242).await.unwrap(),
        ] {
            assert_eq!(answer.session_id, 424_242);
            assert_eq!(
                answer.request_status,
                RequestStatus::RejectedSessionNonexistent as i32
            );
            assert_eq!(answer.session_state, SessionState::UnknownState as i32);
            assert_eq!(
                answer.session_close_code,
                SessionCloseCode::UnknownCloseCode as i32
            );
        }
    }
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_fields_are_ignored_for_an_ipv4_session() {
    let dev = TestDevice::start("").await;
    let mut c = dev.client(ApiVersion::V2).await;
    let mut r = v4(1);
    r.source_ipv6 = vec![1, 2, 3];
    r.destination_ipv6 = vec![0xff; 40];
    let a = c.add(vec![r]).await.unwrap();
    assert_eq!(a.request_status, 0, "{a:?}");
    assert_eq!(c.get(1).await.unwrap().request_status, 0);
    dev.stop().await;
}

/// The destination MAC of the frame the inside port sends for `r`'s first packet.
async fn next_hop_mac_of(dev: &mut TestDevice, pool: &PacketPool, r: &SessionRequest) -> [u8; 6] {
    send(dev.ring("outside"), pool, r, true, ACK, 0);
    let end = dev.ring("inside");
    let mut out: Vec<PacketBuf> = Vec::new();
    let deadline = std::time::Instant::now() + EVENT;
    while out.is_empty() {
        assert!(std::time::Instant::now() < deadline, "nothing forwarded");
        end.peer.collect(&mut out);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(out.len(), 1);
    out[0].data()[..6].try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_next_hop_v6_wins_over_action_next_hop() {
    let cfg = r#"
[[next_hop]]
addr = "192.0.2.1"
mac = "02:00:00:00:0a:01"

[[next_hop]]
addr = "2001:db8::1"
mac = "02:00:00:00:0a:06"
"#;
    let mut dev = TestDevice::start_with(cfg, true).await;
    let pool = pool();
    let mut c = dev.client(ApiVersion::V2).await;
    let v4_hop = ipv4_to_wire(Ipv4Addr::new(192, 0, 2, 1));
    let v6_hop = "2001:db8::1"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets()
        .to_vec();
    let mut both = v4(1);
    let action = both.action.as_mut().unwrap();
    action.action_next_hop = v4_hop;
    action.action_next_hop_v6 = v6_hop;
    // Zero/empty means none: the other one applies.
    let mut only_v4 = v4(2);
    only_v4.action.as_mut().unwrap().action_next_hop = v4_hop;
    let mut zero_v6 = v4(3);
    let action = zero_v6.action.as_mut().unwrap();
    action.action_next_hop = v4_hop;
    action.action_next_hop_v6 = vec![0; 16];
    let a = c
        .add(vec![both.clone(), only_v4.clone(), zero_v6.clone()])
        .await;
    assert_eq!(a.unwrap().request_status, 0);
    assert_eq!(
        next_hop_mac_of(&mut dev, &pool, &both).await,
        [2, 0, 0, 0, 0x0a, 0x06]
    );
    assert_eq!(
        next_hop_mac_of(&mut dev, &pool, &only_v4).await,
        [2, 0, 0, 0, 0x0a, 0x01]
    );
    assert_eq!(
        next_hop_mac_of(&mut dev, &pool, &zero_v6).await,
        [2, 0, 0, 0, 0x0a, 0x01]
    );
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_is_refused_without_a_collector() {
    let ports = r#"
[[port]]
name = "outside"
backend = "ring"
lif = 1
[[port]]
name = "inside"
backend = "ring"
lif = 2
[[port]]
name = "firewall"
backend = "ring"
"#;
    let mirror = |id| {
        let mut r = v4(id);
        r.action.as_mut().unwrap().action_type = proto::v2::ActionType::Mirror as i32;
        r
    };
    let dev = TestDevice::start(ports).await;
    let mut c = dev.client(ApiVersion::V2).await;
    let a = c.add(vec![mirror(1), v4(2)]).await.unwrap();
    assert_eq!(a.error_status, 1, "{a:?}");
    assert_eq!(
        a.response_error
            .iter()
            .map(|e| (e.session_id, e.error_status))
            .collect::<Vec<_>>(),
        vec![(1, AddSessionStatus::SessionRejected as i32)]
    );
    dev.stop().await;
    // With a collector (the default device) the same session is accepted.
    let dev = TestDevice::start("").await;
    let mut c = dev.client(ApiVersion::V2).await;
    assert_eq!(c.add(vec![mirror(1)]).await.unwrap().request_status, 0);
    dev.stop().await;
}

/// Checks that the device holds nothing of `ids`: GetSession and GetAllSessions do
/// not show them, no closed record of them is reported, and each can be added again.
async fn none_of_them_left(dev: &TestDevice, c: &mut SessionClient, ids: &[u64]) {
    for &id in ids {
        let r = c.get(id).await.unwrap();
        assert_eq!(
            r.request_status,
            RequestStatus::RejectedSessionNonexistent as i32,
            "session {id} is still there: {r:?}"
        );
    }
    let listed = c.list(args(0, 0, 0)).await.unwrap().session_info;
    assert!(listed.is_empty(), "still listed: {listed:?}");
    assert_eq!(dev.device().engine.sessions(), 0, "left in the dataplane");
    let reported: Vec<u64> = closed_now(c).await.iter().map(|r| r.session_id).collect();
    assert!(reported.is_empty(), "closed records reported: {reported:?}");
    let again = c.add(ids.iter().map(|&id| v4(id)).collect()).await.unwrap();
    assert_eq!(
        again.request_status, 0,
        "the ids can be added again: {again:?}"
    );
    assert_eq!(
        c.list(args(0, 0, 0)).await.unwrap().session_info.len(),
        ids.len()
    );
}

/// An AddSession message as raw bytes: a valid SessionRequest, or anything else.
#[derive(Clone, Debug, Default, PartialEq)]
struct RawMessage(Vec<u8>);

impl prost::Message for RawMessage {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

fn raw(r: &SessionRequest) -> RawMessage {
    RawMessage(prost::Message::encode_to_vec(r))
}

/// One v2 AddSession call whose stream is the given raw messages, over the device's
/// TLS channel.
async fn add_raw(
    dev: &TestDevice,
    messages: Vec<RawMessage>,
) -> Result<proto::v2::AddSessionResponse, tonic::Status> {
    let channel = connect_channel(&dev.options(ApiVersion::V2)).await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<RawMessage, proto::v2::AddSessionResponse>::default();
    let path = http::uri::PathAndQuery::from_static("/openoffload.v2.SessionTable/AddSession");
    let request = tonic::Request::new(tokio_stream::iter(messages));
    grpc.client_streaming(request, path, codec)
        .await
        .map(|r| r.into_inner())
}

/// A call that ends non-OK leaves none of its sessions: a client that resets its
/// AddSession stream after some sessions were accepted (one of them closed since)
/// finds none of them afterwards.
///
/// The client resets the stream the way hyper does for a request body that fails:
/// its fourth message is over its own encoding limit. (tonic's abort of a call does
/// not reset the stream: dropping the sender half-closes it, a normal end.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_stream_reset_by_the_client_leaves_none_of_its_sessions() {
    let mut dev = TestDevice::start_with("[dataplane]\ntick_ms = 20\n", true).await;
    let channel = connect_channel(&dev.options(ApiVersion::V2)).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<RawMessage>(4);
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(1000);
    let call = tokio::spawn(async move {
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<RawMessage, proto::v2::AddSessionResponse>::default();
        let path = http::uri::PathAndQuery::from_static("/openoffload.v2.SessionTable/AddSession");
        let request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        grpc.client_streaming(request, path, codec).await
    });
    for id in [1, 2, 3] {
        tx.send(raw(&v4(id))).await.unwrap();
    }
    // All three are in the dataplane while the stream is still open (the call answers
    // for them when it ends); then 3 closes (RST), so its record waits in the feed.
    let device = dev.device();
    wait_for("the streamed sessions in the dataplane", EVENT, || async {
        (device.engine.sessions() == 3).then_some(())
    })
    .await;
    reset(dev.ring("outside"), &pool(), &v4(3), true);
    feed_holds(&dev, 1).await;
    // The client's stream breaks: hyper resets it (RST_STREAM).
    tx.send(RawMessage(vec![0; 2000])).await.unwrap();
    let e = call.await.unwrap().unwrap_err();
    assert!(
        format!("{e:?}").contains("Reset(StreamId(1), INTERNAL_ERROR, User)"),
        "the client reset its stream: {e:?}"
    );
    let device = dev.device();
    let mut c = dev.client(ApiVersion::V2).await;
    wait_for("the reset call's sessions removed", EVENT, || async {
        device.directory.is_empty().then_some(())
    })
    .await;
    assert!(
        device.feed.is_empty(),
        "the closed record of 3 is forgotten"
    );
    none_of_them_left(&dev, &mut c, &[1, 2, 3]).await;
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_max_add_stream_sessions_is_resource_exhausted_and_leaves_none() {
    let dev = TestDevice::start("[api]\nmax_add_stream = 10\n").await;
    let mut c = dev.client(ApiVersion::V2).await;
    let e = c.add((0..11).map(v4).collect()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("api.max_add_stream"), "{e:?}");
    assert!(
        e.message()
            .ends_with("; the 10 sessions of this call that were accepted were removed"),
        "{e:?}"
    );
    none_of_them_left(&dev, &mut c, &(0..10).collect::<Vec<_>>()).await;
    let r = c.add((100..110).map(v4).collect()).await.unwrap();
    assert_eq!(r.request_status, 0, "ten is allowed");
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_add_message_fails_the_call_and_leaves_none() {
    let dev = TestDevice::start("").await;
    let mut c = dev.client(ApiVersion::V2).await;
    // Field 1 (session_id, a varint) with its value cut off.
    let broken = RawMessage(vec![0x08]);
    let e = add_raw(&dev, vec![raw(&v4(1)), raw(&v4(2)), broken])
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal, "{e:?}");
    assert!(
        e.message()
            .ends_with("; the 2 sessions of this call that were accepted were removed"),
        "{e:?}"
    );
    none_of_them_left(&dev, &mut c, &[1, 2]).await;
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_add_message_is_resource_exhausted_and_leaves_none() {
    let dev = TestDevice::start("[api]\nmax_message_bytes = 4096\n").await;
    let mut c = dev.client(ApiVersion::V2).await;
    // A valid request with 5,000 bytes of an unknown field (tag 100, bytes).
    let mut big = raw(&v4(3));
    big.0.extend_from_slice(&[0xa2, 0x06, 0x88, 0x27]);
    big.0.extend(std::iter::repeat_n(0u8, 5000));
    let e = add_raw(&dev, vec![raw(&v4(1)), raw(&v4(2)), big])
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("api.max_message_bytes"), "{e:?}");
    assert!(
        e.message()
            .ends_with("; the 2 sessions of this call that were accepted were removed"),
        "{e:?}"
    );
    none_of_them_left(&dev, &mut c, &[1, 2, 3]).await;
    dev.stop().await;
}

/// A unary or server-streaming request over `api.max_message_bytes` is decoded by
/// tonic before any handler runs: its answer is RESOURCE_EXHAUSTED too, on both API
/// versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_unary_request_is_resource_exhausted() {
    let dev = TestDevice::start("[api]\nmax_message_bytes = 4096\n").await;
    // A session id (field 1) and 5,000 bytes of an unknown field (tag 100, bytes).
    let mut big = vec![0x08, 0x07, 0xa2, 0x06, 0x88, 0x27];
    big.extend(std::iter::repeat_n(0u8, 5000));
    for (version, path) in [
        (ApiVersion::V2, "/openoffload.v2.SessionTable/GetSession"),
        (ApiVersion::V1, "/openoffload.v1.SessionTable/getSession"),
        (ApiVersion::V2, "/openoffload.v2.SessionTable/DeleteSession"),
        (
            ApiVersion::V2,
            "/openoffload.v2.SessionTable/GetClosedSessions",
        ),
    ] {
        let channel = connect_channel(&dev.options(version)).await.unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<RawMessage, RawMessage>::default();
        let request = tonic::Request::new(RawMessage(big.clone()));
        let e = grpc
            .unary(request, http::uri::PathAndQuery::from_static(path), codec)
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{path}: {e:?}");
        assert!(e.message().contains("api.max_message_bytes"), "{e:?}");
    }
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_key_is_the_last_id_while_more_remain_and_0_when_complete() {
    let dev = TestDevice::start("[api]\nlist_cap = 10\n").await;
    let mut c = dev.client(ApiVersion::V2).await;
    assert_eq!(
        c.add((0..5).map(v4).collect())
            .await
            .unwrap()
            .request_status,
        0
    );
    let all = c.list(args(0, 0, 0)).await.unwrap();
    assert_eq!(all.session_info.len(), 5);
    assert_eq!(all.next_key, 0, "complete");
    assert_eq!(
        c.add((5..12).map(v4).collect())
            .await
            .unwrap()
            .request_status,
        0
    );
    let first = c.list(args(0, 0, 0)).await.unwrap();
    assert_eq!(first.session_info.len(), 10);
    assert_eq!(first.next_key, 9, "more remain");
    // Going on from next_key (as clients do) gives the rest.
    let rest = c.list(args(0, 0, first.next_key)).await.unwrap();
    let ids: Vec<u64> = rest.session_info.iter().map(|s| s.session_id).collect();
    assert_eq!(ids, vec![10, 11]);
    assert_eq!(rest.next_key, 0, "complete");
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_style_is_an_offset_into_the_current_order() {
    let dev = TestDevice::start("").await;
    let mut c = dev.client(ApiVersion::V2).await;
    assert_eq!(
        c.add((0..10).map(v4).collect())
            .await
            .unwrap()
            .request_status,
        0
    );
    let page = |p: proto::v2::SessionResponses| -> Vec<u64> {
        p.session_info.iter().map(|s| s.session_id).collect()
    };
    assert_eq!(page(c.list(args(3, 1, 0)).await.unwrap()), vec![0, 1, 2]);
    for id in [0, 1] {
        assert_eq!(c.delete(id).await.unwrap().request_status, 0);
    }
    // Page 2 is ids 3rd to 5th of what is there now: 5, 6, 7 (3 and 4 moved to page 1).
    assert_eq!(page(c.list(args(3, 2, 0)).await.unwrap()), vec![5, 6, 7]);
    assert_eq!(page(c.list(args(3, 1, 0)).await.unwrap()), vec![2, 3, 4]);
    dev.stop().await;
}

fn wall(t: &Option<prost_types::Timestamp>) -> SystemTime {
    let t = t.as_ref().expect("a timestamp");
    SystemTime::UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos as u32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_end_times_are_wall_clock_times_of_add_and_close() {
    let mut dev = TestDevice::start_with("[dataplane]\ntick_ms = 20\n", true).await;
    let pool = pool();
    let mut c = dev.client(ApiVersion::V2).await;
    // Timestamps are rounded to whole ticks at most; a clock read is exact.
    let slack = Duration::from_millis(50);
    let before_add = SystemTime::now();
    assert_eq!(c.add(vec![v4(1)]).await.unwrap().request_status, 0);
    let after_add = SystemTime::now();
    let live = c.get(1).await.unwrap();
    let start = wall(&live.start_time);
    assert!(
        start + slack >= before_add && start <= after_add + slack,
        "{start:?} not within {before_add:?}..{after_add:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before_close = SystemTime::now();
    reset(dev.ring("outside"), &pool, &v4(1), true);
    feed_holds(&dev, 1).await;
    let after_close = SystemTime::now();
    let rec = closed_now(&mut c).await.pop().unwrap();
    assert_eq!(wall(&rec.start_time), start);
    let end = wall(&rec.end_time);
    assert!(
        end + slack >= before_close && end <= after_close + slack,
        "{end:?} not within {before_close:?}..{after_close:?}"
    );
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_5_tuple_on_one_in_lif_with_another_out_lif_already_exists() {
    let dev = TestDevice::start("").await;
    let mut c = dev.client(ApiVersion::V2).await;
    assert_eq!(c.add(vec![v4(1)]).await.unwrap().request_status, 0);
    // Out through VLAN 100 of the inside port: another out_lif, same in_lif.
    let mut other_out = v4(2);
    other_out.source_ip = v4(1).source_ip;
    other_out.source_port = v4(1).source_port;
    other_out.out_lif = (100 << 16) | 2;
    let r = c.add(vec![other_out]).await.unwrap();
    assert_eq!(
        r.request_status,
        AddSessionStatus::SessionAlreadyExists as i32,
        "{r:?}"
    );
    assert_eq!(c.get(2).await.unwrap().request_status, 2);
    dev.stop().await;
}

/// Closed records out of the workers (in the engine's channel or the feed).
fn closed_out(dev: &TestDevice) -> usize {
    let d = dev.device();
    d.feed.len() + d.engine.closed().len()
}

/// `dataplane.closed_held` bounds the closed records out of the workers whatever the
/// calls: GetAllSessions, GetSession and DeleteSession of closed ids find them (in
/// the workers' tables beyond the bound) without pulling more out, and every record
/// is still delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_held_bounds_the_records_out_of_the_workers_whatever_the_calls() {
    const HELD: usize = 10;
    const SESSIONS: u64 = 200;
    let cfg = format!("[dataplane]\nclosed_held = {HELD}\ntick_ms = 20\n");
    let mut dev = TestDevice::start_with(&cfg, true).await;
    let mut c = dev.client(ApiVersion::V2).await;
    let ids: Vec<u64> = (1..=SESSIONS).collect();
    let a = c.add(ids.iter().map(|&id| v4(id)).collect()).await.unwrap();
    assert_eq!(a.request_status, 0, "{a:?}");
    // Room for every frame: the RSTs also go to the firewall ring, which nobody drains.
    let pool = PacketPool::new(1024, 2048).unwrap();
    // RSTs in chunks the ring holds, each chunk closed (GetSession) before the next.
    for chunk in ids.chunks(20) {
        for &id in chunk {
            reset(dev.ring("outside"), &pool, &v4(id), true);
        }
        wait_for("a chunk of sessions closed", EVENT, || {
            let mut c = c.clone();
            let dev = &dev;
            async move {
                let mut closed = 0;
                for &id in chunk {
                    let r = c.get(id).await.unwrap();
                    closed += (r.session_state == SessionState::Closed as i32) as usize;
                }
                assert!(closed_out(dev) <= HELD, "{} out", closed_out(dev));
                (closed == chunk.len()).then_some(())
            }
        })
        .await;
    }
    // GetAllSessions until every session shows closed.
    wait_for("every session closed", EVENT, || {
        let mut c = c.clone();
        let dev = &dev;
        async move {
            let all = c.list(args(0, 0, 0)).await.unwrap().session_info;
            assert!(closed_out(dev) <= HELD, "{} out", closed_out(dev));
            let closed = all
                .iter()
                .filter(|r| r.session_state == SessionState::Closed as i32)
                .count();
            (closed == SESSIONS as usize).then_some(())
        }
    })
    .await;
    for &id in &ids {
        let r = c.get(id).await.unwrap();
        assert_eq!(r.session_state, SessionState::Closed as i32, "{r:?}");
        assert_eq!(r.session_close_code, SessionCloseCode::Rst as i32);
    }
    assert!(
        closed_out(&dev) <= HELD,
        "after GetSession: {}",
        closed_out(&dev)
    );
    let deleted: Vec<u64> = ids.iter().copied().filter(|id| id % 10 == 0).collect();
    for &id in &deleted {
        let r = c.delete(id).await.unwrap();
        assert_eq!(r.session_id, id, "{r:?}");
        assert!(
            closed_out(&dev) <= HELD,
            "after delete: {}",
            closed_out(&dev)
        );
    }
    // The readers take the rest, each record once; the deleted never come.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + EVENT;
    while seen.len() < ids.len() - deleted.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} delivered",
            seen.len()
        );
        for r in closed_now(&mut c).await {
            assert!(seen.insert(r.session_id), "{} twice", r.session_id);
        }
    }
    assert!(
        deleted.iter().all(|id| !seen.contains(id)),
        "a deleted record came"
    );
    assert!(dev.device().directory.is_empty());
    assert_eq!(closed_out(&dev), 0);
    dev.stop().await;
}
