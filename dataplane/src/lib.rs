//! offloadd's dataplane: the part of the device that touches packets.
//!
//! It owns packet buffers, wire parsing, ports, the per-core flow tables, and the
//! pinned poll-mode workers with their command, closed-session and statistics
//! channels. It must not know about gRPC, tokio or the OpenOffload wire: the control
//! plane drives it through `Engine`.
//!
//! Where a packet goes: `port` (rx burst) -> `worker::pipeline` (parse with `wire`,
//! look up in `flow::table`, act) -> `port` (tx burst). Where a session command goes:
//! `engine` -> `worker::command` -> `worker::sessions` -> `flow::table`; closed
//! sessions leave through `worker::cleaner` into the engine's closed feed.

pub mod engine;
pub mod flow;
pub mod mem;
pub mod packet;
pub mod port;
pub mod prefetch;
pub mod session;
pub mod stats;
pub mod steer;
pub mod wire;
pub mod worker;

pub use engine::{Engine, EngineConfig, EngineError, NextHop, PortConfig, StopReport};
pub use session::{Action, AddError, CloseCause, SessionInfo, SessionSpec, SessionState};
pub use worker::PollMode;
