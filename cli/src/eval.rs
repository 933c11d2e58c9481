//! `kubeleash eval`: one request, one decision, printed as JSON.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use kubeleash_core::policy::Effect;
use kubeleash_core::policy::Identity;
use kubeleash_core::request::Attributes;
use serde::Serialize;

use crate::report::{USAGE, load_policy, lower};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy file (YAML or JSON).
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// The user the request comes from.
    #[arg(long, value_name = "NAME", default_value = "")]
    user: String,
    /// A group the user belongs to; repeat for several.
    #[arg(long = "group", value_name = "NAME")]
    groups: Vec<String>,
    /// A request header, as `Name: value`; repeat for several.
    #[arg(long = "header", value_name = "'Name: value'")]
    headers: Vec<String>,
    /// A file holding the request body (`-` reads standard input).
    #[arg(long, value_name = "FILE")]
    body: Option<PathBuf>,
    /// The HTTP method (GET, POST, PUT, PATCH, DELETE, ...).
    method: String,
    /// The request target as sent on the wire, percent-encoding kept (`/api/v1/namespaces/dev/pods?watch=1`).
    target: String,
}

/// The decision as `kubeleash eval` prints it, keys in this order.
#[derive(Serialize)]
struct Output<'a> {
    effect: Effect,
    rule: Option<&'a str>,
    reason: &'a str,
    request: Option<&'a Attributes>,
}

pub fn parse_headers(raw: &[String]) -> Result<http::HeaderMap, String> {
    let mut headers = http::HeaderMap::new();
    for h in raw {
        let Some((name, value)) = h.split_once(':') else {
            return Err(format!("header `{h}` is not `Name: value`"));
        };
        let name = http::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
            format!(
                "header name `{}` is not a valid HTTP header name",
                name.trim()
            )
        })?;
        let value = http::HeaderValue::from_str(value.trim())
            .map_err(|_| format!("header `{h}` has a value that is not valid in HTTP"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

fn read_body(path: &PathBuf) -> Result<Vec<u8>, String> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map_err(|e| {
            format!(
                "cannot read the body from standard input: {}",
                lower(&e.to_string())
            )
        })?;
        Ok(buf)
    } else {
        std::fs::read(path).map_err(|e| {
            format!(
                "cannot read body file `{}`: {}",
                path.display(),
                lower(&e.to_string())
            )
        })
    }
}

/// The request a command decides: its headers (`Name: value`) and its body (a file, `-` for
/// standard input); what is wrong is printed, and the exit code for it returned.
pub(crate) fn request_inputs(
    headers: &[String],
    body: Option<&PathBuf>,
) -> Result<(http::HeaderMap, Option<Vec<u8>>), ExitCode> {
    let usage = |e: String| {
        eprintln!("error: {e}");
        ExitCode::from(USAGE)
    };
    let headers = parse_headers(headers).map_err(usage)?;
    let body = body.map(read_body).transpose().map_err(usage)?;
    Ok((headers, body))
}

pub fn run(a: Args) -> ExitCode {
    let policy = match load_policy(&a.policy) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let (headers, body) = match request_inputs(&a.headers, a.body.as_ref()) {
        Ok(inputs) => inputs,
        Err(code) => return code,
    };
    let identity = Identity::new(a.user, a.groups);
    let eval = policy.evaluate(&identity, &a.method, &a.target, &headers, body.as_deref());
    let out = Output {
        effect: eval.decision.effect,
        rule: eval.decision.rule.as_deref(),
        reason: &eval.decision.reason,
        request: eval.request.as_ref().map(|r| &r.attributes),
    };
    match serde_json::to_string(&out) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("error: cannot print the decision: {e}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}
