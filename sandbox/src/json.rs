//! JSON output in the API server's field order.
//!
//! Objects are stored as `serde_json::Value`, whose maps are sorted by key; written that way a
//! list would put `items` before `kind`. The API server writes Go struct order (`kind`,
//! `apiVersion`, `metadata` first, `name` first in a container), and streaming clients and the
//! masker may depend on it, so writing goes through [`Ordered`].

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

/// Keys written first, in this order, wherever they appear; other keys follow sorted.
const FIRST: &[&str] = &[
    "kind",
    "apiVersion",
    "metadata",
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Serializes a `Value` with the API server's key order.
pub struct Ordered<'a>(pub &'a Value);

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for key in FIRST {
                    if let Some(v) = map.get(*key) {
                        out.serialize_entry(key, &Ordered(v))?;
                    }
                }
                for (k, v) in map {
                    if !FIRST.contains(&k.as_str()) {
                        out.serialize_entry(k, &Ordered(v))?;
                    }
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for v in items {
                    out.serialize_element(&Ordered(v))?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// Compact JSON bytes of anything serializable (structs keep their field order).
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Serializing a `Value` or a derive-generated struct of them cannot fail: every key is a
    // string and there are no non-finite floats in data that came from JSON.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Compact JSON bytes of a `Value` in the API server's key order.
pub fn ordered(value: &Value) -> Vec<u8> {
    to_vec(&Ordered(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_comes_before_items() {
        let v = serde_json::json!({"items": [{"value": 1, "name": "a"}], "metadata": {}, "kind": "PodList", "apiVersion": "v1"});
        let s = String::from_utf8(ordered(&v)).unwrap_or_default();
        assert_eq!(
            s,
            r#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[{"name":"a","value":1}]}"#
        );
    }
}
