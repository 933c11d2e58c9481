//! Refusals as the API server phrases errors: an HTTP status with a `Status` body, so kubectl,
//! kube-rs and the official clients show the reason as they show any API error.

use bytes::Bytes;
use serde_json::json;

/// A `Status` failure body.
pub(crate) fn body(code: u16, reason: &str, message: &str) -> Bytes {
    let v = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    Bytes::from(v.to_string())
}

/// A response carrying a `Status` failure.
pub(crate) fn response<B>(
    code: u16,
    reason: &str,
    message: &str,
    body_of: impl FnOnce(Bytes) -> B,
) -> http::Response<B> {
    let mut r = http::Response::new(body_of(body(code, reason, message)));
    *r.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::FORBIDDEN);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}
