//! Grants kept outside the process ([`GrantStore`]), so that an approval given through one
//! replica covers the same requests on every replica that runs the same policy, and a limited
//! number of uses is drawn down once across all of them.
//!
//! The layer writes a grant to the store after the approval that left it is recorded, and reads
//! the store when a request would otherwise be held: a grant kept by another replica a moment
//! ago is found. A grant covers a request only under the policy it was given under (the same
//! [`Policy::digest`](kubeleash_core::policy::Policy::digest)): a changed policy ends it on
//! every replica that loads the change (a reload of the same text does not, unlike grants kept in
//! the layer's memory, which any reload ends); a store should also remove grants given under
//! another policy than its own, so that changing a policy back does not revive them (the CLI's
//! store does). A store that cannot be read covers nothing, so
//! the request is held for a person (never let through on a guess).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kubeleash_core::policy::Identity;
use kubeleash_core::policy::grant::{Grant, GrantForm};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Covered, MAX_WINDOW, Query, hex};

/// A grant as a [`GrantStore`] keeps it. It holds no byte of the approved request's body
/// ([`GrantForm`] keeps digests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeptGrant {
    /// The approval that left it (its 128-bit id): one grant per approval.
    pub approval: String,
    /// Who approved.
    pub by: String,
    /// The requesting user, for people reading the store.
    pub user: String,
    /// The digest of the requesting identity (user and groups): what a store looks grants up
    /// by ([`identity_digest`]).
    pub identity: String,
    /// The digest of identity, method, target key and forwarded identity headers that a covered
    /// request must share with the approved one.
    pub key: String,
    /// What the grant compares.
    pub form: GrantForm,
    /// The [`Policy::digest`](kubeleash_core::policy::Policy::digest) it was given under.
    pub policy: String,
    /// When it ends, in seconds since the Unix epoch.
    pub expires: u64,
    /// How many more requests it covers; `None` for any number until it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses_left: Option<u32>,
}

/// Where grants are kept beyond this process (see the module documentation). The CLI keeps them
/// as Kubernetes objects; a store is shared by every layer that should honour the same grants.
///
/// ```
/// use kubeleash_tower::{GrantStore, KeptGrant};
///
/// /// A store that keeps nothing: every grant is lost, so every request is held again.
/// struct Forgetful;
///
/// #[async_trait::async_trait]
/// impl GrantStore for Forgetful {
///     async fn keep(&self, _grant: KeptGrant) -> Result<(), String> {
///         Err("this store keeps nothing".into())
///     }
///     async fn kept_for(&self, _identity: &str) -> Result<Vec<KeptGrant>, String> {
///         Ok(Vec::new())
///     }
///     async fn take_use(&self, _approval: &str) -> Result<bool, String> {
///         Ok(false)
///     }
/// }
///
/// let layer = kubeleash_tower::KubeleashLayer::new(
///     kubeleash_core::policy::Policy::from_yaml("apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules: []\n").unwrap(),
/// )
/// .grant_store(Forgetful);
/// # drop(layer);
/// ```
#[async_trait::async_trait]
pub trait GrantStore: Send + Sync {
    /// Keep a grant. An error means it was not kept: the requests it would cover are held.
    async fn keep(&self, grant: KeptGrant) -> Result<(), String>;
    /// Every grant kept for the identity with this [`identity_digest`], as of now (a grant
    /// another replica kept before this call returns is among them). The layer skips those
    /// expired, used up or given under another policy.
    async fn kept_for(&self, identity: &str) -> Result<Vec<KeptGrant>, String>;
    /// Take one use of the counted grant left by `approval`: `Ok(true)` if one was left and is
    /// now taken (by this caller alone, whatever other replicas do meanwhile), `Ok(false)` if
    /// none is left or the grant is gone.
    async fn take_use(&self, approval: &str) -> Result<bool, String>;
}

/// The digest a store looks an identity's grants up by: user and groups, each length-prefixed.
///
/// ```
/// use kubeleash_core::policy::Identity;
/// use kubeleash_tower::identity_digest;
///
/// let a = identity_digest(&Identity::new("agent", ["team"]));
/// assert_eq!(a.len(), 64);
/// assert_ne!(a, identity_digest(&Identity::new("agent", ["team", "admins"])));
/// ```
pub fn identity_digest(identity: &Identity) -> String {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    field(identity.user.as_bytes());
    for g in &identity.groups {
        field(g.as_bytes());
    }
    hex(&h.finalize())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The grant `grant`, left by approval `id` of `by` for the request `asked` under the policy
/// with digest `policy`, as a store keeps it.
pub(crate) fn kept(
    asked: &Query<'_>,
    grant: &Grant,
    policy: &str,
    id: &str,
    by: &str,
) -> KeptGrant {
    let key = asked.grant_key(grant.target_key());
    let window: Duration = grant.widening().window().min(MAX_WINDOW);
    KeptGrant {
        approval: id.to_string(),
        by: by.to_string(),
        user: asked.identity.user.clone(),
        identity: identity_digest(asked.identity),
        key: hex(&key.0),
        form: grant.form(),
        policy: policy.to_string(),
        expires: unix_now().saturating_add(window.as_secs().max(1)),
        uses_left: grant.widening().uses,
    }
}

/// The kept grant that covers `asked` under the policy with digest `policy`, a use taken from
/// it when it counts them. Anything the store cannot answer covers nothing.
pub(crate) async fn covers(
    store: &dyn GrantStore,
    asked: &Query<'_>,
    policy: &str,
) -> Option<Covered> {
    let now = unix_now();
    let found = store
        .kept_for(&identity_digest(asked.identity))
        .await
        .ok()?;
    for k in found {
        // A store's entry is only as good as what it says: the identity, policy and time are
        // checked here again, whatever the store filtered.
        // No grant the layer makes outlasts MAX_WINDOW from now: an entry saying otherwise
        // was not written by it.
        if k.identity != identity_digest(asked.identity)
            || k.policy != policy
            || k.expires <= now
            || k.expires > now.saturating_add(MAX_WINDOW.as_secs() + 1)
            || k.uses_left == Some(0)
        {
            continue;
        }
        let Ok(grant) = Grant::from_form(k.form) else {
            continue;
        };
        let key = asked.grant_key(&grant.target_key_of(asked.request));
        if hex(&key.0) != k.key || !grant.covers(asked.request, asked.body) {
            continue;
        }
        if k.uses_left.is_some() && !matches!(store.take_use(&k.approval).await, Ok(true)) {
            continue;
        }
        return Some(Covered {
            id: k.approval,
            by: k.by,
        });
    }
    None
}
