//! `metadata.managedFields`: which manager set which fields, in the `FieldsV1` format
//! (`f:<field>`, `k:{<merge key>}` for keyed list items, `.` for a map or item owned as a whole).
//!
//! The API server derives this from OpenAPI schemas; the sandbox approximates the schema with
//! field names (maps of user keys such as labels and data, lists keyed by name), which is enough
//! for the field names the masker has to treat as sensitive to show up where a real cluster shows
//! them.

use serde_json::{Map, Value, json};

/// Fields whose value is a map of user-chosen keys rather than a struct.
fn is_user_map(field: &str, value: &Map<String, Value>) -> bool {
    match field {
        "labels" | "annotations" | "data" | "stringData" | "binaryData" | "matchLabels"
        | "nodeSelector" | "limits" | "requests" | "capacity" | "allocatable" => true,
        // A Service's selector is a map; a Deployment's is a LabelSelector struct.
        "selector" => !value.contains_key("matchLabels") && !value.contains_key("matchExpressions"),
        _ => false,
    }
}

pub(crate) fn list_key(field: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "ports" => Some("containerPort"),
        _ => None,
    }
}

/// Top-level and metadata fields the API server never attributes to a manager.
const SYSTEM: &[&str] = &["apiVersion", "kind", "status"];
const SYSTEM_META: &[&str] = &[
    "name",
    "namespace",
    "generateName",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

pub(crate) fn item_key(key: &str, item: &Value) -> Option<String> {
    let id = item.get(key)?;
    let mut m = Map::new();
    m.insert(key.to_owned(), id.clone());
    if key == "containerPort" {
        // Container ports are keyed by port and protocol.
        m.insert(
            "protocol".to_owned(),
            item.get("protocol").cloned().unwrap_or(json!("TCP")),
        );
    }
    Some(format!("k:{}", Value::Object(m)))
}

/// The fields `new` sets that `old` did not have with the same value.
fn diff(field: &str, old: Option<&Value>, new: &Value) -> Option<Value> {
    if old == Some(new) {
        return None;
    }
    match new {
        Value::Object(n) => {
            let empty = Map::new();
            let o = old.and_then(Value::as_object).unwrap_or(&empty);
            let mut out = Map::new();
            if is_user_map(field, n) && old.is_none() {
                out.insert(".".to_owned(), json!({}));
            }
            for (k, v) in n {
                if let Some(d) = diff(k, o.get(k), v) {
                    out.insert(format!("f:{k}"), d);
                }
            }
            Some(Value::Object(out))
        }
        Value::Array(items) => {
            let Some(key) = list_key(field) else {
                return Some(json!({}));
            };
            let olds = old.and_then(Value::as_array);
            let mut out = Map::new();
            for item in items {
                let Some(k) = item_key(key, item) else {
                    return Some(json!({}));
                };
                let before = olds.and_then(|l| l.iter().find(|o| o.get(key) == item.get(key)));
                if let Some(Value::Object(mut d)) = diff("", before, item) {
                    if before.is_none() {
                        d.insert(".".to_owned(), json!({}));
                    }
                    out.insert(k, Value::Object(d));
                }
            }
            Some(Value::Object(out))
        }
        _ => Some(json!({})),
    }
}

/// `v` without the fields no manager owns.
pub(crate) fn strip(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.retain(|k, _| !SYSTEM.contains(&k.as_str()));
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.retain(|k, _| !SYSTEM_META.contains(&k.as_str()));
        }
        if m.get("metadata")
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
        {
            m.remove("metadata");
        }
    }
    v
}

/// The field set a write from `old` to `new` gives its manager.
pub fn changed_fields(old: Option<&Value>, new: &Value) -> Value {
    let new = strip(new);
    let old = old.map(strip);
    diff("", old.as_ref(), &new).unwrap_or_else(|| json!({}))
}

fn union(a: &mut Value, b: &Value) {
    if let (Value::Object(a), Value::Object(b)) = (a, b) {
        for (k, v) in b {
            match a.get_mut(k) {
                Some(existing) => union(existing, v),
                None => {
                    a.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// Record that `manager` wrote `fields` with `operation` (`Update` or `Apply`).
pub fn record(
    object: &mut Value,
    manager: &str,
    operation: &str,
    api_version: &str,
    subresource: Option<&str>,
    fields: Value,
    now: &str,
) {
    if fields.as_object().is_some_and(Map::is_empty) {
        return;
    }
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let entries = meta
        .entry("managedFields")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Some(list) = entries.as_array_mut() else {
        return;
    };
    let same = |e: &&mut Value| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some(operation)
            && e.get("subresource").and_then(Value::as_str) == subresource
    };
    if let Some(entry) = list.iter_mut().find(same) {
        if operation == "Apply" {
            entry["fieldsV1"] = fields;
        } else if let Some(existing) = entry.get_mut("fieldsV1") {
            union(existing, &fields);
        }
        entry["time"] = json!(now);
        return;
    }
    let mut entry = json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    });
    if let Some(sub) = subresource {
        entry["subresource"] = json!(sub);
    }
    list.push(entry);
}

/// Server-side apply's removal rule: fields `manager` applied before but leaves out of
/// `applied` now are removed from `object`, unless another manager also owns them.
pub fn prune_unapplied(object: &mut Value, manager: &str, applied: &Value) {
    let entries: Vec<Value> = object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(previous) = entries.iter().find(|e| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Apply")
            && e.get("subresource").is_none()
    }) else {
        return;
    };
    let others: Vec<&Value> = entries
        .iter()
        .filter(|e| !std::ptr::eq(*e, previous))
        .filter_map(|e| e.get("fieldsV1"))
        .collect();
    if let Some(prev) = previous.get("fieldsV1") {
        prune(object, prev, Some(applied), &others);
    }
}

fn prune(node: &mut Value, previous: &Value, applied: Option<&Value>, others: &[&Value]) {
    let Some(prev) = previous.as_object() else {
        return;
    };
    for (k, sub) in prev {
        if k == "." || k.starts_with("v:") {
            continue;
        }
        let still = applied.and_then(|a| a.get(k));
        let owners: Vec<&Value> = others.iter().filter_map(|o| o.get(k)).collect();
        // A leaf, or a node marked `.`, is owned as a whole; other nodes only lead to owned
        // fields below them.
        let whole = sub
            .as_object()
            .is_none_or(|m| m.is_empty() || m.contains_key("."));
        if still.is_none() && owners.is_empty() && whole {
            remove_member(node, k);
            continue;
        }
        if let Some(child) = member_mut(node, k) {
            prune(child, sub, still, &owners);
        }
    }
}

fn matches_key(item: &Value, key: &Map<String, Value>) -> bool {
    key.iter().all(|(k, v)| item.get(k) == Some(v))
}

fn member_mut<'a>(node: &'a mut Value, member: &str) -> Option<&'a mut Value> {
    if let Some(field) = member.strip_prefix("f:") {
        return node.get_mut(field);
    }
    let key: Map<String, Value> = serde_json::from_str(member.strip_prefix("k:")?).ok()?;
    node.as_array_mut()?
        .iter_mut()
        .find(|i| matches_key(i, &key))
}

fn remove_member(node: &mut Value, member: &str) {
    if let Some(field) = member.strip_prefix("f:") {
        if let Some(m) = node.as_object_mut() {
            m.remove(field);
        }
    } else if let Some(key) = member
        .strip_prefix("k:")
        .and_then(|k| serde_json::from_str::<Map<String, Value>>(k).ok())
        && let Some(list) = node.as_array_mut()
    {
        list.retain(|i| !matches_key(i, &key));
    }
}

/// The manager name for a request: `fieldManager`, else the User-Agent up to its first `/`
/// (`prefixFromUserAgent` in the API server).
pub fn manager_name(field_manager: Option<&str>, user_agent: Option<&str>) -> String {
    if let Some(m) = field_manager.filter(|m| !m.is_empty()) {
        return m.to_owned();
    }
    user_agent
        .and_then(|ua| ua.split('/').next())
        .filter(|p| !p.is_empty())
        .unwrap_or("unknown")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_create() {
        let s = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "dev", "labels": {"app": "db"}},
            "data": {"password": "cw=="}, "type": "Opaque"});
        assert_eq!(
            changed_fields(None, &s),
            json!({"f:data": {".": {}, "f:password": {}},
                   "f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:type": {}})
        );
    }

    #[test]
    fn apply_removes_what_it_no_longer_applies() {
        let mut o = json!({"metadata": {"managedFields": [
            {"manager": "k", "operation": "Apply", "fieldsV1": {"f:data": {"f:a": {}, "f:b": {}}, "f:spec": {"f:env": {"k:{\"name\":\"X\"}": {".": {}}}}}},
            {"manager": "other", "operation": "Update", "fieldsV1": {"f:data": {"f:b": {}}}}
        ]}, "data": {"a": "1", "b": "2", "c": "3"}, "spec": {"env": [{"name": "X"}, {"name": "Y"}]}});
        prune_unapplied(&mut o, "k", &json!({"f:spec": {}}));
        assert_eq!(o["data"], json!({"b": "2", "c": "3"}));
        assert_eq!(o["spec"]["env"], json!([{"name": "Y"}]));
    }

    #[test]
    fn keyed_lists() {
        let old = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}]}});
        let new = json!({"spec": {"containers": [{"name": "a", "image": "x:2", "env": [{"name": "TOKEN", "value": "t"}]}]}});
        assert_eq!(
            changed_fields(Some(&old), &new),
            json!({"f:spec": {"f:containers": {"k:{\"name\":\"a\"}": {
                "f:env": {"k:{\"name\":\"TOKEN\"}": {".": {}, "f:name": {}, "f:value": {}}},
                "f:image": {}}}}})
        );
    }
}
