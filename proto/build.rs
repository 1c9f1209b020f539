//! Compiles the .proto files with protox (pure Rust: no protoc on the machine) and
//! generates prost messages and tonic services.
//!
//! Both OpenOffload versions share field numbers, types and enum values, so only the
//! v2 messages are generated; every v1 type is mapped onto its v2 twin with
//! `extern_path`, and the v1 service speaks v2 Rust types under v1 wire names.

const PROTOS: &[&str] = &[
    "openoffload_v2.proto",
    "openoffload_v1.proto",
    "offloadd_admin_v1.proto",
];

/// v1 name -> v2 name, for every message and enum.
const V1_TO_V2: &[(&str, &str)] = &[
    ("IP_VERSION", "IpVersion"),
    ("PROTOCOL_ID", "ProtocolId"),
    ("SESSION_STATE", "SessionState"),
    ("SESSION_CLOSE_CODE", "SessionCloseCode"),
    ("ADD_SESSION_STATUS", "AddSessionStatus"),
    ("REQUEST_STATUS", "RequestStatus"),
    ("ACTION_TYPE", "ActionType"),
    ("uuid", "Uuid"),
    ("sessionId", "SessionId"),
    ("actionParameters", "ActionParameters"),
    ("sessionRequest", "SessionRequest"),
    ("sessionResponseError", "SessionResponseError"),
    ("sessionResponses", "SessionResponses"),
    ("addSessionResponse", "AddSessionResponse"),
    ("sessionResponse", "SessionResponse"),
    ("sessionRequestArgs", "SessionRequestArgs"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    // Every service decodes its messages from a slice (src/codec.rs).
    let mut builder = tonic_prost_build::configure().codec_path("crate::codec::SliceCodec");
    for (v1, v2) in V1_TO_V2 {
        builder = builder.extern_path(format!(".openoffload.v1.{v1}"), format!("crate::v2::{v2}"));
    }
    builder.compile_fds(fds)?;
    Ok(())
}
