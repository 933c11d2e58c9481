//! Policies: parse, compile, evaluate.
//!
//! A policy reads like Kubernetes RBAC (verbs, apiGroups, resources, nonResourceURLs) with three
//! effects (`allow`, `deny`, `approve`), subjects, namespace and name globs, and conditions on
//! the request body. It is compiled once into an immutable, indexed [`Policy`] that decides a
//! request in well under a microsecond, however many rules it holds.
//!
//! ```
//! use kubeleash_core::policy::{Effect, Identity, Policy};
//!
//! let policy = Policy::from_yaml(r#"
//! apiVersion: kubeleash.dev/v1alpha1
//! kind: Policy
//! metadata: {name: agents}
//! spec:
//!   rules:
//!     - name: read-dev
//!       effect: allow
//!       subjects: {groups: [ai-agents]}
//!       verbs: [get, list, watch]
//!       apiGroups: [""]
//!       resources: [pods, pods/log]
//!       namespaces: [dev]
//! "#)?;
//! let agent = Identity::new("agent-1", ["ai-agents"]);
//! let headers = http::HeaderMap::new();
//!
//! let read = policy.evaluate(&agent, "GET", "/api/v1/namespaces/dev/pods", &headers, None);
//! assert_eq!(read.decision.effect, Effect::Allow);
//!
//! let delete = policy.evaluate(&agent, "DELETE", "/api/v1/namespaces/kube-system", &headers, None);
//! assert_eq!(delete.decision.effect, Effect::Deny);
//! assert_eq!(
//!     delete.decision.reason,
//!     "no rule allows delete on namespaces/kube-system for user agent-1 in group ai-agents"
//! );
//! # Ok::<(), kubeleash_core::policy::PolicyErrors>(())
//! ```
//!
//! # Semantics
//!
//! - Default deny. Among the rules that match, `deny` beats `approve` beats `allow`; the first
//!   such rule in document order names the decision.
//! - `verbs`, `apiGroups`, `resources`, `nonResourceURLs` match as in RBAC: `pods` does not cover
//!   `pods/exec`, `*/scale` covers every `scale` subresource, `*` covers everything. Leaving
//!   `apiGroups` out means every group.
//! - `namespaces` and `names` are globs (`*` matches any run of characters). Leaving
//!   `namespaces` out covers every namespace and cluster scope; a list covers only the named
//!   namespaces (`""` names cluster scope). Leaving `names` out covers every name.
//! - For `allow` rules both behave as RBAC: a request without a name (list, create,
//!   deletecollection) never matches a name-restricted rule, and a request across all
//!   namespaces never matches a namespace-restricted one. For `deny` and `approve` rules the
//!   stricter reading applies: such requests **do** match, since they can reach the named
//!   objects. Likewise a `deny` or `approve` rule's nonResourceURLs cover a path with or
//!   without a trailing slash alike, as the API server serves it (`/logs` is `/logs/`, so
//!   `/logs/*` covers `/logs`).
//! - `when` conditions query the request body with JSONPath. In `deny` and `approve` rules a
//!   path that selects several values holds when any of them satisfies the test; in `allow` rules
//!   only when every one does (and at least one is selected). So neither kind of rule can be
//!   slipped past with a second container. Numbers compare by value (`-0`, `0` and `0.0` are
//!   one number, as for the API server's decoder), and a `matches` glob's `*` crosses line
//!   breaks. Bodies are decoded as the API server decodes them, and refused where a parser
//!   could disagree with it (see [`crate::body`]). A patch whose effect depends on the stored
//!   object cannot be judged from its text: conditioned `deny`/`approve` rules apply to it,
//!   `allow` rules not. That is every JSON patch, and every merge, strategic merge or apply patch
//!   that removes fields (a `null`; `$patch: delete` or `replace`, `$retainKeys`,
//!   `$deleteFromPrimitiveList/...` or an unknown `$` directive). Other merge, strategic merge
//!   and apply patches are judged on the patch body, except that a server-side apply also
//!   removes the fields its manager owned and the body omits: for it a `deny`/`approve`
//!   condition on absence or inequality (`exists: false`, `notEquals`, `notIn`, `equals: null`,
//!   a negated filter) counts as holding.
//! - Every write's body is checked whatever the rules say (so [`Policy::needs_body`] is true for
//!   every create, update and patch): a body that carries a mask marker (`[masked]`, its base64
//!   form, an `[hmac:...]` token, a detector's `[masked:<name>]`) in any string is refused, since
//!   writing it back would overwrite the real value; a JSON patch that reads a value (`copy` or
//!   `move` from, `test`) anywhere but a `metadata` scalar no mask covers for the resource's
//!   kind is refused, since it would launder a masked value or guess at one.
//! - Privileged requests (exec, attach, port-forward, ephemeral containers, every proxy, token
//!   requests, secrets of token types (which an allow rule grants only when a `when` condition
//!   pins `$.type` to the token type: a `secrets` rule alone does not), RBAC writes, CSR approval, token and access reviews,
//!   webhook, API service and CRD writes, impersonation) are allowed only by a rule that lists
//!   the verb and the resource by name; a `*` never grants them. Impersonation headers are
//!   checked as the API server checks them (`impersonate` on `users`, `groups`,
//!   `serviceaccounts`, `uids`, `userextras/<key>`; a user name is a service account only when
//!   the API server reads it as one). A bearer token in a WebSocket subprotocol and
//!   front-proxy identity headers are always refused.
//! - Streams are `create`: every request on `exec`, `attach` or `portforward`, whatever its
//!   method or upgrade, and an upgrade on any `proxy` subresource (see
//!   [`crate::request::classify`]), so a `get` rule never covers one.
//! - Server-side apply (YAML or CBOR) needs `patch` and `create`, as in the API server.

mod compile;
mod condition;
mod denial;
mod error;
mod eval;
mod explain;
mod floor;
mod glob;
pub mod grant;
mod index;
mod lint;
mod markers;
mod masks;
mod own;
mod patch_reads;
mod patch_shape;
mod privileged;
pub mod rbac;
mod reach;
mod review;
mod selftest;
mod spec;

use std::sync::Arc;

use sha2::Digest as _;

use serde::{Serialize, Serializer};

pub use denial::Denial;
pub use error::{Location, PolicyError, PolicyErrors};
pub use explain::{Explanation, RuleOutcome, RuleTrace};
pub use lint::Finding;
pub use reach::RuleReach;
pub use review::{AccessAnswer, ConditionalRule, NonResourceRule, ResourceRule, RulesAnswer};
pub use selftest::{TestOutcome, TestReport};

use crate::mask::{MaskError, MaskSet, Masker};
use crate::request::{self, Request};

/// Why a request with these attributes is privileged (exec, token requests, RBAC writes,
/// impersonation, ...), in words, or `None` for an ordinary request: an `allow` rule grants a
/// privileged request only when it lists the verb and the resource by name.
///
/// ```
/// use kubeleash_core::policy::privileged;
/// use kubeleash_core::request::classify;
///
/// let exec = classify("POST", "/api/v1/namespaces/dev/pods/web/exec", &http::HeaderMap::new())?;
/// assert!(privileged(&exec.attributes).is_some());
/// let read = classify("GET", "/api/v1/namespaces/dev/pods", &http::HeaderMap::new())?;
/// assert_eq!(privileged(&read.attributes), None);
/// # Ok::<(), kubeleash_core::request::NonCanonical>(())
/// ```
pub fn privileged(attributes: &crate::request::Attributes) -> Option<&'static str> {
    privileged::privilege(attributes)
}

/// Why a request with these attributes would reach kubeleash's own state in the cluster
/// (`kubeleash.dev` approvals and grants, or a change to their definitions), or `None`: such a
/// request is refused whatever the policy says, and in every mode, since an agent's requests go
/// upstream with the credential that writes that state.
///
/// ```
/// use kubeleash_core::policy::out_of_reach;
/// use kubeleash_core::request::classify;
///
/// let h = http::HeaderMap::new();
/// let answer = classify("PATCH", "/apis/kubeleash.dev/v1alpha1/namespaces/kubeleash/approvals/a1/status", &h)?;
/// assert!(out_of_reach(&answer.attributes).is_some());
/// let crd = classify("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/grants.kubeleash.dev", &h)?;
/// assert!(out_of_reach(&crd.attributes).is_some());
/// let other = classify("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com", &h)?;
/// assert_eq!(out_of_reach(&other.attributes), None);
/// # Ok::<(), kubeleash_core::request::NonCanonical>(())
/// ```
pub fn out_of_reach(attributes: &crate::request::Attributes) -> Option<&'static str> {
    own::reach(attributes)
}

/// The mask marker a text carries, if any (`[masked]`, its base64 form, an `[hmac:...]` token, a
/// detector's `[masked:<name>]`): a write carrying one is refused, since it would overwrite the
/// real value; a recorded body carrying one cannot be judged as the original was.
///
/// ```
/// assert!(kubeleash_core::policy::mask_marker_in(br#"{"k":"W21hc2tlZF0="}"#).is_some());
/// assert!(kubeleash_core::policy::mask_marker_in(br#"{"k":"v"}"#).is_none());
/// ```
pub fn mask_marker_in(text: &[u8]) -> Option<&'static str> {
    markers::in_text(text)
}

/// Whether a built-in resource is cluster-scoped (`nodes`, `clusterroles`, ...); anything not
/// known to be (custom resources included) is taken as namespaced.
///
/// ```
/// assert!(kubeleash_core::policy::cluster_scoped("", "nodes"));
/// assert!(!kubeleash_core::policy::cluster_scoped("apps", "deployments"));
/// ```
pub fn cluster_scoped(group: &str, resource: &str) -> bool {
    privileged::cluster_scoped(group, resource)
}

/// What a policy decides for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Forward the request.
    Allow,
    /// Refuse it.
    Deny,
    /// Hold it until a person approves or denies it.
    Approve,
}

impl Effect {
    /// How strict an effect is: deny (2) > approve (1) > allow (0).
    ///
    /// ```
    /// use kubeleash_core::policy::Effect;
    /// assert!(Effect::Deny.strictness() > Effect::Approve.strictness());
    /// ```
    pub fn strictness(self) -> u8 {
        match self {
            Effect::Allow => 0,
            Effect::Approve => 1,
            Effect::Deny => 2,
        }
    }

    /// The lowercase name: `allow`, `deny`, `approve`.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::Approve => "approve",
        }
    }
}

/// Who sent a request: a user name and groups, as a policy's `subjects` match them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct Identity {
    /// The user name.
    pub user: String,
    /// The groups the user belongs to.
    pub groups: Vec<String>,
}

impl Identity {
    /// An identity from a user name and groups.
    ///
    /// ```
    /// let id = kubeleash_core::policy::Identity::new("agent-1", ["ai-agents"]);
    /// assert_eq!(id.groups, vec!["ai-agents".to_string()]);
    /// ```
    pub fn new<G: Into<String>>(
        user: impl Into<String>,
        groups: impl IntoIterator<Item = G>,
    ) -> Self {
        Identity {
            user: user.into(),
            groups: groups.into_iter().map(Into::into).collect(),
        }
    }
}

/// A decision: the effect, the rule that made it (none for the default deny and for refusals),
/// and a reason a person can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Allow, deny or approve.
    pub effect: Effect,
    /// The deciding rule's name.
    #[serde(serialize_with = "ser_rule")]
    pub rule: Option<Arc<str>>,
    /// Why, in words.
    pub reason: String,
}

fn ser_rule<S: Serializer>(rule: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match rule {
        Some(r) => s.serialize_str(r),
        None => s.serialize_none(),
    }
}

impl Decision {
    fn deny(rule: Option<Arc<str>>, reason: impl Into<String>) -> Self {
        Decision {
            effect: Effect::Deny,
            rule,
            reason: reason.into(),
        }
    }

    fn body_refused(e: &crate::body::BodyError) -> Self {
        Decision::deny(None, format!("request body refused: {e}"))
    }

    fn with_prefix(mut self, prefix: &str) -> Self {
        self.reason.insert_str(0, prefix);
        self
    }

    /// Whether the request may go ahead without a person's approval.
    pub fn allowed(&self) -> bool {
        self.effect == Effect::Allow
    }
}

/// A request classified and decided; `request` is `None` when its target was refused as
/// non-canonical.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evaluation {
    /// The classified request.
    pub request: Option<Request>,
    /// The decision.
    pub decision: Decision,
}

/// A compiled policy: immutable, `Send + Sync`, cheap to clone.
#[derive(Debug, Clone)]
pub struct Policy {
    inner: Arc<compile::Compiled>,
    /// The SHA-256 of the text it was compiled from (see [`Policy::digest`]).
    digest: [u8; 32],
}

impl Policy {
    /// Compile a policy from YAML (JSON is YAML too). Every error is reported at once, each with
    /// its line and column.
    ///
    /// ```
    /// let errs = kubeleash_core::policy::Policy::from_yaml(
    ///     "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - {name: r, effect: permit, verbs: [lsit], resources: [pods]}\n",
    /// ).unwrap_err();
    /// assert_eq!(errs.errors().len(), 2);
    /// assert_eq!(errs.errors()[0].code(), "effect");
    /// assert_eq!(errs.errors()[0].location().map(|l| l.line), Some(5));
    /// ```
    pub fn from_yaml(text: &str) -> Result<Policy, PolicyErrors> {
        Ok(Policy {
            inner: Arc::new(compile::compile(text)?),
            digest: sha2::Sha256::digest(text.as_bytes()).into(),
        })
    }

    /// The SHA-256 of the text the policy was compiled from, as lowercase hex: two processes
    /// that loaded the same policy agree on it, so what one approved under a policy another
    /// honours only under the same one (grants kept outside the process carry it).
    ///
    /// ```
    /// use kubeleash_core::policy::Policy;
    ///
    /// let text = "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules: []\n";
    /// let a = Policy::from_yaml(text).unwrap();
    /// assert_eq!(a.digest(), Policy::from_yaml(text).unwrap().digest());
    /// assert_ne!(a.digest(), Policy::from_yaml(&format!("{text}# changed\n")).unwrap().digest());
    /// ```
    pub fn digest(&self) -> String {
        use std::fmt::Write as _;
        self.digest
            .iter()
            .fold(String::with_capacity(64), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
    }

    /// The policy's `metadata.name`.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    /// How many rules the policy holds.
    pub fn rule_count(&self) -> usize {
        self.inner.rules.len()
    }

    /// Decide a classified request. `body` is the request body as sent (`None` for none); it is
    /// decoded only when a rule needs it.
    pub fn decide(&self, identity: &Identity, request: &Request, body: Option<&[u8]>) -> Decision {
        eval::decide(&self.inner, identity, request, body)
    }

    /// [`Policy::decide`], with rule conditions judged on `result`: the object the API server's
    /// dry run (`dryRun=All`) of this very request produced. A patch's effect depends on the
    /// stored object (a strategic `$patch: delete`, a merge `null`, a JSON patch, fields a
    /// server-side apply removes), so its text can only be judged conservatively; the result is
    /// what the write does. Every check on the body itself (mask markers, masked-field reads)
    /// still applies. Use it when [`Policy::judges_on_result`] says so.
    ///
    /// ```
    /// use kubeleash_core::policy::{Effect, Identity, Policy};
    /// use kubeleash_core::request::classify;
    ///
    /// let policy = Policy::from_yaml(r#"
    /// apiVersion: kubeleash.dev/v1alpha1
    /// kind: Policy
    /// spec:
    ///   rules:
    ///     - {name: edit, effect: allow, verbs: [patch], apiGroups: [apps], resources: [deployments]}
    ///     - {name: no-host-pid, effect: deny, verbs: [patch], apiGroups: [apps], resources: [deployments],
    ///        when: [{path: "$.spec.template.spec.hostPID", equals: true}]}
    /// "#)?;
    /// let mut h = http::HeaderMap::new();
    /// h.insert("content-type", "application/json-patch+json".parse()?);
    /// let req = classify("PATCH", "/apis/apps/v1/namespaces/dev/deployments/web", &h)?;
    /// let id = Identity::new("agent", ["agents"]);
    /// let body = br#"[{"op":"replace","path":"/spec/replicas","value":3}]"#;
    /// assert!(policy.judges_on_result(&id, &req));
    /// // On its text a JSON patch's effect is unknown: the deny rule applies.
    /// assert_eq!(policy.decide(&id, &req, Some(body)).effect, Effect::Deny);
    /// // On the result, it does not.
    /// let result = serde_json::json!({"spec": {"replicas": 3, "template": {"spec": {"hostPID": false}}}});
    /// assert_eq!(policy.decide_on_result(&id, &req, Some(body), &result).effect, Effect::Allow);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn decide_on_result(
        &self,
        identity: &Identity,
        request: &Request,
        body: Option<&[u8]>,
        result: &serde_json::Value,
    ) -> Decision {
        eval::decide_on_result(&self.inner, identity, request, body, result)
    }

    /// Whether [`Policy::decide_on_result`] judges this request better than its text: an update
    /// or patch (server-side apply included) of an object, its status or scale, not itself a
    /// dry run, that a conditioned rule could match (or a Secret write, whose stored type says
    /// whether it mints a token). Costs a data path one dry-run round trip for such writes.
    pub fn judges_on_result(&self, identity: &Identity, request: &Request) -> bool {
        eval::judges_on_result(&self.inner, identity, request)
    }

    /// Whether [`Policy::decide`] may need this request's body, so a data path can skip reading
    /// it when nothing looks at it: always for a create, update or patch of a resource (every
    /// write's body is checked for mask markers and masked-field reads) and for every delete
    /// (its body's DeleteOptions override the query's; options in both, or a body that is not
    /// DeleteOptions, are refused), otherwise when a rule
    /// with conditions could match. Deciding without a body this says is not needed gives the
    /// same decision as with it.
    pub fn needs_body(&self, identity: &Identity, request: &Request) -> bool {
        eval::needs_body(&self.inner, identity, request)
    }

    /// Why an approval of this request may not be widened (`spec.approvals.neverWiden`, or the
    /// default floor when the policy names none: deletes, exec, attach, port-forward, proxy,
    /// Secrets, RBAC, impersonation, token requests, admission and CRD configuration); `None`
    /// when an approver may widen it.
    ///
    /// ```
    /// use kubeleash_core::policy::Policy;
    /// use kubeleash_core::request::classify;
    ///
    /// let policy = Policy::from_yaml("apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec: {}\n")?;
    /// let h = http::HeaderMap::new();
    /// let delete = classify("DELETE", "/api/v1/namespaces/dev/pods/web", &h)?;
    /// assert!(policy.never_widen(&delete.attributes).is_some());
    /// let scale = classify("PATCH", "/apis/apps/v1/namespaces/dev/deployments/web/scale", &h)?;
    /// assert!(policy.never_widen(&scale.attributes).is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn never_widen(&self, attributes: &crate::request::Attributes) -> Option<String> {
        floor::never_widen(&self.inner.floor, attributes)
    }

    /// Classify a request from its method, target (as sent, percent-encoding kept) and headers,
    /// then decide it. A non-canonical target is denied with the reason it was refused.
    pub fn evaluate(
        &self,
        identity: &Identity,
        method: &str,
        target: &str,
        headers: &http::HeaderMap,
        body: Option<&[u8]>,
    ) -> Evaluation {
        match request::classify(method, target, headers) {
            Ok(mut req) => {
                // A DELETE's body overrides its query's options: the facts shown with the
                // decision follow the body. A body that cannot be read that way is denied by
                // `decide` below, so the error here adds nothing.
                let _ = req.with_body_facts(body);
                let decision = self.decide(identity, &req, body);
                Evaluation {
                    request: Some(req),
                    decision,
                }
            }
            Err(e) => Evaluation {
                request: None,
                decision: Decision::deny(None, e.to_string()),
            },
        }
    }

    /// The compiled masks: built-in rules, the policy's `masks.rules`, detectors.
    pub fn mask_set(&self) -> &Arc<MaskSet> {
        &self.inner.masks
    }

    /// A streaming masker for the response to `request`, given the response's `Content-Type`
    /// and `Content-Encoding` (see [`crate::mask`]).
    pub fn masker(
        &self,
        request: &Request,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
    ) -> Result<Masker, MaskError> {
        Masker::new(
            Arc::clone(&self.inner.masks),
            request,
            content_type,
            content_encoding,
        )
    }

    /// Mask a whole response body at once; on error nothing is returned.
    pub fn mask(
        &self,
        request: &Request,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        body: &[u8],
    ) -> Result<Vec<u8>, MaskError> {
        let mut m = self.masker(request, content_type, content_encoding)?;
        let mut out = m.feed(body)?;
        m.finish_into(&mut out)?;
        Ok(out)
    }

    /// Run the policy's own `tests:`.
    pub fn run_tests(&self) -> TestReport {
        selftest::run(self)
    }

    /// How many tests the policy carries.
    pub fn test_count(&self) -> usize {
        self.inner.tests.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_is_send_sync_and_cheap_to_clone() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Policy>();
    }
}
