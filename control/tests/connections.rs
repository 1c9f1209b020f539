//! Connections are bounded: one idle too long (or that never sends the HTTP/2
//! preface) is closed, one over `api.max_connections` is closed at accept and
//! counted, and clients are served again once connections free up. Real TLS over
//! loopback; the descriptor limit has its own binary (`connection_limits.rs`).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use control::client::ApiVersion;
use control::testing::TestDevice;
use proto::admin::StatsRequest;
use proto::v2::SessionRequestArgs;

fn count(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Waits up to 20 s for `cond`; false if it never held.
async fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

fn addr(dev: &TestDevice) -> std::net::SocketAddr {
    dev.running.as_ref().unwrap().local_addrs()[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_that_never_sends_the_preface_is_closed_after_the_idle_time() {
    let dev = TestDevice::start("[api]\nidle_timeout_ms = 1000\n").await;
    let ca = dev.cert(control::certs::CA_CERT);
    let started = Instant::now();
    let mut silent = common::tls::tls_handshake_only(addr(&dev), &ca)
        .await
        .expect("the TLS handshake completes");
    assert!(
        common::tls::closed_within(&mut silent, Duration::from_secs(20)).await,
        "a connection without the preface is still open after 20 s"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed after {:?}, before the idle time",
        started.elapsed()
    );
    let counters = &dev.device().counters;
    assert!(wait_for(|| count(&counters.connections_closed_idle) == 1).await);
    assert!(wait_for(|| count(&counters.connections_open) == 0).await);
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_call_keeps_its_connection_and_the_idle_time_starts_when_it_ends() {
    let dev = TestDevice::start("[api]\nidle_timeout_ms = 1000\n").await;
    let counters = &dev.device().counters;
    let mut c = dev.client(ApiVersion::V2).await;
    let follow = c
        .closed(SessionRequestArgs::default(), true)
        .await
        .expect("a follow stream");
    // Three idle times with the stream open: the connection stays.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count(&counters.connections_closed_idle), 0);
    assert_eq!(count(&counters.connections_open), 1);
    drop(follow);
    assert!(
        wait_for(|| count(&counters.connections_closed_idle) == 1).await,
        "the connection was not closed once its only call ended"
    );
    assert!(wait_for(|| count(&counters.connections_open) == 0).await);
    // The client connects again for its next call. A call sent while the client has
    // not yet read the close (the device counted it first) fails on the dead
    // connection, as with any server that closes idle connections (hyper says
    // "transport error", or "operation was canceled" when the close arrives while the
    // call is being written); the one after it connects again.
    let got = match c.get(1).await {
        Ok(r) => r,
        Err(e) if e.message() == "transport error" || e.code() == tonic::Code::Cancelled => {
            c.get(1).await.expect("served")
        }
        Err(e) => panic!("served: {e:?}"),
    };
    assert_eq!(got.request_status, 2);
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_cap_is_closed_and_counted_and_clients_are_served_after() {
    let dev = TestDevice::start("[api]\nmax_connections = 3\nhandshake_timeout_ms = 30000\n").await;
    let counters = &dev.device().counters;
    let ca = dev.cert(control::certs::CA_CERT);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            common::tls::tls_handshake_only(addr(&dev), &ca)
                .await
                .expect("a connection within the cap"),
        );
    }
    assert!(wait_for(|| count(&counters.connections_open) == 3).await);

    let started = Instant::now();
    let over = common::tls::tls_handshake_only(addr(&dev), &ca).await;
    assert!(over.is_err(), "a fourth connection got through the cap");
    // At once: not by the 30 s handshake limit.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(wait_for(|| count(&counters.connections_refused) == 1).await);
    assert_eq!(count(&counters.connections_open), 3);

    held.truncate(1);
    assert!(wait_for(|| count(&counters.connections_open) == 1).await);
    let stats = dev
        .admin()
        .await
        .get_stats(StatsRequest {})
        .await
        .expect("a client is served again")
        .into_inner();
    assert_eq!(stats.connections_open, 2);
    let refused = stats
        .counters
        .iter()
        .find(|c| c.name == "api_connections_refused")
        .map(|c| c.value);
    assert_eq!(refused, Some(1));
    dev.stop().await;
}

#[test]
fn bad_connection_bounds_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (toml, key) in [
        ("[api]\nidle_timeout_ms = 0\n", "api.idle_timeout_ms"),
        ("[api]\nmax_connections = 0\n", "api.max_connections"),
    ] {
        let e = control::config::Config::parse(toml, dir.path(), &Default::default())
            .expect_err("refused");
        assert!(e.to_string().starts_with(key), "{e}");
    }
}
