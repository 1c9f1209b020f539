//! What the control side asks a worker, and how the answer comes back.
//!
//! Commands travel over a bounded channel; the answer is a callback that the worker
//! calls once, on its own thread, with the result. A callback keeps the dataplane free
//! of any async runtime: the control plane passes one that completes its own future,
//! tests and benchmarks one that sends on a channel. Callbacks must be quick (a
//! channel send): they run between packet bursts.

use std::time::Instant;

use crate::session::{AddError, SessionInfo, SessionSpec, SessionView};
use crate::stats::WorkerReport;

/// The answer to `Command::Add`: the specs handed back (the control plane explains
/// refusals from them, without keeping a copy while the worker has them) and one
/// result each, in order.
pub struct Added {
    pub specs: Vec<SessionSpec>,
    pub results: Vec<Result<(), AddError>>,
}

/// Called once by the worker with the answer.
pub type Reply<T> = Box<dyn FnOnce(T) + Send + 'static>;

pub enum Command {
    /// Install sessions (all owned by this worker), in order; one result each.
    Add {
        specs: Vec<SessionSpec>,
        /// When each spec was received (the control plane) or queued (others), for
        /// the add-to-effect histogram; one per spec (a missing one reads as the last).
        received: Vec<Instant>,
        reply: Reply<Added>,
    },
    /// Remove a session at once; its final state, or None for an unknown id.
    Delete {
        id: u64,
        reply: Reply<Option<SessionInfo>>,
    },
    /// The state of each id (None for ids this worker does not hold).
    Query {
        ids: Vec<u64>,
        reply: Reply<Vec<Option<SessionInfo>>>,
    },
    /// Each id's tuple, lifs and action with its state (None for ids this worker
    /// does not hold).
    Describe {
        ids: Vec<u64>,
        reply: Reply<Vec<Option<SessionView>>>,
    },
    /// Counters and histograms.
    Report { reply: Reply<WorkerReport> },
}

impl Command {
    /// Answers the command without running it (the worker is gone): adds fail as
    /// unavailable, queries find nothing.
    pub fn refuse(self) {
        match self {
            Command::Add { specs, reply, .. } => {
                let results = specs.iter().map(|_| Err(AddError::Unavailable)).collect();
                reply(Added { specs, results })
            }
            Command::Delete { reply, .. } => reply(None),
            Command::Query { ids, reply } => reply(ids.iter().map(|_| None).collect()),
            Command::Describe { ids, reply } => reply(ids.iter().map(|_| None).collect()),
            Command::Report { .. } => {}
        }
    }
}
