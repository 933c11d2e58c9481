//! A small YAML emitter for the JSON a recorded grant carries (a policy rule), in the block
//! style policies are written in: mappings one key a line, lists of scalars in flow style
//! (`verbs: [create]`), lists of mappings as `- key: value` items.
//!
//! Every recorded string may carry bytes the agent chose. A string is written plain only when
//! it is made of characters no YAML reader could take for anything but a string; otherwise it
//! is double-quoted with every character a terminal or a YAML reader could act on escaped, so
//! the text is safe to print and reads back as the same value.
//!
//! ```text
//! - name: grant-1a2b3c4d
//!   verbs: [update]
//!   when:
//!     - path: $.spec.replicas
//!       between: [1.0, 5.0]
//! ```

use kubeleash_core::display::printable;
use serde_json::{Map, Value};

/// The order a policy rule's keys are written in; keys not named here follow in their own
/// order.
const KEY_ORDER: &[&str] = &[
    "name",
    "effect",
    "reason",
    "subjects",
    "users",
    "groups",
    "verbs",
    "apiGroups",
    "resources",
    "nonResourceURLs",
    "namespaces",
    "names",
    "when",
    "path",
];

/// Words a YAML 1.1 or 1.2 reader takes for a boolean or null when written plain.
const RESERVED: &[&str] = &["true", "false", "null", "yes", "no", "on", "off", "y", "n"];

fn ordered(m: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<(&String, &Value)> = m.iter().collect();
    entries.sort_by_key(|(k, _)| {
        KEY_ORDER
            .iter()
            .position(|o| o == k)
            .unwrap_or(KEY_ORDER.len())
    });
    entries
}

/// Whether `s` reads back as the same string when written without quotes, in block and flow
/// context alike.
fn plain(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || matches!(first, '_' | '/' | '$'))
        && chars
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '*' | '$'))
        && !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(s))
}

/// Whether a character must be escaped in a double-quoted scalar: what YAML does not allow
/// there as it is, and what could act on a terminal.
fn escaped(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{feff}'
            | '\u{fffe}'
            | '\u{ffff}')
}

/// `s` as a double-quoted YAML scalar.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if escaped(c) => {
                let n = u32::from(c);
                if n <= 0xff {
                    out.push_str(&format!("\\x{n:02x}"));
                } else if n <= 0xffff {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A string as a YAML scalar: plain when that is safe, else double-quoted.
pub fn scalar(s: &str) -> String {
    if plain(s) { s.to_string() } else { quoted(s) }
}

/// A value in flow style, on one line.
pub fn flow(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar(s),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(flow).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(m) => {
            let inner: Vec<String> = ordered(m)
                .into_iter()
                .map(|(k, v)| format!("{}: {}", scalar(k), flow(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// Whether a value is written on its key's line.
fn inline(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(items) => items.iter().all(|i| !i.is_object() && !i.is_array()),
        _ => true,
    }
}

/// A mapping whose keys start at column `indent`; the first key's line starts with `lead`
/// (`"- "` after its indentation for a list item), the others with spaces.
fn mapping(m: &Map<String, Value>, indent: usize, lead: String, out: &mut Vec<String>) {
    let mut prefix = lead;
    for (k, v) in ordered(m) {
        let key = scalar(k);
        if inline(v) {
            out.push(format!("{prefix}{key}: {}", flow(v)));
        } else {
            out.push(format!("{prefix}{key}:"));
            block(v, indent + 2, out);
        }
        prefix = " ".repeat(indent);
    }
}

/// A value that is not written on its key's line, at column `indent`.
fn block(v: &Value, indent: usize, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => mapping(m, indent, " ".repeat(indent), out),
        Value::Array(items) => {
            for item in items {
                item_lines(item, indent, out);
            }
        }
        other => out.push(format!("{}{}", " ".repeat(indent), flow(other))),
    }
}

/// One list item whose dash is at column `indent`.
fn item_lines(item: &Value, indent: usize, out: &mut Vec<String>) {
    let dash = format!("{}- ", " ".repeat(indent));
    match item {
        Value::Object(m) if !m.is_empty() => mapping(m, indent + 2, dash, out),
        other => out.push(format!("{dash}{}", flow(other))),
    }
}

/// `v` as one item of a block list whose dashes are at column `indent`, one string a line.
///
/// ```text
/// item(&json!({"name": "r", "verbs": ["get"]}), 2) == ["  - name: r", "    verbs: [get]"]
/// ```
pub fn item(v: &Value, indent: usize) -> Vec<String> {
    let mut out = Vec::new();
    item_lines(v, indent, &mut out);
    out
}

/// A comment line at column `indent`: one line, every character that could act on a terminal
/// (or end the comment: a line break) escaped.
pub fn comment(text: &str, indent: usize) -> String {
    format!("{}# {}", " ".repeat(indent), printable(text))
        .trim_end()
        .to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_read_like_policies() {
        let rule = json!({
            "when": [{"path": "$.spec.replicas", "between": [1.0, 5.0]},
                     {"path": "$.metadata.name", "matches": "web-*"}],
            "verbs": ["update"],
            "subjects": {"users": ["agent-1"]},
            "reason": "approved by alice (approval 1a2b), widened: for 900s",
            "name": "grant-1a2b3c4d",
            "effect": "allow",
            "apiGroups": [""],
        });
        assert_eq!(
            item(&rule, 2).join("\n"),
            "  - name: grant-1a2b3c4d\n    effect: allow\n    reason: \"approved by alice (approval 1a2b), widened: for 900s\"\n    subjects:\n      users: [agent-1]\n    verbs: [update]\n    apiGroups: [\"\"]\n    when:\n      - path: $.spec.replicas\n        between: [1.0, 5.0]\n      - path: $.metadata.name\n        matches: web-*"
        );
    }

    #[test]
    fn strings_that_could_mean_something_else_are_quoted() {
        for s in [
            "", "true", "No", "null", "1", "0x1f", "1e3", "*alias", "&anchor", "!tag", "a: b",
            "a #b", "[x]", "{x}", "a,b", "-x", "?x", "%x", "@x", "`x", "'x", "\"x", " x", "x ",
            ".inf", "~", "|", ">",
        ] {
            assert!(!plain(s), "{s:?} must be quoted");
            assert!(scalar(s).starts_with('"'), "{s:?}");
        }
        for s in [
            "agent-1",
            "web-*",
            "$.spec.replicas",
            "/api/*",
            "configmaps",
        ] {
            assert_eq!(scalar(s), s);
        }
    }

    #[test]
    fn quoted_strings_escape_what_a_terminal_or_reader_acts_on() {
        assert_eq!(
            quoted("a\"b\\c\nd\u{1b}[2J\u{7f}\u{9b}\u{202e}\u{e0001}é"),
            "\"a\\\"b\\\\c\\nd\\x1b[2J\\x7f\\x9b\\u202e\u{e0001}é\""
        );
    }

    #[test]
    fn comments_stay_on_one_line() {
        assert_eq!(
            comment("by eve\n- name: injected", 2),
            "  # by eve\\u{a}- name: injected"
        );
    }
}
