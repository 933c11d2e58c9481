//! authorization.k8s.io: the access reviews `kubectl auth can-i` sends. The sandbox has no
//! authorization, so every review is allowed, answered in the shape kube-apiserver gives a
//! `system:masters` user: `status: {allowed: true}` with no reason, and for a rules review the
//! rules such a user has (`*` on everything).

use http::Method;
use serde_json::{Value, json};

use crate::fields;
use crate::negotiate::{self, BodyFormat};
use crate::reply::Reply;
use crate::status::{ApiError, FieldError};
use crate::time;
use crate::validate;

use super::write::{body_object, write_opts};
use super::{Ctx, Target};

const AV: &str = "authorization.k8s.io/v1";

fn invalid(field: &str, value: Value, detail: &str) -> ApiError {
    // The API server names no kind in these: `.authorization.k8s.io "" is invalid: ...`.
    ApiError::invalid_kind(
        "",
        crate::catalog::AUTHORIZATION,
        "",
        vec![FieldError::invalid(field, value, detail)],
    )
}

/// `POST` of a review. Anything else is 405, as the reviews are create-only.
pub fn handle(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    if ctx.method != Method::POST || t.name.is_some() {
        return Err(ApiError::method_not_allowed());
    }
    let opts = write_opts(ctx)?;
    let kind = t.def.kind;
    let protobuf = matches!(
        negotiate::body_format(ctx.header("content-type")),
        Ok(BodyFormat::Protobuf)
    );
    // kubectl sends its reviews as protobuf. Until the protobuf decoder knows these kinds, such
    // a review is answered (every review is allowed anyway) with the spec left empty.
    let review = match body_object(ctx, kind, AV) {
        Ok(mut v) => {
            validate::decode(kind, AV, &mut v, opts.validation)?;
            Some(v)
        }
        Err(e) if protobuf && e.code == 415 => None,
        Err(e) => return Err(e),
    };
    let spec = review
        .as_ref()
        .and_then(|r| r.get("spec").cloned())
        .unwrap_or_else(|| json!({}));
    if kind == "SelfSubjectRulesReview" {
        if review.is_some()
            && spec
                .get("namespace")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            return Err(ApiError::bad_request("no namespace on request"));
        }
        return Ok(Reply::json(201, &rules_review()));
    }
    if review.is_some() {
        let resource = spec.get("resourceAttributes").filter(|v| !v.is_null());
        let non_resource = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
        if resource.is_some() == non_resource.is_some() {
            return Err(invalid(
                "spec.resourceAttributes",
                resource.cloned().unwrap_or(Value::Null),
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ));
        }
        let has_subject = ["user", "groups"].iter().any(|k| {
            spec.get(*k).is_some_and(|v| {
                v.as_str().is_some_and(|s| !s.is_empty())
                    || v.as_array().is_some_and(|a| !a.is_empty())
            })
        });
        if kind != "SelfSubjectAccessReview" && !has_subject {
            return Err(invalid(
                "spec.user",
                json!(""),
                "at least one of user or group must be specified",
            ));
        }
    }
    let mut meta = json!({});
    if kind == "LocalSubjectAccessReview"
        && let Some(ns) = &t.namespace
    {
        meta["namespace"] = json!(ns);
    }
    let mut answer = json!({
        "kind": kind,
        "apiVersion": AV,
        "metadata": meta,
        "spec": spec,
        "status": {"allowed": true},
    });
    let mut set = fields::changed_fields(None, &json!({"spec": answer["spec"].clone()}));
    for attrs in ["f:resourceAttributes", "f:nonResourceAttributes"] {
        // Pointers to structs: owned as a whole too.
        if let Some(m) = set
            .get_mut("f:spec")
            .and_then(|s| s.get_mut(attrs))
            .and_then(Value::as_object_mut)
        {
            m.insert(".".to_owned(), json!({}));
        }
    }
    let now = time::rfc3339(time::now());
    fields::record(&mut answer, &opts.manager, "Update", AV, None, set, &now);
    Ok(Reply::json(201, &answer))
}

/// What kube-apiserver 1.34 answers a `system:masters` user's SelfSubjectRulesReview with.
fn rules_review() -> Value {
    let rule = |verbs: &[&str], groups: &[&str], resources: &[&str]| json!({"verbs": verbs, "apiGroups": groups, "resources": resources});
    let urls = |verbs: &[&str], urls: &[&str]| json!({"verbs": verbs, "nonResourceURLs": urls});
    json!({
        "kind": "SelfSubjectRulesReview",
        "apiVersion": AV,
        "metadata": {},
        "spec": {},
        "status": {
            "resourceRules": [
                rule(&["create"], &["authorization.k8s.io"], &["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
                rule(&["create"], &["authentication.k8s.io"], &["selfsubjectreviews"]),
                rule(&["*"], &["*"], &["*"]),
            ],
            "nonResourceRules": [
                urls(&["get"], &["/healthz", "/livez", "/readyz", "/version", "/version/"]),
                urls(&["get"], &["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"]),
                urls(&["*"], &["*"]),
            ],
            "incomplete": false,
        },
    })
}
