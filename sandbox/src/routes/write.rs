//! create, update, patch (JSON, merge, strategic, apply), delete and deletecollection, with
//! `dryRun=All`, `fieldValidation`, `fieldManager`, optimistic concurrency, finalizers and the
//! namespace lifecycle.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::catalog::{self, ResourceDef};
use crate::crd;
use crate::defaults;
use crate::fields;
use crate::negotiate::{self, BodyFormat, PatchType};
use crate::patch::{self, PatchError};
use crate::protobuf;
use crate::reply::Reply;
use crate::ssa;
use crate::state::State;
use crate::status::{self, ApiError, FieldError};
use crate::store::{Inner, Key};
use crate::time;
use crate::validate::{self, FieldValidation};

use super::read::{Filter, list_item};
use super::{Ctx, Target};

/// How long a deleted namespace stays `Terminating` before its contents and itself are gone;
/// long enough for a watch to see the phase change, short enough for `kubectl delete --wait`.
const NAMESPACE_FINALIZE_DELAY: Duration = Duration::from_millis(100);

/// The query options every write takes.
pub struct WriteOpts {
    pub dry_run: bool,
    pub validation: FieldValidation,
    pub manager: String,
    /// `fieldManager` as sent (apply requires it).
    pub explicit_manager: bool,
}

fn dry_run<'a>(values: impl Iterator<Item = &'a str>) -> Result<bool, ApiError> {
    let mut dry = false;
    for v in values {
        if v != "All" {
            return Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: {v:?}: supported values: \"All\""
            )));
        }
        dry = true;
    }
    Ok(dry)
}

pub fn write_opts(ctx: &Ctx<'_>) -> Result<WriteOpts, ApiError> {
    let field_manager = ctx.query.get("fieldManager");
    Ok(WriteOpts {
        dry_run: dry_run(ctx.query.all("dryRun"))?,
        validation: FieldValidation::parse(ctx.query.get("fieldValidation"))?,
        manager: fields::manager_name(field_manager, ctx.header("user-agent")),
        explicit_manager: field_manager.is_some_and(|m| !m.is_empty()),
    })
}

fn meta_str<'a>(o: &'a Value, key: &str) -> Option<&'a str> {
    o.pointer(&format!("/metadata/{key}"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn set_meta(o: &mut Value, key: &str, value: Value) {
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert(key.to_owned(), value);
    }
}

/// Check or fill `kind` and `apiVersion` against the endpoint's, and make sure `metadata` is an
/// object.
pub fn check_type(o: &mut Value, kind: &str, api_version: &str) -> Result<(), ApiError> {
    let Some(m) = o.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON or YAML object",
        ));
    };
    match m.get("apiVersion").and_then(Value::as_str) {
        Some(av) if !av.is_empty() && av != api_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({api_version})"
            )));
        }
        _ => {
            m.insert("apiVersion".to_owned(), json!(api_version));
        }
    }
    match m.get("kind").and_then(Value::as_str) {
        Some(k) if !k.is_empty() && k != kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({kind})"
            )));
        }
        _ => {
            m.insert("kind".to_owned(), json!(kind));
        }
    }
    if !m.get("metadata").is_some_and(Value::is_object) {
        m.insert("metadata".to_owned(), json!({}));
    }
    Ok(())
}

/// The request body as a JSON object of `kind`, whatever format it came in.
pub fn body_object(ctx: &Ctx<'_>, kind: &str, api_version: &str) -> Result<Value, ApiError> {
    let format = negotiate::body_format(ctx.header("content-type"))?;
    let mut v: Value = match format {
        BodyFormat::Json => serde_json::from_slice(&ctx.body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?,
        BodyFormat::Yaml => serde_saphyr::from_slice(&ctx.body)
            .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))?,
        BodyFormat::Protobuf => {
            protobuf::decode(&ctx.body).map_err(ApiError::unsupported_media_type)?
        }
    };
    check_type(&mut v, kind, api_version)?;
    Ok(v)
}

/// Put the object in the request's namespace (or none, at cluster scope).
fn place(t: &Target, o: &mut Value) -> Result<(), ApiError> {
    match (&t.namespace, t.def.namespaced) {
        (Some(ns), true) => {
            if meta_str(o, "namespace").is_some_and(|b| b != ns) {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            set_meta(o, "namespace", json!(ns));
        }
        _ => {
            if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("namespace");
            }
        }
    }
    Ok(())
}

fn namespaces_index() -> usize {
    catalog::index_of("Namespace").unwrap_or(usize::MAX)
}

/// New objects need a namespace that exists and is not being deleted.
fn check_namespace(store: &Inner, t: &Target, name: &str) -> Result<(), ApiError> {
    let Some(ns) = t.namespace.as_deref().filter(|_| t.def.namespaced) else {
        return Ok(());
    };
    let key = (namespaces_index(), String::new(), ns.to_owned());
    match store.get(&key) {
        None => Err(catalog::by_index(namespaces_index())
            .map_or_else(ApiError::no_route, |d| ApiError::not_found(d, ns))),
        Some(n) if n.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") => {
            Err(ApiError::forbidden(
                t.def,
                name,
                &format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            ))
        }
        Some(_) => Ok(()),
    }
}

fn strip_for_compare(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    v
}

/// Validate, default and store a new object. `fields_override` is the applied configuration's
/// field set for server-side apply.
fn create_object(
    state: &Arc<State>,
    store: &mut Inner,
    t: &Target,
    mut obj: Value,
    opts: &WriteOpts,
    operation: &str,
    fields_override: Option<Value>,
) -> Result<Value, ApiError> {
    place(t, &mut obj)?;
    if meta_str(&obj, "resourceVersion").is_some() {
        return Err(ApiError::internal(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let name = match (meta_str(&obj, "name"), meta_str(&obj, "generateName")) {
        (Some(n), _) => n.to_owned(),
        (None, Some(prefix)) => format!("{prefix}{}", state.ids.suffix(5)),
        (None, None) => {
            return Err(ApiError::invalid(
                t.def,
                "",
                vec![FieldError::required(
                    "metadata.name",
                    "name or generateName is required",
                )],
            ));
        }
    };
    set_meta(&mut obj, "name", json!(name));
    let mut errors = validate::name_errors(t.def, &name);
    errors.extend(validate::object_errors(t.def, &obj, None));
    if !errors.is_empty() {
        return Err(ApiError::invalid(t.def, &name, errors));
    }
    check_namespace(store, t, &name)?;
    let key = t.key(&name);
    if store.get(&key).is_some() {
        return Err(ApiError::already_exists(t.def, &name));
    }
    let now = time::rfc3339(time::now());
    defaults::on_create(t.def, &mut obj, &state.ids, &now);
    let set = fields_override.unwrap_or_else(|| fields::changed_fields(None, &obj));
    fields::record(
        &mut obj,
        &opts.manager,
        operation,
        &t.def.api_version(),
        None,
        set,
        &now,
    );
    if opts.dry_run {
        return Ok(obj);
    }
    Ok(store.put(key, obj))
}

/// Who gets which fields on an update-like write.
pub enum Fields {
    /// The writer gets the fields it changed, taking them from other managers (`Update`).
    Changed,
    /// `managedFields` on the new object were already worked out by server-side apply.
    Applied,
}

/// The second half of every update-like write: concurrency check, server-owned fields,
/// defaults, validation, no-op detection, managed fields, finalizers, storage.
#[allow(clippy::too_many_arguments)]
pub fn commit_update(
    state: &Arc<State>,
    store: &mut Inner,
    t: &Target,
    old: &Value,
    mut new: Value,
    opts: &WriteOpts,
    operation: &str,
    subresource: Option<&str>,
    fields_mode: Fields,
) -> Result<Value, ApiError> {
    let name = meta_str(old, "name").unwrap_or("").to_owned();
    let old_rv = meta_str(old, "resourceVersion").unwrap_or("").to_owned();
    if meta_str(&new, "resourceVersion").is_some_and(|rv| rv != old_rv) {
        return Err(ApiError::stale(t.def, &name));
    }
    if meta_str(&new, "name").is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta_str(&new, "name").unwrap_or("")
        )));
    }
    set_meta(&mut new, "name", json!(name));
    place(t, &mut new)?;
    // Clients may rewrite managedFields (kubectl does, to migrate client-side apply
    // ownership); a write that leaves them out keeps the old ones.
    if new.pointer("/metadata/managedFields").is_none()
        && let Some(mf) = old.pointer("/metadata/managedFields").cloned()
    {
        set_meta(&mut new, "managedFields", mf);
    }
    if subresource.is_none() && t.def.has_status {
        // The main resource ignores status; only the status subresource writes it.
        if let Some(m) = new.as_object_mut() {
            match old.get("status") {
                Some(s) => m.insert("status".to_owned(), s.clone()),
                None => m.remove("status"),
            };
        }
    }
    let now = time::rfc3339(time::now());
    defaults::on_update(t.def, old, &mut new, &state.ids, &now);
    let errors = validate::object_errors(t.def, &new, Some(old));
    if !errors.is_empty() {
        return Err(ApiError::invalid(t.def, &name, errors));
    }
    if strip_for_compare(&new) == strip_for_compare(old) {
        // A no-op write changes nothing, not even the resourceVersion.
        return Ok(old.clone());
    }
    if let Fields::Changed = fields_mode {
        let set = fields::changed_fields(Some(old), &new);
        ssa::take_over(&mut new, old, &opts.manager, subresource);
        fields::record(
            &mut new,
            &opts.manager,
            operation,
            &t.def.api_version(),
            subresource,
            set,
            &now,
        );
    }
    set_meta(&mut new, "resourceVersion", json!(old_rv));
    if opts.dry_run {
        return Ok(new);
    }
    let key = t.key(&name);
    let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
    let finalizers_left = new
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if deleting && !finalizers_left && !is(t.def, "Namespace") {
        // The last finalizer is gone: the pending deletion completes.
        store.put(key.clone(), new);
        return Ok(store.remove(&key).unwrap_or(Value::Null));
    }
    Ok(store.put(key, new))
}

/// Whether `def` is the built-in `kind` (a custom resource may reuse a built-in kind's name).
fn is(def: &ResourceDef, kind: &str) -> bool {
    def.kind == kind && !def.is_custom()
}

/// Decode a body as the endpoint's kind: built-in kinds through their typed structs, custom
/// resources through their CRD version's schema (unknown fields pruned with a warning, or a 400
/// under `Strict`; wrong types a 422).
pub fn decode_for(
    ctx: &Ctx<'_>,
    t: &Target,
    obj: &mut Value,
    mode: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    let Some(custom) = ctx.served.custom(t.def) else {
        return validate::decode(t.def.kind, &t.def.api_version(), obj, mode);
    };
    let Some(schema) = &custom.schema else {
        return Ok(Vec::new());
    };
    let (unknown, wrong) = crd::check(obj, schema);
    if !wrong.is_empty() {
        let name = meta_str(obj, "name").or(t.name.as_deref()).unwrap_or("");
        return Err(ApiError::invalid(t.def, name, wrong));
    }
    let messages: Vec<String> = unknown
        .iter()
        .map(|p| format!("unknown field {p:?}"))
        .collect();
    match mode {
        _ if messages.is_empty() => Ok(Vec::new()),
        FieldValidation::Strict => Err(ApiError::bad_request(format!(
            "{kind} in version {:?} cannot be handled as a {kind}: strict decoding error: {}",
            t.def.version,
            messages.join(", "),
            kind = t.def.kind
        ))),
        FieldValidation::Warn => Ok(messages),
        FieldValidation::Ignore => Ok(Vec::new()),
    }
}

/// What follows a create: a new CRD is soon established, as the API server's controllers do.
fn created_hook(ctx: &Ctx<'_>, t: &Target, opts: &WriteOpts, created: &Value) {
    if is(t.def, "CustomResourceDefinition") && !opts.dry_run {
        crd::establish(
            ctx.state.clone(),
            meta_str(created, "name").unwrap_or("").to_owned(),
            meta_str(created, "uid").unwrap_or("").to_owned(),
        );
    }
}

/// Kinds whose PUT creates a missing object (`AllowCreateOnUpdate` in their registries).
fn creates_on_update(def: &ResourceDef) -> bool {
    !def.is_custom()
        && matches!(
            def.kind,
            "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding" | "Event"
        )
}

pub fn create(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let opts = write_opts(ctx)?;
    let av = t.def.api_version();
    let mut obj = body_object(ctx, t.def.kind, &av)?;
    let warnings = decode_for(ctx, t, &mut obj, opts.validation)?;
    let mut store = ctx.state.store.lock();
    let created = create_object(ctx.state, &mut store, t, obj, &opts, "Update", None)?;
    created_hook(ctx, t, &opts, &created);
    Ok(Reply::json(201, &created).with_warnings(&warnings))
}

pub fn update(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let opts = write_opts(ctx)?;
    let av = t.def.api_version();
    let name = t.name.clone().unwrap_or_default();
    let mut obj = body_object(ctx, t.def.kind, &av)?;
    let warnings = decode_for(ctx, t, &mut obj, opts.validation)?;
    if meta_str(&obj, "name").is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta_str(&obj, "name").unwrap_or("")
        )));
    }
    set_meta(&mut obj, "name", json!(name));
    let mut store = ctx.state.store.lock();
    let old = store.get(&t.key(&name)).cloned();
    match old {
        None if creates_on_update(t.def) => {
            let created = create_object(ctx.state, &mut store, t, obj, &opts, "Update", None)?;
            Ok(Reply::json(201, &created).with_warnings(&warnings))
        }
        None => Err(ApiError::not_found(t.def, &name)),
        Some(old) => {
            let updated = commit_update(
                ctx.state,
                &mut store,
                t,
                &old,
                obj,
                &opts,
                "Update",
                None,
                Fields::Changed,
            )?;
            Ok(Reply::json(200, &updated).with_warnings(&warnings))
        }
    }
}

/// Apply bodies are YAML by content type; kubectl and client-go send JSON, which is YAML too.
fn parse_apply(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .or_else(|_| serde_saphyr::from_slice(body))
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
}

pub fn patch_error(e: PatchError) -> ApiError {
    match e {
        PatchError::Malformed(m) => ApiError::bad_request(m),
        PatchError::DoesNotApply(m) => ApiError {
            code: 422,
            reason: "Invalid",
            message: m,
            details: None,
        },
    }
}

/// Apply a non-apply patch document of `ptype` to `old`.
pub fn apply_patch(ptype: PatchType, old: &Value, doc: &Value) -> Result<Value, ApiError> {
    match ptype {
        PatchType::Json => patch::json_patch(old, doc).map_err(patch_error),
        PatchType::Merge => Ok(patch::merge_patch(old, doc)),
        PatchType::Strategic | PatchType::Apply => {
            patch::strategic_merge(old, doc).map_err(patch_error)
        }
    }
}

pub fn parse_patch(ctx: &Ctx<'_>) -> Result<(PatchType, Value), ApiError> {
    let ptype = negotiate::patch_type(ctx.header("content-type"))?;
    let doc = if ptype == PatchType::Apply {
        parse_apply(&ctx.body)?
    } else {
        serde_json::from_slice(&ctx.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?
    };
    Ok((ptype, doc))
}

pub fn patch(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let opts = write_opts(ctx)?;
    let (ptype, mut doc) = parse_patch(ctx)?;
    let name = t.name.clone().unwrap_or_default();
    let av = t.def.api_version();
    let mut applied_fields = None;
    let force = ctx.query.flag("force");
    if force && ptype != PatchType::Apply {
        return Err(ApiError::invalid_kind(
            "PatchOptions",
            "meta.k8s.io",
            "",
            vec![FieldError::forbidden(
                "force",
                "may not be specified for non-apply patch",
            )],
        ));
    }
    if ptype == PatchType::Apply {
        if !opts.explicit_manager {
            return Err(ApiError::invalid_kind(
                "PatchOptions",
                "meta.k8s.io",
                "",
                vec![FieldError::required(
                    "fieldManager",
                    "is required for apply patch",
                )],
            ));
        }
        for key in ["apiVersion", "kind"] {
            if doc
                .get(key)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(ApiError::bad_request(format!(
                    "{key} must be set in an apply patch"
                )));
            }
        }
        check_type(&mut doc, t.def.kind, &av)?;
        decode_for(ctx, t, &mut doc, opts.validation)?;
        if meta_str(&doc, "name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&doc, "name").unwrap_or("")
            )));
        }
        set_meta(&mut doc, "name", json!(name));
        applied_fields = Some(ssa::to_v1(&ssa::applied_set(&doc)));
    }
    let mut store = ctx.state.store.lock();
    let Some(old) = store.get(&t.key(&name)).cloned() else {
        if ptype == PatchType::Apply {
            let created = create_object(
                ctx.state,
                &mut store,
                t,
                doc,
                &opts,
                "Apply",
                applied_fields,
            )?;
            created_hook(ctx, t, &opts, &created);
            return Ok(Reply::json(201, &created));
        }
        return Err(ApiError::not_found(t.def, &name));
    };
    let mut patched = if ptype == PatchType::Apply {
        let mut base = old.clone();
        if let Some(set) = &applied_fields {
            fields::prune_unapplied(&mut base, &opts.manager, set);
        }
        apply_patch(ptype, &base, &doc)?
    } else {
        apply_patch(ptype, &old, &doc)?
    };
    check_type(&mut patched, t.def.kind, &av)?;
    let warnings = decode_for(ctx, t, &mut patched, opts.validation)?;
    let (operation, mode) = if ptype == PatchType::Apply {
        let set = ssa::applied_set(&doc);
        let now = time::rfc3339(time::now());
        let managed = ssa::apply(&old, &patched, &opts.manager, &av, &set, force, &now)?;
        set_meta(&mut patched, "managedFields", managed);
        ("Apply", Fields::Applied)
    } else {
        ("Update", Fields::Changed)
    };
    let updated = commit_update(
        ctx.state, &mut store, t, &old, patched, &opts, operation, None, mode,
    )?;
    Ok(Reply::json(200, &updated).with_warnings(&warnings))
}

/// `DeleteOptions`, from a non-empty body or else from the query, never both
/// (`handlers/delete.go`).
struct DeleteOpts {
    dry_run: bool,
    uid: Option<String>,
    resource_version: Option<String>,
    orphan: bool,
}

fn delete_opts(ctx: &Ctx<'_>) -> Result<DeleteOpts, ApiError> {
    if ctx.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DeleteOpts {
            dry_run: dry_run(ctx.query.all("dryRun"))?,
            uid: None,
            resource_version: None,
            orphan: ctx.query.get("propagationPolicy") == Some("Orphan")
                || ctx.query.flag("orphanDependents"),
        });
    }
    let v: Value = serde_json::from_slice(&ctx.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?;
    let dry: Vec<&str> = v
        .get("dryRun")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned);
    Ok(DeleteOpts {
        dry_run: dry_run(dry.into_iter())?,
        uid: s("/preconditions/uid"),
        resource_version: s("/preconditions/resourceVersion"),
        orphan: s("/propagationPolicy").as_deref() == Some("Orphan")
            || v.get("orphanDependents") == Some(&json!(true)),
    })
}

fn check_preconditions(t: &Target, o: &Value, opts: &DeleteOpts) -> Result<(), ApiError> {
    let name = meta_str(o, "name").unwrap_or("");
    if let Some(uid) = &opts.uid {
        let have = meta_str(o, "uid").unwrap_or("");
        if uid != have {
            return Err(ApiError::conflict(
                t.def,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                ),
            ));
        }
    }
    if let Some(rv) = &opts.resource_version {
        let have = meta_str(o, "resourceVersion").unwrap_or("");
        if rv != have {
            return Err(ApiError::conflict(
                t.def,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {have}"
                ),
            ));
        }
    }
    Ok(())
}

/// After a short `Terminating` phase, delete everything in the namespace, then the namespace
/// (what the namespace controller does).
fn finalize_namespace(state: Arc<State>, ns: String) {
    tokio::spawn(async move {
        tokio::time::sleep(NAMESPACE_FINALIZE_DELAY).await;
        let mut store = state.store.lock();
        let served = state.crds.served(&store);
        let contents = store.keys_where(|k| k.1 == ns && served.namespaced(k.0));
        for key in contents {
            store.remove(&key);
        }
        store.remove(&(namespaces_index(), String::new(), ns));
    });
}

/// Delete one object; returns what the API server answers with for it.
fn delete_one(
    state: &Arc<State>,
    store: &mut Inner,
    t: &Target,
    key: &Key,
    old: &Value,
    opts: &DeleteOpts,
) -> Value {
    let now = time::rfc3339(time::now());
    if is(t.def, "Namespace") {
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            return old.clone();
        }
        let mut marked = old.clone();
        set_meta(&mut marked, "deletionTimestamp", json!(now));
        if let Some(m) = marked.as_object_mut() {
            m.insert("status".to_owned(), json!({"phase": "Terminating"}));
        }
        if opts.dry_run {
            return marked;
        }
        let stored = store.put(key.clone(), marked);
        finalize_namespace(state.clone(), key.2.clone());
        return stored;
    }
    if is(t.def, "CustomResourceDefinition") {
        // Its objects go first (the cleanup finalizer), then the CRD itself.
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            return old.clone();
        }
        let mut marked = old.clone();
        set_meta(&mut marked, "deletionTimestamp", json!(now));
        set_meta(&mut marked, "deletionGracePeriodSeconds", json!(0));
        crd::mark_deleted(&mut marked, &now);
        if opts.dry_run {
            return marked;
        }
        let stored = store.put(key.clone(), marked);
        crd::clean_up(
            state.clone(),
            key.2.clone(),
            meta_str(&stored, "uid").unwrap_or("").to_owned(),
        );
        return stored;
    }
    let has_finalizers = old
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if has_finalizers {
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            return old.clone();
        }
        let mut marked = old.clone();
        set_meta(&mut marked, "deletionTimestamp", json!(now));
        set_meta(&mut marked, "deletionGracePeriodSeconds", json!(0));
        return if opts.dry_run {
            marked
        } else {
            store.put(key.clone(), marked)
        };
    }
    if opts.dry_run {
        return old.clone();
    }
    let removed = store.remove(key).unwrap_or_else(|| old.clone());
    if is(t.def, "Deployment") && !opts.orphan {
        cascade_deployment(store, &removed);
    }
    removed
}

/// The garbage collector's part: a deleted Deployment takes the pods its selector picks.
fn cascade_deployment(store: &mut Inner, deployment: &Value) {
    let (Some(pods), Some(ns)) = (
        catalog::index_of("Pod"),
        deployment
            .pointer("/metadata/namespace")
            .and_then(Value::as_str),
    ) else {
        return;
    };
    let Some(want) = deployment
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
    else {
        return;
    };
    let doomed: Vec<Key> = store
        .list(pods, Some(ns))
        .into_iter()
        .filter(|(_, p)| {
            want.iter()
                .all(|(k, v)| p.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(v))
        })
        .map(|(k, _)| k.clone())
        .collect();
    for key in doomed {
        store.remove(&key);
    }
}

pub fn delete(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let opts = delete_opts(ctx)?;
    let name = t.name.clone().unwrap_or_default();
    let key = t.key(&name);
    let mut store = ctx.state.store.lock();
    let old = store
        .get(&key)
        .cloned()
        .ok_or_else(|| ApiError::not_found(t.def, &name))?;
    check_preconditions(t, &old, &opts)?;
    let pending = is(t.def, "Namespace")
        || old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
    let result = delete_one(ctx.state, &mut store, t, &key, &old, &opts);
    if pending || t.def.returns_deleted_object {
        Ok(Reply::json(200, &result))
    } else {
        let uid = meta_str(&old, "uid");
        Ok(Reply::bytes(
            200,
            "application/json",
            crate::json::to_vec(&status::deleted(t.def, &name, uid)),
        ))
    }
}

pub fn delete_collection(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let opts = delete_opts(ctx)?;
    let filter = Filter::parse(ctx, t.def)?;
    let mut store = ctx.state.store.lock();
    let targets: Vec<(Key, Value)> = store
        .list(t.index, t.namespace.as_deref())
        .into_iter()
        .filter(|(_, o)| filter.matches(o))
        .map(|(k, o)| (k.clone(), o.clone()))
        .collect();
    let items: Vec<Value> = targets
        .iter()
        .map(|(key, old)| list_item(&delete_one(ctx.state, &mut store, t, key, old, &opts)))
        .collect();
    let list = json!({
        "kind": t.def.list_kind(),
        "apiVersion": t.def.api_version(),
        "metadata": {"resourceVersion": store.rv().to_string()},
        "items": items,
    });
    Ok(Reply::json(200, &list))
}
