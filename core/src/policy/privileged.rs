//! Requests that reach past the object they name: running code, minting or borrowing
//! credentials, granting permissions, proxying into the cluster (`docs/kubernetes-semantics.md`,
//! "Privileged requests"). An `allow` rule grants one of these only when it lists the verb and
//! the resource by name; a `*` in either is never enough.

use crate::request::{Attributes, Impersonation};

const RBAC: &str = "rbac.authorization.k8s.io";

/// What makes a request privileged, in words, or `None` for an ordinary request.
pub(crate) fn privilege(a: &Attributes) -> Option<&'static str> {
    if !a.resource_request
        || (a.subresource.is_empty() && matches!(a.verb.as_str(), "get" | "list" | "watch"))
    {
        // Plain reads are never privileged; most requests end here.
        return None;
    }
    let write = matches!(
        a.verb.as_str(),
        "create" | "update" | "patch" | "delete" | "deletecollection"
    );
    match (
        a.api_group.as_str(),
        a.resource.as_str(),
        a.subresource.as_str(),
    ) {
        _ if a.verb == "proxy" || a.subresource == "proxy" => {
            Some("proxying into the cluster reaches endpoints kubeleash cannot see")
        }
        // In any group: the classifier makes every request on these subresources a stream
        // (`create`), as an aggregated API server may serve them too, so they are privileged
        // wherever they are.
        (_, _, "exec" | "attach" | "portforward") => {
            Some("exec, attach and port-forward run code or open connections inside a pod")
        }
        ("", "pods", "ephemeralcontainers") => {
            Some("ephemeral containers add a container to a running pod, as exec does")
        }
        ("", "serviceaccounts", "token") => {
            Some("a token request mints a service account credential")
        }
        (RBAC, "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings", _) if write => {
            Some("writing RBAC roles and bindings can grant permissions (bind, escalate)")
        }
        ("certificates.k8s.io", "certificatesigningrequests", "approval" | "status") => {
            Some("approving or signing a certificate request mints a client credential")
        }
        ("authentication.k8s.io", "tokenreviews", _) => Some("a token review is a token oracle"),
        ("authorization.k8s.io", "subjectaccessreviews" | "localsubjectaccessreviews", _) => {
            Some("a subject access review maps other identities' permissions")
        }
        (
            "admissionregistration.k8s.io" | "apiregistration.k8s.io" | "apiextensions.k8s.io",
            _,
            _,
        ) if write => Some("webhooks, API services and CRDs receive other requests' data"),
        _ if matches!(
            a.verb.as_str(),
            "escalate" | "bind" | "impersonate" | "approve" | "sign"
        ) =>
        {
            Some("escalate, bind, impersonate, approve and sign grant power beyond the object")
        }
        _ => None,
    }
}

/// Secret types whose creation makes the token controller mint a credential.
pub(crate) fn token_secret_type(t: &str) -> bool {
    matches!(
        t,
        "kubernetes.io/service-account-token" | "bootstrap.kubernetes.io/token"
    )
}

/// Built-in resources that are cluster-scoped: a request on one with no namespace reaches into
/// no namespace. Anything not listed (custom resources included) is assumed namespaced, the
/// stricter reading for namespace-restricted deny rules.
pub(crate) fn cluster_scoped(group: &str, resource: &str) -> bool {
    matches!(
        (group, resource),
        (
            "",
            "namespaces" | "nodes" | "persistentvolumes" | "componentstatuses" | "users" | "groups"
        ) | ("authentication.k8s.io", "uids" | "userextras")
            | (RBAC, "clusterroles" | "clusterrolebindings")
            | (
                "storage.k8s.io",
                "storageclasses" | "csidrivers" | "csinodes" | "volumeattachments"
            )
            | ("apiextensions.k8s.io", "customresourcedefinitions")
            | ("apiregistration.k8s.io", "apiservices")
            | (
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations"
                    | "validatingwebhookconfigurations"
                    | "validatingadmissionpolicies"
                    | "validatingadmissionpolicybindings"
                    | "mutatingadmissionpolicies"
                    | "mutatingadmissionpolicybindings"
            )
            | ("certificates.k8s.io", "certificatesigningrequests")
            | ("scheduling.k8s.io", "priorityclasses")
            | ("node.k8s.io", "runtimeclasses")
            | (
                "networking.k8s.io",
                "ingressclasses" | "ipaddresses" | "servicecidrs"
            )
            | ("flowcontrol.apiserver.k8s.io", _)
            | (
                "authentication.k8s.io" | "authorization.k8s.io",
                "tokenreviews"
                    | "selfsubjectreviews"
                    | "selfsubjectaccessreviews"
                    | "selfsubjectrulesreviews"
                    | "subjectaccessreviews"
            )
    )
}

/// The extra authorization checks the API server runs for impersonation headers (semantics
/// "Impersonation and credential headers"): one `impersonate` request per impersonated attribute.
pub(crate) fn impersonation_checks(imp: &Impersonation) -> Vec<Attributes> {
    let check =
        |group: &str, resource: &str, subresource: &str, namespace: &str, name: &str| Attributes {
            resource_request: true,
            verb: "impersonate".into(),
            api_group: group.into(),
            api_version: "v1".into(),
            namespace: namespace.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            name: name.into(),
            path: String::new(),
        };
    let mut out = Vec::new();
    if let Some(user) = &imp.user {
        match split_service_account(user) {
            Some((ns, sa)) => out.push(check("", "serviceaccounts", "", ns, sa)),
            None => out.push(check("", "users", "", "", user)),
        }
    }
    for g in &imp.groups {
        out.push(check("", "groups", "", "", g));
    }
    if let Some(uid) = &imp.uid {
        out.push(check("authentication.k8s.io", "uids", "", "", uid));
    }
    for key in &imp.extra {
        out.push(check("authentication.k8s.io", "userextras", key, "", ""));
    }
    out
}

/// The namespace and name of a service account user name, exactly as the API server's
/// `serviceaccount.SplitUsername` reads it: `system:serviceaccount:<ns>:<name>` with exactly two
/// parts, a namespace that is a DNS label and a name that is a DNS subdomain. Anything else is
/// impersonated as a plain user (`impersonate users`), so it must be checked as one.
fn split_service_account(user: &str) -> Option<(&str, &str)> {
    let (ns, name) = user
        .strip_prefix("system:serviceaccount:")?
        .split_once(':')?;
    (!name.contains(':') && is_dns_label(ns) && is_dns_subdomain(name)).then_some((ns, name))
}

/// RFC 1123 label: at most 63 of `[a-z0-9-]`, starting and ending alphanumeric.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    b.len() <= 63
        && b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

/// RFC 1123 subdomain: at most 253 characters, dot-separated labels of `[a-z0-9-]` that start
/// and end alphanumeric.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            b.first().is_some_and(alnum)
                && b.last().is_some_and(alnum)
                && b.iter().all(|c| alnum(c) || *c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(verb: &str, group: &str, resource: &str, sub: &str) -> Attributes {
        Attributes {
            resource_request: true,
            verb: verb.into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            ..Default::default()
        }
    }

    #[test]
    fn privileged_requests() {
        assert!(privilege(&attrs("create", "", "pods", "exec")).is_some());
        // An aggregated API's stream subresources too: the classifier makes them streams.
        assert!(privilege(&attrs("create", "x.io", "pods", "exec")).is_some());
        assert!(privilege(&attrs("create", "x.io", "vms", "portforward")).is_some());
        assert!(privilege(&attrs("get", "", "nodes", "proxy")).is_some());
        assert!(privilege(&attrs("create", "", "serviceaccounts", "token")).is_some());
        assert!(privilege(&attrs("create", RBAC, "rolebindings", "")).is_some());
        assert!(privilege(&attrs("get", RBAC, "rolebindings", "")).is_none());
        assert!(privilege(&attrs("get", "", "pods", "log")).is_none());
        assert!(privilege(&attrs("create", "", "pods", "")).is_none());
        assert!(
            privilege(&attrs(
                "create",
                "authorization.k8s.io",
                "localsubjectaccessreviews",
                ""
            ))
            .is_some()
        );
    }

    #[test]
    fn malformed_service_account_names_are_users() {
        for user in [
            "system:serviceaccount:dev:sa:extra",
            "system:serviceaccount:dev:",
            "system:serviceaccount::sa",
            "system:serviceaccount:dev:Admin",
            "system:serviceaccount:Dev:sa",
            "system:serviceaccount:dev:-sa",
            "system:serviceaccount:dev:a..b",
            "system:serviceaccount:dev",
        ] {
            let imp = Impersonation {
                user: Some(user.into()),
                ..Default::default()
            };
            let checks = impersonation_checks(&imp);
            assert_eq!(checks.len(), 1);
            assert_eq!(checks[0].resource, "users", "{user}");
            assert_eq!(checks[0].name, user);
            assert_eq!(checks[0].namespace, "");
        }
        let imp = Impersonation {
            user: Some("system:serviceaccount:team-1:ci.bot-2".into()),
            ..Default::default()
        };
        let checks = impersonation_checks(&imp);
        assert_eq!(checks[0].resource, "serviceaccounts");
        assert_eq!(
            (checks[0].namespace.as_str(), checks[0].name.as_str()),
            ("team-1", "ci.bot-2")
        );
    }

    #[test]
    fn service_account_impersonation_is_checked_in_its_namespace() {
        let imp = Impersonation {
            user: Some("system:serviceaccount:kube-system:gc".into()),
            groups: vec!["system:masters".into()],
            ..Default::default()
        };
        let checks = impersonation_checks(&imp);
        assert_eq!(checks.len(), 2);
        assert_eq!(checks[0].resource, "serviceaccounts");
        assert_eq!(checks[0].namespace, "kube-system");
        assert_eq!(checks[0].name, "gc");
        assert_eq!(checks[1].resource, "groups");
    }
}
