//! AckedClosedSessions (admin service) against a real device over TLS: a record leaves
//! the device only when acked; whatever a stream sent and nobody acked comes back.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use control::client::{ApiVersion, SessionClient};
use control::testing::TestDevice;
use futures::channel::mpsc::UnboundedSender;
use futures::StreamExt;
use proto::admin::{ClosedAck, ClosedRecord};
use proto::v2::SessionRequestArgs;
use tonic::Streaming;

/// One acked reader: its ack sender and the records it receives.
struct Reader {
    acks: UnboundedSender<ClosedAck>,
    records: Streaming<ClosedRecord>,
}

impl Reader {
    async fn open(dev: &TestDevice) -> Reader {
        let (acks, ack_stream) = futures::channel::mpsc::unbounded();
        let records = dev
            .admin()
            .await
            .acked_closed_sessions(ack_stream)
            .await
            .unwrap()
            .into_inner();
        Reader { acks, records }
    }

    /// The next `n` session ids, in order.
    async fn receive(&mut self, n: usize) -> Vec<u64> {
        let mut ids = Vec::with_capacity(n);
        while ids.len() < n {
            let next = tokio::time::timeout(Duration::from_secs(15), self.records.next())
                .await
                .expect("a record within 15 s")
                .expect("the stream goes on")
                .expect("a record");
            ids.push(next.session.unwrap().session_id);
        }
        ids
    }

    fn ack(&self, ids: &[u64]) {
        self.acks
            .unbounded_send(ClosedAck {
                session_ids: ids.to_vec(),
            })
            .unwrap();
    }
}

/// Everything a plain GetClosedSessions call gets now, in order.
async fn plain_read(c: &mut SessionClient) -> Vec<u64> {
    c.closed(SessionRequestArgs::default(), false)
        .await
        .unwrap()
        .map(|r| r.unwrap().session_id)
        .collect()
        .await
}

fn counter(dev: &TestDevice, f: fn(&control::device::ControlCounters) -> u64) -> u64 {
    f(&dev.device().counters)
}

async fn wait_acked(dev: &TestDevice, n: u64) {
    wait_for("acks applied", Duration::from_secs(15), || async {
        (counter(dev, |c| c.closed_acked.load(Ordering::Relaxed)) == n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_not_acked_come_back_first_in_line() {
    let dev = TestDevice::start("[dataplane]\ntick_ms = 20\n").await;
    let mut c = dev.client(ApiVersion::V2).await;
    closed_records(&dev, &mut c, 300).await;

    // A reader takes 100, acks 60, and is dropped with 40 received and not acked (a
    // client killed between receiving and acking).
    let mut a = Reader::open(&dev).await;
    let got = a.receive(100).await;
    a.ack(&got[..60]);
    // Not outstanding on this stream: ignored, counted, and the stream goes on.
    a.ack(&[1_000_000, got[0]]);
    wait_acked(&dev, 60).await;
    wait_for("ignored acks counted", Duration::from_secs(15), || async {
        (counter(&dev, |c| c.closed_acks_ignored.load(Ordering::Relaxed)) == 2).then_some(())
    })
    .await;
    let after_bad_acks = a.receive(1).await;
    // The client goes away (its call and connection with it).
    drop(a);
    wait_nothing_in_flight(&dev).await;

    // The next reader (a plain one) gets everything not acked, the returned ones first.
    let rest = plain_read(&mut c).await;
    assert_eq!(rest.len(), 240, "300 closed, 60 acked");
    let mut returned: Vec<u64> = got[60..].to_vec();
    returned.extend(&after_bad_acks);
    assert_eq!(
        rest[..41],
        returned[..],
        "returned ones come first, in order"
    );
    let mut all: BTreeSet<u64> = got[..60].iter().copied().collect();
    for id in rest {
        assert!(all.insert(id), "{id} delivered twice");
    }
    assert_eq!(all, (0..300).collect(), "every record arrives");
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_acks_holds_at_most_the_window() {
    let dev = TestDevice::start("[dataplane]\ntick_ms = 20\n[api]\nack_window = 50\n").await;
    let mut c = dev.client(ApiVersion::V2).await;
    closed_records(&dev, &mut c, 200).await;

    let mut a = Reader::open(&dev).await;
    let held_by_a = a.receive(50).await;
    let nothing_more = tokio::time::timeout(Duration::from_secs(3), a.records.next()).await;
    assert!(nothing_more.is_err(), "a full window sends nothing more");
    assert_eq!(dev.device().feed.in_flight(), 50);

    // Another reader is not held up; an ack opens the window by one.
    let mut b = Reader::open(&dev).await;
    let held_by_b = b.receive(50).await;
    a.ack(&held_by_a[..1]);
    let one_more = a.receive(1).await;
    assert!(!held_by_b.contains(&one_more[0]));
    let nothing_more = tokio::time::timeout(Duration::from_secs(3), a.records.next()).await;
    assert!(nothing_more.is_err(), "the window is full again");

    // B cannot ack A's record: ignored and counted.
    b.ack(&held_by_a[1..2]);
    wait_for("b's ack ignored", Duration::from_secs(15), || async {
        (counter(&dev, |c| c.closed_acks_ignored.load(Ordering::Relaxed)) == 1).then_some(())
    })
    .await;

    // A goes away: its 50 outstanding come back; B's stay with B.
    drop(a);
    wait_for("a's records back", Duration::from_secs(15), || async {
        (dev.device().feed.in_flight() == 50).then_some(())
    })
    .await;
    let rest = plain_read(&mut c).await;
    assert_eq!(rest.len(), 200 - 1 - 50, "acked one, B holds 50");
    assert!(rest.contains(&held_by_a[1]) && rest.contains(&one_more[0]));
    assert!(!rest.iter().any(|id| held_by_b.contains(id)));

    // B acks all and closes its ack stream: the call ends cleanly, nothing is left.
    b.ack(&held_by_b);
    drop(b.acks);
    let end = tokio::time::timeout(Duration::from_secs(15), b.records.next())
        .await
        .expect("the call ends");
    assert!(end.is_none(), "ends with OK: {end:?}");
    assert!(dev.device().feed.is_empty());
    assert_eq!(
        counter(&dev, |c| c.closed_acked.load(Ordering::Relaxed)),
        51
    );
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acked_reader_follows_closures_as_they_happen() {
    let mut dev = TestDevice::start_with("[dataplane]\ntick_ms = 20\n", true).await;
    let pool = dataplane::packet::PacketPool::new(64, 2048).unwrap();
    let mut c = dev.client(ApiVersion::V2).await;
    assert_eq!(c.add(vec![v4(1), v4(2)]).await.unwrap().request_status, 0);
    let mut a = Reader::open(&dev).await;
    reset(dev.ring("outside"), &pool, &v4(2), true);
    assert_eq!(a.receive(1).await, vec![2]);
    reset(dev.ring("inside"), &pool, &v4(1), false);
    assert_eq!(a.receive(1).await, vec![1]);
    a.ack(&[2, 1]);
    wait_acked(&dev, 2).await;
    drop(a);
    assert!(plain_read(&mut c).await.is_empty());
    // Acked: gone from the table too, so the ids can be offloaded again.
    assert_eq!(c.add(vec![v4(1), v4(2)]).await.unwrap().request_status, 0);
    dev.stop().await;
}
