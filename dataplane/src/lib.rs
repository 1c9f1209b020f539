//! offloadd's dataplane: the part of the device that touches packets.
//!
//! It owns packet buffers, wire parsing, ports, the per-core flow tables, and the
//! pinned poll-mode workers with their command, closed-session and statistics
//! channels. It must not know about gRPC, tokio or the OpenOffload wire: the control
//! plane drives it through `Engine`.

pub mod mem;
pub mod packet;
pub mod port;
pub mod prefetch;
pub mod session;
pub mod steer;
pub mod wire;
