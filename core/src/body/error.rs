use std::fmt;

use thiserror::Error;

use super::BodyKind;

/// Why a request body was refused.
///
/// Every variant names what was wrong and what the client should send instead; [`code`]
/// gives a stable kebab-case identifier for logs, metrics and tests.
///
/// Text taken from the request (keys, paths, content types) is quoted in backticks, with
/// backticks and control characters escaped and long values shortened, so that an error
/// message can be shown to the agent or logged as is.
///
/// [`code`]: BodyError::code
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body is larger than [`BodyLimits::max_bytes`](super::BodyLimits::max_bytes).
    #[error(
        "request body is {actual} bytes, more than the limit of {limit} bytes; send a smaller body"
    )]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
        /// The body's size, in bytes.
        actual: usize,
    },

    /// The request carries a `Content-Encoding`; the API server never decodes request bodies.
    #[error(
        "request carries `Content-Encoding: {}`, but the API server never decodes request bodies, \
         so kubeleash refuses encoded bodies: send the body unencoded, without a \
         `Content-Encoding` header",
        Quoted(.0)
    )]
    ContentEncoding(String),

    /// The content type is not one the API server accepts for this verb (it answers 415).
    #[error(
        "request body has content type `{}`, which the API server does not accept for {} \
         (it answers 415 Unsupported Media Type); send the body as JSON (`application/json`)",
        Quoted(.content_type),
        VerbName(.verb)
    )]
    UnsupportedContentType {
        /// The media type, lowercased, without parameters.
        content_type: String,
        /// The request's verb.
        verb: String,
    },

    /// A PATCH whose content type is not one of the API server's patch types (it answers 415).
    #[error("{}", UnsupportedPatch(.content_type.as_deref()))]
    UnsupportedPatchType {
        /// The media type, lowercased, without parameters; `None` when the request has none.
        content_type: Option<String>,
    },

    /// A YAML body (`application/yaml`), which kubeleash refuses.
    #[error(
        "request body is YAML (`application/yaml`), which kubeleash refuses: YAML 1.1 booleans \
         (`yes`, `on`), merge keys (`<<`) and multiple documents make the API server read it \
         differently from kubeleash; send the body as JSON (`application/json`), as kubectl does"
    )]
    Yaml,

    /// A Kubernetes protobuf body kubeleash cannot read exactly as the API server would.
    #[error(
        "request body is Kubernetes protobuf (`application/vnd.kubernetes.protobuf`) that \
         kubeleash cannot read as the API server would: {reason}; send the body as JSON \
         (`application/json`), or set `ContentType: \"application/json\"` in the client-go rest \
         config"
    )]
    Protobuf {
        /// What in the body could not be read.
        reason: String,
    },

    /// A CBOR body (`application/cbor`, `application/apply-patch+cbor`), which kubeleash does
    /// not decode.
    #[error(
        "request body is CBOR (`{}`), which kubeleash does not decode; send the body as JSON \
         (`application/json`, or JSON under `application/apply-patch+yaml` for server-side \
         apply), as kubectl does",
        Quoted(.content_type)
    )]
    Cbor {
        /// The media type.
        content_type: String,
    },

    /// The body is not valid UTF-8; the API server would replace the bad bytes with U+FFFD.
    #[error(
        "request body is not valid UTF-8 (at byte {offset}); the API server would replace the \
         invalid bytes with U+FFFD, so kubeleash refuses the body rather than guess: send UTF-8 \
         text"
    )]
    InvalidUtf8 {
        /// The offset of the first invalid byte.
        offset: usize,
    },

    /// An object repeats a key; the API server keeps the last value.
    #[error(
        "request body repeats the key `{}` at `{}`; the API server keeps the last value, so \
         kubeleash refuses bodies with duplicate keys: send each key once",
        Quoted(.key),
        Quoted(.path)
    )]
    DuplicateKey {
        /// The repeated key, escapes decoded.
        key: String,
        /// The JSON path of the object holding it (`$`, `$.spec.containers[0]`, ...).
        path: String,
    },

    /// The body is not valid JSON.
    #[error(
        "request body is not valid JSON ({message} at line {line}, column {column}); send a \
         single JSON value"
    )]
    InvalidJson {
        /// The parser's message.
        message: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },

    /// Data follows the JSON value.
    #[error(
        "request body has data after the JSON value (at line {line}, column {column}); the API \
         server refuses trailing data too: send exactly one JSON value"
    )]
    TrailingData {
        /// 1-based line where the trailing data starts.
        line: usize,
        /// 1-based column where the trailing data starts.
        column: usize,
    },

    /// Arrays and objects are nested deeper than the limit.
    #[error(
        "request body nests arrays and objects more than {limit} levels deep; kubeleash refuses \
         deeper bodies: send a flatter body"
    )]
    TooDeep {
        /// The deepest nesting accepted.
        limit: usize,
    },

    /// The body must be a JSON object but is some other JSON value.
    #[error(
        "request body for {} is a JSON {found}, not an object; send a JSON object",
        KindName(*.kind)
    )]
    NotAnObject {
        /// What the body was decoded as.
        kind: BodyKind,
        /// What the top-level value is: `array`, `string`, `number`, `boolean` or `null`.
        found: &'static str,
    },

    /// The body is not a valid RFC 6902 JSON patch.
    #[error(
        "request body is not a valid JSON patch: {message}; send a JSON array of RFC 6902 \
         operations, each an object with a string `op` (`add`, `remove`, `replace`, `move`, \
         `copy` or `test`) and a JSON Pointer `path`"
    )]
    InvalidJsonPatch {
        /// What is wrong, with any request text already quoted.
        message: String,
    },

    /// The JSON patch has more operations than the limit.
    #[error(
        "request body is a JSON patch of {actual} operations, more than the limit of {limit}; \
         split it into smaller patches"
    )]
    TooManyPatchOps {
        /// The most operations accepted.
        limit: usize,
        /// The number of operations in the patch.
        actual: usize,
    },

    /// A server-side apply body that is not JSON (most likely YAML).
    #[error(
        "server-side apply body is not JSON ({message} at line {line}, column {column}); \
         kubeleash reads apply bodies as JSON only, because the API server reads YAML \
         differently (YAML 1.1 booleans, merge keys, several documents): send the apply body as \
         JSON under `application/apply-patch+yaml`, as kubectl does"
    )]
    ApplyNotJson {
        /// The JSON parser's message.
        message: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },

    /// A server-side apply body with a raw U+0085, U+2028 or U+2029, which the API server's
    /// YAML parser reads as a line break and folds, changing the string.
    #[error(
        "server-side apply body has a raw {} at byte {offset}; the API server parses apply \
         bodies as YAML, which reads it as a line break and folds it and the spaces around it, \
         so the string would differ from what kubeleash reads: escape it in JSON as `{}`",
        CharName(*.character),
        JsonEscape(*.character)
    )]
    ApplyLineBreak {
        /// The character.
        character: char,
        /// Its byte offset in the body.
        offset: usize,
    },

    /// A DELETE carries `DeleteOptions` both in its query and in a non-empty body; the API
    /// server would act on the body and silently ignore the query.
    #[error(
        "request carries DeleteOptions in its query ({}) and a request body; the API server \
         reads the options from a non-empty body and ignores the query's, so the request does \
         not do what its query says: put every option in the body (as kubectl does), or send \
         no body",
        KeyList(.keys)
    )]
    DeleteOptionsTwice {
        /// The `DeleteOptions` keys in the query.
        keys: Vec<String>,
    },

    /// A DELETE's body is not the `DeleteOptions` kubectl sends.
    #[error(
        "request body is not valid DeleteOptions: {problem}; send a JSON DeleteOptions object \
         (`dryRun`, `propagationPolicy`, `gracePeriodSeconds`, `orphanDependents`, \
         `preconditions`), as kubectl does, or no body"
    )]
    InvalidDeleteOptions {
        /// What is wrong, with any request text already quoted.
        problem: String,
    },
}

impl BodyError {
    /// A stable kebab-case identifier of the error, for logs, metrics and tests.
    pub fn code(&self) -> &'static str {
        match self {
            BodyError::TooLarge { .. } => "body-too-large",
            BodyError::DeleteOptionsTwice { .. } => "delete-options-twice",
            BodyError::InvalidDeleteOptions { .. } => "invalid-delete-options",
            BodyError::ContentEncoding(_) => "content-encoding",
            BodyError::UnsupportedContentType { .. } => "unsupported-content-type",
            BodyError::UnsupportedPatchType { .. } => "unsupported-patch-type",
            BodyError::Yaml => "yaml-body",
            BodyError::Protobuf { .. } => "protobuf-body",
            BodyError::Cbor { .. } => "cbor-body",
            BodyError::InvalidUtf8 { .. } => "invalid-utf8",
            BodyError::DuplicateKey { .. } => "duplicate-key",
            BodyError::InvalidJson { .. } => "invalid-json",
            BodyError::TrailingData { .. } => "trailing-data",
            BodyError::TooDeep { .. } => "too-deep",
            BodyError::NotAnObject { .. } => "not-an-object",
            BodyError::InvalidJsonPatch { .. } => "invalid-json-patch",
            BodyError::TooManyPatchOps { .. } => "too-many-patch-ops",
            BodyError::ApplyNotJson { .. } => "apply-not-json",
            BodyError::ApplyLineBreak { .. } => "apply-line-break",
        }
    }
}

/// Query keys for a message: `a`, `b`.
struct KeyList<'a>(&'a [String]);

impl fmt::Display for KeyList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, k) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "`{}`", Quoted(k))?;
        }
        Ok(())
    }
}

/// Longest run of request text shown in a message, in characters.
const MAX_QUOTED_CHARS: usize = 128;

/// Request text for a backtick-quoted span: backticks, backslashes and control characters
/// escaped, and cut after [`MAX_QUOTED_CHARS`] characters.
pub(crate) struct Quoted<'a>(pub(crate) &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.chars().enumerate() {
            if i == MAX_QUOTED_CHARS {
                return f.write_str("...");
            }
            match c {
                '`' => f.write_str("\\`")?,
                '\\' => f.write_str("\\\\")?,
                c if c.is_control() || is_unicode_line_break(c) => {
                    write!(f, "\\u{{{:04x}}}", u32::from(c))?;
                }
                c => fmt::Write::write_char(f, c)?,
            }
        }
        Ok(())
    }
}

fn is_unicode_line_break(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}')
}

/// "the verb `x`", or "a request without a verb".
struct VerbName<'a>(&'a str);

impl fmt::Display for VerbName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("a request without a verb")
        } else {
            write!(f, "the verb `{}`", Quoted(self.0))
        }
    }
}

struct UnsupportedPatch<'a>(Option<&'a str>);

impl fmt::Display for UnsupportedPatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(content_type) if !content_type.is_empty() => write!(
                f,
                "patch request body has content type `{}`, which is not a patch type the API \
                 server accepts (it compares the type exactly and answers 415 Unsupported Media \
                 Type)",
                Quoted(content_type)
            )?,
            _ => f.write_str(
                "patch request has no content type, so the API server cannot tell the patch \
                 type (it answers 415 Unsupported Media Type)",
            )?,
        }
        f.write_str(
            "; send `application/json-patch+json`, `application/merge-patch+json`, \
             `application/strategic-merge-patch+json` or `application/apply-patch+yaml`",
        )
    }
}

struct KindName(BodyKind);

impl fmt::Display for KindName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            BodyKind::Object => "an object",
            BodyKind::DeleteOptions => "`DeleteOptions`",
            BodyKind::JsonPatch => "a JSON patch",
            BodyKind::MergePatch => "a merge patch",
            BodyKind::StrategicMergePatch => "a strategic merge patch",
            BodyKind::ApplyPatch => "a server-side apply patch",
        })
    }
}

struct CharName(char);

impl fmt::Display for CharName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            '\u{85}' => " (next line)",
            '\u{2028}' => " (line separator)",
            '\u{2029}' => " (paragraph separator)",
            _ => "",
        };
        write!(f, "U+{:04X}{name}", u32::from(self.0))
    }
}

struct JsonEscape(char);

impl fmt::Display for JsonEscape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut units = [0u16; 2];
        for unit in self.0.encode_utf16(&mut units) {
            write!(f, "\\u{unit:04x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_escapes_and_shortens() {
        assert_eq!(Quoted("a`b\\c\nd").to_string(), "a\\`b\\\\c\\u{000a}d");
        let long = "x".repeat(500);
        let shown = Quoted(&long).to_string();
        assert_eq!(shown.len(), MAX_QUOTED_CHARS + 3);
        assert!(shown.ends_with("..."));
    }

    #[test]
    fn messages_start_lowercase_and_have_no_trailing_period() {
        let errors = [
            BodyError::TooLarge {
                limit: 1,
                actual: 2,
            },
            BodyError::ContentEncoding("gzip".into()),
            BodyError::UnsupportedContentType {
                content_type: "text/plain".into(),
                verb: "create".into(),
            },
            BodyError::UnsupportedPatchType { content_type: None },
            BodyError::UnsupportedPatchType {
                content_type: Some("application/json".into()),
            },
            BodyError::Yaml,
            BodyError::Protobuf {
                reason: "its envelope names no apiVersion and kind".into(),
            },
            BodyError::Cbor {
                content_type: "application/cbor".into(),
            },
            BodyError::InvalidUtf8 { offset: 3 },
            BodyError::DuplicateKey {
                key: "hostPID".into(),
                path: "$.spec".into(),
            },
            BodyError::InvalidJson {
                message: "expected value".into(),
                line: 1,
                column: 1,
            },
            BodyError::TrailingData { line: 1, column: 2 },
            BodyError::TooDeep { limit: 127 },
            BodyError::NotAnObject {
                kind: BodyKind::MergePatch,
                found: "array",
            },
            BodyError::InvalidJsonPatch {
                message: "x".into(),
            },
            BodyError::TooManyPatchOps {
                limit: 1,
                actual: 2,
            },
            BodyError::ApplyNotJson {
                message: "expected value".into(),
                line: 1,
                column: 1,
            },
            BodyError::ApplyLineBreak {
                character: '\u{2028}',
                offset: 4,
            },
        ];
        let mut codes = std::collections::HashSet::new();
        for error in &errors {
            let message = error.to_string();
            let first = message.chars().next().unwrap_or('?');
            assert!(first.is_lowercase(), "{message}");
            assert!(!message.ends_with('.'), "{message}");
            codes.insert(error.code());
        }
        // One error of every variant above, each with its own code.
        assert_eq!(codes.len(), 17);
    }

    #[test]
    fn duplicate_key_message() {
        let error = BodyError::DuplicateKey {
            key: "hostPID".into(),
            path: "$.spec".into(),
        };
        assert_eq!(
            error.to_string(),
            "request body repeats the key `hostPID` at `$.spec`; the API server keeps the last \
             value, so kubeleash refuses bodies with duplicate keys: send each key once"
        );
    }

    #[test]
    fn line_break_message_shows_the_json_escape() {
        let error = BodyError::ApplyLineBreak {
            character: '\u{2028}',
            offset: 4,
        };
        let message = error.to_string();
        assert!(
            message.contains("raw U+2028 (line separator) at byte 4"),
            "{message}"
        );
        assert!(message.contains("`\\u2028`"), "{message}");
    }
}
