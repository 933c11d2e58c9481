//! Fuzz the request classifier and the policy decision on top of it.
//!
//! Two input layouts. Text (so seeds can be written by hand): `METHOD TARGET` on the first line,
//! then `Name: value` header lines up to an empty line, then the request body. Structured, when
//! the first byte is `0x00`–`0x1f`: bytes 1–4 pick a method, a target, a content type (every
//! patch type, JSON, YAML, Kubernetes protobuf, none) and an `Upgrade` value (none, `websocket`, `SPDY/3.1`, `h2c`,
//! empty, odd), and the rest is the body; so the fuzzer reaches body decoding, patch shapes,
//! mask-marker checks, JSON patch reads and stream classification without having to find the
//! header spellings itself.
//!
//! Checks: no panic in `classify`, `Policy::evaluate` (with `examples/agents.yaml` and a policy
//! with conditioned allow, deny and approve rules and a custom mask), `Policy::needs_body` or
//! `Policy::masker`; `evaluate` classifies exactly as `classify` does and denies what `classify`
//! refuses; a request it allows is one `classify` accepted; no `exec`, `attach` or `portforward`
//! request is anything but `create`; a write it allows carries no mask marker in its body; a
//! write whose body `needs_body` said it need not read decides the same without it.
#![no_main]

use std::sync::LazyLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use kubeleash_core::policy::{Effect, Identity, Policy};
use kubeleash_core::request::classify;
use libfuzzer_sys::fuzz_target;

static POLICY: LazyLock<Policy> = LazyLock::new(|| {
    Policy::from_yaml(include_str!("../../examples/agents.yaml"))
        .expect("examples/agents.yaml compiles")
});

static CONDITIONED: LazyLock<Policy> = LazyLock::new(|| {
    Policy::from_yaml(
        r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  masks:
    rules:
      - {name: widget-passwords, kinds: [Widget], apiGroups: [example.com], paths: ["$.spec.password"]}
  rules:
    - {name: writes, effect: allow, verbs: ["*"], apiGroups: ["", apps, example.com], resources: ["*"], when: [{path: "$.metadata.labels.ok", equals: "yes"}]}
    - {name: plain, effect: allow, verbs: [create, update, patch, get, list], apiGroups: ["", apps, example.com], resources: [configmaps, secrets, pods, pods/exec, pods/attach, widgets, deployments, nodes/proxy]}
    - {name: frozen, effect: deny, verbs: [update, patch], resources: ["*"], when: [{path: "$.metadata.labels.frozen", exists: false}, {path: "$.spec.locked", notEquals: true}]}
    - {name: privileged, effect: approve, verbs: [create, update, patch], resources: [pods, deployments], when: [{path: "$..privileged", equals: true}]}
"#,
    )
    .expect("the conditioned policy compiles")
});

const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT",
];
const TARGETS: [&str; 10] = [
    "/api/v1/namespaces/dev/secrets/db",
    "/api/v1/namespaces/dev/configmaps/c?fieldManager=agent",
    "/apis/apps/v1/namespaces/dev/deployments/web",
    "/api/v1/namespaces/dev/pods/p",
    "/api/v1/namespaces/dev/pods/p/exec?command=sh&stdin=true",
    "/api/v1/namespaces/dev/pods/p/attach",
    "/api/v1/nodes/n/proxy/exec/dev/p/c?command=id",
    "/apis/example.com/v1/namespaces/dev/widgets/w",
    "/api/v1/namespaces/dev/secrets",
    "/api/v1/namespaces/dev/pods?watch=1",
];
const CONTENT_TYPES: [Option<&str>; 9] = [
    Some("application/json-patch+json"),
    Some("application/merge-patch+json"),
    Some("application/strategic-merge-patch+json"),
    Some("application/apply-patch+yaml"),
    Some("application/json"),
    Some("application/yaml"),
    Some("application/apply-patch+cbor"),
    Some("application/vnd.kubernetes.protobuf"),
    None,
];
const UPGRADES: [Option<&[u8]>; 7] = [
    None,
    Some(b"websocket"),
    Some(b"SPDY/3.1"),
    Some(b"h2c"),
    Some(b""),
    Some(b"x, WebSocket"),
    Some(b"SPDY/3.1+portforward.k8s.io"),
];

/// A structured input: method, target, headers and body picked from the tables above.
fn structured(data: &[u8]) -> (String, String, HeaderMap, Option<&[u8]>) {
    let pick = |i: usize| usize::from(data.get(i).copied().unwrap_or_default());
    let method = METHODS[pick(1) % METHODS.len()].to_string();
    let target = TARGETS[pick(2) % TARGETS.len()].to_string();
    let mut headers = HeaderMap::new();
    if let Some(ct) = CONTENT_TYPES[pick(3) % CONTENT_TYPES.len()] {
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    if let Some(up) = UPGRADES[pick(4) % UPGRADES.len()]
        && let Ok(v) = HeaderValue::from_bytes(up)
    {
        headers.insert(http::header::UPGRADE, v);
    }
    (method, target, headers, data.get(5..))
}

/// Whether a decoded JSON body holds a mask marker in any string.
fn carries_marker(body: &[u8]) -> bool {
    fn walk(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => ["[masked", "[hmac:", "W21hc2tlZF0", "W2htYWM6"]
                .iter()
                .any(|m| s.contains(m)),
            serde_json::Value::Array(a) => a.iter().any(walk),
            serde_json::Value::Object(o) => o.values().any(walk),
            _ => false,
        }
    }
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| walk(&v))
}

static IDENTITIES: LazyLock<Vec<Identity>> = LazyLock::new(|| {
    vec![
        Identity::new("agent-1", ["ai-agents"]),
        Identity::new(
            "system:serviceaccount:dev:agent",
            ["system:serviceaccounts", "ai-agents"],
        ),
        Identity::new("nobody", Vec::<String>::new()),
    ]
});

fuzz_target!(|data: &[u8]| {
    if data.first().is_some_and(|&b| b < 0x20) {
        let (method, target, headers, body) = structured(data);
        check(&method, &target, &headers, body);
        return;
    }
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(p) => (&data[..p], Some(&data[p + 2..])),
        None => (data, None),
    };
    let mut lines = head.split(|&c| c == b'\n');
    let first = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let (method, target) = first.split_once(' ').unwrap_or((first.as_str(), ""));
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let value = line[colon + 1..]
            .strip_prefix(b" ")
            .unwrap_or(&line[colon + 1..]);
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(n, v);
        }
    }
    check(method, target, &headers, body);
});

fn check(method: &str, target: &str, headers: &HeaderMap, body: Option<&[u8]>) {
    let classified = classify(method, target, headers);
    if let Ok(req) = &classified {
        let a = &req.attributes;
        if matches!(a.subresource.as_str(), "exec" | "attach" | "portforward") {
            assert_eq!(a.verb, "create", "a stream classified as {}", a.verb);
        }
    }
    for (policy, id) in IDENTITIES
        .iter()
        .map(|id| (&*POLICY, id))
        .chain(IDENTITIES.iter().take(1).map(|id| (&*CONDITIONED, id)))
    {
        let ev = policy.evaluate(id, method, target, headers, body);
        match &classified {
            Ok(req) => {
                // `evaluate` refines a DELETE's facts with its body's options, as the API server
                // reads them; the attributes are classification's alone.
                let mut refined = req.clone();
                let _ = refined.with_body_facts(body);
                assert_eq!(
                    ev.request.as_ref(),
                    Some(&refined),
                    "evaluate classified {method} {target} differently"
                );
                assert_eq!(
                    policy.decide(id, req, body),
                    ev.decision,
                    "decide and evaluate disagree"
                );
                if !policy.needs_body(id, req) {
                    assert_eq!(
                        policy.decide(id, req, None),
                        ev.decision,
                        "a body needs_body left out changed the decision"
                    );
                }
                if ev.decision.allowed()
                    && matches!(req.attributes.verb.as_str(), "create" | "update" | "patch")
                    && !matches!(
                        req.attributes.subresource.as_str(),
                        "exec" | "attach" | "portforward" | "proxy"
                    )
                    && let Some(b) = body
                {
                    assert!(
                        !carries_marker(b),
                        "a write carrying a mask marker was allowed"
                    );
                }
            }
            Err(_) => {
                assert!(ev.request.is_none());
                assert_eq!(
                    ev.decision.effect,
                    Effect::Deny,
                    "a refused target was not denied"
                );
            }
        }
    }
    if let Ok(req) = &classified {
        // A masker for its response: built or refused, never a panic.
        for ct in [
            Some("application/json"),
            Some("text/plain"),
            Some("application/yaml"),
            None,
        ] {
            let _ = POLICY.masker(req, ct, None);
        }
    }
}
