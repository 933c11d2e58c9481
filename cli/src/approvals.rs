//! Approvals: who answers the requests a policy holds for a person.
//!
//! - [`SocketApprover`]: held requests wait on a Unix socket only the operator's user can open;
//!   `kubeleash approvals list|approve|deny` (this module's [`run`]) answers them.
//! - [`TerminalApprover`]: a prompt on the proxy's controlling terminal, one at a time.
//! - [`WebhookApprover`]: POST the request as JSON to an `http://` URL and read the answer.
//! - [`ChatApprover`]: POST a Slack message for the request to an `http://` URL; the answer
//!   comes back later as a signed callback to an endpoint on loopback.
//!
//! The socket protocol is JSON lines, one request and one answer per line:
//!
//! ```text
//! {"op":"list","offset":0}                  → {"pending":[ApprovalRequest…],"total":n,"offset":0}
//! {"op":"approve","id":"…","by":"…","for_seconds":900,"reason":"…"} → {"ok":true}
//! {"op":"approve","id":"…","by":"…","widen":{"names":"web-*","fields":[{"path":"spec.replicas","min":1,"max":5}],"uses":2,"seconds":1800}}
//!                                      → {"ok":true,"widened":true}
//!                                        or, under the policy's floor, {"ok":true,"exactly":"<why>"}
//! {"op":"deny","id":"…","by":"…","reason":"…"}                 → {"ok":true}
//!                                      an unknown id → {"ok":false,"error":"no pending approval `x`"}
//!                  a widening the request does not offer → {"ok":false,"error":"…","still_held":true}
//!       an approval in the name of the request's own user → {"ok":false,"error":"…","answered":true}
//!                                        (the layer refuses the request: it cannot approve itself)
//! ```
//!
//! A widening ([`Widening`]) is checked against the axes the held request offers
//! (`ApprovalRequest::widen`) by [`fit`], on every channel alike: an axis not offered is refused
//! and nothing is approved; a request under the policy's floor (`approvals.neverWiden`) is
//! approved exactly, once, and the layer records why it was not widened.
//!
//! Each listed request is the layer's `ApprovalRequest` plus `waiting_seconds`, its body cut to
//! what the layer shows an approver (64 KiB); a list answer carries at most 32 of them, from
//! `offset` on, and `total` says how many are held. An id is 128 random bits the layer gives one
//! held request: answering it answers that request and no other.

// Submodule paths are spelled out so that `cli/tests/approvals.rs` can include this module with
// `#[path]` (the binary has no library target) and still find them.
#[path = "approvals/chat.rs"]
mod chat;
#[path = "approvals/client.rs"]
mod client;
#[path = "approvals/kubernetes.rs"]
mod kubernetes;
#[path = "approvals/socket.rs"]
mod socket;
#[path = "approvals/terminal.rs"]
mod terminal;
#[path = "approvals/webhook.rs"]
mod webhook;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use kubeleash_core::display::printable;
use kubeleash_tower::{ApprovalRequest, FieldRange, Widening};
use serde::Deserialize;
use serde_json::Value;

pub use chat::ChatApprover;
pub use client::{Args, run};
pub use kubernetes::KubernetesApprovals;
pub use socket::SocketApprover;
pub use terminal::TerminalApprover;
pub use webhook::WebhookApprover;

/// Where the proxy serves approvals and the CLI looks for them when `--socket` is not given:
/// `$XDG_RUNTIME_DIR/kubeleash/approvals.sock` when `XDG_RUNTIME_DIR` is set, otherwise
/// `$HOME/.kubeleash/approvals.sock`, and with neither, `kubeleash-$USER/approvals.sock` in the
/// temporary directory (which [`SocketApprover::bind`] refuses if another user made it first).
pub fn default_socket_path() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(dir) = var("XDG_RUNTIME_DIR") {
        return dir.join("kubeleash").join("approvals.sock");
    }
    if let Some(home) = var("HOME") {
        return home.join(".kubeleash").join("approvals.sock");
    }
    let user: String = operator_name()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    std::env::temp_dir()
        .join(format!("kubeleash-{user}"))
        .join("approvals.sock")
}

/// The name answers are given in when none is passed: `$USER`, else `$LOGNAME`.
pub(crate) fn operator_name() -> Option<String> {
    ["USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .map(|v| clean_name(&v))
        .find(|v| !v.is_empty())
}

/// A name as it goes into an answer (and from there into records and the agent's error): one
/// line, no control or direction-changing characters, at most 128 characters.
pub(crate) fn clean_name(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_control() && !is_bidi(*c))
        .take(128)
        .collect::<String>()
        .trim()
        .to_string()
}

/// A reason as it goes into an answer: like [`clean_name`], at most 1,000 characters.
pub(crate) fn clean_reason(reason: &str) -> String {
    reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .filter(|c| !is_bidi(*c))
        .take(1000)
        .collect::<String>()
        .trim()
        .to_string()
}

/// The longest time-windowed grant an answer can give: the layer's limit, which it enforces
/// whatever the approver; refused here up front so the operator is told.
pub use kubeleash_tower::MAX_WINDOW;

/// An approval's window as operators write it: [`parse_duration`], at most [`MAX_WINDOW`].
pub fn parse_window(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d > MAX_WINDOW {
        return Err(format!(
            "a window can be at most {}; for longer, allow the requests in the policy",
            format_duration(MAX_WINDOW)
        ));
    }
    Ok(d)
}

/// Parse a duration as operators write it: `30s`, `15m`, `2h`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration `{}`: write a number with s, m or h, like 30s, 15m or 2h",
            one_line(text)
        )
    };
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for c in t.chars() {
        if let Some(d) = c.to_digit(10) {
            number = Some(
                number
                    .unwrap_or(0)
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d)))
                    .ok_or_else(bad)?,
            );
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
        let n = number.take().ok_or_else(bad)?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
    }
    if number.is_some() {
        return Err(bad());
    }
    if total == 0 {
        return Err(format!("duration `{}` is zero", one_line(text)));
    }
    Ok(Duration::from_secs(total))
}

/// A duration as [`parse_duration`] reads it back: `15m`, `1h30m`, `45s`.
pub(crate) fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if m > 0 {
        let _ = write!(out, "{m}m");
    }
    if s > 0 || out.is_empty() {
        let _ = write!(out, "{s}s");
    }
    out
}

/// Characters that reorder the text around them (Trojan Source): shown escaped.
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Text from the agent, made safe for a terminal with core's `printable`: control, terminal
/// escape and direction-changing characters escaped (a held request must not be able to redraw
/// the prompt that judges it). With `keep_newlines`, line breaks stay (a body is shown on
/// lines) and every line is escaped on its own.
fn escape(text: &str, keep_newlines: bool) -> String {
    if !keep_newlines {
        return printable(text).into_owned();
    }
    text.split('\n')
        .map(|line| printable(line).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) fn one_line(text: &str) -> String {
    escape(text, false)
}

/// A held request as it is shown to a person, from the socket's JSON or from the layer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Shown {
    pub id: String,
    pub identity: ShownIdentity,
    pub method: String,
    pub target: String,
    pub kubectl: String,
    pub body: Option<String>,
    pub content_type: Option<String>,
    pub impersonation: Option<ShownImpersonation>,
    pub rule: Option<String>,
    pub reason: String,
    pub waiting_seconds: Option<u64>,
    /// The agent's own reason (its `X-Kubeleash-Reason` header): it explains, it proves nothing.
    pub agent_reason: Option<String>,
    /// What the API server says the write would do.
    pub dry_run: Option<ShownDryRun>,
    /// What the approval may be widened along (absent from a layer that offers nothing).
    pub widen: ShownAxes,
}

/// The API server's dry run of a held write, as the socket lists it (the layer's `DryRun`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ShownDryRun {
    pub status: u16,
    /// Why the API server would refuse the request (masked).
    pub rejected: Option<String>,
    /// The change from the live object to the result, as lines (masked values only as changed).
    pub diff: String,
}

/// The axes a held request's approval may be widened along, as the socket lists them (the
/// layer's `Axes`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ShownAxes {
    /// Why it may be approved only exactly (the policy's floor).
    pub never: Option<String>,
    pub names: bool,
    pub fields: Vec<String>,
    pub uses_and_time: bool,
}

impl ShownAxes {
    /// Whether nothing may be widened.
    pub(crate) fn exact_only(&self) -> bool {
        self.never.is_some() || !(self.names || self.uses_and_time || !self.fields.is_empty())
    }

    /// The axes in words, for a person (field paths come from the agent's body: escaped).
    pub(crate) fn describe(&self) -> String {
        if let Some(never) = &self.never {
            return format!("no: it can only be approved exactly ({})", one_line(never));
        }
        if self.exact_only() {
            return "no: it can only be approved exactly".into();
        }
        let mut parts = Vec::new();
        if self.names {
            parts.push("names (a glob)".to_string());
        }
        if !self.fields.is_empty() {
            parts.push(format!("fields {}", one_line(&self.fields.join(", "))));
        }
        if self.uses_and_time {
            parts.push("uses, time".into());
        }
        parts.join("; ")
    }
}

/// Who a request impersonates, for an approver: `user bob; groups a, b; uid 1; extra k=v`.
pub(crate) fn impersonated(
    user: Option<&str>,
    groups: &[String],
    uid: Option<&str>,
    extra: &[String],
) -> String {
    let mut who = Vec::new();
    if let Some(u) = user {
        who.push(format!("user {u}"));
    }
    if !groups.is_empty() {
        who.push(format!("groups {}", groups.join(", ")));
    }
    if let Some(u) = uid {
        who.push(format!("uid {u}"));
    }
    if !extra.is_empty() {
        who.push(format!("extra {}", extra.join(", ")));
    }
    who.join("; ")
}

/// The identity a held request impersonates, when approving it forwards its headers.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ShownImpersonation {
    pub user: Option<String>,
    pub groups: Vec<String>,
    pub uid: Option<String>,
    pub extra: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ShownIdentity {
    pub user: String,
    pub groups: Vec<String>,
}

impl From<&ApprovalRequest> for Shown {
    fn from(r: &ApprovalRequest) -> Shown {
        Shown {
            id: r.id.clone(),
            identity: ShownIdentity {
                user: r.identity.user.clone(),
                groups: r.identity.groups.clone(),
            },
            method: r.method.clone(),
            target: r.target.clone(),
            kubectl: r.kubectl.clone(),
            body: r.body.clone(),
            content_type: r.content_type.clone(),
            impersonation: r.impersonation.as_ref().map(|i| ShownImpersonation {
                user: i.user.clone(),
                groups: i.groups.clone(),
                uid: i.uid.clone(),
                extra: i.extra.clone(),
            }),
            rule: r.rule.clone(),
            reason: r.reason.clone(),
            waiting_seconds: None,
            agent_reason: r.agent_reason.clone(),
            dry_run: r.dry_run.as_ref().map(|d| ShownDryRun {
                status: d.status,
                rejected: d.rejected.clone(),
                diff: d.diff.clone(),
            }),
            widen: ShownAxes {
                never: r.widen.never.clone(),
                names: r.widen.names,
                fields: r.widen.fields.clone(),
                uses_and_time: r.widen.uses_and_time,
            },
        }
    }
}

impl Shown {
    /// The request as a block of lines: id, kubectl command, identity, request line, rule,
    /// reason, and the masked body, everything the agent chose escaped.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let _ = write!(out, "{}", one_line(&self.id));
        if let Some(s) = self.waiting_seconds {
            let _ = write!(out, "  (held {})", format_duration(Duration::from_secs(s)));
        }
        out.push('\n');
        let groups = if self.identity.groups.is_empty() {
            String::new()
        } else {
            format!(" (groups: {})", one_line(&self.identity.groups.join(", ")))
        };
        let field = |out: &mut String, name: &str, value: &str| {
            let _ = writeln!(out, "  {name:<9} {value}");
        };
        field(&mut out, "kubectl", &one_line(&self.kubectl));
        field(
            &mut out,
            "identity",
            &format!("{}{groups}", one_line(&self.identity.user)),
        );
        field(
            &mut out,
            "request",
            &format!("{} {}", one_line(&self.method), one_line(&self.target)),
        );
        if let Some(i) = &self.impersonation {
            let who = impersonated(i.user.as_deref(), &i.groups, i.uid.as_deref(), &i.extra);
            field(&mut out, "as", &format!("IMPERSONATING {}", one_line(&who)));
        }
        if let Some(ct) = &self.content_type {
            field(&mut out, "type", &one_line(ct));
        }
        field(
            &mut out,
            "rule",
            &self
                .rule
                .as_deref()
                .map_or_else(|| "(none)".to_string(), one_line),
        );
        field(&mut out, "reason", &one_line(&self.reason));
        if let Some(why) = self.agent_reason.as_deref().filter(|w| !w.is_empty()) {
            field(
                &mut out,
                "agent",
                &format!("{} (its own words; they prove nothing)", one_line(why)),
            );
        }
        field(&mut out, "widen", &self.widen.describe());
        if let Some(dry) = &self.dry_run {
            self.render_dry_run(&mut out, dry);
        }
        match self.body.as_deref() {
            None | Some("") => field(&mut out, "body", "(none)"),
            Some(body) => {
                field(&mut out, "body", "(masked)");
                for line in escape(&pretty_json(body), true).lines() {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
        out
    }
}

impl Shown {
    /// The API server's account of the write: its refusal, or the change it would make.
    fn render_dry_run(&self, out: &mut String, dry: &ShownDryRun) {
        let field = |out: &mut String, name: &str, value: &str| {
            let _ = writeln!(out, "  {name:<9} {value}");
        };
        if let Some(why) = &dry.rejected {
            field(
                out,
                "dry run",
                &format!(
                    "THE API SERVER WOULD REFUSE IT (status {}): {}",
                    dry.status,
                    one_line(why)
                ),
            );
        }
        if dry.diff.trim().is_empty() {
            if dry.rejected.is_none() {
                field(
                    out,
                    "dry run",
                    "the API server would accept it and change nothing",
                );
            }
            return;
        }
        field(out, "changes", "(API server dry run; secrets masked)");
        for line in escape(&dry.diff, true).lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
}

/// Re-indent JSON text without parsing its values, so numbers and strings are shown exactly as
/// sent; text that does not look like JSON comes back as it is.
pub(crate) fn pretty_json(text: &str) -> String {
    let trimmed = text.trim();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return text.to_string();
    }
    let mut out = String::with_capacity(trimmed.len() * 2);
    let mut depth: usize = 0;
    let mut in_string = false;
    let mut escaped = false;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    };
    let mut chars = trimmed.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // An empty object or array stays on one line.
                while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                    chars.next();
                }
                if let Some(&next) = chars.peek()
                    && (next == '}' || next == ']')
                {
                    out.push(next);
                    chars.next();
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// What becomes of a widening an approver asked for, once [`fit`] has checked it against the
/// held request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fit {
    /// Offered: the layer keeps a grant widened as asked (it still refuses one that does not
    /// fit the exact bytes it holds, and records why).
    Widened,
    /// The request is under the policy's floor: approved exactly, once, for this reason.
    Exactly(String),
}

/// Check the widening `w` an approver asked for against the held request `r` and the axes it
/// offers (`r.widen`), on every channel alike:
///
/// - a malformed widening ([`check_widening`]) or an axis `r` does not offer is an error, and
///   nothing is approved;
/// - so is one the request itself contradicts, as far as what the approver was shown tells (a
///   name glob the request's name does not match, a range its value is outside);
/// - a request under the floor is approved exactly ([`Fit::Exactly`]), whatever was asked.
pub(crate) fn fit(r: &ApprovalRequest, w: &Widening) -> Result<Fit, String> {
    check_widening(w)?;
    if let Some(never) = &r.widen.never {
        return Ok(Fit::Exactly(never.clone()));
    }
    let id = one_line(&r.id);
    let axes = &r.widen;
    if let Some(glob) = &w.names {
        if !axes.names {
            return Err(format!(
                "approval {id} cannot be widened by name (`{}`): the request names no single \
                 object; widen it along what it offers, or approve it exactly",
                one_line(glob)
            ));
        }
        if let Some(name) = held_name(r)
            && !glob_match(glob, &name)
        {
            return Err(format!(
                "the name glob `{}` does not match the held request's own name `{}`; give a \
                 glob that matches it",
                one_line(glob),
                one_line(&name)
            ));
        }
    }
    let shown_body = r
        .body
        .as_deref()
        .and_then(|b| serde_json::from_str::<Value>(b).ok());
    for f in &w.fields {
        let path = bare_path(&f.path);
        if !axes.fields.iter().any(|o| bare_path(o) == path) {
            let offered = if axes.fields.is_empty() {
                "it offers no fields".to_string()
            } else {
                format!("it offers {}", one_line(&axes.fields.join(", ")))
            };
            return Err(format!(
                "approval {id} does not offer the field `{}` to widen ({offered})",
                one_line(&f.path)
            ));
        }
        if let Some(v) = shown_body.as_ref().and_then(|b| lookup(b, path)) {
            check_value(f, v)?;
        }
    }
    if (w.uses.is_some() || w.seconds.is_some()) && !axes.uses_and_time {
        return Err(format!(
            "approval {id} does not offer uses or time to widen; approve it exactly"
        ));
    }
    Ok(Fit::Widened)
}

/// What can be told of a widening without the request: a name glob that is a glob, field
/// ranges of one form each (finite `min <= max`, or a glob), no field twice, at least one use,
/// a time of at least a second and at most [`MAX_WINDOW`].
pub(crate) fn check_widening(w: &Widening) -> Result<(), String> {
    if let Some(glob) = &w.names
        && (glob.trim().is_empty() || glob.chars().any(char::is_control))
    {
        return Err(format!(
            "the name glob `{}` is empty or not one line; write one like `web-*`",
            one_line(glob)
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for f in &w.fields {
        check_range(f)?;
        if !seen.insert(bare_path(&f.path)) {
            return Err(format!(
                "the field `{}` is given twice; give one range for it",
                one_line(&f.path)
            ));
        }
    }
    if w.uses == Some(0) {
        return Err("uses must be at least 1 (the approved request is not counted)".into());
    }
    match w.seconds {
        Some(0) => Err("a widened approval's time must be at least one second".into()),
        Some(s) if Duration::from_secs(s) > MAX_WINDOW => Err(format!(
            "a widened approval can last at most {}; for longer, allow the requests in the policy",
            format_duration(MAX_WINDOW)
        )),
        _ => Ok(()),
    }
}

/// One field range of one form, as a channel's JSON may carry it: `min` and `max` (finite,
/// `min <= max`) or `matches`, and a path kubeleash reads.
fn check_range(f: &FieldRange) -> Result<(), String> {
    // The core's own parser judges the path, with a range that is always valid.
    if let Err(e) = format!("{}=0..0", f.path).parse::<FieldRange>() {
        let e = e.to_string();
        return Err(if e.starts_with("field path") {
            e
        } else {
            format!(
                "field path `{}` is not a path like `spec.replicas`, `a.b[0].c` or \
                 `metadata.labels['x.y/z']`",
                one_line(&f.path)
            )
        });
    }
    match (f.min, f.max, &f.matches) {
        (Some(min), Some(max), None) if min.is_finite() && max.is_finite() && min <= max => Ok(()),
        (None, None, Some(g)) if !g.is_empty() && !g.chars().any(char::is_control) => Ok(()),
        _ => Err(format!(
            "field `{}` needs either `min` and `max` (numbers, min <= max) or `matches` (a glob)",
            one_line(&f.path)
        )),
    }
}

/// Whether the value the approver was shown at a widened field fits the range asked for: a
/// number within it, a string matching its glob. A masked string is not judged (the layer,
/// which has the real bytes, does).
fn check_value(f: &FieldRange, v: &Value) -> Result<(), String> {
    let path = one_line(&f.path);
    match (f.min, f.max, &f.matches, v) {
        (Some(min), Some(max), _, Value::Number(n)) => match n.as_f64() {
            Some(x) if min <= x && x <= max => Ok(()),
            _ => Err(format!(
                "the held request's `{path}` is {n}, outside {min}..{max}; give a range that \
                 includes it"
            )),
        },
        (Some(_), Some(_), _, other) => Err(format!(
            "the held request's `{path}` is not a number ({}); give a glob for it, not a range",
            one_line(&other.to_string())
        )),
        (_, _, Some(_), Value::String(s)) if s.contains("[masked") => Ok(()),
        (_, _, Some(g), Value::String(s)) if glob_match(g, s) => Ok(()),
        (_, _, Some(g), Value::String(s)) => Err(format!(
            "the held request's `{path}` is `{}`, which the glob `{}` does not match; give a \
             glob that matches it",
            one_line(s),
            one_line(g)
        )),
        (_, _, Some(_), other) => Err(format!(
            "the held request's `{path}` is not a string ({}); give a range MIN..MAX for it, \
             not a glob",
            one_line(&other.to_string())
        )),
        _ => Ok(()),
    }
}

/// The name of the one object a held request names: in its path, or a create's
/// `metadata.name`, as the approver was shown it.
fn held_name(r: &ApprovalRequest) -> Option<String> {
    let a = &r.attributes;
    if !a.name.is_empty() {
        return Some(a.name.clone());
    }
    if a.verb != "create" || !a.subresource.is_empty() {
        return None;
    }
    let body: Value = serde_json::from_str(r.body.as_deref()?).ok()?;
    body.get("metadata")?
        .get("name")?
        .as_str()
        .map(str::to_string)
}

/// `PATH=MIN..MAX` or `PATH=GLOB`, as an approver types a field range; the error quotes it.
pub(crate) fn parse_field(text: &str) -> Result<FieldRange, String> {
    text.parse::<FieldRange>().map_err(|e| {
        let e = e.to_string();
        if e.contains(text) {
            one_line(&e)
        } else {
            format!("`{}`: {}", one_line(text), one_line(&e))
        }
    })
}

/// A field path without the optional `$.` the policy's JSONPath spelling starts with.
pub(crate) fn bare_path(p: &str) -> &str {
    p.strip_prefix("$.")
        .or_else(|| p.strip_prefix('$'))
        .unwrap_or(p)
}

/// The value at a field path (`a.b[0].c`, `metadata.labels['x.y/z']`) in `v`; `None` when it
/// is not there or the path is not one.
fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    let mut rest = bare_path(path);
    let mut first = true;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("['") {
            let end = r.find("']")?;
            cur = cur.as_object()?.get(&r[..end])?;
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            cur = cur.as_array()?.get(r[..end].parse::<usize>().ok()?)?;
            rest = &r[end + 1..];
        } else {
            let r = if first { rest } else { rest.strip_prefix('.')? };
            let end = r.find(['.', '[']).unwrap_or(r.len());
            cur = cur.as_object()?.get(&r[..end])?;
            rest = &r[end..];
        }
        first = false;
    }
    Some(cur)
}

/// Whether `text` matches `glob`, as the policy reads globs: `*` is any run of characters,
/// everything else is literal.
pub(crate) fn glob_match(glob: &str, text: &str) -> bool {
    let (g, t): (Vec<char>, Vec<char>) = (glob.chars().collect(), text.chars().collect());
    let (mut gi, mut ti) = (0, 0);
    // Where the last `*` was, and how much of the text it has taken so far.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if gi < g.len() && g[gi] == '*' {
            star = Some((gi, ti));
            gi += 1;
        } else if gi < g.len() && g[gi] == t[ti] {
            gi += 1;
            ti += 1;
        } else if let Some((sg, st)) = star {
            gi = sg + 1;
            ti = st + 1;
            star = Some((sg, st + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|c| *c == '*')
}

/// A widening in words, for the approver's confirmation: `names matching `web-*`,
/// spec.replicas within 1..5, 2 more uses, for 15m`.
pub(crate) fn describe_widening(w: &Widening) -> String {
    let mut parts = Vec::new();
    if let Some(n) = &w.names {
        parts.push(format!("names matching `{}`", one_line(n)));
    }
    for f in &w.fields {
        let path = one_line(&f.path);
        match (f.min, f.max, &f.matches) {
            (Some(min), Some(max), _) => parts.push(format!("{path} within {min}..{max}")),
            (_, _, Some(g)) => parts.push(format!("{path} matching `{}`", one_line(g))),
            _ => parts.push(path),
        }
    }
    if let Some(u) = w.uses {
        parts.push(format!("{u} more use{}", if u == 1 { "" } else { "s" }));
    }
    let window = format_duration(w.window());
    parts.push(if w.seconds.is_some() {
        format!("for {window}")
    } else {
        format!("for {window} (the default)")
    });
    parts.join(", ")
}

/// Whether the approver named `by` is the user whose request it is: the layer's own rule.
pub(crate) use kubeleash_tower::same_user;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        for bad in [
            "",
            "15",
            "m",
            "15x",
            "1.5h",
            "-1m",
            "0s",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_window("24h"), Ok(MAX_WINDOW));
        assert!(parse_window("25h").unwrap_err().contains("at most 24h"));
        for d in [30, 900, 5400, 3661] {
            let d = Duration::from_secs(d);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }

    #[test]
    fn pretty_json_keeps_values_exactly() {
        let body = r#"{"a":[1,2.50,1e400],"s":"x, {y}: \"z\"","e":{},"l":[ ]}"#;
        let pretty = pretty_json(body);
        assert!(pretty.contains("2.50"), "{pretty}");
        assert!(pretty.contains("1e400"), "{pretty}");
        assert!(pretty.contains(r#""x, {y}: \"z\"""#), "{pretty}");
        assert!(pretty.contains("\"e\": {}"), "{pretty}");
        assert!(pretty.contains("\"l\": []"), "{pretty}");
        assert_eq!(pretty_json("not json\n"), "not json\n");
    }

    #[test]
    fn agent_text_cannot_drive_the_terminal() {
        let shown = Shown {
            id: "abc".into(),
            kubectl: "kubectl delete pod x\u{1b}[2K\rkubectl get pods".into(),
            body: Some("{\"a\":\"\u{202e}txt.exe\"}".into()),
            reason: "r\nfake: line".into(),
            ..Shown::default()
        };
        let text = shown.render();
        assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text}");
        assert!(!text.contains('\u{202e}'), "{text}");
        assert!(text.contains("\\u{1b}[2K\\u{d}kubectl get pods"), "{text}");
        assert!(text.contains("r\\u{a}fake: line"), "{text}");
    }

    /// A held `kubectl scale deployment web-1 --replicas=5` (a merge patch of the scale
    /// subresource), offering what the layer offers for it; with `never`, under the floor.
    pub(crate) fn held_scale(never: Option<&str>) -> ApprovalRequest {
        let mut h = http::HeaderMap::new();
        h.insert(
            "content-type",
            "application/merge-patch+json".parse().unwrap(),
        );
        let target = "/apis/apps/v1/namespaces/dev/deployments/web-1/scale";
        let body = r#"{"spec":{"replicas":5}}"#;
        let request = kubeleash_core::request::classify("PATCH", target, &h).unwrap();
        ApprovalRequest {
            id: "0123456789abcdef0123456789abcdef".into(),
            identity: kubeleash_core::policy::Identity::new("agent-1", ["ai-agents"]),
            method: "PATCH".into(),
            target: target.into(),
            attributes: request.attributes.clone(),
            kubectl: "kubectl scale deployment web-1 --replicas=5 -n dev".into(),
            body: Some(body.into()),
            content_type: Some("application/merge-patch+json".into()),
            impersonation: None,
            rule: Some("scaling-needs-a-human".into()),
            reason: "scaling changes what runs".into(),
            agent_reason: None,
            dry_run: None,
            widen: kubeleash_core::policy::grant::axes(
                &request,
                body.as_bytes(),
                never.map(str::to_string),
            ),
        }
    }

    fn widening(names: Option<&str>, fields: &[&str], uses: Option<u32>) -> Widening {
        Widening {
            names: names.map(str::to_string),
            fields: fields.iter().map(|f| f.parse().unwrap()).collect(),
            uses,
            seconds: None,
        }
    }

    #[test]
    fn a_widening_fits_only_what_the_request_offers() {
        let r = held_scale(None);
        assert!(r.widen.names && r.widen.uses_and_time, "{:?}", r.widen);
        assert_eq!(r.widen.fields, ["spec.replicas"]);
        let ok = widening(Some("web-*"), &["spec.replicas=1..5"], Some(2));
        assert_eq!(fit(&r, &ok), Ok(Fit::Widened));
        assert_eq!(
            fit(&r, &widening(None, &["$.spec.replicas=5..9"], None)),
            Ok(Fit::Widened)
        );
        let refused = |w: Widening, says: &str| {
            let e = fit(&r, &w).unwrap_err();
            assert!(e.contains(says), "{e}");
        };
        refused(
            widening(None, &["spec.paused=1..2"], None),
            "does not offer the field `spec.paused` to widen (it offers spec.replicas)",
        );
        refused(
            widening(Some("db-*"), &[], None),
            "the name glob `db-*` does not match the held request's own name `web-1`",
        );
        refused(
            widening(None, &["spec.replicas=1..3"], None),
            "`spec.replicas` is 5, outside 1..3",
        );
        refused(
            widening(None, &["spec.replicas=web*"], None),
            "is not a string (5); give a range",
        );
        refused(widening(None, &[], Some(0)), "at least 1");
        refused(widening(Some(" "), &[], None), "empty");
        refused(
            widening(None, &["spec.replicas=1..2", "$.spec.replicas=3..4"], None),
            "given twice",
        );
        refused(
            Widening {
                seconds: Some(25 * 3600),
                ..Widening::default()
            },
            "at most 24h",
        );
        refused(
            Widening {
                fields: vec![FieldRange {
                    path: "spec.replicas".into(),
                    min: Some(1.0),
                    max: None,
                    matches: None,
                }],
                ..Widening::default()
            },
            "needs either `min` and `max`",
        );
        refused(
            Widening {
                fields: vec![FieldRange {
                    path: "spec..replicas".into(),
                    min: Some(1.0),
                    max: Some(2.0),
                    matches: None,
                }],
                ..Widening::default()
            },
            "field path `spec..replicas`",
        );
        // A request that names no object, offers no fields and no uses: nothing fits.
        let mut bare = held_scale(None);
        bare.widen = Default::default();
        let e = fit(&bare, &widening(Some("web-*"), &[], None)).unwrap_err();
        assert!(e.contains("cannot be widened by name"), "{e}");
        let e = fit(&bare, &widening(None, &[], Some(3))).unwrap_err();
        assert!(e.contains("does not offer uses or time"), "{e}");
        // Under the floor: approved exactly, whatever was asked.
        let floored = held_scale(Some("the policy never widens approvals of verbs [patch]"));
        assert_eq!(
            fit(&floored, &ok),
            Ok(Fit::Exactly(
                "the policy never widens approvals of verbs [patch]".into()
            ))
        );
        // But a malformed widening is refused there too.
        assert!(fit(&floored, &widening(None, &[], Some(0))).is_err());
    }

    #[test]
    fn the_dry_run_and_the_agents_reason_are_shown() {
        let mut r = held_scale(None);
        r.agent_reason = Some("traffic\u{1b}[2J is up".into());
        r.dry_run = Some(kubeleash_tower::DryRun {
            status: 200,
            rejected: None,
            changes: Vec::new(),
            diff: "~ spec.replicas: 2 -> 5\n~ data.k: changed (masked)\u{1b}[2K".into(),
        });
        let text = Shown::from(&r).render();
        assert!(
            text.contains(
                "  changes   (API server dry run; secrets masked)\n    ~ spec.replicas: 2 -> 5\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("agent     traffic\\u{1b}[2J is up (its own words"),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'), "{text}");
        r.dry_run = Some(kubeleash_tower::DryRun {
            status: 422,
            rejected: Some("spec.replicas: Invalid value: -3".into()),
            changes: Vec::new(),
            diff: String::new(),
        });
        // As the socket lists it, too.
        let listed: Shown = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        let text = listed.render();
        assert!(
            text.contains("dry run   THE API SERVER WOULD REFUSE IT (status 422): spec.replicas: Invalid value: -3"),
            "{text}"
        );
    }

    #[test]
    fn the_axes_are_listed_in_words() {
        let shown = Shown::from(&held_scale(None));
        let text = shown.render();
        assert!(
            text.contains("widen     names (a glob); fields spec.replicas; uses, time"),
            "{text}"
        );
        let shown = Shown::from(&held_scale(Some(
            "the policy never widens approvals of secrets",
        )));
        assert!(shown.widen.exact_only());
        assert!(
            shown.render().contains(
                "widen     no: it can only be approved exactly (the policy never widens approvals of secrets)"
            ),
            "{}",
            shown.render()
        );
        // The listed JSON reads back the same.
        let listed: Shown =
            serde_json::from_value(serde_json::to_value(held_scale(None)).unwrap()).unwrap();
        assert_eq!(listed.widen.fields, ["spec.replicas"]);
        assert!(listed.widen.names && listed.widen.uses_and_time);
    }

    #[test]
    fn globs_and_paths_read_as_the_policy_reads_them() {
        for (g, t, m) in [
            ("web-*", "web-1", true),
            ("web-*", "web-", true),
            ("web-*", "db", false),
            ("*-1", "web-1", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("*", "", true),
        ] {
            assert_eq!(glob_match(g, t), m, "{g} {t}");
        }
        let v: Value = serde_json::json!({"spec": {"containers": [{"image": "a"}]},
            "metadata": {"labels": {"x.y/z": "v"}}});
        assert_eq!(
            lookup(&v, "spec.containers[0].image"),
            Some(&serde_json::json!("a"))
        );
        assert_eq!(
            lookup(&v, "$.metadata.labels['x.y/z']"),
            Some(&serde_json::json!("v"))
        );
        assert_eq!(lookup(&v, "spec.containers[1].image"), None);
        assert_eq!(lookup(&v, "spec..containers"), None);
    }

    #[test]
    fn a_widening_is_described_as_given() {
        let w = widening(Some("web-*"), &["spec.replicas=1..5"], Some(2));
        assert_eq!(
            describe_widening(&w),
            "names matching `web-*`, spec.replicas within 1..5, 2 more uses, for 15m (the default)"
        );
        let w = Widening {
            uses: Some(1),
            seconds: Some(90),
            ..Widening::default()
        };
        assert_eq!(describe_widening(&w), "1 more use, for 1m30s");
    }

    #[test]
    fn the_requester_is_recognized_however_spelled() {
        for by in [
            "agent-1",
            "AGENT-1",
            "agent_1",
            " agent 1 ",
            "ａｇｅｎｔ－１",
            "agent\u{200b}-1",
        ] {
            assert!(same_user(by, "agent-1"), "{by:?}");
        }
        assert!(!same_user("agent-1 (reason: trust me)", "agent-1"));
        assert!(!same_user("alice", "agent-1"));
        assert!(!same_user("", ""));
    }

    #[test]
    fn names_are_one_clean_line() {
        assert_eq!(clean_name(" alice\n\u{1b}[31m "), "alice[31m");
        assert_eq!(clean_reason("a\nb"), "a b");
    }
}
