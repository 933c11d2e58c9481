//! `spec.approvals.neverWiden`: the requests an approver may approve only exactly as shown,
//! once. Whatever a channel asks for (a name glob, a field range, more uses, a time window),
//! an approval of such a request covers that one request and leaves no grant behind.
//!
//! A policy that says nothing gets [`DEFAULT_FLOOR`]: deletes, exec, attach, port-forward and
//! proxying, Secrets, RBAC, impersonation, token requests and admission configuration. A policy
//! that wants none writes `neverWiden: []`.

use serde::Deserialize;

use super::error::PolicyError;
use super::glob::GlobList;
use super::spec::S;
use crate::request::Attributes;

/// One `neverWiden` entry as written: every list given must match (and-ed); a list left out
/// matches anything. Entries are or-ed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct FloorDoc {
    #[serde(default)]
    pub verbs: Option<Vec<String>>,
    #[serde(default)]
    pub api_groups: Option<Vec<String>>,
    #[serde(default)]
    pub resources: Option<Vec<String>>,
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
}

/// `spec.approvals` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ApprovalsDoc {
    #[serde(default)]
    pub never_widen: Option<Vec<S<FloorDoc>>>,
}

/// One entry of [`DEFAULT_FLOOR`]: `(verbs, apiGroups, resources)`, `None` for any.
pub type FloorRow = (
    Option<&'static [&'static str]>,
    Option<&'static [&'static str]>,
    Option<&'static [&'static str]>,
);

/// The floor a policy gets when it names none, as `(verbs, apiGroups, resources)` (`None` is
/// any): what an agent could turn into more power or data than the one request a person read.
pub const DEFAULT_FLOOR: &[FloorRow] = &[
    (Some(&["delete", "deletecollection"]), None, None),
    (
        Some(&["impersonate", "escalate", "bind", "approve", "sign"]),
        None,
        None,
    ),
    (
        None,
        None,
        Some(&[
            "*/exec",
            "*/attach",
            "*/portforward",
            "*/proxy",
            "*/token",
            "*/ephemeralcontainers",
            "secrets",
            "secrets/*",
        ]),
    ),
    (
        None,
        Some(&[
            "rbac.authorization.k8s.io",
            "admissionregistration.k8s.io",
            "certificates.k8s.io",
            "apiextensions.k8s.io",
        ]),
        None,
    ),
];

/// A compiled entry.
#[derive(Debug)]
pub(crate) struct FloorEntry {
    verbs: Option<GlobList>,
    groups: Option<GlobList>,
    resources: Option<GlobList>,
    namespaces: Option<GlobList>,
    shown: String,
}

impl FloorEntry {
    fn matches(&self, a: &Attributes) -> bool {
        let any = |l: &Option<GlobList>, s: &str| l.as_ref().is_none_or(|l| l.is_match(s));
        a.resource_request
            && any(&self.verbs, &a.verb)
            && any(&self.groups, &a.api_group)
            && any(&self.resources, &a.combined_resource())
            && any(&self.namespaces, &a.namespace)
    }
}

fn entry(
    verbs: Option<&[String]>,
    groups: Option<&[String]>,
    resources: Option<&[String]>,
    namespaces: Option<&[String]>,
) -> Result<FloorEntry, String> {
    let list = |l: Option<&[String]>| {
        l.map(|l| GlobList::new(l.iter().map(String::as_str)))
            .transpose()
    };
    let mut shown = Vec::new();
    for (name, l) in [
        ("verbs", verbs),
        ("apiGroups", groups),
        ("resources", resources),
        ("namespaces", namespaces),
    ] {
        if let Some(l) = l {
            shown.push(format!("{name} [{}]", l.join(", ")));
        }
    }
    Ok(FloorEntry {
        verbs: list(verbs)?,
        groups: list(groups)?,
        resources: list(resources)?,
        namespaces: list(namespaces)?,
        shown: if shown.is_empty() {
            "every request".into()
        } else {
            shown.join(", ")
        },
    })
}

/// The compiled floor: `None` in the document is [`DEFAULT_FLOOR`].
pub(crate) fn compile(
    doc: Option<&ApprovalsDoc>,
    errors: &mut Vec<PolicyError>,
) -> Vec<FloorEntry> {
    let owned =
        |l: Option<&[&str]>| l.map(|l| l.iter().map(|s| (*s).to_string()).collect::<Vec<_>>());
    let Some(entries) = doc.and_then(|d| d.never_widen.as_ref()) else {
        return DEFAULT_FLOOR
            .iter()
            .filter_map(|(v, g, r)| {
                entry(
                    owned(*v).as_deref(),
                    owned(*g).as_deref(),
                    owned(*r).as_deref(),
                    None,
                )
                .ok()
            })
            .collect();
    };
    let mut out = Vec::new();
    for e in entries {
        let d = &e.value;
        if [&d.verbs, &d.api_groups, &d.resources, &d.namespaces]
            .iter()
            .any(|l| l.as_ref().is_some_and(Vec::is_empty))
        {
            errors.push(
                PolicyError::new("never-widen", "a `neverWiden` entry has an empty list")
                    .at(&e.referenced)
                    .help("leave a list out to match anything; an empty one would match nothing"),
            );
            continue;
        }
        match entry(
            d.verbs.as_deref(),
            d.api_groups.as_deref(),
            d.resources.as_deref(),
            d.namespaces.as_deref(),
        ) {
            Ok(f) => out.push(f),
            Err(why) => errors.push(
                PolicyError::new(
                    "never-widen",
                    format!("a `neverWiden` entry has an invalid glob: {why}"),
                )
                .at(&e.referenced),
            ),
        }
    }
    out
}

/// Why `a` may only be approved exactly: the floor entry it falls under, in words.
pub(crate) fn never_widen(floor: &[FloorEntry], a: &Attributes) -> Option<String> {
    floor
        .iter()
        .find(|f| f.matches(a))
        .map(|f| format!("the policy never widens approvals of {}", f.shown))
}
