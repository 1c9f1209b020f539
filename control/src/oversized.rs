//! A request message over `api.max_message_bytes`: tonic answers it with
//! OUT_OF_RANGE, gRPC's convention (and its other implementations) say
//! RESOURCE_EXHAUSTED, which is what clients retry or report as a size problem.
//!
//! AddSession's stream decodes its own messages and fixes its status with
//! `resource_exhausted`; every other call is decoded by tonic before a handler runs,
//! and tonic answers it with a trailers-only response, which `OversizedLayer`
//! rewrites.

use http::Response;
use tonic::Status;

/// The text tonic's decoder puts in the status of a message over the limit.
const TONIC_TOO_LARGE: &str = "message length too large";

/// `status`, as RESOURCE_EXHAUSTED naming the setting when it is tonic's answer to
/// an oversized message; any other status unchanged.
pub fn resource_exhausted(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange && status.message().contains(TONIC_TOO_LARGE) {
        return Status::resource_exhausted(format!("{} (api.max_message_bytes)", status.message()));
    }
    status
}

/// The same for a whole response: its status is in the headers when tonic answered
/// before a handler ran (trailers-only).
pub fn fix_response<B>(mut res: Response<B>) -> Response<B> {
    let Some(status) = Status::from_header_map(res.headers()) else {
        return res;
    };
    if status.code() != tonic::Code::OutOfRange {
        return res;
    }
    let fixed = resource_exhausted(status);
    if fixed.code() == tonic::Code::ResourceExhausted {
        // Both headers are rewritten together; on the impossible failure (a message
        // that cannot be a header) the original answer stands.
        let mut headers = res.headers().clone();
        if fixed.add_header(&mut headers).is_ok() {
            *res.headers_mut() = headers;
        }
    }
    res
}

/// Rewrites tonic's OUT_OF_RANGE answers to oversized requests.
pub type OversizedLayer<B> = tower::util::MapResponseLayer<fn(Response<B>) -> Response<B>>;

/// The layer for the server's response body type.
pub fn layer<B>() -> OversizedLayer<B> {
    tower::util::MapResponseLayer::new(fix_response::<B> as fn(Response<B>) -> Response<B>)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: Status) -> Response<()> {
        status.into_http()
    }

    #[test]
    fn tonic_oversized_answer_becomes_resource_exhausted() {
        let s = Status::out_of_range(
            "Error, decoded message length too large: found 5033 bytes, the limit is: 4096 bytes",
        );
        let res = fix_response(answer(s));
        let got = Status::from_header_map(res.headers()).unwrap();
        assert_eq!(got.code(), tonic::Code::ResourceExhausted);
        assert!(got.message().contains("found 5033 bytes"), "{got:?}");
        assert!(
            got.message().ends_with("(api.max_message_bytes)"),
            "{got:?}"
        );
    }

    #[test]
    fn other_statuses_pass_unchanged() {
        for s in [
            Status::out_of_range("cursor past the end"),
            Status::not_found("no session 7"),
        ] {
            let code = s.code();
            let msg = s.message().to_string();
            let got = Status::from_header_map(fix_response(answer(s)).headers()).unwrap();
            assert_eq!((got.code(), got.message()), (code, msg.as_str()));
        }
        let ok = Response::new(());
        assert!(fix_response(ok).headers().is_empty());
    }
}
