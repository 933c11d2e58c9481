//! `kubeleash replay`: a recorded session as a timeline of the kubectl commands it amounts to,
//! with the chain of hashes checked.

use std::path::PathBuf;
use std::process::ExitCode;

use kubeleash_core::kubectl;
use kubeleash_core::record::{Record, audit_event, verify};
use kubeleash_core::request::classify;

use crate::report::{USAGE, lower};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// A timeline: time, identity, decision, kubectl command.
    Kubectl,
    /// The records themselves, one JSON object per line.
    Json,
    /// Kubernetes audit events (`audit.k8s.io/v1`), one per line.
    Audit,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The record file (JSON Lines).
    file: PathBuf,
    /// Check the chain of hashes; exit 1 naming the first record that does not fit, or when the
    /// log was cut short (a torn last line, no closing record).
    #[arg(long)]
    verify: bool,
    /// With --verify: accept a log whose recorder is still running (no closing record yet).
    #[arg(long)]
    allow_open: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "kubectl")]
    format: Format,
    /// Only requests from this user or group.
    #[arg(long, value_name = "NAME")]
    identity: Option<String>,
    /// Only these decisions: an effect (allow, deny, approve) or an outcome (forwarded, refused,
    /// held, approved, audited).
    #[arg(long, value_name = "DECISION")]
    decision: Option<String>,
    /// Only records at or after this time (RFC 3339, e.g. 2026-11-27T10:00:00Z).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only records before this time.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
}

/// The kubectl command a record amounts to, or its raw method and target.
pub fn command(r: &Record) -> String {
    let q = &r.body.request;
    let mut headers = http::HeaderMap::new();
    if let Some(ct) = q
        .content_type
        .as_deref()
        .and_then(|c| http::HeaderValue::from_str(c).ok())
    {
        headers.insert(http::header::CONTENT_TYPE, ct);
    }
    if let Some(u) = q.upgrade.as_deref() {
        let value = if u == "spdy" { "SPDY/3.1" } else { u };
        if let Ok(v) = http::HeaderValue::from_str(value) {
            headers.insert(http::header::UPGRADE, v);
        }
    }
    match classify(&q.method, &q.target, &headers) {
        Ok(req) => kubectl::command(&req),
        Err(_) => format!("{} {}", q.method, q.target),
    }
}

/// A record's decision, as the timeline says it.
pub fn decision_text(r: &Record) -> String {
    let d = &r.body.decision;
    let rule = d
        .rule
        .as_deref()
        .map(|r| format!(" by rule {r}"))
        .unwrap_or_default();
    match r.body.kind.as_str() {
        "held" => format!(
            "held for approval {}{rule}",
            d.approval_id.as_deref().unwrap_or_default()
        ),
        "approval" => format!("approved by {}", d.approver.as_deref().unwrap_or("?")),
        _ => match d.outcome.as_str() {
            "refused" => {
                let by = d
                    .approver
                    .as_deref()
                    .map(|a| format!(", approval denied by {a}"))
                    .unwrap_or_default();
                format!("DENIED{rule}{by}")
            }
            "approved" => format!(
                "allowed after approval by {}",
                d.approver.as_deref().unwrap_or("?")
            ),
            "audited" => format!("allowed in audit mode (policy: {}{rule})", d.effect),
            _ => format!("allowed{rule}"),
        },
    }
}

fn keep(r: &Record, a: &Args) -> bool {
    if r.body.kind == "end" {
        return false;
    }
    let who = &r.body.identity;
    let d = &r.body.decision;
    a.identity
        .as_ref()
        .is_none_or(|i| who.user == *i || who.groups.contains(i))
        && a.decision
            .as_ref()
            .is_none_or(|x| d.effect == *x || d.outcome == *x || r.body.kind == *x)
        && a.since
            .as_ref()
            .is_none_or(|s| r.body.time.as_str() >= s.as_str())
        && a.until
            .as_ref()
            .is_none_or(|u| r.body.time.as_str() < u.as_str())
}

pub fn run(a: Args) -> ExitCode {
    let log = match std::fs::read_to_string(&a.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "error: cannot read `{}`: {}",
                a.file.display(),
                lower(&e.to_string())
            );
            return ExitCode::from(USAGE);
        }
    };
    let v = verify(&log);
    for w in &v.warnings {
        eprintln!("warning: {w}");
    }
    for (line, p) in &v.problems {
        eprintln!("{}:{line}: chain broken: {p}", a.file.display());
    }
    for r in v.records.iter().filter(|r| keep(r, &a)) {
        match a.format {
            Format::Json => println!("{}", serde_json::to_string(r).unwrap_or_default()),
            Format::Audit => println!("{}", audit_event(r)),
            Format::Kubectl => {
                let who = if r.body.identity.user.is_empty() {
                    "anonymous"
                } else {
                    &r.body.identity.user
                };
                println!("{}  {who}  {}", r.body.time, decision_text(r));
                let cmd = command(r);
                match r
                    .body
                    .request
                    .body
                    .as_deref()
                    .filter(|_| cmd.contains(" -f -") || cmd.contains("$(cat)"))
                {
                    Some(body) => println!("    {cmd} <<'EOF'\n{body}\nEOF"),
                    None => println!("    {cmd}"),
                }
            }
        }
    }
    if a.verify {
        let cut_short = v
            .warnings
            .iter()
            .any(|w| w.contains("torn") || (!a.allow_open && w.contains("no closing record")));
        if !v.problems.is_empty() {
            return ExitCode::from(1);
        }
        if cut_short {
            eprintln!("error: the log was cut short (see the warnings above)");
            return ExitCode::from(1);
        }
        eprintln!("verified: {} records, chain intact", v.records.len());
    } else if !v.problems.is_empty() {
        eprintln!("warning: the chain of hashes is broken (run with --verify for the exit code)");
    }
    ExitCode::SUCCESS
}
