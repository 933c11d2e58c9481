//! `kubeleash replay`: a recorded session as a timeline of the kubectl commands it amounts to,
//! with the chain of hashes checked; or, read from the same record, approval-fatigue figures
//! (`--approvals`, [`approvals`]) and the widened grants as a reviewable policy change
//! (`--grants`, [`grants`]); or the session as one HTML page for a person (`--html`, [`html`]).

mod approvals;
mod diff;
mod grants;
mod html;
mod shipped;
mod yaml;

use kubeleash_core::record::{Outcome, RecordKind};
use std::path::PathBuf;
use std::process::ExitCode;

use kubeleash_core::display::{printable, shell_word};
use kubeleash_core::kubectl;
use kubeleash_core::record::{Record, audit_event, verify, verify_signed};
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
    /// With --verify: accept a log whose recorder is still running: no closing record yet, and
    /// a last line it may be writing at this moment (torn, and left out).
    #[arg(long)]
    allow_open: bool,
    /// Check the record's signatures with this public key (the `.pub` file beside the proxy's
    /// --signing-key); repeat for the keys of a rotation. With --verify: exit 1 when a
    /// checkpoint was not made by one of them or does not fit what it signs, when the record
    /// has none, or when records follow the last one (unless --allow-open).
    #[arg(long = "key", value_name = "PUBLIC_KEY")]
    keys: Vec<PathBuf>,
    /// With --key: accept, as warnings, what a recorder that resumed the log could not vouch
    /// for: records it signed only then (a crash had left them unsigned) and a session before
    /// it that stopped without a signed close (records may be missing there). Whoever could
    /// write the file while no recorder ran could have changed those.
    #[arg(long, requires = "keys")]
    allow_resumed: bool,
    /// With --verify and --session: also check the file against a copy of what `kubeleash
    /// ship` already sent from it (what the audit webhook or OTLP receiver kept: EventLists,
    /// events, OTLP log records, as JSON values); exit 1 when a record shipped of those sessions
    /// is not in the file, or is there with another hash (the file was cut, rewritten or
    /// replaced after it was shipped, even by whoever holds the signing key). Repeat for more
    /// copies.
    #[arg(long, value_name = "COPY", requires_all = ["verify", "sessions"])]
    shipped: Vec<PathBuf>,
    /// With --shipped: a session the file must be (the replica's --record-session; in the
    /// chart, the pod's name); repeat for a log several sessions wrote. The copy must hold
    /// records of it, and the file every one of them.
    #[arg(long = "session", value_name = "NAME", requires = "shipped")]
    sessions: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "kubectl")]
    format: Format,
    /// Only requests from this user or group.
    #[arg(long, value_name = "NAME")]
    identity: Option<String>,
    /// Only these decisions: an effect (allow, deny, approve) or an outcome (forwarded, refused,
    /// held, approved, audited).
    #[arg(long, value_name = "DECISION", conflicts_with_all = ["approvals", "grants"])]
    decision: Option<String>,
    /// Approval-fatigue figures instead of the timeline: prompts asked, answers by a person
    /// (approved, denied, self-approvals refused), expiries, time to answer (median, p90, max),
    /// requests resolved without a new prompt (retries, grant uses) and grants left; in total,
    /// per identity and per rule. With --format json: one JSON object.
    #[arg(long, conflicts_with = "grants")]
    approvals: bool,
    /// Every widened grant in the record as a policy fragment (YAML) to review: the rule each
    /// grant amounts to, with who approved it, when, its limits and what it pinned as comments.
    #[arg(long)]
    grants: bool,
    /// With --grants: print a unified diff that appends the grants to this policy's spec.rules
    /// instead, once the result compiles.
    #[arg(long, value_name = "POLICY", requires = "grants")]
    policy: Option<PathBuf>,
    /// Only records at or after this time (RFC 3339, e.g. 2026-11-27T10:00:00Z).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only records before this time.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Write the session as one self-contained HTML page to OUT instead: the chain's check, a
    /// summary, the approvals and the timeline, with filters by identity, decision and
    /// resource. The page loads nothing from the network.
    #[arg(long, value_name = "OUT", conflicts_with_all = ["approvals", "grants", "format"])]
    html: Option<PathBuf>,
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
        // The agent's own access reviews read as the `kubectl auth` commands they are.
        Ok(req) => kubeleash_core::access_review::kubectl_line(&req, q.body.as_deref())
            .unwrap_or_else(|| kubectl::command(&req)),
        Err(_) => format!("{} {}", shell_word(&q.method), shell_word(&q.target)),
    }
}

/// A recorded body as the lines of a quoted here-document: each line escaped for the terminal,
/// and a delimiter that no line of the body equals, so the body can never end the document
/// early and run what follows as commands.
fn heredoc(cmd: &str, body: &str) -> String {
    let lines: Vec<String> = body
        .split('\n')
        .map(|l| printable(l).into_owned())
        .collect();
    let mut delimiter = "EOF".to_string();
    let mut n = 0;
    while lines.contains(&delimiter) {
        n += 1;
        delimiter = format!("EOF{n}");
    }
    format!("{cmd} <<'{delimiter}'\n{}\n{delimiter}", lines.join("\n"))
}

/// A JSON line with every character a terminal could act on (JSON escapes only those below
/// U+0020, not C1 controls such as CSI or bidirectional overrides) written as a `\uXXXX`
/// escape: the same JSON value, safe to print.
fn json_for_terminal(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut buf = [0u16; 2];
    for c in line.chars() {
        let mut one = [0u8; 4];
        if matches!(
            printable(c.encode_utf8(&mut one)),
            std::borrow::Cow::Owned(_)
        ) && c != '\\'
        {
            for unit in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A record file read and its chain checked, for the commands that learn from records
/// (`learn`, `whatif`): a broken chain is a warning (what the record says may not be what
/// happened), a file that cannot be read an error (printed; the exit code returned).
pub(crate) fn read_verified(
    file: &std::path::Path,
) -> Result<kubeleash_core::record::Verification, ExitCode> {
    let log = std::fs::read_to_string(file).map_err(|e| {
        eprintln!(
            "error: cannot read record `{}`: {}",
            file.display(),
            lower(&e.to_string())
        );
        ExitCode::from(USAGE)
    })?;
    let v = verify(&log);
    if !v.problems.is_empty() {
        eprintln!(
            "warning: `{}`: the chain of hashes is broken ({} problems): the record may have been edited, so what it says may not be what happened",
            file.display(),
            v.problems.len()
        );
    }
    Ok(v)
}

/// A record's decision, as the timeline says it.
pub fn decision_text(r: &Record) -> String {
    let d = &r.body.decision;
    // Every recorded string may carry bytes the agent chose: escape them for the terminal.
    let rule = d
        .rule
        .as_deref()
        .map(|r| format!(" by rule {}", printable(r)))
        .unwrap_or_default();
    let approver = || printable(d.approver.as_deref().unwrap_or("?")).into_owned();
    match r.body.kind {
        RecordKind::Held => format!(
            "held for approval {}{rule}",
            printable(d.approval_id.as_deref().unwrap_or_default())
        ),
        RecordKind::Approval => format!("approved by {}", approver()),
        // Written before a write is sent; the record of its answer follows (if it is missing,
        // the write may have reached the server unanswered: the process stopped first).
        RecordKind::Forwarded => format!(
            "write allowed{rule} and sent to the API server; its answer is the next record for it"
        ),
        _ => match d.outcome {
            Outcome::Refused => {
                let by = d
                    .approver
                    .as_deref()
                    .map(|a| format!(", approval denied by {}", printable(a)))
                    .unwrap_or_default();
                format!("DENIED{rule}{by}")
            }
            Outcome::Approved => format!("allowed after approval by {}", approver()),
            Outcome::Answered => {
                "answered by kubeleash from the policy (the agent's own access or identity review; the request itself was not sent)"
                    .to_string()
            }
            Outcome::Audited => format!(
                "allowed in audit mode (policy: {}{rule})",
                printable(&d.effect)
            ),
            _ => format!("allowed{rule}"),
        },
    }
}

fn keep(r: &Record, a: &Args) -> bool {
    if r.body.kind == RecordKind::End {
        return false;
    }
    let who = &r.body.identity;
    let d = &r.body.decision;
    a.identity
        .as_ref()
        .is_none_or(|i| who.user == *i || who.groups.contains(i))
        && a.decision
            .as_ref()
            .is_none_or(|x| d.effect == *x || d.outcome == x.as_str() || r.body.kind == x.as_str())
        && a.since
            .as_ref()
            .is_none_or(|s| r.body.time.as_str() >= s.as_str())
        && a.until
            .as_ref()
            .is_none_or(|u| r.body.time.as_str() < u.as_str())
}

pub fn run(a: Args) -> ExitCode {
    let keys = match crate::signing_key::public_keys(&a.keys) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(USAGE);
        }
    };
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
    let mut v = if keys.is_empty() {
        verify(&log)
    } else {
        signed(verify_signed(&log, &keys), &a)
    };
    match shipped::load(&a.shipped) {
        Ok(copy) if !a.shipped.is_empty() => {
            let differs = shipped::compare(&log, &copy, &a.sessions);
            if differs.is_empty() {
                eprintln!(
                    "the file holds all {} records shipped of session {}, unchanged",
                    shipped::of_sessions(&copy, &a.sessions),
                    a.sessions
                        .iter()
                        .map(|s| printable(s))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            v.problems.extend(differs);
        }
        Ok(_) => {}
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(USAGE);
        }
    }
    for w in &v.warnings {
        eprintln!("warning: {}", printable(w));
    }
    if keys.is_empty() && !v.checkpoints.is_empty() {
        eprintln!(
            "note: the record is signed ({} checkpoints); pass its public key with --key to check the signatures (the chain of hashes alone does not show a rewrite by whoever could write the file)",
            v.checkpoints.len()
        );
    }
    for (line, p) in &v.problems {
        eprintln!(
            "{}:{line}: chain broken: {}",
            a.file.display(),
            printable(p)
        );
    }
    let kept: Vec<&Record> = v.records.iter().filter(|r| keep(r, &a)).collect();
    if a.approvals || a.grants {
        let code = summary(&a, &v, &kept);
        return verdict(&a, &v, code);
    }
    if let Some(out) = &a.html {
        let code = page(&a, out, &log, &v, &kept);
        return verdict(&a, &v, code);
    }
    for r in kept {
        match a.format {
            Format::Json => println!(
                "{}",
                json_for_terminal(&serde_json::to_string(r).unwrap_or_default())
            ),
            Format::Audit => println!("{}", json_for_terminal(&audit_event(r).to_string())),
            Format::Kubectl => {
                let who = if r.body.identity.user.is_empty() {
                    "anonymous"
                } else {
                    &r.body.identity.user
                };
                println!(
                    "{}  {}  {}",
                    printable(&r.body.time),
                    printable(who),
                    decision_text(r)
                );
                let cmd = command(r);
                match r
                    .body
                    .request
                    .body
                    .as_deref()
                    .filter(|_| cmd.contains(" -f -") || cmd.contains("--patch-file=/dev/stdin"))
                {
                    Some(body) => println!("    {}", heredoc(&cmd, body)),
                    None => println!("    {cmd}"),
                }
            }
        }
    }
    verdict(&a, &v, ExitCode::SUCCESS)
}

/// A signed log's verdict as the flags take it: what no signature covers, and what a resumed
/// recorder could not vouch for, are problems (so every use of the record, the page and
/// `--grants` too, treats the log as not intact) unless `--allow-open` or `--allow-resumed`
/// accepts them, as warnings.
fn signed(
    mut v: kubeleash_core::record::Verification,
    a: &Args,
) -> kubeleash_core::record::Verification {
    let after_last = v.checkpoints.last().map_or(1, |c| c.line + 1);
    if let Some(u) = v.unsigned.clone() {
        let what = format!(
            "records {} to {} come after the last signature: whoever can write the file could have changed or added them",
            u.start,
            u.end.saturating_sub(1)
        );
        if a.allow_open && v.unsigned_live {
            v.warnings.push(format!("{what} (accepted: --allow-open)"));
        } else if a.allow_open {
            v.problems.push((after_last, format!("{what}; they are not a running recorder's (a closing record, or a session that had closed, is among them), so --allow-open does not accept them")));
        } else {
            v.problems.push((after_last, format!("{what} (a recorder still running, or one that stopped uncleanly, leaves such a tail; --allow-open accepts a running recorder's)")));
        }
    }
    for r in std::mem::take(&mut v.resumed) {
        if a.allow_resumed {
            v.warnings.push(format!("{r} (accepted: --allow-resumed)"));
        } else {
            v.problems.push((
                after_last.min(v.checkpoints.first().map_or(1, |c| c.line)),
                format!("{r}; --allow-resumed accepts this"),
            ));
        }
    }
    v.problems.sort_by_key(|p| p.0);
    v
}

/// `--html OUT`: the page, from the records kept.
fn page(
    a: &Args,
    out: &std::path::Path,
    log: &str,
    v: &kubeleash_core::record::Verification,
    kept: &[&Record],
) -> ExitCode {
    let filters = [
        ("--identity", &a.identity),
        ("--decision", &a.decision),
        ("--since", &a.since),
        ("--until", &a.until),
    ]
    .into_iter()
    .filter_map(|(flag, value)| value.as_ref().map(|x| format!("{flag} {x}")))
    .collect();
    let src = html::Source {
        file: &a.file,
        log,
        filters,
    };
    match html::write(out, &src, v, kept) {
        Ok(()) => {
            eprintln!("wrote {}: {} entries", out.display(), kept.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// `--approvals` or `--grants`, from the records kept.
fn summary(a: &Args, v: &kubeleash_core::record::Verification, kept: &[&Record]) -> ExitCode {
    if a.approvals {
        let report = approvals::figures(kept);
        match a.format {
            Format::Json => println!("{}", json_for_terminal(&approvals::json(&report))),
            Format::Kubectl => print!("{}", approvals::text(&report)),
            Format::Audit => {
                eprintln!(
                    "error: --approvals prints text or JSON (--format json), not audit events"
                );
                return ExitCode::from(USAGE);
            }
        }
        return ExitCode::SUCCESS;
    }
    if a.format != Format::Kubectl {
        eprintln!("error: --grants prints YAML (or a diff with --policy); leave out --format");
        return ExitCode::from(USAGE);
    }
    // A grant in a record whose chain is broken may have been written by anyone: it does not
    // become policy.
    if !v.problems.is_empty() {
        eprintln!(
            "error: the chain of hashes of `{}` is broken (see above), so its grants cannot be trusted; export them from an intact record",
            a.file.display()
        );
        return ExitCode::from(1);
    }
    let (found, warnings) = grants::found(kept);
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    match &a.policy {
        Some(p) => grants::onto_policy(p, &found),
        None => grants::fragment(&a.file, &found),
    }
}

/// The exit code once the chain is judged: `code` unless --verify finds the log broken or cut
/// short.
fn verdict(a: &Args, v: &kubeleash_core::record::Verification, code: ExitCode) -> ExitCode {
    if a.verify {
        if !v.problems.is_empty() {
            return ExitCode::from(1);
        }
        if v.cut_short && !a.allow_open {
            eprintln!("error: the log was cut short (see the warnings above)");
            return ExitCode::from(1);
        }
        let signed = if a.keys.is_empty() {
            String::new()
        } else {
            let mut by: Vec<&str> = v
                .checkpoints
                .iter()
                .filter_map(|c| c.record.body.checkpoint.as_ref().map(|c| c.key.as_str()))
                .collect();
            by.dedup();
            let open = v.unsigned.as_ref().map_or(String::new(), |u| {
                format!(", but the last {} not yet", u.end - u.start)
            });
            format!(
                ", signed by key {} (checked against the keys given){open}",
                by.join(" then key ")
            )
        };
        eprintln!(
            "verified: {} records, chain intact{signed}",
            v.records.len()
        );
    } else if !v.problems.is_empty() {
        eprintln!("warning: the chain of hashes is broken (run with --verify for the exit code)");
    }
    code
}
