//! A policy's own `tests:`: requests with the decision they must get, run by `kubeleash test`.

use std::collections::HashMap;

use serde::Serialize;
use serde_saphyr::Location as SrcLoc;

use super::error::PolicyError;
use super::spec::{S, TestDoc};
use super::{Decision, Effect, Identity, Policy};

/// One test case from a policy's `tests:`.
#[derive(Debug, Clone)]
pub(crate) struct PolicyTest {
    pub name: String,
    pub identity: Identity,
    pub method: String,
    pub target: String,
    pub headers: http::HeaderMap,
    pub body: Option<Vec<u8>>,
    pub expect: Effect,
    pub rule: Option<String>,
}

impl PolicyTest {
    pub(crate) fn from_doc(
        t: &S<TestDoc>,
        rules: &HashMap<String, SrcLoc>,
    ) -> Result<Self, PolicyError> {
        let d = &t.value;
        let name = d.name.value.clone();
        let (method, target) = d
            .request
            .value
            .trim()
            .split_once(' ')
            .map(|(m, t)| (m.trim().to_string(), t.trim().to_string()))
            .filter(|(m, t)| !m.is_empty() && !t.is_empty() && !t.contains(' '))
            .ok_or_else(|| {
                PolicyError::new(
                    "test-request",
                    format!(
                        "test `{name}` has request `{}`, which is not `METHOD TARGET`",
                        d.request.value
                    ),
                )
                .at(&d.request.referenced)
                .help("write the request line as sent, e.g. `GET /api/v1/namespaces/dev/pods`")
            })?;
        let expect = match d.expect.value.as_str() {
            "allow" => Effect::Allow,
            "deny" => Effect::Deny,
            "approve" => Effect::Approve,
            other => {
                return Err(PolicyError::new(
                    "test-expect",
                    format!("test `{name}` expects `{other}`"),
                )
                .at(&d.expect.referenced)
                .help("expect one of allow, deny, approve"));
            }
        };
        if let Some(rule) = d.rule.as_ref().filter(|r| !rules.contains_key(*r)) {
            return Err(PolicyError::new(
                "test-rule",
                format!("test `{name}` expects rule `{rule}`, which the policy does not have"),
            )
            .at(&t.referenced));
        }
        let mut headers = http::HeaderMap::new();
        for h in &d.headers {
            let parsed = h.split_once(':').and_then(|(k, v)| {
                Some((
                    http::HeaderName::from_bytes(k.trim().as_bytes()).ok()?,
                    http::HeaderValue::from_str(v.trim()).ok()?,
                ))
            });
            let Some((k, v)) = parsed else {
                return Err(PolicyError::new(
                    "test-header",
                    format!("test `{name}` has header `{h}`, which is not `Name: value`"),
                )
                .at(&t.referenced));
            };
            headers.append(k, v);
        }
        let body = d.body.as_ref().map(|b| match b {
            serde_json::Value::String(s) => s.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        });
        Ok(PolicyTest {
            name,
            identity: Identity::new(d.user.clone().unwrap_or_default(), d.groups.clone()),
            method,
            target,
            headers,
            body,
            expect,
            rule: d.rule.clone(),
        })
    }
}

/// The outcome of one policy test.
#[derive(Debug, Clone, Serialize)]
pub struct TestOutcome {
    /// The test's name.
    pub name: String,
    /// The request line it sent.
    pub request: String,
    /// The effect it expected.
    pub expect: Effect,
    /// The rule it expected to decide, if it named one.
    pub expect_rule: Option<String>,
    /// What the policy decided.
    pub decision: Decision,
    /// Whether the decision matched the expectation.
    pub passed: bool,
}

/// The outcomes of all of a policy's tests.
#[derive(Debug, Clone, Serialize)]
pub struct TestReport {
    /// Every outcome, in the order the tests are written.
    pub outcomes: Vec<TestOutcome>,
}

impl TestReport {
    /// Whether every test passed.
    pub fn passed(&self) -> bool {
        self.outcomes.iter().all(|o| o.passed)
    }

    /// The tests that failed.
    pub fn failures(&self) -> impl Iterator<Item = &TestOutcome> {
        self.outcomes.iter().filter(|o| !o.passed)
    }
}

pub(crate) fn run(policy: &Policy) -> TestReport {
    let outcomes = policy
        .inner
        .tests
        .iter()
        .map(|t| {
            let eval = policy.evaluate(
                &t.identity,
                &t.method,
                &t.target,
                &t.headers,
                t.body.as_deref(),
            );
            let decision = eval.decision;
            let passed = decision.effect == t.expect
                && t.rule
                    .as_deref()
                    .is_none_or(|r| decision.rule.as_deref() == Some(r));
            TestOutcome {
                name: t.name.clone(),
                request: format!("{} {}", t.method, t.target),
                expect: t.expect,
                expect_rule: t.rule.clone(),
                decision,
                passed,
            }
        })
        .collect();
    TestReport { outcomes }
}
