//! `KubeleashLayer`: the configuration, shared behind an `Arc` by every service it makes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use kubeleash_core::policy::{Identity, Policy};

use crate::approval::{Approver, Grants};
use crate::bounded::BodyBudget;
use crate::credential::Credential;
use crate::holds::Holds;
use crate::nonblocking::{ApprovalMode, Waiting};
use crate::record::{NoRecorder, Recorder};
use crate::service::Kubeleash;

/// Enforce the policy, or only record what it would have done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Deny what the policy denies, hold what it holds.
    #[default]
    Enforce,
    /// Observe: decide and record what the policy would do, but let everything through
    /// (masking still applies): for rolling a policy out, and for `kubeleash learn` to write
    /// one from what agents did (the CLI's `--mode observe`, the bindings' `mode: 'observe'`).
    /// Its records' outcome is `audited`.
    #[doc(alias = "observe")]
    Audit,
}

type Extractor = dyn Fn(&http::request::Parts) -> Result<Identity, String> + Send + Sync;

#[derive(Clone)]
pub(crate) enum IdentitySource {
    Fixed(Identity),
    Extract(Arc<Extractor>),
}

/// A handle to the policy a layer enforces, to replace it while requests run (a reload).
///
/// What a reload reaches: requests that arrive later are decided by the new policy; a held
/// request is decided again by the policy in force when it is approved (and refused if that
/// policy denies it); time-windowed grants end; and every open streamed response that is
/// masked as a stream (watches, followed logs) ends at its next event or line boundary, so the
/// client reconnects under the new policy and its masks. Other responses finish under the
/// policy they started with.
#[derive(Clone)]
pub struct PolicyHandle {
    inner: Arc<std::sync::RwLock<Policy>>,
    generation: Arc<AtomicU64>,
}

impl PolicyHandle {
    /// The policy now in force.
    pub fn get(&self) -> Policy {
        self.current().0
    }

    /// The policy now in force and its generation (bumped by every [`set`](Self::set)).
    pub(crate) fn current(&self) -> (Policy, u64) {
        let p = self.inner.read().unwrap_or_else(|p| p.into_inner());
        (p.clone(), self.generation.load(Ordering::Acquire))
    }

    /// The counter [`set`](Self::set) bumps, for streams to notice a reload cheaply.
    pub(crate) fn generation(&self) -> &Arc<AtomicU64> {
        &self.generation
    }

    /// Put a new policy in force (see the type's documentation for what it reaches).
    pub fn set(&self, policy: Policy) {
        let mut p = self.inner.write().unwrap_or_else(|p| p.into_inner());
        *p = policy;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// How many requests may wait for approval at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HoldLimits {
    pub per_identity: usize,
    pub total: usize,
}

#[derive(Clone)]
pub(crate) struct Shared {
    pub policy: PolicyHandle,
    pub identity: IdentitySource,
    pub approver: Option<Arc<dyn Approver>>,
    pub recorder: Arc<dyn Recorder>,
    pub credential: Credential,
    pub mode: Mode,
    pub approval_timeout: Duration,
    /// Request bodies in memory at once, over every request in flight (held ones included):
    /// each body read takes its bytes from here until its request is answered.
    pub body_budget: BodyBudget,
    pub grants: Grants,
    /// Grants kept beyond this process, when set: they replace `grants`.
    pub grant_store: Option<Arc<dyn crate::GrantStore>>,
    /// The namespace kubeleash keeps its own state in, which no agent request reaches.
    pub reserved_namespace: Option<String>,
    /// One write at a time per object judged on its dry run (see `object_lock`).
    pub object_locks: crate::object_lock::ObjectLocks,
    pub hold_limits: HoldLimits,
    pub holds: Holds,
    /// Whether a held request waits for its answer or is answered at once.
    pub approval_mode: ApprovalMode,
    /// Non-blocking mode: the held requests, their approvals and refusals, by request key.
    pub waiting: Waiting,
    /// Blocking mode: the held requests being asked about, which identical ones wait on.
    pub asking: crate::coalesce::Asking,
    /// Set when a record could not be written: every request is refused (503) until the
    /// record of a refusal is written again.
    pub record_failed: Arc<AtomicBool>,
    /// The API server's recent answers to access reviews about the credential.
    pub server_answers: Arc<crate::service::review::ServerAnswers>,
}

/// A tower [`Layer`](tower::Layer) that holds every request to a kubeleash policy.
///
/// ```
/// use kubeleash_core::policy::{Identity, Policy};
/// use kubeleash_tower::{Credential, KubeleashLayer, Mode};
///
/// let policy = Policy::from_yaml(include_str!("../../examples/agents.yaml")).map_err(|e| e.to_string())?;
/// let layer = KubeleashLayer::new(policy)
///     .identity(Identity::new("agent-1", ["ai-agents"]))
///     .credential(Credential::token("operator-token").map_err(|e| e.to_string())?)
///     .mode(Mode::Enforce);
/// # let _ = layer;
/// # Ok::<(), String>(())
/// ```
#[derive(Clone)]
pub struct KubeleashLayer {
    shared: Arc<Shared>,
}

impl KubeleashLayer {
    /// A layer enforcing `policy`, for an anonymous identity, with no approver (requests the
    /// policy holds for approval are denied), no recorder, and the inner service's credential.
    /// At most 8 requests per identity and 64 in all wait for approval at once.
    pub fn new(policy: Policy) -> Self {
        KubeleashLayer {
            shared: Arc::new(Shared {
                policy: PolicyHandle {
                    inner: Arc::new(std::sync::RwLock::new(policy)),
                    generation: Arc::new(AtomicU64::new(0)),
                },
                identity: IdentitySource::Fixed(Identity::default()),
                approver: None,
                recorder: Arc::new(NoRecorder),
                credential: Credential::inner(),
                mode: Mode::Enforce,
                approval_timeout: Duration::from_secs(300),
                body_budget: BodyBudget::new(DEFAULT_BODY_BUDGET),
                grants: Grants::default(),
                grant_store: None,
                reserved_namespace: None,
                object_locks: Default::default(),
                hold_limits: HoldLimits {
                    per_identity: 8,
                    total: 64,
                },
                holds: Holds::default(),
                approval_mode: ApprovalMode::Blocking,
                waiting: Waiting::default(),
                asking: crate::coalesce::Asking::default(),
                record_failed: Arc::new(AtomicBool::new(false)),
                server_answers: Arc::default(),
            }),
        }
    }

    fn with(mut self, f: impl FnOnce(&mut Shared)) -> Self {
        f(Arc::make_mut(&mut self.shared));
        self
    }

    /// Every request comes from this identity.
    pub fn identity(self, identity: Identity) -> Self {
        self.with(|s| s.identity = IdentitySource::Fixed(identity))
    }

    /// Work out each request's identity from its head (a verified token, say); an error answers
    /// 401 with the error's text.
    pub fn identity_from(
        self,
        f: impl Fn(&http::request::Parts) -> Result<Identity, String> + Send + Sync + 'static,
    ) -> Self {
        self.with(|s| s.identity = IdentitySource::Extract(Arc::new(f)))
    }

    /// Keep the grants approvals leave in `store` instead of this layer's memory, so that
    /// every layer sharing the store honours them and draws their uses down once (see
    /// [`GrantStore`](crate::GrantStore)). A grant is then found by asking the store each time
    /// a request would be held.
    pub fn grant_store(self, store: impl crate::GrantStore + 'static) -> Self {
        self.with(|s| s.grant_store = Some(Arc::new(store)))
    }

    /// Refuse every request in `namespace`, whatever the policy says: the namespace the
    /// embedding program keeps its own state in (held approvals and grants, heartbeats, the
    /// policy itself), which an agent's request, sent upstream with the same credential, must
    /// never reach.
    ///
    /// ```
    /// use kubeleash_core::policy::Policy;
    ///
    /// let policy = Policy::from_yaml("apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules: []\n").unwrap();
    /// let layer = kubeleash_tower::KubeleashLayer::new(policy).reserve_namespace("kubeleash");
    /// # drop(layer);
    /// ```
    pub fn reserve_namespace(self, namespace: impl Into<String>) -> Self {
        let namespace = namespace.into();
        self.with(|s| s.reserved_namespace = Some(namespace))
    }

    /// Who answers requests the policy holds for approval.
    pub fn approver(self, approver: impl Approver + 'static) -> Self {
        self.with(|s| s.approver = Some(Arc::new(approver)))
    }

    /// Who records each request.
    pub fn recorder(self, recorder: impl Recorder + 'static) -> Self {
        self.with(|s| s.recorder = Arc::new(recorder))
    }

    /// The credential set on every forwarded request.
    pub fn credential(self, credential: Credential) -> Self {
        self.with(|s| s.credential = credential)
    }

    /// Enforce, or audit only.
    pub fn mode(self, mode: Mode) -> Self {
        self.with(|s| s.mode = mode)
    }

    /// The handle to replace the policy this layer (and every service it made) enforces.
    pub fn policy_handle(&self) -> PolicyHandle {
        self.shared.policy.clone()
    }

    /// How long a held request waits for an answer before it is denied (default 5 minutes).
    pub fn approval_timeout(self, timeout: Duration) -> Self {
        self.with(|s| s.approval_timeout = timeout)
    }

    /// Whether a held request stays open until it is answered ([`ApprovalMode::Blocking`], the
    /// default) or is answered at once with a 403 naming its approval, to be sent again
    /// ([`ApprovalMode::NonBlocking`]), for agents whose HTTP clients time out.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kubeleash_core::policy::Policy;
    /// use kubeleash_tower::{ApprovalMode, KubeleashLayer};
    ///
    /// let policy = Policy::from_yaml(include_str!("../../examples/agents.yaml")).map_err(|e| e.to_string())?;
    /// let layer = KubeleashLayer::new(policy)
    ///     .approval_mode(ApprovalMode::NonBlocking { retry_after: Duration::from_secs(10) });
    /// # let _ = layer;
    /// # Ok::<(), String>(())
    /// ```
    pub fn approval_mode(self, mode: ApprovalMode) -> Self {
        self.with(|s| s.approval_mode = mode)
    }

    /// How many requests may wait for approval at once: from one identity (user name), and in
    /// all (default 8 and 64). One more is refused with 429 at once. Each held request keeps
    /// its body (up to 3 MiB) in memory, and each is listed to the operator.
    pub fn max_held(self, per_identity: usize, total: usize) -> Self {
        self.with(|s| {
            s.hold_limits = HoldLimits {
                per_identity,
                total,
            }
        })
    }
}

impl KubeleashLayer {
    /// How many bytes of request bodies the layer keeps in memory at once, over every request
    /// in flight and every held one (default 64 MiB). A body that would go past it is refused
    /// with 429 (retry shortly), so clients sending many large bodies at once cannot make the
    /// process buffer without bound; one body is still capped at the API server's 3 MiB.
    ///
    /// ```
    /// use kubeleash_core::policy::Policy;
    /// use kubeleash_tower::KubeleashLayer;
    ///
    /// let policy = Policy::from_yaml(include_str!("../../examples/agents.yaml")).map_err(|e| e.to_string())?;
    /// let layer = KubeleashLayer::new(policy).max_buffered(16 * 1024 * 1024);
    /// # let _ = layer;
    /// # Ok::<(), String>(())
    /// ```
    pub fn max_buffered(self, bytes: usize) -> Self {
        self.with(|s| s.body_budget = BodyBudget::new(bytes))
    }
}

/// The default of [`KubeleashLayer::max_buffered`]: about 21 bodies of the API server's maximum.
const DEFAULT_BODY_BUDGET: usize = 64 * 1024 * 1024;

impl<S> tower::Layer<S> for KubeleashLayer {
    type Service = Kubeleash<S>;

    fn layer(&self, inner: S) -> Kubeleash<S> {
        Kubeleash::new(inner, Arc::clone(&self.shared))
    }
}
