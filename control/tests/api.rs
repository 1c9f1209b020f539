//! The OpenOffload contract against a real device: TLS on loopback, generated clients
//! of both API versions, the ring dataplane underneath.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use control::client::{ApiVersion, SessionClient};
use control::testing::TestDevice;
use futures::StreamExt;
use proto::v2::{
    AddSessionStatus, RequestStatus, SessionCloseCode, SessionRequestArgs, SessionState,
};

const APIS: [ApiVersion; 2] = [ApiVersion::V1, ApiVersion::V2];

fn args(page_size: u32, page: u32, start_session: u64) -> SessionRequestArgs {
    SessionRequestArgs {
        page_size,
        page,
        start_session,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_get_delete_in_both_versions() {
    let dev = TestDevice::start("").await;
    for (k, api) in APIS.into_iter().enumerate() {
        let mut c = dev.client(api).await;
        let base = 100 * k as u64;
        let r = c.add(vec![v4(base), v6(base + 1)]).await.unwrap();
        assert_eq!(r.request_status, AddSessionStatus::SessionAccepted as i32);
        assert_eq!(r.error_status, 0);
        assert!(r.response_error.is_empty());
        assert!(r.start_time.is_some());
        for id in [base, base + 1] {
            let s = c.get(id).await.unwrap();
            assert_eq!(s.session_id, id);
            assert_eq!(s.request_status, RequestStatus::Accepted as i32);
            assert_eq!(s.session_state, SessionState::Established as i32);
            assert_eq!(s.session_close_code, SessionCloseCode::NotClosed as i32);
            assert_eq!((s.in_packets, s.out_packets), (0, 0));
            assert!(s.start_time.is_some() && s.end_time.is_none());
        }
        let d = c.delete(base).await.unwrap();
        assert_eq!(d.session_id, base);
        assert_eq!(d.request_status, RequestStatus::Accepted as i32);
        assert_eq!(d.session_state, SessionState::Closed as i32);
        assert!(d.end_time.is_some());
        for s in [
            c.get(base).await.unwrap(),
            c.delete(base).await.unwrap(),
            c.get(999_999).await.unwrap(),
        ] {
            assert_eq!(
                s.request_status,
                RequestStatus::RejectedSessionNonexistent as i32
            );
        }
        // The deleted session is not reported as closed.
        let mut closed = c.closed(args(0, 0, 0), false).await.unwrap();
        assert!(closed.next().await.is_none());
    }
    // Session 0 is a valid id.
    let mut c = dev.client(ApiVersion::V2).await;
    let r = c.add(vec![v4(0)]).await.unwrap();
    assert_eq!(r.request_status, 0, "{r:?}");
    assert_eq!(c.get(0).await.unwrap().request_status, 0);
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_acceptance_names_each_rejection() {
    let dev = TestDevice::start("[dataplane]\nworkers = 2\n").await;
    let mut c = dev.client(ApiVersion::V2).await;
    let mut bad_proto = v4(2);
    bad_proto.protocol_id = 1;
    let mut bad_v6 = v6(4);
    bad_v6.source_ipv6 = vec![1, 2, 3, 4];
    let mut same_tuple = v4(1);
    same_tuple.session_id = 6;
    // Session 1 seen from the other side: its packets are session 1's.
    let mut reverse = v4(1);
    reverse.session_id = 7;
    std::mem::swap(&mut reverse.source_ip, &mut reverse.destination_ip);
    std::mem::swap(&mut reverse.source_port, &mut reverse.destination_port);
    std::mem::swap(&mut reverse.in_lif, &mut reverse.out_lif);
    let stream = vec![
        v4(1),      // 0 accepted
        bad_proto,  // 1 rejected
        v4(1),      // 2 same id
        bad_v6,     // 3 rejected
        v4(5),      // 4 accepted
        same_tuple, // 5 same 7-tuple
        v6(8),      // 6 accepted
        reverse,    // 7 the reverse of 0
    ];
    let r = c.add(stream).await.unwrap();
    assert_eq!(r.error_status, 0b1010_1110);
    assert_eq!(r.request_status, AddSessionStatus::SessionRejected as i32);
    let errors: Vec<(u64, i32)> = r
        .response_error
        .iter()
        .map(|e| (e.session_id, e.error_status))
        .collect();
    assert_eq!(
        errors,
        vec![
            (2, AddSessionStatus::SessionRejected as i32),
            (1, AddSessionStatus::SessionAlreadyExists as i32),
            (4, AddSessionStatus::SessionRejected as i32),
            (6, AddSessionStatus::SessionAlreadyExists as i32),
            (7, AddSessionStatus::SessionAlreadyExists as i32),
        ]
    );
    for id in [1, 5, 8] {
        assert_eq!(c.get(id).await.unwrap().request_status, 0, "{id} live");
    }
    for id in [2, 4, 6, 7] {
        assert_eq!(c.get(id).await.unwrap().request_status, 2, "{id} not added");
    }
    // The same 7-tuple in IPv6, under a new id.
    let mut dup6 = v6(8);
    dup6.session_id = 9;
    let r = c.add(vec![dup6]).await.unwrap();
    assert_eq!(
        r.request_status,
        AddSessionStatus::SessionAlreadyExists as i32
    );
    assert_eq!(r.error_status, 1);
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpp_batch_of_one_tuple_under_many_ids() {
    let dev = TestDevice::start("").await;
    for api in APIS {
        let mut c = dev.client(api).await;
        let base = if api == ApiVersion::V1 { 0 } else { 1000 };
        let batch: Vec<_> = (0..64)
            .map(|i| {
                let mut r = v4(base);
                r.session_id = base + i;
                r.source_port = 4000 + base as u32;
                r
            })
            .collect();
        let r = c.add(batch).await.unwrap();
        assert_eq!(
            r.request_status,
            AddSessionStatus::SessionAlreadyExists as i32
        );
        assert_eq!(r.error_status, !1u64);
        assert_eq!(r.response_error.len(), 63);
        assert!(r.response_error.iter().all(|e| e.error_status == 4));
    }
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_table_is_an_answer() {
    let dev = TestDevice::start("[dataplane]\nmax_sessions = 5\n").await;
    let mut c = dev.client(ApiVersion::V1).await;
    let r = c.add((0..8).map(v4).collect()).await.unwrap();
    assert_eq!(r.request_status, AddSessionStatus::SessionTableFull as i32);
    assert_eq!(r.error_status, 0b1110_0000);
    assert_eq!(r.response_error.len(), 3);
    // Room comes back with a delete.
    c.delete(0).await.unwrap();
    let r = c.add(vec![v4(20)]).await.unwrap();
    assert_eq!(r.request_status, 0);
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_of_every_kind_are_rejected() {
    let dev = TestDevice::start(
        "[dataplane]\ncollector_port = \"collector\"\n[[next_hop]]\naddr = \"10.9.9.9\"\nmac = \"02:00:00:00:09:09\"\n",
    )
    .await;
    let mut c = dev.client(ApiVersion::V2).await;
    type Breaks = Box<dyn Fn(&mut proto::v2::SessionRequest)>;
    let cases: Vec<(&str, Breaks)> = vec![
        ("ip_version", Box::new(|r| r.ip_version = 7)),
        ("protocol 0", Box::new(|r| r.protocol_id = 0)),
        ("protocol 1", Box::new(|r| r.protocol_id = 1)),
        (
            "action",
            Box::new(|r| r.action.as_mut().unwrap().action_type = 4),
        ),
        ("source port", Box::new(|r| r.source_port = 65_536)),
        (
            "destination port",
            Box::new(|r| r.destination_port = u32::MAX),
        ),
        (
            "next hop v6 length",
            Box::new(|r| r.action.as_mut().unwrap().action_next_hop_v6 = vec![1; 15]),
        ),
        ("unknown lif", Box::new(|r| r.out_lif = 9)),
        ("vlan above 4095", Box::new(|r| r.in_lif = (5000 << 16) | 1)),
        (
            "v6 source length",
            Box::new(|r| {
                r.ip_version = 1;
                r.source_ipv6 = vec![0; 17];
                r.destination_ipv6 = vec![0; 16];
            }),
        ),
        (
            "v6 destination missing",
            Box::new(|r| {
                r.ip_version = 1;
                r.source_ipv6 = vec![0; 16];
            }),
        ),
    ];
    for (i, (what, f)) in cases.iter().enumerate() {
        let mut r = v4(i as u64);
        f(&mut r);
        let a = c.add(vec![r]).await.unwrap();
        assert_eq!(
            a.request_status,
            AddSessionStatus::SessionRejected as i32,
            "{what}"
        );
        assert_eq!(a.error_status, 1, "{what}");
        assert_eq!(
            c.get(i as u64).await.unwrap().request_status,
            2,
            "{what}: not added"
        );
    }
    // A known next hop, and none at all, are fine.
    let mut r = v4(100);
    r.action.as_mut().unwrap().action_next_hop =
        control::wire::ipv4_to_wire("10.9.9.9".parse().unwrap());
    let mut r2 = v4(101);
    r2.action = None;
    assert_eq!(c.add(vec![r, r2]).await.unwrap().request_status, 0);
    // An empty stream is a fine call too.
    let a = c.add(vec![]).await.unwrap();
    assert_eq!((a.request_status, a.error_status), (0, 0));
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_can_be_not_found() {
    let dev = TestDevice::start("[api]\nunknown_session = \"not-found\"\n").await;
    for api in APIS {
        let mut c = dev.client(api).await;
        assert_eq!(c.get(5).await.unwrap_err().code(), tonic::Code::NotFound);
        assert_eq!(c.delete(5).await.unwrap_err().code(), tonic::Code::NotFound);
    }
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_in_both_styles_with_deletes() {
    let dev = TestDevice::start("[api]\nlist_cap = 10\n[dataplane]\nworkers = 2\n").await;
    let mut c = dev.client(ApiVersion::V2).await;
    let ids: Vec<u64> = (0..23).chain([4_294_967_296, u64::MAX - 1]).collect();
    let r = c.add(ids.iter().map(|&i| v4(i)).collect()).await.unwrap();
    assert_eq!(r.request_status, 0, "{r:?}");

    // Page-number style, 1-based; a page past the end is empty.
    let mut seen = Vec::new();
    for page in 1.. {
        let p = c.list(args(7, page, 0)).await.unwrap();
        if p.session_info.is_empty() {
            break;
        }
        seen.extend(p.session_info.iter().map(|s| s.session_id));
    }
    assert_eq!(seen, ids);
    assert!(c
        .list(args(7, 100, 0))
        .await
        .unwrap()
        .session_info
        .is_empty());

    // Everything: capped per answer, next_key to go on with.
    let all = c.list(args(0, 0, 0)).await.unwrap();
    assert_eq!(all.session_info.len(), 10);
    assert_eq!(all.next_key, 9);
    let rest = c.list(args(0, 0, all.next_key)).await.unwrap();
    assert_eq!(rest.session_info.first().unwrap().session_id, 10);

    // Cursor style as the C++ client clears the table: from 4294967295, deleting
    // every id of each page before asking for the next. Nothing skipped or repeated.
    let mut cursor = 4_294_967_295;
    let mut cleared = Vec::new();
    loop {
        let p = c.list(args(4, 0, cursor)).await.unwrap();
        if p.session_info.is_empty() {
            break;
        }
        for s in &p.session_info {
            assert_eq!(c.delete(s.session_id).await.unwrap().request_status, 0);
            cleared.push(s.session_id);
        }
        assert_eq!(p.next_key, p.session_info.last().unwrap().session_id);
        cursor = p.next_key;
    }
    // 4294967295 restarts the walk at the beginning, so the first page holds 0.. and
    // the cursor then moves past the large ids.
    assert_eq!(
        cleared.iter().copied().collect::<BTreeSet<_>>(),
        ids.iter().copied().collect()
    );
    assert_eq!(cleared.len(), ids.len());
    assert!(c.list(args(0, 0, 0)).await.unwrap().session_info.is_empty());
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_sessions_from_real_frames_are_delivered_once() {
    let mut dev = TestDevice::start_with("[dataplane]\ntick_ms = 20\n", true).await;
    let pool = dataplane::packet::PacketPool::new(256, 2048).unwrap();
    let mut c = dev.client(ApiVersion::V1).await;
    let fin = v4(1);
    let rst = v4(2);
    let mut idle = v6(3);
    idle.cache_timeout = 1;
    let mut udp_live = v6(4);
    udp_live.cache_timeout = 60;
    let r = c
        .add(vec![
            fin.clone(),
            rst.clone(),
            idle.clone(),
            udp_live.clone(),
        ])
        .await
        .unwrap();
    assert_eq!(r.request_status, 0);

    // Each step waits for the last to show: the worker polls its ports in turn, so
    // frames on two rings have no order of their own.
    let state_of = |id: u64, want: SessionState| {
        let c = c.clone();
        move || {
            let mut c = c.clone();
            async move { (c.get(id).await.unwrap().session_state == want as i32).then_some(()) }
        }
    };
    let mut bytes_in = 0;
    let mut bytes_out = 0;
    {
        let out = dev.ring("outside");
        bytes_in += send(out, &pool, &fin, true, ACK | PSH, 100);
        bytes_in += send(out, &pool, &fin, true, FIN | ACK, 0);
    }
    wait_for(
        "CLOSING_1",
        Duration::from_secs(5),
        state_of(1, SessionState::Closing1),
    )
    .await;
    {
        let inside = dev.ring("inside");
        bytes_out += send(inside, &pool, &fin, false, ACK | PSH, 300);
        bytes_out += send(inside, &pool, &fin, false, FIN | ACK, 0);
    }
    wait_for(
        "CLOSING_2",
        Duration::from_secs(5),
        state_of(1, SessionState::Closing2),
    )
    .await;
    bytes_in += send(dev.ring("outside"), &pool, &fin, true, ACK, 0);
    reset(dev.ring("inside"), &pool, &rst, false);
    send(dev.ring("outside"), &pool, &idle, true, 0, 20);
    send(dev.ring("outside"), &pool, &udp_live, true, 0, 20);

    // Closed sessions stay readable until delivered.
    let s = wait_for("FIN close", Duration::from_secs(5), || {
        let mut c = c.clone();
        async move {
            let s = c.get(1).await.unwrap();
            (s.session_state == SessionState::Closed as i32).then_some(s)
        }
    })
    .await;
    assert_eq!(s.session_close_code, SessionCloseCode::Finack as i32);
    assert_eq!((s.in_packets, s.out_packets), (3, 2));
    assert_eq!(
        (s.in_bytes, s.out_bytes),
        (bytes_in as u64, bytes_out as u64)
    );
    assert!(s.end_time.is_some());
    let s = c.get(2).await.unwrap();
    assert_eq!(
        (s.session_state, s.session_close_code),
        (3, SessionCloseCode::Rst as i32)
    );
    assert_eq!(s.out_packets, 2, "the ACK and the RST");
    wait_for("timeout close", Duration::from_secs(5), || {
        let mut c = c.clone();
        async move {
            (c.get(3).await.unwrap().session_close_code == SessionCloseCode::Timeout as i32)
                .then_some(())
        }
    })
    .await;
    // Listed too, closed ones included.
    let all = c.list(args(0, 0, 0)).await.unwrap();
    assert_eq!(
        all.session_info
            .iter()
            .map(|s| s.session_id)
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );

    let records: Vec<_> = c
        .closed(args(0, 0, 0), false)
        .await
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
        .await;
    let mut got: Vec<(u64, i32)> = records
        .iter()
        .map(|r| (r.session_id, r.session_close_code))
        .collect();
    got.sort();
    assert_eq!(got, vec![(1, 1), (2, 2), (3, 3)]);
    assert!(records
        .iter()
        .all(|r| r.session_state == 3 && r.end_time.is_some()));
    let fin_record = records.iter().find(|r| r.session_id == 1).unwrap();
    assert_eq!(
        (fin_record.in_bytes, fin_record.out_bytes),
        (bytes_in as u64, bytes_out as u64)
    );
    // Delivered once: gone from the feed, the table and the listing.
    let again: Vec<_> = c
        .closed(args(0, 0, 0), false)
        .await
        .unwrap()
        .collect()
        .await;
    assert!(again.is_empty());
    for id in [1, 2, 3] {
        assert_eq!(c.get(id).await.unwrap().request_status, 2);
    }
    assert_eq!(c.get(4).await.unwrap().in_packets, 1);
    // The id can be offloaded again.
    assert_eq!(c.add(vec![fin]).await.unwrap().request_status, 0);
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_size_caps_a_closed_call_and_a_dropped_stream_gives_records_back() {
    let dev = TestDevice::start("[dataplane]\ntick_ms = 20\n").await;
    let mut c = dev.client(ApiVersion::V2).await;
    closed_records(&dev, &mut c, 3000).await;

    let first: Vec<u64> = c
        .closed(args(100, 0, 0), false)
        .await
        .unwrap()
        .map(|r| r.unwrap().session_id)
        .collect()
        .await;
    assert_eq!(first.len(), 100);

    // The first call's records are settled once the client's stack acked the PING
    // after its end.
    let device = dev.device();
    wait_for(
        "the first call settled",
        Duration::from_secs(10),
        || async { (device.feed.in_flight() == 0).then_some(()) },
    )
    .await;

    // A client that reads one record and goes away. Records its stream sent and the
    // client did not prove it had (credit, or a PING acked after the stream's end)
    // come back; none is handed out twice.
    let counters = &dev.device().counters;
    let delivered_before = counters
        .closed_delivered
        .load(std::sync::atomic::Ordering::Relaxed);
    {
        let mut c2 = dev.client(ApiVersion::V1).await;
        let mut s = c2.closed(args(0, 0, 0), false).await.unwrap();
        let one = s.next().await.unwrap().unwrap();
        assert!(!first.contains(&one.session_id));
    }
    // Wait until the server noticed the reset and settled the dropped stream: no
    // record is in flight any more.
    wait_for(
        "dropped stream settled",
        Duration::from_secs(10),
        || async { (device.feed.in_flight() == 0).then_some(()) },
    )
    .await;
    let by_dropped = counters
        .closed_delivered
        .load(std::sync::atomic::Ordering::Relaxed)
        - delivered_before;
    // 0 when the client went before its stream ended; all 2,900 when the stream had
    // ended and the client's stack had acked the PING after it.
    assert!(by_dropped == 0 || by_dropped == 2900, "{by_dropped}");

    let rest: Vec<u64> = c
        .closed(args(0, 0, 0), false)
        .await
        .unwrap()
        .map(|r| r.unwrap().session_id)
        .collect()
        .await;
    assert_eq!(rest.len() as u64, 3000 - 100 - by_dropped);
    let mut all: BTreeSet<u64> = first.into_iter().collect();
    for id in rest {
        assert!(all.insert(id), "{id} delivered twice");
    }
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_mode_pushes_closures_as_they_happen() {
    let mut dev = TestDevice::start_with("[dataplane]\ntick_ms = 20\n", true).await;
    let pool = dataplane::packet::PacketPool::new(64, 2048).unwrap();
    let mut c = dev.client(ApiVersion::V2).await;
    assert_eq!(c.add(vec![v4(1), v4(2)]).await.unwrap().request_status, 0);
    let mut follow = c.closed(args(0, 0, 0), true).await.unwrap();
    // A follower that went away before anything closed loses nothing either.
    drop(
        dev.client(ApiVersion::V2)
            .await
            .closed(args(0, 0, 0), true)
            .await
            .unwrap(),
    );
    let open = || {
        dev.device()
            .counters
            .closed_streams_open
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while open() != 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(open(), 1, "the server saw the second follower go");

    reset(dev.ring("outside"), &pool, &v4(2), true);
    let r = tokio::time::timeout(Duration::from_secs(5), follow.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.session_id, r.session_close_code),
        (2, SessionCloseCode::Rst as i32)
    );
    reset(dev.ring("inside"), &pool, &v4(1), false);
    let r = tokio::time::timeout(Duration::from_secs(5), follow.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(r.session_id, 1);
    drop(follow);
    // The follower read both, returned no credit for them (h2 returns it in batches),
    // and went away: both come back, first in line. Sent twice, never lost.
    wait_for(
        "the follower's end settled",
        Duration::from_secs(10),
        || async { (dev.device().feed.in_flight() == 0).then_some(()) },
    )
    .await;
    let again: Vec<u64> = c
        .closed(args(0, 0, 0), false)
        .await
        .unwrap()
        .map(|r| r.unwrap().session_id)
        .collect()
        .await;
    assert_eq!(again, [2, 1]);
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let dev = TestDevice::start("[tls]\nclient_ca = \"ca.crt\"\n").await;
    let addr = dev.running.as_ref().unwrap().local_addrs()[0];
    // The refusal is the TLS 1.3 alert "certificate required".
    let e = common::tls::tls_without_client_cert(addr, &dev.cert(control::certs::CA_CERT))
        .await
        .expect_err("a client without a certificate is refused");
    assert!(e.contains("CertificateRequired"), "{e}");
    // And a gRPC client without one gets no answer.
    let mut c = SessionClient::connect(&dev.options(ApiVersion::V2))
        .await
        .unwrap();
    assert!(c.get(1).await.is_err());
    let mut c = SessionClient::connect(&dev.options_with_cert(ApiVersion::V2))
        .await
        .unwrap();
    assert_eq!(c.get(1).await.unwrap().request_status, 2);
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_only_when_asked() {
    let dev = TestDevice::start("").await;
    let addr = dev.running.as_ref().unwrap().local_addrs()[0];
    // HTTP/2 in plaintext to the TLS port: the answer is a TLS alert record (content
    // type 21), and the connection ends.
    let answer = common::tls::plaintext_h2(addr).await;
    assert_eq!(answer.first(), Some(&21), "{answer:?}");
    let mut o = dev.options(ApiVersion::V2);
    o.server = o.server.replace("https://", "http://");
    // A gRPC client sees that as a protocol error or a closed connection,
    // depending on which it reads first.
    let mut c = SessionClient::connect(&o).await.unwrap();
    assert!(c.get(1).await.is_err());
    dev.stop().await;

    let dev = TestDevice::start("[api]\nplaintext = true\n").await;
    let mut o = dev.options(ApiVersion::V1);
    o.ca = None;
    let mut c = SessionClient::connect(&o).await.unwrap();
    assert_eq!(c.get(1).await.unwrap().request_status, 2);
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_port_does_not_hurt() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dev = TestDevice::start("[api]\nhandshake_timeout_ms = 500\n").await;
    let addr = dev.running.as_ref().unwrap().local_addrs()[0];
    let junk: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect(),
        vec![0x16, 0x03, 0x01, 0xff, 0xff, 0x01],
        Vec::new(),
    ];
    for j in junk {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(&j).await;
        let mut buf = [0u8; 256];
        // The device answers or hangs up; it never keeps a stranger forever.
        let r = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
        assert!(
            r.is_ok(),
            "connection with {} junk bytes left open",
            j.len()
        );
    }
    let mut c = dev.client(ApiVersion::V2).await;
    assert_eq!(c.add(vec![v4(1)]).await.unwrap().request_status, 0);
    dev.stop().await;
}

/// The scheduling policies of this process's threads named `name` (from /proc).
/// Tests run in parallel, so other devices' workers may share the name.
fn thread_policies(name: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        let dir = t.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis; policy is field 41.
        if let Some(p) = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split(' ').nth(41 - 3))
        {
            out.extend(p.parse::<u32>().ok());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_workers_or_a_clear_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let config = control::config::Config::parse(
        "[api]\nplaintext = true\n[dataplane]\nrealtime_priority = 10\n",
        dir.path(),
        &control::config::Overrides {
            listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        },
    )
    .unwrap();
    match control::server::start(config).await {
        Ok(running) => {
            const SCHED_FIFO: u32 = 1;
            // Only this test makes real-time workers.
            assert!(
                thread_policies("worker-0").contains(&SCHED_FIFO),
                "{:?}",
                thread_policies("worker-0")
            );
            running.shutdown().await;
        }
        Err(e) => {
            // Without CAP_SYS_NICE the device says so and does not start.
            assert!(e.contains("SCHED_FIFO"), "{e}");
            // SAFETY: geteuid has no preconditions.
            assert!(
                unsafe { libc::geteuid() } != 0,
                "root may use SCHED_FIFO: {e}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_timeout_zero_is_the_configured_default() {
    let dev = TestDevice::start("[dataplane]\ndefault_timeout = 1\ntick_ms = 20\n").await;
    let mut c = dev.client(ApiVersion::V2).await;
    let mut quick = v4(1);
    quick.cache_timeout = 0;
    let mut slow = v4(2);
    slow.cache_timeout = 30;
    assert_eq!(c.add(vec![quick, slow]).await.unwrap().request_status, 0);
    let started = std::time::Instant::now();
    let closed = wait_for("the default timeout", Duration::from_secs(5), || {
        let mut c = c.clone();
        async move {
            let s = c.get(1).await.unwrap();
            (s.session_close_code == SessionCloseCode::Timeout as i32).then_some(s)
        }
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(900), "not early");
    assert_eq!(closed.session_state, SessionState::Closed as i32);
    let s = c.get(2).await.unwrap();
    assert_eq!(
        s.session_state,
        SessionState::Established as i32,
        "its own 30 s"
    );
    dev.stop().await;
}

/// The boot id and start time in the response metadata: `(id, start time)`.
fn boot_of(m: &tonic::metadata::MetadataMap) -> (String, u64) {
    let id = m
        .get(control::boot::BOOT_ID_HEADER)
        .expect("a boot id")
        .to_str()
        .unwrap()
        .to_string();
    let start = m
        .get(control::boot::START_TIME_HEADER)
        .expect("a start time")
        .to_str()
        .unwrap()
        .parse()
        .expect("seconds");
    (id, start)
}

/// Every call of both versions and of the admin service, answered OK or with an
/// error status, names this start of the device; and the next start has another id.
async fn boots_seen_by_every_call(dev: &TestDevice) -> (String, u64) {
    use proto::v1::session_table_client::SessionTableClient as V1;
    use proto::v2::session_table_client::SessionTableClient as V2;
    use proto::v2::SessionId;
    let channel = control::client::connect_channel(&dev.options(ApiVersion::V2))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut v1 = V1::new(channel.clone());
    let mut v2 = V2::new(channel.clone());
    let known = SessionId { session_id: 1 };
    let unknown = SessionId { session_id: 99 };
    seen.push(boot_of(v1.get_session(known).await.unwrap().metadata()));
    seen.push(boot_of(v2.get_session(known).await.unwrap().metadata()));
    // NOT_FOUND (the config asks for it): the metadata of an error status too.
    seen.push(boot_of(
        v1.get_session(unknown).await.unwrap_err().metadata(),
    ));
    seen.push(boot_of(
        v2.get_session(unknown).await.unwrap_err().metadata(),
    ));
    let stats = control::client::admin(channel)
        .get_stats(proto::admin::StatsRequest {})
        .await
        .unwrap();
    seen.push(boot_of(stats.metadata()));
    let stats = stats.into_inner();
    seen.push((stats.boot_id, stats.start_time));
    for s in &seen {
        assert_eq!(s, &seen[0], "{seen:?}");
    }
    seen.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_names_the_boot_and_a_restart_changes_it() {
    let config = "[api]\nunknown_session = \"not-found\"\n";
    let mut boots = Vec::new();
    for _ in 0..2 {
        let dev = TestDevice::start(config).await;
        let mut c = dev.client(ApiVersion::V2).await;
        assert_eq!(c.add(vec![v4(1)]).await.unwrap().request_status, 0);
        let (id, start) = boots_seen_by_every_call(&dev).await;
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            start <= now && now - start < 600,
            "start {start}, now {now}"
        );
        boots.push(id);
        dev.stop().await;
    }
    assert_ne!(boots[0], boots[1], "a restart keeps its boot id");
}
