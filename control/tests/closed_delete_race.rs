//! DeleteSession racing a GetClosedSessions stream that has taken the session's
//! closed record: the record is not sent after the delete, and a session added again
//! under the id is an ordinary session (found by GetSession and GetAllSessions,
//! deletable), not an orphan.
//!
//! A reader with a 1,000-byte HTTP/2 window reads one record and stops, so its
//! stream holds records it has sent and the client has not proved it has; every id
//! is then deleted while the stream is stuck. Records going out stay the stream's
//! (a delete cannot call them back); every other one is deleted and never sent. (A
//! stream takes only what its window lets it send, and sends it at once, so the
//! narrower race, a record taken and deleted before it goes out, is covered by the
//! feed's unit tests.)

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use control::client::{ApiVersion, SessionClient};
use control::testing::TestDevice;
use futures::StreamExt;
use proto::v2::{RequestStatus, SessionRequestArgs};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const RECORDS: u64 = 2000;
const EVENT: Duration = Duration::from_secs(30);

fn all() -> SessionRequestArgs {
    SessionRequestArgs {
        page_size: 0,
        page: 0,
        start_session: 0,
    }
}

/// A channel to the device whose streams start with a 1,000-byte receive window.
async fn small_window_channel(dev: &TestDevice) -> Channel {
    let o = dev.options(ApiVersion::V2);
    let ca = std::fs::read(o.ca.as_ref().expect("the test device's CA")).unwrap();
    Endpoint::from_shared(o.server.clone())
        .unwrap()
        .initial_stream_window_size(Some(1000))
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Deletes every id; returns those the device deleted (the others were delivered,
/// or are going out on the stream and stay its).
async fn delete_all(c: &mut SessionClient) -> BTreeSet<u64> {
    let mut deleted = BTreeSet::new();
    for id in 0..RECORDS {
        // The device's default answer to an unknown id is in band.
        let r = c.delete(id).await.unwrap();
        if r.request_status == RequestStatus::RejectedSessionNonexistent as i32 {
            continue;
        }
        assert_eq!(r.request_status, 0, "delete {id}: {r:?}");
        deleted.insert(id);
    }
    deleted
}

/// Adds `ids` again as open sessions that do not time out during the test.
async fn add_again(c: &mut SessionClient, ids: &BTreeSet<u64>) {
    let reqs: Vec<_> = ids
        .iter()
        .map(|&id| {
            let mut r = v4(id);
            r.cache_timeout = 3600;
            r
        })
        .collect();
    let r = c.add(reqs).await.unwrap();
    assert_eq!(r.request_status, 0, "every id is free again: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_record_deleted_is_not_sent_and_its_id_is_an_ordinary_session_again() {
    let dev = TestDevice::start("[dataplane]\ntick_ms = 20\n").await;
    let device = dev.device();
    let mut c = dev.client(ApiVersion::V2).await;
    closed_records(&dev, &mut c, RECORDS).await;

    let mut reader = SessionClient::new(small_window_channel(&dev).await, ApiVersion::V2, 4 << 20);
    let mut stream = reader.closed(all(), false).await.unwrap();
    let first = stream.next().await.unwrap().unwrap().session_id;
    wait_for("the stuck stream has taken records", EVENT, || async {
        (device.feed.in_flight() > 0).then_some(())
    })
    .await;
    let taken_before = device.feed.in_flight();

    let deleted = delete_all(&mut c).await;
    // Records going out stay the stream's (a delete cannot call them back): what
    // the stream holds was not deleted, and the rest were.
    assert!(
        device.feed.in_flight() >= taken_before,
        "records going out stay the stream's"
    );
    assert!(
        deleted.len() as u64 >= RECORDS / 2,
        "the records not going out were deleted: {} of {RECORDS}",
        deleted.len()
    );
    assert!(!deleted.contains(&first), "{first} was received");
    add_again(&mut c, &deleted).await;

    // The stream goes on: none of the deleted records comes out of it.
    let mut received = BTreeSet::from([first]);
    while let Some(r) = tokio::time::timeout(EVENT, stream.next())
        .await
        .expect("the stream goes on")
    {
        let id = r.unwrap().session_id;
        assert!(
            !deleted.contains(&id),
            "record {id} was sent after its delete"
        );
        assert!(received.insert(id), "record {id} sent twice");
    }
    assert_eq!(
        received.len() as u64 + deleted.len() as u64,
        RECORDS,
        "each record was received or deleted"
    );

    // The sessions added again are ordinary sessions.
    let listed: BTreeSet<u64> = c
        .list(all())
        .await
        .unwrap()
        .session_info
        .iter()
        .map(|s| s.session_id)
        .collect();
    assert_eq!(
        listed, deleted,
        "GetAllSessions lists exactly the sessions added again"
    );
    for &id in &deleted {
        let s = c.get(id).await.unwrap();
        assert_eq!(s.session_state, 0, "session {id} is open: {s:?}");
        assert_eq!(
            c.delete(id).await.unwrap().request_status,
            0,
            "{id} deletable"
        );
        let gone = c.get(id).await.unwrap().request_status;
        assert_eq!(
            gone,
            RequestStatus::RejectedSessionNonexistent as i32,
            "{id} deleted"
        );
    }
    assert!(device.directory.is_empty(), "no orphan left");
    dev.stop().await;
}
