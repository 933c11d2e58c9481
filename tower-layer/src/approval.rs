//! Holding a request for a person: the approver, what it is shown, what it answers, and the
//! grants an answer can leave behind.
//!
//! An approval, its id and any grant it leaves cover exactly one request as it reaches the API
//! server: identity, method, whole target (query included), content type and encoding, the
//! impersonation headers forwarded and the SHA-256 of the body bytes forwarded. Anything else
//! is another request, held again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderMap;
use kubeleash_core::policy::Identity;
use kubeleash_core::policy::grant::{Axes, Grant, Widening};
use kubeleash_core::request::{Attributes, Impersonation, Request};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub(crate) mod hold;
pub(crate) mod kept;

/// The longest window an [`Answer::Approve`] can open. A longer one is cut to this, whichever
/// approver gave it: a standing grant belongs in the policy, as an allow rule.
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The longest request body (after masking) a person can be asked to approve: an approver is
/// shown the whole body, so a longer one is refused, not held (an approval covers exactly the
/// bytes the approver saw).
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
    /// The request body, masked with the same rules as responses, whole: at most
    /// [`MAX_SHOWN_BODY`] bytes (a longer one is refused, not held).
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
    /// What an approver may widen the approval along ([`Answer::Widen`]): offer these axes and
    /// no others. `widen.never` says why the request may only be approved exactly.
    pub widen: Axes,
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
#[derive(Debug, Clone, PartialEq)]
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
    /// Let it through, and leave a grant widened along the axes the prompt offered
    /// ([`ApprovalRequest::widen`]): names matching a glob, fields within ranges, a number of
    /// further uses, a time (cut to [`MAX_WINDOW`]; 15 minutes when no time is given). The
    /// grant covers requests from the same identity that differ from this one only along those
    /// axes, and is recorded, as a policy fragment, before anything it covers goes
    /// out. A request under the policy's floor (`approvals.neverWiden`), or a widening that does
    /// not fit the request, is approved exactly and leaves no grant (the record says why).
    Widen {
        /// Who approved.
        by: String,
        /// How far the approval reaches.
        widening: Widening,
    },
    /// Refuse it.
    Deny {
        /// Who denied.
        by: String,
        /// Why, shown to the agent.
        reason: String,
    },
}

/// Learn the approval id of a request when the layer holds it for a person: put one in the
/// request's extensions, and it is called with the id just before the approver is asked (in
/// blocking mode; non-blocking answers carry the id themselves). The call is made from the
/// request's own task and must not block. A request that waits on the answer to an identical
/// request held before it is not told an id: the one it waits on is another request's.
///
/// ```
/// use kubeleash_tower::OnHold;
///
/// let (tx, rx) = std::sync::mpsc::channel::<String>();
/// let tx = std::sync::Mutex::new(tx);
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(OnHold::new(move |id| {
///     let _ = tx.lock().map(|t| t.send(id.to_string()));
/// }));
/// # drop(rx);
/// ```
#[derive(Clone)]
pub struct OnHold(Arc<dyn Fn(&str) + Send + Sync>);

impl OnHold {
    /// Call `tell` with the approval id when the request is held.
    pub fn new(tell: impl Fn(&str) + Send + Sync + 'static) -> OnHold {
        OnHold(Arc::new(tell))
    }

    pub(crate) fn tell(&self, id: &str) {
        (self.0)(id)
    }
}

impl std::fmt::Debug for OnHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnHold")
    }
}

/// Decides held requests: a person behind a terminal, a socket, a chat bot, a webhook.
#[async_trait::async_trait]
pub trait Approver: Send + Sync {
    /// Answer one held request. The request stays open until this returns or the layer's
    /// approval timeout passes (which denies).
    async fn approve(&self, request: ApprovalRequest) -> Answer;
}

/// Whether an approver named `by` is the requesting `user`, as the layer decides it before
/// acting on an approval (it refuses one in the requester's name, on every channel). Names are
/// compared folded: letters and digits only (blanks, punctuation, control and format characters
/// such as zero-width spaces dropped), case folded, full-width forms read as ASCII, so a
/// look-alike spelling does not pass as another person. Channels use it to tell the approver
/// at once.
///
/// ```
/// use kubeleash_tower::same_user;
///
/// assert!(same_user("AGENT_1", "agent-1"));
/// assert!(same_user("agent\u{200b}-1", "agent-1"));
/// assert!(same_user("\u{ff41}\u{ff47}\u{ff45}\u{ff4e}\u{ff54}-1", "agent-1"));
/// assert!(!same_user("alice", "agent-1"));
/// ```
pub fn same_user(by: &str, user: &str) -> bool {
    let fold = |s: &str| -> String {
        s.chars()
            .map(|c| match u32::from(c) {
                // Full-width ASCII forms (U+FF01..U+FF5E) are ASCII shifted by 0xFEE0.
                n @ 0xFF01..=0xFF5E => char::from_u32(n - 0xFEE0).unwrap_or(c),
                _ => c,
            })
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let user = fold(user);
    !user.is_empty() && fold(by) == user
}

/// `n` random bytes as lowercase hex, from the operating system's generator; `None` if it fails.
pub(crate) fn random_hex(n: usize) -> Option<String> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).ok()?;
    Some(hex(&buf))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
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
pub(crate) struct RequestKey(pub(crate) [u8; 32]);

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

/// A person's approval as the layer acts on it: who, how far it reaches, and how long the
/// request waited for it.
#[derive(Debug, Clone)]
pub(crate) struct Approval {
    pub by: String,
    pub widening: Widening,
    pub waited: Duration,
}

impl Answer {
    /// The approval this answer gives, if any: [`Answer::Approve`]'s window is a widening in
    /// time alone.
    pub(crate) fn approval(self, waited: Duration) -> Result<Approval, (String, String)> {
        match self {
            Answer::Approve { by, window } => Ok(Approval {
                by,
                widening: Widening {
                    seconds: window.map(|w| w.as_secs().max(1)),
                    ..Widening::default()
                },
                waited,
            }),
            Answer::Widen { by, widening } => Ok(Approval {
                by,
                widening,
                waited,
            }),
            Answer::Deny { by, reason } => Err((by, reason)),
        }
    }

    /// Who answered.
    pub(crate) fn by(&self) -> &str {
        match self {
            Answer::Approve { by, .. } | Answer::Widen { by, .. } | Answer::Deny { by, .. } => by,
        }
    }
}

/// The most grants kept at once; past it the one closest to expiry goes first. Each request
/// that needs approval is compared with every grant, so this bounds the cost too.
pub const MAX_GRANTS: usize = 256;

/// One grant an approval left: the request's identity, method and headers (a [`RequestKey`]
/// over the grant's target key and no body), what it widened, and how much of it is left.
#[derive(Debug)]
struct Held {
    key: RequestKey,
    grant: Grant,
    until: Instant,
    uses_left: Option<u32>,
    generation: u64,
    id: String,
    by: String,
}

/// What a grant said about a request it covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Covered {
    /// The approval that left the grant.
    pub id: String,
    /// Who gave it.
    pub by: String,
}

/// Grants: approvals extended, on purpose, to later requests (see [`Answer::Widen`]), under the
/// policy in force when they were given.
#[derive(Debug, Default, Clone)]
pub(crate) struct Grants {
    inner: Arc<Mutex<Vec<Held>>>,
}

/// A request as a grant compares it.
pub(crate) struct Query<'a> {
    pub identity: &'a Identity,
    pub method: &'a str,
    pub headers: &'a HeaderMap,
    pub request: &'a Request,
    pub body: &'a [u8],
}

impl Query<'_> {
    /// The key a grant made of, or covering, this request is found by: its identity, method and
    /// forwarded headers with the grant's target key (its target, or a widened target's
    /// template); no body, since a grant compares bodies itself.
    pub(crate) fn grant_key(&self, target_key: &str) -> RequestKey {
        RequestKey::new(self.identity, self.method, target_key, self.headers, b"")
    }
}

impl Grants {
    /// The grant, given under policy generation `generation`, that covers this request now, if
    /// any; a use is taken from it.
    pub(crate) fn covers(&self, asked: &Query<'_>, generation: u64) -> Option<Covered> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        g.retain(|h| h.until > now && h.generation == generation && h.uses_left != Some(0));
        let found = g.iter_mut().find(|h| {
            let key = asked.grant_key(&h.grant.target_key_of(asked.request));
            key == h.key && h.grant.covers(asked.request, asked.body)
        })?;
        if let Some(n) = &mut found.uses_left {
            *n -= 1;
        }
        Some(Covered {
            id: found.id.clone(),
            by: found.by.clone(),
        })
    }

    /// Keep the grant `grant` made of the approved request `asked` (approval `id` by `by`), for
    /// its time cut to [`MAX_WINDOW`].
    pub(crate) fn add(&self, asked: &Query<'_>, grant: Grant, generation: u64, id: &str, by: &str) {
        let key = asked.grant_key(grant.target_key());
        let now = Instant::now();
        let Some(until) = now.checked_add(grant.widening().window().min(MAX_WINDOW)) else {
            return;
        };
        let uses_left = grant.widening().uses;
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.retain(|h| h.until > now && h.generation == generation && h.uses_left != Some(0));
        if g.len() >= MAX_GRANTS {
            g.sort_unstable_by_key(|h| std::cmp::Reverse(h.until));
            g.truncate(MAX_GRANTS - 1);
        }
        g.push(Held {
            key,
            grant,
            until,
            uses_left,
            generation,
            id: id.to_string(),
            by: by.to_string(),
        });
    }

    #[cfg(test)]
    fn until(&self) -> Option<Instant> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first()
            .map(|h| h.until)
    }
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
        let id = Identity::new("agent", ["g"]);
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        let req =
            kubeleash_core::request::classify("POST", "/api/v1/namespaces/dev/configmaps", &h)
                .unwrap();
        let asked = Query {
            identity: &id,
            method: "POST",
            headers: &h,
            request: &req,
            body: b"{}",
        };
        let w = Widening {
            seconds: Some(10 * 24 * 3600),
            ..Widening::default()
        };
        g.add(
            &asked,
            Grant::new(&req, b"{}", &w).unwrap(),
            1,
            "id",
            "alice",
        );
        let until = g.until().unwrap();
        assert!(until <= Instant::now() + MAX_WINDOW);
        assert!(g.covers(&asked, 1).is_some());
        assert!(g.covers(&asked, 2).is_none(), "a reload ends the window");
        assert!(g.covers(&asked, 1).is_none(), "and it does not come back");
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
