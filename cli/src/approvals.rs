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
//! {"op":"deny","id":"…","by":"…","reason":"…"}                 → {"ok":true}
//!                                      an unknown id → {"ok":false,"error":"no pending approval `x`"}
//! ```
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
use kubeleash_tower::ApprovalRequest;
use serde::Deserialize;

pub use chat::ChatApprover;
pub use client::{Args, run};
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

    #[test]
    fn names_are_one_clean_line() {
        assert_eq!(clean_name(" alice\n\u{1b}[31m "), "alice[31m");
        assert_eq!(clean_reason("a\nb"), "a b");
    }
}
