//! Runs the shared decision corpus (`tests/testdata/decide.json`), which the Python and Node
//! bindings run too: every case must get the same effect and rule in every language.

use std::collections::HashMap;
use std::path::PathBuf;

use kubeleash_core::policy::{Identity, Policy};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    id: String,
    policy: String,
    method: String,
    target: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: Option<String>,
    /// A binary body (protobuf), as a path under tests/testdata.
    #[serde(default, rename = "bodyFile")]
    body_file: Option<String>,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Expect {
    effect: String,
    rule: Option<String>,
    #[serde(default)]
    reason_contains: Option<String>,
}

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/testdata")
}

#[test]
fn decision_corpus() -> Result<(), Box<dyn std::error::Error>> {
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(testdata().join("decide.json"))?)?;
    assert!(
        cases.len() >= 50,
        "the corpus shrank to {} cases",
        cases.len()
    );
    let mut policies: HashMap<String, Policy> = HashMap::new();
    let mut failures = Vec::new();
    for c in &cases {
        if !policies.contains_key(&c.policy) {
            let text = std::fs::read_to_string(testdata().join("policies").join(&c.policy))?;
            policies.insert(c.policy.clone(), Policy::from_yaml(&text)?);
        }
        let policy = &policies[&c.policy];
        let mut headers = http::HeaderMap::new();
        for (k, v) in &c.headers {
            headers.append(
                http::HeaderName::from_bytes(k.as_bytes())?,
                http::HeaderValue::from_str(v)?,
            );
        }
        let id = Identity::new(c.user.clone(), c.groups.clone());
        let body = match &c.body_file {
            Some(f) => Some(std::fs::read(testdata().join(f))?),
            None => c.body.as_ref().map(|b| b.as_bytes().to_vec()),
        };
        let d = policy
            .evaluate(&id, &c.method, &c.target, &headers, body.as_deref())
            .decision;
        let reason_ok = c
            .expect
            .reason_contains
            .as_deref()
            .is_none_or(|r| d.reason.contains(r));
        if d.effect.as_str() != c.expect.effect
            || d.rule.as_deref() != c.expect.rule.as_deref()
            || !reason_ok
        {
            failures.push(format!(
                "{}: {} {}\n    expected {} {:?}{}\n    got      {} {:?}: {}",
                c.id,
                c.method,
                c.target,
                c.expect.effect,
                c.expect.rule,
                c.expect
                    .reason_contains
                    .as_deref()
                    .map(|r| format!(" with reason containing {r:?}"))
                    .unwrap_or_default(),
                d.effect.as_str(),
                d.rule.as_deref(),
                d.reason
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    Ok(())
}

#[test]
fn example_policy_tests_pass() -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(testdata().join("../../examples/agents.yaml"))?;
    let report = Policy::from_yaml(&text)?.run_tests();
    assert!(report.outcomes.len() >= 10);
    let failed: Vec<String> = report
        .failures()
        .map(|o| {
            format!(
                "{}: got {} ({})",
                o.name,
                o.decision.effect.as_str(),
                o.decision.reason
            )
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    Ok(())
}
