//! offloadd's control plane: the OpenOffload `SessionTable` service (v1 and v2) and
//! the admin service over the dataplane engine, and what offloadctl shares with it.
//!
//! Owns: the config, TLS, the session directory (id -> worker, ordered), the
//! closed-session feed and its delivery, the traffic simulator. Must not: touch a
//! packet on the hot path, or keep counters of sessions (they live in the workers).

pub mod acked;
pub mod add_session;
pub mod admin;
pub mod api_io;
pub mod body_layer;
pub mod boot;
pub mod certs;
pub mod cli_docs;
pub mod client;
pub mod closed_feed;
pub mod config;
pub mod connections;
pub mod cpus;
pub mod delivery;
pub mod device;
pub mod directory;
pub mod h2_credit;
pub mod h2_frames;
pub mod metrics;
pub mod metrics_http;
pub mod oversized;
pub mod refusal;
pub mod server;
pub mod service;
pub mod simulator;
pub mod testing;
pub mod trailers;
pub mod wire;
