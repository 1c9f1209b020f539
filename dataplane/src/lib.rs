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
//!
//! ```
//! use dataplane::port::ring::ring_port;
//! use dataplane::wire::{self, FrameSpec, PROTO_UDP};
//! use dataplane::{Action, Engine, EngineConfig, PortConfig, SessionSpec};
//!
//! // Two ring ports carrying lifs 1 and 2, and a firewall port.
//! let (outside, mut net_out) = ring_port("outside", [2, 0, 0, 0, 0, 1], 1, 256);
//! let (inside, mut net_in) = ring_port("inside", [2, 0, 0, 0, 0, 2], 1, 256);
//! let (firewall, _net_fw) = ring_port("firewall", [2, 0, 0, 0, 0, 3], 1, 256);
//! let port = |p: dataplane::port::ring::RingPort, lif| PortConfig {
//!     port: Box::new(p),
//!     lif,
//!     next_hop_mac: None,
//! };
//! let cfg = EngineConfig::new(
//!     vec![port(outside, Some(1)), port(inside, Some(2)), port(firewall, None)],
//!     2,
//! );
//! let engine = Engine::start(cfg).unwrap();
//!
//! let src = "10.0.0.1".parse().unwrap();
//! let dst = "10.0.1.1".parse().unwrap();
//! let s = SessionSpec::new(1, 1, 2, PROTO_UDP, src, 1000, dst, 53, Action::Forward);
//! assert_eq!(engine.add(vec![s.clone()]), vec![Ok(())]);
//!
//! // A frame of the session enters outside and leaves inside.
//! let spec = FrameSpec {
//!     src_mac: [2, 0, 0, 0, 1, 1],
//!     dst_mac: [2, 0, 0, 0, 1, 2],
//!     vlan: 0,
//!     v6: false,
//!     proto: PROTO_UDP,
//!     src: s.src,
//!     dst: s.dst,
//!     sport: 1000,
//!     dport: 53,
//!     tcp_flags: 0,
//!     payload_len: 18,
//! };
//! let pool = dataplane::packet::PacketPool::new(8, 128).unwrap();
//! let mut frame = [0u8; 128];
//! let n = wire::build(&spec, &mut frame).unwrap();
//! net_out.inject(pool.alloc_from(&frame[..n]).unwrap()).unwrap();
//! let mut sent = Vec::new();
//! while net_in.collect(&mut sent) == 0 {
//!     std::thread::yield_now();
//! }
//! assert_eq!(sent[0].data(), &frame[..n]);
//! assert_eq!(engine.query(1).unwrap().in_packets, 1);
//! engine.stop();
//! ```

pub mod engine;
pub mod flow;
pub mod mem;
pub mod neighbour;
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
