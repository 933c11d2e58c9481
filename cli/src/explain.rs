//! `kubeleash explain`: one request against every rule of a policy, in document order, with
//! whether each rule matched and why not, and the decision; for a person writing or checking a
//! policy. `--json` prints the same as one JSON object.

use std::path::PathBuf;
use std::process::ExitCode;

use kubeleash_core::policy::{Effect, Identity, RuleOutcome};

use crate::eval::request_inputs;
use crate::paint::Paint;
use crate::report::load_policy;

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
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// The HTTP method (GET, POST, PUT, PATCH, DELETE, ...).
    method: String,
    /// The request target as sent on the wire, percent-encoding kept.
    target: String,
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
    let evaluation = policy.evaluate(&identity, &a.method, &a.target, &headers, body.as_deref());
    let Some(request) = evaluation.request else {
        // Refused before any rule is read (a non-canonical target): no rule to explain.
        if a.json {
            println!(
                "{}",
                serde_json::json!({"rules": [], "decision": evaluation.decision})
            );
        } else {
            println!(
                "no rule was considered: {}\ndecision: deny",
                evaluation.decision.reason
            );
        }
        return ExitCode::SUCCESS;
    };
    let e = policy.explain(&identity, &request, body.as_deref());
    if a.json {
        match serde_json::to_string(&e) {
            Ok(line) => println!("{line}"),
            Err(err) => {
                eprintln!("error: cannot print the explanation: {err}");
                return ExitCode::from(1);
            }
        }
        return ExitCode::SUCCESS;
    }
    let p = Paint::stdout(false);
    let r = &request.attributes;
    println!(
        "{} {}  ({} as {})",
        p.bold(&a.method),
        a.target,
        describe(r),
        who(&identity)
    );
    let width = e
        .rules
        .iter()
        .map(|t| t.rule.len())
        .max()
        .unwrap_or(4)
        .max(4);
    for t in &e.rules {
        let mark = match t.outcome {
            RuleOutcome::Matches => p.ok("✓"),
            RuleOutcome::ConditionsFail | RuleOutcome::WildcardPrivileged => p.hold("~"),
            RuleOutcome::NoMatch => p.dim("✗"),
        };
        let at = t.at.map(|l| format!("line {}", l.line)).unwrap_or_default();
        let decides = if t.decides {
            format!("  {}", p.bold("← decides"))
        } else {
            String::new()
        };
        println!(
            "{mark} {:<width$}  {:<7}  {:<8}  {}{decides}",
            t.rule,
            t.effect.as_str(),
            at,
            t.why
        );
    }
    let d = &e.decision;
    let effect = match d.effect {
        Effect::Allow => p.ok("allow"),
        Effect::Deny => p.no("deny"),
        Effect::Approve => p.hold("approve"),
    };
    println!("decision: {effect}: {}", d.reason);
    ExitCode::SUCCESS
}

fn describe(a: &kubeleash_core::request::Attributes) -> String {
    if !a.resource_request {
        return format!("{} on {}", a.verb, a.path);
    }
    let mut s = format!("{} on {}", a.verb, a.combined_resource());
    if !a.api_group.is_empty() {
        s = format!("{} on {}.{}", a.verb, a.combined_resource(), a.api_group);
    }
    if !a.name.is_empty() {
        s.push_str(&format!(" named {}", a.name));
    }
    // A namespace's own namespace is its name.
    let namespace_object = a.api_group.is_empty() && a.resource == "namespaces";
    if !a.namespace.is_empty() && !namespace_object {
        s.push_str(&format!(" in namespace {}", a.namespace));
    }
    s
}

fn who(id: &Identity) -> String {
    let mut s = if id.user.is_empty() {
        "the anonymous user".to_string()
    } else {
        format!("user {}", id.user)
    };
    if !id.groups.is_empty() {
        s.push_str(&format!(" in groups [{}]", id.groups.join(", ")));
    }
    s
}
