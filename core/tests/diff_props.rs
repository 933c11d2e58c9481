//! The approver's diff never shows a value the masker hid: every value it shows comes from the
//! documents as the masker delivers them, and a change to a masked value is shown only as
//! changed.
#![allow(clippy::unwrap_used, clippy::panic)]

use kubeleash_core::diff::{changes, render};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Secrets are strings starting with `SECRET-`; the stand-in masker replaces each with
/// `[masked]`, and sometimes a whole container holding one.
fn mask(v: &Value, whole: bool) -> Value {
    match v {
        Value::String(s) if s.starts_with("SECRET-") => json!("[masked]"),
        Value::Object(m) => {
            if whole && m.values().any(|x| x.to_string().contains("SECRET-")) {
                return json!("[masked]");
            }
            Value::Object(m.iter().map(|(k, x)| (k.clone(), mask(x, whole))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| mask(x, whole)).collect()),
        other => other.clone(),
    }
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(|n| json!(n)),
        "[a-c]{1,3}".prop_map(Value::from),
        "[a-c]{1,3}".prop_map(|s| Value::from(format!("SECRET-{s}"))),
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
    ]
}

fn doc() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 40, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-d]", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn no_masked_value_is_shown(before in doc(), after in doc(), whole in any::<bool>()) {
        let (bs, as_) = (mask(&before, whole), mask(&after, whole));
        let c = changes(Some(&before), Some(&after), Some(&bs), Some(&as_));
        let text = serde_json::to_string(&c).unwrap() + &render(&c);
        prop_assert!(!text.contains("SECRET-"), "{text}");
        // Something changed exactly when the documents differ.
        prop_assert_eq!(c.is_empty(), before == after);
    }

    #[test]
    fn without_a_shown_document_nothing_is_shown(before in doc(), after in doc()) {
        let c = changes(Some(&before), Some(&after), None, None);
        for ch in &c {
            prop_assert!(ch.masked, "{ch:?}");
        }
        let text = serde_json::to_string(&c).unwrap();
        prop_assert!(!text.contains("SECRET-"), "{text}");
    }
}

#[test]
fn a_deployment_scaled_and_its_image_changed() {
    let live = json!({"metadata": {"name": "web", "resourceVersion": "1"},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "w", "image": "web:1"}]}}}});
    let after = json!({"metadata": {"name": "web", "resourceVersion": "2"},
        "spec": {"replicas": 5, "template": {"spec": {"containers": [{"name": "w", "image": "web:2"}]}}}});
    let c = changes(Some(&live), Some(&after), Some(&live), Some(&after));
    assert_eq!(
        render(&c),
        "~ spec.replicas: 2 -> 5\n~ spec.template.spec.containers[0].image: web:1 -> web:2\n"
    );
}

#[test]
fn a_masked_value_changes_without_showing_either_side() {
    let live = json!({"data": {"password": "aHVudGVyMg==", "user": "YWRtaW4="}});
    let after = json!({"data": {"password": "c2VjcmV0Mg==", "user": "YWRtaW4=", "new": "eA=="}});
    let shown = |v: &Value| {
        let mut v = v.clone();
        for (_, x) in v["data"].as_object_mut().unwrap() {
            *x = json!("W21hc2tlZF0=");
        }
        v
    };
    let c = changes(
        Some(&live),
        Some(&after),
        Some(&shown(&live)),
        Some(&shown(&after)),
    );
    assert_eq!(
        render(&c),
        "+ data.new: W21hc2tlZF0=\n~ data.password: changed (masked)\n"
    );
    assert!(c.iter().all(|c| c.masked));
}

#[test]
fn a_create_lists_its_fields_and_a_delete_its_removals() {
    let obj = json!({"metadata": {"name": "c", "uid": "u-1", "managedFields": [{}]},
        "data": {"k": "v"}});
    assert_eq!(
        render(&changes(None, Some(&obj), None, Some(&obj))),
        "+ data.k: v\n+ metadata.name: c\n"
    );
    assert_eq!(
        render(&changes(Some(&obj), None, Some(&obj), None)),
        "- data.k: v\n- metadata.name: c\n"
    );
}
