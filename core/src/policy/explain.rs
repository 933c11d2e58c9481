//! Why a policy decided what it did: every rule, in document order, with whether it matched the
//! request and why not, and the decision. What `kubeleash explain` prints, for a person writing
//! or checking a policy.
//!
//! Whether a rule matched comes from the same index and checks that decide requests; the words
//! for why not (which field failed) are read from the rule as written.

use std::fmt::Write as _;

use serde::Serialize;

use super::compile::Rule;
use super::eval::{self, BodyState, Judged, covers_identity};
use super::privileged::privilege;
use super::{Decision, Effect, Identity, Location, Policy};
use crate::request::{Attributes, Request};

/// How one rule came out for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleOutcome {
    /// It covers the request (its conditions, if any, hold).
    Matches,
    /// It covers the request's verb and target, but its `when` conditions do not hold.
    ConditionsFail,
    /// It covers the request only through a `*`, which never grants a privileged request.
    WildcardPrivileged,
    /// It does not cover the request.
    NoMatch,
}

/// One rule, as it applied to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleTrace {
    /// The rule's name.
    pub rule: String,
    /// Its effect.
    pub effect: Effect,
    /// Where it is written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<Location>,
    /// How it came out.
    pub outcome: RuleOutcome,
    /// Why, in words.
    pub why: String,
    /// Whether it is the rule that decides the request.
    pub decides: bool,
}

/// Every rule of a policy against one request, and the decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The rules, in document order.
    pub rules: Vec<RuleTrace>,
    /// The decision, exactly as [`Policy::decide`] gives it.
    pub decision: Decision,
}

impl Policy {
    /// Every rule against `request` from `identity` (with `body`, as sent), and the decision.
    ///
    /// ```
    /// use kubeleash_core::policy::{Identity, Policy, RuleOutcome};
    /// use kubeleash_core::request::classify;
    ///
    /// let policy = Policy::from_yaml(r#"
    /// apiVersion: kubeleash.dev/v1alpha1
    /// kind: Policy
    /// spec:
    ///   rules:
    ///     - {name: read-dev, effect: allow, verbs: [get, list], resources: [pods], namespaces: [dev]}
    ///     - {name: no-prod, effect: deny, verbs: ["*"], resources: ["*"], namespaces: [prod]}
    /// "#)?;
    /// let req = classify("GET", "/api/v1/namespaces/prod/pods", &http::HeaderMap::new())?;
    /// let e = policy.explain(&Identity::new("agent-1", ["ai-agents"]), &req, None);
    /// assert_eq!(e.rules[0].outcome, RuleOutcome::NoMatch);
    /// assert_eq!(e.rules[0].why, "namespace `prod` is not in [dev]");
    /// assert!(e.rules[1].decides);
    /// assert_eq!(e.decision.rule.as_deref(), Some("no-prod"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn explain(
        &self,
        identity: &Identity,
        request: &Request,
        body: Option<&[u8]>,
    ) -> Explanation {
        let c = &self.inner;
        let a = &request.attributes;
        let decision = self.decide(identity, request, body);
        let mut cands = Vec::new();
        eval::candidates(c, a, &mut cands);
        let privileged = privilege(a);
        let mut state = BodyState::new(request, body.filter(|b| !b.is_empty()));
        let rules = c
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let cand = cands
                    .iter()
                    .filter(|x| x.id as usize == i)
                    .max_by_key(|x| x.explicit);
                let (outcome, why) = match cand {
                    _ if !covers_identity(rule, identity) => {
                        (RuleOutcome::NoMatch, subjects_miss(rule, identity))
                    }
                    None => (RuleOutcome::NoMatch, target_miss(rule, a)),
                    Some(_) if !eval::applies(rule, identity, a) => {
                        (RuleOutcome::NoMatch, name_miss(rule, a))
                    }
                    Some(x) if privileged.is_some() && rule.effect == Effect::Allow && !x.explicit => (
                        RuleOutcome::WildcardPrivileged,
                        format!(
                            "covers it only through `*`, and {}: an allow rule must list verb `{}` and resource `{}` by name",
                            privileged.unwrap_or_default(),
                            a.verb,
                            a.combined_resource()
                        ),
                    ),
                    Some(_) => match eval::judge(rule, &mut state) {
                        Ok(Judged::Holds(None)) => (RuleOutcome::Matches, "matches".to_string()),
                        Ok(Judged::Holds(Some(detail))) => {
                            (RuleOutcome::Matches, format!("matches {detail}"))
                        }
                        Ok(Judged::Fails) => (
                            RuleOutcome::ConditionsFail,
                            format!(
                                "covers the request, but its conditions do not hold: {}",
                                eval::describe_conditions(rule)
                            ),
                        ),
                        Err(e) => (
                            RuleOutcome::ConditionsFail,
                            format!("its conditions cannot be judged: the body is refused: {e}"),
                        ),
                    },
                };
                RuleTrace {
                    rule: rule.name.to_string(),
                    effect: rule.effect,
                    at: rule.cover.at,
                    outcome,
                    why,
                    decides: decision.rule.as_deref() == Some(&*rule.name),
                }
            })
            .collect();
        Explanation { rules, decision }
    }
}

fn list(v: &[String]) -> String {
    let shown: Vec<String> = v
        .iter()
        .map(|x| {
            if x.is_empty() {
                "\"\"".to_string()
            } else {
                x.clone()
            }
        })
        .collect();
    format!("[{}]", shown.join(", "))
}

fn subjects_miss(rule: &Rule, id: &Identity) -> String {
    let named = |set: &std::collections::HashSet<Box<str>>| {
        let mut v: Vec<&str> = set.iter().map(|x| &**x).collect();
        v.sort_unstable();
        v.join(", ")
    };
    let mut s = match &rule.subjects {
        Some(subjects) => format!(
            "its subjects (users [{}], groups [{}]) do not include ",
            named(&subjects.users),
            named(&subjects.groups)
        ),
        None => String::from("its subjects do not include "),
    };
    if id.user.is_empty() {
        s.push_str("the anonymous user");
    } else {
        let _ = write!(s, "user `{}`", id.user);
    }
    if !id.groups.is_empty() {
        let _ = write!(s, " or any of the groups [{}]", id.groups.join(", "));
    }
    s
}

/// Which field of a rule the index found not to cover the request, read from the rule.
fn target_miss(rule: &Rule, a: &Attributes) -> String {
    let c = &rule.cover;
    let star = |v: &[String]| v.iter().any(|x| x == "*");
    if c.resources.is_empty() == a.resource_request {
        return if a.resource_request {
            "a nonResourceURLs rule; this is a resource request".into()
        } else {
            "a resources rule; this is a non-resource request".into()
        };
    }
    if !star(&c.verbs) && !c.verbs.contains(&a.verb) {
        return format!("verb `{}` is not in {}", a.verb, list(&c.verbs));
    }
    if !a.resource_request {
        return format!("path `{}` is not in {}", a.path, list(&c.non_resource_urls));
    }
    if !star(&c.api_groups) && !c.api_groups.contains(&a.api_group) {
        return format!(
            "apiGroup `{}` is not in {}",
            if a.api_group.is_empty() {
                "\"\""
            } else {
                &a.api_group
            },
            list(&c.api_groups)
        );
    }
    let combined = a.combined_resource();
    let sub_star = format!("*/{}", a.subresource);
    let resource_ok = c.resources.iter().any(|r| {
        *r == combined
            || (a.subresource.is_empty() && r == "*")
            || (!a.subresource.is_empty() && (*r == sub_star || r == "*"))
    });
    if !resource_ok {
        let mut s = format!("resource `{combined}` is not in {}", list(&c.resources));
        if !a.subresource.is_empty() && c.resources.contains(&a.resource) {
            let _ = write!(s, " (`{}` does not cover its subresources)", a.resource);
        }
        return s;
    }
    match &c.namespaces {
        Some(ns) if a.namespace.is_empty() => format!(
            "the request is not in one namespace (cluster scope, or all namespaces), and the rule is restricted to {}",
            list(ns)
        ),
        Some(ns) => format!("namespace `{}` is not in {}", a.namespace, list(ns)),
        None => "it does not cover the request".into(),
    }
}

fn name_miss(rule: &Rule, a: &Attributes) -> String {
    match &rule.cover.names {
        Some(names) if a.name.is_empty() => format!(
            "the request names no object, and an allow rule restricted to names {} never covers one (as in RBAC)",
            list(names)
        ),
        Some(names) => format!("name `{}` is not in {}", a.name, list(names)),
        None => format!("verb `{}` is not among its methods", a.verb),
    }
}
