//! Each tool as the requests kubectl would send for it: the same paths, queries, content types
//! and bodies, so the layer decides, masks and records a tool call exactly as it would the
//! kubectl command (and `kubeleash replay` prints that command).

use bytes::Bytes;
use http::Method;
use kubeleash_core::policy::Identity;
use serde_json::{Map, Value, json};

use super::args::{Args, check_name, check_namespace, quoted};
use super::discovery::{Discovery, Resource};
use super::engine::{Call, Engine, Reply};
use super::held::{Progress, send};
use super::tool_error::ToolError;

/// What a tool call hands back: the structured result, and its text.
pub struct Done {
    pub structured: Value,
    pub text: String,
}

impl Done {
    fn json(v: Value) -> Done {
        Done {
            text: v.to_string(),
            structured: v,
        }
    }
}

/// What a call runs with.
pub struct Ctx<'a> {
    pub engine: &'a Engine,
    /// Who the call is from.
    pub caller: Identity,
    pub discovery: &'a Discovery,
    pub progress: Option<&'a Progress>,
}

impl Ctx<'_> {
    /// Send `call`; an answer that is not a success is the tool's error.
    async fn ok(&self, call: Call, doing: &str) -> Result<Reply, ToolError> {
        let reply = send(self.engine, &self.caller, &call, self.progress).await?;
        if reply.status.is_success() {
            Ok(reply)
        } else {
            Err(ToolError::from_reply(&reply, doing))
        }
    }

    fn namespace<'b>(&'b self, given: Option<&'b str>) -> &'b str {
        given.unwrap_or(self.engine.namespace())
    }
}

/// Run tool `name` with `args`.
pub async fn run(ctx: &Ctx<'_>, name: &str, args: &Map<String, Value>) -> Result<Done, ToolError> {
    match name {
        "get" => get(ctx, args).await,
        "list" => list(ctx, args).await,
        "events" => events(ctx, args).await,
        "logs" => logs(ctx, args).await,
        "apply" => apply(ctx, args).await,
        "patch" => patch(ctx, args).await,
        "delete" => delete(ctx, args).await,
        "scale" => scale(ctx, args).await,
        "rollout_restart" => rollout_restart(ctx, args).await,
        "can_i" => can_i(ctx, args).await,
        "api_resources" => api_resources(ctx).await,
        other => Err(ToolError::invalid(format!(
            "there is no tool `{}`",
            quoted(other, 64)
        ))),
    }
}

/// The resource an argument names, and the object's path (`name` in `namespace`).
async fn object(
    ctx: &Ctx<'_>,
    a: &Args<'_>,
) -> Result<(Resource, String, String, String), ToolError> {
    let word = a
        .word("resource")?
        .ok_or_else(|| ToolError::invalid("`resource` is required"))?;
    let name = a
        .name("name")?
        .ok_or_else(|| ToolError::invalid("`name` is required"))?;
    let ns = ctx.namespace(a.namespace("namespace")?).to_string();
    let r = ctx
        .discovery
        .resolve(ctx.engine, &ctx.caller, word, a.word("apiVersion")?)
        .await?;
    let path = format!("{}/{name}", r.collection(Some(&ns)));
    Ok((r, path, name.to_string(), ns))
}

/// `metadata.managedFields` left out, as kubectl leaves it out: bookkeeping an agent does not
/// need, and a large share of every object.
fn trimmed(mut v: Value) -> Value {
    let strip = |o: &mut Value| {
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
    };
    strip(&mut v);
    if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
        items.iter_mut().for_each(strip);
    }
    v
}

fn parse(reply: &Reply) -> Result<Value, ToolError> {
    serde_json::from_slice(&reply.body)
        .map_err(|e| ToolError::failed(format!("the API server's answer is not JSON: {e}")))
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    let q = q.finish();
    if q.is_empty() { q } else { format!("?{q}") }
}

async fn get(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Done, ToolError> {
    let a = Args::new(args, &["resource", "name", "namespace", "apiVersion"])?;
    let (r, path, name, _) = object(ctx, &a).await?;
    let reply = ctx
        .ok(Call::get(path), &format!("get {} {name}", r.qualified()))
        .await?;
    Ok(Done::json(trimmed(parse(&reply)?)))
}

async fn list(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Done, ToolError> {
    let a = Args::new(
        args,
        &[
            "resource",
            "namespace",
            "allNamespaces",
            "labelSelector",
            "fieldSelector",
            "limit",
            "continue",
            "apiVersion",
        ],
    )?;
    let word = a
        .word("resource")?
        .ok_or_else(|| ToolError::invalid("`resource` is required"))?;
    let r = ctx
        .discovery
        .resolve(ctx.engine, &ctx.caller, word, a.word("apiVersion")?)
        .await?;
    let all = a.flag("allNamespaces")?;
    let ns = ctx.namespace(a.namespace("namespace")?).to_string();
    let path = r.collection(if all { None } else { Some(&ns) });
    let q = query(&[
        (
            "labelSelector",
            a.short("labelSelector")?.map(str::to_string),
        ),
        (
            "fieldSelector",
            a.short("fieldSelector")?.map(str::to_string),
        ),
        (
            "limit",
            Some(a.number("limit", 1..=5000)?.unwrap_or(500).to_string()),
        ),
        ("continue", a.short("continue")?.map(str::to_string)),
    ]);
    let reply = ctx
        .ok(
            Call::get(format!("{path}{q}")),
            &format!("list {}", r.qualified()),
        )
        .await?;
    Ok(Done::json(trimmed(parse(&reply)?)))
}

async fn events(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Done, ToolError> {
    let a = Args::new(args, &["resource", "name", "namespace"])?;
    let ns = ctx.namespace(a.namespace("namespace")?).to_string();
    let mut selector = Vec::new();
    if let Some(name) = a.name("name")? {
        selector.push(format!("involvedObject.name={name}"));
        selector.push(format!("involvedObject.namespace={ns}"));
    }
    if let Some(word) = a.word("resource")? {
        let r = ctx
            .discovery
            .resolve(ctx.engine, &ctx.caller, word, None)
            .await?;
        selector.push(format!("involvedObject.kind={}", r.kind));
    }
    let q = query(&[(
        "fieldSelector",
        (!selector.is_empty()).then(|| selector.join(",")),
    )]);
    let reply = ctx
        .ok(
            Call::get(format!("/api/v1/namespaces/{ns}/events{q}")),
            "list events",
        )
        .await?;
    let list = parse(&reply)?;
    let mut events: Vec<Value> = list
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| {
            let s = |p: &str| e.pointer(p).cloned().unwrap_or(Value::Null);
            let last = [s("/lastTimestamp"), s("/eventTime"), s("/firstTimestamp")]
                .into_iter()
                .find(|v| v.is_string())
                .unwrap_or(Value::Null);
            json!({
                "type": s("/type"),
                "reason": s("/reason"),
                "message": s("/message"),
                "count": s("/count"),
                "last": last,
                "object": format!(
                    "{}/{}",
                    e.pointer("/involvedObject/kind").and_then(Value::as_str).unwrap_or(""),
                    e.pointer("/involvedObject/name").and_then(Value::as_str).unwrap_or("")
                ),
            })
        })
        .collect();
    events.sort_by(|x, y| x["last"].as_str().cmp(&y["last"].as_str()));
    Ok(Done::json(json!({ "events": events })))
}

async fn logs(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Done, ToolError> {
    let a = Args::new(
        args,
        &[
            "name",
            "namespace",
            "container",
            "tailLines",
            "sinceSeconds",
            "previous",
        ],
    )?;
    let name = a
        .name("name")?
        .ok_or_else(|| ToolError::invalid("`name` is required"))?;
    let ns = ctx.namespace(a.namespace("namespace")?).to_string();
    let q = query(&[
        ("container", a.name("container")?.map(str::to_string)),
        ("previous", a.flag("previous")?.then(|| "true".to_string())),
        (
            "sinceSeconds",
            a.number("sinceSeconds", 1..=u64::from(u32::MAX))?
                .map(|n| n.to_string()),
        ),
        (
            "tailLines",
            Some(
                a.number("tailLines", 1..=100_000)?
                    .unwrap_or(500)
                    .to_string(),
            ),
        ),
    ]);
    let reply = ctx
        .ok(
            Call::get(format!("/api/v1/namespaces/{ns}/pods/{name}/log{q}")),
            &format!("logs of pod {name}"),
        )
        .await?;
    let log = String::from_utf8_lossy(&reply.body).into_owned();
    Ok(Done {
        text: log.clone(),
        structured: json!({ "log": log }),
    })
}

/// The most objects one `apply` call applies: each is a request, and its answer is held until
/// the call ends.
const MAX_DOCUMENTS: usize = 100;

/// A manifest's objects: a JSON object (a `kind: List`'s items), or YAML documents.
fn manifest_objects(text: &str) -> Result<Vec<Value>, ToolError> {
    let docs = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(ref o)) if o.get("kind").and_then(Value::as_str) == Some("List") => o
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        Ok(v) => vec![v],
        Err(_) => documents(text)?,
    };
    if docs.len() > MAX_DOCUMENTS {
        return Err(ToolError::invalid(format!(
            "the manifest holds {} objects; one call applies at most {MAX_DOCUMENTS}: split it",
            docs.len()
        )));
    }
    Ok(docs)
}

/// A JSON or YAML text as JSON values, one per document, as written (a `kind: List` stays one
/// document).
fn documents(text: &str) -> Result<Vec<Value>, ToolError> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok(vec![v]);
    }
    // YAML 1.2's booleans (true and false only): `data: {answer: y}` keeps its string, where
    // YAML 1.1 would make it a boolean the API server refuses.
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|e| {
            ToolError::invalid(format!(
                "the manifest is neither JSON nor YAML: {}",
                first_line(&e.to_string())
            ))
        })?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

async fn apply(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Done, ToolError> {
    let a = Args::new(
        args,
        &["manifest", "namespace", "dryRun", "force", "reason"],
    )?;
    let text = a
        .text("manifest")?
        .ok_or_else(|| ToolError::invalid("`manifest` is required"))?;
    let given_ns = a.namespace("namespace")?;
    let docs = manifest_objects(text)?;
    if docs.is_empty() {
        return Err(ToolError::invalid("the manifest holds no object"));
    }
    let mut applied = Vec::new();
    for (i, mut doc) in docs.into_iter().enumerate() {
        let at = format!("document {}", i + 1);
        let s = |p: &str| doc.pointer(p).and_then(Value::as_str).map(str::to_string);
        let (Some(api_version), Some(kind), Some(name)) =
            (s("/apiVersion"), s("/kind"), s("/metadata/name"))
        else {
            return Err(ToolError::invalid(format!(
                "{at} needs apiVersion, kind and metadata.name"
            )));
        };
        check_name(&format!("{at}'s metadata.name"), &name)?;
        let r = ctx
            .discovery
            .resolve(ctx.engine, &ctx.caller, &kind, Some(&api_version))
            .await?;
        let ns = if r.namespaced {
            let own = s("/metadata/namespace");
            if let Some(own) = &own {
                check_namespace(own)?;
                if given_ns.is_some_and(|g| g != own) {
                    return Err(ToolError::invalid(format!(
                        "{at} is in namespace `{own}`, not the `{}` the call names",
                        given_ns.unwrap_or_default()
                    )));
                }
            }
            let ns = own.unwrap_or_else(|| ctx.namespace(given_ns).to_string());
            if let Some(m) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
                m.insert("namespace".into(), json!(ns));
            }
            Some(ns)
        } else {
            None
        };
        let q = query(&[
            ("dryRun", a.flag("dryRun")?.then(|| "All".to_string())),
            ("fieldManager", Some("kubectl".into())),
            ("fieldValidation", Some("Strict".into())),
            ("force", Some(a.flag("force")?.to_string())),
        ]);
        let call = Call {
            method: Method::PATCH,
            target: format!("{}/{name}{q}", r.collection(ns.as_deref())),
            content_type: Some("application/apply-patch+yaml"),
            body: Bytes::from(doc.to_string()),
            reason: a.short("reason")?.map(str::to_string),
        };
        let what = format!("{}/{name}", r.qualified());
        match ctx.ok(call, &format!("apply {what}")).await {
            // What kubectl prints of each (`configmap/x serverside-applied`), not the whole
            // object: a call's answer stays small however many objects it applies.
            Ok(reply) => applied.push(summary(&parse(&reply)?)),
            Err(e) if applied.is_empty() => return Err(e),
            Err(e) => {
                return Err(with_note(
                    e,
                    &format!(
                        "{} document(s) before it were applied; {at} ({what}) and those after it were not",
                        applied.len()
                    ),
                ));
            }
        }
    }
    Ok(Done::json(json!({ "applied": applied })))
}

/// An applied object in a few fields, in an object's shape: what it is, where, and its new
/// version.
fn summary(o: &Value) -> Value {
    let mut metadata = serde_json::Map::new();
    for k in ["name", "namespace", "uid", "resourceVersion", "generation"] {
        if let Some(v) = o.pointer(&format!("/metadata/{k}")) {
            metadata.insert(k.into(), v.clone());
        }
    }
    json!({
        "apiVersion": o.get("apiVersion").cloned().unwrap_or(Value::Null),
        "kind": o.get("kind").cloned().unwrap_or(Value::Null),
        "metadata": metadata,
    })
}

fn with_note(e: ToolError, note: &str) -> ToolError {
    match e {
        ToolError::Refused { text, status } => ToolError::Refused {
            text: format!("{text} ({note})"),
            status,
        },
        ToolError::Failed(t) => ToolError::Failed(format!("{t} ({note})")),
        ToolError::Invalid(t) => ToolError::Invalid(format!("{t} ({note})")),
        ToolError::Pending {
            id,
            retry_after,
            status,
            note: old,
        } => ToolError::Pending {
            id,
            retry_after,
            status,
            note: Some(old.map_or(note.to_string(), |o| format!("{o}; {note}"))),
        },
    }
}

async fn patch(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Done, ToolError> {
    let a = Args::new(
        args,
        &[
            "resource",
            "name",
            "namespace",
            "patch",
            "type",
            "apiVersion",
            "reason",
        ],
    )?;
    let content_type = match a.short("type")?.unwrap_or("strategic") {
        "merge" => "application/merge-patch+json",
        "strategic" => "application/strategic-merge-patch+json",
        "json" => "application/json-patch+json",
        other => {
            return Err(ToolError::invalid(format!(
                "`type` is merge, strategic or json, not `{}`",
                quoted(other, 32)
            )));
        }
    };
    let body = match a.value("patch") {
        None => return Err(ToolError::invalid("`patch` is required")),
        Some(Value::String(s)) => {
            let mut docs = documents(a.text("patch")?.unwrap_or(s))?;
            if docs.len() != 1 {
                return Err(ToolError::invalid(
                    "`patch` must be one JSON (or YAML) document",
                ));
            }
            docs.remove(0)
        }
        Some(v @ (Value::Object(_) | Value::Array(_))) => v.clone(),
        Some(_) => {
            return Err(ToolError::invalid(
                "`patch` must be an object, an array or its text",
            ));
        }
    };
    let body = Bytes::from(body.to_string());
    if body.len() > super::args::MAX_ARGUMENT {
        return Err(ToolError::invalid(
            "`patch` is larger than a request body may be (3 MiB)",
        ));
    }
    let (r, path, name, _) = object(ctx, &a).await?;
    let call = Call {
        method: Method::PATCH,
        target: format!("{path}?fieldManager=kubectl-patch"),
        content_type: Some(content_type),
        body,
        reason: a.short("reason")?.map(str::to_string),
    };
    let reply = ctx
        .ok(call, &format!("patch {} {name}", r.qualified()))
        .await?;
    Ok(Done::json(trimmed(parse(&reply)?)))
}

async fn delete(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Done, ToolError> {
    let a = Args::new(
        args,
        &["resource", "name", "namespace", "apiVersion", "reason"],
    )?;
    let (r, path, name, _) = object(ctx, &a).await?;
    let call = Call {
        method: Method::DELETE,
        target: path,
        content_type: Some("application/json"),
        body: Bytes::from_static(br#"{"propagationPolicy":"Background"}"#),
        reason: a.short("reason")?.map(str::to_string),
    };
    let reply = ctx
        .ok(call, &format!("delete {} {name}", r.qualified()))
        .await?;
    Ok(Done::json(trimmed(parse(&reply)?)))
}

async fn scale(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Done, ToolError> {
    let a = Args::new(
        args,
        &["resource", "name", "namespace", "replicas", "reason"],
    )?;
    let replicas = a
        .number("replicas", 0..=100_000)?
        .ok_or_else(|| ToolError::invalid("`replicas` is required"))?;
    let (r, path, name, _) = object(ctx, &a).await?;
    let call = Call {
        method: Method::PATCH,
        target: format!("{path}/scale"),
        content_type: Some("application/merge-patch+json"),
        body: Bytes::from(json!({"spec": {"replicas": replicas}}).to_string()),
        reason: a.short("reason")?.map(str::to_string),
    };
    let reply = ctx
        .ok(call, &format!("scale {} {name}", r.qualified()))
        .await?;
    Ok(Done::json(parse(&reply)?))
}

async fn rollout_restart(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Done, ToolError> {
    let a = Args::new(
        args,
        &["resource", "name", "namespace", "restartedAt", "reason"],
    )?;
    let (r, path, name, _) = object(ctx, &a).await?;
    if r.group != "apps"
        || !["deployments", "daemonsets", "statefulsets"].contains(&r.name.as_str())
    {
        return Err(ToolError::invalid(format!(
            "a rollout restarts deployments, daemon sets and stateful sets, not {}",
            r.qualified()
        )));
    }
    // kubectl writes the time without fractional seconds. A call held for approval and made
    // again must send the identical request: it names the time it was first given.
    let at = match a.short("restartedAt")? {
        Some(at) if is_timestamp(at) => at.to_string(),
        Some(other) => {
            return Err(ToolError::invalid(format!(
                "`restartedAt` is a UTC time as 2026-12-05T16:20:49Z, not `{}`",
                quoted(other, 40)
            )));
        }
        None => {
            let now = kubeleash_tower::now();
            match now.split_once('.') {
                Some((whole, _)) => format!("{whole}Z"),
                None => now,
            }
        }
    };
    let body = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": at}}}}});
    let call = Call {
        method: Method::PATCH,
        target: format!("{path}?fieldManager=kubectl-rollout"),
        content_type: Some("application/strategic-merge-patch+json"),
        body: Bytes::from(body.to_string()),
        reason: a.short("reason")?.map(str::to_string),
    };
    let reply = ctx
        .ok(call, &format!("restart {} {name}", r.qualified()))
        .await
        .map_err(|e| match e {
            ToolError::Pending { .. } => with_note(
                e,
                &format!("make the same call again with restartedAt: \"{at}\" so that it is the identical request"),
            ),
            e => e,
        })?;
    Ok(Done::json(trimmed(parse(&reply)?)))
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

async fn can_i(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<Done, ToolError> {
    let a = Args::new(
        args,
        &[
            "verb",
            "resource",
            "namespace",
            "name",
            "subresource",
            "apiGroup",
        ],
    )?;
    let verb = a.required("verb")?;
    if !verb.bytes().all(|b| b.is_ascii_lowercase() || b == b'*') || verb.is_empty() {
        return Err(ToolError::invalid(format!(
            "`verb` is a Kubernetes verb (get, list, create, ...), not `{}`",
            quoted(verb, 32)
        )));
    }
    let word = a
        .word("resource")?
        .ok_or_else(|| ToolError::invalid("`resource` is required"))?;
    // The group from discovery, as kubectl finds it (in the group given, if one is); a name
    // the server does not serve is asked about as written (the answer is the policy's either
    // way).
    let group_given = a.word("apiGroup")?;
    let all = ctx.discovery.all(ctx.engine, &ctx.caller).await?;
    let found = match group_given {
        Some(g) => all
            .iter()
            .find(|r| r.group == g && (r.name == word || r.kind.eq_ignore_ascii_case(word)))
            .cloned(),
        None => ctx
            .discovery
            .resolve(ctx.engine, &ctx.caller, word, None)
            .await
            .ok(),
    };
    let (group, resource, namespaced) = match (found, group_given) {
        (Some(r), _) => (r.group, r.name, r.namespaced),
        (None, Some(g)) => (g.to_string(), word.to_string(), true),
        (None, None) => match word.split_once('.') {
            Some((res, group)) => (group.to_string(), res.to_string(), true),
            None => (String::new(), word.to_string(), true),
        },
    };
    let mut attrs = json!({
        "verb": verb,
        "group": group,
        "resource": resource,
    });
    if namespaced {
        attrs["namespace"] = json!(ctx.namespace(a.namespace("namespace")?));
    }
    if let Some(n) = a.name("name")? {
        attrs["name"] = json!(n);
    }
    if let Some(s) = a.word("subresource")? {
        attrs["subresource"] = json!(s);
    }
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attrs},
    });
    let call = Call {
        method: Method::POST,
        target: "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews".into(),
        content_type: Some("application/json"),
        body: Bytes::from(review.to_string()),
        reason: None,
    };
    let reply = ctx.ok(call, "ask can-i").await?;
    let v = parse(&reply)?;
    let status = v.get("status").cloned().unwrap_or(Value::Null);
    let allowed = status
        .get("allowed")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let denied = status
        .get("denied")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let reason = status
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let answer = json!({
        "allowed": allowed,
        "denied": denied,
        "needsApproval": !allowed && !denied && reason.contains("approval"),
        "reason": reason,
    });
    Ok(Done::json(answer))
}

async fn api_resources(ctx: &Ctx<'_>) -> Result<Done, ToolError> {
    let all = ctx.discovery.all(ctx.engine, &ctx.caller).await?;
    let rows: Vec<Value> = all
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "shortNames": r.short_names,
                "apiVersion": r.api_version(),
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": r.verbs,
            })
        })
        .collect();
    Ok(Done::json(json!({ "resources": rows })))
}
