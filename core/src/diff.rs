//! What a write would change: the differences between two versions of an object (the live one
//! and the API server's dry-run result), shown through the masker, so that an approver sees
//! that a masked value changed but never the value.
//!
//! ```
//! use kubeleash_core::diff::{Change, changes};
//! use serde_json::json;
//!
//! let live = json!({"spec": {"replicas": 2, "template": {"spec": {"image": "web:1"}}}});
//! let after = json!({"spec": {"replicas": 5, "template": {"spec": {"image": "web:2"}}}});
//! let c = changes(Some(&live), Some(&after), Some(&live), Some(&after));
//! assert_eq!(c[0], Change { path: "spec.replicas".into(), before: Some(json!(2)), after: Some(json!(5)), masked: false });
//! assert_eq!(c[1].path, "spec.template.spec.image");
//! ```

use serde::Serialize;
use serde_json::Value;

/// One difference between two versions of an object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// Where: keys joined by `.` (a key holding `.`, `[` or `]` is written `["key"]`), list
    /// items as `[n]`.
    pub path: String,
    /// The value before, as the masker shows it; `None` when the field is added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// The value after, as the masker shows it; `None` when the field is removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    /// The value is masked on at least one side: what is shown says only that it changed.
    pub masked: bool,
}

/// Fields the API server keeps for itself, which every write changes: not shown.
const NOISE: &[&str] = &[
    "metadata.resourceVersion",
    "metadata.generation",
    "metadata.managedFields",
    "metadata.creationTimestamp",
    "metadata.uid",
];

/// The changes from `before` to `after` (the real values, compared) shown through
/// `before_shown` and `after_shown` (the same documents as the masker delivers them). Where a
/// value differs but the masked forms are equal (both `[masked]`), the change is reported with
/// both sides as shown and `masked` set. Where the masked form's shape differs from the real
/// one's (a masked container), the shown value at the nearest common path is used. A missing
/// shown document hides every value: each change is `masked`, with no values.
pub fn changes(
    before: Option<&Value>,
    after: Option<&Value>,
    before_shown: Option<&Value>,
    after_shown: Option<&Value>,
) -> Vec<Change> {
    let mut out = Vec::new();
    walk(
        before,
        after,
        Shown(before_shown),
        Shown(after_shown),
        &mut String::new(),
        &mut out,
    );
    out.retain(|c| !NOISE.iter().any(|n| is_under(&c.path, n)));
    out
}

/// A shown document, followed alongside the real one as far as it has the same shape.
#[derive(Clone, Copy)]
struct Shown<'a>(Option<&'a Value>);

impl<'a> Shown<'a> {
    fn key(self, k: &str) -> Shown<'a> {
        match self.0 {
            Some(Value::Object(m)) => Shown(m.get(k)),
            // A masked container (a string marker where an object was): it stands for
            // everything below it.
            Some(v @ Value::String(_)) => Shown(Some(v)),
            _ => Shown(None),
        }
    }

    fn index(self, i: usize) -> Shown<'a> {
        match self.0 {
            Some(Value::Array(a)) => Shown(a.get(i)),
            Some(v @ Value::String(_)) => Shown(Some(v)),
            _ => Shown(None),
        }
    }
}

fn walk(
    before: Option<&Value>,
    after: Option<&Value>,
    bs: Shown<'_>,
    as_: Shown<'_>,
    path: &mut String,
    out: &mut Vec<Change>,
) {
    if before == after {
        return;
    }
    // An object added or removed whole (a create, a delete, a new map) is compared with an
    // empty one: each field is listed, and the server's own fields stay out.
    let empty = Value::Object(serde_json::Map::new());
    let (before, bs) = match (before, after) {
        (None, Some(Value::Object(m))) if !m.is_empty() => (Some(&empty), Shown(Some(&empty))),
        _ => (before, bs),
    };
    let (after, as_) = match (before, after) {
        (Some(Value::Object(m)), None) if !m.is_empty() => (Some(&empty), Shown(Some(&empty))),
        _ => (after, as_),
    };
    match (before, after) {
        (Some(Value::Object(b)), Some(Value::Object(a))) => {
            let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
            keys.sort_unstable();
            keys.dedup();
            for k in keys {
                let len = path.len();
                push_key(path, k);
                walk(b.get(k), a.get(k), bs.key(k), as_.key(k), path, out);
                path.truncate(len);
            }
        }
        (Some(Value::Array(b)), Some(Value::Array(a))) => {
            for i in 0..b.len().max(a.len()) {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(b.get(i), a.get(i), bs.index(i), as_.index(i), path, out);
                path.truncate(len);
            }
        }
        _ => {
            let shown = |real: Option<&Value>, s: Shown<'_>| match (real, s.0) {
                (None, _) => (None, false),
                (Some(_), Some(v)) if !is_container(v) || real.is_some_and(is_container) => {
                    (Some(v.clone()), v != real.unwrap_or(&Value::Null))
                }
                // The shown document lost the value's shape or has nothing here: hide it.
                (Some(_), _) => (Some(Value::String("[hidden]".into())), true),
            };
            let (b, bm) = shown(before, bs);
            let (a, am) = shown(after, as_);
            let masked = bm || am;
            out.push(Change {
                path: path.clone(),
                before: b,
                after: a,
                masked,
            });
        }
    }
}

fn is_container(v: &Value) -> bool {
    matches!(v, Value::Object(_) | Value::Array(_))
}

fn push_key(path: &mut String, k: &str) {
    if k.contains(['.', '[', ']']) || k.is_empty() {
        path.push_str(&format!("[{}]", Value::from(k)));
    } else {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(k);
    }
}

fn is_under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// The changes as lines a person reads: `path: before → after`, `+ path: value`,
/// `- path: value`, and `path: changed (masked)` where only the fact is shown.
pub fn render(changes: &[Change]) -> String {
    let show = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut s = String::new();
    for c in changes {
        let line = match (&c.before, &c.after) {
            (Some(b), Some(a)) if c.masked && b == a => format!("~ {}: changed (masked)", c.path),
            (Some(b), Some(a)) => format!("~ {}: {} -> {}", c.path, show(b), show(a)),
            (None, Some(a)) => format!("+ {}: {}", c.path, show(a)),
            (Some(b), None) => format!("- {}: {}", c.path, show(b)),
            (None, None) => format!("~ {}", c.path),
        };
        s.push_str(&line);
        s.push('\n');
    }
    s
}
