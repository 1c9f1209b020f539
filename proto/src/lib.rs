//! The wire types of offloadd: OpenOffload `SessionTable` v1 and v2, and offloadd's
//! own admin service, generated at build time from the `.proto` files beside this
//! crate.
//!
//! This crate owns names and encodings only: no behaviour. v1 and v2 share one set of
//! message types (the v2 ones), so a server implements the logic once and serves it
//! under both versions' names.

/// `openoffload.v2`: the messages, enums and the `SessionTable` service.
pub mod v2 {
    tonic::include_proto!("openoffload.v2");
}

/// `openoffload.v1`: only the `SessionTable` service (lowerCamel method names); its
/// messages are the v2 ones.
#[allow(non_camel_case_types)]
pub mod v1 {
    tonic::include_proto!("openoffload.v1");
}

/// `offloadd.admin.v1`: statistics and latency histograms of the device.
pub mod admin {
    tonic::include_proto!("offloadd.admin.v1");
}
