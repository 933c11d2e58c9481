//! Discovery documents: aggregated discovery (`apidiscovery.k8s.io/v2`, what kubectl 1.3x asks
//! for first) and the legacy `/api`, `/apis`, `/api/v1`, `/apis/<g>[/<v>]` documents it falls
//! back to, plus `/version`.

use serde_json::{Value, json};

use crate::catalog::{ResourceDef, Served};
use crate::negotiate::parse_accept;
use crate::reply::Reply;

use super::Ctx;

/// The Kubernetes release the sandbox claims to be. The kubectl dispatcher on these machines
/// runs the kubectl matching the server's minor version, and 1.33 is the newest it ships.
pub const MINOR: &str = "33";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": MINOR,
        "emulationMajor": "1",
        "emulationMinor": MINOR,
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": format!("v1.{MINOR}.1"),
        "gitCommit": "8adc0f041b8e7ad1d30e29cc59c6ae7a15e19828",
        "gitTreeState": "clean",
        "buildDate": "2025-05-15T08:19:08Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// The aggregated-discovery version asked for in `Accept`, if it comes before plain JSON.
pub fn aggregated_version(accept: Option<&str>) -> Option<&'static str> {
    for c in parse_accept(accept) {
        if c.param("g") == Some("apidiscovery.k8s.io")
            && c.param("as") == Some("APIGroupDiscoveryList")
            && c.kind == "application/json"
        {
            match c.param("v") {
                Some("v2") => return Some("v2"),
                Some("v2beta1") => return Some("v2beta1"),
                _ => continue,
            }
        }
        // A plain JSON clause before any aggregated one: the client prefers legacy documents.
        c.param("as")?;
    }
    None
}

pub fn aggregated_content_type(version: &str) -> String {
    format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")
}

fn scope(r: &ResourceDef) -> &'static str {
    if r.namespaced {
        "Namespaced"
    } else {
        "Cluster"
    }
}

fn aggregated_resource(r: &ResourceDef) -> Value {
    let mut v = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": scope(r),
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    if !r.subresources.is_empty() {
        v["subresources"] = r
            .subresources
            .iter()
            .map(|s| {
                json!({
                    "subresource": s.name,
                    "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
                    "verbs": s.verbs,
                })
            })
            .collect();
    }
    v
}

/// `APIGroupDiscoveryList` for `/api` (`core == true`) or `/apis`.
pub fn aggregated(served: &Served, core: bool, version: &str) -> Value {
    let all = served.all();
    let items: Vec<Value> = served
        .groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|ver| {
                    let resources: Vec<Value> = all
                        .iter()
                        .filter(|(_, r)| r.group == group && r.version == *ver)
                        .map(|(_, r)| aggregated_resource(r))
                        .collect();
                    json!({"version": ver, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({
                "metadata": {"name": group, "creationTimestamp": null},
                "versions": versions,
            })
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

pub fn api_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
    })
}

fn group_doc(group: &str, versions: &[&str]) -> Value {
    let gv = |v: &&str| json!({"groupVersion": format!("{group}/{v}"), "version": v});
    let list: Vec<Value> = versions.iter().map(gv).collect();
    let preferred = list.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": list, "preferredVersion": preferred})
}

pub fn api_group_list(served: &Served) -> Value {
    let groups: Vec<Value> = served
        .groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, v)| group_doc(g, &v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(served: &Served, group: &str) -> Option<Value> {
    let (g, v) = served
        .groups()
        .into_iter()
        .find(|(g, _)| *g == group && !g.is_empty())?;
    let mut doc = group_doc(g, &v);
    if let Some(m) = doc.as_object_mut() {
        m.insert("kind".to_owned(), json!("APIGroup"));
        m.insert("apiVersion".to_owned(), json!("v1"));
    }
    Some(doc)
}

/// `APIResourceList` for one group version, subresources listed as `pods/log`.
pub fn api_resource_list(served: &Served, group: &str, version: &str) -> Option<Value> {
    if !served.serves_group_version(group, version) {
        return None;
    }
    let mut resources = Vec::new();
    for (_, r) in served
        .all()
        .into_iter()
        .filter(|(_, r)| r.group == group && r.version == version)
    {
        let mut v = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            v["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            v["categories"] = json!(r.categories);
        }
        resources.push(v);
        for s in r.subresources {
            let mut v = json!({
                "name": format!("{}/{}", r.plural, s.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": s.kind,
                "verbs": s.verbs,
            });
            if s.group != r.group || s.version != r.version {
                v["group"] = json!(s.group);
                v["version"] = json!(s.version);
            }
            resources.push(v);
        }
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    let mut doc = json!({"kind": "APIResourceList", "groupVersion": gv, "resources": resources});
    if !group.is_empty() {
        doc["apiVersion"] = json!("v1");
    }
    Some(doc)
}

/// `GET /`: the paths the server serves.
pub fn root(served: &Served) -> Reply {
    let mut paths = vec!["/api".to_owned(), "/api/v1".to_owned(), "/apis".to_owned()];
    for (g, versions) in served.groups().into_iter().filter(|(g, _)| !g.is_empty()) {
        paths.push(format!("/apis/{g}"));
        for v in versions {
            paths.push(format!("/apis/{g}/{v}"));
        }
    }
    paths.extend(["/healthz", "/livez", "/readyz", "/version"].map(str::to_owned));
    Reply::json(200, &json!({ "paths": paths }))
}

fn aggregated_or(ctx: &Ctx<'_>, core: bool, legacy: Value) -> Reply {
    match aggregated_version(ctx.header("accept")) {
        Some(v) => Reply::bytes(
            200,
            aggregated_content_type(v),
            crate::json::ordered(&aggregated(&ctx.served, core, v)),
        ),
        None => Reply::json(200, &legacy),
    }
}

/// `GET /api`.
pub fn core_groups(ctx: &Ctx<'_>) -> Reply {
    let server = ctx.header("host").unwrap_or("127.0.0.1").to_owned();
    aggregated_or(ctx, true, api_versions(&server))
}

/// `GET /apis`.
pub fn named_groups(ctx: &Ctx<'_>) -> Reply {
    aggregated_or(ctx, false, api_group_list(&ctx.served))
}

/// `GET /apis/<group>`.
pub fn group(served: &Served, group: &str) -> Reply {
    match api_group(served, group) {
        Some(doc) => Reply::json(200, &doc),
        None => Reply::text(404, "404 page not found\n"),
    }
}

/// `GET /api/v1`, `GET /apis/<group>/<version>`.
pub fn resources(served: &Served, group: &str, version: &str) -> Reply {
    match api_resource_list(served, group, version) {
        Some(doc) => Reply::json(200, &doc),
        None => Reply::text(404, "404 page not found\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_asks_for_aggregated_v2() {
        let a = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(Some(a)), Some("v2"));
        assert_eq!(aggregated_version(Some("application/json, */*")), None);
        let served = Served::default();
        let core = aggregated(&served, true, "v2");
        assert_eq!(core["items"].as_array().map(Vec::len), Some(1));
        let apis = aggregated(&served, false, "v2");
        let names: Vec<&str> = apis["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g["metadata"]["name"].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "apps",
                "rbac.authorization.k8s.io",
                "apiextensions.k8s.io",
                "authorization.k8s.io"
            ]
        );
    }
}
