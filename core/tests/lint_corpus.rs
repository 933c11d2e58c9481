//! `Policy::lint` against the corpus in `tests/lint/`: each policy's `# expect: CODE RULE`
//! lines are exactly its findings; the shipped examples have none.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;

use kubeleash_core::policy::Policy;

fn findings(text: &str) -> BTreeSet<(String, String)> {
    Policy::from_yaml(text)
        .unwrap()
        .lint()
        .into_iter()
        .map(|f| {
            assert!(f.at.is_some(), "{f:?} has no location");
            assert!(!f.fix.is_empty() && f.message.contains(&f.rule), "{f:?}");
            (f.code.to_string(), f.rule)
        })
        .collect()
}

#[test]
fn every_bad_policy_is_flagged_exactly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/lint");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let expected: BTreeSet<(String, String)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(|l| {
                let (code, rule) = l.split_once(' ').unwrap();
                (code.to_string(), rule.trim().to_string())
            })
            .collect();
        assert!(!expected.is_empty(), "{}: no expectations", path.display());
        assert_eq!(findings(&text), expected, "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 7, "the corpus has {seen} policies");
}

#[test]
fn the_examples_have_no_findings() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(findings(&text), BTreeSet::new(), "{}", path.display());
        }
    }
}
