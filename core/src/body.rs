//! Request bodies, decoded the way the API server decodes them, or refused.
//!
//! A policy condition is only as good as the parser under it: wherever a parser could read a
//! body differently from the API server (duplicate keys, YAML 1.1 booleans and merge keys,
//! several YAML documents, CBOR, an unknown content type, a `Content-Encoding`), the body is
//! refused rather than guessed (`docs/kubernetes-semantics.md`, "Request bodies and parser
//! differentials"). Kubernetes protobuf, which kubectl's typed `create` commands send, is decoded
//! to the JSON the API server's own types write for it.
//!
//! ```
//! use kubeleash_core::{body, request::classify};
//!
//! let mut headers = http::HeaderMap::new();
//! headers.insert("content-type", "application/json".parse()?);
//! let req = classify("POST", "/api/v1/namespaces/dev/pods", &headers)?;
//! let decoded = body::decode(&req, br#"{"spec":{"hostPID":true}}"#, &body::BodyLimits::default())?;
//! assert_eq!(decoded.map(|d| d.value["spec"]["hostPID"].clone()), Some(serde_json::json!(true)));
//!
//! let dup = body::decode(&req, br#"{"spec":{"hostPID":false,"hostPID":true}}"#, &body::BodyLimits::default());
//! assert!(dup.is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod decode;
mod delete_options;
mod error;
mod json_patch;
mod protobuf;
mod strict_json;

pub use decode::decode;

/// A Kubernetes protobuf body (`application/vnd.kubernetes.protobuf`: the `k8s\0` magic, then a
/// `runtime.Unknown` envelope) as the JSON object the API server's own types write for it,
/// `apiVersion` and `kind` included. [`decode`] uses it for protobuf requests; this is for a
/// body with no request around it (an API server's own reading, a record).
///
/// Refused, never guessed: a kind with no protobuf message in Kubernetes (custom resources are
/// JSON only), an envelope with a content encoding, malformed protobuf, a string that is not
/// UTF-8, nesting deeper than [`BodyLimits::max_depth`].
///
/// ```
/// // The `k8s\0` magic; typeMeta {v1, Namespace}; raw Namespace {metadata {name: pbtest}}.
/// let body = b"k8s\0\n\x0f\n\x02v1\x12\tNamespace\x12\n\n\x08\n\x06pbtest";
/// let ns = kubeleash_core::body::protobuf_to_json(body)?;
/// assert_eq!(ns["metadata"]["name"], "pbtest");
/// assert_eq!(ns["kind"], "Namespace");
/// # Ok::<(), kubeleash_core::body::BodyError>(())
/// ```
pub fn protobuf_to_json(body: &[u8]) -> Result<serde_json::Value, BodyError> {
    protobuf::decode(body, BodyLimits::default().max_depth)
}
pub(crate) use delete_options::from_body as delete_options;
pub use error::BodyError;

/// What a decoded body is, which decides how a policy may judge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyKind {
    /// A whole object (create, update).
    Object,
    /// `DeleteOptions` on a DELETE. When the body is non-empty the API server acts on these
    /// and ignores the query's options entirely (`docs/kubernetes-semantics.md`,
    /// "DeleteOptions: the body overrides the query"); see
    /// [`Request::with_body_facts`](crate::request::Request::with_body_facts), which refuses a
    /// DELETE carrying options in both places and a body that is not `DeleteOptions`.
    DeleteOptions,
    /// An RFC 6902 JSON patch: a list of operations whose result depends on the stored object.
    JsonPatch,
    /// An RFC 7386 merge patch: a partial object.
    MergePatch,
    /// A strategic merge patch: a partial object with `$patch`-style directives.
    StrategicMergePatch,
    /// A server-side apply intent object (JSON under `application/apply-patch+yaml`).
    ApplyPatch,
}

/// A body decoded exactly as the API server would decode it.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedBody {
    /// What the body is.
    pub kind: BodyKind,
    /// The decoded JSON value.
    pub value: serde_json::Value,
}

/// The largest request body the API server accepts (its `MaxRequestBodyBytes`): 3 MiB. Every
/// front door (the tower layer, the proxy, the bindings' transports) reads at most this much of
/// a request body; a larger one would be refused by the server anyway, so it is refused first,
/// with 413, and is not configurable.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Limits on untrusted request bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyLimits {
    /// Largest body accepted, in bytes. Default 3 MiB, the API server's `MaxRequestBodyBytes`.
    pub max_bytes: usize,
    /// Deepest nesting of arrays and objects accepted. Default 128; in effect at most 127,
    /// the recursion limit of `serde_json`, which decodes the body.
    pub max_depth: usize,
    /// Most operations in a JSON patch. Default 10,000, the API server's limit.
    pub max_json_patch_ops: usize,
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits {
            max_bytes: MAX_BODY_BYTES,
            max_depth: 128,
            max_json_patch_ops: 10_000,
        }
    }
}
