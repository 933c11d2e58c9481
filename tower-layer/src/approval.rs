//! Holding a request for a person: the approver, what it is shown, what it answers, and the
//! grants an answer can leave behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubeleash_core::policy::Identity;
use kubeleash_core::request::Attributes;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// What an approver is shown: everything needed to judge one request, with its body masked.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalRequest {
    /// The approval's id: a hash of the identity, the attributes and the body, so an answer is
    /// bound to exactly this request.
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
    /// The request body, masked with the same rules as responses.
    pub body: Option<String>,
    /// The rule that asked for approval.
    pub rule: Option<String>,
    /// The policy's reason.
    pub reason: String,
}

/// An approver's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Let it through.
    Approve {
        /// Who approved.
        by: String,
        /// Also approve requests with the same attributes from the same identity for this long.
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

/// The id binding an approval to one request.
pub(crate) fn approval_id(
    identity: &Identity,
    attributes: &Attributes,
    target: &str,
    body: Option<&[u8]>,
) -> String {
    let mut h = Sha256::new();
    // The target too: two requests that differ only in their query (`?dryRun=All`) are two
    // requests to approve.
    h.update(target.as_bytes());
    h.update([0]);
    h.update(serde_json::to_vec(identity).unwrap_or_default());
    h.update([0]);
    h.update(serde_json::to_vec(attributes).unwrap_or_default());
    h.update([0]);
    h.update(body.unwrap_or_default());
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Time-windowed grants: approval of one request extended to later requests with the same
/// attributes from the same identity.
#[derive(Debug, Default, Clone)]
pub(crate) struct Grants {
    inner: Arc<Mutex<HashMap<String, Instant>>>,
}

fn grant_key(identity: &Identity, attributes: &Attributes) -> String {
    approval_id(identity, attributes, "", None)
}

impl Grants {
    pub(crate) fn covers(&self, identity: &Identity, attributes: &Attributes) -> bool {
        let key = grant_key(identity, attributes);
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match g.get(&key) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                g.remove(&key);
                false
            }
            None => false,
        }
    }

    pub(crate) fn add(&self, identity: &Identity, attributes: &Attributes, window: Duration) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        g.retain(|_, until| *until > now);
        // A window too long to represent is refused rather than made endless.
        if let Some(until) = now.checked_add(window) {
            g.insert(grant_key(identity, attributes), until);
        }
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
