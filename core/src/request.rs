//! Request classification: turn an HTTP request line and headers into the authorization
//! attributes the Kubernetes API server would compute (its `RequestInfoFactory`), or refuse a
//! request target that is not canonical.
//!
//! kubectl and client-go never produce non-canonical targets, so refusing them costs real clients
//! nothing and closes every path trick in which a gateway and the API server read one target two
//! ways (`kubernetes-semantics.md` §1.6, §6.1–6.4).
//!
//! ```
//! use kubeleash_core::request::classify;
//!
//! let req = classify("GET", "/api/v1/namespaces/dev/pods?watch=1", &http::HeaderMap::new())?;
//! assert_eq!(req.attributes.verb, "watch");
//! assert_eq!(req.attributes.namespace, "dev");
//! assert_eq!(req.attributes.resource, "pods");
//! # Ok::<(), kubeleash_core::request::NonCanonical>(())
//! ```

mod classify;
mod error;
mod facts;
mod path;
mod query;
mod selector;

pub use classify::classify;
pub use error::NonCanonical;

use serde::{Deserialize, Serialize};

/// The authorization attributes of a request, as the API server's `RequestInfo` holds them.
///
/// Empty strings mean "absent", as in the API server: an empty `namespace` on a list is every
/// namespace, an empty `apiGroup` is the core group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attributes {
    /// Whether this is a resource request (`/api/...`, `/apis/...`) or a non-resource one.
    pub resource_request: bool,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`,
    /// `proxy`, or the empty string for a method the API server does not map.
    pub verb: String,
    /// The API group; empty for the core group.
    pub api_group: String,
    /// The API version.
    pub api_version: String,
    /// The namespace; for `/api/v1/namespaces/<ns>` it is `<ns>` itself.
    pub namespace: String,
    /// The resource, plural and lowercase as in the URL.
    pub resource: String,
    /// The subresource (`log`, `exec`, `status`, ...), empty when there is none.
    pub subresource: String,
    /// The object name, also taken from `fieldSelector=metadata.name=X` on a list or watch.
    pub name: String,
    /// The decoded path.
    pub path: String,
}

impl Attributes {
    /// The resource as RBAC matches it: `resource` or `resource/subresource`.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// The protocol a request asks to upgrade to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Upgrade {
    /// `Upgrade: websocket`.
    WebSocket,
    /// `Upgrade: SPDY/3.1`.
    Spdy,
    /// Any other upgrade token.
    Other,
}

/// The patch format of a PATCH request, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
    /// `application/apply-patch+cbor`.
    ApplyCbor,
}

/// Impersonation asked for with `Impersonate-*` headers (or front-proxy `X-Remote-*` headers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Impersonation {
    /// `Impersonate-User`.
    pub user: Option<String>,
    /// Every `Impersonate-Group`.
    pub groups: Vec<String>,
    /// `Impersonate-Uid`.
    pub uid: Option<String>,
    /// The keys of `Impersonate-Extra-<key>` headers, lowercased.
    pub extra: Vec<String>,
    /// Whether front-proxy identity headers (`X-Remote-User`, `X-Remote-Group`,
    /// `X-Remote-Extra-*`) were present; they impersonate as well when forwarded.
    pub front_proxy: bool,
}

/// Facts about a request that policies and the data path need beyond the RBAC attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Facts {
    /// `dryRun=All` was given (in the query; a DeleteOptions body can also carry it).
    pub dry_run: bool,
    /// The request is a watch (`watch` query truthiness or the legacy `/watch/` prefix).
    pub watch: bool,
    /// The `fieldManager` query parameter.
    pub field_manager: Option<String>,
    /// Impersonation headers, when any were present.
    pub impersonation: Option<Impersonation>,
    /// The upgrade the request asks for, if any.
    pub upgrade: Option<Upgrade>,
    /// A `Sec-WebSocket-Protocol` entry carries a bearer token
    /// (`base64url.bearer.authorization.k8s.io.<token>`).
    pub websocket_bearer_token: bool,
    /// The request's media type from `Content-Type`, lowercased, without parameters.
    pub content_type: Option<String>,
    /// The request carries a `Content-Encoding` (the API server never decodes one).
    pub content_encoding: Option<String>,
    /// The patch format, for PATCH requests with a recognised patch `Content-Type`.
    pub patch_type: Option<PatchType>,
    /// The raw first `labelSelector`, decoded.
    pub label_selector: Option<String>,
    /// The raw first `fieldSelector`, decoded.
    pub field_selector: Option<String>,
}

/// A classified request: the method, the target as sent, its attributes and facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// The HTTP method as sent.
    pub method: String,
    /// The request target as sent, percent-encoding kept.
    pub target: String,
    /// The authorization attributes.
    pub attributes: Attributes,
    /// Further facts for policies and the data path.
    pub facts: Facts,
}
