//! What a policy lets one identity ever do, rule by rule: for a front door that must show an
//! agent its leash before the agent asks (`kubeleash mcp` lists only the tools the identity can
//! use, and says in each tool's description where it is allowed and where a person must
//! approve). It answers "could any request with this verb get through?", not "does this request
//! get through?": that stays [`Policy::decide`]'s.

use serde::Serialize;

use super::eval::covers_identity;
use super::review::note;
use super::{Effect, Identity, Policy};

/// One resource rule that applies to an identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleReach {
    /// The rule's name.
    pub rule: String,
    /// What it does.
    pub effect: Effect,
    /// The verbs it covers (`*` for every verb).
    pub verbs: Vec<String>,
    /// The API groups it covers (`""` the core group, `*` every group).
    pub api_groups: Vec<String>,
    /// The resources it covers, `resource/subresource` for a subresource (`*` every resource,
    /// `*/scale` every resource's scale subresource).
    pub resources: Vec<String>,
    /// The rule in one sentence, as `kubectl auth can-i --list` notes it: `rule "read-dev"
    /// allows get, list on pods in namespace dev`.
    pub sentence: String,
}

impl RuleReach {
    /// Whether the rule covers `verb`. A `*` covers every verb but never grants privileged
    /// requests (exec, RBAC writes, token requests, ...), which only a rule naming the verb
    /// and the resource does; a catalogue reads it as "some requests with this verb".
    pub fn covers_verb(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb || v == "*")
    }

    /// Whether the rule covers `resource` (`deployments`, `deployments/scale`) in `group`, as
    /// the policy matches a request's: `*` covers every resource and subresource, `*/scale`
    /// every resource's scale subresource, `pods` no subresource of pods.
    pub fn covers_resource(&self, group: &str, resource: &str) -> bool {
        let group_ok = self.api_groups.iter().any(|g| g == "*" || g == group);
        let sub = resource.split_once('/').map(|(_, s)| s);
        group_ok
            && self.resources.iter().any(|r| {
                r == resource || r == "*" || sub.is_some_and(|s| r.strip_prefix("*/") == Some(s))
            })
    }

    /// Whether a request the rule covers can get through: allowed, or held for a person.
    pub fn lets_through(&self) -> bool {
        self.effect != Effect::Deny
    }
}

impl Policy {
    /// The resource rules that apply to `identity`, in the policy's order: what it can ever be
    /// allowed, held for, or denied. Non-resource rules (discovery, `/version`) are left out.
    ///
    /// ```
    /// use kubeleash_core::policy::{Effect, Identity, Policy};
    ///
    /// let policy = Policy::from_yaml(r#"
    /// apiVersion: kubeleash.dev/v1alpha1
    /// kind: Policy
    /// spec:
    ///   rules:
    ///     - {name: read-dev, effect: allow, subjects: {groups: [ai-agents]}, verbs: [get, list], resources: [pods], namespaces: [dev]}
    ///     - {name: ops-deletes, effect: allow, subjects: {groups: [ops]}, verbs: [delete], resources: [pods]}
    /// "#)?;
    /// let agent = Identity::new("agent-1", ["ai-agents"]);
    /// let reach = policy.reach(&agent);
    /// assert!(reach.iter().any(|r| r.covers_verb("list") && r.lets_through()));
    /// assert!(!reach.iter().any(|r| r.covers_verb("delete")));
    /// assert!(reach[0].sentence.contains("in namespace dev"), "{}", reach[0].sentence);
    /// assert!(reach[0].covers_resource("", "pods") && !reach[0].covers_resource("", "pods/log"));
    /// # Ok::<(), kubeleash_core::policy::PolicyErrors>(())
    /// ```
    pub fn reach(&self, identity: &Identity) -> Vec<RuleReach> {
        self.inner
            .rules
            .iter()
            .filter(|r| !r.cover.resources.is_empty() && covers_identity(r, identity))
            .map(|r| RuleReach {
                rule: r.name.to_string(),
                effect: r.effect,
                verbs: r.cover.verbs.clone(),
                api_groups: r.cover.api_groups.clone(),
                resources: r.cover.resources.clone(),
                sentence: note(r),
            })
            .collect()
    }
}
