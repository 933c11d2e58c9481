//! Access reviews answered from the policy (`kubectl auth can-i`, `--list`).
//!
//! The invariant: what a review says of a request without a body is what the policy decides
//! for that request when it is sent. A `yes` the request then fails, or a `no` the request then
//! passes, would teach an agent the wrong leash.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use http::HeaderMap;
use kubeleash_core::access_review::{self, Review};
use kubeleash_core::policy::{Effect, Identity, Policy};
use kubeleash_core::request::{Attributes, classify};
use proptest::prelude::*;
use serde_json::{Value, json};

const POLICY: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  rules:
    - {name: read-dev, effect: allow, subjects: {groups: [ai-agents]}, verbs: [get, list, watch], apiGroups: ["", apps], resources: [pods, pods/log, deployments, secrets, configmaps], namespaces: [dev, "team-*"]}
    - {name: edit-configmaps, effect: allow, verbs: [create, update, patch, delete], resources: [configmaps], namespaces: [dev]}
    - {name: everything-in-sandbox, effect: allow, verbs: ["*"], apiGroups: ["*"], resources: ["*"], namespaces: [sandbox]}
    - {name: protect-production, effect: deny, reason: production is off limits, verbs: [delete, deletecollection, update, patch], resources: [namespaces], names: [prod]}
    - {name: no-prod, effect: deny, verbs: ["*"], apiGroups: ["*"], resources: ["*"], namespaces: [prod]}
    - {name: bindings-need-a-human, effect: approve, verbs: [create, update, patch, delete], apiGroups: [rbac.authorization.k8s.io], resources: [rolebindings, clusterrolebindings]}
    - {name: no-cluster-admin, effect: deny, verbs: [create], apiGroups: [rbac.authorization.k8s.io], resources: [clusterrolebindings], when: [{path: "$.roleRef.name", equals: cluster-admin}]}
    - {name: small-scale, effect: allow, verbs: [patch], apiGroups: [apps], resources: [deployments/scale], namespaces: [dev], when: [{path: "$.spec.replicas", between: [0, 4]}]}
    - {name: named-reads, effect: allow, verbs: [get], resources: [secrets], namespaces: [staging], names: ["app-*", exact]}
    - {name: cluster-reads, effect: allow, verbs: [get, list], resources: [nodes, namespaces], namespaces: [""]}
    - {name: exec-in-dev, effect: allow, verbs: [create], resources: [pods/exec], namespaces: [dev]}
    - {name: discovery, effect: allow, verbs: [get], nonResourceURLs: [/api, "/api/*", /version]}
"#;

fn policy() -> Policy {
    static POLICY_COMPILED: std::sync::LazyLock<Policy> =
        std::sync::LazyLock::new(|| Policy::from_yaml(POLICY).unwrap());
    POLICY_COMPILED.clone()
}

fn agent() -> Identity {
    Identity::new("agent-1", ["ai-agents"])
}

fn attrs(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
    Attributes {
        resource_request: true,
        verb: verb.into(),
        api_group: group.into(),
        api_version: "v1".into(),
        namespace: ns.into(),
        resource: resource.into(),
        subresource: sub.into(),
        name: name.into(),
        path: String::new(),
    }
}

fn json_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", "application/json".parse().unwrap());
    h
}

fn review_request(kind: &str) -> kubeleash_core::request::Request {
    let resource = if kind == "SelfSubjectAccessReview" {
        "selfsubjectaccessreviews"
    } else {
        "selfsubjectrulesreviews"
    };
    classify(
        "POST",
        &format!("/apis/authorization.k8s.io/v1/{resource}"),
        &json_headers(),
    )
    .unwrap()
}

fn ask(spec: Value) -> Value {
    let body = json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1", "spec": spec});
    let req = review_request("SelfSubjectAccessReview");
    access_review::answer(&policy(), &agent(), &req, body.to_string().as_bytes())
        .unwrap()
        .object
}

#[test]
fn only_self_reviews_are_answered() {
    let h = json_headers();
    for (target, want) in [
        (
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            Some(Review::Access),
        ),
        // Not served by current API servers: theirs to answer (404).
        (
            "/apis/authorization.k8s.io/v1beta1/selfsubjectaccessreviews",
            None,
        ),
        (
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            Some(Review::Whoami),
        ),
        (
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            Some(Review::Rules),
        ),
        // Reviews about someone else stay the policy's to decide (privileged).
        ("/apis/authorization.k8s.io/v1/subjectaccessreviews", None),
        (
            "/apis/authorization.k8s.io/v1/namespaces/dev/localsubjectaccessreviews",
            None,
        ),
        ("/apis/example.com/v1/selfsubjectaccessreviews", None),
    ] {
        let req = classify("POST", target, &h).unwrap();
        assert_eq!(access_review::answers(&req.attributes), want, "{target}");
    }
    let get = classify(
        "GET",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        &h,
    )
    .unwrap();
    assert_eq!(access_review::answers(&get.attributes), None);
}

#[test]
fn an_access_review_says_allow_deny_or_approval_with_the_rule() {
    let yes = ask(
        json!({"resourceAttributes": {"namespace": "dev", "verb": "list", "resource": "pods"}}),
    );
    assert_eq!(yes["status"]["allowed"], true, "{yes}");
    assert!(yes["status"].get("denied").is_none());
    assert!(
        yes["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("rule \"read-dev\" allows list on pods in namespace dev"),
        "{yes}"
    );
    // The spec comes back as sent, with the kind and apiVersion.
    assert_eq!(yes["spec"]["resourceAttributes"]["namespace"], "dev");
    assert_eq!(yes["kind"], "SelfSubjectAccessReview");
    assert_eq!(yes["apiVersion"], "authorization.k8s.io/v1");

    let no = ask(
        json!({"resourceAttributes": {"namespace": "prod", "verb": "get", "resource": "secrets"}}),
    );
    assert_eq!(
        (
            no["status"]["allowed"].clone(),
            no["status"]["denied"].clone()
        ),
        (json!(false), json!(true))
    );
    assert!(
        no["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("rule \"no-prod\" denies"),
        "{no}"
    );

    let default = ask(
        json!({"resourceAttributes": {"namespace": "dev", "verb": "delete", "resource": "pods", "name": "web"}}),
    );
    assert_eq!(default["status"]["denied"], true);
    assert!(
        default["status"]["reason"].as_str().unwrap().contains(
            "no rule allows delete on pods/web in namespace dev for user agent-1 in group ai-agents"
        ),
        "{default}"
    );

    let held = ask(
        json!({"resourceAttributes": {"namespace": "dev", "verb": "create", "group": "rbac.authorization.k8s.io", "resource": "rolebindings"}}),
    );
    assert_eq!(held["status"]["allowed"], false, "{held}");
    assert!(held["status"].get("denied").is_none(), "{held}");
    let reason = held["status"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("a person's approval") && reason.contains("bindings-need-a-human"),
        "{reason}"
    );

    // A conditioned deny that a body could bring in is named.
    let crb = ask(
        json!({"resourceAttributes": {"verb": "create", "group": "rbac.authorization.k8s.io", "resource": "clusterrolebindings"}}),
    );
    let reason = crb["status"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(
            "rule \"no-cluster-admin\" denies it when the request's body meets its conditions"
        ),
        "{reason}"
    );

    // A conditioned allow under the default deny: not denied outright, and the condition said.
    let scale = ask(
        json!({"resourceAttributes": {"namespace": "dev", "verb": "patch", "group": "apps", "resource": "deployments", "subresource": "scale", "name": "web"}}),
    );
    assert_eq!(scale["status"]["allowed"], false);
    assert!(scale["status"].get("denied").is_none(), "{scale}");
    assert!(
        scale["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("rule \"small-scale\" allows it when"),
        "{scale}"
    );

    // Asking whether it may ask: yes, whatever the policy (kubeleash answers these itself).
    let meta = ask(
        json!({"resourceAttributes": {"verb": "create", "group": "authorization.k8s.io", "resource": "selfsubjectaccessreviews"}}),
    );
    assert_eq!(meta["status"]["allowed"], true, "{meta}");

    // Non-resource.
    let api = ask(json!({"nonResourceAttributes": {"path": "/api/v1", "verb": "get"}}));
    assert_eq!(api["status"]["allowed"], true, "{api}");
    let logs = ask(json!({"nonResourceAttributes": {"path": "/logs", "verb": "get"}}));
    assert_eq!(logs["status"]["allowed"], false, "{logs}");
}

#[test]
fn a_star_never_says_yes_to_a_privileged_request() {
    // `everything-in-sandbox` has `*`, which never grants exec or RBAC writes.
    for (verb, group, resource, sub) in [
        ("create", "", "pods", "exec"),
        ("create", "", "serviceaccounts", "token"),
        ("create", "rbac.authorization.k8s.io", "roles", ""),
        ("impersonate", "", "serviceaccounts", ""),
    ] {
        let a =
            policy().review_access(&agent(), &attrs(verb, group, resource, sub, "sandbox", "x"));
        assert!(!a.allowed, "{verb} {resource}/{sub}: {a:?}");
        assert!(a.reason.contains("only through `*`"), "{}", a.reason);
    }
    // Named by a rule: yes.
    let exec = policy().review_access(&agent(), &attrs("create", "", "pods", "exec", "dev", "web"));
    assert!(exec.allowed, "{exec:?}");
}

#[test]
fn a_question_with_a_star_is_never_a_yes() {
    // `everything-in-sandbox` allows `*` on `*` there, and no-prod denies everything in prod:
    // neither makes `can-i '*' '*'` a yes, since a `*` covers privileged requests too.
    for (verb, group, resource, sub) in [
        ("*", "*", "*", ""),
        ("get", "", "*", ""),
        ("*", "", "configmaps", ""),
        ("get", "*", "pods", ""),
        ("get", "", "pods", "*"),
    ] {
        let a = policy().review_access(&agent(), &attrs(verb, group, resource, sub, "sandbox", ""));
        assert!(
            !a.allowed && !a.denied,
            "{verb} {group} {resource} {sub}: {a:?}"
        );
        assert!(
            a.reason.contains("does not answer yes to a `*`"),
            "{}",
            a.reason
        );
    }
}

#[test]
fn a_question_about_a_cluster_scoped_resource_ignores_its_namespace() {
    // `cluster-reads` allows get on nodes at cluster scope; kubectl sends its context's
    // namespace along, which the request itself does not carry.
    let a = policy().review_access(&agent(), &attrs("get", "", "nodes", "", "dev", "n1"));
    assert!(a.allowed, "{a:?}");
    // A namespace is its own namespace.
    let a = policy().review_access(
        &agent(),
        &attrs("delete", "", "namespaces", "", "default", "prod"),
    );
    assert!(a.denied && a.reason.contains("protect-production"), "{a:?}");
}

#[test]
fn malformed_reviews_get_the_api_servers_errors() {
    let req = review_request("SelfSubjectAccessReview");
    let p = policy();
    let answer = |body: &str| access_review::answer(&p, &agent(), &req, body.as_bytes());
    let both = answer(r#"{"spec":{"resourceAttributes":{"verb":"get"},"nonResourceAttributes":{"verb":"get","path":"/"}}}"#).unwrap_err();
    assert_eq!(both.code(), 422);
    let neither = answer(r#"{"spec":{}}"#).unwrap_err();
    assert_eq!(neither.code(), 422);
    let text = String::from_utf8(neither.to_json()).unwrap();
    assert!(
        text.contains("exactly one of nonResourceAttributes or resourceAttributes"),
        "{text}"
    );
    let wrong =
        answer(r#"{"kind":"Pod","spec":{"resourceAttributes":{"verb":"get"}}}"#).unwrap_err();
    assert_eq!(wrong.code(), 400);
    assert_eq!(answer("{").unwrap_err().code(), 400);
    assert_eq!(answer("").unwrap_err().code(), 400);
    // A duplicate key is refused as everywhere else (two readers could disagree).
    let dup =
        answer(r#"{"spec":{"resourceAttributes":{"verb":"get","verb":"delete"}}}"#).unwrap_err();
    assert_eq!(dup.code(), 400);
    let rules = review_request("SelfSubjectRulesReview");
    let no_ns = access_review::answer(&p, &agent(), &rules, br#"{"spec":{}}"#).unwrap_err();
    assert_eq!(no_ns.code(), 400);
    assert!(
        String::from_utf8(no_ns.to_json())
            .unwrap()
            .contains("no namespace on request")
    );
}

#[test]
fn kubectls_protobuf_reviews_are_read() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/testdata/protobuf");
    let mut h = HeaderMap::new();
    h.insert(
        "content-type",
        "application/vnd.kubernetes.protobuf".parse().unwrap(),
    );
    let p = Policy::from_yaml(
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - {name: pb, effect: allow, verbs: [get], resources: [secrets], namespaces: [pbtest]}\n",
    )
    .unwrap();
    let body = std::fs::read(format!("{dir}/selfsubjectaccessreview.pb")).unwrap();
    let req = classify(
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        &h,
    )
    .unwrap();
    let a = access_review::answer(&p, &agent(), &req, &body).unwrap();
    assert_eq!(a.object["status"]["allowed"], true, "{}", a.object);
    assert_eq!(
        a.object["spec"]["resourceAttributes"]["namespace"],
        "pbtest"
    );
    let body = std::fs::read(format!("{dir}/selfsubjectrulesreview.pb")).unwrap();
    let req = classify(
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        &h,
    )
    .unwrap();
    let r = access_review::answer(&p, &agent(), &req, &body).unwrap();
    let rules = r.object["status"]["resourceRules"].as_array().unwrap();
    assert!(
        rules
            .iter()
            .any(|r| r["resources"] == json!(["secrets"]) && r["verbs"] == json!(["get"])),
        "{}",
        r.object
    );
}

#[test]
fn a_rules_review_lists_what_rbac_can_say_and_notes_the_rest() {
    let p = policy();
    let dev = p.review_rules(&agent(), "dev");
    let has = |verbs: &[&str], resources: &[&str]| {
        dev.resource_rules
            .iter()
            .any(|r| r.verbs == verbs && r.resources == resources)
    };
    assert!(
        has(
            &["get", "list", "watch"],
            &["pods", "pods/log", "deployments", "secrets", "configmaps"]
        ),
        "{dev:?}"
    );
    assert!(
        has(&["create", "update", "patch", "delete"], &["configmaps"]),
        "{dev:?}"
    );
    assert!(
        has(
            &["create"],
            &["selfsubjectaccessreviews", "selfsubjectrulesreviews"]
        ),
        "{dev:?}"
    );
    assert!(has(&["create"], &["pods/exec"]), "{dev:?}");
    assert!(!has(&["*"], &["*"]), "sandbox's rule is not dev's: {dev:?}");
    let text = dev.evaluation_error();
    assert!(
        text.contains("rule \"bindings-need-a-human\" needs a person's approval for"),
        "{text}"
    );
    assert!(
        text.contains(
            "rule \"small-scale\" allows patch on deployments/scale.apps in namespace dev when"
        ),
        "{text}"
    );
    assert!(text.contains("rule \"cluster-reads\" allows get, list on nodes (any API group), namespaces (any API group) at cluster scope only"), "{text}");
    assert!(
        !text.contains("no-prod"),
        "prod's rule is not dev's: {text}"
    );
    assert_eq!(dev.non_resource_rules.len(), 1);

    // A namespace glob.
    let team = p.review_rules(&agent(), "team-a");
    assert!(
        team.resource_rules
            .iter()
            .any(|r| r.resources.contains(&"secrets".to_string()))
    );
    // Another identity: the group-bound rule is gone.
    let other = p.review_rules(&Identity::new("bob", ["people"]), "team-a");
    assert!(
        !other
            .resource_rules
            .iter()
            .any(|r| r.resources.contains(&"secrets".to_string()))
    );

    // `*` is listed as RBAC lists it, with the warning that it never grants privileged requests.
    let sandbox = p.review_rules(&agent(), "sandbox");
    assert!(
        sandbox
            .resource_rules
            .iter()
            .any(|r| r.verbs == ["*"] && r.resources == ["*"])
    );
    assert!(
        sandbox
            .evaluation_error()
            .contains("a `*` in an allow rule never grants privileged requests")
    );

    // Exact names are resourceNames; a pattern is a note.
    let staging = p.review_rules(&agent(), "staging");
    assert!(
        staging
            .resource_rules
            .iter()
            .all(|r| r.resource_names.is_empty())
    );
    assert!(staging.evaluation_error().contains("rule \"named-reads\" allows get on secrets (any API group) in namespace staging named app-*, exact"));
}

// --- the invariant ------------------------------------------------------------------------------

/// The request a question is about, as it would be sent: no namespace for a cluster-scoped
/// resource, a namespace's own name as its namespace.
fn sent(a: &Attributes) -> Attributes {
    let mut a = a.clone();
    if a.resource == "namespaces" {
        a.namespace = a.name.clone();
    } else if a.resource == "nodes" {
        a.namespace.clear();
    }
    a
}

/// A request target for attributes, as kubectl would send it.
fn target(a: &Attributes) -> String {
    let base = if a.api_group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{}/v1", a.api_group)
    };
    let mut t = base;
    if !a.namespace.is_empty() && a.resource != "namespaces" {
        t.push_str(&format!("/namespaces/{}", a.namespace));
    }
    t.push('/');
    t.push_str(&a.resource);
    if !a.name.is_empty() {
        t.push('/');
        t.push_str(&a.name);
    }
    if !a.subresource.is_empty() {
        t.push('/');
        t.push_str(&a.subresource);
    }
    if a.verb == "watch" {
        t.push_str("?watch=1");
    }
    t
}

fn method(verb: &str) -> &'static str {
    match verb {
        "get" | "list" | "watch" => "GET",
        "delete" | "deletecollection" => "DELETE",
        "create" => "POST",
        "update" => "PUT",
        _ => "PATCH",
    }
}

prop_compose! {
    fn question()(
        verb in prop::sample::select(vec!["get", "list", "watch", "delete", "deletecollection", "create"]),
        (group, resource) in prop::sample::select(vec![
            ("", "pods"), ("", "secrets"), ("", "configmaps"), ("apps", "deployments"),
            ("rbac.authorization.k8s.io", "rolebindings"), ("", "nodes"), ("", "namespaces"),
        ]),
        sub in prop::sample::select(vec!["", "", "", "log", "exec", "status"]),
        ns in prop::sample::select(vec!["dev", "prod", "sandbox", "staging", "team-a", "kube-system"]),
        name in prop::sample::select(vec!["", "web", "app-1", "exact", "prod"]),
        group_member in any::<bool>(),
    ) -> (Attributes, Identity) {
        let cluster = matches!(resource, "nodes" | "namespaces");
        let collection = matches!(verb, "list" | "watch" | "deletecollection" | "create");
        // The question may carry a namespace a cluster-scoped request does not have (kubectl
        // sends its context's): the answer is about the request as it would be sent.
        let _ = cluster;
        let a = attrs(
            verb,
            group,
            resource,
            if collection { "" } else { sub },
            ns,
            if collection { "" } else { name },
        );
        let id = if group_member { agent() } else { Identity::new("agent-1", ["others"]) };
        (a, id)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// What `can-i` says is what the request gets, for every request without a body and every
    /// create (judged on an empty object when no rule's conditions are involved).
    #[test]
    fn can_i_says_what_the_request_gets((asked, id) in question()) {
        let p = policy();
        let answer = p.review_access(&id, &asked);
        let a = sent(&asked);
        let t = target(&a);
        let Ok(req) = classify(method(&a.verb), &t, &json_headers()) else {
            return Ok(());
        };
        // Only when the target classifies back to the same question.
        prop_assume!(req.attributes.verb == a.verb && req.attributes.resource == a.resource
            && req.attributes.subresource == a.subresource && req.attributes.namespace == a.namespace
            && req.attributes.name == a.name);
        let body: Option<&[u8]> = if a.verb == "create" { Some(b"{}") } else { None };
        let decided = p.decide(&id, &req, body);
        if answer.conditional.is_empty() {
            prop_assert_eq!(answer.effect, decided.effect, "{} {}: {:?} vs {:?}", a.verb, t, answer, decided);
            prop_assert_eq!(answer.allowed, decided.effect == Effect::Allow);
            prop_assert_eq!(answer.rule.as_deref(), decided.rule.as_deref());
        } else {
            // With conditions in play a review cannot promise: it never says yes where the
            // request would be refused or held on its body alone, and names the rules.
            for c in &answer.conditional {
                prop_assert!(answer.reason.contains(&c.rule) || c.effect.strictness() <= answer.effect.strictness());
            }
        }
        // `denied` is never said of a request the policy lets through.
        if decided.effect != Effect::Deny {
            prop_assert!(!answer.denied, "{} {}: {:?}", a.verb, t, answer);
        }
    }
}

// --- denials a model can act on -------------------------------------------------------------

#[test]
fn a_denial_names_the_rule_the_approval_path_and_the_nearest_allowed_request() {
    let p = policy();
    let id = agent();
    let req = classify(
        "POST",
        "/api/v1/namespaces/prod/configmaps",
        &json_headers(),
    )
    .unwrap();
    let d = p.decide(
        &id,
        &req,
        Some(br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#),
    );
    assert_eq!(d.effect, Effect::Deny);
    let denial = p.explain_denial(&id, &req.attributes, &d);
    let field = |f: &str| {
        denial
            .causes
            .iter()
            .find(|(name, _, _)| name == f)
            .map(|(_, _, m)| m.clone())
    };
    assert_eq!(field("kubeleash.rule").as_deref(), Some("no-prod"));
    assert!(
        field("kubeleash.approval")
            .unwrap()
            .starts_with("none for this request")
    );
    assert_eq!(field("kubeleash.nearest.namespace").as_deref(), Some("dev"));
    assert_eq!(field("kubeleash.nearest.verb").as_deref(), Some("create"));
    assert_eq!(
        field("kubeleash.nearest.resource").as_deref(),
        Some("configmaps")
    );
    assert_eq!(
        denial.hint.as_deref(),
        Some(
            "the nearest request the policy allows: create on configmaps in namespace dev (rule \"edit-configmaps\")"
        )
    );
    let details = denial.details(&req.attributes);
    assert_eq!(
        (details["kind"].as_str(), details["group"].as_str()),
        (Some("configmaps"), Some(""))
    );

    // A body refused on its own (a mask marker written back): no other place is suggested.
    let req = classify("POST", "/api/v1/namespaces/dev/configmaps", &json_headers()).unwrap();
    let d = p.decide(&id, &req, Some(br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"k":"[masked]"}}"#));
    assert_eq!(d.effect, Effect::Deny, "{d:?}");
    let denial = p.explain_denial(&id, &req.attributes, &d);
    assert_eq!(denial.hint, None);
    assert!(
        denial
            .causes
            .iter()
            .any(|(f, _, m)| f == "kubeleash.approval" && m.starts_with("not applicable"))
    );

    // Nothing near: no hint, and no nearest field.
    let req = classify("DELETE", "/logs/kubelet.log", &json_headers()).unwrap();
    let d = p.decide(&id, &req, None);
    assert_eq!(d.effect, Effect::Deny);
    let denial = p.explain_denial(&id, &req.attributes, &d);
    assert!(
        denial
            .causes
            .iter()
            .all(|(f, _, _)| !f.starts_with("kubeleash.nearest")),
        "{denial:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// The nearest request a denial suggests is one the policy really lets the caller make (or
    /// holds for a person, when so said), sent as kubectl would send it.
    #[test]
    fn the_suggested_request_gets_what_is_said((asked, id) in question()) {
        let a = sent(&asked);
        let p = policy();
        let t = target(&a);
        let Ok(req) = classify(method(&a.verb), &t, &json_headers()) else {
            return Ok(());
        };
        let body: Option<&[u8]> = if a.verb == "create" { Some(b"{}") } else { None };
        let d = p.decide(&id, &req, body);
        prop_assume!(d.effect == Effect::Deny);
        let denial = p.explain_denial(&id, &req.attributes, &d);
        let Some(hint) = &denial.hint else { return Ok(()) };
        let get = |f: &str| denial.causes.iter().find(|(n, _, _)| n == f).map(|(_, _, m)| m.clone()).unwrap_or_default();
        let near = Attributes {
            verb: get("kubeleash.nearest.verb"),
            namespace: get("kubeleash.nearest.namespace"),
            name: get("kubeleash.nearest.name"),
            subresource: get("kubeleash.nearest.resource").split_once('/').map(|(_, s)| s.to_string()).unwrap_or_default(),
            ..req.attributes.clone()
        };
        prop_assert!(near != req.attributes);
        let nt = target(&near);
        let sent = classify(method(&near.verb), &nt, &json_headers()).unwrap();
        let nd = p.decide(&id, &sent, if near.verb == "create" { Some(b"{}") } else { None });
        let want = if hint.starts_with("the nearest request the policy allows") { Effect::Allow } else { Effect::Approve };
        prop_assert_eq!(nd.effect, want, "{} {} -> {} {}: {:?}", a.verb, t, near.verb, nt, nd);
    }
}

// --- explain ------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// `explain` tells the decision `decide` makes, marks the rule that made it as matching,
    /// and never says a rule that does not cover the request decides it.
    #[test]
    fn explain_agrees_with_decide((asked, id) in question()) {
        let a = sent(&asked);
        let p = policy();
        let t = target(&a);
        let Ok(req) = classify(method(&a.verb), &t, &json_headers()) else {
            return Ok(());
        };
        let body: Option<&[u8]> = if a.verb == "create" { Some(b"{}") } else { None };
        let e = p.explain(&id, &req, body);
        let d = p.decide(&id, &req, body);
        prop_assert_eq!(&e.decision, &d);
        let deciding: Vec<_> = e.rules.iter().filter(|r| r.decides).collect();
        match d.rule.as_deref() {
            Some(rule) if !d.reason.starts_with("server-side apply") && !d.reason.starts_with("the request impersonates") => {
                prop_assert_eq!(deciding.len(), 1);
                prop_assert_eq!(deciding[0].rule.as_str(), rule);
                prop_assert_eq!(deciding[0].outcome, kubeleash_core::policy::RuleOutcome::Matches, "{:?}", deciding[0]);
                prop_assert_eq!(deciding[0].effect, d.effect);
            }
            Some(_) => {}
            None => prop_assert!(deciding.is_empty()),
        }
        // Every matching rule is no stricter than the decision.
        for r in e.rules.iter().filter(|r| r.outcome == kubeleash_core::policy::RuleOutcome::Matches) {
            prop_assert!(r.effect.strictness() <= d.effect.strictness() || d.rule.is_none(), "{:?} vs {:?}", r, d);
        }
    }
}
