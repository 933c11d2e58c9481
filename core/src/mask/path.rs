//! Mask paths: the JSONPath subset a streaming masker can follow without holding the document.
//!
//! Supported: `$`, `.name`, `['name']` / `["name"]`, `.*`, `[*]`, `[n]`, `..` (any depth) before
//! any step, and filters `[?(...)]` on array elements (the element, and only it, is held while
//! the filter is evaluated). Filters use RFC 9535 syntax (`search(@.name, 'token')`) or the
//! common `@.name =~ /token/i` form, which is rewritten to `search`.

use jsonpath_rust::parser::model::JpQuery;
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use serde_json::Value;

/// One step of a path.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// A member with this name.
    Child(String),
    /// Any member or element.
    Any,
    /// The array element at this index.
    Index(usize),
    /// Zero or more levels down, then the next step.
    Descend,
    /// Array elements (or member values) for which the filter holds.
    Filter(Filter),
}

/// A compiled filter. The common forms (`@.a.b =~ /re/`, `search`/`match`, `==`, `!=`, bare
/// existence) are evaluated natively with the regex compiled once; anything else runs through
/// jsonpath-rust as `$[?expr]` over a one-element array.
#[derive(Debug, Clone)]
pub(crate) enum Filter {
    /// A regex over a string member: `search` finds it anywhere, `match` must cover it whole.
    Regex {
        path: Vec<String>,
        re: regex_automata::meta::Regex,
    },
    Equals {
        path: Vec<String>,
        value: Value,
        negate: bool,
    },
    Exists {
        path: Vec<String>,
    },
    /// A string member that names a credential (see [`super::credname`]).
    CredentialName {
        path: Vec<String>,
    },
    JsonPath(Box<JpQuery>),
}

fn member<'v>(v: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

impl Filter {
    pub(crate) fn holds(&self, v: &Value) -> bool {
        match self {
            Filter::Regex { path, re } => member(v, path)
                .and_then(Value::as_str)
                .is_some_and(|s| re.is_match(s)),
            Filter::Equals {
                path,
                value,
                negate,
            } => (member(v, path) == Some(value)) != *negate,
            Filter::Exists { path } => member(v, path).is_some(),
            // A name that is not a string cannot be placed: the strict answer.
            Filter::CredentialName { path } => member(v, path)
                .is_none_or(|n| n.as_str().is_none_or(super::credname::is_credential_name)),
            Filter::JsonPath(query) => {
                let wrapped = Value::Array(vec![v.clone()]);
                js_path_process(query, &wrapped).is_ok_and(|found| !found.is_empty())
            }
        }
    }

    /// The one top-level member this filter tests for a credential name, if that is all it
    /// does: such a filter can be judged without building the element (see
    /// [`Filter::holds_for_member`]).
    pub(crate) fn credential_member(&self) -> Option<&str> {
        match self {
            Filter::CredentialName { path } => match path.as_slice() {
                [key] => Some(key),
                _ => None,
            },
            _ => None,
        }
    }

    /// [`Filter::holds`] from the member [`Filter::credential_member`] names, as read in one
    /// pass, with `is_credential_name` answering as [`super::credname::is_credential_name`]
    /// does (the masker remembers its answers). Any other filter holds (the strict answer; the
    /// masker never asks).
    pub(crate) fn holds_for_member(
        &self,
        found: &super::dupkeys::Found,
        is_credential_name: impl Fn(&str) -> bool,
    ) -> bool {
        use super::dupkeys::Found;
        match (self, found) {
            (Filter::CredentialName { .. }, Found::Str(s)) => is_credential_name(s),
            _ => true,
        }
    }

    fn compile(expr: &str) -> Result<Filter, String> {
        let rewritten = rewrite_regex_match(expr);
        if let Some(f) = native(&rewritten) {
            return Ok(f);
        }
        let query = parse_json_path(&format!("$[?{rewritten}]"))
            .map_err(|e| e.to_string().lines().next().unwrap_or_default().to_string())?;
        Ok(Filter::JsonPath(Box::new(query)))
    }
}

/// `@.a.b` → `["a", "b"]`, for plain member chains only.
fn relative(s: &str) -> Option<Vec<String>> {
    let rest = s.trim().strip_prefix("@.")?;
    let parts: Vec<String> = rest.split('.').map(str::to_string).collect();
    parts
        .iter()
        .all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
        .then_some(parts)
}

/// A single-quoted string literal's content (no escapes beyond `\'` and `\\`).
fn quoted(s: &str) -> Option<String> {
    let inner = s.trim().strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.replace("\\'", "'").replace("\\\\", "\\"))
}

fn native(expr: &str) -> Option<Filter> {
    let e = expr.trim();
    for (func, anchored) in [("search(", false), ("match(", true)] {
        if let Some(args) = e.strip_prefix(func).and_then(|a| a.strip_suffix(')')) {
            let (lhs, rhs) = args.split_once(',')?;
            let path = relative(lhs)?;
            let pattern = quoted(rhs)?;
            let pattern = if anchored {
                format!("^(?:{pattern})$")
            } else {
                pattern
            };
            let re = regex_automata::meta::Regex::new(&pattern).ok()?;
            return Some(Filter::Regex { path, re });
        }
    }
    for (op, negate) in [("==", false), ("!=", true)] {
        if let Some((lhs, rhs)) = e.split_once(op) {
            let path = relative(lhs)?;
            let rhs = rhs.trim();
            let value = match quoted(rhs) {
                Some(s) => Value::String(s),
                None => serde_json::from_str(rhs).ok()?,
            };
            return Some(Filter::Equals {
                path,
                value,
                negate,
            });
        }
    }
    relative(e).map(|path| Filter::Exists { path })
}

/// Parse a mask path; the error says what is wrong in words.
pub(crate) fn parse(path: &str) -> Result<Vec<Step>, String> {
    let b = path.as_bytes();
    if b.first() != Some(&b'$') {
        return Err(format!("mask path `{path}` must start with `$`"));
    }
    let mut i = 1;
    let mut steps = Vec::new();
    while i < b.len() {
        match b[i] {
            b'.' if b.get(i + 1) == Some(&b'.') => {
                steps.push(Step::Descend);
                i += 2;
                if b.get(i) == Some(&b'[') {
                    continue;
                }
                let (name, next) = member_name(path, i)?;
                steps.push(name);
                i = next;
            }
            b'.' => {
                let (name, next) = member_name(path, i + 1)?;
                steps.push(name);
                i = next;
            }
            b'[' => {
                let (step, next) = bracket(path, i)?;
                steps.push(step);
                i = next;
            }
            _ => {
                return Err(format!(
                    "mask path `{path}` has an unexpected `{}` at offset {i}",
                    b[i] as char
                ));
            }
        }
    }
    if matches!(steps.last(), Some(Step::Descend)) {
        return Err(format!(
            "mask path `{path}` ends with `..`; say what to find below it"
        ));
    }
    Ok(steps)
}

fn member_name(path: &str, start: usize) -> Result<(Step, usize), String> {
    let b = path.as_bytes();
    if b.get(start) == Some(&b'*') {
        return Ok((Step::Any, start + 1));
    }
    let end = b[start..]
        .iter()
        .position(|c| matches!(c, b'.' | b'['))
        .map_or(b.len(), |p| start + p);
    let name = &path[start..end];
    if name.is_empty() {
        return Err(format!(
            "mask path `{path}` has an empty member name at offset {start}"
        ));
    }
    Ok((Step::Child(name.to_string()), end))
}

fn bracket(path: &str, start: usize) -> Result<(Step, usize), String> {
    let b = path.as_bytes();
    let unterminated = || format!("mask path `{path}` has an unterminated `[` at offset {start}");
    match b.get(start + 1) {
        Some(b'*') if b.get(start + 2) == Some(&b']') => Ok((Step::Any, start + 3)),
        Some(q @ (b'\'' | b'"')) => {
            let mut name = String::new();
            let mut i = start + 2;
            loop {
                match b.get(i) {
                    None => return Err(unterminated()),
                    Some(b'\\') => {
                        let c = b.get(i + 1).ok_or_else(unterminated)?;
                        name.push(*c as char);
                        i += 2;
                    }
                    Some(c) if c == q => break,
                    Some(_) => {
                        let ch = path[i..].chars().next().ok_or_else(unterminated)?;
                        name.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            if b.get(i + 1) != Some(&b']') {
                return Err(unterminated());
            }
            Ok((Step::Child(name), i + 2))
        }
        Some(b'?') => {
            let end = filter_end(b, start + 2).ok_or_else(unterminated)?;
            let expr = path[start + 2..end].trim();
            let expr = expr
                .strip_prefix('(')
                .and_then(|e| e.strip_suffix(')'))
                .unwrap_or(expr);
            let filter = Filter::compile(expr)
                .map_err(|e| format!("mask path `{path}` has a filter that cannot be read: {e}"))?;
            Ok((Step::Filter(filter), end + 1))
        }
        Some(c) if c.is_ascii_digit() => {
            let end = b[start + 1..]
                .iter()
                .position(|c| *c == b']')
                .map(|p| start + 1 + p)
                .ok_or_else(unterminated)?;
            let n = path[start + 1..end].parse().map_err(|_| {
                format!("mask path `{path}` has an invalid index at offset {start}")
            })?;
            Ok((Step::Index(n), end + 1))
        }
        _ => Err(format!(
            "mask path `{path}` has an unsupported bracket at offset {start}"
        )),
    }
}

/// The offset of the `]` closing a filter that starts at `from`, skipping quoted strings and
/// `/regex/` literals.
fn filter_end(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    let mut depth = 0i32;
    let mut quote: Option<u8> = None;
    while let Some(&c) = b.get(i) {
        match quote {
            Some(q) => {
                if c == b'\\' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                b'\'' | b'"' => quote = Some(c),
                b'/' if b[..i].iter().rev().find(|c| !c.is_ascii_whitespace()) == Some(&b'~') => {
                    quote = Some(b'/')
                }
                b'(' | b'[' => depth += 1,
                b')' => depth -= 1,
                b']' if depth == 0 => return Some(i),
                b']' => depth -= 1,
                _ => {}
            },
        }
        i += 1;
    }
    None
}

/// `@.name =~ /re/i` → `search(@.name, '(?i)re')`, the RFC 9535 form jsonpath-rust evaluates.
fn rewrite_regex_match(expr: &str) -> String {
    let Some(op) = expr.find("=~") else {
        return expr.to_string();
    };
    let lhs = expr[..op].trim();
    let rhs = expr[op + 2..].trim();
    let Some(body) = rhs.strip_prefix('/') else {
        return expr.to_string();
    };
    let Some(close) = body.rfind('/') else {
        return expr.to_string();
    };
    let (re, flags) = (&body[..close], &body[close + 1..]);
    let flags: String = flags
        .chars()
        .filter(|c| matches!(c, 'i' | 'm' | 's'))
        .collect();
    let prefix = if flags.is_empty() {
        String::new()
    } else {
        format!("(?{flags})")
    };
    let re = re.replace('\\', "\\\\").replace('\'', "\\'");
    format!("search({lhs}, '{prefix}{re}')")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kinds(p: &str) -> Vec<String> {
        parse(p)
            .unwrap_or_default()
            .iter()
            .map(|s| match s {
                Step::Child(n) => format!("child:{n}"),
                Step::Any => "any".into(),
                Step::Index(i) => format!("index:{i}"),
                Step::Descend => "descend".into(),
                Step::Filter(_) => "filter".into(),
            })
            .collect()
    }

    #[test]
    fn parses_the_supported_forms() {
        assert_eq!(kinds("$.data.*"), ["child:data", "any"]);
        assert_eq!(
            kinds("$.spec.containers[*].env[0]"),
            [
                "child:spec",
                "child:containers",
                "any",
                "child:env",
                "index:0"
            ]
        );
        assert_eq!(
            kinds("$.metadata.annotations['kubectl.kubernetes.io/last-applied-configuration']"),
            [
                "child:metadata",
                "child:annotations",
                "child:kubectl.kubernetes.io/last-applied-configuration"
            ]
        );
        assert_eq!(kinds("$..password"), ["descend", "child:password"]);
        assert_eq!(kinds("$..[*]"), ["descend", "any"]);
        assert_eq!(
            kinds("$..env[?(@.name =~ /(?i)token/)].value"),
            ["descend", "child:env", "filter", "child:value"]
        );
    }

    #[test]
    fn rejects_what_it_cannot_follow() {
        assert!(parse("spec").is_err());
        assert!(parse("$..").is_err());
        assert!(parse("$.a[").is_err());
        assert!(parse("$.a[1:2]").is_err());
    }

    #[test]
    fn filters_evaluate_on_one_element() -> Result<(), String> {
        let steps = parse("$.env[?(@.name =~ /token|password/i)]")?;
        let Some(Step::Filter(f)) = steps.last() else {
            return Err("no filter".into());
        };
        assert!(f.holds(&json!({"name": "DB_PASSWORD", "value": "x"})));
        assert!(!f.holds(&json!({"name": "MODE", "value": "x"})));
        let steps = parse("$.env[?search(@.name, '(?i)token')]")?;
        let Some(Step::Filter(f)) = steps.last() else {
            return Err("no filter".into());
        };
        assert!(
            matches!(f, Filter::Regex { .. }),
            "common forms are evaluated natively"
        );
        assert!(f.holds(&json!({"name": "API_TOKEN"})));
        for (expr, yes, no) in [
            ("@.name == 'a'", json!({"name": "a"}), json!({"name": "b"})),
            (
                "@.spec.n != 3",
                json!({"spec": {"n": 4}}),
                json!({"spec": {"n": 3}}),
            ),
            ("@.value", json!({"value": ""}), json!({"valueFrom": {}})),
            (
                "match(@.name, 'ab')",
                json!({"name": "ab"}),
                json!({"name": "abc"}),
            ),
            ("@.a < 3", json!({"a": 1}), json!({"a": 5})),
        ] {
            let f = Filter::compile(expr)?;
            assert!(f.holds(&yes), "{expr} on {yes}");
            assert!(!f.holds(&no), "{expr} on {no}");
        }
        Ok(())
    }
}
