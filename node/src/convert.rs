//! Conversions from JavaScript values to the engine's: request headers (`{ name: value |
//! value[] }` or `[[name, value], ...]`) and the body arguments every entry point accepts. The
//! Python binding's `convert.rs` does the same for Python values.

use http::{HeaderMap, HeaderName, HeaderValue};
use napi::bindgen_prelude::{Buffer, Either};
use serde_json::Value;

/// Parse headers; the error says which header is wrong (never its value, which may be a
/// credential).
pub fn headers_arg(headers: Option<&Value>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    let mut add = |name: &str, value: &Value| -> Result<(), String> {
        let name_ok = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("header name `{name}` is not a valid HTTP header name"))?;
        let mut one = |v: &Value| -> Result<(), String> {
            let Some(s) = v.as_str() else {
                return Err(format!("header `{name}` has a value that is not a string"));
            };
            let v = HeaderValue::from_str(s)
                .map_err(|_| format!("header `{name}` has a value that is not valid in HTTP"))?;
            map.append(name_ok.clone(), v);
            Ok(())
        };
        match value {
            Value::Array(values) => values.iter().try_for_each(&mut one),
            v => one(v),
        }
    };
    match headers {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => {
            for (k, v) in o {
                add(k, v)?;
            }
        }
        Some(Value::Array(pairs)) => {
            for p in pairs {
                match p.as_array().map(Vec::as_slice) {
                    Some([Value::String(k), v]) => add(k, v)?,
                    _ => {
                        return Err(
                            "headers given as an array must be `[name, value]` pairs".into()
                        );
                    }
                }
            }
        }
        Some(_) => {
            return Err(
                "headers must be an object of `name: value` or an array of `[name, value]` pairs"
                    .into(),
            );
        }
    }
    Ok(map)
}

pub(crate) fn bytes_arg(body: &Either<String, Buffer>) -> &[u8] {
    match body {
        Either::A(s) => s.as_bytes(),
        Either::B(b) => b,
    }
}
