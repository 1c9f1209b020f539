//! Per-worker session state: the flow table (a compact probe index over a slab of
//! entries) and the timer wheel that finds idle sessions.
//!
//! Owned by exactly one worker; nothing here is shared or locked. Memory is reserved
//! when the table is made: a full table refuses an insert, it never grows.

pub mod closed_queue;
pub mod ids;
pub mod key;
pub mod table;
pub mod tcp_window;
pub mod wheel;

pub use closed_queue::ClosedQueue;
pub use key::{Dir, FlowKey};
pub use table::{Cold, Entry, FlowTable, InsertError, Probe, Totals};
pub use tcp_window::{TcpWindow, Verdict};
pub use wheel::TimerWheel;
