//! CustomResourceDefinitions: a CRD stored through `apiextensions.k8s.io/v1` makes its resource
//! served (discovery, CRUD, list, watch, the status subresource, OpenAPI) as kube-apiserver's
//! apiextensions server does, with the version's schema pruning unknown fields and checking types;
//! deleting the CRD deletes its objects, then itself (the `customresourcecleanup` finalizer).
//!
//! What is served is derived from the CRD objects in the store ([`Registry::served`]), so every
//! write path (create, update, apply, delete, the seed) keeps it right without hooks. Resource
//! definitions are `&'static` throughout the sandbox; a CRD's are leaked once per distinct
//! definition and shared by every sandbox in the process, so the memory is bounded by the number
//! of distinct CRDs ever defined, not by how often they are created.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::catalog::{self, Custom, ResourceDef, Served, SubresourceDef};
use crate::state::State;
use crate::status::{FieldError, FieldErrorKind};
use crate::store::Inner;
use crate::time;

/// Store indexes of custom resources start here, far above the built-in ones.
const FIRST_INDEX: usize = 1 << 20;

/// The finalizer the API server puts on a CRD being deleted.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// How long after a CRD is deleted its objects and then itself are gone.
const CLEANUP_DELAY: Duration = Duration::from_millis(50);

fn crd_index() -> usize {
    catalog::index_of("CustomResourceDefinition").unwrap_or(usize::MAX)
}

/// A printer column (`additionalPrinterColumns`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

#[derive(Debug, PartialEq, Eq)]
struct Interned {
    def: ResourceDef,
    columns: Vec<PrinterColumn>,
}

static INTERNED: Mutex<Vec<&'static Interned>> = Mutex::new(Vec::new());

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

fn leak_all(items: &[String]) -> &'static [&'static str] {
    Box::leak(
        items
            .iter()
            .map(|s| leak(s))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    )
}

/// A `&'static` definition equal to `want` (made once per distinct definition).
fn intern(want: Interned) -> &'static Interned {
    let mut all = INTERNED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = all.iter().find(|i| ***i == want) {
        return found;
    }
    let made: &'static Interned = Box::leak(Box::new(want));
    all.push(made);
    made
}

/// The printer columns of a custom resource (`None` for a built-in one).
pub fn printer_columns(def: &ResourceDef) -> Option<&'static [PrinterColumn]> {
    let all = INTERNED.lock().unwrap_or_else(PoisonError::into_inner);
    all.iter()
        .find(|i| std::ptr::eq(&i.def, def))
        .map(|i| i.columns.as_slice())
}

fn strs(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

const CUSTOM_VERBS: &[&str] = &[
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "create",
    "update",
    "watch",
];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

/// The definitions a CRD serves, one per served version.
fn definitions(crd: &Value) -> Vec<(&'static ResourceDef, Option<Value>)> {
    let s = |p: &str| crd.pointer(p).and_then(Value::as_str).unwrap_or("");
    let group = s("/spec/group");
    let plural = s("/spec/names/plural");
    let kind = s("/spec/names/kind");
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Vec::new();
    }
    let singular = match s("/spec/names/singular") {
        "" => kind.to_lowercase(),
        other => other.to_owned(),
    };
    let namespaced = s("/spec/scope") != "Cluster";
    let short_names = strs(crd.pointer("/spec/names/shortNames"));
    let categories = strs(crd.pointer("/spec/names/categories"));
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for v in versions {
        if v.get("served") != Some(&json!(true)) {
            continue;
        }
        let Some(version) = v.get("name").and_then(Value::as_str) else {
            continue;
        };
        let status = v.pointer("/subresources/status").is_some();
        let subresources: &'static [SubresourceDef] = if status {
            Box::leak(Box::new([SubresourceDef {
                name: "status",
                group: leak(group),
                version: leak(version),
                kind: leak(kind),
                verbs: STATUS_VERBS,
            }]))
        } else {
            &[]
        };
        let columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .map(|c| {
                        let f = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                        let path = f("jsonPath");
                        PrinterColumn {
                            name: f("name"),
                            type_: f("type"),
                            format: f("format"),
                            description: match f("description") {
                                d if d.is_empty() => format!(
                                    "Custom resource definition column (in JSONPath format): {path}"
                                ),
                                d => d,
                            },
                            priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                            json_path: path,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let want = Interned {
            def: ResourceDef {
                group: leak(group),
                version: leak(version),
                plural: leak(plural),
                singular: leak(&singular),
                kind: leak(kind),
                namespaced,
                verbs: CUSTOM_VERBS,
                short_names: leak_all(&short_names),
                categories: leak_all(&categories),
                subresources,
                returns_deleted_object: false,
                has_status: status,
            },
            columns,
        };
        // The leaked strings of a definition that was interned before are garbage, but small and
        // made only when the sandbox first sees a CRD object version, so bounded by the writes
        // to CRDs.
        let interned = intern(want);
        out.push((&interned.def, v.pointer("/schema/openAPIV3Schema").cloned()));
    }
    out
}

#[derive(Debug, Default)]
struct Synced {
    /// (uid, resourceVersion) of every CRD object the served list was made from.
    stamp: Vec<(String, String)>,
    /// Store index by CRD uid: a CRD keeps its index for its life; a new one gets a new index.
    indexes: HashMap<String, usize>,
    next: usize,
    served: Served,
}

/// The custom resources served, kept in step with the CRD objects in the store.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Synced>,
}

impl Registry {
    /// What is served now. Call with the store locked.
    pub fn served(&self, store: &Inner) -> Served {
        let crds = store.list(crd_index(), None);
        let field = |o: &Value, k: &str| {
            o.pointer(&format!("/metadata/{k}"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let stamp: Vec<(String, String)> = crds
            .iter()
            .map(|(_, o)| (field(o, "uid"), field(o, "resourceVersion")))
            .collect();
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.stamp == stamp && !stamp.is_empty() {
            return inner.served.clone();
        }
        if stamp.is_empty() && inner.stamp.is_empty() {
            return Served::default();
        }
        let mut custom = Vec::new();
        for (_, crd) in &crds {
            // A CRD being deleted is no longer served.
            if crd.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            let uid = field(crd, "uid");
            let index = match inner.indexes.get(&uid) {
                Some(i) => *i,
                None => {
                    let i = FIRST_INDEX + inner.next;
                    inner.next += 1;
                    inner.indexes.insert(uid, i);
                    i
                }
            };
            for (def, schema) in definitions(crd) {
                custom.push(Custom { index, def, schema });
            }
        }
        inner.stamp = stamp;
        inner.served = Served {
            custom: Arc::new(custom),
        };
        inner.served.clone()
    }

    /// The store index a CRD's objects live under, if it was ever served.
    fn index_of(&self, uid: &str) -> Option<usize> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.indexes.get(uid).copied()
    }
}

/// Defaults the API server gives a new CRD: `names.singular` and `listKind`, the `None`
/// conversion, and a status naming the storage version, not yet established.
pub fn on_create(crd: &mut Value) {
    let kind = crd
        .pointer("/spec/names/kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if let Some(names) = crd
        .pointer_mut("/spec/names")
        .and_then(Value::as_object_mut)
    {
        names
            .entry("singular")
            .or_insert_with(|| json!(kind.to_lowercase()));
        names
            .entry("listKind")
            .or_insert_with(|| json!(format!("{kind}List")));
    }
    let storage: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage") == Some(&json!(true)))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    if let Some(spec) = crd.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("conversion")
            .or_insert_with(|| json!({"strategy": "None"}));
    }
    if let Some(m) = crd.as_object_mut() {
        m.insert(
            "status".to_owned(),
            json!({"conditions": null, "acceptedNames": {"plural": "", "kind": ""}, "storedVersions": storage}),
        );
    }
}

/// What the API server's CRD controllers write right after a CRD is created: names accepted,
/// established.
pub fn establish(state: Arc<State>, name: String, uid: String) {
    tokio::spawn(async move {
        let mut store = state.store.lock();
        let key = (crd_index(), String::new(), name);
        let Some(mut crd) = store.get(&key).cloned() else {
            return;
        };
        if crd.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid.as_str()) {
            return;
        }
        let now = time::rfc3339(time::now());
        let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
        if let Some(status) = crd.get_mut("status").and_then(Value::as_object_mut) {
            status.insert("acceptedNames".to_owned(), names);
            status.insert(
                "conditions".to_owned(),
                json!([
                    {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now,
                     "reason": "NoConflicts", "message": "no conflicts found"},
                    {"type": "Established", "status": "True", "lastTransitionTime": now,
                     "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}
                ]),
            );
        }
        store.put(key, crd);
    });
}

/// On delete the API server adds the cleanup finalizer and a `Terminating` condition; the
/// finalizer controller then deletes every object of the resource and lets the CRD go.
pub fn mark_deleted(crd: &mut Value, now: &str) {
    if let Some(meta) = crd.get_mut("metadata").and_then(Value::as_object_mut) {
        let fins = meta.entry("finalizers").or_insert_with(|| json!([]));
        if let Some(f) = fins.as_array_mut()
            && !f.contains(&json!(CLEANUP_FINALIZER))
        {
            f.push(json!(CLEANUP_FINALIZER));
        }
    }
    if let Some(conds) = crd
        .pointer_mut("/status/conditions")
        .filter(|c| c.is_array())
        .and_then(Value::as_array_mut)
    {
        conds.push(json!({"type": "Terminating", "status": "True", "lastTransitionTime": now,
            "reason": "InstanceDeletionPending",
            "message": "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon"}));
    }
}

/// The finalizer controller's part, soon after a CRD was marked deleted.
pub fn clean_up(state: Arc<State>, name: String, uid: String) {
    tokio::spawn(async move {
        tokio::time::sleep(CLEANUP_DELAY).await;
        let mut store = state.store.lock();
        let key = (crd_index(), String::new(), name);
        let Some(mut crd) = store.get(&key).cloned() else {
            return;
        };
        if crd.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid.as_str()) {
            return;
        }
        if let Some(index) = state.crds.index_of(&uid) {
            for k in store.keys_where(|k| k.0 == index) {
                store.remove(&k);
            }
        }
        if let Some(f) = crd
            .pointer_mut("/metadata/finalizers")
            .and_then(Value::as_array_mut)
        {
            f.retain(|x| x != CLEANUP_FINALIZER);
        }
        let others_left = crd
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        store.put(key.clone(), crd);
        if !others_left {
            store.remove(&key);
        }
    });
}

/// Validation of a CRD (the rules a client most often breaks).
pub fn errors(crd: &Value) -> Vec<FieldError> {
    let s = |p: &str| crd.pointer(p).and_then(Value::as_str).unwrap_or("");
    let mut out = Vec::new();
    let (name, group, plural, kind) = (
        s("/metadata/name"),
        s("/spec/group"),
        s("/spec/names/plural"),
        s("/spec/names/kind"),
    );
    if name != format!("{plural}.{group}") {
        out.push(FieldError::invalid(
            "metadata.name",
            json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if group.is_empty() {
        out.push(FieldError::required("spec.group", ""));
    } else if !group.contains('.') {
        out.push(FieldError::invalid(
            "spec.group",
            json!(group),
            "should be a domain with at least one dot",
        ));
    }
    if plural.is_empty() {
        out.push(FieldError::required("spec.names.plural", ""));
    }
    if kind.is_empty() {
        out.push(FieldError::required("spec.names.kind", ""));
    }
    let scope = s("/spec/scope");
    if !["Namespaced", "Cluster"].contains(&scope) {
        out.push(FieldError::not_supported(
            "spec.scope",
            json!(scope),
            &["Cluster", "Namespaced"],
        ));
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        out.push(FieldError::invalid(
            "spec.versions",
            Value::Null,
            "must have exactly one version marked as storage version",
        ));
    } else {
        let storage = versions
            .iter()
            .filter(|v| v.get("storage") == Some(&json!(true)))
            .count();
        if storage != 1 {
            out.push(FieldError::invalid(
                "spec.versions",
                json!(versions),
                "must have exactly one version marked as storage version",
            ));
        }
        for (i, v) in versions.iter().enumerate() {
            if v.pointer("/schema/openAPIV3Schema").is_none() {
                out.push(FieldError::required(
                    format!("spec.versions[{i}].schema.openAPIV3Schema"),
                    "schemas are required",
                ));
            }
        }
    }
    out
}

fn schema_type(schema: &Value) -> &str {
    schema.get("type").and_then(Value::as_str).unwrap_or("")
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(want: &str, got: &str, schema: &Value) -> bool {
    if schema.get("x-kubernetes-int-or-string") == Some(&json!(true)) {
        return got == "integer" || got == "string";
    }
    want.is_empty() || want == got || (want == "number" && got == "integer")
}

/// Walk `v` against `schema`: collect the paths of fields the schema does not know (pruned by
/// the API server, with a warning or, under `Strict`, an error) and type errors.
fn walk(
    v: &Value,
    schema: &Value,
    path: &str,
    unknown: &mut Vec<String>,
    wrong: &mut Vec<FieldError>,
) {
    let want = schema_type(schema);
    let got = json_type(v);
    if !v.is_null() && !type_ok(want, got, schema) {
        wrong.push(FieldError {
            field: path.to_owned(),
            kind: FieldErrorKind::TypeInvalid(json!(got)),
            detail: format!("{path} in body must be of type {want}: {:?}", got),
        });
        return;
    }
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    match v {
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, child) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&k.as_str()) {
                    continue;
                }
                match (props.and_then(|p| p.get(k)), additional) {
                    (Some(s), _) | (None, Some(s)) => walk(child, s, &p, unknown, wrong),
                    (None, None) if preserve => {}
                    (None, None) => unknown.push(p),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(item, item_schema, &format!("{path}[{i}]"), unknown, wrong);
                }
            }
        }
        _ => {}
    }
}

/// Check a custom object against its version's schema: returns the unknown field paths (after
/// pruning them from `object`) and the type errors.
pub fn check(object: &mut Value, schema: &Value) -> (Vec<String>, Vec<FieldError>) {
    let mut unknown = Vec::new();
    let mut wrong = Vec::new();
    walk(object, schema, "", &mut unknown, &mut wrong);
    for p in &unknown {
        crate::validate::remove_path(object, p);
    }
    (unknown, wrong)
}

/// A simple JSONPath (`.spec.size`, `.status.conditions[0].type`) as printer columns use it.
pub fn json_path<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = object;
    for seg in path.trim_start_matches('.').split('.') {
        if seg.is_empty() {
            continue;
        }
        let (key, indexes) = match seg.find('[') {
            Some(p) => (&seg[..p], &seg[p..]),
            None => (seg, ""),
        };
        if !key.is_empty() {
            cur = cur.get(key)?;
        }
        for idx in indexes.split('[').filter(|s| !s.is_empty()) {
            cur = cur.get(idx.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(cur)
}

/// A printer column's cell: the value at its path, or null when the path leads nowhere.
pub fn cell(object: &Value, column: &PrinterColumn) -> Value {
    let Some(v) = json_path(object, &column.json_path) else {
        return Value::Null;
    };
    match (column.type_.as_str(), v) {
        ("date", Value::String(s)) => json!(time::age(Some(s))),
        ("string", Value::String(_)) | ("integer" | "number", Value::Number(_)) => v.clone(),
        ("boolean", Value::Bool(_)) => v.clone(),
        ("string", Value::Object(_) | Value::Array(_)) => json!(v.to_string()),
        ("string", other) => json!(other.to_string()),
        _ => v.clone(),
    }
}

/// A custom resource's OpenAPI v3 schema as the API server publishes it: the version's
/// schema with `apiVersion`, `kind` and `metadata` filled in and the GVK named.
pub fn published_schema(def: &ResourceDef, schema: Option<&Value>) -> Value {
    let mut s = schema.cloned().unwrap_or_else(|| json!({"type": "object"}));
    if let Some(m) = s.as_object_mut() {
        let props = m
            .entry("properties")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(p) = props.as_object_mut() {
            p.insert("apiVersion".to_owned(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}));
            p.insert("kind".to_owned(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}));
            p.insert("metadata".to_owned(), json!({"description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata", "allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]}));
        }
        m.insert(
            "x-kubernetes-group-version-kind".to_owned(),
            json!([{"group": def.group, "version": def.version, "kind": def.kind}]),
        );
    }
    s
}

/// The name the API server gives a custom resource's schema: the group reversed, then version
/// and kind (`io.cert-manager.v1.Certificate`).
pub fn schema_name(def: &ResourceDef) -> String {
    let reversed: Vec<&str> = def.group.split('.').rev().collect();
    format!("{}.{}.{}", reversed.join("."), def.version, def.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_prune_and_type_check() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "properties": {"size": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}}},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}});
        let mut o = json!({"apiVersion": "example.com/v1", "kind": "W", "metadata": {"name": "w"},
            "spec": {"size": "big", "tags": ["a"], "bogus": 1}, "status": {"anything": 1}});
        let (unknown, wrong) = check(&mut o, &schema);
        assert_eq!(unknown, vec!["spec.bogus".to_owned()]);
        assert_eq!(wrong.len(), 1);
        assert_eq!(wrong[0].field, "spec.size");
        assert!(o.pointer("/spec/bogus").is_none());
        assert_eq!(o["status"], json!({"anything": 1}));
    }

    #[test]
    fn version_order() {
        let mut v = vec!["v1alpha1", "v1", "v2beta1", "v1beta2", "foo", "v2"];
        v.sort_by_key(|x| catalog::version_rank(x));
        assert_eq!(v, ["v2", "v1", "v2beta1", "v1beta2", "v1alpha1", "foo"]);
    }
}
