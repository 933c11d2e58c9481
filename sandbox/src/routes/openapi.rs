//! OpenAPI, as `kubectl explain` and `kubectl apply` read it.
//!
//! v3 (what kubectl 1.27+ uses): the root lists one document per served group version, and each
//! document holds the schemas of its kinds (and every schema they reference) plus a PATCH
//! operation per resource declaring `fieldValidation`, so `kubectl apply` leaves validation to
//! the server. The built-in schemas are kube-apiserver 1.34's own, cut to the kinds the sandbox
//! serves (`../openapi/schemas.json.gz`, made by `../openapi/trim.py`), so explain prints the real
//! descriptions and client-side apply finds the real patch merge keys. Custom resources get the
//! schema of their CRD version, as the API server publishes it.
//!
//! v2 is served as JSON only (the API server also speaks protobuf there, which clients ask for
//! first; they get 406 and fall back to v3 or their compiled-in types).

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use crate::catalog::{ResourceDef, Served};
use crate::crd;
use crate::negotiate::parse_accept;
use crate::reply::Reply;
use crate::status::ApiError;

use super::Ctx;
use super::discovery::MINOR;

static POOL_GZ: &[u8] = include_bytes!("../openapi/schemas.json.gz");

/// The built-in component schemas by name (`io.k8s.api.core.v1.Pod`).
fn pool() -> &'static Map<String, Value> {
    static POOL: OnceLock<Map<String, Value>> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut text = Vec::new();
        let mut gz = flate2::read::GzDecoder::new(POOL_GZ);
        if std::io::Read::read_to_end(&mut gz, &mut text).is_err() {
            return Map::new();
        }
        serde_json::from_slice(&text).unwrap_or_default()
    })
}

fn not_found() -> Reply {
    Reply::text(404, "404 page not found\n")
}

pub fn serve(ctx: &Ctx<'_>, segments: &[&str]) -> Reply {
    let served = &ctx.served;
    match segments {
        ["openapi", "v3"] => v3_root(served),
        ["openapi", "v3", "api", v] => {
            v3_doc(served, "", v).map_or_else(not_found, |d| Reply::json(200, &d))
        }
        ["openapi", "v3", "apis", g, v] => {
            v3_doc(served, g, v).map_or_else(not_found, |d| Reply::json(200, &d))
        }
        ["openapi", "v2"] => {
            let json_ok = parse_accept(ctx.header("accept"))
                .iter()
                .any(|c| ["application/json", "*/*", "application/*"].contains(&c.kind.as_str()));
            if ctx.header("accept").is_some() && !json_ok {
                return Reply::error(&ApiError::not_acceptable(
                    "only the following media types are accepted: application/json",
                ));
            }
            Reply::json(200, &v2(served))
        }
        _ => not_found(),
    }
}

fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.bytes().chain([0])) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// A group version's resources, with the schema of each custom one.
fn resources<'a>(
    served: &'a Served,
    group: &str,
    version: &str,
) -> Vec<(&'static ResourceDef, Option<&'a Value>, bool)> {
    served
        .all()
        .into_iter()
        .filter(|(_, r)| r.group == group && r.version == version)
        .map(|(_, r)| match served.custom(r) {
            Some(c) => (r, c.schema.as_ref(), true),
            None => (r, None, false),
        })
        .collect()
}

fn v3_root(served: &Served) -> Reply {
    let mut paths = Map::new();
    for (g, versions) in served.groups() {
        for v in versions {
            let rel = gv_path(g, v);
            // Clients cache documents by this hash: it changes when a CRD's schema does.
            let schemas: Vec<String> = resources(served, g, v)
                .iter()
                .map(|(r, s, _)| {
                    format!("{}{}", r.kind, s.map(Value::to_string).unwrap_or_default())
                })
                .collect();
            let mut parts: Vec<&str> = vec![g, v, MINOR];
            parts.extend(schemas.iter().map(String::as_str));
            let h = fnv(&parts);
            paths.insert(
                rel.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{rel}?hash={h:016X}{h:016X}")}),
            );
        }
    }
    // The API server writes this index as text/plain, JSON inside.
    Reply::bytes(
        200,
        "text/plain; charset=utf-8",
        crate::json::ordered(&json!({ "paths": paths })),
    )
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => {
                        out.push(r.rsplit('/').next().unwrap_or("").to_owned());
                    }
                    _ => collect_refs(x, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

/// `roots` and every pool schema they reach.
fn closure(mut roots: Map<String, Value>) -> Map<String, Value> {
    let mut stack = Vec::new();
    for v in roots.values() {
        collect_refs(v, &mut stack);
    }
    while let Some(name) = stack.pop() {
        if roots.contains_key(&name) {
            continue;
        }
        if let Some(s) = pool().get(&name) {
            collect_refs(s, &mut stack);
            roots.insert(name, s.clone());
        }
    }
    roots
}

fn is_schema_of(schema: &Value, r: &ResourceDef) -> bool {
    schema
        .get("x-kubernetes-group-version-kind")
        .and_then(Value::as_array)
        .is_some_and(|gvks| {
            gvks.iter()
                .any(|g| g["group"] == r.group && g["version"] == r.version && g["kind"] == r.kind)
        })
}

/// The schemas of a group version's kinds by name.
fn kind_schemas(served: &Served, group: &str, version: &str) -> Map<String, Value> {
    let mut roots = Map::new();
    for (r, schema, custom) in resources(served, group, version) {
        if custom {
            roots.insert(crd::schema_name(r), crd::published_schema(r, schema));
        } else if let Some((name, s)) = pool()
            .iter()
            .find(|(n, s)| !n.ends_with("List") && is_schema_of(s, r))
        {
            roots.insert(name.clone(), s.clone());
        }
    }
    roots
}

fn patchable(r: &ResourceDef) -> bool {
    r.verbs.contains(&"patch")
}

/// The path item of a resource's PATCH, which kubectl reads for the query parameters the server
/// takes; `param` writes one parameter in the document's version (v2 `type`, v3 `schema`).
fn patch_operation(r: &ResourceDef, param: impl Fn(&str, &str) -> Value) -> Value {
    json!({"patch": {
        "operationId": format!("patch{}", r.kind),
        "x-kubernetes-action": "patch",
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
        "parameters": [param("dryRun", "string"), param("fieldManager", "string"),
            param("fieldValidation", "string"), param("force", "boolean")],
        "responses": {"200": {"description": "OK"}},
    }})
}

fn item_path(r: &ResourceDef) -> String {
    let prefix = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    if r.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
    } else {
        format!("{prefix}/{}/{{name}}", r.plural)
    }
}

fn v3_doc(served: &Served, group: &str, version: &str) -> Option<Value> {
    if !served.serves_group_version(group, version) {
        return None;
    }
    let res = resources(served, group, version);
    let param = |name: &str, typ: &str| json!({"name": name, "in": "query", "schema": {"type": typ, "uniqueItems": true}});
    let mut paths = Map::new();
    for (r, _, _) in res.iter().filter(|(r, _, _)| patchable(r)) {
        paths.insert(item_path(r), patch_operation(r, param));
    }
    let custom = res.iter().any(|(_, _, c)| *c);
    let info = if custom {
        json!({"title": "Kubernetes CRD Swagger", "version": "v0.1.0"})
    } else {
        json!({"title": "Kubernetes", "version": format!("v1.{MINOR}.1")})
    };
    Some(json!({
        "openapi": "3.0.0",
        "info": info,
        "paths": paths,
        "components": {"schemas": closure(kind_schemas(served, group, version))},
    }))
}

/// A v3 schema in v2 form: `$ref`s into `#/definitions/`, `allOf: [{$ref}]` wrappers undone.
fn to_v2(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => {
                        out.insert(
                            k.clone(),
                            json!(r.replace("#/components/schemas/", "#/definitions/")),
                        );
                    }
                    ("allOf", Value::Array(items))
                        if items.len() == 1 && items[0].get("$ref").is_some() =>
                    {
                        if let Some(Value::Object(inner)) = Some(to_v2(&items[0])) {
                            out.extend(inner);
                        }
                    }
                    _ => {
                        out.insert(k.clone(), to_v2(x));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(to_v2).collect()),
        other => other.clone(),
    }
}

fn v2(served: &Served) -> Value {
    let mut definitions = Map::new();
    let mut paths = Map::new();
    for (g, versions) in served.groups() {
        for v in versions {
            for (name, s) in closure(kind_schemas(served, g, v)) {
                definitions.insert(name, to_v2(&s));
            }
            for (r, _, _) in resources(served, g, v) {
                if !patchable(r) {
                    continue;
                }
                let param = |name: &str, typ: &str| json!({"name": name, "in": "query", "type": typ, "uniqueItems": true});
                paths.insert(item_path(r), patch_operation(r, param));
            }
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{MINOR}.1")},
        "paths": paths,
        "definitions": definitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_documents_hold_their_kinds_and_references() {
        let served = Served::default();
        let core = v3_doc(&served, "", "v1").unwrap_or_default();
        let schemas = &core["components"]["schemas"];
        for name in [
            "io.k8s.api.core.v1.Pod",
            "io.k8s.api.core.v1.Container",
            "io.k8s.api.core.v1.Secret",
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        ] {
            assert!(schemas.get(name).is_some(), "{name} missing");
        }
        assert_eq!(
            schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]["x-kubernetes-patch-merge-key"],
            "name"
        );
        let apps = v3_doc(&served, "apps", "v1").unwrap_or_default();
        assert!(apps["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"].is_object());
        let two = v2(&served);
        assert_eq!(
            two["definitions"]["io.k8s.api.core.v1.Pod"]["properties"]["metadata"]["$ref"],
            "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
    }
}
