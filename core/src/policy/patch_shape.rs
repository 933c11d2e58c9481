//! Which patch bodies can be judged from their text (`docs/kubernetes-semantics.md`, "Patches
//! judged from their text").
//!
//! A condition judged on a patch body sees what the patch sets, not what it removes. A JSON
//! patch's effect depends on the stored object throughout (`move`, `copy`, `remove`); a merge or
//! strategic merge patch removes with `null` and with the directives `$patch: delete` and
//! `$patch: replace`, `$retainKeys` and `$deleteFromPrimitiveList/<field>`; a server-side apply
//! removes every field its field manager owned and the body leaves out. None of that shows in
//! the text, so such bodies are not judged as if it did.
//!
//! Left out on purpose: `$setElementOrder/<field>` only orders a list (elements it does not name
//! are kept), and `$patch: merge` is the default behaviour; kubectl sends both in ordinary
//! `kubectl apply` and `kubectl edit` patches.

use serde_json::Value;

use crate::body::{BodyKind, DecodedBody};

/// How a decoded body may be judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// What the body sets is all it does: conditions are judged on it.
    Plain,
    /// A server-side apply: it may also remove fields the body omits, which makes a condition
    /// that tests for absence or inequality unjudgeable.
    Apply,
    /// What it does depends on the stored object: the words say why.
    Opaque(&'static str),
}

/// The shape of a decoded body.
pub(crate) fn shape(body: &DecodedBody) -> Shape {
    match body.kind {
        BodyKind::JsonPatch => Shape::Opaque(
            "a JSON patch, whose result depends on the stored object (send a merge patch or apply instead)",
        ),
        BodyKind::MergePatch if has_null(&body.value) => Shape::Opaque(
            "a merge patch that removes fields with `null` (leave removals to a separate request the rule does not cover)",
        ),
        BodyKind::StrategicMergePatch
            if has_null(&body.value) || has_removal_directive(&body.value) =>
        {
            Shape::Opaque(
                "a strategic merge patch that removes fields (`null`, `$patch: delete` or `replace`, `$retainKeys`, `$deleteFromPrimitiveList`)",
            )
        }
        BodyKind::ApplyPatch if has_null(&body.value) => {
            Shape::Opaque("a server-side apply that removes fields with `null`")
        }
        BodyKind::ApplyPatch => Shape::Apply,
        _ => Shape::Plain,
    }
}

/// Whether a `null` appears anywhere in `v` (a removal in merge, strategic merge and apply).
fn has_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(items) => items.iter().any(has_null),
        Value::Object(fields) => fields.values().any(has_null),
        _ => false,
    }
}

/// Whether a strategic merge directive that removes appears anywhere in `v`. A key starting with
/// `$` that is not a known harmless directive counts too: the API server either refuses it or
/// reads it as a directive kubeleash does not know.
fn has_removal_directive(v: &Value) -> bool {
    match v {
        Value::Array(items) => items.iter().any(has_removal_directive),
        Value::Object(fields) => fields.iter().any(|(k, v)| {
            let removes = match k.strip_prefix('$') {
                None => false,
                Some("patch") => v.as_str() != Some("merge"),
                Some(rest) => !rest.starts_with("setElementOrder/"),
            };
            removes || has_removal_directive(v)
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape_of(kind: BodyKind, value: Value) -> Shape {
        shape(&DecodedBody { kind, value })
    }

    #[test]
    fn removals_make_a_patch_opaque() {
        use BodyKind::*;
        let opaque = |k, v| matches!(shape_of(k, v), Shape::Opaque(_));
        assert!(opaque(JsonPatch, json!([])));
        assert!(opaque(
            MergePatch,
            json!({"spec": {"securityContext": null}})
        ));
        assert!(!opaque(MergePatch, json!({"spec": {"replicas": 2}})));
        for v in [
            json!({"spec": {"securityContext": {"$patch": "delete"}}}),
            json!({"spec": {"containers": [{"name": "c", "$patch": "replace"}]}}),
            json!({"spec": {"$retainKeys": ["replicas"]}}),
            json!({"spec": {"$deleteFromPrimitiveList/finalizers": ["x"]}}),
            json!({"spec": {"$unknown": 1}}),
            json!({"a": [{"b": null}]}),
        ] {
            assert!(opaque(StrategicMergePatch, v.clone()), "{v}");
        }
        for v in [
            json!({"spec": {"$setElementOrder/containers": [{"name": "c"}]}}),
            json!({"spec": {"$patch": "merge", "replicas": 1}}),
        ] {
            assert_eq!(
                shape_of(StrategicMergePatch, v.clone()),
                Shape::Plain,
                "{v}"
            );
        }
        assert_eq!(shape_of(ApplyPatch, json!({"spec": {}})), Shape::Apply);
        assert!(opaque(ApplyPatch, json!({"spec": {"x": null}})));
        assert_eq!(shape_of(Object, json!({"spec": null})), Shape::Plain);
    }
}
