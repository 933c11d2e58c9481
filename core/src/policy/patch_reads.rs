//! JSON patch operations that read a value (`docs/kubernetes-semantics.md`, "JSON patch reads:
//! copy, move and test"): `copy` and `move` take the value at `from` and put it somewhere else,
//! and `test` answers whether the value at `path` equals a guess. On a masked field the first
//! launders the value into a field no mask covers (and the patch response shows it), the second
//! is a guessing oracle.
//!
//! A read is allowed only where kubeleash can place it with certainty outside every mask: at a
//! scalar of `metadata` (name, namespace, uid, resourceVersion, generation, timestamps, a label,
//! an annotation, a finalizer) that the policy's masks do not cover for the kind the URL names,
//! judged by running the masker itself over a probe object with a value at that position, once
//! for every kind the resource could hold. Anything else (a whole map or list, `spec`, `data`,
//! the document root, the last-applied annotation) can hold masked values and is refused. A
//! `test` whose value a detector would mask is refused too, wherever it points.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::mask::{MaskSet, Masker};
use crate::request::Request;

/// Why a JSON patch was refused: the operation's index, its `op`, and the pointer.
pub(crate) struct Refused {
    pub index: usize,
    pub op: String,
    pub pointer: String,
    pub detector: bool,
}

/// Most distinct pointers one patch may read, and most reading operations; a read past either
/// is refused (real clients send a handful; each read costs masker runs).
const MAX_DISTINCT_READS: usize = 64;
const MAX_READS: usize = 256;

/// Scalars of `metadata` a read may name: `(first token, whether one more token follows)`.
const METADATA_SCALARS: &[(&str, bool)] = &[
    ("name", false),
    ("namespace", false),
    ("uid", false),
    ("resourceVersion", false),
    ("generation", false),
    ("generateName", false),
    ("creationTimestamp", false),
    ("deletionTimestamp", false),
    ("deletionGracePeriodSeconds", false),
    ("labels", true),
    ("annotations", true),
    ("finalizers", true),
];

/// The first operation of a JSON patch `ops` (already validated) that reads where a mask could
/// cover, for a write to `request`.
pub(crate) fn check(set: &Arc<MaskSet>, request: &Request, ops: &Value) -> Option<Refused> {
    let ops = ops.as_array()?;
    // Each distinct read costs a few masker runs: judge each pointer once, and refuse a patch
    // with more distinct reads than any real client sends, so a long patch costs no more.
    let mut judged: HashSet<&str> = HashSet::new();
    let mut reads = 0;
    for (index, op) in ops.iter().enumerate() {
        let name = op.get("op").and_then(Value::as_str).unwrap_or_default();
        let (field, detector_check) = match name {
            "copy" | "move" => ("from", false),
            "test" => ("path", true),
            _ => continue,
        };
        let pointer = op.get(field).and_then(Value::as_str).unwrap_or_default();
        let refuse = |detector| {
            Some(Refused {
                index,
                op: name.to_string(),
                pointer: pointer.to_string(),
                detector,
            })
        };
        reads += 1;
        if reads > MAX_READS || (judged.len() >= MAX_DISTINCT_READS && !judged.contains(pointer)) {
            return refuse(false);
        }
        if judged.insert(pointer) {
            let Some(probe) = probe_object(pointer) else {
                return refuse(false);
            };
            if masked(set, request, &probe) {
                return refuse(false);
            }
        }
        if detector_check {
            let guess = op.get("value").cloned().unwrap_or(Value::Null);
            // A guess a detector would mask is a guess at a masked value, wherever it points.
            if masked(
                set,
                request,
                &json!({"metadata": {"annotations": {"probe": guess}}}),
            ) {
                return refuse(true);
            }
        }
    }
    None
}

/// The first strategic merge directive of `patch` that compares values of a list a mask could
/// cover: `$deleteFromPrimitiveList/<field>` deletes the elements equal to the ones it lists,
/// and `$setElementOrder/<field>` of a primitive list names its elements, so on a masked list
/// (container `args` and `command`, or values a detector masks) the result answers whether a
/// guess was right. Each such list is put back under its own field name, on the path that leads
/// to it (list elements keep their `name`, the merge key the masks filter on), and judged by the
/// masker. Returns the directive's JSON path.
pub(crate) fn check_strategic(
    set: &Arc<MaskSet>,
    request: &Request,
    patch: &Value,
) -> Option<String> {
    let mut found = Vec::new();
    directives(patch, &mut Vec::new(), &mut found);
    found
        .into_iter()
        .take(MAX_DISTINCT_READS + 1)
        .enumerate()
        .find_map(|(i, (path, probe))| {
            (i == MAX_DISTINCT_READS || masked(set, request, &probe)).then_some(path)
        })
}

/// One step of the way from a patch's root to a directive.
enum Step<'v> {
    Key(&'v str),
    /// A list element, with its `name` when it has one.
    Element(Option<&'v Value>),
}

fn directives<'v>(v: &'v Value, at: &mut Vec<Step<'v>>, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(fields) => {
            for (k, item) in fields {
                let field = k
                    .strip_prefix("$deleteFromPrimitiveList/")
                    .or_else(|| k.strip_prefix("$setElementOrder/"));
                match (field, item) {
                    (Some(field), Value::Array(values)) if values.iter().any(Value::is_string) => {
                        let strings: Vec<Value> =
                            values.iter().filter(|x| x.is_string()).cloned().collect();
                        let mut probe = json!({ field: strings });
                        for step in at.iter().rev() {
                            probe = match step {
                                Step::Key(key) => json!({ *key: probe }),
                                Step::Element(name) => {
                                    if let (Value::Object(o), Some(n)) = (&mut probe, name) {
                                        o.insert("name".into(), (*n).clone());
                                    }
                                    Value::Array(vec![probe])
                                }
                            };
                        }
                        out.push((path_text(at, k), probe));
                    }
                    _ => {
                        at.push(Step::Key(k));
                        directives(item, at, out);
                        at.pop();
                    }
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                at.push(Step::Element(item.get("name").filter(|n| n.is_string())));
                directives(item, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn path_text(at: &[Step<'_>], last: &str) -> String {
    let mut s = String::from("$");
    for step in at {
        match step {
            Step::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Step::Element(_) => s.push_str("[*]"),
        }
    }
    s.push('.');
    s.push_str(last);
    s
}

/// A pointer's reference tokens, `~1` and `~0` decoded.
fn tokens(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// An object with a probe string at `pointer`, or `None` when the pointer is not a metadata
/// scalar a read may name.
fn probe_object(pointer: &str) -> Option<Value> {
    let tokens = tokens(pointer);
    let [first, field, rest @ ..] = tokens.as_slice() else {
        return None;
    };
    if first != "metadata" {
        return None;
    }
    let &(_, keyed) = METADATA_SCALARS.iter().find(|(name, _)| name == field)?;
    let probe = Value::String("probe".into());
    let value = match (keyed, rest) {
        (false, []) => probe,
        (true, [key]) if field == "finalizers" => {
            let index: usize = key.parse().ok().filter(|_| !key.starts_with('+'))?;
            let mut items = vec![Value::String("probe".into()); index.min(64)];
            items.push(probe);
            Value::Array(items)
        }
        (true, [key]) => {
            let mut map = Map::new();
            map.insert(key.clone(), probe);
            Value::Object(map)
        }
        _ => return None,
    };
    let mut metadata = Map::new();
    metadata.insert(field.clone(), value);
    Some(json!({ "metadata": metadata }))
}

/// Whether the masker changes anything in `object` when it is the response to a read of the
/// object `request` writes: once as the API server would send it (with the kind the masker
/// infers from the request), and once claiming each kind a mask rule names, since the URL of a
/// custom resource does not say its kind.
fn masked(set: &Arc<MaskSet>, request: &Request, object: &Value) -> bool {
    let a = &request.attributes;
    if let Some(kind) = builtin_kind(&a.api_group, &a.resource, &a.subresource) {
        return masked_as(set, request, object, &[Some(kind)]);
    }
    let mut kinds: Vec<Option<&str>> = vec![None];
    for rule in &set.rules {
        for kind in rule.kinds.iter().flatten() {
            if !kinds.contains(&Some(kind.as_str())) {
                kinds.push(Some(kind.as_str()));
            }
        }
    }
    masked_as(set, request, object, &kinds)
}

/// The kind a built-in resource (or subresource) holds, where it is certain; anything else is
/// judged as every kind a mask rule names.
fn builtin_kind(group: &str, resource: &str, subresource: &str) -> Option<&'static str> {
    Some(match (group, resource, subresource) {
        ("", "pods", "" | "status" | "ephemeralcontainers" | "resize") => "Pod",
        ("", "secrets", "") => "Secret",
        ("", "configmaps", "") => "ConfigMap",
        ("", "serviceaccounts", "") => "ServiceAccount",
        ("", "serviceaccounts", "token") => "TokenRequest",
        ("", "podtemplates", "") => "PodTemplate",
        ("", "replicationcontrollers", "" | "status") => "ReplicationController",
        ("", "services", "" | "status") => "Service",
        ("", "namespaces", "" | "status" | "finalize") => "Namespace",
        ("", "nodes", "" | "status") => "Node",
        ("", "events", "") | ("events.k8s.io", "events", "") => "Event",
        ("apps", "deployments", "" | "status") => "Deployment",
        ("apps", "statefulsets", "" | "status") => "StatefulSet",
        ("apps", "daemonsets", "" | "status") => "DaemonSet",
        ("apps", "replicasets", "" | "status") => "ReplicaSet",
        ("apps", "controllerrevisions", "") => "ControllerRevision",
        ("batch", "jobs", "" | "status") => "Job",
        ("batch", "cronjobs", "" | "status") => "CronJob",
        ("authentication.k8s.io", "tokenreviews", "") => "TokenReview",
        _ => return None,
    })
}

/// [`masked`] for the given kinds only (`None`: no `kind` member, the masker infers it).
fn masked_as(
    set: &Arc<MaskSet>,
    request: &Request,
    object: &Value,
    kinds: &[Option<&str>],
) -> bool {
    let mut read = request.clone();
    read.method = "GET".into();
    read.attributes.verb = "get".into();
    read.facts.upgrade = None;
    read.facts.patch_type = None;
    let a = &read.attributes;
    let api_version = if a.api_group.is_empty() {
        a.api_version.clone()
    } else {
        format!("{}/{}", a.api_group, a.api_version)
    };
    kinds.iter().any(|kind| {
        // `apiVersion` and `kind` first, as the API server writes them: a streaming masker
        // that meets a field before the kind must assume the strictest kind.
        let mut text = format!("{{\"apiVersion\":{}", Value::String(api_version.clone()));
        if let Some(kind) = kind {
            text.push_str(&format!(",\"kind\":{}", Value::String((*kind).into())));
        }
        if let Value::Object(fields) = object {
            for (k, v) in fields {
                text.push_str(&format!(",{}:{v}", Value::String(k.clone())));
            }
        }
        text.push('}');
        let bytes = text.into_bytes();
        match Masker::new(Arc::clone(set), &read, Some("application/json"), None) {
            Ok(mut m) => {
                let ok = m.feed(&bytes).and_then(|_| m.finish()).is_ok();
                // A masker that fails on the probe cannot vouch for it.
                !ok || m.masked_anything()
            }
            Err(_) => true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_metadata_scalars_get_a_probe() {
        for ok in [
            "/metadata/name",
            "/metadata/resourceVersion",
            "/metadata/labels/app",
            "/metadata/annotations/a~1b",
            "/metadata/finalizers/0",
        ] {
            assert!(probe_object(ok).is_some(), "{ok}");
        }
        for refused in [
            "",
            "/",
            "/metadata",
            "/metadata/labels",
            "/metadata/annotations",
            "/metadata/labels/a/b",
            "/metadata/finalizers/-",
            "/metadata/finalizers/+1",
            "/metadata/managedFields/0",
            "/data/password",
            "/data",
            "/spec",
            "/spec/template/spec/containers/0/env/0/value",
            "/stringData/x",
        ] {
            assert!(probe_object(refused).is_none(), "{refused}");
        }
    }
}
