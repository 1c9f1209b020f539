//! The device as the existing OpenOffload clients use it, on the shipped configs
//! (config/offloadd.toml and config/demo.toml): their next hops on every session, ids
//! from 0 (C++) and from 1 (Python), the C++ client's cursor loop and its
//! repeated-tuple batches, errors decoded as `AddSessionStatus` numbers. Real TLS and
//! a real tonic client; the device is started from the config file's text (listening
//! on an OS-chosen port, with fresh certificates).

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use common::*;
use control::client::{connect_channel, ApiVersion};
use control::testing::TestDevice;
use control::wire::ipv4_to_wire;
use proto::v2::session_table_client::SessionTableClient;
use proto::v2::{
    AddSessionResponse, AddSessionStatus, SessionId, SessionRequest, SessionRequestArgs,
    SessionResponse, SessionResponses,
};
use tonic::transport::Channel;

/// The C++ client's deadline on every call.
const CPP_DEADLINE: Duration = Duration::from_millis(100);
/// The deadline of calls whose answer, not its timing, is under test: generous, so
/// that a box whose cores are both busy does not fail them.
const GENEROUS: Duration = Duration::from_secs(10);
/// The C++ client's first cursor: "from the beginning".
const CPP_START: u64 = 4_294_967_295;

fn shipped(name: &str) -> String {
    let path = format!("{}/../config/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The generated v2 client, as the C++ client holds one: no deadline of its own.
async fn raw_client(dev: &TestDevice) -> SessionTableClient<Channel> {
    let mut o = dev.options(ApiVersion::V2);
    o.timeout = None;
    SessionTableClient::new(connect_channel(&o).await.expect("connect"))
}

/// A request with a deadline, sent as `grpc-timeout`: the device must answer within
/// it from taking the call, or it ends the call, which fails the test. (Measured
/// here instead, the deadline would also count this test's own scheduling.)
fn deadline<T>(m: T, limit: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.set_timeout(limit);
    r
}

/// The answer of a call; a call that fails (a missed deadline included) or hangs
/// fails the test.
async fn within<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> T {
    match tokio::time::timeout(Duration::from_secs(10), f).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => panic!("{what}: {s:?}"),
        Err(_) => panic!("{what}: no answer in 10 s"),
    }
}

async fn cpp_list(
    c: &mut SessionTableClient<Channel>,
    size: u32,
    cursor: u64,
    limit: Duration,
) -> SessionResponses {
    let args = SessionRequestArgs {
        page_size: size,
        page: 0,
        start_session: cursor,
    };
    within("GetAllSessions", c.get_all_sessions(deadline(args, limit))).await
}

async fn cpp_delete(
    c: &mut SessionTableClient<Channel>,
    id: u64,
    limit: Duration,
) -> SessionResponse {
    let r = deadline(SessionId { session_id: id }, limit);
    within("DeleteSession", c.delete_session(r)).await
}

/// AddSession with a generous deadline: these adds set the table up for the loop
/// under test (and a batch of 64 on a box whose cores are both busy can take longer
/// than the C++ client's 100 ms, which the list and delete calls of its loop keep).
async fn cpp_add(
    c: &mut SessionTableClient<Channel>,
    batch: Vec<SessionRequest>,
) -> AddSessionResponse {
    let r = deadline(tokio_stream::iter(batch), GENEROUS);
    within("AddSession", c.add_session(r)).await
}
/// The C++ client's loop: from 4294967295, page 0, `size` per page, next cursor =
/// the last id seen, stop at the first empty page; with `delete`, every listed id is
/// deleted before the next page (how it clears the table). Returns the ids in the
/// order listed. A loop that does not end fails the test. Every call has `limit` as
/// its deadline.
async fn cpp_walk(
    c: &mut SessionTableClient<Channel>,
    size: u32,
    delete: bool,
    limit: Duration,
) -> Vec<u64> {
    let mut seen = Vec::new();
    let mut cursor = CPP_START;
    for _ in 0..100_000 {
        let page = cpp_list(c, size, cursor, limit).await;
        let Some(last) = page.session_info.last() else {
            return seen;
        };
        assert!(page.session_info.len() <= size as usize);
        assert_eq!(page.next_key, last.session_id, "next_key is the last id");
        cursor = last.session_id;
        for s in &page.session_info {
            seen.push(s.session_id);
            if delete {
                let d = cpp_delete(c, s.session_id, limit).await;
                assert_eq!(d.request_status, 0, "delete {}: {d:?}", s.session_id);
            }
        }
    }
    panic!("the C++ paging loop did not end: {} ids seen", seen.len());
}

/// The C++ client's IPv4 session: next hop 192.168.0.1.
fn cpp_v4(id: u64) -> SessionRequest {
    let r = v4(id);
    let nh = r.action.as_ref().unwrap().action_next_hop;
    assert_eq!(nh, ipv4_to_wire(Ipv4Addr::new(192, 168, 0, 1)));
    r
}

/// The C++ client's IPv6 session: next hop 1::ffff:204:160.
fn cpp_v6(id: u64) -> SessionRequest {
    let r = v6(id);
    let nh: Ipv6Addr = "1::ffff:204:160".parse().unwrap();
    assert_eq!(r.action.as_ref().unwrap().action_next_hop_v6, nh.octets());
    r
}

/// Adds `ids` (IPv4 and IPv6 alternately, each on its own source port) in batches of
/// 64, all accepted.
async fn add_all(c: &mut SessionTableClient<Channel>, ids: &[u64]) {
    for (k, chunk) in ids.chunks(64).enumerate() {
        let batch = chunk
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                let mut r = if id % 2 == 0 { cpp_v4(id) } else { cpp_v6(id) };
                r.source_port = 1000 + (k * 64 + i) as u32;
                r
            })
            .collect();
        let r = cpp_add(c, batch).await;
        assert_eq!((r.request_status, r.error_status), (0, 0), "{r:?}");
    }
}

/// Ids from 0 as the C++ client numbers them, with the ids around the start marker.
fn cpp_ids(n: u64) -> Vec<u64> {
    let mut ids: Vec<u64> = (0..n).collect();
    ids.extend([
        4_294_967_294,
        CPP_START,
        4_294_967_296,
        u64::MAX - 1,
        u64::MAX,
    ]);
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpp_cursor_loop_lists_every_id_once_and_ends() {
    let dev = TestDevice::start(&shipped("offloadd.toml")).await;
    let mut c = raw_client(&dev).await;
    let ids = cpp_ids(150);
    add_all(&mut c, &ids).await;
    // Cursor pages never list the start marker's own id (it would restart the loop);
    // every other id comes once, in order.
    let listed: Vec<u64> = ids.iter().copied().filter(|&i| i != CPP_START).collect();
    for size in [1, 3, 64] {
        assert_eq!(
            cpp_walk(&mut c, size, false, GENEROUS).await,
            listed,
            "page size {size}"
        );
    }
    // A page that ends with id 0 does not restart the list.
    let p = cpp_list(&mut c, 5, 0, GENEROUS).await;
    let first: Vec<u64> = p.session_info.iter().map(|s| s.session_id).collect();
    assert_eq!(first, vec![1, 2, 3, 4, 5]);
    // The other styles and GetSession still show the session with that id.
    let mut sessions = dev.client(ApiVersion::V2).await;
    assert_eq!(sessions.get(CPP_START).await.unwrap().request_status, 0);
    let all = sessions
        .list(SessionRequestArgs {
            page_size: 0,
            page: 0,
            start_session: 0,
        })
        .await
        .unwrap();
    let every: Vec<u64> = all.session_info.iter().map(|s| s.session_id).collect();
    assert_eq!(every, ids);
    let mut by_page = Vec::new();
    for page in 1.. {
        let p = sessions
            .list(SessionRequestArgs {
                page_size: 64,
                page,
                start_session: 0,
            })
            .await
            .unwrap();
        if p.session_info.is_empty() {
            break;
        }
        by_page.extend(p.session_info.iter().map(|s| s.session_id));
    }
    assert_eq!(by_page, ids);
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpp_clears_the_table_by_cursor_paging_and_deleting() {
    let dev = TestDevice::start(&shipped("offloadd.toml")).await;
    let mut c = raw_client(&dev).await;
    let ids = cpp_ids(150);
    let listed: Vec<u64> = ids.iter().copied().filter(|&i| i != CPP_START).collect();
    for size in [1, 3, 64] {
        add_all(&mut c, &ids).await;
        assert_eq!(
            cpp_walk(&mut c, size, true, GENEROUS).await,
            listed,
            "page size {size}"
        );
        // What the loop cannot see is left: the start marker's own id.
        let rest = cpp_list(&mut c, 1000, CPP_START, GENEROUS).await;
        assert!(rest.session_info.is_empty(), "{rest:?}");
        let d = cpp_delete(&mut c, CPP_START, GENEROUS).await;
        assert_eq!(d.request_status, 0, "{d:?}");
        let mut sessions = dev.client(ApiVersion::V2).await;
        let all = sessions.list(SessionRequestArgs::default()).await.unwrap();
        assert!(all.session_info.is_empty(), "{all:?}");
    }
    dev.stop().await;
}

/// The Python clients' session: ids from 1, next hop 12.2.3.4.
fn python_v4(id: u64) -> SessionRequest {
    let mut r = v4(id);
    r.action.as_mut().unwrap().action_next_hop = ipv4_to_wire(PYTHON_NEXT_HOP);
    r
}

/// Each session refused in `r`, as the Python clients decode it: the
/// `AddSessionStatus` named by `response_error[].error_status`.
fn python_decoded(r: &AddSessionResponse) -> Vec<(u64, AddSessionStatus)> {
    r.response_error
        .iter()
        .map(|e| {
            let s = AddSessionStatus::try_from(e.error_status)
                .unwrap_or_else(|_| panic!("{} is no AddSessionStatus", e.error_status));
            (e.session_id, s)
        })
        .collect()
}

/// What the existing clients send, on one shipped config: every session with their
/// next hops is accepted; the C++ batch of one 7-tuple under 64 ids is one accepted
/// and 63 `_SESSION_ALREADY_EXISTS`, call status OK; the C++ loop lists and clears.
async fn real_clients_on(config: &str, capacity: u64) {
    let dev = TestDevice::start(&shipped(config)).await;
    let mut c = raw_client(&dev).await;

    // C++: ids from 0, IPv4 and IPv6 with its next hops.
    let r = cpp_add(&mut c, vec![cpp_v4(0), cpp_v6(1), cpp_v4(2), cpp_v6(3)]).await;
    assert_eq!(
        (r.request_status, r.error_status),
        (0, 0),
        "{config}: {r:?}"
    );
    assert!(r.response_error.is_empty());

    // Python: ids from 1 (here from 11, the C++ ids hold 0..3), next hop 12.2.3.4.
    let python: Vec<_> = (11..15).map(python_v4).collect();
    let r = cpp_add(&mut c, python).await;
    assert_eq!(
        (r.request_status, r.error_status),
        (0, 0),
        "{config}: {r:?}"
    );

    // C++ batch: one 7-tuple under 64 ids (within the capacity left).
    let batch: Vec<_> = (100..164)
        .map(|id| {
            let mut r = cpp_v4(100);
            r.session_id = id;
            r
        })
        .collect();
    let r = cpp_add(&mut c, batch).await;
    assert_eq!(
        r.request_status,
        AddSessionStatus::SessionAlreadyExists as i32,
        "{config}"
    );
    assert_eq!(r.error_status, !1u64, "bits 1..63: {config}");
    let decoded = python_decoded(&r);
    let want: Vec<_> = (101..164)
        .map(|id| (id, AddSessionStatus::SessionAlreadyExists))
        .collect();
    assert_eq!(decoded, want, "{config}");

    // Every accepted session is listed once by the C++ loop, which then clears them.
    let held = [0, 1, 2, 3, 11, 12, 13, 14, 100];
    assert!(held.len() as u64 <= capacity);
    for size in [1, 3, 64] {
        assert_eq!(
            cpp_walk(&mut c, size, false, GENEROUS).await,
            held,
            "{config}"
        );
    }
    assert_eq!(cpp_walk(&mut c, 3, true, GENEROUS).await, held, "{config}");
    assert!(cpp_list(&mut c, 64, CPP_START, GENEROUS)
        .await
        .session_info
        .is_empty());
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_on_the_default_config() {
    real_clients_on("offloadd.toml", 1_000_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_on_the_demo_config() {
    real_clients_on("demo.toml", 19).await;
}

/// The C++ client's loop with its own deadlines: every list and delete call of it
/// answered within 100 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cpp_loop_is_answered_within_its_100_ms_deadlines() {
    let dev = TestDevice::start(&shipped("offloadd.toml")).await;
    let mut c = raw_client(&dev).await;
    let ids = cpp_ids(150);
    add_all(&mut c, &ids).await;
    let listed: Vec<u64> = ids.iter().copied().filter(|&i| i != CPP_START).collect();
    assert_eq!(cpp_walk(&mut c, 64, false, CPP_DEADLINE).await, listed);
    assert_eq!(cpp_walk(&mut c, 64, true, CPP_DEADLINE).await, listed);
    dev.stop().await;
}
