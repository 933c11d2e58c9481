//! Whether a JSON value has an object with a key twice.
//!
//! The masker judges some objects by a sibling key (an `env` entry by its `name`, a probe
//! header by its `name`, anything a policy filter tests): a decoder keeps one of two equal keys
//! (Go's the last, others the first), so a value judged by one reading may be used under the
//! other. Such an object gets the strictest reading instead. Keys are compared after JSON
//! unescaping and ASCII case-insensitively, since Go's `encoding/json` matches field names that
//! way.

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Deserializes any JSON value; `dup` is whether some object in it has a key twice.
struct Check {
    dup: bool,
}

impl<'de> Deserialize<'de> for Check {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Check, D::Error> {
        d.deserialize_any(CheckVisitor)
    }
}

struct CheckVisitor;

impl<'de> Visitor<'de> for CheckVisitor {
    type Value = Check;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Check, E> {
        Ok(Check { dup: false })
    }
    fn visit_i64<E>(self, _: i64) -> Result<Check, E> {
        Ok(Check { dup: false })
    }
    fn visit_u64<E>(self, _: u64) -> Result<Check, E> {
        Ok(Check { dup: false })
    }
    fn visit_f64<E>(self, _: f64) -> Result<Check, E> {
        Ok(Check { dup: false })
    }
    fn visit_str<E>(self, _: &str) -> Result<Check, E> {
        Ok(Check { dup: false })
    }
    fn visit_unit<E>(self) -> Result<Check, E> {
        Ok(Check { dup: false })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Check, A::Error> {
        let mut dup = false;
        while let Some(c) = seq.next_element::<Check>()? {
            dup |= c.dup;
        }
        Ok(Check { dup })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Check, A::Error> {
        let mut dup = false;
        let mut keys: Vec<String> = Vec::new();
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let k = k.to_ascii_lowercase();
            if keys.contains(&k) {
                dup = true;
            } else {
                keys.push(k);
            }
            if dup {
                map.next_value::<IgnoredAny>()?;
            } else {
                dup |= map.next_value::<Check>()?.dup;
            }
        }
        Ok(Check { dup })
    }
}

/// Whether `json` (a complete JSON value) has an object with a key twice; `true` when it is not
/// valid JSON (the strict answer).
pub(crate) fn has_duplicate_key(json: &[u8]) -> bool {
    serde_json::from_slice::<Check>(json).map_or(true, |c| c.dup)
}

#[cfg(test)]
mod tests {
    use super::has_duplicate_key;

    #[test]
    fn finds_duplicates_at_any_depth_in_any_spelling() {
        assert!(has_duplicate_key(br#"{"name":"A","value":"x","name":"B"}"#));
        assert!(has_duplicate_key(br#"{"name":"A","n\u0061me":"B"}"#));
        assert!(has_duplicate_key(br#"{"name":"A","Name":"B"}"#));
        assert!(has_duplicate_key(br#"[{"a":{"b":1,"b":2}}]"#));
        assert!(has_duplicate_key(b"{"));
        assert!(!has_duplicate_key(br#"{"name":"A","value":{"name":"B"}}"#));
        assert!(!has_duplicate_key(br#"[{"a":1},{"a":2}]"#));
        assert!(!has_duplicate_key(br#""x""#));
    }
}
