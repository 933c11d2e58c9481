use std::fmt;

use thiserror::Error;

/// Why a request was refused instead of classified.
///
/// Every refusal is for something kubectl and client-go never send, and which the API server and
/// a gateway could read two ways (`docs/kubernetes-semantics.md`, "Canonical request targets"
/// and "Query parameters"). Each variant carries the offending input; [`NonCanonical::code`]
/// gives a stable machine-readable code.
///
/// Header refusals carry only the header *name*: values of these headers can hold credentials
/// (`Sec-WebSocket-Protocol` bearer tokens) and must not end up in logs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NonCanonical {
    /// The method is not an HTTP token (RFC 9110 §5.6.2); Go's server answers 400.
    #[error(
        "request method `{}` is not an http token; kubectl only sends standard methods",
        Shown(.method)
    )]
    BadMethod {
        /// The method as sent.
        method: String,
    },

    /// The target is absolute-form (`http://host/path`).
    #[error(
        "request target `{}` is in absolute form; kubectl always sends an origin-form path, and kubeleash refuses a target whose host the API server would silently ignore",
        Shown(.target)
    )]
    AbsoluteForm {
        /// The target as sent.
        target: String,
    },

    /// The target neither starts with `/` nor is absolute-form (`*`, `api/v1`, empty).
    #[error(
        "request target `{}` does not start with `/`; kubectl always sends an origin-form path",
        Shown(.target)
    )]
    NotOriginForm {
        /// The target as sent.
        target: String,
    },

    /// The target holds a control byte, a space, DEL or a non-ASCII character.
    #[error(
        "request target `{}` contains a control character, space or non-ascii character; kubectl never sends one",
        Shown(.target)
    )]
    ControlOrNonAscii {
        /// The target as sent.
        target: String,
    },

    /// The target holds `#`, which Go's server keeps as part of the path, not as a fragment.
    #[error(
        "request target `{}` contains `#`; kubectl never sends one, and the API server reads it as part of the path rather than as a fragment",
        Shown(.target)
    )]
    Fragment {
        /// The target as sent.
        target: String,
    },

    /// The target holds `\`, which some servers read as a path separator.
    #[error(
        "request target `{}` contains a backslash; kubectl never sends one, and servers disagree on whether it separates segments",
        Shown(.target)
    )]
    Backslash {
        /// The target as sent.
        target: String,
    },

    /// The path has an empty segment (`//`), including a leading `//` or a doubled trailing
    /// slash. The API server keeps empty segments: `/namespaces//pods` lists every namespace.
    #[error(
        "request path `{}` has an empty segment; kubectl never sends one, and kubeleash refuses paths the API server and a gateway could read differently",
        Shown(.path)
    )]
    EmptySegment {
        /// The path part of the target.
        path: String,
    },

    /// The path has a `.` or `..` segment, raw or percent-encoded. The API server keeps them,
    /// and forwards them verbatim in proxy subpaths, where the backend may resolve them.
    #[error(
        "request path `{}` has a `.` or `..` segment; kubectl never sends one, and the API server keeps it where a proxied backend may resolve it",
        Shown(.path)
    )]
    DotSegment {
        /// The path part of the target.
        path: String,
    },

    /// The path holds a percent-escape. The API server decodes the path before it reads it,
    /// so `%73ecrets` is `secrets` and `%2F` is a separator.
    #[error(
        "request path `{}` contains a percent-escape; kubectl never percent-encodes path segments, and the API server decodes them before it classifies the request",
        Shown(.path)
    )]
    PercentEscapeInPath {
        /// The path part of the target.
        path: String,
    },

    /// The path holds `;`, which some servers read as the start of path parameters.
    #[error(
        "request path `{}` contains `;`; kubectl never sends one, and servers disagree on whether it starts path parameters",
        Shown(.path)
    )]
    SemicolonInPath {
        /// The path part of the target.
        path: String,
    },

    /// The query holds `;`. Go silently drops every `&`-separated pair that contains one.
    #[error(
        "query `{}` contains `;`; kubectl never sends one, and the API server silently drops every parameter that contains it",
        Shown(.query)
    )]
    SemicolonInQuery {
        /// The query part of the target.
        query: String,
    },

    /// A query key or value has a malformed percent-escape. Go silently drops such a pair.
    #[error(
        "query parameter `{}` has an invalid percent-escape; kubectl never sends one, and the API server silently drops the parameter",
        Shown(.pair)
    )]
    InvalidQueryEscape {
        /// The `key=value` pair as sent.
        pair: String,
    },

    /// A query value kubeleash reads decodes to bytes that are not UTF-8.
    #[error(
        "query parameter `{}` decodes to bytes that are not utf-8; kubectl never sends them",
        Shown(.key)
    )]
    NonUtf8Query {
        /// The decoded key.
        key: String,
    },

    /// A single-valued query parameter is given twice; the API server reads only the first.
    #[error(
        "query parameter `{}` is given more than once; kubectl sends it at most once, and the API server reads only the first value",
        Shown(.key)
    )]
    DuplicateQueryKey {
        /// The decoded key.
        key: String,
    },

    /// The query has more parameters than kubeleash reads. Go ignores a whole query past
    /// 10,000 parameters, which would hide a `fieldSelector` or `watch` from the API server.
    #[error(
        "query has {count} parameters, more than the {limit} kubeleash accepts; kubectl never sends that many, and the API server ignores an overlong query altogether"
    )]
    TooManyQueryParameters {
        /// How many `&`-separated parameters the query has.
        count: usize,
        /// The most kubeleash accepts.
        limit: usize,
    },

    /// `dryRun` has a value other than `All`.
    #[error(
        "query parameter `dryRun` has value `{}`, but only `All` is valid; kubectl never sends another value, and the API server answers 400",
        Shown(.value)
    )]
    InvalidDryRun {
        /// The decoded value.
        value: String,
    },

    /// A `DeleteOptions` query parameter whose value the API server cannot decode (it answers
    /// 400), such as a `gracePeriodSeconds` that is not a 64-bit integer.
    #[error(
        "query parameter `{}` has value `{}`, but it must be {}; kubectl never sends another value, and the API server answers 400",
        Shown(.key),
        Shown(.value),
        .expected
    )]
    InvalidQueryValue {
        /// The parameter.
        key: String,
        /// The decoded value.
        value: String,
        /// What the value must be, in words.
        expected: &'static str,
    },

    /// `watch` or `proxy` right after the version with nothing after it; the API server's
    /// `RequestInfoFactory` fails on it and answers 500.
    #[error(
        "request path `{}` ends right after the special verb `{}`; kubectl never sends it, and the API server cannot classify it and answers 500",
        Shown(.path),
        Shown(.verb)
    )]
    MissingAfterSpecialVerb {
        /// The path part of the target.
        path: String,
        /// `watch` or `proxy`.
        verb: String,
    },

    /// The API group, version, resource or subresource segment is not a valid Kubernetes name.
    /// No API server serves such a resource, and the segment would otherwise be printed into
    /// the `kubectl` line a person reads and may paste into a shell.
    #[error(
        "request path `{}` has the {} `{}`, which is not a valid kubernetes {}; kubectl only sends valid names",
        Shown(.path),
        .part,
        Shown(.segment),
        NameRule(.part)
    )]
    InvalidName {
        /// The path part of the target.
        path: String,
        /// Which part: `group`, `version`, `resource` or `subresource`.
        part: &'static str,
        /// The offending segment.
        segment: String,
    },

    /// A header kubeleash reads has a value with bytes that are not visible ASCII.
    #[error(
        "header `{}` has a value that is not visible ascii; kubectl never sends one, and kubeleash does not guess how the API server decodes it",
        Shown(.name)
    )]
    BadHeader {
        /// The header name (the value is left out: it may be a credential).
        name: String,
    },

    /// A single-valued header kubeleash reads is given twice; the API server reads only the
    /// first, other hops may read another.
    #[error(
        "header `{}` is given more than once; kubectl sends it once, and the API server reads only the first",
        Shown(.name)
    )]
    DuplicateHeader {
        /// The header name.
        name: String,
    },
}

impl NonCanonical {
    /// A stable, machine-readable, kebab-case code for this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            NonCanonical::BadMethod { .. } => "bad-method",
            NonCanonical::InvalidQueryValue { .. } => "invalid-query-value",
            NonCanonical::AbsoluteForm { .. } => "absolute-form",
            NonCanonical::NotOriginForm { .. } => "not-origin-form",
            NonCanonical::ControlOrNonAscii { .. } => "control-or-non-ascii",
            NonCanonical::Fragment { .. } => "fragment",
            NonCanonical::Backslash { .. } => "backslash",
            NonCanonical::EmptySegment { .. } => "empty-segment",
            NonCanonical::DotSegment { .. } => "dot-segment",
            NonCanonical::PercentEscapeInPath { .. } => "percent-escape-in-path",
            NonCanonical::SemicolonInPath { .. } => "semicolon-in-path",
            NonCanonical::SemicolonInQuery { .. } => "semicolon-in-query",
            NonCanonical::InvalidQueryEscape { .. } => "invalid-query-escape",
            NonCanonical::NonUtf8Query { .. } => "non-utf8-query",
            NonCanonical::DuplicateQueryKey { .. } => "duplicate-query-key",
            NonCanonical::TooManyQueryParameters { .. } => "too-many-query-parameters",
            NonCanonical::InvalidDryRun { .. } => "invalid-dry-run",
            NonCanonical::MissingAfterSpecialVerb { .. } => "missing-after-special-verb",
            NonCanonical::InvalidName { .. } => "invalid-name",
            NonCanonical::BadHeader { .. } => "bad-header",
            NonCanonical::DuplicateHeader { .. } => "duplicate-header",
        }
    }
}

/// What a valid name of each part is, in words.
struct NameRule<'a>(&'a str);

impl fmt::Display for NameRule<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            "group" => {
                "api group (a dns subdomain: lowercase letters, digits, `-` and `.`, at most 253 characters)"
            }
            "version" => {
                "version (a dns label: lowercase letters, digits and `-`, at most 63 characters, starting and ending with a letter or digit)"
            }
            _ => "resource name (lowercase letters, digits, `-` and `_`, starting and ending with a letter, digit or `_`)",
        })
    }
}

/// Longest stretch of user input a message shows, in characters.
const SHOWN_MAX_CHARS: usize = 256;

/// User input as a message shows it: printable ASCII as is, anything else escaped (so a
/// newline or an ANSI escape cannot forge log lines), cut after [`SHOWN_MAX_CHARS`].
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.chars().enumerate() {
            if i == SHOWN_MAX_CHARS {
                return f.write_str("…");
            }
            if c.is_ascii_graphic() || c == ' ' {
                fmt::Write::write_char(f, c)?;
            } else {
                write!(f, "{}", c.escape_default())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_without_trailing_period_and_quote_input() {
        let err = NonCanonical::EmptySegment {
            path: "/api/v1/namespaces//pods".into(),
        };
        assert_eq!(
            err.to_string(),
            "request path `/api/v1/namespaces//pods` has an empty segment; kubectl never sends one, \
             and kubeleash refuses paths the API server and a gateway could read differently"
        );
        assert_eq!(err.code(), "empty-segment");
        assert!(!err.to_string().ends_with('.'));
    }

    #[test]
    fn control_characters_in_input_are_escaped() {
        let err = NonCanonical::ControlOrNonAscii {
            target: "/a\nb\u{1b}[31mé".into(),
        };
        let msg = err.to_string();
        assert!(msg.contains(r"/a\nb\u{1b}[31m\u{e9}"), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn long_input_is_cut() {
        let err = NonCanonical::NotOriginForm {
            target: "x".repeat(10_000),
        };
        assert!(err.to_string().len() < 400);
        assert!(err.to_string().contains('…'));
    }

    #[test]
    fn header_errors_do_not_carry_values() {
        let err = NonCanonical::BadHeader {
            name: "sec-websocket-protocol".into(),
        };
        assert_eq!(err.code(), "bad-header");
        assert!(err.to_string().contains("`sec-websocket-protocol`"));
    }
}
