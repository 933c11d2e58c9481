//! get, list (limit/continue, label and field selectors) and the entry to watch, with every
//! representation a client can ask for: JSON, YAML, Table, PartialObjectMetadata[List].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use crate::catalog::ResourceDef;
use crate::negotiate::{self, Output};
use crate::reply::Reply;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::table::{self, Include};
use crate::{json as ordered_json, watch as watcher};

use super::{Ctx, Target};

pub fn include(ctx: &Ctx<'_>) -> Result<Include, ApiError> {
    Include::parse(ctx.query.get("includeObject")).map_err(ApiError::bad_request)
}

fn yaml(value: &Value) -> Result<Reply, ApiError> {
    let text = serde_saphyr::to_string(value).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Reply::bytes(200, "application/yaml", text.into_bytes()))
}

/// A custom object read at another served version than it was written at: the same object, with
/// that version's `apiVersion` (CRDs' `None` conversion).
pub fn at_version(def: &ResourceDef, object: &Value) -> Option<Value> {
    let av = def.api_version();
    if !def.is_custom() || object.get("apiVersion").and_then(Value::as_str) == Some(av.as_str()) {
        return None;
    }
    let mut o = object.clone();
    o["apiVersion"] = json!(av);
    Some(o)
}

/// One object in the representation asked for.
pub fn render_one(
    output: Output,
    def: &ResourceDef,
    object: &Value,
    include: Include,
) -> Result<Reply, ApiError> {
    let converted = at_version(def, object);
    let object = converted.as_ref().unwrap_or(object);
    let body = match output {
        Output::Json => return Ok(Reply::json(200, object)),
        Output::Yaml => return yaml(object),
        Output::Table(v) => {
            let mut meta = Map::new();
            if let Some(rv) = object.pointer("/metadata/resourceVersion") {
                meta.insert("resourceVersion".to_owned(), rv.clone());
            }
            table::table(def, std::slice::from_ref(object), include, true, meta, v)
        }
        Output::Metadata { version, .. } => table::partial(object, version),
    };
    Ok(Reply::bytes(
        200,
        output.content_type(),
        ordered_json::ordered(&body),
    ))
}

/// Objects inside a list carry no `kind` or `apiVersion`: the list's kind says what they are.
pub fn list_item(object: &Value) -> Value {
    let mut item = object.clone();
    if let Some(m) = item.as_object_mut() {
        m.remove("kind");
        m.remove("apiVersion");
    }
    item
}

pub fn get(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let output = negotiate::resource_output(ctx.header("accept"), false, false)?;
    let include = include(ctx)?;
    let name = t.name.as_deref().unwrap_or("");
    let object = ctx
        .state
        .store
        .lock()
        .get(&t.key(name))
        .cloned()
        .ok_or_else(|| ApiError::not_found(t.def, name))?;
    render_one(output, t.def, &object, include)
}

/// Label and field selectors of a list, watch or deletecollection.
pub struct Filter {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn parse(ctx: &Ctx<'_>, def: &ResourceDef) -> Result<Filter, ApiError> {
        let labels = LabelSelector::parse(ctx.query.get("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(ctx.query.get("fieldSelector").unwrap_or(""), def)
            .map_err(ApiError::bad_request)?;
        Ok(Filter { labels, fields })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}

/// The continue token: base64 of the same JSON the API server uses (`{"v","rv","start"}`), whose
/// `start` is the key after which the next page begins.
fn continue_token(rv: u64, namespace: &str, name: &str) -> String {
    let start = if namespace.is_empty() {
        format!("{name}\u{0}")
    } else {
        format!("{namespace}/{name}\u{0}")
    };
    STANDARD.encode(json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).to_string())
}

fn parse_continue(token: &str) -> Result<(String, String), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = STANDARD.decode(token).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    let start = start.trim_end_matches('\u{0}');
    Ok(match start.split_once('/') {
        Some((ns, name)) => (ns.to_owned(), name.to_owned()),
        None => (String::new(), start.to_owned()),
    })
}

pub fn list(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let output = negotiate::resource_output(ctx.header("accept"), true, false)?;
    let include = include(ctx)?;
    let filter = Filter::parse(ctx, t.def)?;
    let limit = ctx
        .query
        .int("limit")
        .map_err(ApiError::bad_request)?
        .filter(|l| *l > 0)
        .map(|l| l as usize);
    let after = match ctx.query.non_empty("continue") {
        Some(token) => Some(parse_continue(token)?),
        None => None,
    };
    let (items, rv, more) = {
        let store = ctx.state.store.lock();
        let rv = store.rv();
        let matching: Vec<(&crate::store::Key, &Value)> = store
            .list(t.index, t.namespace.as_deref())
            .into_iter()
            .filter(|(k, _)| after.as_ref().is_none_or(|(ns, n)| (&k.1, &k.2) > (ns, n)))
            .filter(|(_, o)| filter.matches(o))
            .collect();
        let total = matching.len();
        let take = limit.unwrap_or(total).min(total);
        let more = (take < total).then(|| {
            let (k, _) = matching[take - 1];
            (continue_token(rv, &k.1, &k.2), total - take)
        });
        let items: Vec<Value> = matching[..take].iter().map(|(_, o)| (*o).clone()).collect();
        (items, rv, more)
    };
    let mut meta = Map::new();
    meta.insert("resourceVersion".to_owned(), json!(rv.to_string()));
    if let Some((token, remaining)) = more {
        meta.insert("continue".to_owned(), json!(token));
        // The API server can count what is left only when no selector filters the rest.
        if filter.is_empty() {
            meta.insert("remainingItemCount".to_owned(), json!(remaining));
        }
    }
    let body = match output {
        Output::Json | Output::Yaml => {
            let list = json!({
                "kind": t.def.list_kind(),
                "apiVersion": t.def.api_version(),
                "metadata": meta,
                "items": items.iter().map(list_item).collect::<Vec<_>>(),
            });
            if output == Output::Yaml {
                return yaml(&list);
            }
            list
        }
        Output::Table(v) => table::table(t.def, &items, include, true, meta, v),
        Output::Metadata { version, .. } => table::partial_list(&items, meta, version),
    };
    Ok(Reply::bytes(
        200,
        output.content_type(),
        ordered_json::ordered(&body),
    ))
}

pub fn watch(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    // A watch streams single objects, so `as=PartialObjectMetadata` (not `...List`) applies.
    let output = negotiate::resource_output(ctx.header("accept"), false, true)?;
    let include = include(ctx)?;
    let mut filter = Filter::parse(ctx, t.def)?;
    if let Some(name) = &t.name {
        // `/watch/namespaces/ns/pods/name` watches one object.
        let sel = format!("metadata.name={name}");
        filter.fields = FieldSelector::parse(&sel, t.def).map_err(ApiError::bad_request)?;
    }
    watcher::start(ctx, t, filter, output, include)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let t = continue_token(42, "dev", "web-1");
        assert_eq!(
            parse_continue(&t).ok(),
            Some(("dev".to_owned(), "web-1".to_owned()))
        );
        assert!(parse_continue("!!").is_err());
    }
}
