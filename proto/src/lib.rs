//! The wire types of offloadd: OpenOffload `SessionTable` v1 and v2, and offloadd's
//! own admin service, generated at build time from the `.proto` files beside this
//! crate.
//!
//! This crate owns names and encodings only: no behaviour. v1 and v2 share one set of
//! message types (the v2 ones), so a server implements the logic once and serves it
//! under both versions' names.

// Modules nest as the packages do, so a message of one package that names another
// package's (the admin `ClosedRecord` embeds `openoffload.v2.SessionResponse`) finds it.

/// The OpenOffload packages.
pub mod openoffload {
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
}

/// offloadd's own packages.
pub mod offloadd {
    pub mod admin {
        /// `offloadd.admin.v1`: statistics, latency histograms, acked closed records.
        pub mod v1 {
            tonic::include_proto!("offloadd.admin.v1");
        }
    }
}

pub mod codec;

pub use offloadd::admin::v1 as admin;
pub use openoffload::{v1, v2};
