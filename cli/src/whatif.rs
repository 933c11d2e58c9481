//! `kubeleash whatif --policy NEW RECORD...`: every recorded request the new policy would decide
//! differently from the policy that was in force, as a table (or JSON), with an exit status for
//! CI: 0 when nothing changes, 1 when something does, 2 for bad usage or a policy that does not
//! compile. A gate for policy changes: run it over yesterday's sessions before merging.
//!
//! Each request is classified again from its method and target (with its content type and
//! upgrade) and decided with its recorded body. A recorded body is masked: where it carries
//! mask markers the request is decided on its verb and target alone (said in the output), since
//! a policy refuses writes that carry markers. Kubeleash's own answers (access reviews) and
//! refusals by limits (413, 429, 503, ...) are not policy decisions and are left out.

use std::path::PathBuf;
use std::process::ExitCode;

use kubeleash_core::display::printable;
use kubeleash_core::policy::{Policy, mask_marker_in};
use kubeleash_core::record::{Outcome, Record, RecordKind};
use serde::Serialize;

use crate::replay::command;
use crate::report::{USAGE, load_policy};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The new policy (YAML or JSON).
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Records written by `kubeleash proxy --record` (or the tower layer's recorder).
    #[arg(required = true, value_name = "RECORD")]
    records: Vec<PathBuf>,
}

/// A decision as the table and the JSON show it.
#[derive(Debug, Clone, Serialize)]
struct Side {
    effect: String,
    rule: Option<String>,
}

/// One request whose decision changes.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Change {
    file: String,
    seq: u64,
    user: String,
    groups: Vec<String>,
    method: String,
    target: String,
    kubectl: String,
    before: Side,
    after: Side,
    reason: String,
    /// `body` or `attributes` (the recorded body is masked, so only verb and target were judged).
    judged_on: &'static str,
}

#[derive(Serialize)]
struct Report {
    requests: usize,
    changed: Vec<Change>,
}

pub fn run(a: Args) -> ExitCode {
    let policy = match load_policy(&a.policy) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut report = Report {
        requests: 0,
        changed: Vec::new(),
    };
    for file in &a.records {
        let v = match crate::replay::read_verified(file) {
            Ok(v) => v,
            Err(code) => return code,
        };
        for r in &v.records {
            if let Some(c) = again(&policy, r, file) {
                report.requests += 1;
                if let Some(change) = c {
                    report.changed.push(change);
                }
            }
        }
    }
    if a.json {
        match serde_json::to_string(&report) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("error: cannot print the report: {e}");
                return ExitCode::from(USAGE);
            }
        }
    } else {
        print_table(&report);
    }
    if report.changed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `None` when the record is not a policy decision; `Some(None)` when the new policy decides it
/// the same; `Some(Some(change))` otherwise.
fn again(policy: &Policy, r: &Record, file: &std::path::Path) -> Option<Option<Change>> {
    let b = &r.body;
    let d = &b.decision;
    if b.kind != RecordKind::Request || d.outcome == Outcome::Answered {
        return None;
    }
    b.request.attributes.as_ref()?;
    // A refusal by a limit (body size, held requests, the recorder) is not the policy's.
    if d.outcome == Outcome::Refused
        && d.rule.is_none()
        && b.response.as_ref().is_some_and(|x| x.status != 403)
    {
        return None;
    }
    let mut headers = http::HeaderMap::new();
    // The record keeps a body as JSON text whatever it was sent as: a protobuf or CBOR body is
    // read back as the JSON (or apply YAML) it was recorded as.
    let content_type = b.request.content_type.as_deref().map(|c| {
        let media = c.split(';').next().unwrap_or(c).trim();
        match media {
            "application/vnd.kubernetes.protobuf" | "application/cbor" => "application/json",
            "application/apply-patch+cbor" => "application/apply-patch+yaml",
            _ => c,
        }
    });
    if let Some(ct) = content_type.and_then(|c| http::HeaderValue::from_str(c).ok()) {
        headers.insert(http::header::CONTENT_TYPE, ct);
    }
    if let Some(u) = b
        .request
        .upgrade
        .as_deref()
        .and_then(|u| http::HeaderValue::from_str(u).ok())
    {
        headers.insert(http::header::UPGRADE, u);
        headers.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("Upgrade"),
        );
    }
    let request =
        kubeleash_core::request::classify(&b.request.method, &b.request.target, &headers).ok()?;
    let body = b.request.body.as_deref().filter(|t| !t.is_empty());
    let masked = body.is_some_and(|t| mask_marker_in(t.as_bytes()).is_some());
    let (after, reason, judged_on) = if masked {
        let answer = policy.review_access(&b.identity, &request.attributes);
        if answer.conditional.is_empty() {
            let after = Side {
                effect: answer.effect.as_str().to_string(),
                rule: answer.rule.map(|x| x.to_string()),
            };
            (after, answer.reason, "attributes")
        } else {
            // Conditions on a body the record keeps masked: what the new policy does cannot
            // be told, so it is reported (a planted marker must not hide a change).
            let after = Side {
                effect: "undetermined".into(),
                rule: None,
            };
            let reason = format!(
                "the new policy's conditions look at the body, which the record keeps masked: {}",
                answer.reason
            );
            (after, reason, "attributes")
        }
    } else {
        let decision = policy.decide(&b.identity, &request, body.map(str::as_bytes));
        let after = Side {
            effect: decision.effect.as_str().to_string(),
            rule: decision.rule.map(|x| x.to_string()),
        };
        (after, decision.reason, "body")
    };
    // The decision is its effect: another rule with the same effect changes nothing the
    // agent sees.
    if after.effect == d.effect {
        return Some(None);
    }
    Some(Some(Change {
        file: file.display().to_string(),
        seq: r.seq,
        user: b.identity.user.clone(),
        groups: b.identity.groups.clone(),
        method: b.request.method.clone(),
        target: b.request.target.clone(),
        kubectl: command(r),
        before: Side {
            effect: d.effect.clone(),
            rule: d.rule.clone(),
        },
        after,
        reason,
        judged_on,
    }))
}

fn side(s: &Side) -> String {
    match &s.rule {
        Some(r) => format!("{} ({r})", s.effect),
        None => s.effect.clone(),
    }
}

fn print_table(r: &Report) {
    if r.changed.is_empty() {
        println!(
            "no change: the new policy decides all {} recorded requests as they were decided",
            r.requests
        );
        return;
    }
    let rows: Vec<[String; 5]> = r
        .changed
        .iter()
        .map(|c| {
            [
                c.seq.to_string(),
                printable(&c.user).into_owned(),
                printable(&c.kubectl).into_owned(),
                side(&c.before),
                format!(
                    "{}{}",
                    side(&c.after),
                    if c.judged_on == "attributes" {
                        " (verb and target only: the recorded body is masked)"
                    } else {
                        ""
                    }
                ),
            ]
        })
        .collect();
    let head = ["SEQ", "WHO", "REQUEST", "BEFORE", "AFTER"];
    let mut width = head.map(str::len);
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == 4 {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  ", w = width[i]));
            }
        }
        s
    };
    println!("{}", line(head));
    for row in &rows {
        println!("{}", line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
    }
    println!(
        "{} of {} recorded requests would be decided differently",
        r.changed.len(),
        r.requests
    );
}
