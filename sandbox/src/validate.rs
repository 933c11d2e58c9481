//! Admission-time checks: decoding into the typed API objects (so a string where the API wants a
//! boolean is rejected as the API server rejects it), unknown fields (`fieldValidation`), names,
//! and the per-kind rules that the clients in our tests can run into.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use k8s_openapi::api::{apps, authentication, authorization, autoscaling, core, rbac};

use crate::catalog::ResourceDef;
use crate::status::{ApiError, FieldError};

fn round_trip<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

fn typed(kind: &str, v: &Value) -> Result<Value, String> {
    match kind {
        "ConfigMap" => round_trip::<core::v1::ConfigMap>(v),
        "Event" => round_trip::<core::v1::Event>(v),
        "Namespace" => round_trip::<core::v1::Namespace>(v),
        "Pod" => round_trip::<core::v1::Pod>(v),
        "Secret" => round_trip::<core::v1::Secret>(v),
        "ServiceAccount" => round_trip::<core::v1::ServiceAccount>(v),
        "Service" => round_trip::<core::v1::Service>(v),
        "Deployment" => round_trip::<apps::v1::Deployment>(v),
        "ClusterRole" => round_trip::<rbac::v1::ClusterRole>(v),
        "ClusterRoleBinding" => round_trip::<rbac::v1::ClusterRoleBinding>(v),
        "Role" => round_trip::<rbac::v1::Role>(v),
        "RoleBinding" => round_trip::<rbac::v1::RoleBinding>(v),
        "TokenRequest" => round_trip::<authentication::v1::TokenRequest>(v),
        "Scale" => round_trip::<autoscaling::v1::Scale>(v),
        "CustomResourceDefinition" => round_trip::<
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        >(v),
        "SelfSubjectAccessReview" => {
            round_trip::<authorization::v1::SelfSubjectAccessReview>(v)
        }
        "SelfSubjectRulesReview" => round_trip::<authorization::v1::SelfSubjectRulesReview>(v),
        "SubjectAccessReview" => round_trip::<authorization::v1::SubjectAccessReview>(v),
        "LocalSubjectAccessReview" => {
            round_trip::<authorization::v1::LocalSubjectAccessReview>(v)
        }
        _ => Ok(v.clone()),
    }
}

/// Paths present (and not null) in `input` but absent from `known`.
fn unknown_paths(input: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (input, known) {
        (Value::Object(i), Value::Object(k)) => {
            for (key, v) in i {
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match k.get(key) {
                    None if !v.is_null() => out.push(p),
                    Some(kv) => unknown_paths(v, kv, &p, out),
                    None => {}
                }
            }
        }
        (Value::Array(i), Value::Array(k)) => {
            for (n, (iv, kv)) in i.iter().zip(k).enumerate() {
                unknown_paths(iv, kv, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

/// Remove what `path` names from `v`. Paths come from `unknown_paths` here and from the CRD
/// schema walk (`crd.rs`): keys joined by `.`, indexes as `[n]`. Keys holding `.` (annotation
/// keys) are never unknown, since maps accept any key.
pub(crate) fn remove_path(v: &mut Value, path: &str) {
    let mut cur = v;
    let segments: Vec<&str> = path.split('.').collect();
    for (i, seg) in segments.iter().enumerate() {
        let (key, indexes) = match seg.find('[') {
            Some(p) => (&seg[..p], &seg[p..]),
            None => (*seg, ""),
        };
        let last = i + 1 == segments.len();
        if last && indexes.is_empty() {
            if let Some(m) = cur.as_object_mut() {
                m.remove(key);
            }
            return;
        }
        let Some(next) = cur.get_mut(key) else { return };
        cur = next;
        for idx in indexes.split('[').filter(|s| !s.is_empty()) {
            let Some(n) = idx.trim_end_matches(']').parse::<usize>().ok() else {
                return;
            };
            let Some(next) = cur.get_mut(n) else { return };
            cur = next;
        }
    }
}

fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// `fieldValidation`: what to do with unknown fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(v: Option<&str>) -> Result<FieldValidation, ApiError> {
        match v {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

/// Decode `object` as `kind` the way the API server's decoder does: type errors are 400, unknown
/// fields are dropped (with warnings returned) or, under `Strict`, 400.
pub fn decode(
    kind: &str,
    api_version: &str,
    object: &mut Value,
    mode: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    // Go's decoder reads `null` as the field's zero value: an unset field. Protobuf bodies
    // decoded to JSON carry such nulls for every unset timestamp and list.
    drop_nulls(object);
    let known = typed(kind, object).map_err(|e| {
        ApiError::bad_request(format!(
            "{kind} in version {:?} cannot be handled as a {kind}: {e}",
            api_version.rsplit('/').next().unwrap_or(api_version)
        ))
    })?;
    let mut unknown = Vec::new();
    unknown_paths(object, &known, "", &mut unknown);
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let messages: Vec<String> = unknown
        .iter()
        .map(|p| format!("unknown field {p:?}"))
        .collect();
    if mode == FieldValidation::Strict {
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            messages.join(", ")
        )));
    }
    for p in &unknown {
        remove_path(object, p);
    }
    Ok(if mode == FieldValidation::Warn {
        messages
    } else {
        Vec::new()
    })
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

/// The name rule of a kind (`ValidateObjectMeta` with the kind's name validator).
pub fn name_errors(def: &ResourceDef, name: &str) -> Vec<FieldError> {
    let bad = |msg: &str| vec![FieldError::invalid("metadata.name", json!(name), msg)];
    let kind = if def.is_custom() { "" } else { def.kind };
    match kind {
        "Namespace" if !is_label(name) => bad(LABEL_MSG),
        "Service" if !(is_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase())) => {
            bad(DNS1035_MSG)
        }
        "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => {
            if name == "." || name == ".." {
                bad(&format!("may not be '{name}'"))
            } else if let Some(c) = name.chars().find(|c| *c == '/' || *c == '%') {
                bad(&format!("may not contain '{c}'"))
            } else {
                Vec::new()
            }
        }
        "Namespace" | "Service" => Vec::new(),
        _ if !is_subdomain(name) => bad(SUBDOMAIN_MSG),
        _ => Vec::new(),
    }
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn is_config_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k != "."
        && k != ".."
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-._".contains(&c))
}

fn data_key_errors(o: &Value, field: &str, out: &mut Vec<FieldError>) {
    if let Some(m) = o.get(field).and_then(Value::as_object) {
        for k in m.keys() {
            if !is_config_key(k) {
                out.push(FieldError::invalid(
                    format!("{field}[{k}]"),
                    json!(k),
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                ));
            }
        }
    }
}

fn containers_errors(spec: &Value, prefix: &str, out: &mut Vec<FieldError>) {
    let containers = spec.get("containers").and_then(Value::as_array);
    match containers {
        None => out.push(FieldError::required(format!("{prefix}.containers"), "")),
        Some(list) if list.is_empty() => {
            out.push(FieldError::required(format!("{prefix}.containers"), ""));
        }
        Some(list) => {
            let mut seen = Vec::new();
            for (i, c) in list.iter().enumerate() {
                let name = s(c, "/name");
                let at = format!("{prefix}.containers[{i}]");
                if name.is_empty() {
                    out.push(FieldError::required(format!("{at}.name"), ""));
                } else if !is_label(name) {
                    out.push(FieldError::invalid(
                        format!("{at}.name"),
                        json!(name),
                        LABEL_MSG,
                    ));
                } else if seen.contains(&name) {
                    out.push(FieldError {
                        field: format!("{at}.name"),
                        kind: crate::status::FieldErrorKind::Invalid(json!(name)),
                        detail: "Duplicate value".to_owned(),
                    });
                }
                seen.push(name);
                if s(c, "/image").is_empty() {
                    out.push(FieldError::required(format!("{at}.image"), ""));
                }
            }
        }
    }
}

/// Per-kind validation of the object about to be stored; `old` is set on update.
pub fn object_errors(def: &ResourceDef, o: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut out = Vec::new();
    if def.is_custom() {
        return out;
    }
    match def.kind {
        "CustomResourceDefinition" => out.extend(crate::crd::errors(o)),
        "Pod" => containers_errors(o.get("spec").unwrap_or(&Value::Null), "spec", &mut out),
        "Deployment" => {
            let template = o.pointer("/spec/template/spec").unwrap_or(&Value::Null);
            containers_errors(template, "spec.template.spec", &mut out);
            match o.pointer("/spec/selector") {
                None => out.push(FieldError::required("spec.selector", "")),
                Some(sel) => {
                    let want = sel.get("matchLabels").and_then(Value::as_object);
                    let labels = o.pointer("/spec/template/metadata/labels");
                    let ok = want.is_some_and(|w| {
                        w.iter()
                            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
                    });
                    if !ok {
                        out.push(FieldError::invalid(
                            "spec.template.metadata.labels",
                            labels.cloned().unwrap_or(Value::Null),
                            "`selector` does not match template `labels`",
                        ));
                    }
                }
            }
            if o.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .is_some_and(|r| r < 0)
            {
                out.push(FieldError::invalid(
                    "spec.replicas",
                    o.pointer("/spec/replicas").cloned().unwrap_or(Value::Null),
                    "must be greater than or equal to 0",
                ));
            }
        }
        "Service" => {
            let typ = s(o, "/spec/type");
            if !["", "ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&typ) {
                out.push(FieldError::not_supported(
                    "spec.type",
                    json!(typ),
                    &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
                ));
            }
            let ports = o.pointer("/spec/ports").and_then(Value::as_array);
            if typ != "ExternalName"
                && ports.is_none_or(|p| p.is_empty())
                && s(o, "/spec/clusterIP") != "None"
            {
                out.push(FieldError::required("spec.ports", ""));
            }
            for (i, p) in ports.into_iter().flatten().enumerate() {
                let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    out.push(FieldError::invalid(
                        format!("spec.ports[{i}].port"),
                        json!(port),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
        "Secret" => {
            data_key_errors(o, "data", &mut out);
            let typ = s(o, "/type");
            let has = |k: &str| {
                o.pointer(&format!("/data/{}", k.replace('/', "~1")))
                    .is_some()
            };
            match typ {
                "kubernetes.io/tls" => {
                    for k in ["tls.crt", "tls.key"] {
                        if !has(k) {
                            out.push(FieldError::required(format!("data[{k}]"), ""));
                        }
                    }
                }
                "kubernetes.io/dockerconfigjson" if !has(".dockerconfigjson") => {
                    out.push(FieldError::required("data[.dockerconfigjson]", ""));
                }
                "kubernetes.io/service-account-token"
                    if s(
                        o,
                        "/metadata/annotations/kubernetes.io~1service-account.name",
                    )
                    .is_empty() =>
                {
                    out.push(FieldError::required(
                        "metadata.annotations[kubernetes.io/service-account.name]",
                        "",
                    ));
                }
                _ => {}
            }
            if let Some(old) = old {
                if s(old, "/type") != typ {
                    out.push(FieldError::invalid(
                        "type",
                        json!(typ),
                        "field is immutable",
                    ));
                }
                immutable_data(old, o, &["data"], &mut out);
            }
        }
        "ConfigMap" => {
            data_key_errors(o, "data", &mut out);
            data_key_errors(o, "binaryData", &mut out);
            if let Some(old) = old {
                immutable_data(old, o, &["data", "binaryData"], &mut out);
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let kinds: &[&str] = if def.kind == "RoleBinding" {
                &["ClusterRole", "Role"]
            } else {
                &["ClusterRole"]
            };
            if s(o, "/roleRef/name").is_empty() {
                out.push(FieldError::required("roleRef.name", ""));
            }
            let kind = s(o, "/roleRef/kind");
            if !kinds.contains(&kind) {
                out.push(FieldError::not_supported(
                    "roleRef.kind",
                    json!(kind),
                    kinds,
                ));
            }
            if let Some(old) = old
                && old.get("roleRef") != o.get("roleRef")
            {
                out.push(FieldError::invalid(
                    "roleRef",
                    o.get("roleRef").cloned().unwrap_or(Value::Null),
                    "cannot change roleRef",
                ));
            }
        }
        _ => {}
    }
    out
}

fn immutable_data(old: &Value, new: &Value, fields: &[&str], out: &mut Vec<FieldError>) {
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    if new.get("immutable").and_then(Value::as_bool) != Some(true) {
        out.push(FieldError::forbidden(
            "immutable",
            "field is immutable when `immutable` is set",
        ));
    }
    for f in fields {
        if old.get(*f) != new.get(*f) {
            out.push(FieldError::forbidden(
                *f,
                "field is immutable when `immutable` is set",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_and_unknown_fields() {
        let mut bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"hostPID": "true", "containers": []}});
        let e = decode("Pod", "v1", &mut bad, FieldValidation::Warn).err();
        assert_eq!(e.map(|e| e.code), Some(400));

        let mut extra = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"a": "eA=="}, "bogus": 1, "metadata2": null});
        let warnings =
            decode("Secret", "v1", &mut extra, FieldValidation::Warn).unwrap_or_default();
        assert_eq!(warnings, vec!["unknown field \"bogus\"".to_owned()]);
        assert!(extra.get("bogus").is_none());
        let mut strict =
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "labelz": {}}});
        let e = decode("Secret", "v1", &mut strict, FieldValidation::Strict).err();
        assert_eq!(
            e.map(|e| e.message),
            Some("strict decoding error: unknown field \"metadata.labelz\"".to_owned())
        );
    }

    #[test]
    fn names() {
        let (_, ns) =
            crate::catalog::find("", "v1", "namespaces").unwrap_or_else(|| unreachable!());
        assert!(name_errors(ns, "dev").is_empty());
        assert_eq!(name_errors(ns, "Dev").len(), 1);
        assert_eq!(name_errors(ns, "a.b").len(), 1);
    }
}
