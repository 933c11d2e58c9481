//! Access reviews answered from the policy: what an agent learns when it asks what it may do
//! (`kubectl auth can-i`, a SelfSubjectAccessReview; `kubectl auth can-i --list`, a
//! SelfSubjectRulesReview). The answer is what kubeleash will do with the caller's requests:
//! allow, deny, or hold for a person's approval, with the rule, so that an agent plans with the
//! leash it has instead of retrying blindly. [`crate::access_review`] reads and writes the
//! review objects; this module decides.

use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;

use super::compile::{Cover, Rule};
use super::eval::{self, covers_identity};
use super::glob::GlobList;
use super::{Effect, Identity, Policy};
use crate::request::Attributes;

/// What a policy says of one access question (a SelfSubjectAccessReview's attributes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessAnswer {
    /// Allowed without a person's approval: the review's `status.allowed`.
    pub allowed: bool,
    /// Refused whatever the request's body: the review's `status.denied`.
    pub denied: bool,
    /// What kubeleash does with such a request when no rule's conditions are met.
    pub effect: Effect,
    /// The rule that decides it; none for the default deny.
    #[serde(serialize_with = "ser_rule")]
    pub rule: Option<Arc<str>>,
    /// Rules whose conditions, judged on the request's body, can change the answer.
    pub conditional: Vec<ConditionalRule>,
    /// The answer in words: the review's `status.reason`.
    pub reason: String,
}

fn ser_rule<S: serde::Serializer>(rule: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match rule {
        Some(r) => s.serialize_str(r),
        None => s.serialize_none(),
    }
}

/// A rule that covers the question but decides only on a body: allow, deny or approve when its
/// conditions hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConditionalRule {
    /// The rule's name.
    pub rule: String,
    /// What it does when its conditions hold.
    pub effect: Effect,
    /// Its conditions, in words.
    pub conditions: String,
}

/// What a policy lets an identity do in one namespace, in RBAC's terms (a
/// SelfSubjectRulesReview's `status`), and what RBAC's terms cannot say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RulesAnswer {
    /// What the identity may do without a person: the allow rules without conditions.
    pub resource_rules: Vec<ResourceRule>,
    /// The same for non-resource URLs.
    pub non_resource_rules: Vec<NonResourceRule>,
    /// Whatever else the policy does that RBAC's additive rules cannot express (denials,
    /// approvals, conditions, name patterns), one sentence per rule.
    pub notes: Vec<String>,
}

/// One RBAC resource rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRule {
    /// Verbs.
    pub verbs: Vec<String>,
    /// API groups (`""` is the core group).
    pub api_groups: Vec<String>,
    /// Resources, `resource/subresource` for a subresource.
    pub resources: Vec<String>,
    /// Object names; empty for every name.
    pub resource_names: Vec<String>,
}

/// One RBAC non-resource rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NonResourceRule {
    /// Verbs (lowercase HTTP methods).
    pub verbs: Vec<String>,
    /// URL paths, a trailing `*` matching any rest.
    #[serde(rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
}

impl RulesAnswer {
    /// Whether the lists leave something out: the review's `status.incomplete`.
    pub fn incomplete(&self) -> bool {
        !self.notes.is_empty()
    }

    /// The notes as the review's `status.evaluationError` (kubectl prints it as a warning);
    /// empty when there are none.
    pub fn evaluation_error(&self) -> String {
        if self.notes.is_empty() {
            return String::new();
        }
        format!(
            "kubeleash's policy does more than RBAC rules can list: {}",
            self.notes.join("; ")
        )
    }
}

impl Policy {
    /// What kubeleash would do with a request of these attributes from `identity`: the answer
    /// to a SelfSubjectAccessReview (`kubectl auth can-i`), from the policy alone.
    ///
    /// `allowed` is true only when the request goes through without a person; a request held
    /// for approval is `allowed: false, denied: false`, with the rule and the way to ask in
    /// `reason`. A review carries no body, so rules with `when` conditions are reported in
    /// `conditional` (and in `reason`) instead of deciding.
    ///
    /// ```
    /// use kubeleash_core::policy::{Effect, Identity, Policy};
    /// use kubeleash_core::request::Attributes;
    ///
    /// let policy = Policy::from_yaml(r#"
    /// apiVersion: kubeleash.dev/v1alpha1
    /// kind: Policy
    /// spec:
    ///   rules:
    ///     - {name: read-dev, effect: allow, verbs: [get, list], resources: [pods], namespaces: [dev]}
    ///     - {name: bindings-need-a-human, effect: approve, verbs: [create], apiGroups: [rbac.authorization.k8s.io], resources: [rolebindings]}
    /// "#)?;
    /// let agent = Identity::new("agent-1", ["ai-agents"]);
    /// let ask = |verb: &str, group: &str, resource: &str, ns: &str| Attributes {
    ///     resource_request: true,
    ///     verb: verb.into(),
    ///     api_group: group.into(),
    ///     resource: resource.into(),
    ///     namespace: ns.into(),
    ///     ..Default::default()
    /// };
    ///
    /// let read = policy.review_access(&agent, &ask("list", "", "pods", "dev"));
    /// assert!(read.allowed);
    ///
    /// let bind = policy.review_access(&agent, &ask("create", "rbac.authorization.k8s.io", "rolebindings", "dev"));
    /// assert!(!bind.allowed && !bind.denied);
    /// assert_eq!(bind.effect, Effect::Approve);
    /// assert!(bind.reason.contains("a person's approval"), "{}", bind.reason);
    ///
    /// let prod = policy.review_access(&agent, &ask("list", "", "pods", "prod"));
    /// assert!(!prod.allowed && prod.denied);
    /// # Ok::<(), kubeleash_core::policy::PolicyErrors>(())
    /// ```
    pub fn review_access(&self, identity: &Identity, attributes: &Attributes) -> AccessAnswer {
        let attributes = &as_sent(attributes);
        if let Some(star) = wildcard(attributes) {
            // A question about every verb (or resource, group, subresource) covers privileged
            // requests, which a `*` never grants, and whatever a deny rule takes out: kubeleash
            // never says yes to it, and says what to ask instead.
            return AccessAnswer {
                allowed: false,
                denied: false,
                effect: Effect::Deny,
                rule: None,
                conditional: Vec::new(),
                reason: format!(
                    "kubeleash does not answer yes to a `*` {star}: it covers privileged requests \
                     (exec, token requests, RBAC writes, ...), which a `*` in a rule never grants, \
                     and whatever a deny rule takes out; ask about the verb and resource you need \
                     (`kubectl auth can-i --list` shows the rules)"
                ),
            };
        }
        let (decision, conditional) = eval::review(&self.inner, identity, attributes);
        let conditional: Vec<ConditionalRule> = conditional
            .into_iter()
            .map(|c| ConditionalRule {
                rule: c.rule.name.to_string(),
                effect: c.rule.effect,
                conditions: c.conditions,
            })
            .collect();
        // Only rules that could make the answer stricter (or, for the default deny, let the
        // request through) change what the agent should expect.
        let relevant: Vec<&ConditionalRule> = conditional
            .iter()
            .filter(|c| {
                c.effect.strictness() > decision.effect.strictness()
                    || (decision.rule.is_none() && c.effect != Effect::Deny)
            })
            .collect();
        let mut reason = String::new();
        let denied;
        match decision.effect {
            Effect::Allow => {
                denied = false;
                let _ = write!(reason, "kubeleash allows it: {}", decision.reason);
            }
            Effect::Approve => {
                denied = false;
                let _ = write!(
                    reason,
                    "kubeleash holds it for a person's approval: {}; send it and a person is \
                     asked (non-blocking: a 403 with an approval id, then the identical request \
                     again once approved)",
                    decision.reason
                );
            }
            Effect::Deny => {
                denied = decision.rule.is_some() || relevant.is_empty();
                let _ = write!(reason, "kubeleash denies it: {}", decision.reason);
            }
        }
        for c in &relevant {
            let what = match c.effect {
                Effect::Allow => "allows it",
                Effect::Deny => "denies it",
                Effect::Approve => "holds it for a person's approval",
            };
            let _ = write!(
                reason,
                "; rule \"{}\" {what} when the request's body meets its conditions ({})",
                c.rule, c.conditions
            );
        }
        AccessAnswer {
            allowed: decision.effect == Effect::Allow,
            denied,
            effect: decision.effect,
            rule: decision.rule,
            conditional,
            reason,
        }
    }

    /// What `identity` may do in `namespace`, in RBAC's terms: the answer to a
    /// SelfSubjectRulesReview (`kubectl auth can-i --list -n NAMESPACE`). The lists hold the
    /// allow rules without conditions that apply to the identity there, and the
    /// SelfSubjectAccessReview and SelfSubjectRulesReview that kubeleash answers itself;
    /// everything else the policy does to the identity there (denials, approvals, conditions,
    /// name patterns, cluster-scope-only rules) is a note.
    ///
    /// ```
    /// use kubeleash_core::policy::{Identity, Policy};
    ///
    /// let policy = Policy::from_yaml(r#"
    /// apiVersion: kubeleash.dev/v1alpha1
    /// kind: Policy
    /// spec:
    ///   rules:
    ///     - {name: read-dev, effect: allow, verbs: [get, list], resources: [pods], namespaces: [dev]}
    ///     - {name: no-prod, effect: deny, verbs: ["*"], resources: ["*"], namespaces: [prod]}
    /// "#)?;
    /// let agent = Identity::new("agent-1", ["ai-agents"]);
    /// let dev = policy.review_rules(&agent, "dev");
    /// assert!(dev.resource_rules.iter().any(|r| r.resources == ["pods"] && r.verbs == ["get", "list"]));
    /// assert!(!dev.incomplete());
    /// let prod = policy.review_rules(&agent, "prod");
    /// assert!(prod.incomplete());
    /// assert!(prod.evaluation_error().contains("rule \"no-prod\" denies"));
    /// # Ok::<(), kubeleash_core::policy::PolicyErrors>(())
    /// ```
    pub fn review_rules(&self, identity: &Identity, namespace: &str) -> RulesAnswer {
        let mut out = RulesAnswer {
            resource_rules: vec![ResourceRule {
                verbs: vec!["create".into()],
                api_groups: vec!["authorization.k8s.io".into()],
                resources: vec![
                    "selfsubjectaccessreviews".into(),
                    "selfsubjectrulesreviews".into(),
                ],
                resource_names: Vec::new(),
            }],
            ..RulesAnswer::default()
        };
        let mut star_listed = false;
        for rule in &self.inner.rules {
            if !covers_identity(rule, identity) {
                continue;
            }
            let c = &rule.cover;
            let resource = !c.resources.is_empty();
            if resource {
                match namespace_reach(c, namespace) {
                    Reach::Here => {}
                    Reach::Elsewhere => continue,
                    Reach::ClusterOnly => {
                        if rule.effect == Effect::Allow && rule.conditions.is_empty() {
                            out.notes
                                .push(format!("rule \"{}\" allows {}", rule.name, what(c)));
                        }
                        continue;
                    }
                }
            }
            let name_patterns = c
                .names
                .as_ref()
                .is_some_and(|n| n.iter().any(|x| x.contains('*')));
            if rule.effect != Effect::Allow || !rule.conditions.is_empty() || name_patterns {
                out.notes.push(note(rule));
                continue;
            }
            star_listed |= c.verbs.iter().any(|v| v == "*") || c.resources.iter().any(|r| r == "*");
            if resource {
                out.resource_rules.push(ResourceRule {
                    verbs: c.verbs.clone(),
                    api_groups: c.api_groups.clone(),
                    resources: c.resources.clone(),
                    resource_names: c.names.clone().unwrap_or_default(),
                });
            } else {
                out.non_resource_rules.push(NonResourceRule {
                    verbs: c.verbs.clone(),
                    non_resource_urls: c.non_resource_urls.clone(),
                });
            }
        }
        if star_listed {
            out.notes.push(
                "a `*` in an allow rule never grants privileged requests (exec, attach, \
                 port-forward, proxies, token requests, RBAC writes, impersonation, ...): only \
                 a rule that names the verb and the resource does"
                    .into(),
            );
        }
        out
    }
}

/// The attributes of the request a question is about, as the request would carry them: a
/// cluster-scoped resource has no namespace (whatever the question says), and a namespace's own
/// namespace is its name.
fn as_sent(a: &Attributes) -> Attributes {
    let mut a = a.clone();
    if a.resource_request {
        if a.api_group.is_empty() && a.resource == "namespaces" {
            a.namespace = if a.subresource.is_empty() && a.name.is_empty() {
                String::new()
            } else {
                a.name.clone()
            };
        } else if super::privileged::cluster_scoped(&a.api_group, &a.resource) {
            a.namespace.clear();
        }
    }
    a
}

/// Which part of a question is `*`, if any.
fn wildcard(a: &Attributes) -> Option<&'static str> {
    if a.verb == "*" {
        Some("verb")
    } else if !a.resource_request {
        a.path.contains('*').then_some("path")
    } else if a.resource == "*" {
        Some("resource")
    } else if a.api_group == "*" {
        Some("API group")
    } else if a.subresource == "*" {
        Some("subresource")
    } else {
        None
    }
}

/// Where a resource rule applies, seen from one namespace.
enum Reach {
    /// In this namespace.
    Here,
    /// Only in other namespaces.
    Elsewhere,
    /// At cluster scope (`""`) and not in this namespace.
    ClusterOnly,
}

fn namespace_reach(c: &Cover, namespace: &str) -> Reach {
    let Some(patterns) = &c.namespaces else {
        return Reach::Here;
    };
    let matches = GlobList::new(patterns.iter().map(String::as_str))
        .map(|g| g.is_match(namespace))
        // The patterns compiled once already: a failure here cannot happen; reading the rule
        // as reaching the namespace keeps a denial visible rather than hidden.
        .unwrap_or(true);
    if matches {
        Reach::Here
    } else if patterns.iter().any(String::is_empty) {
        Reach::ClusterOnly
    } else {
        Reach::Elsewhere
    }
}

/// One sentence for a rule RBAC's lists cannot hold.
pub(crate) fn note(rule: &Rule) -> String {
    let c = &rule.cover;
    let does = match rule.effect {
        Effect::Allow => "allows",
        Effect::Deny => "denies",
        Effect::Approve => "needs a person's approval for",
    };
    let mut s = format!("rule \"{}\" {does} {}", rule.name, what(c));
    if let Some(names) = &c.names {
        let _ = write!(s, " named {}", names.join(", "));
    }
    if !rule.conditions.is_empty() {
        let conditions: Vec<String> = rule.conditions.iter().map(|x| x.describe()).collect();
        let _ = write!(s, " when {}", conditions.join(" and "));
    }
    if let Some(why) = &rule.reason {
        let _ = write!(s, " ({why})");
    }
    s
}

/// A rule's verbs and targets in words: `create on rolebindings.rbac.authorization.k8s.io in
/// namespaces dev, staging`.
pub(crate) fn what(c: &Cover) -> String {
    let mut s = c.verbs.join(", ");
    s.push_str(" on ");
    if c.resources.is_empty() {
        s.push_str(&c.non_resource_urls.join(", "));
        return s;
    }
    let targets: Vec<String> = c
        .resources
        .iter()
        .flat_map(|r| {
            c.api_groups.iter().map(move |g| match g.as_str() {
                "" => r.clone(),
                "*" if r == "*" => "*".to_string(),
                "*" => format!("{r} (any API group)"),
                g => format!("{r}.{g}"),
            })
        })
        .collect();
    s.push_str(&targets.join(", "));
    if c.namespaces.as_deref() == Some(&[String::new()]) {
        s.push_str(" at cluster scope only");
    } else if let Some(ns) = &c.namespaces {
        let shown: Vec<&str> = ns
            .iter()
            .map(|n| if n.is_empty() { "(cluster scope)" } else { n })
            .collect();
        let _ = write!(
            s,
            " in namespace{} {}",
            if shown.len() == 1 { "" } else { "s" },
            shown.join(", ")
        );
    }
    s
}
