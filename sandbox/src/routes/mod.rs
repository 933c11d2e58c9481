//! Routing: the request target is decoded and split as the API server's RequestInfoFactory does,
//! then dispatched to discovery, a resource verb, or a subresource.

mod authz;
mod discovery;
mod openapi;
pub(crate) mod read;
mod subresources;
mod write;

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method};

use crate::catalog::{self, ResourceDef, Served};
use crate::query::{Query, percent_decode};
use crate::reply::Reply;
use crate::state::State;
use crate::status::ApiError;

/// One request, as the handlers see it.
pub struct Ctx<'a> {
    pub state: &'a Arc<State>,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub query: Query,
    pub body: Bytes,
    /// The resources served at the time of the request, custom ones included.
    pub served: Served,
}

impl Ctx<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A resource request: which resource, where, which object, which subresource.
#[derive(Debug, Clone)]
pub struct Target {
    pub index: usize,
    pub def: &'static ResourceDef,
    /// The namespace for namespaced resources; `None` for cluster-scoped resources and for
    /// lists across all namespaces.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The legacy `/watch/` path prefix.
    pub watch_prefix: bool,
}

impl Target {
    pub fn key(&self, name: &str) -> crate::store::Key {
        (
            self.index,
            self.namespace.clone().unwrap_or_default(),
            name.to_owned(),
        )
    }
}

fn not_found_page() -> Reply {
    Reply::text(404, "404 page not found\n")
}

pub async fn dispatch(state: &Arc<State>, parts: &Parts, body: Bytes) -> Reply {
    let Some(path) = percent_decode(parts.uri.path(), false) else {
        return Reply::text(400, "400 Bad Request");
    };
    let served = {
        let store = state.store.lock();
        state.crds.served(&store)
    };
    let ctx = Ctx {
        state,
        method: &parts.method,
        headers: &parts.headers,
        query: Query::parse(parts.uri.query()),
        body,
        served,
    };
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let segs: &[&str] = if segs == [""] { &[] } else { &segs };
    let result = match segs {
        [] => Ok(discovery::root(&ctx.served)),
        ["version"] => Ok(Reply::json(200, &discovery::version())),
        [probe, ..] if ["healthz", "livez", "readyz"].contains(probe) => Ok(Reply::text(200, "ok")),
        ["openapi", ..] => Ok(openapi::serve(&ctx, segs)),
        ["api"] => Ok(discovery::core_groups(&ctx)),
        ["apis"] => Ok(discovery::named_groups(&ctx)),
        ["apis", group] => Ok(discovery::group(&ctx.served, group)),
        ["api", "v1"] => Ok(discovery::resources(&ctx.served, "", "v1")),
        ["apis", group, version] => Ok(discovery::resources(&ctx.served, group, version)),
        ["api", "v1", rest @ ..] => resource(&ctx, "", "v1", rest).await,
        ["apis", group, version, rest @ ..] => {
            if ctx.served.serves_group_version(group, version) {
                resource(&ctx, group, version, rest).await
            } else {
                Ok(not_found_page())
            }
        }
        _ => Ok(not_found_page()),
    };
    result.unwrap_or_else(|e| Reply::error(&e))
}

/// Split the path after `/api/v1` or `/apis/<g>/<v>` into a [`Target`] (steps 6 to 8 of
/// RequestInfoFactory), or the 404 the API server's router gives.
fn target(served: &Served, group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let (watch_prefix, rest) = match rest {
        ["watch", more @ ..] if !more.is_empty() => (true, more),
        other => (false, other),
    };
    let own = |s: &&str| (*s).to_owned();
    let (namespace, resource, name, subresource, extra) = match rest {
        ["namespaces", ns, res, more @ ..] if *res != "status" && *res != "finalize" => (
            Some((*ns).to_owned()),
            *res,
            more.first().map(own),
            more.get(1).map(own),
            more.len() > 2,
        ),
        ["namespaces", ns, more @ ..] => (
            None,
            "namespaces",
            Some((*ns).to_owned()),
            more.first().map(own),
            more.len() > 1,
        ),
        [res, more @ ..] => (
            None,
            *res,
            more.first().map(own),
            more.get(1).map(own),
            more.len() > 2,
        ),
        [] => return Err(ApiError::no_route()),
    };
    let (index, def) = served
        .find(group, version, resource)
        .ok_or_else(ApiError::no_route)?;
    let scoped_wrong = if def.namespaced {
        namespace.is_none() && name.is_some()
    } else {
        namespace.is_some()
    };
    let bad_sub = subresource
        .as_deref()
        .is_some_and(|s| def.subresource(s).is_none());
    if extra || scoped_wrong || bad_sub {
        return Err(ApiError::no_route());
    }
    Ok(Target {
        index,
        def,
        namespace,
        name,
        subresource,
        watch_prefix,
    })
}

async fn resource(
    ctx: &Ctx<'_>,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Reply, ApiError> {
    let t = target(&ctx.served, group, version, rest)?;
    if t.def.group == catalog::AUTHORIZATION {
        return authz::handle(ctx, &t);
    }
    if t.subresource.is_some() {
        return subresources::handle(ctx, &t).await;
    }
    let m = ctx.method;
    match (t.name.is_some(), m) {
        (true, &Method::GET) if t.watch_prefix => read::watch(ctx, &t),
        (true, &Method::GET) => read::get(ctx, &t),
        (false, &Method::GET) => {
            if t.watch_prefix || ctx.query.flag("watch") {
                read::watch(ctx, &t)
            } else {
                read::list(ctx, &t)
            }
        }
        (false, &Method::POST) => write::create(ctx, &t),
        (true, &Method::PUT) => write::update(ctx, &t),
        (true, &Method::PATCH) => write::patch(ctx, &t),
        (true, &Method::DELETE) => write::delete(ctx, &t),
        (false, &Method::DELETE) if t.def.verbs.contains(&"deletecollection") => {
            write::delete_collection(ctx, &t)
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_as_request_info_splits_them() {
        let served = Served::default();
        let t = target(
            &served,
            "",
            "v1",
            &["namespaces", "dev", "pods", "web", "log"],
        )
        .ok();
        let t = t.map(|t| (t.def.plural, t.namespace, t.name, t.subresource));
        assert_eq!(
            t,
            Some((
                "pods",
                Some("dev".into()),
                Some("web".into()),
                Some("log".into())
            ))
        );
        let ns = target(&served, "", "v1", &["namespaces", "dev"]).ok();
        assert_eq!(
            ns.map(|t| (t.def.plural, t.namespace, t.name)),
            Some(("namespaces", None, Some("dev".into())))
        );
        let st = target(&served, "", "v1", &["namespaces", "dev", "status"]).ok();
        assert_eq!(st.and_then(|t| t.subresource), Some("status".into()));
        assert!(target(&served, "", "v1", &["pods", "web"]).is_err());
        assert!(target(&served, "", "v1", &["namespaces", "dev", "namespaces", "x"]).is_err());
        assert!(
            target(
                &served,
                "",
                "v1",
                &["namespaces", "dev", "pods", "web", "bogus"]
            )
            .is_err()
        );
        let w = target(&served, "", "v1", &["watch", "namespaces", "dev", "pods"]).ok();
        assert_eq!(w.map(|t| t.watch_prefix), Some(true));
    }
}
