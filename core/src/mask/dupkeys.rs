//! Whether a JSON value has an object with a key twice.
//!
//! The masker judges some objects by a sibling key (an `env` entry by its `name`, a probe
//! header by its `name`, anything a policy filter tests): a decoder keeps one of two equal keys
//! (Go's the last, others the first), so a value judged by one reading may be used under the
//! other. Such an object gets the strictest reading instead. Keys are compared after JSON
//! unescaping and ASCII case-insensitively, since Go's `encoding/json` matches field names that
//! way.

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The visit methods for the scalars a visitor does not look into (everything but strings),
/// each answering `$answer`.
macro_rules! opaque_scalars {
    ($value:ty, $answer:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<$value, E> {
            Ok($answer)
        }
        fn visit_i64<E>(self, _: i64) -> Result<$value, E> {
            Ok($answer)
        }
        fn visit_u64<E>(self, _: u64) -> Result<$value, E> {
            Ok($answer)
        }
        fn visit_f64<E>(self, _: f64) -> Result<$value, E> {
            Ok($answer)
        }
        fn visit_unit<E>(self) -> Result<$value, E> {
            Ok($answer)
        }
    };
}

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

    opaque_scalars!(Check, Check { dup: false });
    fn visit_str<E>(self, _: &str) -> Result<Check, E> {
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
        // Borrowed from the input unless a key has an escape: no allocation per key.
        let mut keys: Vec<Key<'de>> = Vec::new();
        while let Some(k) = map.next_key::<Key<'de>>()? {
            if keys.iter().any(|seen| seen.0.eq_ignore_ascii_case(&k.0)) {
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

/// An object's key: borrowed from the input unless it has an escape, so reading keys
/// allocates nothing in the common case (serde's own `Cow` always allocates).
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key<'de>, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(std::borrow::Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
        Ok(Key(std::borrow::Cow::Owned(s.to_string())))
    }
}

/// Whether `json` (a complete JSON value) has an object with a key twice; `true` when it is not
/// valid JSON (the strict answer).
pub(crate) fn has_duplicate_key(json: &[u8]) -> bool {
    serde_json::from_slice::<Check>(json).map_or(true, |c| c.dup)
}

/// What an element holds at one top-level key, for a filter that judges it by that member
/// alone (the built-in `env` and `httpHeaders` rules test `name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// No such member, or the element is not an object.
    Absent,
    /// The member is there and is not a string.
    NotString,
    Str(String),
}

/// An element read in one pass, without building it: its member at a key, and whether some
/// object in it has a key twice (as [`has_duplicate_key`] would say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) found: Found,
    pub(crate) dup: bool,
}

/// Read `json` (a complete JSON value) for [`Member`]: an error when it is not valid JSON, as
/// parsing it into a value would give.
pub(crate) fn read_member(json: &[u8], key: &str) -> Result<Member, serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(json);
    let m = TopSeed { key }.deserialize(&mut de)?;
    de.end()?;
    if m.dup {
        // After a key twice the pass skips what follows without checking it (as a duplicate
        // check may); the element must still be JSON a decoder accepts (no lone surrogate, no
        // number out of range, not too deep), as parsing it whole says. Rare: only a
        // duplicate pays for the second pass.
        serde_json::from_slice::<serde_json::Value>(json)?;
    }
    Ok(m)
}

struct TopSeed<'k> {
    key: &'k str,
}

impl<'de> serde::de::DeserializeSeed<'de> for TopSeed<'_> {
    type Value = Member;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Member, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_> {
    type Value = Member;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    opaque_scalars!(Member, absent());
    fn visit_str<E>(self, _: &str) -> Result<Member, E> {
        Ok(absent())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Member, A::Error> {
        let dup = CheckVisitor.visit_seq(seq)?.dup;
        Ok(Member {
            found: Found::Absent,
            dup,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Member, A::Error> {
        let mut dup = false;
        let mut found = Found::Absent;
        let mut keys: Vec<Key<'de>> = Vec::new();
        while let Some(k) = map.next_key::<Key<'de>>()? {
            let is_key = k.0 == self.key;
            if keys.iter().any(|seen| seen.0.eq_ignore_ascii_case(&k.0)) {
                dup = true;
            } else {
                keys.push(k);
            }
            if is_key {
                let v = map.next_value::<Captured>()?;
                dup |= v.dup;
                // With a key twice the answer is the strict one anyway: which is kept does
                // not matter.
                found = v.text.map_or(Found::NotString, Found::Str);
            } else if dup {
                map.next_value::<IgnoredAny>()?;
            } else {
                dup |= map.next_value::<Check>()?.dup;
            }
        }
        Ok(Member { found, dup })
    }
}

fn absent() -> Member {
    Member {
        found: Found::Absent,
        dup: false,
    }
}

/// A member's value: its text when it is a string, and the duplicate check below it.
struct Captured {
    text: Option<String>,
    dup: bool,
}

impl<'de> Deserialize<'de> for Captured {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Captured, D::Error> {
        d.deserialize_any(CapturedVisitor)
    }
}

struct CapturedVisitor;

impl<'de> Visitor<'de> for CapturedVisitor {
    type Value = Captured;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_str<E>(self, s: &str) -> Result<Captured, E> {
        Ok(Captured {
            text: Some(s.to_string()),
            dup: false,
        })
    }
    opaque_scalars!(
        Captured,
        Captured {
            text: None,
            dup: false,
        }
    );
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Captured, A::Error> {
        Ok(Captured {
            text: None,
            dup: CheckVisitor.visit_seq(seq)?.dup,
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Captured, A::Error> {
        Ok(Captured {
            text: None,
            dup: CheckVisitor.visit_map(map)?.dup,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The one-pass reading agrees with building the value and checking it twice, on any JSON
    /// proptest builds (objects with `name` members of every type, keys twice in any case).
    fn reference(json: &[u8], key: &str) -> Option<Member> {
        let v: serde_json::Value = serde_json::from_slice(json).ok()?;
        let found = match v.get(key) {
            None => Found::Absent,
            Some(serde_json::Value::String(s)) => Found::Str(s.clone()),
            Some(_) => Found::NotString,
        };
        Some(Member {
            found,
            dup: has_duplicate_key(json),
        })
    }

    fn json_value() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("name".to_string()),
            Just("Name".to_string()),
            Just("n\\u0061me".to_string()),
            Just("value".to_string()),
            "[a-z]{1,3}",
        ];
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("1".to_string()),
            Just("true".to_string()),
            "[a-zA-Z_ ]{0,8}".prop_map(|s| format!("\"{s}\"")),
        ];
        leaf.prop_recursive(4, 32, 5, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec((key.clone(), inner), 0..5).prop_map(|kv| {
                    let members: Vec<String> =
                        kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn one_pass_reading_agrees_with_the_value(json in json_value()) {
            let fast = read_member(json.as_bytes(), "name").ok();
            let slow = reference(json.as_bytes(), "name");
            match (&fast, &slow) {
                // With a key twice, only the duplicate matters (the answer is strict).
                (Some(f), Some(s)) if s.dup => prop_assert!(f.dup, "{}", json),
                _ => prop_assert_eq!(fast, slow, "{}", json),
            }
        }
    }

    #[test]
    fn invalid_json_is_an_error() {
        assert!(read_member(b"{", "name").is_err());
        // Invalid after a duplicate key, where the one pass stops checking: still an error.
        for bad in [
            &br#"{"name":"A","NAME":"B","value":"v","x":1e400}"#[..],
            br#"{"name":"A","NAME":"B","x":"\ud800"}"#,
            b"{\"name\":\"A\",\"NAME\":\"B\",\"x\":\"\xff\"}",
        ] {
            assert!(
                read_member(bad, "name").is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
            assert!(serde_json::from_slice::<serde_json::Value>(bad).is_err());
        }
        assert!(read_member(br#"{"name":"a"} x"#, "name").is_err());
        assert_eq!(
            read_member(br#"{"name":"API_KEY","value":"x"}"#, "name").ok(),
            Some(Member {
                found: Found::Str("API_KEY".into()),
                dup: false
            })
        );
    }

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
