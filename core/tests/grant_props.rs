//! `policy::grant` over arbitrary object bodies: a grant covers the approved request, covers a
//! request that differs only in a widened field (within its range) or the name (matching the
//! glob), and covers no request that differs anywhere else.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use kubeleash_core::policy::grant::{Grant, Widening};
use kubeleash_core::request::{Request, classify};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i32>().prop_map(|n| json!(n)),
        "[a-z0-9./-]{0,8}".prop_map(Value::String),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ]
}

/// An object of up to three levels with keys from a small alphabet (so mutations collide).
fn object() -> impl Strategy<Value = Value> {
    let value = leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-d]", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    });
    prop::collection::btree_map("[a-d]", value, 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()))
}

fn patch(name: &str) -> Request {
    let mut h = http::HeaderMap::new();
    h.insert(
        "content-type",
        "application/merge-patch+json".parse().unwrap(),
    );
    classify(
        "PATCH",
        &format!("/apis/apps/v1/namespaces/dev/deployments/{name}"),
        &h,
    )
    .unwrap()
}

/// Every leaf path of `v` as `(pointer, dotted path)`.
fn leaves(v: &Value, pointer: String, dotted: String, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                let d = if dotted.is_empty() {
                    k.clone()
                } else {
                    format!("{dotted}.{k}")
                };
                leaves(c, format!("{pointer}/{k}"), d, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, c) in a.iter().enumerate() {
                leaves(c, format!("{pointer}/{i}"), format!("{dotted}[{i}]"), out);
            }
        }
        _ => out.push((pointer, dotted)),
    }
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// Whether `g` covers `request` with `body`, asserting that the grant read back from its
/// [`GrantForm`] (as another replica reads it from the cluster) says the same.
fn covers(g: &Grant, request: &Request, body: &[u8]) -> bool {
    let text = serde_json::to_string(&g.form()).unwrap();
    let kept = Grant::from_form(serde_json::from_str(&text).unwrap()).unwrap();
    let (here, there) = (g.covers(request, body), kept.covers(request, body));
    assert_eq!(here, there, "a grant and its form disagree: {text}");
    here
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The approved body with a number field at `spec.replicas`, widened to a range: any change
    /// to another leaf is not covered; a change of the field within the range is.
    #[test]
    fn only_the_widened_field_may_change(
        mut body in object(),
        approved in 0i64..10,
        other in -5i64..15,
        pick in any::<prop::sample::Index>(),
        replacement in leaf(),
    ) {
        body["spec"] = json!({"replicas": approved});
        let widening = Widening {
            fields: vec![format!("spec.replicas={}..{}", approved - 2, approved + 2).parse().unwrap()],
            ..Widening::default()
        };
        let g = Grant::new(&patch("web"), &bytes(&body), &widening).unwrap();
        prop_assert!(covers(&g, &patch("web"), &bytes(&body)), "the approved request");
        let mut moved = body.clone();
        moved["spec"]["replicas"] = json!(other);
        let within = (approved - 2..=approved + 2).contains(&other);
        prop_assert_eq!(covers(&g, &patch("web"), &bytes(&moved)), within);
        prop_assert!(!covers(&g, &patch("web2"), &bytes(&body)), "names are not widened");
        let mut paths = Vec::new();
        leaves(&body, String::new(), String::new(), &mut paths);
        paths.retain(|(p, _)| p != "/spec/replicas");
        if !paths.is_empty() {
            let (pointer, _) = pick.get(&paths).clone();
            let mut changed = body.clone();
            let slot = changed.pointer_mut(&pointer).unwrap();
            if *slot != replacement {
                *slot = replacement;
                prop_assert!(!covers(&g, &patch("web"), &bytes(&changed)), "changed {}", pointer);
            }
        }
        // A field the approved body lacks, added, is another request.
        let mut added = body.clone();
        added["zz"] = json!(1);
        prop_assert!(!covers(&g, &patch("web"), &bytes(&added)));
        // Leaving the widened field out is another request too.
        let mut without = body.clone();
        without["spec"].as_object_mut().unwrap().remove("replicas");
        prop_assert!(!covers(&g, &patch("web"), &bytes(&without)));
    }

    /// Widened by name only: the body must decode to the approved one.
    #[test]
    fn a_name_glob_widens_the_name_and_nothing_else(
        body in object(),
        suffix in "[a-z0-9]{1,6}",
    ) {
        let widening = Widening { names: Some("web-*".into()), ..Widening::default() };
        let raw = bytes(&body);
        let g = Grant::new(&patch("web-0"), &raw, &widening).unwrap();
        let name = format!("web-{suffix}");
        prop_assert!(covers(&g, &patch(&name), &raw));
        let db = format!("db-{}", suffix);
        prop_assert!(!covers(&g, &patch(&db), &raw));
        let mut other = body.clone();
        other["zz"] = json!(suffix);
        prop_assert!(!covers(&g, &patch(&name), &bytes(&other)));
    }
}

#[test]
fn an_axis_that_does_not_fit_the_request_is_refused() {
    let body = br#"{"spec":{"replicas":3}}"#;
    let cases = [
        ("spec.replicas=4..5", "outside the range"),
        ("spec.other=1..2", "no field"),
        ("spec.replicas=web-*", "outside the range"),
    ];
    for (range, why) in cases {
        let w = Widening {
            fields: vec![range.parse().unwrap()],
            ..Widening::default()
        };
        let e = Grant::new(&patch("web"), body, &w).unwrap_err().to_string();
        assert!(e.contains(why), "{range}: {e}");
    }
    let w = Widening {
        names: Some("db-*".into()),
        ..Widening::default()
    };
    let e = Grant::new(&patch("web"), body, &w).unwrap_err().to_string();
    assert!(e.contains("does not match"), "{e}");
    let mut h = http::HeaderMap::new();
    h.insert("content-type", "application/json".parse().unwrap());
    let list = classify("GET", "/api/v1/namespaces/dev/configmaps", &h).unwrap();
    let w = Widening {
        names: Some("*".into()),
        ..Widening::default()
    };
    assert!(
        Grant::new(&list, b"", &w).is_err(),
        "a list names no object"
    );
}

/// A body that names another object than the path cannot be widened by name: the grant would
/// not cover the very request it is made of (found by the grant fuzzer: a merge patch of
/// deployments/web-1 whose body says `metadata.name: app-1`, widened to `web-*`).
#[test]
fn a_body_naming_another_object_is_not_widened_by_name() {
    let w = Widening {
        names: Some("web-*".into()),
        ..Widening::default()
    };
    let body = br#"{"metadata":{"name":"app-1"},"spec":{"replicas":3}}"#;
    let e = Grant::new(&patch("web-1"), body, &w)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("body names `app-1`, but its path names `web-1`"),
        "{e}"
    );
    // The same name in both: widened, and the grant covers its own request.
    let body = br#"{"metadata":{"name":"web-1"},"spec":{"replicas":3}}"#;
    let g = Grant::new(&patch("web-1"), body, &w).unwrap();
    assert!(g.covers(&patch("web-1"), body));
}

/// A grant read back from its form is the grant: keys in another order are the same body, and a
/// form that could not have come from a grant is refused.
#[test]
fn a_grant_form_keeps_digests_and_refuses_forgeries() {
    let w = Widening {
        fields: vec!["spec.replicas=1..5".parse().unwrap()],
        ..Widening::default()
    };
    let body = br#"{"spec":{"replicas":2,"paused":false},"metadata":{"labels":{"b":"1","a":"2"}}}"#;
    let g = Grant::new(&patch("web"), body, &w).unwrap();
    let form = g.form();
    let text = serde_json::to_string(&form).unwrap();
    assert!(
        !text.contains("paused") && !text.contains("labels"),
        "{text}"
    );
    let reordered =
        br#"{"metadata":{"labels":{"a":"2","b":"1"}},"spec":{"paused":false,"replicas":4}}"#;
    assert!(covers(&g, &patch("web"), reordered));
    assert!(!covers(
        &g,
        &patch("web"),
        br#"{"spec":{"replicas":4,"paused":true},"metadata":{"labels":{"b":"1","a":"2"}}}"#
    ));
    for forged in [
        json!({"body": "value:00"}),
        json!({"body": "bytes:zz"}),
        json!({"body": format!("script:{}", "0".repeat(64))}),
        json!({"nameAt": 3}),
        json!({"widening": {"fields": [{"path": "a..b", "min": 1.0, "max": 2.0}]}}),
    ] {
        let mut v = serde_json::to_value(&form).unwrap();
        for (k, x) in forged.as_object().unwrap() {
            v[k] = x.clone();
        }
        let f: kubeleash_core::policy::grant::GrantForm = serde_json::from_value(v).unwrap();
        assert!(Grant::from_form(f).is_err(), "{forged}");
    }
}
