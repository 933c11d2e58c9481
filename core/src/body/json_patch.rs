//! Shape checks for RFC 6902 JSON patches.
//!
//! The checks are as strict as RFC 6902 and at least as strict as the API server's
//! `evanphx/json-patch`, so a policy reading a patch's operations never meets one that the API
//! server reads differently. In particular a `path` must be a JSON Pointer: `evanphx/json-patch`
//! splits any string at `/` and drops the first part, so it applies `x/spec` to `/spec`, which a
//! policy comparing pointers would miss.

use serde_json::Value;

use super::BodyError;
use super::error::Quoted;
use super::strict_json::type_name;

/// The operations RFC 6902 defines, which are the ones the API server applies.
const OPERATIONS: [&str; 6] = ["add", "remove", "replace", "move", "copy", "test"];

/// Check that `value` is a JSON patch of at most `max_ops` well-formed operations.
pub(crate) fn validate(value: &Value, max_ops: usize) -> Result<(), BodyError> {
    let Value::Array(operations) = value else {
        return Err(invalid(format!(
            "the body is a JSON {}, not an array",
            type_name(value)
        )));
    };
    if operations.len() > max_ops {
        return Err(BodyError::TooManyPatchOps {
            limit: max_ops,
            actual: operations.len(),
        });
    }
    for (index, operation) in operations.iter().enumerate() {
        validate_operation(index, operation)?;
    }
    Ok(())
}

fn validate_operation(index: usize, operation: &Value) -> Result<(), BodyError> {
    let Value::Object(fields) = operation else {
        return Err(invalid(format!(
            "the operation at `$[{index}]` is a JSON {}, not an object",
            type_name(operation)
        )));
    };
    let op = match fields.get("op") {
        Some(Value::String(op)) => op.as_str(),
        Some(other) => {
            return Err(invalid(format!(
                "the operation at `$[{index}]` has an `op` that is a JSON {}, not a string",
                type_name(other)
            )));
        }
        None => {
            return Err(invalid(format!(
                "the operation at `$[{index}]` has no `op`"
            )));
        }
    };
    if !OPERATIONS.contains(&op) {
        return Err(invalid(format!(
            "the operation at `$[{index}]` has the unknown `op` `{}`",
            Quoted(op)
        )));
    }
    pointer_field(index, fields, "path")?;
    if matches!(op, "move" | "copy") {
        pointer_field(index, fields, "from")?;
    }
    Ok(())
}

/// Check that `fields[name]` is a string holding a JSON Pointer.
fn pointer_field(
    index: usize,
    fields: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<(), BodyError> {
    match fields.get(name) {
        Some(Value::String(pointer)) if is_json_pointer(pointer) => Ok(()),
        Some(Value::String(pointer)) => Err(invalid(format!(
            "the operation at `$[{index}]` has the `{name}` `{}`, which is not a JSON Pointer \
             (it must be empty or start with `/`, and each `~` must be followed by `0` or `1`)",
            Quoted(pointer)
        ))),
        Some(other) => Err(invalid(format!(
            "the operation at `$[{index}]` has a `{name}` that is a JSON {}, not a string",
            type_name(other)
        ))),
        None => Err(invalid(format!(
            "the operation at `$[{index}]` has no `{name}`"
        ))),
    }
}

/// RFC 6901: empty, or `/`-prefixed reference tokens in which `~` is always `~0` or `~1`.
fn is_json_pointer(pointer: &str) -> bool {
    if !(pointer.is_empty() || pointer.starts_with('/')) {
        return false;
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return false;
        }
    }
    true
}

fn invalid(message: String) -> BodyError {
    BodyError::InvalidJsonPatch { message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(value: Value) -> &'static str {
        match validate(&value, 3) {
            Ok(()) => "ok",
            Err(error) => error.code(),
        }
    }

    #[test]
    fn pointers() {
        for ok in ["", "/", "/a", "/a~0b/~1c", "/spec/containers/0", "/~01"] {
            assert!(is_json_pointer(ok), "{ok}");
        }
        for bad in ["a", "x/spec", "/a~", "/a~2", "/~x", "~1"] {
            assert!(!is_json_pointer(bad), "{bad}");
        }
    }

    #[test]
    fn operations() {
        assert_eq!(code(json!([])), "ok");
        assert_eq!(
            code(json!([
                {"op": "add", "path": "/a", "value": 1},
                {"op": "copy", "from": "/a", "path": "/b"},
                {"op": "test", "path": "", "value": {}}
            ])),
            "ok"
        );
        assert_eq!(code(json!({"op": "add"})), "invalid-json-patch");
        assert_eq!(code(json!([1])), "invalid-json-patch");
        assert_eq!(code(json!([{"path": "/a"}])), "invalid-json-patch");
        assert_eq!(code(json!([{"op": 1, "path": "/a"}])), "invalid-json-patch");
        assert_eq!(
            code(json!([{"op": "Add", "path": "/a"}])),
            "invalid-json-patch"
        );
        assert_eq!(code(json!([{"op": "remove"}])), "invalid-json-patch");
        assert_eq!(
            code(json!([{"op": "remove", "path": "spec"}])),
            "invalid-json-patch"
        );
        assert_eq!(
            code(json!([{"op": "move", "path": "/a"}])),
            "invalid-json-patch"
        );
        assert_eq!(
            code(json!([{"op": "copy", "path": "/a", "from": 1}])),
            "invalid-json-patch"
        );
        assert_eq!(
            code(json!([
                {"op": "remove", "path": "/a"},
                {"op": "remove", "path": "/b"},
                {"op": "remove", "path": "/c"},
                {"op": "remove", "path": "/d"}
            ])),
            "too-many-patch-ops"
        );
    }

    #[test]
    fn messages_name_the_operation() {
        let error = validate(
            &json!([{"op": "add", "path": "/a"}, {"op": "frob", "path": "/b"}]),
            10,
        );
        assert_eq!(
            error.map_err(|e| e.to_string()),
            Err(
                "request body is not a valid JSON patch: the operation at `$[1]` has the unknown \
                 `op` `frob`; send a JSON array of RFC 6902 operations, each an object with a \
                 string `op` (`add`, `remove`, `replace`, `move`, `copy` or `test`) and a JSON \
                 Pointer `path`"
                    .to_string()
            )
        );
    }
}
