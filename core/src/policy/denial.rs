//! A denial a model can act on: besides the reason, the rule, whether a person could approve
//! the request, and the nearest request the policy would let the caller make instead, in words
//! and as `Status` `details.causes` fields. An agent told only "forbidden" retries blindly or
//! gives up; told "list on configmaps in namespace dev is allowed", it can change course.

use serde_json::{Value, json};

use super::compile::Rule;
use super::eval::{self, covers_identity};
use super::{Decision, Effect, Identity, Policy};
use crate::request::Attributes;

/// At most this many nearby requests are tried (each one is a policy decision, well under a
/// microsecond; denials only).
const MAX_TRIES: usize = 64;

/// What kubeleash says about a denial, besides its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// `details.causes`: `(field, reason, message)`, the field names prefixed `kubeleash.`.
    pub causes: Vec<(String, &'static str, String)>,
    /// One sentence for the `Status` message, after the reason: what to do instead.
    pub hint: Option<String>,
}

impl Denial {
    /// The `Status` `details` for a denied request with these attributes: the resource's
    /// `name`, `group` and `kind` (the resource, as the API server's Forbidden gives them) and
    /// the causes.
    ///
    /// ```
    /// use kubeleash_core::policy::{Identity, Policy};
    /// use kubeleash_core::request::classify;
    ///
    /// let policy = Policy::from_yaml(r#"
    /// apiVersion: kubeleash.dev/v1alpha1
    /// kind: Policy
    /// spec:
    ///   rules:
    ///     - {name: read-dev, effect: allow, verbs: [get, list], resources: [configmaps], namespaces: [dev]}
    /// "#)?;
    /// let agent = Identity::new("agent-1", ["ai-agents"]);
    /// let req = classify("GET", "/api/v1/namespaces/prod/configmaps", &http::HeaderMap::new())?;
    /// let decision = policy.decide(&agent, &req, None);
    /// let denial = policy.explain_denial(&agent, &req.attributes, &decision);
    /// assert_eq!(denial.hint.as_deref(), Some("the nearest request the policy allows: list on configmaps in namespace dev (rule \"read-dev\")"));
    /// let details = denial.details(&req.attributes);
    /// assert_eq!(details["kind"], "configmaps");
    /// assert!(details["causes"].as_array().unwrap().iter().any(|c| c["field"] == "kubeleash.nearest.namespace" && c["message"] == "dev"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn details(&self, a: &Attributes) -> Value {
        let causes: Vec<Value> = self
            .causes
            .iter()
            .map(|(field, reason, message)| {
                json!({"reason": reason, "message": message, "field": field})
            })
            .collect();
        let mut d = json!({"causes": causes});
        if a.resource_request {
            if !a.name.is_empty() {
                d["name"] = json!(a.name);
            }
            d["group"] = json!(a.api_group);
            d["kind"] = json!(a.combined_resource());
        }
        d
    }
}

impl Policy {
    /// Explain a denial of a request with attributes `a` (the decision
    /// [`Policy::decide`] gave it) to the caller: the rule and reason, whether a person could
    /// approve the request, and the nearest request the policy lets `identity` make without a
    /// person (the same verb and resource in a namespace an allow rule names, or a read of the
    /// same resource in the same place), or failing that one a person could approve.
    pub fn explain_denial(
        &self,
        identity: &Identity,
        a: &Attributes,
        decision: &Decision,
    ) -> Denial {
        let mut causes = Vec::new();
        let mut cause = |field: &str, reason: &'static str, message: String| {
            causes.push((format!("kubeleash.{field}"), reason, message));
        };
        cause(
            "rule",
            "PolicyRule",
            decision.rule.as_deref().unwrap_or("none").to_string(),
        );
        cause("reason", "PolicyReason", decision.reason.clone());
        // Attributes the policy lets through on their own were refused for their body or
        // headers: another namespace or verb would not help, a different body would.
        let (own, _) = eval::review(&self.inner, identity, a);
        if own.effect != Effect::Deny {
            cause(
                "approval",
                "ApprovalPath",
                "not applicable: the verb and resource are not what is refused, this request's \
                 body or headers are (see the reason)"
                    .into(),
            );
            return Denial { causes, hint: None };
        }
        cause(
            "approval",
            "ApprovalPath",
            "none for this request: the policy denies it, so no person can approve it; a \
             policy change by the operator can"
                .into(),
        );
        let mut hint = None;
        if let Some((effect, near, rule)) = nearest(self, identity, a) {
            let what = eval::describe(&near);
            let (field, reason, sentence) = match effect {
                Effect::Allow => (
                    "nearest",
                    "NearestAllowed",
                    "the nearest request the policy allows",
                ),
                _ => (
                    "nearest",
                    "NearestApprovable",
                    "the nearest request a person could approve",
                ),
            };
            hint = Some(format!("{sentence}: {what} (rule \"{rule}\")"));
            cause(field, reason, format!("{what} (rule \"{rule}\")"));
            cause(&format!("{field}.verb"), reason, near.verb.clone());
            if near.resource_request {
                if !near.namespace.is_empty() {
                    cause(
                        &format!("{field}.namespace"),
                        reason,
                        near.namespace.clone(),
                    );
                }
                cause(
                    &format!("{field}.resource"),
                    reason,
                    near.combined_resource(),
                );
                if !near.name.is_empty() {
                    cause(&format!("{field}.name"), reason, near.name.clone());
                }
            } else {
                cause(&format!("{field}.path"), reason, near.path.clone());
            }
        }
        Denial { causes, hint }
    }
}

/// The nearest request `identity` may make: allowed without a person first, then one a person
/// could approve; with the deciding rule.
fn nearest(
    p: &Policy,
    identity: &Identity,
    a: &Attributes,
) -> Option<(Effect, Attributes, String)> {
    if !a.resource_request {
        return None;
    }
    let c = &p.inner;
    let tries = candidates(&c.rules, identity, a);
    for want in [Effect::Allow, Effect::Approve] {
        for t in tries.iter().take(MAX_TRIES) {
            let (d, conditional) = eval::review(c, identity, t);
            if d.effect == want
                && conditional
                    .iter()
                    .all(|x| x.rule.effect.strictness() <= want.strictness())
                && let Some(rule) = d.rule
            {
                return Some((want, t.clone(), rule.to_string()));
            }
        }
    }
    None
}

/// Requests near `a`, nearest first: the same verb and resource in each namespace a rule names
/// (rules without conditions that apply to `identity`, literal namespaces only), then reads of
/// the same resource where `a` was.
fn candidates(rules: &[Rule], identity: &Identity, a: &Attributes) -> Vec<Attributes> {
    let mut out: Vec<Attributes> = Vec::new();
    let mut push = |t: Attributes| {
        if t != *a && !out.contains(&t) {
            out.push(t);
        }
    };
    // For a namespace itself the namespace is its name: another one is another object.
    let namespace_object = a.api_group.is_empty() && a.resource == "namespaces";
    if !a.namespace.is_empty() && !namespace_object {
        for r in rules {
            if r.effect == Effect::Deny || !r.conditions.is_empty() || !covers_identity(r, identity)
            {
                continue;
            }
            for ns in r.cover.namespaces.iter().flatten() {
                if ns.is_empty() || ns.contains('*') || *ns == a.namespace {
                    continue;
                }
                push(Attributes {
                    namespace: ns.clone(),
                    ..a.clone()
                });
            }
        }
    }
    // A stream subresource is `create` whatever the method: a read of it cannot be sent.
    let stream = matches!(a.subresource.as_str(), "exec" | "attach" | "portforward");
    for verb in ["get", "list", "watch"] {
        if verb == a.verb || (verb == "get" && (a.name.is_empty() || stream)) {
            continue;
        }
        push(Attributes {
            verb: verb.into(),
            name: if verb == "get" {
                a.name.clone()
            } else {
                String::new()
            },
            subresource: if verb == "get" {
                a.subresource.clone()
            } else {
                String::new()
            },
            ..a.clone()
        });
    }
    out
}
