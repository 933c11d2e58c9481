//! Holding a request for a person: the approver, what it is shown, what it answers, and the
//! grants an answer can leave behind.
//!
//! An approval, its id and any grant it leaves cover exactly one request as it reaches the API
//! server: identity, method, whole target (query included), content type and encoding, the
//! impersonation headers forwarded and the SHA-256 of the body bytes forwarded. Anything else
//! is another request, held again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderMap;
use kubeleash_core::policy::Identity;
use kubeleash_core::request::{Attributes, Impersonation};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The longest window an [`Answer::Approve`] can open. A longer one is cut to this, whichever
/// approver gave it: a standing grant belongs in the policy, as an allow rule.
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The most of a request body an approver is shown (after masking); the rest is cut with a
/// note saying how much was left out. The approval still covers the whole body.
pub const MAX_SHOWN_BODY: usize = 64 * 1024;

/// What an approver is shown: everything needed to judge one request, with its body masked.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalRequest {
    /// The approval's id: 128 random bits, new for every held request, so the agent cannot
    /// predict or collide it. An answer to it resolves this one request only.
    pub id: String,
    /// Who sent it.
    pub identity: Identity,
    /// The HTTP method and target as sent.
    pub method: String,
    /// The request target as sent.
    pub target: String,
    /// Its authorization attributes.
    pub attributes: Attributes,
    /// The kubectl command it amounts to.
    pub kubectl: String,
    /// The request body, masked with the same rules as responses, at most
    /// [`MAX_SHOWN_BODY`] bytes of it (a longer one ends with a note saying so).
    pub body: Option<String>,
    /// The request's `Content-Type` as sent (it says how the API server reads the body).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The identity the request impersonates, when approval would forward its
    /// `Impersonate-*` headers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonation: Option<Impersonation>,
    /// The rule that asked for approval.
    pub rule: Option<String>,
    /// The policy's reason.
    pub reason: String,
    /// The agent's own reason for the request, from its `X-Kubeleash-Reason` header (printable,
    /// at most 500 characters, masked by the detectors). The agent wrote it: it explains, it
    /// proves nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_reason: Option<String>,
    /// What the API server says the request would do: the same request with `dryRun=All` and
    /// the live object, both masked. `None` for requests that change no object (reads,
    /// exec, attach, port-forward, proxy) and when the layer has no upstream to ask.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<DryRun>,
}

/// The API server's own account of a held write, asked before a person is: the request sent
/// with `dryRun=All` (and the operator's credential), and the object as it is now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DryRun {
    /// The dry run's HTTP status.
    pub status: u16,
    /// Why the API server would refuse the request (validation, an admission webhook, a
    /// conflict), from its `Status` message, masked; `None` when it would succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    /// Each difference from the live object (none for a create) to the result (none for a
    /// delete), as the masker shows them: a masked value is shown only as changed.
    pub changes: Vec<kubeleash_core::diff::Change>,
    /// The same changes as lines to read (see [`kubeleash_core::diff::render`]).
    pub diff: String,
}

/// An approver's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Let it through.
    Approve {
        /// Who approved.
        by: String,
        /// Also let through, for this long, requests from the same identity that are identical
        /// to this one as they reach the API server (method, whole target with its query,
        /// content type, impersonation headers and the exact body bytes). The layer cuts a
        /// window to [`MAX_WINDOW`] (24 hours), and a policy reload ends every window.
        window: Option<Duration>,
    },
    /// Refuse it.
    Deny {
        /// Who denied.
        by: String,
        /// Why, shown to the agent.
        reason: String,
    },
}

/// Decides held requests: a person behind a terminal, a socket, a chat bot, a webhook.
#[async_trait::async_trait]
pub trait Approver: Send + Sync {
    /// Answer one held request. The request stays open until this returns or the layer's
    /// approval timeout passes (which denies).
    async fn approve(&self, request: ApprovalRequest) -> Answer;
}

/// `n` random bytes as lowercase hex, from the operating system's generator; `None` if it fails.
pub(crate) fn random_hex(n: usize) -> Option<String> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).ok()?;
    Some(hex(&buf))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A new approval id: 128 random bits.
pub(crate) fn new_id() -> Option<String> {
    random_hex(16)
}

/// The digest of a request exactly as it reaches the API server, from one identity. Two
/// requests share a key only if everything the API server acts on is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RequestKey([u8; 32]);

impl RequestKey {
    /// `headers` are the request's headers as they will be forwarded (impersonation kept
    /// only when it will be sent); `body` the exact bytes forwarded.
    pub(crate) fn new(
        identity: &Identity,
        method: &str,
        target: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> RequestKey {
        let mut h = Sha256::new();
        // Every field length-prefixed, so no two field lists hash the same bytes.
        let mut field = |b: &[u8]| {
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        };
        field(identity.user.as_bytes());
        field(&(identity.groups.len() as u64).to_be_bytes());
        for g in &identity.groups {
            field(g.as_bytes());
        }
        field(method.as_bytes());
        field(target.as_bytes());
        for name in ["content-type", "content-encoding"] {
            for v in headers.get_all(name) {
                field(name.as_bytes());
                field(v.as_bytes());
            }
        }
        // The identity-bearing headers, in the order they go out.
        for (name, v) in headers {
            let n = name.as_str();
            if n.starts_with("impersonate-") || n.starts_with("x-remote-") {
                field(n.as_bytes());
                field(v.as_bytes());
            }
        }
        field(&Sha256::digest(body));
        RequestKey(h.finalize().into())
    }
}

/// Time-windowed grants: approval of one request extended to later identical requests (same
/// [`RequestKey`]), under the policy in force when it was given.
#[derive(Debug, Default, Clone)]
pub(crate) struct Grants {
    inner: Arc<Mutex<HashMap<RequestKey, (Instant, u64)>>>,
}

impl Grants {
    /// Whether a grant given under policy generation `generation` covers this request now.
    pub(crate) fn covers(&self, key: &RequestKey, generation: u64) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match g.get(key) {
            Some((until, made)) if *until > Instant::now() && *made == generation => true,
            Some(_) => {
                g.remove(key);
                false
            }
            None => false,
        }
    }

    /// Grant `window`, cut to [`MAX_WINDOW`].
    pub(crate) fn add(&self, key: RequestKey, window: Duration, generation: u64) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        g.retain(|_, (until, made)| *until > now && *made == generation);
        if let Some(until) = now.checked_add(window.min(MAX_WINDOW)) {
            g.insert(key, (until, generation));
        }
    }

    #[cfg(test)]
    fn until(&self, key: &RequestKey) -> Option<Instant> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map(|(u, _)| *u)
    }
}

/// A request body as an approver is shown it: cut to [`MAX_SHOWN_BODY`] bytes (at a character
/// boundary) with a note when longer.
pub(crate) fn shown_body(text: &str) -> String {
    if text.len() <= MAX_SHOWN_BODY {
        return text.to_string();
    }
    let mut cut = MAX_SHOWN_BODY;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}\n[kubeleash: {} more bytes of the (masked) body are not shown; \
         approving approves the whole body]",
        &text[..cut],
        text.len() - cut
    )
}

/// A shared approver approves: the layer and its owner (which may deny what is pending at
/// shutdown) can hold one together.
#[async_trait::async_trait]
impl<T: Approver + ?Sized> Approver for Arc<T> {
    async fn approve(&self, request: ApprovalRequest) -> Answer {
        (**self).approve(request).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use proptest::prelude::*;

    fn key(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> RequestKey {
        let mut h = HeaderMap::new();
        for (n, v) in headers {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        RequestKey::new(&Identity::new("agent", ["g"]), method, target, &h, body)
    }

    #[test]
    fn ids_are_128_random_bits() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn a_window_is_cut_to_a_day_and_ends_with_the_policy() {
        let g = Grants::default();
        let k = key("POST", "/api/v1/namespaces/dev/configmaps", &[], b"{}");
        g.add(k, Duration::from_secs(10 * 24 * 3600), 1);
        let until = g.until(&k).unwrap();
        assert!(until <= Instant::now() + MAX_WINDOW);
        assert!(g.covers(&k, 1));
        assert!(!g.covers(&k, 2), "a reload ends the window");
        assert!(!g.covers(&k, 1), "and it does not come back");
    }

    #[test]
    fn a_long_body_is_cut_for_the_approver() {
        let body = "é".repeat(MAX_SHOWN_BODY);
        let shown = shown_body(&body);
        assert!(shown.len() < MAX_SHOWN_BODY + 200);
        assert!(shown.contains("more bytes of the (masked) body are not shown"));
        assert_eq!(shown_body("{}"), "{}");
    }

    proptest! {
        /// Any difference in what reaches the API server is another key.
        #[test]
        fn every_forwarded_difference_is_another_request(
            body in proptest::collection::vec(any::<u8>(), 0..64),
            flip in 0usize..64,
            query in "[a-z=&]{0,12}",
        ) {
            let target = format!("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings?{query}");
            let base = key("POST", &target, &[("content-type", "application/json")], &body);
            prop_assert_eq!(base, key("POST", &target, &[("content-type", "application/json")], &body));
            let mut other = body.clone();
            if other.is_empty() { other.push(0) } else { let i = flip % other.len(); other[i] ^= 1; }
            prop_assert_ne!(base, key("POST", &target, &[("content-type", "application/json")], &other));
            prop_assert_ne!(base, key("POST", &format!("{target}&dryRun=All"), &[("content-type", "application/json")], &body));
            prop_assert_ne!(base, key("PUT", &target, &[("content-type", "application/json")], &body));
            prop_assert_ne!(base, key("POST", &target, &[("content-type", "application/yaml")], &body));
            prop_assert_ne!(base, key("POST", &target, &[], &body));
            prop_assert_ne!(base, key("POST", &target, &[("content-type", "application/json"), ("impersonate-user", "admin")], &body));
            let mut h = HeaderMap::new();
            h.insert("content-type", "application/json".parse().unwrap());
            prop_assert_ne!(base, RequestKey::new(&Identity::new("agent", ["g", "h"]), "POST", &target, &h, &body));
            prop_assert_ne!(base, RequestKey::new(&Identity::new("agent2", ["g"]), "POST", &target, &h, &body));
        }
    }
}
