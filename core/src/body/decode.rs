use serde_json::Value;

use super::{BodyError, BodyKind, BodyLimits, DecodedBody, json_patch, protobuf, strict_json};
use crate::request::{PatchType, Request};

/// Decode a request body as the API server would; `Ok(None)` for an empty body.
///
/// Checks, in order: the size limit; that the request has no `Content-Encoding` (the API
/// server never decodes request bodies); that the verb and content type name a body kubeleash
/// reads (strict JSON only: YAML, protobuf, CBOR and unknown types are refused); then, unless
/// the body is empty or only JSON whitespace, strict JSON (no duplicate keys, valid UTF-8,
/// nothing after the value, nesting within [`BodyLimits::max_depth`]) and the shape of its
/// kind: an object, or for a JSON patch an array of RFC 6902 operations.
///
/// The content type is checked even for an empty body: the API server refuses those types for
/// a non-empty body, and clients never send them without one.
///
/// The body kind comes from `request.attributes.verb`: `patch` uses `request.facts.patch_type`,
/// `delete` and `deletecollection` read `DeleteOptions`, and every other verb reads a whole
/// object. Bodies the API server does not decode (the `exec`, `attach`, `portforward` and
/// `proxy` subresources) are the caller's to skip.
pub fn decode(
    request: &Request,
    body: &[u8],
    limits: &BodyLimits,
) -> Result<Option<DecodedBody>, BodyError> {
    if body.len() > limits.max_bytes {
        return Err(BodyError::TooLarge {
            limit: limits.max_bytes,
            actual: body.len(),
        });
    }
    if let Some(encoding) = &request.facts.content_encoding {
        return Err(BodyError::ContentEncoding(encoding.clone()));
    }
    let (kind, encoding) = body_kind(request)?;
    if encoding == Encoding::Protobuf {
        return Ok((!body.is_empty())
            .then(|| protobuf::decode(body, limits.max_depth))
            .transpose()?
            .map(|value| DecodedBody { kind, value }));
    }
    if body
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return Ok(None);
    }
    let value = if kind == BodyKind::ApplyPatch {
        parse_apply(body, limits)?
    } else {
        strict_json::parse(body, limits.max_depth)?
    };
    if kind == BodyKind::JsonPatch {
        json_patch::validate(&value, limits.max_json_patch_ops)?;
    } else if !value.is_object() {
        return Err(BodyError::NotAnObject {
            kind,
            found: strict_json::type_name(&value),
        });
    }
    Ok(Some(DecodedBody { kind, value }))
}

/// How a body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Json,
    /// Kubernetes protobuf, which only objects and `DeleteOptions` come in (never a patch).
    Protobuf,
}

/// What the body of `request` is and how it is written, or why kubeleash does not read it.
fn body_kind(request: &Request) -> Result<(BodyKind, Encoding), BodyError> {
    let json = |kind| Ok((kind, Encoding::Json));
    match request.attributes.verb.as_str() {
        "patch" => match request.facts.patch_type {
            Some(PatchType::Json) => json(BodyKind::JsonPatch),
            Some(PatchType::Merge) => json(BodyKind::MergePatch),
            Some(PatchType::StrategicMerge) => json(BodyKind::StrategicMergePatch),
            Some(PatchType::Apply) => json(BodyKind::ApplyPatch),
            Some(PatchType::ApplyCbor) => Err(BodyError::Cbor {
                content_type: "application/apply-patch+cbor".to_string(),
            }),
            None => Err(BodyError::UnsupportedPatchType {
                content_type: request.facts.content_type.clone(),
            }),
        },
        "delete" | "deletecollection" => object_body(request, BodyKind::DeleteOptions),
        _ => object_body(request, BodyKind::Object),
    }
}

/// `kind` and its encoding if the request's content type is JSON (or absent, which the API
/// server reads as JSON) or Kubernetes protobuf, else the refusal for its content type.
fn object_body(request: &Request, kind: BodyKind) -> Result<(BodyKind, Encoding), BodyError> {
    let Some(content_type) = request.facts.content_type.as_deref() else {
        return Ok((kind, Encoding::Json));
    };
    let media_type = content_type.trim();
    let is = |expected: &str| media_type.eq_ignore_ascii_case(expected);
    if media_type.is_empty() || is("application/json") {
        Ok((kind, Encoding::Json))
    } else if is("application/yaml") {
        Err(BodyError::Yaml)
    } else if is("application/vnd.kubernetes.protobuf") {
        Ok((kind, Encoding::Protobuf))
    } else if is("application/cbor") {
        Err(BodyError::Cbor {
            content_type: content_type.to_string(),
        })
    } else {
        Err(BodyError::UnsupportedContentType {
            content_type: content_type.to_string(),
            verb: request.attributes.verb.clone(),
        })
    }
}

/// Parse a server-side apply body, which the API server reads as YAML, as strict JSON.
///
/// JSON is YAML, and on JSON syntax the API server's YAML 1.1 parser reads what a JSON parser
/// reads (quoted scalars are always strings and `"<<"` is no merge key), with one exception
/// refused here: it reads a raw U+0085, U+2028 or U+2029 inside a string as a line break and
/// folds it with the spaces around it.
fn parse_apply(body: &[u8], limits: &BodyLimits) -> Result<Value, BodyError> {
    let value = strict_json::parse(body, limits.max_depth).map_err(|error| match error {
        BodyError::InvalidJson {
            message,
            line,
            column,
        } => BodyError::ApplyNotJson {
            message,
            line,
            column,
        },
        BodyError::TrailingData { line, column } => BodyError::ApplyNotJson {
            message: "data after the JSON value".to_string(),
            line,
            column,
        },
        other => other,
    })?;
    // The body parsed, so it is valid UTF-8.
    let text = String::from_utf8_lossy(body);
    if let Some((offset, character)) = text
        .char_indices()
        .find(|(_, c)| matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}'))
    {
        return Err(BodyError::ApplyLineBreak { character, offset });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Attributes, Facts};

    fn request(verb: &str, content_type: Option<&str>, patch_type: Option<PatchType>) -> Request {
        Request {
            method: "POST".into(),
            target: "/api/v1/namespaces/dev/pods".into(),
            attributes: Attributes {
                verb: verb.into(),
                ..Default::default()
            },
            facts: Facts {
                content_type: content_type.map(Into::into),
                patch_type,
                ..Default::default()
            },
        }
    }

    fn code(request: &Request, body: &str) -> &'static str {
        match decode(request, body.as_bytes(), &BodyLimits::default()) {
            Ok(Some(_)) => "ok",
            Ok(None) => "none",
            Err(error) => error.code(),
        }
    }

    #[test]
    fn content_type_is_checked_even_for_empty_bodies() {
        assert_eq!(
            code(&request("create", Some("application/yaml"), None), ""),
            "yaml-body"
        );
        assert_eq!(
            code(&request("patch", None, None), ""),
            "unsupported-patch-type"
        );
        assert_eq!(code(&request("create", None, None), " \n"), "none");
    }

    #[test]
    fn media_type_match_is_defensive() {
        assert_eq!(code(&request("create", Some(""), None), "{}"), "ok");
        assert_eq!(
            code(&request("update", Some("Application/JSON"), None), "{}"),
            "ok"
        );
        assert_eq!(
            code(
                &request("create", Some("application/json-patch+json"), None),
                "[]"
            ),
            "unsupported-content-type"
        );
    }

    #[test]
    fn apply_line_breaks() {
        let apply = request(
            "patch",
            Some("application/apply-patch+yaml"),
            Some(PatchType::Apply),
        );
        assert_eq!(code(&apply, "{\"a\":\"x\u{2028}y\"}"), "apply-line-break");
        assert_eq!(code(&apply, "{\"a\":\"x\u{85}y\"}"), "apply-line-break");
        assert_eq!(code(&apply, r#"{"a":"x\u2028y"}"#), "ok");
        // Other kinds are parsed as JSON by the API server too, so the characters are fine.
        assert_eq!(
            code(&request("create", None, None), "{\"a\":\"x\u{2028}y\"}"),
            "ok"
        );
        assert_eq!(
            decode(
                &apply,
                "{\"a\":\"\u{2029}\"}".as_bytes(),
                &BodyLimits::default()
            ),
            Err(BodyError::ApplyLineBreak {
                character: '\u{2029}',
                offset: 6
            })
        );
    }
}
