//! `Status` objects: the API server's error shape, and the success shape some deletes return.

use serde::Serialize;
use serde_json::Value;

use crate::catalog::ResourceDef;

/// A failed request, written as a `Status` with the same message, reason, details and code the
/// API server uses for the same failure.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// Boxed: errors travel in every `Result` of the request path and most carry no details.
    pub details: Option<Box<Details>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Details {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<Cause>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cause {
    pub reason: &'static str,
    pub message: String,
    pub field: String,
}

/// One field-level validation failure (`k8s.io/apimachinery/pkg/util/validation/field.Error`).
#[derive(Debug, Clone)]
pub struct FieldError {
    pub field: String,
    pub kind: FieldErrorKind,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub enum FieldErrorKind {
    Required,
    /// Holds the offending value.
    Invalid(Value),
    Forbidden,
    NotSupported(Value),
    /// A value of the wrong JSON type; holds the type it had.
    TypeInvalid(Value),
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Required,
            detail: detail.into(),
        }
    }

    pub fn invalid(field: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Invalid(value),
            detail: detail.into(),
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Forbidden,
            detail: detail.into(),
        }
    }

    pub fn not_supported(field: impl Into<String>, value: Value, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::NotSupported(value),
            detail: format!("supported values: {}", list.join(", ")),
        }
    }

    fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid(_) => "FieldValueInvalid",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::NotSupported(_) => "FieldValueNotSupported",
            FieldErrorKind::TypeInvalid(_) => "FieldValueTypeInvalid",
        }
    }

    /// `ErrorBody()`: the message without the field path.
    fn body(&self) -> String {
        let head = match &self.kind {
            FieldErrorKind::Required => "Required value".to_owned(),
            FieldErrorKind::Forbidden => "Forbidden".to_owned(),
            FieldErrorKind::Invalid(v) | FieldErrorKind::TypeInvalid(v) => {
                format!("Invalid value: {}", go_value(v))
            }
            FieldErrorKind::NotSupported(v) => format!("Unsupported value: {}", go_value(v)),
        };
        if self.detail.is_empty() {
            head
        } else {
            format!("{head}: {}", self.detail)
        }
    }
}

/// How `field.Error` prints a value: strings quoted, numbers and booleans bare.
fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".to_owned(),
        other => other.to_string(),
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Details) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    fn resource_details(def: &ResourceDef, name: &str) -> Details {
        Details {
            name: Some(name.to_owned()),
            group: (!def.group.is_empty()).then(|| def.group.to_owned()),
            kind: Some(def.plural.to_owned()),
            ..Details::default()
        }
    }

    pub fn not_found(def: &ResourceDef, name: &str) -> Self {
        ApiError::new(
            404,
            "NotFound",
            format!("{} {name:?} not found", def.qualified()),
        )
        .with_details(ApiError::resource_details(def, name))
    }

    /// A path no route serves.
    pub fn no_route() -> Self {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(Details::default())
    }

    pub fn already_exists(def: &ResourceDef, name: &str) -> Self {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} {name:?} already exists", def.qualified()),
        )
        .with_details(ApiError::resource_details(def, name))
    }

    pub fn conflict(def: &ResourceDef, name: &str, why: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: {why}",
                def.qualified()
            ),
        )
        .with_details(ApiError::resource_details(def, name))
    }

    /// An apply that would change fields other managers own (`NewApplyConflict`): each cause is
    /// (message, field path).
    pub fn apply_conflict(message: String, causes: Vec<(String, String)>) -> Self {
        ApiError::new(409, "Conflict", message).with_details(Details {
            causes: causes
                .into_iter()
                .map(|(message, field)| Cause {
                    reason: "FieldManagerConflict",
                    message,
                    field,
                })
                .collect(),
            ..Details::default()
        })
    }

    /// The optimistic-concurrency failure of an update with a stale `resourceVersion`.
    pub fn stale(def: &ResourceDef, name: &str) -> Self {
        ApiError::conflict(
            def,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn forbidden(def: &ResourceDef, name: &str, why: &str) -> Self {
        let what = if name.is_empty() {
            def.qualified()
        } else {
            format!("{} {name:?}", def.qualified())
        };
        ApiError::new(403, "Forbidden", format!("{what} is forbidden: {why}"))
            .with_details(ApiError::resource_details(def, name))
    }

    /// 422 with field causes, formatted as `errors.NewInvalid` does.
    pub fn invalid(def: &ResourceDef, name: &str, errors: Vec<FieldError>) -> Self {
        ApiError::invalid_kind(def.kind, def.group, name, errors)
    }

    /// 422 for any kind, including option kinds such as `PatchOptions` in `meta.k8s.io`.
    pub fn invalid_kind(kind: &str, group: &str, name: &str, errors: Vec<FieldError>) -> Self {
        let qualified = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        let lines: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.body()))
            .collect();
        let joined = match lines.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let causes = errors
            .iter()
            .map(|e| Cause {
                reason: e.reason(),
                message: e.body(),
                field: e.field.clone(),
            })
            .collect();
        ApiError::new(
            422,
            "Invalid",
            format!("{qualified} {name:?} is invalid: {joined}"),
        )
        .with_details(Details {
            name: (!name.is_empty()).then(|| name.to_owned()),
            group: (!group.is_empty()).then(|| group.to_owned()),
            kind: (!kind.is_empty()).then(|| kind.to_owned()),
            causes,
            ..Details::default()
        })
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed() -> Self {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_details(Details::default())
    }

    pub fn not_acceptable(message: impl Into<String>) -> Self {
        ApiError::new(406, "NotAcceptable", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        ApiError::new(415, "UnsupportedMediaType", message)
    }

    pub fn expired(message: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", message)
    }

    pub fn too_large() -> Self {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!(
                "Request entity too large: limit is {}",
                kubeleash_core::body::MAX_BODY_BYTES
            ),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Status {
        Status {
            kind: "Status",
            api_version: "v1",
            metadata: EmptyMeta {},
            status: "Failure",
            message: Some(self.message.clone()),
            reason: Some(self.reason),
            details: self.details.as_deref().cloned(),
            code: Some(self.code),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct EmptyMeta {}

/// `meta/v1 Status`, in the API server's field order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    kind: &'static str,
    api_version: &'static str,
    metadata: EmptyMeta,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
}

/// What deleting one object of a kind without `ReturnDeletedObject` answers.
pub fn deleted(def: &ResourceDef, name: &str, uid: Option<&str>) -> Status {
    Status {
        kind: "Status",
        api_version: "v1",
        metadata: EmptyMeta {},
        status: "Success",
        message: None,
        reason: None,
        details: Some(Details {
            uid: uid.map(str::to_owned),
            ..ApiError::resource_details(def, name)
        }),
        code: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

    #[test]
    fn not_found_matches_the_api_server() {
        let (_, secrets) = catalog::find("", "v1", "secrets").unwrap_or_else(|| unreachable!());
        let got = String::from_utf8(crate::json::to_vec(
            &ApiError::not_found(secrets, "db").to_status(),
        ))
        .unwrap_or_default();
        assert_eq!(
            got,
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"secrets \"db\" not found","reason":"NotFound","details":{"name":"db","kind":"secrets"},"code":404}"#
        );
    }

    #[test]
    fn invalid_lists_causes() {
        let (_, pods) = catalog::find("", "v1", "pods").unwrap_or_else(|| unreachable!());
        let e = ApiError::invalid(
            pods,
            "p",
            vec![
                FieldError::required("spec.containers[0].image", ""),
                FieldError::invalid("metadata.name", Value::from("A"), "must be lowercase"),
            ],
        );
        assert_eq!(
            e.message,
            r#"Pod "p" is invalid: [spec.containers[0].image: Required value, metadata.name: Invalid value: "A": must be lowercase]"#
        );
    }
}
