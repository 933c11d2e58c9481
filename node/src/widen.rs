//! Widened approvals from JavaScript: the axes a held request offers (`request.widen`), and an
//! answer's `widen` object as a [`Widening`].
//!
//! The shape of a widening (types, ranges, unknown keys) is checked here: a malformed one is
//! an approver failure (the request is denied, the operator's `onError` is told what was
//! wrong), since a typo must not quietly become a wider or narrower grant than meant. Whether a
//! well-formed widening fits the request (an axis not offered, a name glob that does not match
//! the name, an unknown field path) is the layer's call: it then approves exactly, leaves no
//! grant and records why.

use kubeleash_tower::{Axes, FieldRange, Widening};
use napi_derive::napi;
use serde_json::{Map, Value};

/// What an approver may widen an approval along (`{ approve: true, widen: {...} }`).
#[napi(object, use_nullable = true)]
#[derive(Debug, Clone)]
pub struct WidenAxes {
    /// Why the request may be approved only exactly (the policy's floor,
    /// `approvals.neverWiden`: by default deletes, Secrets, RBAC, exec...); then nothing else is
    /// offered. `null` when it may be widened.
    pub never: Option<String>,
    /// Whether `widen.names` (a glob the object's name may match) may be given.
    pub names: bool,
    /// The body fields `widen.fields` may give a range (numbers) or a glob (strings).
    pub fields: Vec<String>,
    /// Whether `widen.uses` and `widen.seconds` may be given.
    pub uses_and_time: bool,
}

impl From<&Axes> for WidenAxes {
    fn from(a: &Axes) -> Self {
        WidenAxes {
            never: a.never.clone(),
            names: a.names,
            fields: a.fields.clone(),
            uses_and_time: a.uses_and_time,
        }
    }
}

/// An answer's `widen` object as a widening, or what is wrong with it (quoting it).
pub(crate) fn widening(v: &Value) -> Result<Widening, String> {
    let Value::Object(o) = v else {
        return Err(format!(
            "`widen` must be an object such as {{ names: 'web-*', uses: 3 }}, not {v}"
        ));
    };
    if let Some(k) = o
        .keys()
        .find(|k| !["names", "fields", "uses", "seconds"].contains(&k.as_str()))
    {
        return Err(format!(
            "`widen` has an unknown key `{k}`: give names, fields, uses or seconds"
        ));
    }
    let w = Widening {
        names: names(o)?,
        fields: match o.get("fields") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.iter().map(field_range).collect::<Result<_, _>>()?,
            Some(f) => {
                return Err(format!(
                    "`widen.fields` must be an array of ranges, not {f}"
                ));
            }
        },
        uses: positive(o, "uses")?
            .map(u32::try_from)
            .transpose()
            .map_err(|_| "`widen.uses` is too large".to_string())?,
        seconds: positive(o, "seconds")?,
    };
    if w.is_exact() {
        return Err(
            "`widen` gives none of names, fields, uses or seconds; to approve only this request, leave `widen` out"
                .into(),
        );
    }
    Ok(w)
}

fn names(o: &Map<String, Value>) -> Result<Option<String>, String> {
    match o.get("names") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(n) => Err(format!(
            "`widen.names` must be a non-empty glob string such as 'web-*', not {n}"
        )),
    }
}

fn positive(o: &Map<String, Value>, key: &str) -> Result<Option<u64>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| format!("`widen.{key}` must be a positive whole number, not {v}")),
    }
}

/// `{ path, min, max }`, `{ path, matches }`, or the prompt's `'PATH=MIN..MAX'` / `'PATH=GLOB'`.
fn field_range(v: &Value) -> Result<FieldRange, String> {
    if let Value::String(s) = v {
        return s.parse().map_err(|e| format!("`widen.fields`: {e}"));
    }
    let bad = || {
        format!(
            "a `widen.fields` entry is {{ path, min, max }} (numbers, min <= max) or {{ path, matches }} (a glob), not {v}"
        )
    };
    let Value::Object(o) = v else {
        return Err(bad());
    };
    if o.keys()
        .any(|k| !["path", "min", "max", "matches"].contains(&k.as_str()))
    {
        return Err(bad());
    }
    let path = o.get("path").and_then(Value::as_str).ok_or_else(bad)?;
    let num = |k: &str| match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(n) => n.as_f64().map(Some).ok_or_else(bad),
    };
    let matches = match o.get("matches") {
        None | Some(Value::Null) => None,
        Some(Value::String(g)) => Some(g.clone()),
        Some(_) => return Err(bad()),
    };
    let range = FieldRange {
        path: path.to_string(),
        min: num("min")?,
        max: num("max")?,
        matches,
    };
    match (range.min, range.max, &range.matches) {
        (Some(min), Some(max), None) if min <= max => Ok(range),
        (None, None, Some(_)) => Ok(range),
        _ => Err(bad()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_widening_reads_names_fields_uses_and_seconds() {
        let w = widening(&json!({"names": "web-*", "fields": [{"path": "spec.replicas", "min": 1, "max": 5}, {"path": "data.k", "matches": "v*"}], "uses": 2, "seconds": 60})).unwrap();
        assert_eq!(w.names.as_deref(), Some("web-*"));
        assert_eq!(w.fields.len(), 2);
        assert_eq!((w.uses, w.seconds), (Some(2), Some(60)));
    }

    #[test]
    fn malformed_widenings_say_what_is_wrong() {
        for (v, says) in [
            (json!({}), "gives none"),
            (json!({"name": "x"}), "unknown key `name`"),
            (json!({"uses": 0}), "positive whole number"),
            (json!({"uses": -1}), "positive whole number"),
            (json!({"names": ""}), "non-empty glob"),
            (
                json!({"fields": [{"path": "a", "min": 5, "max": 1}]}),
                "min <= max",
            ),
            (json!({"fields": [{"path": "a", "min": 1}]}), "min <= max"),
            (json!({"fields": "a=1..2"}), "array of ranges"),
            (json!("web-*"), "must be an object"),
        ] {
            let e = widening(&v).unwrap_err();
            assert!(e.contains(says), "{v}: {e}");
        }
    }
}
