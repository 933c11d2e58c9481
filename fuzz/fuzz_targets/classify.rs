//! Fuzz the request classifier and the policy decision on top of it.
//!
//! Input layout (text, so seeds can be written by hand): `METHOD TARGET` on the first line, then
//! `Name: value` header lines up to an empty line, then the request body. Bytes that cannot be a
//! method, target or header go to the functions anyway where the types allow it.
//!
//! Checks: no panic in `classify`, `Policy::evaluate` (with `examples/agents.yaml`),
//! `Policy::needs_body` or `Policy::masker`; `evaluate` classifies exactly as `classify` does and
//! denies what `classify` refuses; a request it allows is one `classify` accepted.
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

    let classified = classify(method, target, &headers);
    for id in IDENTITIES.iter() {
        let ev = POLICY.evaluate(id, method, target, &headers, body);
        match &classified {
            Ok(req) => {
                assert_eq!(
                    ev.request.as_ref(),
                    Some(req),
                    "evaluate classified {method} {target} differently"
                );
                let _ = POLICY.needs_body(id, req);
                assert_eq!(
                    POLICY.decide(id, req, body),
                    ev.decision,
                    "decide and evaluate disagree"
                );
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
});
