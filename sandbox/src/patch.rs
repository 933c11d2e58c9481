//! The patch algorithms: JSON Patch (RFC 6902), JSON Merge Patch (RFC 7386), and strategic merge
//! for the built-in kinds, with list merge keys and the `$patch`, `$setElementOrder`,
//! `$retainKeys` and `$deleteFromPrimitiveList` directives that kubectl sends.

use serde_json::{Map, Value};

/// Why a patch could not be applied: the body was malformed (400) or did not apply (422).
#[derive(Debug, Clone, PartialEq)]
pub enum PatchError {
    Malformed(String),
    DoesNotApply(String),
}

fn unescape_token(t: &str) -> String {
    t.replace("~1", "/").replace("~0", "~")
}

fn tokens(pointer: &str) -> Result<Vec<String>, PatchError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| PatchError::Malformed(format!("invalid JSON pointer {pointer:?}")))?;
    Ok(rest.split('/').map(unescape_token).collect())
}

fn parent_mut<'a>(
    doc: &'a mut Value,
    toks: &[String],
    path: &str,
) -> Result<&'a mut Value, PatchError> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| PatchError::DoesNotApply(format!("doc is missing path: {path:?}")))?;
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    let toks = tokens(path)?;
    let Some((last, parents)) = toks.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, parents, path)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
                return Ok(());
            }
            let i = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i <= a.len())
                .ok_or_else(|| {
                    PatchError::DoesNotApply(format!("Unable to access invalid index: {last}"))
                })?;
            a.insert(i, value);
            Ok(())
        }
        _ => Err(PatchError::DoesNotApply(format!(
            "doc is missing path: {path:?}"
        ))),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, PatchError> {
    let toks = tokens(path)?;
    let Some((last, parents)) = toks.split_last() else {
        return Err(PatchError::DoesNotApply(
            "cannot remove the root".to_owned(),
        ));
    };
    let missing = || PatchError::DoesNotApply(format!("doc is missing path: {path:?}"));
    match parent_mut(doc, parents, path)? {
        Value::Object(m) => m.remove(last).ok_or_else(missing),
        Value::Array(a) => {
            let i = last.parse::<usize>().ok().filter(|i| *i < a.len());
            i.map(|i| a.remove(i)).ok_or_else(missing)
        }
        _ => Err(missing()),
    }
}

fn get<'a>(doc: &'a Value, path: &str) -> Result<&'a Value, PatchError> {
    let toks = tokens(path)?;
    let mut cur = doc;
    for t in &toks {
        cur = match cur {
            Value::Object(m) => m.get(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        }
        .ok_or_else(|| PatchError::DoesNotApply(format!("doc is missing path: {path:?}")))?;
    }
    Ok(cur)
}

/// Apply an RFC 6902 patch document.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let ops = patch.as_array().ok_or_else(|| {
        PatchError::Malformed(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch".to_owned(),
        )
    })?;
    // The API server's cap on operations per patch (`maxJSONPatchOperations`).
    if ops.len() > 10_000 {
        return Err(PatchError::Malformed(format!(
            "The allowed maximum operations in a JSON patch is 10000, got {}",
            ops.len()
        )));
    }
    let mut doc = doc.clone();
    for op in ops {
        let field = |name: &str| op.get(name).and_then(Value::as_str);
        let path = field("path")
            .ok_or_else(|| PatchError::Malformed("missing path in operation".to_owned()))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| PatchError::Malformed(format!("missing value for {path:?}")))
        };
        match field("op").unwrap_or("") {
            "add" => add(&mut doc, path, value()?)?,
            "remove" => {
                remove(&mut doc, path)?;
            }
            "replace" => {
                remove(&mut doc, path)?;
                add(&mut doc, path, value()?)?;
            }
            "move" => {
                let from = field("from")
                    .ok_or_else(|| PatchError::Malformed("missing from in move".to_owned()))?;
                let v = remove(&mut doc, from)?;
                add(&mut doc, path, v)?;
            }
            "copy" => {
                let from = field("from")
                    .ok_or_else(|| PatchError::Malformed("missing from in copy".to_owned()))?;
                let v = get(&doc, from)?.clone();
                add(&mut doc, path, v)?;
            }
            "test" => {
                if *get(&doc, path)? != value()? {
                    return Err(PatchError::DoesNotApply(format!(
                        "testing value {path} failed: test failed"
                    )));
                }
            }
            other => {
                return Err(PatchError::Malformed(format!("Unexpected kind: {other}")));
            }
        }
    }
    Ok(doc)
}

/// Apply an RFC 7386 merge patch: `null` deletes, objects merge, everything else replaces.
pub fn merge_patch(doc: &Value, patch: &Value) -> Value {
    match (doc, patch) {
        (Value::Object(d), Value::Object(p)) => {
            let mut out = d.clone();
            for (k, v) in p {
                if v.is_null() {
                    out.remove(k);
                } else {
                    let merged = merge_patch(d.get(k).unwrap_or(&Value::Null), v);
                    out.insert(k.clone(), merged);
                }
            }
            Value::Object(out)
        }
        (_, Value::Object(p)) => merge_patch(&Value::Object(Map::new()), &Value::Object(p.clone())),
        (_, other) => other.clone(),
    }
}

/// The merge key of a list field for the built-in kinds (the `patchMergeKey` struct tags).
/// Lists not named here are replaced whole, as atomic lists are.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let has = |k: &str| items.iter().any(|i| i.get(k).is_some());
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "secrets"
        | "volumeDevices" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "ports" if has("containerPort") => Some("containerPort"),
        "ports" => Some("port"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        _ => None,
    }
}

/// Primitive lists with the `merge` strategy (union instead of replace).
fn merges_primitives(field: &str) -> bool {
    field == "finalizers"
}

/// Apply a strategic merge patch to `doc`.
pub fn strategic_merge(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    match (doc, patch) {
        (Value::Object(d), Value::Object(p)) => merge_maps(d, p).map(Value::Object),
        (_, Value::Object(p)) => merge_maps(&Map::new(), p).map(Value::Object),
        (_, other) => Ok(other.clone()),
    }
}

fn merge_maps(
    doc: &Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Map<String, Value>, PatchError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut out = patch.clone();
            out.remove("$patch");
            return Ok(out);
        }
        Some("delete") => return Ok(Map::new()),
        Some("merge") | None => {}
        Some(other) => {
            return Err(PatchError::Malformed(format!(
                "Unknown patch type: {other} in map"
            )));
        }
    }
    let mut out = doc.clone();
    if let Some(keep) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, v) in patch {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(drop)) = (out.get_mut(field), v.as_array()) {
                list.retain(|x| !drop.contains(x));
            }
            continue;
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        let merged = match (doc.get(k), v) {
            (Some(Value::Object(d)), Value::Object(p)) => Value::Object(merge_maps(d, p)?),
            (_, Value::Object(p)) => Value::Object(merge_maps(&Map::new(), p)?),
            (Some(Value::Array(d)), Value::Array(p)) => Value::Array(merge_lists(k, d, p)?),
            (None, Value::Array(p)) => Value::Array(merge_lists(k, &[], p)?),
            (_, other) => other.clone(),
        };
        out.insert(k.clone(), merged);
    }
    Ok(out)
}

fn merge_lists(field: &str, doc: &[Value], patch: &[Value]) -> Result<Vec<Value>, PatchError> {
    // A list holding `{"$patch": "replace"}` replaces the whole list with the other items.
    if patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(patch
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect());
    }
    if merges_primitives(field) {
        let mut out = doc.to_vec();
        for v in patch {
            if !out.contains(v) {
                out.push(v.clone());
            }
        }
        return Ok(out);
    }
    let all: Vec<Value> = doc.iter().chain(patch).cloned().collect();
    let Some(key) = merge_key(field, &all) else {
        return Ok(patch
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect());
    };
    let mut out = doc.to_vec();
    for item in patch {
        let Some(id) = item.get(key) else {
            out.push(item.clone());
            continue;
        };
        let pos = out.iter().position(|o| o.get(key) == Some(id));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => out[i] = strategic_merge(&out[i], item)?,
            (None, false) => out.push(strategic_merge(&Value::Null, item)?),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_patch_ops() {
        let doc = json!({"a": {"b": [1, 2]}, "c": "x"});
        let p = json!([
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "replace", "path": "/c", "value": "y"},
            {"op": "copy", "from": "/c", "path": "/d"},
            {"op": "move", "from": "/d", "path": "/e~1f"},
            {"op": "test", "path": "/a/b/2", "value": 3},
            {"op": "remove", "path": "/a/b/0"}
        ]);
        assert_eq!(
            json_patch(&doc, &p),
            Ok(json!({"a": {"b": [2, 3]}, "c": "y", "e/f": "y"}))
        );
        let bad = json!([{"op": "test", "path": "/c", "value": "z"}]);
        assert!(matches!(
            json_patch(&doc, &bad),
            Err(PatchError::DoesNotApply(_))
        ));
    }

    #[test]
    fn merge_patch_deletes_with_null() {
        let doc = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        let p = json!({"a": null, "b": {"c": 5}, "l": [9]});
        assert_eq!(
            merge_patch(&doc, &p),
            json!({"b": {"c": 5, "d": 3}, "l": [9]})
        );
    }

    #[test]
    fn strategic_merge_uses_merge_keys_and_directives() {
        let doc = json!({"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "side", "image": "s:1"}
        ]}, "metadata": {"finalizers": ["a"]}});
        let p = json!({"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "side"}],
            "containers": [
                {"name": "app", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
                {"name": "side", "$patch": "delete"}
            ]}, "metadata": {"finalizers": ["b"]}});
        assert_eq!(
            strategic_merge(&doc, &p),
            Ok(json!({"spec": {"containers": [
                {"name": "app", "image": "a:2", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}
            ]}, "metadata": {"finalizers": ["a", "b"]}}))
        );
    }
}
