//! The resource kinds the sandbox serves: one table that discovery, routing, validation and Tables
//! all read, so a kind is added in one place; and [`Served`], that table plus the resources
//! CustomResourceDefinitions add while the sandbox runs.

use std::sync::Arc;

use serde_json::Value;

/// A served resource (`pods`, `deployments`, ...).
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceDef {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [SubresourceDef],
    /// Whether DELETE of one object answers with the object (`ReturnDeletedObject` in the API
    /// server's registry) rather than a `Status`.
    pub returns_deleted_object: bool,
    /// Whether the main resource ignores `status` on writes (it has a `status` subresource).
    pub has_status: bool,
}

/// A subresource as discovery describes it.
#[derive(Debug, PartialEq, Eq)]
pub struct SubresourceDef {
    pub name: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

impl ResourceDef {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The group-qualified resource as the API server writes it in messages: `pods`,
    /// `deployments.apps`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn subresource(&self, name: &str) -> Option<&'static SubresourceDef> {
        self.subresources.iter().find(|s| s.name == name)
    }

    /// Whether a CustomResourceDefinition defines this resource (its kind may then be any name,
    /// `Pod` included, so kind-specific behaviour checks this first).
    pub fn is_custom(&self) -> bool {
        !RESOURCES.iter().any(|r| std::ptr::eq(r, self))
    }
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

const fn sub(
    name: &'static str,
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    verbs: &'static [&'static str],
) -> SubresourceDef {
    SubresourceDef {
        name,
        group,
        version,
        kind,
        verbs,
    }
}

const STATUS_VERBS: &[&str] = &["get", "patch", "update"];
const CONNECT_VERBS: &[&str] = &["create", "get"];

/// Every served resource, in the order discovery lists them.
pub static RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        verbs: ALL_VERBS,
        short_names: &["cm"],
        categories: &[],
        subresources: &[],
        returns_deleted_object: false,
        has_status: false,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        verbs: ALL_VERBS,
        short_names: &["ev"],
        categories: &[],
        subresources: &[],
        returns_deleted_object: false,
        has_status: false,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        verbs: &[
            "create", "delete", "get", "list", "patch", "update", "watch",
        ],
        short_names: &["ns"],
        categories: &[],
        subresources: &[
            sub("finalize", "", "v1", "Namespace", &["update"]),
            sub("status", "", "v1", "Namespace", STATUS_VERBS),
        ],
        returns_deleted_object: true,
        has_status: true,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        verbs: ALL_VERBS,
        short_names: &["po"],
        categories: &["all"],
        subresources: &[
            sub("attach", "", "v1", "PodAttachOptions", CONNECT_VERBS),
            sub("exec", "", "v1", "PodExecOptions", CONNECT_VERBS),
            sub("log", "", "v1", "Pod", &["get"]),
            sub(
                "portforward",
                "",
                "v1",
                "PodPortForwardOptions",
                CONNECT_VERBS,
            ),
            sub("status", "", "v1", "Pod", STATUS_VERBS),
        ],
        returns_deleted_object: true,
        has_status: true,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        verbs: ALL_VERBS,
        short_names: &[],
        categories: &[],
        subresources: &[],
        returns_deleted_object: false,
        has_status: false,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        verbs: ALL_VERBS,
        short_names: &["sa"],
        categories: &[],
        subresources: &[sub(
            "token",
            "authentication.k8s.io",
            "v1",
            "TokenRequest",
            &["create"],
        )],
        returns_deleted_object: true,
        has_status: false,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        verbs: ALL_VERBS,
        short_names: &["svc"],
        categories: &["all"],
        subresources: &[sub("status", "", "v1", "Service", STATUS_VERBS)],
        returns_deleted_object: true,
        has_status: true,
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        verbs: ALL_VERBS,
        short_names: &["deploy"],
        categories: &["all"],
        subresources: &[
            sub("scale", "autoscaling", "v1", "Scale", STATUS_VERBS),
            sub("status", "apps", "v1", "Deployment", STATUS_VERBS),
        ],
        returns_deleted_object: false,
        has_status: true,
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        kind: "ClusterRoleBinding",
        namespaced: false,
        verbs: ALL_VERBS,
        short_names: &[],
        categories: &[],
        subresources: &[],
        returns_deleted_object: false,
        has_status: false,
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterroles",
        singular: "clusterrole",
        kind: "ClusterRole",
        namespaced: false,
        verbs: ALL_VERBS,
        short_names: &[],
        categories: &[],
        subresources: &[],
        returns_deleted_object: false,
        has_status: false,
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "rolebindings",
        singular: "rolebinding",
        kind: "RoleBinding",
        namespaced: true,
        verbs: ALL_VERBS,
        short_names: &[],
        categories: &[],
        subresources: &[],
        returns_deleted_object: false,
        has_status: false,
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "roles",
        singular: "role",
        kind: "Role",
        namespaced: true,
        verbs: ALL_VERBS,
        short_names: &[],
        categories: &[],
        subresources: &[],
        returns_deleted_object: false,
        has_status: false,
    },
    ResourceDef {
        group: "apiextensions.k8s.io",
        version: "v1",
        plural: "customresourcedefinitions",
        singular: "customresourcedefinition",
        kind: "CustomResourceDefinition",
        namespaced: false,
        verbs: ALL_VERBS,
        short_names: &["crd", "crds"],
        categories: &["api-extensions"],
        subresources: &[sub(
            "status",
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            STATUS_VERBS,
        )],
        returns_deleted_object: true,
        has_status: true,
    },
    review(
        "localsubjectaccessreviews",
        "localsubjectaccessreview",
        "LocalSubjectAccessReview",
        true,
    ),
    review(
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        "SelfSubjectAccessReview",
        false,
    ),
    review(
        "selfsubjectrulesreviews",
        "selfsubjectrulesreview",
        "SelfSubjectRulesReview",
        false,
    ),
    review(
        "subjectaccessreviews",
        "subjectaccessreview",
        "SubjectAccessReview",
        false,
    ),
];

/// The authorization.k8s.io reviews: create-only, never stored.
const fn review(
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> ResourceDef {
    ResourceDef {
        group: AUTHORIZATION,
        version: "v1",
        plural,
        singular,
        kind,
        namespaced,
        verbs: &["create"],
        short_names: &[],
        categories: &[],
        subresources: &[],
        returns_deleted_object: false,
        has_status: false,
    }
}

/// The group of the access reviews, answered by `routes::authz` rather than stored.
pub const AUTHORIZATION: &str = "authorization.k8s.io";

/// The built-in resource served at `group/version/plural`, with its index (the store's key).
#[cfg(test)]
pub fn find(group: &str, version: &str, plural: &str) -> Option<(usize, &'static ResourceDef)> {
    RESOURCES
        .iter()
        .enumerate()
        .find(|(_, r)| r.group == group && r.version == version && r.plural == plural)
}

pub fn index_of(kind: &str) -> Option<usize> {
    RESOURCES.iter().position(|r| r.kind == kind)
}

pub fn by_index(index: usize) -> Option<&'static ResourceDef> {
    RESOURCES.get(index)
}

/// A resource a CustomResourceDefinition serves, at one version.
#[derive(Debug, Clone)]
pub struct Custom {
    /// The store index, shared by every version of the CRD (objects are the same whatever the
    /// version they are read at).
    pub index: usize,
    pub def: &'static ResourceDef,
    /// `openAPIV3Schema` of this version, if it has one.
    pub schema: Option<Value>,
}

/// Kubernetes' version order (`version.CompareKubeAwareVersionStrings`): GA before beta before
/// alpha, higher numbers first, anything else last, alphabetically.
pub fn version_rank(v: &str) -> (u8, std::cmp::Reverse<u64>, std::cmp::Reverse<u64>, String) {
    let parsed = v.strip_prefix('v').and_then(|rest| {
        let split = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let major: u64 = rest[..split].parse().ok()?;
        let tail = &rest[split..];
        if tail.is_empty() {
            return Some((0, major, 0));
        }
        for (rank, word) in [(1, "beta"), (2, "alpha")] {
            if let Some(n) = tail.strip_prefix(word) {
                return Some((rank, major, n.parse().ok()?));
            }
        }
        None
    });
    match parsed {
        Some((rank, major, minor)) => (
            rank,
            std::cmp::Reverse(major),
            std::cmp::Reverse(minor),
            String::new(),
        ),
        None => (3, std::cmp::Reverse(0), std::cmp::Reverse(0), v.to_owned()),
    }
}

/// What is served right now: the built-in resources, then those the CustomResourceDefinitions in
/// the store define.
#[derive(Debug, Clone, Default)]
pub struct Served {
    pub custom: Arc<Vec<Custom>>,
}

impl Served {
    /// Every served resource with its store index, in discovery order.
    pub fn all(&self) -> Vec<(usize, &'static ResourceDef)> {
        RESOURCES
            .iter()
            .enumerate()
            .chain(self.custom.iter().map(|c| (c.index, c.def)))
            .collect()
    }

    pub fn find(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<(usize, &'static ResourceDef)> {
        self.all()
            .into_iter()
            .find(|(_, r)| r.group == group && r.version == version && r.plural == plural)
    }

    /// The custom resource behind a definition, if it is one.
    pub fn custom(&self, def: &ResourceDef) -> Option<&Custom> {
        self.custom.iter().find(|c| std::ptr::eq(c.def, def))
    }

    /// Whether `group/version` is served at all (for the difference between an unknown group
    /// and an unknown resource in a known group).
    pub fn serves_group_version(&self, group: &str, version: &str) -> bool {
        self.all()
            .iter()
            .any(|(_, r)| r.group == group && r.version == version)
    }

    /// The served groups, core first, each with its versions, preferred first.
    pub fn groups(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
        for (_, r) in self.all() {
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, versions)) if !versions.contains(&r.version) => versions.push(r.version),
                Some(_) => {}
                None => out.push((r.group, vec![r.version])),
            }
        }
        for (_, versions) in &mut out {
            versions.sort_by_key(|v| version_rank(v));
        }
        out
    }

    /// Whether the resource stored under `index` is namespaced.
    pub fn namespaced(&self, index: usize) -> bool {
        match by_index(index) {
            Some(d) => d.namespaced,
            None => self
                .custom
                .iter()
                .any(|c| c.index == index && c.def.namespaced),
        }
    }
}
