//! Masking secret material in responses as they stream.
//!
//! A [`Masker`] is sans-IO per-response state: feed it byte chunks, it returns the masked bytes
//! that are safe to send, and [`Masker::finish`] ends it. Bytes outside masked values come out
//! exactly as they went in, and the output does not depend on how the input was split. Memory is
//! bounded by nesting depth and the largest value that must be held to be judged (a string, an
//! element a filter tests, the last-applied annotation, a log line), never by the response size.
//!
//! It fails closed: malformed JSON, an exceeded limit, an unexpected content type or encoding
//! stops the output at the last byte known to be safe and returns an error; after an error the
//! masker emits nothing more.
//!
//! ```
//! use kubeleash_core::mask::{Masker, MaskSet};
//! use kubeleash_core::request::classify;
//! use std::sync::Arc;
//!
//! let set = Arc::new(MaskSet::builtin()?);
//! let req = classify("GET", "/api/v1/namespaces/dev/secrets/db", &http::HeaderMap::new())?;
//! let mut m = Masker::new(set, &req, Some("application/json"), None)?;
//! let mut out = m.feed(br#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"db"},"da"#)?;
//! out.extend(m.feed(br#"ta":{"password":"aHVudGVyMg=="}}"#)?);
//! out.extend(m.finish()?);
//! assert_eq!(out, br#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"db"},"data":{"password":"W21hc2tlZF0="}}"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What is masked, and where
//!
//! - Built-in masks ([`BUILTIN_MASKS`], each can be turned off by name): Secret `data` and
//!   `stringData`; TokenRequest `status.token` and TokenReview `spec.token`; `env-credentials`
//!   (the `value` of an `env` entry whose `name` names a credential), `http-headers` (the `value`
//!   of a probe's `httpHeaders` entry whose `name` does: `Authorization`, `Cookie`,
//!   `X-Api-Key`), `container-args` (in `args` and `command`, the value of a flag whose name
//!   names a credential, `--db-pass X` or `--password=X`, and `-p`/`-a`/`-u user:pass` of
//!   programs whose short flags carry credentials: mysql, redis-cli, docker, curl, ...; with
//!   no `command`, the image's program is unknown and short flags count; `$(VAR)` references
//!   stay); `credential-keys` (string values under credential-named keys, [`credname::is_credential_key`],
//!   in a ConfigMap's `data` and `binaryData` and at any depth of an object of unknown kind,
//!   outside `metadata`; `binaryData` values are base64-decoded for the detectors and replaced
//!   whole when they find anything); `last-applied` (masked inside with the rules for its own
//!   kind). Names are judged by the token rule of [`credname`]. The container shapes are recognised at any depth of any
//!   document, so a pod template is covered wherever it is embedded (a ControllerRevision's
//!   `data`, a CronJob's `jobTemplate`, a custom resource's `spec.template`).
//! - Detectors run over every other string and over log text, after normalization (terminal
//!   escapes removed; JSON escapes and percent-encoding decoded): see [`detect`]. A log that
//!   ends inside a credential (a `limitBytes` the agent picked) has its last line's trailing
//!   run masked when it holds a known token prefix or is the value of a credential assignment.
//! - What cannot be placed with certainty gets the strictest rules: an object whose `kind` is
//!   not yet known gets every mask; every object in a root array, in a Status's `details`, in
//!   a custom resource (or an object of unknown kind), or out of place in a list, a Table or a
//!   watch event (an item or row that is an array, an event's `object` that is an array, a
//!   member beside it) gets every mask as well as the paths that reach it; a second `kind` (or `apiVersion` group) for one object that differs from the
//!   first, from its list's, or from a case variant (`Kind`) ends the response with an error.
//!   A list item states its own kind in any list (custom and aggregated lists too): it is judged
//!   by the strictest of its own kind, its list's item kind and the request's kind. An element
//!   judged by a sibling key (an env entry by its `name`, anything a filter tests) that has a
//!   key twice (after unescaping, in any ASCII case) gets every filter's strict answer: masked.
//!   A response to a request for a built-in resource is judged as that kind too (a response
//!   to `GET .../secrets/x` gets the Secret masks whatever it says it is).
//! - Table cells: when a policy mask rule could apply to the rows' kind (its `kinds` name the
//!   request's built-in kind, or the kind is not certain, as for any custom resource; and its
//!   `apiGroups` allow the request's group), every cell but the name column's (the column whose
//!   definition has `format: name`) is masked, in Tables, watches of Tables (the column
//!   definitions come with the first event) and without a known request. A Table's column
//!   definitions carry no JSONPath on the wire, so a column cannot be mapped to a field with
//!   certainty; built-in masks name built-in kinds whose cells come from the API server's own
//!   printers, which print none of the values they cover.
//!
//! Replacements are stable: [`MARKER`] (`[masked]`), [`MARKER_BASE64`] where the field holds
//! base64, `[masked:<detector>]` ([`DETECTOR_MARKER_PREFIX`]) for a detector's span, a flag's
//! name kept before [`MARKER`] (`--password=[masked]`), `[hmac:...]` ([`HMAC_MARKER_PREFIX`])
//! for the policy's `hmac` rules.
//!
//! # Untrusted input
//!
//! [`MaskLimits`]: `max_depth` (default 256 nested arrays and objects) and `max_held` (default
//! 8 MiB for any one held value). gzip bodies are inflated in small steps, so a compressed bomb
//! costs no more memory than its output chunks.

mod b64;
pub mod credname;
pub mod detect;
mod dupkeys;
mod json;
mod normalize;
mod path;
mod rules;
mod scan;
mod strings;
mod text;
mod truncated;

use std::sync::Arc;

use thiserror::Error;

pub use rules::{
    BUILTIN_MASKS, DETECTOR_MARKER_PREFIX, HMAC_MARKER_PREFIX, MARKER, MARKER_BASE64, MaskLimits,
    MaskSet, Replace,
};

use crate::request::Request;

pub(crate) use path::parse as parse_path;
pub(crate) use rules::{Action, MaskRule, builtin as builtin_rules, random_key};

/// Why a masker stopped. The output already returned is safe; nothing after the error is.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MaskError {
    /// The response's content type is not one kubeleash can mask.
    #[error(
        "response content type `{content_type}` cannot be masked; kubeleash asks the API server for JSON and refuses anything else"
    )]
    ContentType {
        /// The content type received.
        content_type: String,
    },
    /// The response's content encoding is not gzip or identity.
    #[error("response content encoding `{encoding}` cannot be masked; only gzip is decoded")]
    ContentEncoding {
        /// The encoding received.
        encoding: String,
    },
    /// The body is not valid JSON (or a valid gzip stream).
    #[error("response body is malformed at byte {offset}: {what}; the rest of it was withheld")]
    Malformed {
        /// Offset in the (decompressed) body.
        offset: u64,
        /// What was wrong.
        what: String,
    },
    /// JSON nested deeper than the limit.
    #[error("response nests deeper than {limit} levels; the rest of it was withheld")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// A value that must be held to be judged is larger than the limit.
    #[error(
        "{what} is larger than {limit} bytes, the most kubeleash holds to judge; the rest of the response was withheld"
    )]
    TooLarge {
        /// The limit.
        limit: usize,
        /// What was too large.
        what: &'static str,
    },
    /// The body ended in the middle of a value.
    #[error("response ended in the middle of a JSON value; the incomplete part was withheld")]
    Incomplete,
    /// The response is a stream kubeleash cannot see into (exec, attach, port-forward).
    #[error("the response to {what} is a raw stream kubeleash cannot mask")]
    Unmaskable {
        /// The request, in words.
        what: String,
    },
}

impl MaskError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            MaskError::ContentType { .. } => "content-type",
            MaskError::ContentEncoding { .. } => "content-encoding",
            MaskError::Malformed { .. } => "malformed",
            MaskError::TooDeep { .. } => "too-deep",
            MaskError::TooLarge { .. } => "too-large",
            MaskError::Incomplete => "incomplete",
            MaskError::Unmaskable { .. } => "unmaskable",
        }
    }
}

/// How a response body is framed, decided from the request (a watch and an object share a
/// content type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One JSON document: an object, a list, a Table, a Status.
    Json,
    /// Newline-delimited JSON watch events.
    WatchEvents,
    /// Log text: detectors only.
    Text,
    /// `text/plain` that is not a log: JSON (masked as [`Framing::Json`]) when its first
    /// non-blank byte opens an object or an array (the API server serves its OpenAPI v3
    /// discovery as `text/plain`), text ([`Framing::Text`]) otherwise (`404 page not found`).
    PlainText,
}

enum Inner {
    Json(Box<json::JsonMasker>),
    Text(text::TextMasker),
    /// [`Framing::PlainText`] before its first non-blank byte: the blanks seen so far.
    Sniff {
        set: Arc<MaskSet>,
        origin: Arc<json::Origin>,
        blanks: Vec<u8>,
    },
}

/// Per-response masking state. Not `Sync`; one per response.
pub struct Masker {
    inner: Inner,
    gzip: Option<flate2::write::GzDecoder<Vec<u8>>>,
    failed: Option<MaskError>,
    framing: Framing,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("framing", &self.framing)
            .field("failed", &self.failed)
            .finish()
    }
}

/// The framing a response to `request` with this content type has, or why it cannot be masked.
pub fn framing(request: &Request, content_type: Option<&str>) -> Result<Framing, MaskError> {
    let a = &request.attributes;
    if a.resource_request && matches!(a.subresource.as_str(), "exec" | "attach" | "portforward")
        || request.facts.upgrade.is_some()
    {
        return Err(MaskError::Unmaskable {
            what: format!("{} {}", request.method, request.target),
        });
    }
    let media = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let is_log = a.resource_request && a.subresource == "log";
    match media.as_str() {
        "application/json" if a.verb == "watch" => Ok(Framing::WatchEvents),
        "application/json" => Ok(Framing::Json),
        "text/plain" if is_log => Ok(Framing::Text),
        "text/plain" => Ok(Framing::PlainText),
        // An empty body has no content type; anything with one must say what it is.
        "" => Ok(if is_log {
            Framing::Text
        } else if a.verb == "watch" {
            Framing::WatchEvents
        } else {
            Framing::Json
        }),
        _ => Err(MaskError::ContentType {
            content_type: content_type.unwrap_or_default().to_string(),
        }),
    }
}

impl Masker {
    /// A masker for the response to `request`, given the response's `Content-Type` and
    /// `Content-Encoding`. The output is never compressed: drop `Content-Encoding` and
    /// `Content-Length` from the response headers.
    pub fn new(
        set: Arc<MaskSet>,
        request: &Request,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
    ) -> Result<Masker, MaskError> {
        let framing = framing(request, content_type)?;
        let gzip = match content_encoding.map(|e| e.trim().to_ascii_lowercase()) {
            None => None,
            Some(e) if e.is_empty() || e == "identity" => None,
            Some(e) if e == "gzip" => Some(flate2::write::GzDecoder::new(Vec::new())),
            Some(e) => return Err(MaskError::ContentEncoding { encoding: e }),
        };
        Ok(Masker::with_framing(set, framing, gzip, origin(request)))
    }

    /// A masker with an explicit framing and no decompression.
    ///
    /// Without a request, nothing is known of what the response holds: a Table's cells are
    /// masked (all but the name column) whenever a policy mask rule exists.
    pub fn with(set: Arc<MaskSet>, framing: Framing) -> Masker {
        Masker::with_framing(set, framing, None, json::Origin::default())
    }

    fn with_framing(
        set: Arc<MaskSet>,
        framing: Framing,
        gzip: Option<flate2::write::GzDecoder<Vec<u8>>>,
        origin: json::Origin,
    ) -> Masker {
        let origin = Arc::new(origin);
        let inner = match framing {
            Framing::Json => Inner::Json(Box::new(json::JsonMasker::new(set, false, origin))),
            Framing::WatchEvents => Inner::Json(Box::new(json::JsonMasker::new(set, true, origin))),
            Framing::Text => Inner::Text(text::TextMasker::new(set)),
            Framing::PlainText => Inner::Sniff {
                set,
                origin,
                blanks: Vec::new(),
            },
        };
        Masker {
            inner,
            gzip,
            failed: None,
            framing,
        }
    }

    /// The framing this masker applies.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Whether anything has been masked so far.
    pub fn masked_anything(&self) -> bool {
        match &self.inner {
            Inner::Json(j) => j.masked_any,
            Inner::Text(t) => t.masked_any,
            Inner::Sniff { .. } => false,
        }
    }

    /// Mask a chunk; returns the bytes that are safe to send now.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, MaskError> {
        let mut out = Vec::with_capacity(chunk.len() + 64);
        self.feed_into(chunk, &mut out)?;
        Ok(out)
    }

    /// Mask a chunk, appending the safe bytes to `out`. On error `out` holds only safe bytes.
    pub fn feed_into(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), MaskError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.feed_inner(chunk, out);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn feed_inner(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), MaskError> {
        let Some(gz) = self.gzip.as_mut() else {
            return feed_plain(&mut self.inner, chunk, out);
        };
        use std::io::Write;
        // Small steps bound what one write can inflate to.
        for piece in chunk.chunks(8 * 1024) {
            gz.write_all(piece).map_err(|e| MaskError::Malformed {
                offset: 0,
                what: format!("gzip stream is invalid: {e}"),
            })?;
            let plain = std::mem::take(gz.get_mut());
            feed_plain(&mut self.inner, &plain, out)?;
        }
        Ok(())
    }

    /// The response is complete; returns the last safe bytes.
    pub fn finish(&mut self) -> Result<Vec<u8>, MaskError> {
        let mut out = Vec::new();
        self.finish_into(&mut out)?;
        Ok(out)
    }

    /// The response is complete; appends the last safe bytes to `out`.
    pub fn finish_into(&mut self, out: &mut Vec<u8>) -> Result<(), MaskError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.finish_inner(out);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn finish_inner(&mut self, out: &mut Vec<u8>) -> Result<(), MaskError> {
        if let Some(gz) = self.gzip.take() {
            let plain = gz.finish().map_err(|e| MaskError::Malformed {
                offset: 0,
                what: format!("gzip stream is invalid: {e}"),
            })?;
            feed_plain(&mut self.inner, &plain, out)?;
        }
        match &mut self.inner {
            Inner::Json(j) => j.finish(out),
            Inner::Text(t) => t.finish(out),
            // Nothing but blanks: they say nothing.
            Inner::Sniff { blanks, .. } => {
                out.append(blanks);
                Ok(())
            }
        }
    }
}

/// What a response to `request` is known to hold: its API group, and the kind when the
/// resource is a built-in one (so the kind is certain; a custom resource's plural says nothing
/// certain about its kind).
fn origin(request: &Request) -> json::Origin {
    let a = &request.attributes;
    if !a.resource_request {
        return json::Origin {
            schema: is_openapi(&a.path),
            ..json::Origin::default()
        };
    }
    if a.resource.is_empty() {
        return json::Origin::default();
    }
    let kind = if a.subresource.is_empty() || a.subresource == "status" {
        builtin_kind(&a.api_group, &a.resource)
    } else {
        None
    };
    json::Origin {
        group: Some(a.api_group.clone()),
        kind: kind.map(str::to_string),
        schema: false,
    }
}

/// The API server's OpenAPI documents: `/openapi/v2`, and `/openapi/v3` with its per-group
/// documents (the path is the classifier's, already cleaned).
fn is_openapi(path: &str) -> bool {
    path == "/openapi/v2"
        || path == "/openapi/v3"
        || path
            .strip_prefix("/openapi/v3/")
            .is_some_and(|rest| !rest.is_empty())
}

/// The kind a built-in resource holds.
fn builtin_kind(group: &str, resource: &str) -> Option<&'static str> {
    const KINDS: &[(&str, &str, &str)] = &[
        ("", "pods", "Pod"),
        ("", "secrets", "Secret"),
        ("", "configmaps", "ConfigMap"),
        ("", "services", "Service"),
        ("", "serviceaccounts", "ServiceAccount"),
        ("", "namespaces", "Namespace"),
        ("", "nodes", "Node"),
        ("", "events", "Event"),
        ("", "endpoints", "Endpoints"),
        ("", "persistentvolumeclaims", "PersistentVolumeClaim"),
        ("", "persistentvolumes", "PersistentVolume"),
        ("", "replicationcontrollers", "ReplicationController"),
        ("", "podtemplates", "PodTemplate"),
        ("", "limitranges", "LimitRange"),
        ("", "resourcequotas", "ResourceQuota"),
        ("apps", "deployments", "Deployment"),
        ("apps", "statefulsets", "StatefulSet"),
        ("apps", "daemonsets", "DaemonSet"),
        ("apps", "replicasets", "ReplicaSet"),
        ("apps", "controllerrevisions", "ControllerRevision"),
        ("batch", "jobs", "Job"),
        ("batch", "cronjobs", "CronJob"),
        ("events.k8s.io", "events", "Event"),
        ("authentication.k8s.io", "tokenreviews", "TokenReview"),
        ("rbac.authorization.k8s.io", "roles", "Role"),
        ("rbac.authorization.k8s.io", "rolebindings", "RoleBinding"),
        ("rbac.authorization.k8s.io", "clusterroles", "ClusterRole"),
        (
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            "ClusterRoleBinding",
        ),
        ("networking.k8s.io", "ingresses", "Ingress"),
        ("networking.k8s.io", "networkpolicies", "NetworkPolicy"),
        ("policy", "poddisruptionbudgets", "PodDisruptionBudget"),
        (
            "autoscaling",
            "horizontalpodautoscalers",
            "HorizontalPodAutoscaler",
        ),
        ("storage.k8s.io", "storageclasses", "StorageClass"),
        ("coordination.k8s.io", "leases", "Lease"),
        (
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "CustomResourceDefinition",
        ),
    ];
    KINDS
        .iter()
        .find(|(g, r, _)| *g == group && *r == resource)
        .map(|(_, _, k)| *k)
}

/// Most leading blanks [`Framing::PlainText`] holds before deciding its framing.
const MAX_SNIFF_BLANKS: usize = 64 * 1024;

fn feed_plain(inner: &mut Inner, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), MaskError> {
    match inner {
        Inner::Json(j) => j.feed(chunk, out),
        Inner::Text(t) => t.feed(chunk, out),
        Inner::Sniff {
            set,
            origin,
            blanks,
        } => {
            let first = chunk.iter().position(|b| !b.is_ascii_whitespace());
            if first.is_none() && blanks.len() + chunk.len() <= MAX_SNIFF_BLANKS {
                blanks.extend_from_slice(chunk);
                return Ok(());
            }
            // Past the bound, blanks are text: what is held stays bounded.
            let json = first.is_some_and(|i| matches!(chunk.get(i), Some(b'{' | b'[')));
            let mut next = if json {
                Inner::Json(Box::new(json::JsonMasker::new(
                    Arc::clone(set),
                    false,
                    Arc::clone(origin),
                )))
            } else {
                Inner::Text(text::TextMasker::new(Arc::clone(set)))
            };
            let held = std::mem::take(blanks);
            feed_plain(&mut next, &held, out)?;
            *inner = next;
            feed_plain(inner, chunk, out)
        }
    }
}

/// Replace each span with `[masked:<detector>]`.
pub(crate) fn replace_spans(text: &[u8], spans: &[detect::Span]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut at = 0;
    for s in spans {
        let (start, end) = (s.start.max(at).min(text.len()), s.end.min(text.len()));
        if start > end {
            continue;
        }
        out.extend_from_slice(&text[at..start]);
        let name = detect::catalog()
            .get(usize::from(s.detector))
            .map_or("secret", |d| d.name);
        out.extend_from_slice(b"[masked:");
        out.extend_from_slice(name.as_bytes());
        out.push(b']');
        at = end;
    }
    out.extend_from_slice(&text[at.min(text.len())..]);
    out
}

/// Standard base64 with padding.
pub(crate) fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if k <= c.len() {
                s.push(char::from(T[((n >> shift) & 63) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b"[masked]"), rules::MARKER_BASE64);
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
    }
}
