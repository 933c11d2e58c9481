//! Import RBAC Roles and ClusterRoles as allow rules, so a team can start from the permissions
//! it already grants and tighten from there.
//!
//! A Role's rules apply in its own namespace (a Role without one is refused); a ClusterRole's
//! everywhere. Rules that match nothing in RBAC (no verbs, no groups or no resources) are left
//! out, and resource names are literal in RBAC, so one holding `*` is refused. RBAC `*` verbs and
//! resources carry over unchanged, which under kubeleash's semantics never grants privileged
//! requests (exec, token requests, RBAC writes, ...): those need a rule that names them.
//!
//! ```
//! use kubeleash_core::policy::{Policy, rbac};
//!
//! let roles = r#"
//! apiVersion: rbac.authorization.k8s.io/v1
//! kind: Role
//! metadata: {name: reader, namespace: dev}
//! rules:
//!   - apiGroups: [""]
//!     resources: [pods, pods/log]
//!     verbs: [get, list, watch]
//! "#;
//! let opts = rbac::ImportOptions { groups: vec!["ai-agents".into()], ..Default::default() };
//! let text = rbac::import(roles, &opts).map_err(|e| e.to_string())?;
//! let policy = Policy::from_yaml(&text).map_err(|e| e.to_string())?;
//! assert_eq!(policy.rule_count(), 1);
//! # Ok::<(), String>(())
//! ```

use std::collections::HashSet;

use serde::Deserialize;

use super::compile::API_VERSION;

/// Who the imported rules apply to and what the policy is called.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// `metadata.name` of the generated policy; `imported-rbac` when empty.
    pub policy_name: String,
    /// Users the rules apply to.
    pub users: Vec<String>,
    /// Groups the rules apply to. With neither users nor groups, the rules apply to everyone.
    pub groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoleDoc {
    // The API server leaves `kind` out of the items of a RoleList or ClusterRoleList.
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    rules: Vec<RbacRule>,
    #[serde(default)]
    items: Vec<RoleDoc>,
}

#[derive(Debug, Default, Deserialize)]
struct Meta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RbacRule {
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    api_groups: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
}

/// Why RBAC objects could not be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The input is not YAML of Kubernetes objects.
    #[error("rbac input is not valid YAML: {0}")]
    Yaml(String),
    /// An object is neither a Role, a ClusterRole, nor a List of them.
    #[error("cannot import an object of kind `{0}`; only Role, ClusterRole and List are imported")]
    Kind(String),
    /// A Role has no `metadata.namespace`. Its rules apply only in its namespace, and importing
    /// them without one would grant them in every namespace.
    #[error("role `{0}` has no metadata.namespace, so the namespace its rules apply in is unknown")]
    RoleWithoutNamespace(String),
    /// A resource name or namespace holds `*`, which RBAC matches literally and a policy would
    /// read as a wildcard, granting more than the role does.
    #[error(
        "`{value}` in `{role}` holds `*`, which RBAC matches literally but a policy reads as a wildcard"
    )]
    Wildcard {
        /// The role, as `kind/name`.
        role: String,
        /// The resource name or namespace.
        value: String,
    },
}

fn list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

/// Convert YAML holding Roles, ClusterRoles (or Lists of them, several documents allowed) into
/// the text of a policy with one allow rule per RBAC rule.
pub fn import(yaml: &str, opts: &ImportOptions) -> Result<String, ImportError> {
    let docs: Vec<Option<RoleDoc>> = serde_saphyr::from_multiple(yaml).map_err(|e| {
        // The parser's text goes on to quote the input over several lines.
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        ImportError::Yaml(first.trim_start_matches("error: ").to_string())
    })?;
    let mut roles = Vec::new();
    for doc in docs.into_iter().flatten() {
        flatten(doc, &mut roles)?;
    }
    let name = if opts.policy_name.is_empty() {
        "imported-rbac"
    } else {
        &opts.policy_name
    };
    let mut out = format!(
        "apiVersion: {API_VERSION}\nkind: Policy\nmetadata: {{name: {}}}\nspec:\n  rules:\n",
        serde_json::to_string(name).unwrap_or_default()
    );
    let subjects = match (opts.users.is_empty(), opts.groups.is_empty()) {
        (true, true) => None,
        _ => Some(format!(
            "{{users: {}, groups: {}}}",
            list(&opts.users),
            list(&opts.groups)
        )),
    };
    let mut used = HashSet::new();
    for role in &roles {
        let namespace = if role.kind == "Role" {
            match role.metadata.namespace.as_deref() {
                Some(ns) if !ns.is_empty() => Some(ns.to_string()),
                _ => {
                    return Err(ImportError::RoleWithoutNamespace(
                        role.metadata.name.clone(),
                    ));
                }
            }
        } else {
            None
        };
        let literal = |value: &str| {
            if value.contains('*') {
                Err(ImportError::Wildcard {
                    role: format!("{}/{}", role.kind, role.metadata.name),
                    value: value.to_string(),
                })
            } else {
                Ok(())
            }
        };
        if let Some(ns) = &namespace {
            literal(ns)?;
        }
        for (i, r) in role.rules.iter().enumerate() {
            // The API server refuses nonResourceURLs in a Role; imported, they would apply in
            // every namespace.
            let non_resource_urls: &[String] = if namespace.is_some() {
                &[]
            } else {
                &r.non_resource_urls
            };
            if grants_nothing(r, non_resource_urls) {
                continue;
            }
            for name in &r.resource_names {
                literal(name)?;
            }
            let base = format!(
                "{}-{}{}-{i}",
                role.kind.to_lowercase(),
                namespace
                    .as_deref()
                    .map(|n| format!("{n}-"))
                    .unwrap_or_default(),
                role.metadata.name
            );
            // Names can collide (role `a-b` in `c`, role `b` in `c-a`; one role listed twice);
            // a policy's rule names must be unique.
            let mut rule_name = base.clone();
            let mut n = 1;
            while !used.insert(rule_name.clone()) {
                n += 1;
                rule_name = format!("{base}-{n}");
            }
            out.push_str(&format!(
                "    - name: {}\n      effect: allow\n",
                serde_json::to_string(&rule_name).unwrap_or_default()
            ));
            if let Some(s) = &subjects {
                out.push_str(&format!("      subjects: {s}\n"));
            }
            out.push_str(&format!("      verbs: {}\n", list(&r.verbs)));
            if non_resource_urls.is_empty() {
                out.push_str(&format!("      apiGroups: {}\n", list(&r.api_groups)));
                out.push_str(&format!("      resources: {}\n", list(&r.resources)));
                if let Some(ns) = &namespace {
                    out.push_str(&format!(
                        "      namespaces: {}\n",
                        list(std::slice::from_ref(ns))
                    ));
                }
                if !r.resource_names.is_empty() {
                    out.push_str(&format!("      names: {}\n", list(&r.resource_names)));
                }
            } else {
                out.push_str(&format!(
                    "      nonResourceURLs: {}\n",
                    list(non_resource_urls)
                ));
            }
        }
    }
    Ok(out)
}

/// An RBAC rule that can match no request: no verbs, or a resource rule without groups or
/// resources. Importing it would give a rule that does not compile, and dropping it grants
/// nothing.
fn grants_nothing(r: &RbacRule, non_resource_urls: &[String]) -> bool {
    r.verbs.is_empty()
        || (non_resource_urls.is_empty() && (r.api_groups.is_empty() || r.resources.is_empty()))
}

fn flatten(doc: RoleDoc, out: &mut Vec<RoleDoc>) -> Result<(), ImportError> {
    match doc.kind.as_str() {
        "Role" | "ClusterRole" => out.push(doc),
        "List" | "RoleList" | "ClusterRoleList" => {
            let kind = doc.kind.trim_end_matches("List").to_string();
            for mut item in doc.items {
                if item.kind.is_empty() {
                    item.kind = kind.clone();
                }
                flatten(item, out)?;
            }
        }
        other => return Err(ImportError::Kind(other.to_string())),
    }
    Ok(())
}
