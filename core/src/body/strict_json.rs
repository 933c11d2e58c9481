//! Strict JSON: `serde_json` with the checks the API server's decoder does not make.
//!
//! The API server decodes JSON last-wins for duplicate keys, substitutes U+FFFD for invalid
//! UTF-8 and accepts both unless the request asks for strict field validation. Wherever that
//! could make kubeleash and the API server read one body two ways, this parser refuses:
//!
//! - a key repeated in any object, compared after escape decoding (`"\u0068ostPID"` is
//!   `"hostPID"`), named with the JSON path of its object;
//! - invalid UTF-8 anywhere in the body;
//! - anything but whitespace after the value;
//! - arrays and objects nested deeper than the limit.
//!
//! The depth limit is checked by a linear, non-recursive scan before parsing, so deep input
//! is refused with a clear error and never reaches `serde_json`'s own recursion limit (which
//! stays as a backstop; it allows at most [`SERDE_JSON_MAX_DEPTH`] levels).

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::BodyError;

/// The deepest nesting `serde_json` parses: it counts down from 128 and fails on reaching 0,
/// so 127 nested arrays or objects parse and 128 do not.
pub(crate) const SERDE_JSON_MAX_DEPTH: usize = 127;

/// Parse `body` as one strict JSON value with arrays and objects nested at most `max_depth`
/// levels (never more than [`SERDE_JSON_MAX_DEPTH`]).
pub(crate) fn parse(body: &[u8], max_depth: usize) -> Result<Value, BodyError> {
    let text = std::str::from_utf8(body).map_err(|error| BodyError::InvalidUtf8 {
        offset: error.valid_up_to(),
    })?;
    let limit = max_depth.min(SERDE_JSON_MAX_DEPTH);
    if nesting_exceeds(body, limit) {
        return Err(BodyError::TooDeep { limit });
    }

    let failure = Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let seed = ValueSeed {
        depth: 0,
        max_depth: limit,
        path: &Path::Root,
        failure: &failure,
    };
    let value = seed
        .deserialize(&mut deserializer)
        .map_err(|error| failure.take().unwrap_or_else(|| invalid_json(&error)))?;
    deserializer
        .end()
        .map_err(|error| BodyError::TrailingData {
            line: error.line(),
            column: error.column(),
        })?;
    Ok(value)
}

/// The name of a JSON value's type, for messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn invalid_json(error: &serde_json::Error) -> BodyError {
    let (line, column) = (error.line(), error.column());
    let full = error.to_string();
    let suffix = format!(" at line {line} column {column}");
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
    BodyError::InvalidJson {
        message,
        line,
        column,
    }
}

/// Whether arrays and objects in `body` nest deeper than `limit`.
///
/// On valid JSON this is exact. On invalid JSON it is exact up to the first error, which is
/// all `serde_json` ever reads, so a body that passes never makes the parser go deeper.
fn nesting_exceeds(body: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Where a value sits in the body, as a linked list on the parser's stack: nothing is
/// allocated unless an error needs the path.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    /// `$`, `$.spec.containers[0]`, `$.metadata.labels["app.kubernetes.io/name"]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut segments = Vec::new();
        let mut at = self;
        loop {
            match at {
                Path::Root => break,
                Path::Key(parent, key) => {
                    segments.push(Segment::Key(key));
                    at = parent;
                }
                Path::Index(parent, index) => {
                    segments.push(Segment::Index(*index));
                    at = parent;
                }
            }
        }
        f.write_str("$")?;
        for segment in segments.iter().rev() {
            match segment {
                Segment::Key(key) if is_identifier(key) => write!(f, ".{key}")?,
                Segment::Key(key) => write!(f, "[{key:?}]")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Deserializes one JSON value at `path`, enclosed by `depth` arrays and objects.
///
/// A refusal that `serde_json` cannot express (a duplicate key, too deep) is stored in
/// `failure` and the parse aborted with a custom error; [`parse`] returns the stored one.
struct ValueSeed<'a> {
    depth: usize,
    max_depth: usize,
    path: &'a Path<'a>,
    failure: &'a Cell<Option<BodyError>>,
}

impl ValueSeed<'_> {
    fn fail<E: de::Error>(&self, error: BodyError) -> E {
        let message = error.to_string();
        self.failure.set(Some(error));
        E::custom(message)
    }

    /// The depth of the array or object this seed's value opens, if within the limit.
    fn enter<E: de::Error>(&self) -> Result<usize, E> {
        let depth = self.depth + 1;
        if depth > self.max_depth {
            return Err(self.fail(BodyError::TooDeep {
                limit: self.max_depth,
            }));
        }
        Ok(depth)
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // serde_json refuses numbers out of range, so this is always finite.
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let depth = self.enter()?;
        let mut items = Vec::new();
        loop {
            let path = Path::Index(self.path, items.len());
            let seed = ValueSeed {
                depth,
                max_depth: self.max_depth,
                path: &path,
                failure: self.failure,
            };
            match seq.next_element_seed(seed)? {
                Some(item) => items.push(item),
                None => break,
            }
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let depth = self.enter()?;
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(self.fail(BodyError::DuplicateKey {
                    key,
                    path: self.path.to_string(),
                }));
            }
            let value = {
                let path = Path::Key(self.path, &key);
                access.next_value_seed(ValueSeed {
                    depth,
                    max_depth: self.max_depth,
                    path: &path,
                    failure: self.failure,
                })?
            };
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(body: &str) -> &'static str {
        match parse(body.as_bytes(), 128) {
            Ok(_) => "ok",
            Err(error) => error.code(),
        }
    }

    #[test]
    fn parses_plain_json() {
        assert_eq!(
            parse(br#" {"a":[1,-2,3.5,"x",true,null,{}]} "#, 128).ok(),
            Some(json!({"a":[1,-2,3.5,"x",true,null,{}]}))
        );
        assert_eq!(
            parse(br#"18446744073709551615"#, 128).ok(),
            Some(json!(u64::MAX))
        );
    }

    #[test]
    fn duplicate_keys_are_refused_with_their_path() {
        let error = parse(
            br#"{"spec":{"containers":[{"name":"a"},{"securityContext":{"privileged":false,"privileged":true}}]}}"#,
            128,
        );
        assert_eq!(
            error,
            Err(BodyError::DuplicateKey {
                key: "privileged".into(),
                path: "$.spec.containers[1].securityContext".into(),
            })
        );
        let error = parse(br#"{"\u0068ostPID":1,"hostPID":2}"#, 128);
        assert_eq!(
            error,
            Err(BodyError::DuplicateKey {
                key: "hostPID".into(),
                path: "$".into(),
            })
        );
        let error = parse(
            br#"{"metadata":{"labels":{"app.kubernetes.io/name":"a","app.kubernetes.io/name":"b"}}}"#,
            128,
        );
        assert_eq!(
            error,
            Err(BodyError::DuplicateKey {
                key: "app.kubernetes.io/name".into(),
                path: "$.metadata.labels".into(),
            })
        );
    }

    #[test]
    fn keys_differing_only_in_case_are_distinct() {
        assert_eq!(code(r#"{"hostPID":false,"HostPID":true}"#), "ok");
    }

    #[test]
    fn path_quotes_keys_that_are_not_identifiers() {
        let root = Path::Root;
        let metadata = Path::Key(&root, "metadata");
        let labels = Path::Key(&metadata, "app.kubernetes.io/name");
        let item = Path::Index(&labels, 2);
        assert_eq!(
            item.to_string(),
            r#"$.metadata["app.kubernetes.io/name"][2]"#
        );
        assert_eq!(Path::Root.to_string(), "$");
    }

    #[test]
    fn invalid_utf8_trailing_data_and_syntax() {
        assert_eq!(
            parse(b"{\"name\":\"a\xff\"}", 128),
            Err(BodyError::InvalidUtf8 { offset: 10 })
        );
        assert_eq!(
            parse(br#"{"hostPID":true} x"#, 128),
            Err(BodyError::TrailingData {
                line: 1,
                column: 18
            })
        );
        assert_eq!(code(r#"{"a":1}{"a":2}"#), "trailing-data");
        assert_eq!(code("{'a':1}"), "invalid-json");
        assert_eq!(code(r#"{"a":"\ud800"}"#), "invalid-json");
        assert_eq!(code("{\"a\":\"\u{1}\"}"), "invalid-json");
        assert_eq!(code("\u{feff}{}"), "invalid-json");
        assert_eq!(code("1e400"), "invalid-json");
        assert_eq!(code(""), "invalid-json");
        assert_eq!(
            parse(b"{\"a\":}", 128),
            Err(BodyError::InvalidJson {
                message: "expected value".into(),
                line: 1,
                column: 6,
            })
        );
    }

    #[test]
    fn depth_is_limited_before_serde_json_gives_up() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse(nested(127).as_bytes(), 128).is_ok());
        assert_eq!(
            parse(nested(128).as_bytes(), 128),
            Err(BodyError::TooDeep { limit: 127 })
        );
        assert!(parse(nested(10).as_bytes(), 10).is_ok());
        assert_eq!(
            parse(nested(11).as_bytes(), 10),
            Err(BodyError::TooDeep { limit: 10 })
        );
        assert_eq!(
            parse(nested(1_000_000).as_bytes(), 128),
            Err(BodyError::TooDeep { limit: 127 })
        );
        assert_eq!(parse(b"1", 0).ok(), Some(json!(1)));
        assert_eq!(parse(b"{}", 0), Err(BodyError::TooDeep { limit: 0 }));
    }

    #[test]
    fn brackets_in_strings_do_not_count() {
        let body = format!(r#"{{"a":"{}\"{}"}}"#, "[".repeat(300), "{".repeat(300));
        assert!(parse(body.as_bytes(), 2).is_ok());
    }

    #[test]
    fn visitor_depth_check_agrees_with_the_scan() {
        // The scan runs first; the visitor's own check must refuse the same bodies.
        let failure = Cell::new(None);
        let mut deserializer = serde_json::Deserializer::from_str(r#"{"a":[[1]]}"#);
        let seed = ValueSeed {
            depth: 0,
            max_depth: 2,
            path: &Path::Root,
            failure: &failure,
        };
        assert!(seed.deserialize(&mut deserializer).is_err());
        assert_eq!(failure.take(), Some(BodyError::TooDeep { limit: 2 }));
    }

    #[test]
    fn scan_matches_real_depth() {
        for (body, depth) in [
            ("1", 0),
            ("[]", 1),
            (r#"{"a":{"b":[{}]}}"#, 4),
            (r#"[{"]":"}"},["\\"]]"#, 2),
        ] {
            assert!(!nesting_exceeds(body.as_bytes(), depth), "{body}");
            if depth > 0 {
                assert!(nesting_exceeds(body.as_bytes(), depth - 1), "{body}");
            }
        }
    }
}
