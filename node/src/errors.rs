//! Errors as JavaScript sees them: real `Error` objects with a stable `code`, and for policy
//! errors every problem in the shape the Python binding reports (message, help, code,
//! location).

use kubeleash_core::mask::MaskError;
use kubeleash_core::policy::{PolicyError, PolicyErrors};
use kubeleash_core::request::NonCanonical;
use napi::bindgen_prelude::{Buffer, Object};
use napi::{Env, Error, JsTypeError, JsValue, Status};
use napi_derive::napi;

/// Where in the policy text a problem is: 1-based line and column.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct Location {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

/// One problem in a policy, as `PolicyError.errors` lists it.
#[napi(object, use_nullable = true)]
#[derive(Debug, Clone)]
pub struct PolicyErrorDetail {
    /// What is wrong, in lowercase, with the offending input quoted.
    pub message: String,
    /// How to fix it, when there is more to say than the message.
    pub help: Option<String>,
    /// A stable, machine-readable code (`yaml-syntax`, `unknown-verb`, ...).
    pub code: String,
    /// Line and column of the offending node, when known.
    pub location: Option<Location>,
}

impl From<&PolicyError> for PolicyErrorDetail {
    fn from(e: &PolicyError) -> Self {
        PolicyErrorDetail {
            message: e.message().to_string(),
            help: e.help_text().map(str::to_string),
            code: e.code().to_string(),
            location: e.location().map(|l| Location {
                line: u32::try_from(l.line).unwrap_or(u32::MAX),
                column: u32::try_from(l.column).unwrap_or(u32::MAX),
            }),
        }
    }
}

/// An `Error` named `name` with `code`, plus whatever `extra` sets on it. Falls back to a plain
/// napi error if the object cannot be built (the environment is tearing down).
fn error_with(
    env: &Env,
    name: &str,
    code: &str,
    message: &str,
    extra: impl FnOnce(&mut Object<'_>) -> napi::Result<()>,
) -> Error {
    let built = (|| {
        let mut obj = env.create_error(Error::new(Status::GenericFailure, message))?;
        obj.set("name", name)?;
        obj.set("code", code)?;
        extra(&mut obj)?;
        Ok::<_, Error>(Error::from(obj.to_unknown()))
    })();
    built.unwrap_or_else(|e: Error| e)
}

/// `PolicyError`: the policy does not compile (`code: 'policy-invalid'`); `errors` holds every
/// problem with its location.
pub fn policy_errors(env: &Env, errs: &PolicyErrors) -> Error {
    let details: Vec<PolicyErrorDetail> = errs.errors().iter().map(Into::into).collect();
    error_with(
        env,
        "PolicyError",
        "policy-invalid",
        &errs.to_string(),
        |o| o.set("errors", details),
    )
}

/// `PolicyError` with `code: 'policy-read'`: the policy file cannot be read.
pub fn policy_read(env: &Env, path: &str, e: &std::io::Error) -> Error {
    let message = format!(
        "cannot read policy file `{path}`: {}",
        e.to_string().to_lowercase()
    );
    let detail = PolicyErrorDetail {
        message: message.clone(),
        help: None,
        code: "policy-read".to_string(),
        location: None,
    };
    error_with(env, "PolicyError", "policy-read", &message, |o| {
        o.set("errors", vec![detail])
    })
}

/// `MaskError`: the masker stopped (`code` is the core's: `malformed`, `content-type`, ...).
/// `safe` holds the bytes that were safe to emit before it stopped (the Python binding's
/// `MaskError.safe`).
pub fn mask_error(env: &Env, e: &MaskError, safe: Vec<u8>) -> Error {
    error_with(env, "MaskError", e.code(), &e.to_string(), |o| {
        o.set("safe", Buffer::from(safe))
    })
}

/// A `TypeError` with a stable code, for arguments JavaScript passed wrongly.
pub fn type_error(env: &Env, code: &str, message: &str) -> Error {
    let built = (|| {
        let err = JsTypeError::from(Error::new(Status::InvalidArg, message));
        let value = err.into_unknown(*env);
        let mut obj = value.coerce_to_object()?;
        obj.set("code", code)?;
        Ok::<_, Error>(Error::from(obj.to_unknown()))
    })();
    built.unwrap_or_else(|e: Error| e)
}

/// An `Error` with a stable code and nothing more.
pub fn plain(env: &Env, code: &str, message: &str) -> Error {
    error_with(env, "Error", code, message, |_| Ok(()))
}

/// `RequestError`: the request target is not canonical (`code` is the refusal's).
pub fn refused(env: &Env, e: &NonCanonical) -> Error {
    error_with(env, "RequestError", e.code(), &e.to_string(), |_| Ok(()))
}
