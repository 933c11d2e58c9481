//! Server-side apply's ownership rules, after structured-merge-diff's `Updater`: field sets are
//! compared path by path, an apply that changes a field another manager owns is a 409 Conflict
//! (unless forced, which moves the field to the applier), and any write takes the fields it
//! changed away from the other managers.
//!
//! A path is a list of FieldsV1 elements (`f:<field>`, `k:{<merge key>}`, `v:<value>`); which
//! lists are keyed comes from [`fields::list_key`], the same approximation of the OpenAPI schema
//! that `managedFields` uses everywhere in the sandbox.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::fields::{self, item_key, list_key};
use crate::status::ApiError;

pub type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

/// The paths a FieldsV1 tree holds: every leaf, and every inner node marked `.`.
pub fn to_set(v1: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    collect(v1, &mut Vec::new(), &mut out);
    out
}

fn collect(node: &Value, prefix: &mut Path, out: &mut FieldSet) {
    let Some(m) = node.as_object() else { return };
    for (k, child) in m {
        if k == "." {
            continue;
        }
        prefix.push(k.clone());
        if child
            .as_object()
            .is_none_or(|c| c.is_empty() || c.contains_key("."))
        {
            out.insert(prefix.clone());
        }
        collect(child, prefix, out);
        prefix.pop();
    }
}

fn node_at<'a>(
    mut node: &'a mut Map<String, Value>,
    path: &[String],
) -> Option<&'a mut Map<String, Value>> {
    for el in path {
        node = node
            .entry(el.clone())
            .or_insert_with(|| json!({}))
            .as_object_mut()?;
    }
    Some(node)
}

/// The FieldsV1 tree of a set.
pub fn to_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        node_at(&mut root, path);
    }
    for path in set {
        if let Some(n) = node_at(&mut root, path)
            && !n.is_empty()
        {
            n.insert(".".to_owned(), json!({}));
        }
    }
    Value::Object(root)
}

enum Shape<'a> {
    Map(&'a Map<String, Value>),
    Keyed(&'static str, &'a [Value]),
    Set(&'a [Value]),
    Leaf,
}

fn shape<'a>(field: &str, v: &'a Value) -> Shape<'a> {
    match v {
        Value::Object(m) => Shape::Map(m),
        Value::Array(items) => {
            if let Some(key) = list_key(field)
                && items.iter().all(|i| item_key(key, i).is_some())
            {
                Shape::Keyed(key, items)
            } else if field == "finalizers" && items.iter().all(|i| i.is_string()) {
                Shape::Set(items)
            } else {
                Shape::Leaf
            }
        }
        _ => Shape::Leaf,
    }
}

/// The elements below a map, list or set node, each with the field name its value is
/// interpreted under and the value.
fn children<'a>(field: &str, v: &'a Value) -> Option<Vec<(String, String, &'a Value)>> {
    match shape(field, v) {
        Shape::Map(m) => Some(
            m.iter()
                .filter(|(_, c)| !c.is_null())
                .map(|(k, c)| (format!("f:{k}"), k.clone(), c))
                .collect(),
        ),
        Shape::Keyed(key, items) => Some(
            items
                .iter()
                .filter_map(|i| Some((item_key(key, i)?, String::new(), i)))
                .collect(),
        ),
        Shape::Set(items) => Some(
            items
                .iter()
                .map(|i| (format!("v:{i}"), String::new(), i))
                .collect(),
        ),
        Shape::Leaf => None,
    }
}

/// What changed between two versions of an object, as paths.
#[derive(Debug, Default)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }
}

/// Compare two objects, leaving out the fields no manager owns.
pub fn compare(old: &Value, new: &Value) -> Comparison {
    let mut c = Comparison::default();
    walk(
        &mut c,
        "",
        Some(&fields::strip(old)),
        Some(&fields::strip(new)),
        &mut Vec::new(),
    );
    c
}

fn walk(
    c: &mut Comparison,
    field: &str,
    old: Option<&Value>,
    new: Option<&Value>,
    path: &mut Path,
) {
    let empty = |v: Option<&Value>| {
        v.is_none_or(|v| {
            v.is_null()
                || v.as_object().is_some_and(Map::is_empty)
                || v.as_array().is_some_and(Vec::is_empty)
        })
    };
    let mark = |set: &mut FieldSet, path: &Path| {
        if !path.is_empty() {
            set.insert(path.clone());
        }
    };
    let old_kids = old.and_then(|v| children(field, v));
    let new_kids = new.and_then(|v| children(field, v));
    let compound = (old.is_none() || old_kids.is_some()) && (new.is_none() || new_kids.is_some());
    if !compound || (empty(old) && empty(new)) {
        // A leaf, an atomic list, a node whose shape changed, or empty on both sides.
        match (old, new) {
            (None, Some(_)) => mark(&mut c.added, path),
            (Some(_), None) => mark(&mut c.removed, path),
            (Some(a), Some(b)) if a != b => mark(&mut c.modified, path),
            _ => {}
        }
        return;
    }
    match (old, new) {
        (None, Some(_)) => mark(&mut c.added, path),
        (Some(_), None) => mark(&mut c.removed, path),
        _ => {}
    }
    let old_kids = old_kids.unwrap_or_default();
    let new_kids = new_kids.unwrap_or_default();
    let mut names: Vec<&String> = old_kids.iter().map(|k| &k.0).collect();
    for k in &new_kids {
        if !names.contains(&&k.0) {
            names.push(&k.0);
        }
    }
    for name in names {
        let o = old_kids.iter().find(|k| &k.0 == name);
        let n = new_kids.iter().find(|k| &k.0 == name);
        let sub = o.or(n).map(|k| k.1.clone()).unwrap_or_default();
        path.push(name.clone());
        walk(c, &sub, o.map(|k| k.2), n.map(|k| k.2), path);
        path.pop();
    }
}

/// The set an applied configuration gives its manager: every leaf it sets, and every item of a
/// keyed list or set (`ToFieldSet`).
pub fn applied_set(config: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    leaves("", &fields::strip(config), &mut Vec::new(), &mut out);
    out
}

fn leaves(field: &str, v: &Value, path: &mut Path, out: &mut FieldSet) {
    let kids = children(field, v).filter(|k| !k.is_empty());
    let Some(kids) = kids else {
        if !path.is_empty() {
            out.insert(path.clone());
        }
        return;
    };
    let items = !v.is_object();
    for (el, sub, child) in kids {
        path.push(el);
        if items {
            out.insert(path.clone());
        }
        if child.is_object() || child.is_array() || !items {
            leaves(&sub, child, path, out);
        }
        path.pop();
    }
}

/// A path as structured-merge-diff prints it: `.spec.containers[name="web"].image`.
pub fn display(path: &Path) -> String {
    let mut out = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        } else if let Some(i) = el.strip_prefix("i:") {
            out.push_str(&format!("[{i}]"));
        } else {
            out.push_str(el);
        }
    }
    out
}

fn entry_str<'a>(e: &'a Value, key: &str) -> Option<&'a str> {
    e.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// A manager's identity (`BuildManagerIdentifier`: appliers are one manager whatever the API
/// version) and how conflict messages name it (`printManager`).
fn identity(e: &Value) -> (String, String) {
    let manager = entry_str(e, "manager").unwrap_or("");
    let operation = entry_str(e, "operation").unwrap_or("");
    let mut id = Map::new();
    id.insert("manager".to_owned(), json!(manager));
    id.insert("operation".to_owned(), json!(operation));
    let mut shown = format!("{manager:?}");
    if let Some(sub) = entry_str(e, "subresource") {
        shown.push_str(&format!(" with subresource {sub:?}"));
    }
    if operation == "Update" {
        let av = entry_str(e, "apiVersion").unwrap_or("");
        id.insert("apiVersion".to_owned(), json!(av));
        shown.push_str(&format!(" using {av}"));
    }
    let mut id = Value::Object(id).to_string();
    if let Some(sub) = entry_str(e, "subresource") {
        // Go writes `subresource` last.
        id.pop();
        id.push_str(&format!(",\"subresource\":{}}}", json!(sub)));
    }
    (id, shown)
}

fn is_entry(e: &Value, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
    entry_str(e, "manager") == Some(manager)
        && entry_str(e, "operation") == Some(operation)
        && entry_str(e, "subresource") == subresource
}

/// The API server's order of `managedFields`: appliers first, then by time, manager, API
/// version and subresource.
fn sort_entries(entries: &mut [Value]) {
    entries.sort_by(|a, b| {
        let key = |e: &Value| {
            (
                entry_str(e, "operation").unwrap_or("").to_owned(),
                entry_str(e, "time").unwrap_or("").to_owned(),
                entry_str(e, "manager").unwrap_or("").to_owned(),
                entry_str(e, "apiVersion").unwrap_or("").to_owned(),
                entry_str(e, "subresource").unwrap_or("").to_owned(),
            )
        };
        key(a).cmp(&key(b))
    });
}

/// The 409 of an apply that would change fields others own (`NewConflictError`).
fn conflict_error(mut conflicts: Vec<(String, String, Path)>) -> ApiError {
    conflicts.sort();
    let causes: Vec<(String, String)> = conflicts
        .iter()
        .map(|(_, shown, path)| (format!("conflict with {shown}"), display(path)))
        .collect();
    let message = if let [(_, shown, path)] = conflicts.as_slice() {
        format!(
            "Apply failed with 1 conflict: conflict with {shown}: {}",
            display(path)
        )
    } else {
        let mut lines = Vec::new();
        let mut last: Option<&str> = None;
        for (id, shown, path) in &conflicts {
            if last != Some(id.as_str()) {
                lines.push(format!("conflicts with {shown}:"));
                last = Some(id);
            }
            lines.push(format!("- {}", display(path)));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    ApiError::apply_conflict(message, causes)
}

fn entries_of(o: &Value) -> Vec<Value> {
    o.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The `managedFields` after `manager` applied `applied` (its field set) to `live`, giving
/// `merged`: other managers lose what changed (`force`) or the apply fails with a 409 listing
/// each conflicting field; everybody loses what was removed; the applier owns exactly `applied`.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    live: &Value,
    merged: &Value,
    manager: &str,
    api_version: &str,
    applied: &FieldSet,
    force: bool,
    now: &str,
) -> Result<Value, ApiError> {
    let entries = entries_of(live);
    let cmp = compare(live, merged);
    let changed: FieldSet = cmp.added.union(&cmp.modified).cloned().collect();
    let mut conflicts = Vec::new();
    let mut out = Vec::new();
    let mut previous = None;
    let mut others_changed = false;
    for e in &entries {
        if is_entry(e, manager, "Apply", None) {
            previous = Some(e);
            continue;
        }
        let set = to_set(e.get("fieldsV1").unwrap_or(&Value::Null));
        let lost: FieldSet = set.intersection(&changed).cloned().collect();
        if !lost.is_empty() {
            let (id, shown) = identity(e);
            for p in &lost {
                conflicts.push((id.clone(), shown.clone(), p.clone()));
            }
        }
        let kept: FieldSet = set
            .iter()
            .filter(|p| !lost.contains(*p) && !cmp.removed.contains(*p))
            .cloned()
            .collect();
        if kept.len() == set.len() {
            out.push(e.clone());
            continue;
        }
        others_changed = true;
        if !kept.is_empty() {
            let mut e = e.clone();
            e["fieldsV1"] = to_v1(&kept);
            out.push(e);
        }
    }
    if !force && !conflicts.is_empty() {
        return Err(conflict_error(conflicts));
    }
    let same_set = previous
        .and_then(|p| p.get("fieldsV1"))
        .is_some_and(|f| to_set(f) == *applied);
    if same_set && !others_changed && cmp.is_empty() {
        // Nothing changes: keep the entries as they were, times included.
        return Ok(Value::Array(entries));
    }
    if !applied.is_empty() {
        out.push(json!({
            "manager": manager,
            "operation": "Apply",
            "apiVersion": api_version,
            "time": now,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_v1(applied),
        }));
    }
    sort_entries(&mut out);
    Ok(Value::Array(out))
}

/// A non-apply write by `manager` from `old` to `new` takes the fields it added or changed from
/// every other manager, and removed fields leave every set (`Updater.Update` with force).
/// Call before [`fields::record`], which gives the writer its fields.
pub fn take_over(new: &mut Value, old: &Value, manager: &str, subresource: Option<&str>) {
    let cmp = compare(old, new);
    if cmp.is_empty() {
        return;
    }
    let Some(list) = new
        .pointer_mut("/metadata/managedFields")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    list.retain_mut(|e| {
        let own = is_entry(e, manager, "Update", subresource);
        let set = to_set(e.get("fieldsV1").unwrap_or(&Value::Null));
        let lose = |p: &Path| {
            cmp.removed.contains(p) || (!own && (cmp.added.contains(p) || cmp.modified.contains(p)))
        };
        let kept: FieldSet = set.iter().filter(|p| !lose(p)).cloned().collect();
        if kept.len() != set.len() {
            e["fieldsV1"] = to_v1(&kept);
        }
        !kept.is_empty()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_round_trip_through_fields_v1() {
        let v1 = json!({"f:data": {".": {}, "f:a": {}}, "f:spec": {"f:containers": {
            "k:{\"name\":\"web\"}": {".": {}, "f:image": {}}}}});
        let set = to_set(&v1);
        assert!(set.contains(&vec!["f:data".to_owned()]));
        assert!(!set.contains(&vec!["f:spec".to_owned()]));
        assert_eq!(to_v1(&set), v1);
    }

    #[test]
    fn applied_sets_hold_leaves_and_list_items() {
        let cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "labels": {"app": "d"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "web", "ports": [{"containerPort": 80}]}]}}}});
        assert_eq!(
            to_v1(&applied_set(&cfg)),
            json!({"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:replicas": {},
                "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {},
                    "f:name": {}, "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                        ".": {}, "f:containerPort": {}}}}}}}}})
        );
    }

    #[test]
    fn a_changed_field_owned_by_another_applier_conflicts() {
        let live = json!({"metadata": {"name": "c", "managedFields": [
            {"manager": "alice", "operation": "Apply", "apiVersion": "v1", "time": "2025-01-01T00:00:00Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}, "f:b": {}}}}]},
            "data": {"a": "1", "b": "2"}});
        let cfg = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "3"}});
        let merged = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "3"}});
        let set = applied_set(&cfg);
        let now = "2025-01-02T00:00:00Z";
        let err = apply(&live, &merged, "bob", "v1", &set, false, now).err();
        assert_eq!(
            err.map(|e| (e.code, e.message)),
            Some((
                409,
                "Apply failed with 1 conflict: conflict with \"alice\": .data.b".to_owned()
            ))
        );
        let forced = apply(&live, &merged, "bob", "v1", &set, true, now).unwrap_or_default();
        assert_eq!(forced[0]["fieldsV1"], json!({"f:data": {"f:a": {}}}));
        assert_eq!(
            forced[1]["fieldsV1"],
            json!({"f:data": {"f:a": {}, "f:b": {}}})
        );
    }

    #[test]
    fn paths_print_as_structured_merge_diff_does() {
        let p: Path = [
            "f:spec",
            "k:{\"containerPort\":80,\"protocol\":\"TCP\"}",
            "f:name",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(display(&p), ".spec[containerPort=80,protocol=\"TCP\"].name");
    }
}
