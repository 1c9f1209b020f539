//! AckedClosedSessions (admin service): closed records for clients that need each one
//! exactly once across their own crashes.
//!
//! The stream follows the feed, as GetClosedSessions in follow mode does, but a record
//! sent is only *outstanding*: it stays taken in the feed (readable, not given to
//! anyone else) until the client acks its session id, and only then is forgotten.
//! When the call ends, whatever the reason (client cancel or crash, connection reset,
//! the client closing its ack stream), hyper drops the response stream and every
//! outstanding record goes back to the feed, first in line.
//!
//! Acks are read inside the response stream itself, so one future owns the
//! outstanding records and dropping it settles them: no task, no lock. At most
//! `api.ack_window` records are outstanding per stream. An ack naming an id that is
//! not outstanding on this stream (unknown, already acked, another stream's) is
//! ignored and counted (`api_closed_acks_ignored`): the stream goes on.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dataplane::session::SessionInfo;
use futures::{FutureExt, Stream, StreamExt};
use proto::admin::{ClosedAck, ClosedRecord};
use tonic::{Status, Streaming};

use crate::device::{ControlCounters, Device};
use crate::wire;

pub type AckedStream = Pin<Box<dyn Stream<Item = Result<ClosedRecord, Status>> + Send>>;

/// How long a stream with nothing to do waits before looking at the feed again: the
/// pump wakes it sooner; this covers records that wait in the workers while the feed
/// is at its bound.
const FEED_RECHECK: Duration = Duration::from_millis(200);

/// One stream's records sent and not yet acked, in sending order. Dropping it gives
/// them back to the feed.
struct Outstanding {
    device: Arc<Device>,
    ids: VecDeque<u64>,
}

impl Outstanding {
    /// The client acked these ids: forget those outstanding here, count the others.
    fn acked(&mut self, ids: &[u64]) {
        let mut known = Vec::with_capacity(ids.len());
        for &id in ids {
            if let Some(p) = self.ids.iter().position(|&x| x == id) {
                self.ids.remove(p);
                known.push(id);
            }
        }
        let d = &self.device;
        ControlCounters::bump(&d.counters.closed_acked, known.len() as u64);
        ControlCounters::bump(
            &d.counters.closed_acks_ignored,
            (ids.len() - known.len()) as u64,
        );
        d.forget_delivered(known);
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.ids.drain(..).collect();
        self.device.give_back_closed(
            &ids,
            "an AckedClosedSessions stream ended with records not acked",
        );
    }
}

struct AckedCall {
    device: Arc<Device>,
    acks: Streaming<ClosedAck>,
    outstanding: Outstanding,
    window: usize,
}

/// What a waiting stream woke up for.
enum Woken {
    Ack(ClosedAck),
    /// The client closed its ack stream or the call broke: the call is over.
    AcksEnded,
    /// Records may have arrived in the feed.
    Feed,
    /// The device is stopping.
    Stopping,
}

/// What a call sends next.
enum Next {
    Record(ClosedRecord),
    /// The device is stopping: the call ends with UNAVAILABLE.
    Stopping,
    /// The call is over.
    End,
}

impl AckedCall {
    /// Applies every ack already received, without waiting; false if the ack stream
    /// has ended.
    fn apply_ready_acks(&mut self) -> bool {
        while let Some(next) = self.acks.next().now_or_never() {
            match next {
                Some(Ok(ack)) => self.outstanding.acked(&ack.session_ids),
                _ => return false,
            }
        }
        true
    }

    /// The next record to send, if the window has room and the feed has one. It is
    /// outstanding from the moment it is taken.
    fn take_record(&mut self) -> Option<SessionInfo> {
        let feed = &self.device.feed;
        while self.outstanding.ids.len() < self.window {
            let info = feed.take()?;
            // A record deleted since it was taken is not sent; one going out is no
            // longer deletable (`ClosedFeed::start_sending`).
            if feed.start_sending(info.id) {
                self.outstanding.ids.push_back(info.id);
                return Some(info);
            }
        }
        None
    }

    /// Waits for an ack, or, when the window has room, for `arrived` (the feed's
    /// notification, enabled before the feed was last looked at).
    async fn wait(&mut self, arrived: Pin<&mut tokio::sync::futures::Notified<'_>>) -> Woken {
        let room = self.outstanding.ids.len() < self.window;
        let mut stopping = self.device.stopping.subscribe();
        let feed = async {
            if room {
                let _ = tokio::time::timeout(FEED_RECHECK, arrived).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            ack = self.acks.next() => match ack {
                Some(Ok(ack)) => Woken::Ack(ack),
                _ => Woken::AcksEnded,
            },
            _ = feed => Woken::Feed,
            _ = stopping.wait_for(|&s| s) => Woken::Stopping,
        }
    }

    /// What to send the client next.
    async fn next_record(&mut self) -> Next {
        let device = self.device.clone();
        loop {
            if !self.apply_ready_acks() {
                return Next::End;
            }
            if *device.stopping.borrow() {
                return Next::Stopping;
            }
            let arrived = device.feed.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(info) = self.take_record() {
                return Next::Record(ClosedRecord {
                    session: Some(wire::response_from_info(&info)),
                });
            }
            match self.wait(arrived).await {
                Woken::Ack(ack) => self.outstanding.acked(&ack.session_ids),
                Woken::AcksEnded => return Next::End,
                Woken::Feed => {}
                Woken::Stopping => return Next::Stopping,
            }
        }
    }
}

/// The response stream of one AckedClosedSessions call.
pub fn acked_closed_records(device: Arc<Device>, acks: Streaming<ClosedAck>) -> AckedStream {
    let call = AckedCall {
        window: device.config.api.ack_window,
        outstanding: Outstanding {
            device: device.clone(),
            ids: VecDeque::new(),
        },
        device,
        acks,
    };
    Box::pin(futures::stream::unfold(Some(call), |call| async move {
        let mut call = call?;
        match call.next_record().await {
            Next::Record(r) => Some((Ok(r), Some(call))),
            // Records outstanding go back to the feed as the call is dropped.
            Next::Stopping => Some((Err(Status::unavailable("the device is stopping")), None)),
            Next::End => None,
        }
    }))
}
