//! Kubernetes protobuf request bodies (what kubectl's typed `create` commands send) decode to
//! exactly the JSON kubectl itself writes for the same object, and the policy judges them as it
//! judges that JSON: conditions see into them, mask markers in them are refused, and anything the
//! decoder cannot read as the API server would is refused rather than guessed.
//!
//! The fixtures in `tests/testdata/protobuf` are the bodies kubectl 1.33 sent to a real
//! kube-apiserver 1.34 (see that folder's README); each `.json` is `kubectl ... --dry-run=client
//! -o json` for the same command.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use http::{HeaderMap, HeaderValue};
use kubeleash_core::body::{self, BodyError, BodyLimits};
use kubeleash_core::policy::{Effect, Identity, Policy};
use kubeleash_core::request::classify;
use proptest::prelude::*;
use serde_json::Value;

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

struct Case {
    name: String,
    target: String,
    body: Vec<u8>,
    json: Value,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/testdata/protobuf")
}

fn cases() -> Vec<Case> {
    let list: Vec<Value> =
        serde_json::from_slice(&std::fs::read(dir().join("cases.json")).unwrap()).unwrap();
    list.iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap().to_string();
            Case {
                target: c["target"].as_str().unwrap().to_string(),
                body: std::fs::read(dir().join(format!("{name}.pb"))).unwrap(),
                json: serde_json::from_slice(
                    &std::fs::read(dir().join(format!("{name}.json"))).unwrap(),
                )
                .unwrap(),
                name,
            }
        })
        .collect()
}

fn case(name: &str) -> Case {
    cases().into_iter().find(|c| c.name == name).unwrap()
}

fn headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static(PROTOBUF));
    h
}

fn decode(target: &str, body: &[u8]) -> Result<Option<Value>, BodyError> {
    let req = classify("POST", target, &headers()).unwrap();
    body::decode(&req, body, &BodyLimits::default()).map(|d| d.map(|d| d.value))
}

/// A `runtime.Unknown` envelope, written by hand: typeMeta (1: apiVersion, 2: kind), raw (2),
/// contentEncoding (3), contentType (4).
fn envelope(
    api_version: &str,
    kind: &str,
    raw: &[u8],
    encoding: &str,
    content_type: &str,
) -> Vec<u8> {
    let type_meta = [field(1, api_version.as_bytes()), field(2, kind.as_bytes())].concat();
    let mut out = b"k8s\0".to_vec();
    out.extend(field(1, &type_meta));
    out.extend(field(2, raw));
    if !encoding.is_empty() {
        out.extend(field(3, encoding.as_bytes()));
    }
    if !content_type.is_empty() {
        out.extend(field(4, content_type.as_bytes()));
    }
    out
}

/// One length-delimited protobuf field.
fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![number << 3 | 2];
    let mut n = bytes.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(bytes);
    out
}

/// The `raw` object inside a fixture's envelope (its second field), for re-wrapping.
fn raw_of(body: &[u8]) -> Vec<u8> {
    let mut at = 4;
    let read_len = |at: &mut usize| {
        let mut n = 0usize;
        let mut shift = 0;
        loop {
            let b = body[*at];
            *at += 1;
            n |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                return n;
            }
        }
    };
    loop {
        let tag = body[at];
        at += 1;
        let len = read_len(&mut at);
        if tag == (2 << 3 | 2) {
            return body[at..at + len].to_vec();
        }
        at += len;
    }
}

#[test]
fn every_kubectl_body_decodes_to_kubectls_own_json() {
    let all = cases();
    assert!(all.len() >= 20, "only {} fixtures", all.len());
    for c in &all {
        let got = decode(&c.target, &c.body)
            .unwrap_or_else(|e| panic!("{}: {e}", c.name))
            .unwrap();
        assert_eq!(got, c.json, "{}", c.name);
    }
}

const POLICY: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  rules:
    - {name: admin, effect: allow, subjects: {users: [admin]}, verbs: ["*"], apiGroups: ["*"], resources: ["*"]}
    - {name: admin-bindings, effect: allow, subjects: {users: [admin]}, verbs: [create], apiGroups: [rbac.authorization.k8s.io], resources: [clusterrolebindings, rolebindings]}
    - name: no-cluster-admin-grants
      effect: deny
      verbs: [create, update, patch]
      apiGroups: [rbac.authorization.k8s.io]
      resources: [clusterrolebindings, rolebindings]
      when: [{path: "$.roleRef.name", equals: cluster-admin}]
    - name: bindings-need-a-human
      effect: approve
      subjects: {users: [binder]}
      verbs: [create]
      apiGroups: [rbac.authorization.k8s.io]
      resources: [rolebindings]
    - name: secrets-with-a-user
      effect: allow
      subjects: {users: [writer]}
      verbs: [create]
      apiGroups: [""]
      resources: [secrets]
      when: [{path: "$.data.user", exists: true}]
    - name: small-deployments
      effect: allow
      subjects: {users: [writer]}
      verbs: [create]
      apiGroups: [apps]
      resources: [deployments]
      when: [{path: "$.spec.replicas", equals: 1}]
"#;

fn evaluate(user: &str, target: &str, body: &[u8]) -> (Effect, String) {
    let policy = Policy::from_yaml(POLICY).unwrap();
    let e = policy.evaluate(
        &Identity::new(user, Vec::<String>::new()),
        "POST",
        target,
        &headers(),
        Some(body),
    );
    (e.decision.effect, e.decision.reason)
}

#[test]
fn conditions_see_into_protobuf_bodies() {
    // kubectl create clusterrolebinding ... --clusterrole=cluster-admin: denied by its roleRef,
    // even for an identity every other rule allows.
    let crb = case("clusterrolebinding");
    let (effect, reason) = evaluate("admin", &crb.target, &crb.body);
    assert_eq!(effect, Effect::Deny, "{reason}");
    assert!(reason.contains("no-cluster-admin-grants"), "{reason}");
    // A rolebinding to `view` is not.
    let rb = case("rolebinding");
    let (effect, reason) = evaluate("admin", &rb.target, &rb.body);
    assert_eq!(effect, Effect::Allow, "{reason}");
    // Approval: held for a person (not refused for its encoding).
    let (effect, reason) = evaluate("binder", &rb.target, &rb.body);
    assert_eq!(effect, Effect::Approve, "{reason}");
    // Conditioned allows: a secret with a `user` key is allowed, a docker-registry one is not;
    // two replicas are not one.
    let s = case("secret-generic");
    let (effect, reason) = evaluate("writer", &s.target, &s.body);
    assert_eq!(effect, Effect::Allow, "{reason}");
    let d = case("secret-docker-registry");
    assert_eq!(evaluate("writer", &d.target, &d.body).0, Effect::Deny);
    let dep = case("deployment");
    assert_eq!(evaluate("writer", &dep.target, &dep.body).0, Effect::Deny);
}

#[test]
fn a_mask_marker_in_a_protobuf_body_is_refused() {
    // kubectl create secret generic s --from-literal=k='[masked]': data {k: "[masked]"}.
    let entry = [field(1, b"k"), field(2, b"[masked]")].concat();
    let raw = [field(1, &field(1, b"s")), field(2, &entry)].concat();
    let body = envelope("v1", "Secret", &raw, "", "");
    let target = "/api/v1/namespaces/dev/secrets";
    let got = decode(target, &body).unwrap().unwrap();
    assert_eq!(got["data"]["k"], "W21hc2tlZF0=");
    assert_eq!(got["metadata"]["name"], "s");
    let (effect, reason) = evaluate("admin", target, &body);
    assert_eq!(effect, Effect::Deny, "{reason}");
    assert!(reason.contains("mask marker"), "{reason}");
}

#[test]
fn what_the_api_server_could_read_differently_is_refused() {
    let s = case("secret-generic");
    let raw = raw_of(&s.body);
    let refused = |body: &[u8], why: &str| {
        match decode(&s.target, body) {
            Err(e @ BodyError::Protobuf { .. }) => {
                assert!(e.to_string().contains(why), "{e}");
                assert_eq!(e.code(), "protobuf-body");
            }
            other => panic!("{why}: {other:?}"),
        }
        let (effect, reason) = evaluate("admin", &s.target, body);
        assert_eq!(effect, Effect::Deny, "{reason}");
        assert!(reason.starts_with("request body refused"), "{reason}");
    };
    // The re-wrapped fixture still decodes (the helper writes what kubectl writes).
    assert_eq!(
        decode(&s.target, &envelope("v1", "Secret", &raw, "", ""))
            .unwrap()
            .unwrap(),
        s.json
    );
    refused(&s.body[..s.body.len() - 3], "not valid protobuf");
    refused(b"{\"kind\":\"Secret\"}", "magic");
    refused(
        &envelope("v1", "Secret", &raw, "gzip", ""),
        "content encoding",
    );
    refused(
        &envelope("v1", "Secret", &raw, "", "application/json"),
        "content type",
    );
    refused(
        &envelope("", "Secret", &raw, "", ""),
        "no apiVersion and kind",
    );
    refused(
        &envelope("v1", "Secrets", &raw, "", ""),
        "no protobuf message",
    );
    // Custom resources are never protobuf.
    refused(
        &envelope("example.com/v1", "Widget", b"", "", ""),
        "no protobuf message",
    );
    // A string that is not UTF-8 (Go would keep the bytes; the JSON would differ).
    let mut bad = raw.clone();
    let at = bad.windows(2).position(|w| w == b"s1").unwrap();
    bad[at] = 0xff;
    refused(
        &envelope("v1", "Secret", &bad, "", ""),
        "not valid protobuf",
    );
    // An empty body is no body; the content type is still one kubeleash reads.
    assert_eq!(decode(&s.target, b"").unwrap(), None);
}

#[test]
fn delete_options_in_protobuf_are_read() {
    // propagationPolicy (4) = "Orphan", dryRun (5) = ["All"].
    let raw = [
        &[4 << 3 | 2, 6][..],
        b"Orphan",
        &[5 << 3 | 2, 3][..],
        b"All",
    ]
    .concat();
    let body = envelope("v1", "DeleteOptions", &raw, "", "");
    let req = classify("DELETE", "/api/v1/namespaces/dev/pods/p", &headers()).unwrap();
    let got = body::decode(&req, &body, &BodyLimits::default())
        .unwrap()
        .unwrap();
    assert_eq!(got.value["propagationPolicy"], "Orphan");
    assert_eq!(got.value["dryRun"], serde_json::json!(["All"]));
    assert_eq!(got.value["kind"], "DeleteOptions");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any corruption of a real body decodes to an object naming its kind, or is refused as
    /// protobuf; it never panics, and decoding is deterministic.
    #[test]
    fn corrupted_bodies_are_decoded_or_refused(
        which in 0usize..21,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let all = cases();
        let c = &all[which % all.len()];
        let mut body = c.body.clone();
        for (at, b) in edits {
            let i = at.index(body.len());
            body[i] = b;
        }
        if let Some(cut) = cut {
            body.truncate(cut.index(body.len() + 1));
        }
        let first = decode(&c.target, &body);
        match &first {
            Ok(Some(v)) => {
                prop_assert!(v["apiVersion"].is_string() && v["kind"].is_string(), "{v}");
            }
            Ok(None) => prop_assert!(body.is_empty()),
            Err(e) => prop_assert_eq!(e.code(), "protobuf-body"),
        }
        prop_assert_eq!(format!("{first:?}"), format!("{:?}", decode(&c.target, &body)));
    }
}
