//! Request classification: turn an HTTP request line and headers into the authorization
//! attributes the Kubernetes API server would compute (its `RequestInfoFactory`), or refuse a
//! request target that is not canonical.
//!
//! kubectl and client-go never produce non-canonical targets, so refusing them costs real clients
//! nothing and closes every path trick in which a gateway and the API server read one target two
//! ways (`docs/kubernetes-semantics.md`, "Canonical request targets" and "Query parameters").
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
mod delete_options;
mod error;
mod facts;
mod names;
mod params;
mod path;
mod query;
mod selector;

pub use classify::classify;
pub use delete_options::{DeleteOptions, OptionsSource};
pub(crate) use delete_options::{
    PROPAGATION_POLICIES, QUERY_KEYS as DELETE_OPTIONS_QUERY_KEYS, effective_propagation,
};
pub use error::NonCanonical;
pub use params::QueryParams;
pub use query::flag_value;

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
    /// The request is a dry run: `dryRun=All` in the query, or, for a DELETE, in the
    /// `DeleteOptions` the API server acts on (see [`Facts::delete_options`]).
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
    /// For a `delete` or `deletecollection`, the options the API server acts on: from the
    /// query at classification, replaced by the body's by [`Request::with_body_facts`] (the
    /// API server ignores the query's options when the body is non-empty). `None` for other
    /// verbs.
    pub delete_options: Option<DeleteOptions>,
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

impl Request {
    /// Refine the facts with the request body, for the facts the API server takes from the
    /// body rather than the target: call it once the body is read, before the facts are used
    /// (recorded, rendered as a `kubectl` line, shown to an approver). `body` is the body as
    /// sent; `None` and an empty body change nothing.
    ///
    /// Today that is a DELETE's `DeleteOptions`: a non-empty body replaces the query's options
    /// ([`Facts::delete_options`], and [`Facts::dry_run`] with them), as in the API server. A
    /// DELETE that carries options in both its query and a body, or whose body is not valid
    /// `DeleteOptions`, is refused; [`crate::policy::Policy::decide`] denies the same requests,
    /// so a caller that refuses on `Err` and one that lets `decide` refuse agree.
    ///
    /// ```
    /// use kubeleash_core::request::classify;
    ///
    /// let target = "/api/v1/namespaces/dev/configmaps/x";
    /// let mut req = classify("DELETE", target, &http::HeaderMap::new())?;
    /// req.with_body_facts(Some(br#"{"dryRun":["All"]}"#))?;
    /// assert!(req.facts.dry_run);
    ///
    /// let mut req = classify("DELETE", &format!("{target}?dryRun=All"), &http::HeaderMap::new())?;
    /// assert!(req.facts.dry_run);
    /// let both = req.with_body_facts(Some(br#"{"propagationPolicy":"Background"}"#));
    /// assert_eq!(both.map_err(|e| e.code()), Err("delete-options-twice"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_body_facts(&mut self, body: Option<&[u8]>) -> Result<(), crate::body::BodyError> {
        let Some(body) = body.filter(|b| !b.is_empty()) else {
            return Ok(());
        };
        if self.facts.delete_options.is_none() {
            return Ok(());
        }
        let options = crate::body::delete_options(self, body)?;
        self.facts.dry_run = options.dry_run;
        self.facts.delete_options = Some(options);
        Ok(())
    }

    /// Every parameter of the target's query, decoded as the API server decodes it.
    pub fn query_params(&self) -> QueryParams {
        QueryParams::of_target(&self.target)
    }
}
