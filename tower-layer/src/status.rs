//! Refusals as the API server phrases errors: an HTTP status with a `Status` body (built by
//! [`kubeleash_core::status::Status`], its one owner), so kubectl, kube-rs and the official
//! clients show the reason as they show any API error.

use bytes::Bytes;
use kubeleash_core::status::Status;

/// A `Status` failure body.
pub(crate) fn body(code: u16, reason: &str, message: &str) -> Bytes {
    Bytes::from(Status::failure(code, reason, message).to_json())
}

/// A response carrying a `Status` failure.
pub(crate) fn response<B>(
    code: u16,
    reason: &str,
    message: &str,
    body_of: impl FnOnce(Bytes) -> B,
) -> http::Response<B> {
    Status::failure(code, reason, message).response(|b| body_of(Bytes::from(b)))
}
