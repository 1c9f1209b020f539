//! One AddSession call, step by step: where a session command goes.
//!
//! 1. `take_rounds`: wait (holding nothing) until the client has sent something,
//!    take a round slot (`api.add_batches_in_flight` per worker, device-wide), then
//!    take up to `api.add_batch` requests that are ready (`take_round`). Each is
//!    checked (`wire::spec_from_request`), its id claimed in the directory, and it
//!    joins the batch of its owning worker (`admit`); the round's batches go out at
//!    once (`send_round`). Requests wait in the stream, not in a worker's queue, so
//!    the time from taking a request to its session being live stays short.
//! 2. `collect_answers`: every batch's results; refusals are explained and counted.
//! 3. `response`: the contract's answer (bitmask, statuses, reasons in trailers).
//!    A call that ends with an error status instead (`api.max_add_stream`, a
//!    malformed or oversized message, the client cancelling) first removes the
//!    sessions it had accepted (`roll_back`): the client was told the call failed,
//!    so none of them may stay.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use dataplane::session::SessionSpec;
use dataplane::worker::Added;
use futures::stream::Peekable;
use futures::{FutureExt, Stream, StreamExt};
use http::HeaderValue;
use proto::v2::{AddSessionResponse, AddSessionStatus, SessionRequest, SessionResponseError};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::OwnedSemaphorePermit;
use tonic::{Response, Status};

use crate::device::{ControlCounters, Device};
use crate::refusal::{self, Reason, Refusal};
use crate::trailers::ExtraTrailers;
use crate::wire;

/// Adds waiting to go to one worker.
#[derive(Default)]
struct Batch {
    /// (position in the stream, id) of each spec.
    items: Vec<(u32, u64)>,
    specs: Vec<SessionSpec>,
    /// When each request was taken from the stream.
    received: Vec<Instant>,
}

impl Batch {
    fn with_capacity(n: usize) -> Batch {
        Batch {
            items: Vec::with_capacity(n),
            specs: Vec::with_capacity(n),
            received: Vec::with_capacity(n),
        }
    }
}

/// A worker's answer to one batch: its items, and the specs back (to explain
/// refusals and to tell the simulator) with one result each.
type BatchAnswer = (Vec<(u32, u64)>, Added);

/// How a round ended.
enum RoundEnd {
    /// The client has nothing more ready now.
    Drained,
    /// The stream ended, or the call must end (`AddCall::failure`).
    Ended,
}

/// One AddSession call as it goes.
pub struct AddCall<'a> {
    device: &'a Device,
    /// Requests taken from the stream.
    taken: u32,
    /// Batches sent to workers.
    sent: usize,
    /// (position in the stream, id, why) of each refused session.
    rejected: Vec<(u32, u64, Refusal)>,
    /// Ids of the sessions the workers accepted.
    accepted: Vec<u64>,
    /// Why the call ends with an error status, once known.
    failure: Option<Status>,
    answers_tx: UnboundedSender<BatchAnswer>,
    answers: UnboundedReceiver<BatchAnswer>,
}

impl<'a> AddCall<'a> {
    /// Runs the whole call.
    pub async fn run(
        device: &'a Device,
        stream: impl Stream<Item = Result<SessionRequest, Status>> + Unpin,
    ) -> Result<Response<AddSessionResponse>, Status> {
        ControlCounters::bump(&device.counters.add_calls, 1);
        let (answers_tx, answers) = unbounded_channel();
        let mut call = AddCall {
            device,
            taken: 0,
            sent: 0,
            rejected: Vec::new(),
            accepted: Vec::new(),
            failure: None,
            answers_tx,
            answers,
        };
        call.take_rounds(stream).await;
        ControlCounters::bump(&device.counters.add_requests, call.taken.into());
        let failure = match call.collect_answers().await {
            Err(status) => Some(status),
            Ok(()) => call.failure.take(),
        };
        if let Some(status) = failure {
            return Err(call.roll_back(status).await);
        }
        tracing::debug!(
            sessions = call.taken,
            rejected = call.rejected.len(),
            "AddSession answered"
        );
        Ok(call.response())
    }

    async fn take_rounds(
        &mut self,
        stream: impl Stream<Item = Result<SessionRequest, Status>> + Unpin,
    ) {
        let mut stream = stream.peekable();
        loop {
            if Pin::new(&mut stream).peek().await.is_none() {
                return;
            }
            let Ok(slot) = self.device.add_rounds.clone().acquire_owned().await else {
                self.failure = Some(Status::unavailable("the device is stopping"));
                return;
            };
            let (batches, end) = self.take_round(&mut stream);
            self.send_round(batches, Arc::new(slot));
            if let RoundEnd::Ended = end {
                return;
            }
        }
    }

    /// Takes up to `api.add_batch` requests the client has ready, into batches by
    /// owning worker.
    fn take_round<S>(&mut self, stream: &mut Peekable<S>) -> (Vec<Option<Batch>>, RoundEnd)
    where
        S: Stream<Item = Result<SessionRequest, Status>> + Unpin,
    {
        let d = self.device;
        let max = d.config.api.max_add_stream;
        let mut batches: Vec<Option<Batch>> = (0..d.engine.workers()).map(|_| None).collect();
        for _ in 0..d.config.api.add_batch {
            let req = match stream.next().now_or_never() {
                None => return (batches, RoundEnd::Drained),
                Some(None) => return (batches, RoundEnd::Ended),
                Some(Some(Err(status))) => {
                    self.failure = Some(crate::oversized::resource_exhausted(status));
                    return (batches, RoundEnd::Ended);
                }
                Some(Some(Ok(req))) => req,
            };
            if self.taken as usize >= max {
                self.failure = Some(Status::resource_exhausted(format!(
                    "more than {max} sessions in one AddSession stream (api.max_add_stream)"
                )));
                return (batches, RoundEnd::Ended);
            }
            self.admit(&req, &mut batches);
        }
        (batches, RoundEnd::Drained)
    }

    /// Checks one request, claims its id and puts it in its worker's batch; or
    /// refuses it.
    fn admit(&mut self, req: &SessionRequest, batches: &mut [Option<Batch>]) {
        let received = Instant::now();
        let pos = self.taken;
        self.taken += 1;
        let id = req.session_id;
        let spec = match wire::spec_from_request(req) {
            Ok(s) => s,
            Err(why) => return self.refuse(pos, id, why),
        };
        let w = self.device.engine.owner(&spec);
        if !self.device.directory.reserve(id, w) {
            let why = Refusal::new(Reason::IdExists, format!("session id {id} already exists"));
            return self.refuse(pos, id, why);
        }
        let room = self.device.config.api.add_batch;
        let b = batches[w].get_or_insert_with(|| Batch::with_capacity(room));
        b.items.push((pos, id));
        b.specs.push(spec);
        b.received.push(received);
    }

    fn refuse(&mut self, pos: u32, id: u64, why: Refusal) {
        self.device.refused(id, &why);
        self.rejected.push((pos, id, why));
    }

    /// Sends each batch of a round to its worker. The round's slot is free again once
    /// every batch of it is answered.
    fn send_round(&mut self, batches: Vec<Option<Batch>>, slot: Arc<OwnedSemaphorePermit>) {
        for (w, b) in batches.into_iter().enumerate() {
            let Some(b) = b else { continue };
            let tx = self.answers_tx.clone();
            let slot = slot.clone();
            let items = b.items;
            self.device.send_adds(w, b.specs, b.received, move |added| {
                drop(slot);
                let _ = tx.send((items, added));
            });
            self.sent += 1;
        }
    }

    /// Waits for every batch sent; confirms accepted ids and explains refusals.
    async fn collect_answers(&mut self) -> Result<(), Status> {
        let d = self.device;
        for _ in 0..self.sent {
            let Some((items, Added { specs, results })) = self.answers.recv().await else {
                // A worker went away with batches unanswered: their ids are not held.
                return Err(Status::unavailable("a dataplane worker stopped"));
            };
            let first_accepted = self.accepted.len();
            for (i, ((pos, id), r)) in items.into_iter().zip(results).enumerate() {
                match r {
                    Ok(()) => {
                        self.accepted.push(id);
                        if let (Some(sim), Some(spec)) = (&d.simulator, specs.get(i)) {
                            let _ = sim.try_send(spec.clone());
                        }
                    }
                    Err(e) => {
                        d.directory.remove(id);
                        let why = match specs.get(i) {
                            Some(spec) => Refusal::from_add_error(e, spec, &d.config),
                            None => Refusal::new(Reason::Unavailable, e.to_string()),
                        };
                        self.refuse(pos, id, why);
                    }
                }
            }
            d.directory.confirm(&self.accepted[first_accepted..]);
        }
        Ok(())
    }

    /// Removes every session this call had accepted (from its worker, or from the
    /// closed feed if it closed meanwhile, and from the directory) and returns
    /// `status` saying so.
    async fn roll_back(&mut self, status: Status) -> Status {
        let accepted = std::mem::take(&mut self.accepted);
        let removed = futures::stream::iter(accepted.iter().copied())
            .map(|id| self.device.delete(id))
            .buffer_unordered(ROLLBACK_IN_FLIGHT)
            .filter(|info| std::future::ready(info.is_some()))
            .count()
            .await;
        tracing::info!(
            accepted = accepted.len(),
            removed,
            status = %status.message(),
            "AddSession failed; the sessions it had accepted were removed"
        );
        let mut message = format!(
            "{}; the {} sessions of this call that were accepted were removed",
            status.message(),
            accepted.len()
        );
        if removed < accepted.len() {
            // Only a session closed and already delivered by GetClosedSessions.
            message.push_str(&format!(
                " ({} of them had already closed and been reported)",
                accepted.len() - removed
            ));
        }
        Status::new(status.code(), message)
    }

    /// The answer: the bit of each refused message among the first 64, the status
    /// the refused ones share (or `_SESSION_REJECTED`), each refusal with its
    /// `AddSessionStatus`, and the reasons in trailers.
    fn response(mut self) -> Response<AddSessionResponse> {
        self.rejected.sort_unstable_by_key(|r| r.0);
        let rejected = &self.rejected;
        let error_status = rejected
            .iter()
            .filter(|r| r.0 < 64)
            .fold(0u64, |bits, r| bits | 1 << r.0);
        let request_status = match rejected.first() {
            None => AddSessionStatus::SessionAccepted,
            Some((_, _, first)) => {
                let s = first.reason.status();
                if rejected.iter().all(|r| r.2.reason.status() == s) {
                    s
                } else {
                    AddSessionStatus::SessionRejected
                }
            }
        };
        let mut res = Response::new(AddSessionResponse {
            request_status: request_status as i32,
            error_status,
            start_time: Some(wire::timestamp(SystemTime::now())),
            response_error: rejected
                .iter()
                .map(|(_, id, why)| SessionResponseError {
                    session_id: *id,
                    error_status: why.reason.status() as i32,
                })
                .collect(),
        });
        let trailers = refusal_trailers(rejected);
        if !trailers.0.is_empty() {
            res.extensions_mut().insert(trailers);
        }
        res
    }
}

/// How many deletes the rollback of a failed call has in flight at once.
const ROLLBACK_IN_FLIGHT: usize = 64;

/// The reasons of refused sessions as trailers (see `refusal`).
fn refusal_trailers(rejected: &[(u32, u64, Refusal)]) -> ExtraTrailers {
    let refused: Vec<(u64, &Refusal)> = rejected.iter().map(|(_, id, r)| (*id, r)).collect();
    let (values, omitted) = refusal::trailer_values(&refused);
    let mut t = http::HeaderMap::new();
    for v in values {
        // Printable ASCII by construction; a value that still fails is left out.
        if let Ok(v) = HeaderValue::from_str(&v) {
            t.append(refusal::TRAILER, v);
        }
    }
    if omitted > 0 {
        t.insert(refusal::TRAILER_OMITTED, HeaderValue::from(omitted));
    }
    ExtraTrailers(t)
}
