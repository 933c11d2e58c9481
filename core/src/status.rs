//! The Kubernetes `Status` every front door answers a refusal with, the way the API server
//! phrases errors (`metav1.Status`), so kubectl, kube-rs and the official clients show the
//! reason as they show any API error. One builder for the tower layer, the proxy, the bindings'
//! listeners and the connect crate: the shape is written once.
//!
//! ```
//! use kubeleash_core::status::Status;
//!
//! let s = Status::failure(403, "Forbidden", "denied by rule \"protect-prod\"");
//! let v: serde_json::Value = serde_json::from_slice(&s.to_json()).unwrap();
//! assert_eq!(v["kind"], "Status");
//! assert_eq!(v["status"], "Failure");
//! assert_eq!((v["code"].as_u64(), v["reason"].as_str()), (Some(403), Some("Forbidden")));
//!
//! let r = Status::failure(503, "ServiceUnavailable", "retry shortly")
//!     .details(serde_json::json!({"retryAfterSeconds": 1}))
//!     .response(|bytes| bytes.len());
//! assert_eq!(r.status(), 503);
//! assert_eq!(r.headers()["content-type"], "application/json");
//! ```

use serde_json::{Value, json};

/// A `Status` failure: its HTTP code, its `reason` (`Forbidden`, `NotFound`, ...), the message
/// a person reads, and optional `details` (`uid`, `causes`, `retryAfterSeconds`).
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    code: u16,
    reason: String,
    message: String,
    details: Option<Value>,
}

impl Status {
    /// A failure with this HTTP code, reason and message.
    pub fn failure(code: u16, reason: &str, message: &str) -> Status {
        Status {
            code,
            reason: reason.to_string(),
            message: message.to_string(),
            details: None,
        }
    }

    /// The `details` object (`uid`, `causes`, `retryAfterSeconds`, ...).
    pub fn details(mut self, details: Value) -> Status {
        self.details = Some(details);
        self
    }

    /// The HTTP code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The body, as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let (Some(d), Some(o)) = (&self.details, v.as_object_mut()) {
            o.insert("details".into(), d.clone());
        }
        v.to_string().into_bytes()
    }

    /// An HTTP response carrying it: its code (500 if the code is not a valid HTTP status),
    /// `Content-Type: application/json`, and the body made by `body_of` from the JSON.
    pub fn response<B>(&self, body_of: impl FnOnce(Vec<u8>) -> B) -> http::Response<B> {
        let mut r = http::Response::new(body_of(self.to_json()));
        *r.status_mut() = http::StatusCode::from_u16(self.code)
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    }
}
