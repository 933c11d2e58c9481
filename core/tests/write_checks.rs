//! Invariants on the bodies of writes (issue 12 items 4, 5, 12 and 21), tried over many shapes:
//!
//! - no allowed JSON patch reads (`copy`/`move` from, `test`) a value a mask covers;
//! - no write that carries a mask marker anywhere in its body is allowed;
//! - a patch that removes fields (merge `null`, strategic `$patch: delete`/`replace`,
//!   `$retainKeys`, `$deleteFromPrimitiveList`) is never allowed by a conditioned allow rule,
//!   and a conditioned deny rule always applies to it;
//! - a token-typed Secret is never written under a rule that does not name the type.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use http::{HeaderMap, HeaderValue};
use kubeleash_core::policy::{Effect, Identity, Policy};
use proptest::prelude::*;
use serde_json::{Value, json};

const POLICY: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  masks:
    rules:
      - {name: widget-passwords, kinds: [Widget], apiGroups: [example.com], paths: ["$.spec.password"]}
  rules:
    - {name: admin, effect: allow, subjects: {users: [admin]}, verbs: ["*"], apiGroups: ["*"], resources: ["*"]}
"#;

/// Compiling a policy (its detectors) is slow in a debug build: once per policy text.
fn compiled(text: &'static str) -> Policy {
    static CACHE: std::sync::Mutex<Vec<(&'static str, Policy)>> = std::sync::Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap();
    if let Some((_, p)) = cache.iter().find(|(t, _)| std::ptr::eq(*t, text)) {
        return p.clone();
    }
    let p = Policy::from_yaml(text).unwrap();
    cache.push((text, p.clone()));
    p
}

fn id(user: &str) -> Identity {
    Identity::new(user, Vec::<String>::new())
}

fn decide(
    policy: &Policy,
    user: &str,
    method: &str,
    target: &str,
    ct: &str,
    body: &str,
) -> (Effect, String) {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_str(ct).unwrap());
    let e = policy.evaluate(&id(user), method, target, &h, Some(body.as_bytes()));
    (e.decision.effect, e.decision.reason)
}

/// A stored object of each resource, with a sentinel at every place a mask covers.
fn stored() -> Vec<(&'static str, Value)> {
    let last_applied = json!({"kind": "Secret", "data": {"k": "SENTINEL-LA"}}).to_string();
    vec![
        (
            "/api/v1/namespaces/dev/secrets/db",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "labels": {"app": "db"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied, "note": "x"}},
                "data": {"password": "SENTINEL-1"}, "stringData": {"token": "SENTINEL-2"}, "type": "Opaque"}),
        ),
        (
            "/apis/apps/v1/namespaces/dev/deployments/web",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                    {"name": "c", "image": "i", "env": [{"name": "MODE", "value": "prod"}, {"name": "DB_PASSWORD", "value": "SENTINEL-3"}]}]}}}}),
        ),
        (
            "/apis/example.com/v1/namespaces/dev/widgets/w",
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "finalizers": ["f"]},
                "spec": {"size": 2, "password": "SENTINEL-4"}}),
        ),
    ]
}

/// Every JSON pointer of `v`, the root included.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                pointers(
                    x,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                pointers(x, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn holds_sentinel(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains("SENTINEL"),
        Value::Array(a) => a.iter().any(holds_sentinel),
        Value::Object(m) => m.values().any(holds_sentinel),
        _ => false,
    }
}

fn patch_op() -> impl Strategy<Value = (usize, &'static str, usize, usize, Value)> {
    (
        0usize..3,
        proptest::sample::select(vec!["copy", "move", "test", "add", "remove", "replace"]),
        any::<usize>(),
        any::<usize>(),
        prop_oneof![
            Just(json!("SENTINEL-1")),
            Just(json!("x")),
            Just(json!(1)),
            Just(json!({"a": "b"}))
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    /// An allowed JSON patch never reads a value that holds a masked one.
    #[test]
    fn no_allowed_json_patch_reads_a_masked_value(ops in proptest::collection::vec(patch_op(), 1..4), which in 0usize..3) {
        let policy = compiled(POLICY);
        let objects = stored();
        let (target, object) = &objects[which];
        let mut all = Vec::new();
        pointers(object, String::new(), &mut all);
        all.extend(["/metadata/labels/new".to_string(), "/nope".into(), "/metadata/annotations/a~1b".into()]);
        let patch: Vec<Value> = ops
            .iter()
            .map(|(_, op, from, path, value)| {
                let from = &all[from % all.len()];
                let path = &all[path % all.len()];
                match *op {
                    "copy" | "move" => json!({"op": op, "from": from, "path": path}),
                    "remove" => json!({"op": op, "path": path}),
                    _ => json!({"op": op, "path": path, "value": value}),
                }
            })
            .collect();
        let body = Value::Array(patch.clone()).to_string();
        let (effect, reason) = decide(&policy, "admin", "PATCH", target, "application/json-patch+json", &body);
        if effect == Effect::Allow {
            for op in &patch {
                let read = match op["op"].as_str() {
                    Some("copy" | "move") => op["from"].as_str(),
                    Some("test") => op["path"].as_str(),
                    _ => None,
                };
                if let Some(p) = read {
                    let value = object.pointer(p).cloned().unwrap_or(Value::Null);
                    prop_assert!(!holds_sentinel(&value), "{target} {body} read a masked value at {p}");
                    prop_assert!(p.starts_with("/metadata/"), "{target} {body}: read of {p} allowed");
                }
            }
        } else {
            // Refused for a read, or (on a Secret) because a JSON patch may mint a token.
            prop_assert!(reason.contains("JSON patch operation") || reason.contains("token"), "{reason}");
        }
    }
}

/// The forms of marker the masker writes.
fn marker() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[masked]".to_string()),
        Just("W21hc2tlZF0=".to_string()),
        "[0-9a-f]{24}".prop_map(|h| format!("[hmac:{h}]")),
        Just("W2htYWM6MGExYjJjM2Q0ZTVmNmE3YjhjOWQwZTFmXQ==".to_string()),
        "[a-z ]{0,8}".prop_map(|p| format!("{p}[masked:jwt] tail")),
    ]
}

/// A random JSON object, and a pointer-like list of keys where a value can go.
fn object() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9 =]{0,10}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `v` with `put` placed at a place chosen by `seed` (replacing a leaf, or added to an object).
fn plant(v: &mut Value, put: &Value, seed: usize) -> bool {
    match v {
        Value::Object(m) => {
            let n = m.len();
            if n == 0 || seed % (n + 1) == n {
                m.insert("planted".into(), put.clone());
                return true;
            }
            let key = m.keys().nth(seed % n).cloned().unwrap();
            plant(m.get_mut(&key).unwrap(), put, seed / (n + 1))
        }
        Value::Array(a) if !a.is_empty() => {
            let n = a.len();
            plant(&mut a[seed % n], put, seed / n)
        }
        other => {
            *other = put.clone();
            true
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// A write that carries a mask marker anywhere in its body is refused, saying why; the same
    /// body without it is not refused for that.
    #[test]
    fn no_write_carries_a_marker_back(
        base in object(),
        m in marker(),
        seed in any::<usize>(),
        inside_last_applied in any::<bool>(),
        form in 0usize..5,
    ) {
        let policy = compiled(POLICY);
        let mut base = match base { Value::Object(o) => Value::Object(o), other => json!({"spec": other}) };
        let clean = base.clone();
        let put = if inside_last_applied {
            let mut inner = json!({"kind": "Secret", "data": {}});
            plant(&mut inner, &Value::String(m.clone()), seed);
            json!({"kubectl.kubernetes.io/last-applied-configuration": inner.to_string()})
        } else {
            Value::String(m.clone())
        };
        plant(&mut base, &put, seed);
        let (method, target, ct, body, clean_body) = match form {
            0 => ("POST", "/api/v1/namespaces/dev/configmaps", "application/json", base.to_string(), clean.to_string()),
            1 => ("PUT", "/api/v1/namespaces/dev/secrets/s", "application/json", base.to_string(), clean.to_string()),
            2 => ("PATCH", "/apis/apps/v1/namespaces/dev/deployments/d", "application/merge-patch+json", base.to_string(), clean.to_string()),
            3 => ("PATCH", "/apis/example.com/v1/namespaces/dev/widgets/w", "application/apply-patch+yaml", base.to_string(), clean.to_string()),
            _ => (
                "PATCH",
                "/api/v1/namespaces/dev/pods/p",
                "application/json-patch+json",
                json!([{"op": "add", "path": "/metadata/labels", "value": base}]).to_string(),
                json!([{"op": "add", "path": "/metadata/labels", "value": clean}]).to_string(),
            ),
        };
        let (effect, reason) = decide(&policy, "admin", method, target, ct, &body);
        prop_assert_eq!(effect, Effect::Deny, "{} {} {}", method, target, body);
        prop_assert!(reason.contains("mask marker"), "{reason}");
        let (_, reason) = decide(&policy, "admin", method, target, ct, &clean_body);
        prop_assert!(!reason.contains("mask marker"), "{reason}");
    }
}

const CONDITIONED: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  rules:
    - name: allow-when-labelled
      effect: allow
      verbs: [patch]
      apiGroups: [""]
      resources: [configmaps]
      when: [{path: "$.metadata.labels.ok", equals: "yes"}]
    - name: deny-when-frozen
      effect: deny
      verbs: [patch]
      apiGroups: [""]
      resources: [configmaps]
      when: [{path: "$.metadata.labels.frozen", equals: "yes"}]
"#;

fn removal() -> impl Strategy<Value = (&'static str, Value)> {
    prop_oneof![
        Just(("application/merge-patch+json", Value::Null)),
        Just(("application/strategic-merge-patch+json", Value::Null)),
        Just((
            "application/strategic-merge-patch+json",
            json!({"$patch": "delete"})
        )),
        Just((
            "application/strategic-merge-patch+json",
            json!({"$patch": "replace", "a": "b"})
        )),
        Just((
            "application/strategic-merge-patch+json",
            json!({"$retainKeys": ["a"], "a": "b"})
        )),
        Just((
            "application/strategic-merge-patch+json",
            json!({"$deleteFromPrimitiveList/x": ["a"]})
        )),
        Just(("application/apply-patch+yaml", Value::Null)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// A patch that removes fields gets the strict treatment, wherever the removal sits: a
    /// conditioned allow rule does not allow it (though its condition holds on the text), and
    /// a conditioned deny rule applies (though its condition fails on the text).
    #[test]
    fn removals_are_judged_strictly(base in object(), (ct, removal) in removal(), seed in any::<usize>()) {
        let mut body = match base { Value::Object(o) => Value::Object(o), other => json!({"data": other}) };
        body.as_object_mut().unwrap().remove("metadata");
        plant(&mut body, &removal, seed);
        body.as_object_mut().unwrap().insert("metadata".into(), json!({"labels": {"ok": "yes"}}));
        let policy = compiled(CONDITIONED);
        let (effect, reason) = decide(&policy, "anyone", "PATCH", "/api/v1/namespaces/dev/configmaps/c", ct, &body.to_string());
        prop_assert_ne!(effect, Effect::Allow, "{} {}: {}", ct, body, reason);
        if effect == Effect::Deny && !reason.contains("request body refused") {
            prop_assert!(reason.contains("deny-when-frozen"), "{reason}");
        }
    }
}

const SECRETS: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  rules:
    - {name: secrets, effect: allow, verbs: [create, update, patch], apiGroups: [""], resources: [secrets]}
    - name: tokens
      effect: allow
      subjects: {users: [minter]}
      verbs: [create]
      apiGroups: [""]
      resources: [secrets]
      when: [{path: "$.type", in: [kubernetes.io/service-account-token]}]
"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// A plain `secrets` rule never writes a token-typed Secret, by any verb or patch type; a
    /// rule that pins the type does.
    #[test]
    fn token_secrets_need_a_rule_that_names_them(
        form in 0usize..6,
        token_type in proptest::sample::select(vec!["kubernetes.io/service-account-token", "bootstrap.kubernetes.io/token"]),
        extra in "[a-z]{0,6}",
    ) {
        let policy = compiled(SECRETS);
        let obj = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t", "labels": {"x": extra}}, "type": token_type});
        let (method, target, ct, body) = match form {
            0 => ("POST", "/api/v1/namespaces/dev/secrets", "application/json", obj.to_string()),
            1 => ("PUT", "/api/v1/namespaces/dev/secrets/t", "application/json", obj.to_string()),
            2 => ("PATCH", "/api/v1/namespaces/dev/secrets/t", "application/merge-patch+json", obj.to_string()),
            3 => ("PATCH", "/api/v1/namespaces/dev/secrets/t", "application/strategic-merge-patch+json", obj.to_string()),
            4 => ("PATCH", "/api/v1/namespaces/dev/secrets/t?fieldManager=a", "application/apply-patch+yaml", obj.to_string()),
            _ => ("PATCH", "/api/v1/namespaces/dev/secrets/t", "application/json-patch+json",
                  json!([{"op": "add", "path": "/type", "value": token_type}]).to_string()),
        };
        let (effect, reason) = decide(&policy, "someone", method, target, ct, &body);
        prop_assert_eq!(effect, Effect::Deny, "{} {}: {}", method, body, reason);
        prop_assert!(reason.contains("token"), "{reason}");
        if token_type == "kubernetes.io/service-account-token" && form == 0 {
            let (effect, reason) = decide(&policy, "minter", method, target, ct, &body);
            prop_assert_eq!(effect, Effect::Allow, "{}", reason);
        }
    }
}

/// A JSON patch cannot make kubeleash run the masker without bound: past a few hundred reads
/// (or 64 distinct pointers), the patch is refused.
#[test]
fn many_reads_are_refused_not_judged_one_by_one() {
    let policy = compiled(POLICY);
    let ops: Vec<Value> = (0..1000)
        .map(|i| json!({"op": "test", "path": "/metadata/labels/app", "value": format!("guess-{i}")}))
        .collect();
    let (effect, reason) = decide(
        &policy,
        "admin",
        "PATCH",
        "/api/v1/namespaces/dev/configmaps/c",
        "application/json-patch+json",
        &Value::Array(ops).to_string(),
    );
    assert_eq!(effect, Effect::Deny, "{reason}");
    assert!(reason.contains("JSON patch operation 256"), "{reason}");
    let distinct: Vec<Value> = (0..100)
        .map(|i| json!({"op": "copy", "from": format!("/metadata/labels/l{i}"), "path": "/metadata/labels/x"}))
        .collect();
    let (effect, reason) = decide(
        &policy,
        "admin",
        "PATCH",
        "/api/v1/namespaces/dev/configmaps/c",
        "application/json-patch+json",
        &Value::Array(distinct).to_string(),
    );
    assert_eq!(effect, Effect::Deny, "{reason}");
    assert!(reason.contains("JSON patch operation 64"), "{reason}");
    // A handful of reads of plain metadata is fine.
    let few = json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
        {"op": "copy", "from": "/metadata/labels/app", "path": "/metadata/labels/app2"},
        {"op": "move", "from": "/metadata/annotations/old", "path": "/metadata/annotations/new"}
    ]);
    let (effect, reason) = decide(
        &policy,
        "admin",
        "PATCH",
        "/api/v1/namespaces/dev/configmaps/c",
        "application/json-patch+json",
        &few.to_string(),
    );
    assert_eq!(effect, Effect::Allow, "{reason}");
}

/// `$deleteFromPrimitiveList` and `$setElementOrder` compare list elements by value: on a list
/// a mask covers (a credential flag in container `args`, a value a detector finds) they are a
/// guessing oracle and refused; on other lists they pass.
#[test]
fn strategic_list_directives_do_not_guess_masked_values() {
    let policy = compiled(POLICY);
    let target = "/apis/apps/v1/namespaces/dev/deployments/web";
    let smp = "application/strategic-merge-patch+json";
    for (directive, values) in [
        (
            "$deleteFromPrimitiveList/args",
            json!(["--password=hunter2"]),
        ),
        ("$setElementOrder/args", json!(["--db-pass", "hunter2"])),
        (
            "$deleteFromPrimitiveList/command",
            json!(["--token=ghp_8lYdFzVkEX8fTBfBU6YhcnxO9a15xZRhMAf5"]),
        ),
    ] {
        let body = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", directive: values}]}}}});
        let (effect, reason) = decide(&policy, "admin", "PATCH", target, smp, &body.to_string());
        assert_eq!(effect, Effect::Deny, "{body}: {reason}");
        assert!(reason.contains("strategic merge directive"), "{reason}");
    }
    let plain = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "$deleteFromPrimitiveList/args": ["--verbose"]}]}}}});
    let (effect, reason) = decide(&policy, "admin", "PATCH", target, smp, &plain.to_string());
    assert_eq!(effect, Effect::Allow, "{reason}");
}

const APPLY: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  rules:
    - {name: all, effect: allow, verbs: [patch, create], apiGroups: [example.com], resources: [widgets]}
    - name: stay-locked
      effect: deny
      verbs: [patch]
      apiGroups: [example.com]
      resources: [widgets]
      when: [{path: "$.spec.locked", notEquals: true}]
    - name: never-bad
      effect: deny
      verbs: [patch]
      apiGroups: [example.com]
      resources: [widgets]
      when: [{path: "$.spec.bad", equals: true}]
"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// A server-side apply can remove what its manager owned and the body omits, so a deny
    /// condition on inequality applies to every apply, whatever the body says; a condition on a
    /// value's presence is still judged on the body.
    #[test]
    fn apply_is_strict_for_absence_conditions_only(base in object(), locked in any::<bool>(), bad in any::<bool>()) {
        let policy = compiled(APPLY);
        let mut spec = match base { Value::Object(o) => o, _ => serde_json::Map::new() };
        spec.retain(|_, v| !v.is_null());
        spec.insert("locked".into(), json!(locked));
        spec.insert("bad".into(), json!(bad));
        let body = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec});
        if serde_json::to_string(&body).unwrap().contains("null") {
            return Ok(());
        }
        let target = "/apis/example.com/v1/namespaces/dev/widgets/w?fieldManager=a";
        let (effect, reason) = decide(&policy, "x", "PATCH", target, "application/apply-patch+yaml", &body.to_string());
        prop_assert_eq!(effect, Effect::Deny, "{}", reason);
        prop_assert!(reason.contains("stay-locked"), "{reason}");
        // The same body as a merge patch is judged on its text.
        let (effect, reason) = decide(&policy, "x", "PATCH", target, "application/merge-patch+json", &json!({"spec": spec}).to_string());
        let expect_deny = !locked || bad;
        prop_assert_eq!(effect == Effect::Deny, expect_deny, "{}", reason);
    }
}

/// A write body that does not decode strictly is refused whatever the rules, since every check
/// above reads the decoded body: a JSON patch whose `from` is named twice would be checked on
/// one value and applied by the API server with the other (its decoder keeps the last).
#[test]
fn a_write_body_that_does_not_decode_strictly_is_refused() {
    let policy = compiled(POLICY);
    let patch = r#"[{"op":"copy","from":"/metadata/name","from":"/data/password","path":"/metadata/annotations/x"}]"#;
    for (method, target, ct, body) in [
        (
            "PATCH",
            "/api/v1/namespaces/dev/secrets/db",
            "application/json-patch+json",
            patch,
        ),
        (
            "POST",
            "/api/v1/namespaces/dev/configmaps",
            "application/json",
            r#"{"kind":"ConfigMap","metadata":{"name":"a","name":"b"}}"#,
        ),
        (
            "POST",
            "/api/v1/namespaces/dev/configmaps",
            "application/yaml",
            "kind: ConfigMap\nmetadata: {name: a}\n",
        ),
        (
            "PUT",
            "/api/v1/namespaces/dev/configmaps/a",
            "application/json",
            r#"{"kind":"ConfigMap""#,
        ),
    ] {
        let (effect, reason) = decide(&policy, "admin", method, target, ct, body);
        assert_eq!(effect, Effect::Deny, "{method} {target} {body}: {reason}");
        assert!(reason.starts_with("request body refused"), "{reason}");
    }
    // Protobuf (kubectl's typed creates) is not decoded, and not refused for that alone.
    let (effect, reason) = decide(
        &policy,
        "admin",
        "POST",
        "/api/v1/namespaces/dev/configmaps",
        "application/vnd.kubernetes.protobuf",
        "k8s\0\n\x0f\n\x02v1\x12\tConfigMap",
    );
    assert_eq!(effect, Effect::Allow, "{reason}");
}
