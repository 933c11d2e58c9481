//! Runs every case of `tests/testdata/classify.json` (the worked examples `row-01`…`row-60` of
//! `docs/kubernetes-semantics.md`, "Request classification" and "Canonical request targets", plus
//! kubeleash's own refusals) through `classify`.
//!
//! A case is `{"id", "note", "method", "target", "headers"?: [[name, value], ...], "expect"}`
//! where `expect` is either the nine attribute fields or `{"refused": "<code>"}`.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;

use http::{HeaderMap, HeaderName, HeaderValue};
use kubeleash_core::request::classify;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    id: String,
    #[allow(dead_code)]
    note: String,
    method: String,
    target: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    expect: Value,
}

const ATTRIBUTE_FIELDS: [&str; 9] = [
    "resourceRequest",
    "verb",
    "apiGroup",
    "apiVersion",
    "namespace",
    "resource",
    "subresource",
    "name",
    "path",
];

fn load() -> Vec<Case> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/testdata/classify.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

fn header_map(case: &Case) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in &case.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|e| panic!("{}: header name {name:?}: {e}", case.id));
        let value = HeaderValue::from_bytes(value.as_bytes())
            .unwrap_or_else(|e| panic!("{}: header value {value:?}: {e}", case.id));
        map.append(name, value);
    }
    map
}

/// What `classify` gave, in the shape of `expect`.
fn outcome(case: &Case) -> Value {
    match classify(&case.method, &case.target, &header_map(case)) {
        Ok(req) => {
            let attributes = serde_json::to_value(&req.attributes).unwrap();
            let fields = ATTRIBUTE_FIELDS.map(|f| (f.to_string(), attributes[f].clone()));
            Value::Object(fields.into_iter().collect())
        }
        Err(e) => json!({ "refused": e.code() }),
    }
}

#[test]
fn corpus() {
    let cases = load();
    assert!(cases.len() >= 60, "corpus has only {} cases", cases.len());

    let mut ids = std::collections::HashSet::new();
    let mut failures = String::new();
    for case in &cases {
        assert!(
            ids.insert(case.id.as_str()),
            "duplicate case id {}",
            case.id
        );
        let expect = &case.expect;
        let well_formed = expect.get("refused").is_some_and(Value::is_string)
            && expect.as_object().is_some_and(|o| o.len() == 1)
            || ATTRIBUTE_FIELDS.iter().all(|f| expect.get(f).is_some())
                && expect
                    .as_object()
                    .is_some_and(|o| o.len() == ATTRIBUTE_FIELDS.len());
        assert!(well_formed, "{}: malformed expect {expect}", case.id);

        let got = outcome(case);
        if &got != expect {
            writeln!(
                failures,
                "{} ({} {}):\n  expected {expect}\n  got      {got}",
                case.id, case.method, case.target
            )
            .unwrap();
        }
    }
    assert!(failures.is_empty(), "failing cases:\n{failures}");
}

#[test]
fn corpus_covers_every_worked_example() {
    let cases = load();
    for row in 1..=60 {
        let id = format!("row-{row:02}");
        assert!(cases.iter().any(|c| c.id == id), "missing {id}");
    }
}
