//! Importing RBAC Roles and ClusterRoles as allow rules: the result compiles, grants what the
//! roles grant, and never more (a `*` role still does not reach privileged requests).
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests"
)]

use kubeleash_core::policy::rbac::{ImportError, ImportOptions, import};
use kubeleash_core::policy::{Effect, Identity, Policy};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn agents() -> ImportOptions {
    ImportOptions {
        groups: vec!["ai-agents".into()],
        ..Default::default()
    }
}

fn compile(yaml: &str, opts: &ImportOptions) -> Result<Policy, Box<dyn std::error::Error>> {
    let text = import(yaml, opts)?;
    Ok(Policy::from_yaml(&text).map_err(|e| format!("{e}\n{text}"))?)
}

fn effect(
    p: &Policy,
    id: &Identity,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Effect {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap_or(http::header::ACCEPT),
            http::HeaderValue::from_str(v).unwrap_or(http::HeaderValue::from_static("")),
        );
    }
    p.evaluate(id, method, target, &map, None).decision.effect
}

fn agent() -> Identity {
    Identity::new("agent-1", ["ai-agents"])
}

const ROLE: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader, namespace: dev}
rules:
  - apiGroups: [""]
    resources: [pods, pods/log]
    verbs: [get, list, watch]
"#;

#[test]
fn a_role_applies_in_its_namespace_only() -> TestResult {
    let p = compile(ROLE, &agents())?;
    assert_eq!(p.rule_count(), 1);
    let a = agent();
    assert_eq!(
        effect(&p, &a, "GET", "/api/v1/namespaces/dev/pods", &[]),
        Effect::Allow
    );
    assert_eq!(
        effect(&p, &a, "GET", "/api/v1/namespaces/dev/pods/web/log", &[]),
        Effect::Allow
    );
    assert_eq!(
        effect(&p, &a, "GET", "/api/v1/namespaces/prod/pods", &[]),
        Effect::Deny
    );
    assert_eq!(
        effect(&p, &a, "GET", "/api/v1/pods", &[]),
        Effect::Deny,
        "all namespaces"
    );
    assert_eq!(
        effect(&p, &a, "DELETE", "/api/v1/namespaces/dev/pods/web", &[]),
        Effect::Deny
    );
    assert_eq!(
        effect(
            &p,
            &Identity::new("someone", ["others"]),
            "GET",
            "/api/v1/namespaces/dev/pods",
            &[]
        ),
        Effect::Deny,
        "the rules apply to the imported subjects only"
    );
    Ok(())
}

#[test]
fn a_cluster_role_applies_everywhere() -> TestResult {
    let p = compile(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: deploy-reader, namespace: ignored}
rules:
  - apiGroups: [apps]
    resources: [deployments]
    verbs: [get, list]
"#,
        &agents(),
    )?;
    let a = agent();
    for target in [
        "/apis/apps/v1/namespaces/dev/deployments",
        "/apis/apps/v1/namespaces/prod/deployments/web",
        "/apis/apps/v1/deployments",
    ] {
        assert_eq!(
            effect(&p, &a, "GET", target, &[]),
            Effect::Allow,
            "{target}"
        );
    }
    assert_eq!(
        effect(&p, &a, "GET", "/api/v1/namespaces/dev/pods", &[]),
        Effect::Deny
    );
    Ok(())
}

#[test]
fn lists_and_several_documents() -> TestResult {
    let yaml = r#"
apiVersion: v1
kind: List
items:
  - apiVersion: rbac.authorization.k8s.io/v1
    kind: Role
    metadata: {name: cm, namespace: dev}
    rules:
      - {apiGroups: [""], resources: [configmaps], verbs: [get]}
  - apiVersion: rbac.authorization.k8s.io/v1
    kind: ClusterRole
    metadata: {name: nodes}
    rules:
      - {apiGroups: [""], resources: [nodes], verbs: [list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleList
items:
  - metadata: {name: svc, namespace: prod}
    rules:
      - {apiGroups: [""], resources: [services], verbs: [get]}
---
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: jobs}
rules:
  - {apiGroups: [batch], resources: [jobs], verbs: [create]}
  - {apiGroups: [batch], resources: [cronjobs], verbs: [create]}
"#;
    let p = compile(yaml, &agents())?;
    assert_eq!(p.rule_count(), 5);
    let a = agent();
    assert_eq!(
        effect(&p, &a, "GET", "/api/v1/namespaces/dev/configmaps/x", &[]),
        Effect::Allow
    );
    assert_eq!(
        effect(&p, &a, "GET", "/api/v1/namespaces/prod/configmaps/x", &[]),
        Effect::Deny
    );
    assert_eq!(effect(&p, &a, "GET", "/api/v1/nodes", &[]), Effect::Allow);
    assert_eq!(
        effect(&p, &a, "GET", "/api/v1/namespaces/prod/services/s", &[]),
        Effect::Allow
    );
    assert_eq!(
        effect(&p, &a, "POST", "/apis/batch/v1/namespaces/x/cronjobs", &[]),
        Effect::Allow
    );
    Ok(())
}

#[test]
fn resource_names_become_names_and_stay_exact() -> TestResult {
    let p = compile(
        r#"
kind: Role
metadata: {name: one-secret, namespace: dev}
rules:
  - apiGroups: [""]
    resources: [secrets]
    resourceNames: [app-db]
    verbs: [get, list, watch]
"#,
        &agents(),
    )?;
    let a = agent();
    assert_eq!(
        effect(&p, &a, "GET", "/api/v1/namespaces/dev/secrets/app-db", &[]),
        Effect::Allow
    );
    assert_eq!(
        effect(&p, &a, "GET", "/api/v1/namespaces/dev/secrets/app-db2", &[]),
        Effect::Deny
    );
    assert_eq!(
        effect(&p, &a, "GET", "/api/v1/namespaces/dev/secrets", &[]),
        Effect::Deny,
        "a list has no name"
    );
    assert_eq!(
        effect(
            &p,
            &a,
            "GET",
            "/api/v1/namespaces/dev/secrets?fieldSelector=metadata.name%3Dapp-db",
            &[]
        ),
        Effect::Allow,
        "a list pinned to the name, as RBAC allows it"
    );
    Ok(())
}

#[test]
fn non_resource_urls() -> TestResult {
    let p = compile(
        r#"
kind: ClusterRole
metadata: {name: health}
rules:
  - nonResourceURLs: [/healthz, "/healthz/*", /version]
    verbs: [get]
"#,
        &ImportOptions::default(),
    )?;
    let anyone = Identity::default();
    assert_eq!(
        effect(&p, &anyone, "GET", "/healthz/etcd", &[]),
        Effect::Allow
    );
    assert_eq!(effect(&p, &anyone, "GET", "/version", &[]), Effect::Allow);
    assert_eq!(effect(&p, &anyone, "POST", "/version", &[]), Effect::Deny);
    assert_eq!(effect(&p, &anyone, "GET", "/metrics", &[]), Effect::Deny);
    Ok(())
}

const CLUSTER_ADMIN_LIKE: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: everything}
rules:
  - apiGroups: ["*"]
    resources: ["*"]
    verbs: ["*"]
  - nonResourceURLs: ["*"]
    verbs: ["*"]
"#;

#[test]
fn a_star_role_does_not_reach_privileged_requests() -> TestResult {
    let p = compile(CLUSTER_ADMIN_LIKE, &agents())?;
    let a = agent();
    for (method, target, headers) in [
        (
            "POST",
            "/api/v1/namespaces/dev/pods/web/exec?command=sh",
            &[][..],
        ),
        (
            "GET",
            "/api/v1/namespaces/dev/pods/web/exec?command=sh",
            &[("Upgrade", "websocket"), ("Connection", "Upgrade")][..],
        ),
        ("POST", "/api/v1/namespaces/dev/pods/web/attach", &[][..]),
        (
            "POST",
            "/api/v1/namespaces/dev/pods/web/portforward",
            &[][..],
        ),
        (
            "POST",
            "/api/v1/namespaces/dev/serviceaccounts/builder/token",
            &[][..],
        ),
        ("GET", "/api/v1/nodes/node-1/proxy/pods", &[][..]),
        (
            "GET",
            "/api/v1/namespaces/dev/services/http:web:80/proxy/",
            &[][..],
        ),
        (
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            &[][..],
        ),
        (
            "POST",
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
            &[][..],
        ),
        (
            "GET",
            "/api/v1/namespaces/dev/pods",
            &[("Impersonate-User", "admin")][..],
        ),
        (
            "GET",
            "/api/v1/namespaces/dev/pods",
            &[("Impersonate-User", "system:serviceaccount:kube-system:gc")][..],
        ),
        (
            "GET",
            "/api/v1/namespaces/dev/pods",
            &[("X-Remote-User", "admin")][..],
        ),
    ] {
        assert_eq!(
            effect(&p, &a, method, target, headers),
            Effect::Deny,
            "{method} {target} {headers:?}"
        );
    }
    for (method, target) in [
        ("GET", "/api/v1/namespaces/dev/pods"),
        ("GET", "/api/v1/namespaces/dev/pods/web/log"),
        ("GET", "/apis/apps/v1/deployments"),
        ("GET", "/api/v1/nodes/node-1"),
        (
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        ),
        ("DELETE", "/api/v1/namespaces/dev/configmaps/c"),
        ("GET", "/version"),
        ("GET", "/metrics"),
    ] {
        assert_eq!(
            effect(&p, &a, method, target, &[]),
            Effect::Allow,
            "{method} {target}"
        );
    }
    Ok(())
}

#[test]
fn a_role_without_a_namespace_is_refused() {
    let got = import(
        "kind: Role\nmetadata: {name: reader}\nrules:\n  - {apiGroups: [\"\"], resources: [pods], verbs: [get]}\n",
        &agents(),
    );
    assert_eq!(got, Err(ImportError::RoleWithoutNamespace("reader".into())));
    let msg = got.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("`reader`") && msg.contains("namespace"),
        "{msg}"
    );
}

#[test]
fn a_resource_name_with_a_star_is_refused() {
    let got = import(
        "kind: ClusterRole\nmetadata: {name: odd}\nrules:\n  - {apiGroups: [\"\"], resources: [secrets], resourceNames: [\"app-*\"], verbs: [get]}\n",
        &agents(),
    );
    assert!(
        matches!(&got, Err(ImportError::Wildcard { value, .. }) if value == "app-*"),
        "{got:?}"
    );
}

#[test]
fn rules_that_match_nothing_are_left_out() -> TestResult {
    let p = compile(
        r#"
kind: ClusterRole
metadata: {name: partial}
rules:
  - {apiGroups: [], resources: [pods], verbs: [get]}
  - {apiGroups: [""], resources: [], verbs: [get]}
  - {apiGroups: [""], resources: [pods], verbs: []}
  - {apiGroups: [""], resources: [pods], verbs: [get]}
"#,
        &agents(),
    )?;
    assert_eq!(p.rule_count(), 1);
    Ok(())
}

#[test]
fn colliding_rule_names_are_made_unique() -> TestResult {
    let yaml = r#"
kind: Role
metadata: {name: a-b, namespace: c}
rules: [{apiGroups: [""], resources: [pods], verbs: [get]}]
---
kind: Role
metadata: {name: b, namespace: c-a}
rules: [{apiGroups: [""], resources: [pods], verbs: [list]}]
---
kind: ClusterRole
metadata: {name: twice}
rules: [{apiGroups: [""], resources: [nodes], verbs: [get]}]
---
kind: ClusterRole
metadata: {name: twice}
rules: [{apiGroups: [""], resources: [nodes], verbs: [get]}]
"#;
    let p = compile(yaml, &agents())?;
    assert_eq!(p.rule_count(), 4);
    Ok(())
}

#[test]
fn other_kinds_and_bad_yaml_are_refused() {
    assert_eq!(
        import("kind: RoleBinding\nmetadata: {name: x}\n", &agents()),
        Err(ImportError::Kind("RoleBinding".into()))
    );
    assert!(matches!(
        import("kind: [", &agents()),
        Err(ImportError::Yaml(_))
    ));
}

#[test]
fn policy_name_and_subjects() -> TestResult {
    let opts = ImportOptions {
        policy_name: "team-a".into(),
        users: vec!["alice".into()],
        groups: vec![],
    };
    let p = compile(ROLE, &opts)?;
    assert_eq!(p.name(), Some("team-a"));
    assert_eq!(
        effect(
            &p,
            &Identity::new("alice", Vec::<String>::new()),
            "GET",
            "/api/v1/namespaces/dev/pods",
            &[]
        ),
        Effect::Allow
    );
    assert_eq!(
        effect(&p, &agent(), "GET", "/api/v1/namespaces/dev/pods", &[]),
        Effect::Deny
    );
    let everyone = compile(ROLE, &ImportOptions::default())?;
    assert_eq!(everyone.name(), Some("imported-rbac"));
    assert_eq!(
        effect(
            &everyone,
            &Identity::default(),
            "GET",
            "/api/v1/namespaces/dev/pods",
            &[]
        ),
        Effect::Allow
    );
    Ok(())
}

#[test]
fn non_resource_urls_in_a_role_grant_nothing() -> TestResult {
    // The API server refuses them in a Role; imported, they would apply everywhere.
    let p = compile(
        r#"
kind: Role
metadata: {name: odd, namespace: dev}
rules:
  - {nonResourceURLs: ["*"], verbs: ["*"]}
  - {apiGroups: [""], resources: [pods], verbs: [get]}
"#,
        &agents(),
    )?;
    assert_eq!(p.rule_count(), 1);
    assert_eq!(effect(&p, &agent(), "GET", "/metrics", &[]), Effect::Deny);
    Ok(())
}

#[test]
fn import_errors_are_one_line() {
    let e = import(
        "kind: Role\nmetadata: {name: r, namespace: dev}\nrules:\n  - verbs: [get\n",
        &agents(),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.starts_with("rbac input is not valid YAML: "), "{e}");
    assert!(!e.contains('\n'), "{e:?}");
    let e = import(
        "kind: List\nitems:\n  - metadata: {name: r}\n    rules: []\n",
        &agents(),
    );
    assert_eq!(
        e,
        Err(ImportError::Kind(String::new())),
        "a List item needs a kind"
    );
}
