//! Policy lint: what compiles but is likely a mistake. Risky grants (an `allow` where a person's
//! approval is the safer effect), rules a `deny` makes dead, and rules that can never match;
//! each with where it is written and a suggested fix. What `kubeleash lint` prints.

use serde::Serialize;

use super::compile::{Cover, Rule};
use super::glob::GlobList;
use super::{Effect, Location, Policy};

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// A stable name for the kind of finding: `risky-grant`, `shadowed`, `never-matches`.
    pub code: &'static str,
    /// The rule it is about.
    pub rule: String,
    /// Where the rule is written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<Location>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

/// Grants a person should see before they happen, as `(verb, group, resource, why)`: an allow
/// rule that covers one of these (by name or by `*`, for the verbs and resources that a `*`
/// does grant) is reported.
const RISKY: &[(&str, &str, &str, &str)] = &[
    ("create", "", "pods/exec", "runs commands in a pod"),
    (
        "create",
        "",
        "pods/attach",
        "attaches to a running container",
    ),
    (
        "create",
        "",
        "pods/portforward",
        "opens connections into a pod",
    ),
    (
        "get",
        "",
        "nodes/proxy",
        "reaches the kubelet API, which runs commands in any pod on the node",
    ),
    (
        "create",
        "",
        "serviceaccounts/token",
        "mints service account tokens",
    ),
    (
        "list",
        "",
        "secrets",
        "lists every Secret in scope (masked values, but every name, type and annotation)",
    ),
    ("watch", "", "secrets", "watches every Secret in scope"),
    (
        "create",
        "rbac.authorization.k8s.io",
        "rolebindings",
        "binds roles: grants permissions",
    ),
    (
        "create",
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "binds cluster roles: grants permissions cluster-wide",
    ),
    (
        "create",
        "rbac.authorization.k8s.io",
        "roles",
        "writes RBAC roles",
    ),
    (
        "create",
        "rbac.authorization.k8s.io",
        "clusterroles",
        "writes RBAC cluster roles",
    ),
    (
        "update",
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "rebinds cluster roles",
    ),
    (
        "escalate",
        "rbac.authorization.k8s.io",
        "roles",
        "grants permissions the caller does not have",
    ),
    (
        "escalate",
        "rbac.authorization.k8s.io",
        "clusterroles",
        "grants permissions the caller does not have",
    ),
    (
        "bind",
        "rbac.authorization.k8s.io",
        "clusterroles",
        "binds roles beyond the caller's permissions",
    ),
    (
        "bind",
        "rbac.authorization.k8s.io",
        "roles",
        "binds roles beyond the caller's permissions",
    ),
    ("impersonate", "", "users", "acts as another user"),
    ("impersonate", "", "groups", "acts as another group"),
    (
        "impersonate",
        "",
        "serviceaccounts",
        "acts as a service account",
    ),
];

impl Policy {
    /// What in this policy is likely a mistake, in document order of the rules.
    ///
    /// ```
    /// use kubeleash_core::policy::Policy;
    ///
    /// let policy = Policy::from_yaml(r#"
    /// apiVersion: kubeleash.dev/v1alpha1
    /// kind: Policy
    /// spec:
    ///   rules:
    ///     - {name: debug, effect: allow, verbs: [create], resources: [pods/exec], namespaces: [dev]}
    /// "#)?;
    /// let findings = policy.lint();
    /// assert_eq!(findings[0].code, "risky-grant");
    /// assert!(findings[0].fix.contains("effect: approve"));
    /// # Ok::<(), kubeleash_core::policy::PolicyErrors>(())
    /// ```
    pub fn lint(&self) -> Vec<Finding> {
        let rules = &self.inner.rules;
        let mut out = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let finding = |code, message: String, fix: String| Finding {
                code,
                rule: rule.name.to_string(),
                at: rule.cover.at,
                message,
                fix,
            };
            if let Some(m) = never_matches(rule) {
                out.push(finding("never-matches", m.0, m.1));
                continue;
            }
            if rule.effect != Effect::Deny
                && let Some(d) = rules
                    .iter()
                    .enumerate()
                    .find(|(j, d)| *j != i && shadows(d, rule))
                    .map(|(_, d)| d)
            {
                out.push(finding(
                    "shadowed",
                    format!(
                        "rule \"{}\" can never {}: rule \"{}\" denies everything it covers",
                        rule.name,
                        if rule.effect == Effect::Allow {
                            "allow anything"
                        } else {
                            "hold anything for approval"
                        },
                        d.name
                    ),
                    format!(
                        "remove rule \"{}\", or narrow rule \"{}\" (its verbs, resources or namespaces) so that the two do not overlap",
                        rule.name, d.name
                    ),
                ));
                continue;
            }
            if rule.effect == Effect::Allow {
                let c = &rule.cover;
                let mut risky: Vec<String> = Vec::new();
                let mut seen: Vec<&str> = Vec::new();
                // kubeleash masks every Secret value, so listing Secrets in the namespaces an
                // agent works in is the ordinary case; across every namespace (names, types and
                // annotations of the whole cluster's Secrets) it is a grant to look at.
                let everywhere = c
                    .namespaces
                    .as_ref()
                    .is_none_or(|ns| ns.iter().any(|n| n.contains('*')));
                for (verb, group, resource, why) in RISKY {
                    if *resource == "secrets" && !everywhere {
                        continue;
                    }
                    if covers(c, verb, group, resource) && !seen.contains(resource) {
                        seen.push(resource);
                        risky.push(format!("{verb} {resource} ({why})"));
                    }
                }
                if !risky.is_empty() {
                    out.push(finding(
                        "risky-grant",
                        format!(
                            "rule \"{}\" allows without a person: {}",
                            rule.name,
                            risky.join("; ")
                        ),
                        "use `effect: approve` for these in a rule of their own, so that a person sees each one, and keep `allow` for the rest".into(),
                    ));
                }
                if c.verbs.iter().any(|v| v == "*")
                    && c.namespaces.is_none()
                    && !c.resources.is_empty()
                {
                    out.push(finding(
                        "risky-grant",
                        format!(
                            "rule \"{}\" allows every verb in every namespace and at cluster scope",
                            rule.name
                        ),
                        "list the verbs the agent needs, and the namespaces it works in (`namespaces: [...]`)".into(),
                    ));
                }
            }
        }
        out
    }
}

impl Policy {
    /// [`Policy::lint`], and the rules that name resources a cluster does not serve: `served`
    /// holds `(apiGroup, resource)` for every resource and subresource in the cluster's
    /// discovery (`""` for the core group; subresources as `pods/log`). A rule is reported
    /// when none of the resources it names literally (in the groups it names literally) is
    /// served; each unknown one is named.
    ///
    /// ```
    /// use std::collections::BTreeSet;
    /// use kubeleash_core::policy::Policy;
    ///
    /// let policy = Policy::from_yaml(r#"
    /// apiVersion: kubeleash.dev/v1alpha1
    /// kind: Policy
    /// spec:
    ///   rules:
    ///     - {name: typo, effect: allow, verbs: [get], apiGroups: [""], resources: [pod], namespaces: [dev]}
    /// "#)?;
    /// let served = BTreeSet::from([("".to_string(), "pods".to_string())]);
    /// let findings = policy.lint_served(&served);
    /// assert_eq!(findings[0].code, "never-matches");
    /// assert!(findings[0].message.contains("`pod`"));
    /// # Ok::<(), kubeleash_core::policy::PolicyErrors>(())
    /// ```
    pub fn lint_served(
        &self,
        served: &std::collections::BTreeSet<(String, String)>,
    ) -> Vec<Finding> {
        let mut out = self.lint();
        for rule in &self.inner.rules {
            let c = &rule.cover;
            if c.resources.is_empty()
                || out
                    .iter()
                    .any(|f| f.rule == *rule.name && f.code == "never-matches")
            {
                continue;
            }
            let literal: Vec<&String> = c.resources.iter().filter(|r| !r.contains('*')).collect();
            if literal.is_empty() || literal.len() != c.resources.len() {
                continue;
            }
            let is_served = |res: &str| {
                c.api_groups.iter().any(|g| {
                    served
                        .iter()
                        .any(|(sg, sr)| (g == "*" || g == sg) && sr == res)
                })
            };
            let unknown: Vec<&str> = literal
                .iter()
                .map(|r| r.as_str())
                .filter(|r| !is_served(r))
                .collect();
            if unknown.is_empty() {
                continue;
            }
            let all = unknown.len() == literal.len();
            out.push(Finding {
                code: if all { "never-matches" } else { "unknown-resource" },
                rule: rule.name.to_string(),
                at: c.at,
                message: format!(
                    "rule \"{}\" names {} the cluster does not serve in {}: {}{}",
                    rule.name,
                    if unknown.len() == 1 { "a resource" } else { "resources" },
                    if c.api_groups.iter().any(|g| g == "*") {
                        "any API group".to_string()
                    } else {
                        format!(
                            "API group{} {}",
                            if c.api_groups.len() == 1 { "" } else { "s" },
                            c.api_groups
                                .iter()
                                .map(|g| if g.is_empty() { "\"\" (core)".to_string() } else { g.clone() })
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    },
                    unknown.iter().map(|u| format!("`{u}`")).collect::<Vec<_>>().join(", "),
                    if all { ", so it can never match" } else { "" }
                ),
                fix: "use the plural, lowercase names `kubectl api-resources` lists (a subresource as `pods/log`), in the API group that serves them".into(),
            });
        }
        out
    }
}

/// Whether `c` covers `verb` on `group`/`resource` as a rule's index would: a literal match, or
/// a `*` (privileged requests need the literal name to be allowed, so a `*` counts only for the
/// ones a `*` does grant: listing and watching Secrets).
fn covers(c: &Cover, verb: &str, group: &str, resource: &str) -> bool {
    let literal_only = !matches!((verb, resource), ("list" | "watch", "secrets"));
    let has = |list: &[String], x: &str| list.iter().any(|v| v == x || (!literal_only && v == "*"));
    let groups_ok = c.api_groups.iter().any(|g| g == group || g == "*");
    let resource_ok = has(&c.resources, resource)
        || (!literal_only
            && resource.split_once('/').is_none()
            && c.resources.iter().any(|r| r == "*"));
    has(&c.verbs, verb) && groups_ok && resource_ok
}

/// Whether deny rule `d` covers everything `r` covers, for everyone `r` applies to, whatever the
/// body: then `r` never decides anything.
fn shadows(d: &Rule, r: &Rule) -> bool {
    if d.effect != Effect::Deny || !d.conditions.is_empty() || d.cover.names.is_some() {
        return false;
    }
    // Subjects: `d` applies to everyone `r` applies to.
    match (&d.subjects, &r.subjects) {
        (None, _) => {}
        (Some(_), None) => return false,
        (Some(ds), Some(rs)) => {
            if !rs.users.iter().all(|u| ds.users.contains(u))
                || !rs.groups.iter().all(|g| ds.groups.contains(g))
            {
                return false;
            }
        }
    }
    let (dc, rc) = (&d.cover, &r.cover);
    let superset = |dl: &[String], rl: &[String]| {
        dl.iter().any(|x| x == "*") || rl.iter().all(|x| dl.contains(x))
    };
    if dc.resources.is_empty() != rc.resources.is_empty() {
        return false;
    }
    if !superset(&dc.verbs, &rc.verbs) {
        return false;
    }
    if rc.resources.is_empty() {
        return superset(&dc.non_resource_urls, &rc.non_resource_urls);
    }
    let resources_covered = rc.resources.iter().all(|res| {
        dc.resources.iter().any(|x| {
            x == res
                || (x == "*" && !res.contains('/'))
                || (x == "*" && dc.resources.iter().any(|y| y == "*/*"))
                || res
                    .split_once('/')
                    .is_some_and(|(_, sub)| *x == format!("*/{sub}"))
        })
    });
    if !superset(&dc.api_groups, &rc.api_groups) || !resources_covered {
        return false;
    }
    match (&dc.namespaces, &rc.namespaces) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(dn), Some(rn)) => GlobList::new(dn.iter().map(String::as_str))
            .map(|g| rn.iter().all(|n| !n.contains('*') && g.is_match(n)))
            .unwrap_or(false),
    }
}

/// A rule that cannot match any request the API server serves: `(message, fix)`.
fn never_matches(rule: &Rule) -> Option<(String, String)> {
    let c = &rule.cover;
    // Subresources of cluster-scoped-only restrictions, or a cluster-scope-only rule on
    // resources that only exist in namespaces.
    const NAMESPACED: &[&str] = &[
        "pods",
        "secrets",
        "configmaps",
        "services",
        "deployments",
        "replicasets",
        "statefulsets",
        "daemonsets",
        "jobs",
        "cronjobs",
        "serviceaccounts",
        "roles",
        "rolebindings",
        "events",
        "ingresses",
        "persistentvolumeclaims",
        "endpoints",
        "networkpolicies",
    ];
    if c.namespaces.as_deref() == Some(&[String::new()])
        && !c.resources.is_empty()
        && c.resources.iter().all(|r| {
            let base = r.split('/').next().unwrap_or(r);
            NAMESPACED.contains(&base)
        })
    {
        return Some((
            format!(
                "rule \"{}\" is restricted to cluster scope (`namespaces: [\"\"]`), but {} only exist in namespaces",
                rule.name,
                c.resources.join(", ")
            ),
            "name the namespaces it is for, or leave `namespaces` out for every namespace".into(),
        ));
    }
    if let Some(ns) = &c.namespaces
        && !ns.iter().any(|n| n.is_empty() || n == "*")
        && !c.resources.is_empty()
        && c.resources.iter().all(|r| {
            let base = r.split('/').next().unwrap_or(r);
            base != "namespaces"
                && c.api_groups.iter().all(|g| match g.as_str() {
                    // Every group: the resource is cluster-scoped where it is built in.
                    "*" => ["", "rbac.authorization.k8s.io"]
                        .iter()
                        .any(|g| super::privileged::cluster_scoped(g, base)),
                    g => super::privileged::cluster_scoped(g, base),
                })
        })
    {
        return Some((
            format!(
                "rule \"{}\" is restricted to namespaces [{}], but {} are cluster-scoped: no request for them is in a namespace",
                rule.name,
                ns.join(", "),
                c.resources.join(", ")
            ),
            "add `\"\"` to `namespaces` (cluster scope), or leave `namespaces` out".into(),
        ));
    }
    None
}
