//! `SessionTable`, once: the OpenOffload behaviour over the device. The v1 and v2
//! services (same messages, different names) both call `SessionTable` here.
//!
//! Where a session command goes: AddSession is `add_session.rs` (a request is checked,
//! its id claimed in the directory, and it joins the batch of its owning worker, so a
//! stream of adds costs no round trip per session); the others are here.

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use futures::Stream;
use proto::v2::{
    AddSessionResponse, RequestStatus, SessionCloseCode, SessionId, SessionRequest,
    SessionRequestArgs, SessionResponse, SessionResponses, SessionState,
};
use tonic::{Request, Response, Status, Streaming};

use crate::add_session::AddCall;
use crate::config::UnknownSession;
use crate::delivery::{Ledger, LedgerHandle};
use crate::device::{ControlCounters, Device};
use crate::wire;

/// The cursor that means "from the beginning" (the C++ client starts from it). A
/// session with this id is never listed by a cursor page: the client would send its
/// id as the next cursor and start over, for ever.
const CURSOR_FROM_START: u64 = 4_294_967_295;

pub type ClosedStream = Pin<Box<dyn Stream<Item = Result<SessionResponse, Status>> + Send>>;

#[derive(Clone)]
pub struct SessionTable {
    pub device: Arc<Device>,
}

impl SessionTable {
    fn unknown(&self, id: u64) -> Result<Response<SessionResponse>, Status> {
        match self.device.config.api.unknown_session {
            UnknownSession::NotFound => Err(Status::not_found(format!("no session {id}"))),
            UnknownSession::InBand => Ok(Response::new(SessionResponse {
                session_id: id,
                session_state: SessionState::UnknownState as i32,
                session_close_code: SessionCloseCode::UnknownCloseCode as i32,
                request_status: RequestStatus::RejectedSessionNonexistent as i32,
                ..Default::default()
            })),
        }
    }

    /// Runs the call on a task of its own: when the client resets the stream, hyper
    /// drops this future, but the call still ends (its stream yields the reset) and
    /// removes the sessions it had accepted.
    pub async fn add(
        &self,
        stream: impl Stream<Item = Result<SessionRequest, Status>> + Unpin + Send + 'static,
    ) -> Result<Response<AddSessionResponse>, Status> {
        let device = self.device.clone();
        tokio::spawn(async move { AddCall::run(&device, stream).await })
            .await
            .unwrap_or_else(|e| Err(Status::internal(format!("AddSession failed: {e}"))))
    }

    pub async fn get(&self, req: Request<SessionId>) -> Result<Response<SessionResponse>, Status> {
        ControlCounters::bump(&self.device.counters.get_calls, 1);
        let id = req.into_inner().session_id;
        match self.device.lookup(id).await {
            Some(info) => Ok(Response::new(wire::response_from_info(&info))),
            None => self.unknown(id),
        }
    }

    pub async fn delete(
        &self,
        req: Request<SessionId>,
    ) -> Result<Response<SessionResponse>, Status> {
        ControlCounters::bump(&self.device.counters.delete_calls, 1);
        let id = req.into_inner().session_id;
        match self.device.delete(id).await {
            Some(info) => {
                let mut r = wire::response_from_info(&info);
                r.session_state = SessionState::Closed as i32;
                if r.end_time.is_none() {
                    r.end_time = Some(wire::timestamp(SystemTime::now()));
                }
                Ok(Response::new(r))
            }
            None => self.unknown(id),
        }
    }

    pub async fn list(
        &self,
        req: Request<SessionRequestArgs>,
    ) -> Result<Response<SessionResponses>, Status> {
        let d = &self.device;
        ControlCounters::bump(&d.counters.list_calls, 1);
        let a = req.into_inner();
        let cap = d.config.api.list_cap as usize;
        let (page, next_key) = if a.page_size > 0 && a.page >= 1 {
            // Page-number style, 1-based.
            let size = (a.page_size as usize).min(cap);
            let skip = (a.page as usize - 1).saturating_mul(a.page_size as usize);
            let page = d.directory.slice(skip, size);
            let next = page.last().map_or(0, |p| p.0);
            (page, next)
        } else if a.page_size > 0 {
            // Cursor style: only the start marker means "from the beginning"; any
            // other cursor (0 included) lists the ids above it. next_key is the last
            // id listed.
            let after = (a.start_session != CURSOR_FROM_START).then_some(a.start_session);
            let size = (a.page_size as usize).min(cap);
            let (page, _) = d.directory.after(after, Some(CURSOR_FROM_START), size);
            let next = page.last().map_or(0, |p| p.0);
            (page, next)
        } else {
            // Everything, up to the cap; next_key says where to go on.
            let after = match a.start_session {
                0 | CURSOR_FROM_START => None,
                s => Some(s),
            };
            let (page, more) = d.directory.after(after, None, cap);
            let next = if more {
                page.last().map_or(0, |p| p.0)
            } else {
                0
            };
            (page, next)
        };
        let infos = d.states(&page).await;
        Ok(Response::new(SessionResponses {
            session_info: infos.iter().map(wire::response_from_info).collect(),
            next_key,
        }))
    }

    pub async fn closed(
        &self,
        req: Request<SessionRequestArgs>,
    ) -> Result<Response<ClosedStream>, Status> {
        let d = self.device.clone();
        ControlCounters::bump(&d.counters.closed_calls, 1);
        let follow =
            d.config.api.closed_follow || req.metadata().contains_key(crate::client::FOLLOW_HEADER);
        let limit = match req.get_ref().page_size {
            0 => u64::MAX,
            n => n as u64,
        };
        let book = req
            .extensions()
            .get::<crate::connections::ConnectionInfo>()
            .map(|c| c.credit.clone());
        let ledger = Arc::new(Ledger::new(d.clone(), book));
        let stream = closed_records(d, ledger.clone(), limit, follow);
        let mut res = Response::new(Box::pin(stream) as ClosedStream);
        res.extensions_mut().insert(LedgerHandle(ledger));
        Ok(res)
    }
}

/// Records a stream takes from the feed at once, at most.
const CLOSED_CHUNK: usize = 64;
/// Bytes a closed record takes on the wire, about (the first take within a window).
const CLOSED_RECORD_BYTES: i64 = 48;
/// How long a stream with nothing to do waits before looking again: the pump and
/// credit wake it sooner; this covers records that wait in the workers while the feed
/// is at its cap.
const CLOSED_RECHECK: std::time::Duration = std::time::Duration::from_millis(200);

/// The records of one GetClosedSessions call: up to `limit`, then the end (or, when
/// following, waiting for more), never more than the client's window ahead of the
/// credit it returned (`Ledger::room`).
fn closed_records(
    d: Arc<Device>,
    ledger: Arc<Ledger>,
    limit: u64,
    follow: bool,
) -> impl Stream<Item = Result<SessionResponse, Status>> + Send {
    struct State {
        d: Arc<Device>,
        ledger: Arc<Ledger>,
        /// Taken from the feed (and in the ledger), not yet yielded.
        ready: std::collections::VecDeque<(u64, SessionResponse)>,
        left: u64,
        /// The device's stop, which ends a following stream (`Device::stopping`).
        stopping: tokio::sync::watch::Receiver<bool>,
    }
    let state = State {
        stopping: d.stopping.subscribe(),
        d,
        ledger,
        ready: std::collections::VecDeque::new(),
        left: limit,
    };
    futures::stream::unfold(state, move |mut st| async move {
        loop {
            if let Some((id, response)) = st.ready.pop_front() {
                // A record deleted since it was taken is not sent; one going out is
                // no longer deletable (`ClosedFeed::start_sending`).
                if !st.d.feed.start_sending(id) {
                    st.ledger.not_sent(id);
                    continue;
                }
                return Some((Ok(response), st));
            }
            if st.left == 0 || st.ledger.is_over() {
                return None;
            }
            // A stopping device ends a following stream, and says so, as it ends the
            // acknowledged ones (`acked.rs`); what the client has not proved it
            // received goes back with the ledger.
            if follow && *st.stopping.borrow_and_update() {
                st.left = 0;
                return Some((Err(Status::unavailable("the device is stopping")), st));
            }
            let room = st.ledger.room();
            // The first record goes even into a window of 0: its bytes are how the
            // stream is found on the wire, and its credit comes as the client reads.
            if room <= 0 && st.ledger.has_queued() {
                let credit = st.ledger.changed.notified();
                let _ = tokio::time::timeout(CLOSED_RECHECK, credit).await;
                continue;
            }
            let arrived = st.d.feed.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let fits = (room / CLOSED_RECORD_BYTES).max(1) as u64;
            let want = fits.min(CLOSED_CHUNK as u64).min(st.left) as usize;
            let taken = take_records(&st.d, &st.ledger, want, &mut st.ready);
            if taken > 0 {
                st.left = st.left.saturating_sub(taken as u64);
                continue;
            }
            if !follow {
                return None;
            }
            tokio::select! {
                _ = tokio::time::timeout(CLOSED_RECHECK, arrived) => {}
                _ = st.stopping.changed() => {}
            }
        }
    })
}

/// Takes up to `want` records from the feed into the ledger and `ready`; how many
/// (none when the feed has none, or the stream is over).
fn take_records(
    d: &Device,
    ledger: &Ledger,
    want: usize,
    ready: &mut std::collections::VecDeque<(u64, SessionResponse)>,
) -> usize {
    let mut chunk = Vec::with_capacity(want);
    if d.feed.take_into(want, &mut chunk) == 0 {
        return 0;
    }
    let responses: Vec<SessionResponse> = chunk.iter().map(wire::response_from_info).collect();
    // The 5-byte gRPC prefix and the message, as tonic encodes it (no compression).
    let taken: Vec<(u64, u64)> = chunk
        .iter()
        .zip(&responses)
        .map(|(i, r)| (i.id, 5 + prost::Message::encoded_len(r) as u64))
        .collect();
    if !ledger.taken_ids(&taken) {
        return 0;
    }
    ready.extend(taken.iter().map(|t| t.0).zip(responses));
    chunk.len()
}

macro_rules! session_table_service {
    ($version:ident, $add:ident, $get:ident, $delete:ident, $list:ident, $closed:ident, $stream:ident) => {
        #[tonic::async_trait]
        impl proto::$version::session_table_server::SessionTable for SessionTable {
            async fn $add(
                &self,
                request: Request<Streaming<SessionRequest>>,
            ) -> Result<Response<AddSessionResponse>, Status> {
                self.add(request.into_inner()).await
            }

            async fn $get(
                &self,
                request: Request<SessionId>,
            ) -> Result<Response<SessionResponse>, Status> {
                self.get(request).await
            }

            async fn $delete(
                &self,
                request: Request<SessionId>,
            ) -> Result<Response<SessionResponse>, Status> {
                self.delete(request).await
            }

            async fn $list(
                &self,
                request: Request<SessionRequestArgs>,
            ) -> Result<Response<SessionResponses>, Status> {
                self.list(request).await
            }

            type $stream = ClosedStream;

            async fn $closed(
                &self,
                request: Request<SessionRequestArgs>,
            ) -> Result<Response<ClosedStream>, Status> {
                self.closed(request).await
            }
        }
    };
}

session_table_service!(
    v2,
    add_session,
    get_session,
    delete_session,
    get_all_sessions,
    get_closed_sessions,
    GetClosedSessionsStream
);
session_table_service!(
    v1,
    add_session,
    get_session,
    delete_session,
    get_all_sessions,
    get_closed_sessions,
    getClosedSessionsStream
);
