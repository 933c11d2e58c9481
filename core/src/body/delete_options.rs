//! A DELETE's body, read as the `DeleteOptions` the API server decodes from it. The API server
//! then ignores the query's options entirely (`handlers/delete.go`;
//! `docs/kubernetes-semantics.md`, "DeleteOptions: the body overrides the query"), so the body
//! decides whether the delete is real.
//!
//! Only what kubectl and client-go send is accepted: the known fields with their JSON types,
//! `kind: DeleteOptions`, and nothing else. An unknown key (which the API server drops) could
//! be a spelling another reader takes for a known one (`DryRun`), so it is refused rather than
//! ignored.

use serde_json::Value;

use super::{BodyError, BodyLimits, decode};
use crate::request::{
    DELETE_OPTIONS_QUERY_KEYS, DeleteOptions, OptionsSource, PROPAGATION_POLICIES, QueryParams,
    Request,
};

/// The options a DELETE's non-empty `body` sets, which replace the query's.
///
/// Refused: a body on a request whose query carries `DeleteOptions` too (which the API server
/// would silently ignore), a body that is empty but for whitespace (the API server answers
/// 400), and anything [`decode`] refuses or that is not a `DeleteOptions` object.
pub(crate) fn from_body(request: &Request, body: &[u8]) -> Result<DeleteOptions, BodyError> {
    let in_query = request
        .facts
        .delete_options
        .as_ref()
        .is_some_and(|o| o.source == OptionsSource::Query);
    if in_query {
        let params = QueryParams::of_target(&request.target);
        let keys = DELETE_OPTIONS_QUERY_KEYS
            .iter()
            .filter(|k| params.first(k).is_some())
            .map(|k| (*k).to_string())
            .collect();
        return Err(BodyError::DeleteOptionsTwice { keys });
    }
    let Some(decoded) = decode(request, body, &BodyLimits::default())? else {
        return Err(invalid("the body is only whitespace".into()));
    };
    from_value(&decoded.value)
}

/// The options of a decoded `DeleteOptions` object.
pub(crate) fn from_value(value: &Value) -> Result<DeleteOptions, BodyError> {
    let Some(object) = value.as_object() else {
        return Err(invalid("the body is not a JSON object".into()));
    };
    let mut o = DeleteOptions {
        source: OptionsSource::Body,
        ..DeleteOptions::default()
    };
    for (key, v) in object {
        if v.is_null() {
            // Go leaves a pointer or slice field unset for `null`.
            continue;
        }
        match key.as_str() {
            "kind" => {
                if v.as_str() != Some("DeleteOptions") {
                    return Err(invalid(format!(
                        "`kind` is {}, not \"DeleteOptions\"",
                        shown(v)
                    )));
                }
            }
            "apiVersion" => {
                if !v.is_string() {
                    return Err(invalid(format!(
                        "`apiVersion` is {}, not a string",
                        shown(v)
                    )));
                }
            }
            "dryRun" => {
                let all = v
                    .as_array()
                    .is_some_and(|a| a.iter().all(|x| x.as_str() == Some("All")));
                if !all {
                    return Err(invalid(format!(
                        "`dryRun` is {}; it must be a list whose only value is \"All\"",
                        shown(v)
                    )));
                }
                o.dry_run = v.as_array().is_some_and(|a| !a.is_empty());
            }
            "propagationPolicy" => match v.as_str() {
                Some(p) if PROPAGATION_POLICIES.contains(&p) => {
                    o.propagation_policy = Some(p.into());
                }
                _ => {
                    return Err(invalid(format!(
                        "`propagationPolicy` is {}; it must be \"Orphan\", \"Background\" \
                         or \"Foreground\"",
                        shown(v)
                    )));
                }
            },
            "gracePeriodSeconds" => match v.as_i64() {
                Some(g) => o.grace_period_seconds = Some(g),
                None => {
                    return Err(invalid(format!(
                        "`gracePeriodSeconds` is {}, not a 64-bit integer",
                        shown(v)
                    )));
                }
            },
            "orphanDependents" => o.orphan_dependents = Some(boolean(key, v)?),
            "ignoreStoreReadErrorWithClusterBreakingPotential" => {
                o.ignore_store_read_error = Some(boolean(key, v)?);
            }
            "preconditions" => {
                let ok = v.as_object().is_some_and(|p| {
                    p.iter().all(|(k, x)| {
                        matches!(k.as_str(), "uid" | "resourceVersion")
                            && (x.is_string() || x.is_null())
                    })
                });
                if !ok {
                    return Err(invalid(format!(
                        "`preconditions` is {}; it must be an object with string `uid` and \
                         `resourceVersion`",
                        shown(v)
                    )));
                }
                o.preconditions = Some(v.clone());
            }
            other => {
                return Err(invalid(format!(
                    "it has the key `{}`, which is no DeleteOptions field",
                    super::error::Quoted(other)
                )));
            }
        }
    }
    Ok(o)
}

fn boolean(key: &str, v: &Value) -> Result<bool, BodyError> {
    v.as_bool()
        .ok_or_else(|| invalid(format!("`{key}` is {}, not a boolean", shown(v))))
}

/// A value from the body for a message: JSON text, escaped and shortened.
fn shown(v: &Value) -> String {
    super::error::Quoted(&v.to_string()).to_string()
}

fn invalid(problem: String) -> BodyError {
    BodyError::InvalidDeleteOptions { problem }
}
