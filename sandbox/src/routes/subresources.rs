//! Subresources: `pods/log` (seeded text, optionally followed), `pods/exec|attach|portforward`
//! (refused with a `Status`), `*/status`, `deployments/scale`, `serviceaccounts/token`,
//! `namespaces/finalize`.

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::negotiate::PatchType;
use crate::reply::Reply;
use crate::status::{ApiError, FieldError};
use crate::time;
use crate::validate;

use super::write::{self, body_object, check_type, commit_update, parse_patch, write_opts};
use super::{Ctx, Target};

pub async fn handle(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let sub = t.subresource.as_deref().unwrap_or("");
    let m = ctx.method;
    match (sub, m) {
        ("log", &Method::GET) => log(ctx, t),
        ("exec" | "attach" | "portforward", &Method::GET | &Method::POST) => {
            Err(ApiError::bad_request(format!(
                "{sub} is not supported by the kubeleash sandbox: it runs no containers"
            )))
        }
        ("status", &Method::GET) => super::read::get(ctx, t),
        ("status", &Method::PUT | &Method::PATCH) => status(ctx, t),
        ("scale", &Method::GET) => scale_get(ctx, t),
        ("scale", &Method::PUT | &Method::PATCH) => scale_write(ctx, t),
        ("token", &Method::POST) => token(ctx, t),
        ("finalize", &Method::PUT) => finalize(ctx, t),
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn object(ctx: &Ctx<'_>, t: &Target) -> Result<Value, ApiError> {
    let name = t.name.as_deref().unwrap_or("");
    ctx.state
        .store
        .lock()
        .get(&t.key(name))
        .cloned()
        .ok_or_else(|| ApiError::not_found(t.def, name))
}

fn log(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let pod = object(ctx, t)?;
    let name = t.name.as_deref().unwrap_or("");
    let ns = t.namespace.as_deref().unwrap_or("");
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let default = pod
        .pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
        .and_then(Value::as_str);
    let container = match (ctx.query.non_empty("container"), containers.as_slice()) {
        (Some(c), _) => c.to_owned(),
        (None, [only]) => only.clone(),
        (None, _) if default.is_some() => default.unwrap_or_default().to_owned(),
        (None, all) => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                all.join(" ")
            )));
        }
    };
    if !containers.contains(&container) {
        return Err(ApiError::bad_request(format!(
            "container {container} is not valid for pod {name}"
        )));
    }
    if ctx.query.flag("previous") {
        return Err(ApiError::bad_request(format!(
            "previous terminated container {container:?} in pod {name:?} not found"
        )));
    }
    let text = ctx
        .state
        .store
        .lock()
        .log(ns, name, &container)
        .map(str::to_owned)
        .unwrap_or_default();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if let Some(n) = ctx.query.int("tailLines").map_err(ApiError::bad_request)? {
        let n = usize::try_from(n.max(0)).unwrap_or(0);
        lines = lines.split_off(lines.len().saturating_sub(n));
    }
    if ctx.query.flag("timestamps") {
        let start = pod
            .pointer("/status/startTime")
            .and_then(Value::as_str)
            .and_then(time::parse_rfc3339)
            .unwrap_or_else(time::now);
        for (i, line) in lines.iter_mut().enumerate() {
            let at = (start as u128 + i as u128) * 1_000_000_000 + 123_456_789;
            *line = format!("{} {line}", time::rfc3339_nanos(at));
        }
    }
    let mut out: Vec<u8> = lines
        .iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect();
    if let Some(limit) = ctx.query.int("limitBytes").map_err(ApiError::bad_request)? {
        out.truncate(usize::try_from(limit.max(0)).unwrap_or(0));
    }
    if !ctx.query.flag("follow") {
        return Ok(Reply::bytes(200, "text/plain", out));
    }
    // A followed log stays open as long as the container runs: here, until the client goes
    // away or the sandbox stops.
    let (tx, rx) = mpsc::channel(4);
    let mut stop = ctx.state.stop.clone();
    tokio::spawn(async move {
        if tx.send(Bytes::from(out)).await.is_err() {
            return;
        }
        tokio::select! {
            _ = tx.closed() => {}
            _ = crate::state::stopped(&mut stop) => {}
        }
    });
    Ok(Reply::stream("text/plain", rx))
}

/// PUT or PATCH on `status`: everything but `status` stays as it was.
fn status(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let opts = write_opts(ctx)?;
    let av = t.def.api_version();
    let name = t.name.clone().unwrap_or_default();
    let (incoming, patch) = body_or_patch(ctx, t.def.kind, &av)?;
    let mut store = ctx.state.store.lock();
    let old = store
        .get(&t.key(&name))
        .cloned()
        .ok_or_else(|| ApiError::not_found(t.def, &name))?;
    let mut source = match (incoming, patch) {
        (Some(body), _) => body,
        (None, Some((ptype, doc))) => write::apply_patch(ptype, &old, &doc)?,
        (None, None) => old.clone(),
    };
    check_type(&mut source, t.def.kind, &av)?;
    write::decode_for(ctx, t, &mut source, opts.validation)?;
    let mut new = old.clone();
    if let Some(m) = new.as_object_mut() {
        match source.get("status") {
            Some(s) => m.insert("status".to_owned(), s.clone()),
            None => m.remove("status"),
        };
    }
    if let Some(rv) = source.pointer("/metadata/resourceVersion").cloned()
        && let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut)
    {
        m.insert("resourceVersion".to_owned(), rv);
    }
    let updated = commit_update(
        ctx.state,
        &mut store,
        t,
        &old,
        new,
        &opts,
        "Update",
        Some("status"),
        write::Fields::Changed,
    )?;
    Ok(Reply::json(200, &updated))
}

fn scale_of(deployment: &Value) -> Value {
    let meta = deployment.get("metadata").cloned().unwrap_or(json!({}));
    let pick = |k: &str| meta.get(k).cloned().unwrap_or(Value::Null);
    let replicas = deployment
        .pointer("/spec/replicas")
        .cloned()
        .unwrap_or(json!(1));
    let selector = deployment
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": pick("name"),
            "namespace": pick("namespace"),
            "uid": pick("uid"),
            "resourceVersion": pick("resourceVersion"),
            "creationTimestamp": pick("creationTimestamp"),
        },
        "spec": {"replicas": replicas},
        "status": {
            "replicas": deployment.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

fn scale_get(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    Ok(Reply::json(200, &scale_of(&object(ctx, t)?)))
}

fn scale_write(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let opts = write_opts(ctx)?;
    let name = t.name.clone().unwrap_or_default();
    let (incoming, patch) = body_or_patch(ctx, "Scale", "autoscaling/v1")?;
    let mut store = ctx.state.store.lock();
    let old = store
        .get(&t.key(&name))
        .cloned()
        .ok_or_else(|| ApiError::not_found(t.def, &name))?;
    let current = scale_of(&old);
    let mut scale = match (incoming, patch) {
        (Some(body), _) => body,
        (None, Some((PatchType::Apply, doc))) => {
            write::apply_patch(PatchType::Strategic, &current, &doc)?
        }
        (None, Some((ptype, doc))) => write::apply_patch(ptype, &current, &doc)?,
        (None, None) => current.clone(),
    };
    check_type(&mut scale, "Scale", "autoscaling/v1")?;
    validate::decode("Scale", "autoscaling/v1", &mut scale, opts.validation)?;
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::invalid_kind(
            "Scale",
            "autoscaling",
            &name,
            vec![FieldError::invalid(
                "spec.replicas",
                json!(replicas),
                "must be greater than or equal to 0",
            )],
        ));
    }
    let mut new = old.clone();
    if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("replicas".to_owned(), json!(replicas));
    }
    if let Some(rv) = scale
        .pointer("/metadata/resourceVersion")
        .filter(|v| v.as_str() != Some(""))
        && let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut)
    {
        m.insert("resourceVersion".to_owned(), rv.clone());
    }
    let updated = commit_update(
        ctx.state,
        &mut store,
        t,
        &old,
        new,
        &opts,
        "Update",
        Some("scale"),
        write::Fields::Changed,
    )?;
    Ok(Reply::json(200, &scale_of(&updated)))
}

/// `POST serviceaccounts/<name>/token`: a TokenRequest answered with a token shaped like the
/// real thing.
fn token(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let opts = write_opts(ctx)?;
    let av = "authentication.k8s.io/v1";
    let mut req = body_object(ctx, "TokenRequest", av)?;
    // The request's status is the server's to fill (protobuf bodies carry an empty one).
    if let Some(m) = req.as_object_mut() {
        m.remove("status");
    }
    validate::decode("TokenRequest", av, &mut req, opts.validation)?;
    let sa = object(ctx, t)?;
    let name = t.name.as_deref().unwrap_or("");
    let ns = t.namespace.as_deref().unwrap_or("");
    let expiration = req
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    if expiration < 600 {
        return Err(ApiError::invalid_kind(
            "TokenRequest",
            "authentication.k8s.io",
            name,
            vec![FieldError::invalid(
                "spec.expirationSeconds",
                json!(expiration),
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    let audiences: Vec<String> = req
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| vec!["https://kubernetes.default.svc.cluster.local".to_owned()]);
    let now = time::now();
    let sa_uid = sa
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    let token =
        ctx.state
            .ids
            .service_account_jwt(ns, name, sa_uid, &audiences, now, now + expiration);
    let answer = json!({
        "kind": "TokenRequest",
        "apiVersion": av,
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": time::rfc3339(now)},
        "spec": {
            "audiences": audiences,
            "expirationSeconds": expiration,
            "boundObjectRef": req.pointer("/spec/boundObjectRef").cloned().unwrap_or(Value::Null),
        },
        "status": {"token": token, "expirationTimestamp": time::rfc3339(now + expiration)},
    });
    Ok(Reply::json(201, &answer))
}

/// `PUT namespaces/<name>/finalize`: replace `spec.finalizers`.
fn finalize(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let opts = write_opts(ctx)?;
    let body = body_object(ctx, "Namespace", "v1")?;
    let name = t.name.clone().unwrap_or_default();
    let mut store = ctx.state.store.lock();
    let old = store
        .get(&t.key(&name))
        .cloned()
        .ok_or_else(|| ApiError::not_found(t.def, &name))?;
    let mut new = old.clone();
    let finalizers = body
        .pointer("/spec/finalizers")
        .cloned()
        .unwrap_or(json!([]));
    if let Some(m) = new.as_object_mut() {
        m.insert("spec".to_owned(), json!({ "finalizers": finalizers }));
    }
    if opts.dry_run {
        return Ok(Reply::json(200, &new));
    }
    let stored = store.put(t.key(&name), new);
    Ok(Reply::json(200, &stored))
}

/// A subresource write carries a whole object (PUT) or a patch (PATCH): read whichever it is.
#[allow(
    clippy::type_complexity,
    reason = "the two halves the status and scale handlers match on"
)]
fn body_or_patch(
    ctx: &Ctx<'_>,
    kind: &str,
    api_version: &str,
) -> Result<(Option<Value>, Option<(PatchType, Value)>), ApiError> {
    if ctx.method == Method::PUT {
        Ok((Some(body_object(ctx, kind, api_version)?), None))
    } else {
        Ok((None, Some(parse_patch(ctx)?)))
    }
}
