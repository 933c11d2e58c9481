//! `kubeleash replay --html OUT FILE`: a recorded session as one self-contained HTML page for a
//! person to read: whether the chain of hashes is intact, a summary, the approvals, and the
//! timeline with filters by identity, decision and resource.
//!
//! Every recorded string was written by the agent or by the upstream (a target, a body, a reason
//! that quotes them), so every one is escaped: terminal controls and bidirectional overrides are
//! spelled out ([`printable`]) and `& < > " '` become entities. The page is rendered here, with no
//! data for its script to insert: the script only hides and shows rows by the tokens this module
//! put on them. The page loads nothing (a Content-Security-Policy of `default-src 'none'`), and
//! its one style and one script run only by a random nonce, so a string that escaped escaping
//! would still not run.
//!
//! ```text
//! $ kubeleash replay --html session.html session.jsonl
//! wrote session.html: 9 entries
//! ```

use kubeleash_core::record::{Outcome, RecordKind, Stream};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use kubeleash_core::display::printable;
use kubeleash_core::record::{Record, Verification};

use super::approvals;
use super::{command, decision_text};

/// The most of one body the page shows: a session of thousands of requests must stay a page a
/// browser opens, and the record keeps the rest.
const BODY_SHOWN: usize = 64 * 1024;

/// Past this size the page shows no more bodies, only where to read them: a browser opens a page
/// of tens of megabytes, not of gigabytes, and thousands of large bodies would make one.
const PAGE_BODIES_UNTIL: usize = 48 * 1024 * 1024;

/// The most chain problems listed one by one (the first is what matters).
const PROBLEMS_LISTED: usize = 20;

/// The most session ids the header names.
const SESSIONS_NAMED: usize = 5;

/// Base64 of `[maske`: every base64 value that decodes to a mask marker starts with it (Secret
/// `data` values are base64, so their markers do not read as `[masked]`).
const MARKER_B64: &str = "W21hc2tl";

/// The page's style: plain, one column, colour where it carries meaning.
const STYLE: &str = r#"/* One column of text, the system's fonts, colour only where it carries meaning. */
:root { --ok: #17623a; --ok-bg: #e6f4ea; --bad: #a4161a; --bad-bg: #fdecea; --warn: #7a4b00;
  --warn-bg: #fff4dc; --line: #d8dbe0; --muted: #5b6270; --code-bg: #f4f5f7; }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0 auto; max-width: 1400px; padding: 1rem 1.5rem 3rem; color: #1d2129;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; }
h1 { font-size: 1.5rem; margin: 0.5rem 0 0.25rem; }
h2 { font-size: 1.2rem; margin: 1.75rem 0 0.5rem; }
code, pre { font: 13px/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
code { background: var(--code-bg); border-radius: 3px; padding: 0 0.2em;
  overflow-wrap: anywhere; white-space: pre-wrap; }
pre { background: var(--code-bg); padding: 0.5rem; margin: 0.25rem 0; max-height: 24rem;
  overflow: auto; white-space: pre-wrap; overflow-wrap: anywhere; }
.meta, .small, .gloss, footer { color: var(--muted); }
.small { font-size: 0.85em; }
.gloss { max-width: 60rem; }
footer { margin-top: 2rem; font-size: 0.85em; }
.verdict { border-radius: 6px; padding: 0.25rem 1rem; border-left: 6px solid; }
.verdict h2 { margin-top: 0.6rem; }
.verdict.intact { background: var(--ok-bg); border-color: var(--ok); }
.verdict.intact h2 { color: var(--ok); }
.verdict.broken { background: var(--bad-bg); border-color: var(--bad); }
.verdict.broken h2 { color: var(--bad); }
.verdict.incomplete { background: var(--warn-bg); border-color: var(--warn); }
.verdict.incomplete h2 { color: var(--warn); }
.summary { font-size: 1.1rem; margin: 1rem 0 0.25rem; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
th, td, .grid .row > div { padding: 0.4rem 0.5rem; text-align: left; vertical-align: top;
  overflow-wrap: anywhere; min-width: 0; }
th, td { border-bottom: 1px solid var(--line); }
thead th { background: #fff; border-bottom: 2px solid var(--line); }
/* The timeline is a grid of rows rather than a table: a row's layout does not depend on the
   others, so a browser lays out only the rows on screen (content-visibility), and a session of
   ten thousand entries opens at once. */
.grid .row { display: grid; grid-template-columns: 3.2rem 7.5rem 9rem minmax(0, 32fr)
  minmax(0, 33fr) 13rem; border-bottom: 1px solid var(--line); }
.grid .head { position: sticky; top: 0; z-index: 1; background: #fff; font-weight: 600;
  border-bottom: 2px solid var(--line); }
.grid .rows > .row { content-visibility: auto; contain-intrinsic-size: auto 7rem; }
@media print { .grid .rows > .row { content-visibility: visible; } .filters { display: none; } }
.grid .rows > .row:nth-child(even) { background: #fafbfc; }
.grid .n, .grid .time { color: var(--muted); font-size: 0.85em; }
.grid .time b { color: #1d2129; font-weight: 500; }
.filters { display: flex; flex-wrap: wrap; gap: 0.5rem 1.25rem; align-items: center;
  padding: 0.5rem 0.75rem; margin: 0.5rem 0; background: var(--code-bg); border-radius: 6px; }
.filters select { margin-left: 0.35rem; max-width: 22rem; }
#shown-count { font-weight: 600; }
.badge { display: inline-block; min-width: 4.2em; text-align: center; border-radius: 3px;
  padding: 0 0.3em; font-size: 0.8em; font-weight: 600; text-transform: uppercase;
  background: var(--code-bg); }
.badge.e-allow { background: var(--ok-bg); color: var(--ok); }
.badge.e-deny { background: var(--bad-bg); color: var(--bad); }
.badge.e-approve { background: var(--warn-bg); color: var(--warn); }
.row.o-refused .dec .what, .row.o-expired .dec .what { color: var(--bad); font-weight: 600; }
.row.o-refused { box-shadow: inset 4px 0 var(--bad); }
.row.k-held, .row.k-approval { box-shadow: inset 4px 0 var(--warn); }
.grid .rows > .row.bad { background: var(--bad-bg); box-shadow: inset 6px 0 var(--bad); }
.badline { color: var(--bad); font-weight: 600; }
.reason { margin-top: 0.15rem; }
.status.s2 { color: var(--ok); } .status.s4, .status.s5 { color: var(--bad); }
.err { color: var(--bad); }
.masked { margin-top: 0.2rem; color: var(--ok); font-weight: 600; }
.answer-yes .answer { color: var(--ok); } .answer-no .answer { color: var(--bad); }
.answer-none .answer { color: var(--warn); }
details summary { cursor: pointer; color: #1f4f99; font-size: 0.85em; }
a { color: #1f4f99; }
"#;

/// The page's script: the filters.
const SCRIPT: &str = r#"// Filters: each row carries tokens the page's maker put there (data-ids, data-e, data-o,
// data-r); this script compares tokens and hides rows. It reads no recorded text and writes
// none but the count, so nothing recorded can become markup here.
(() => {
  'use strict';
  const rows = Array.from(document.querySelectorAll('#timeline .rows > .row'));
  const facts = rows.map((row) => ({
    ids: (row.dataset.ids || '').split(' '),
    e: row.dataset.e,
    o: row.dataset.o,
    r: row.dataset.r,
  }));
  const who = document.getElementById('f-identity');
  const decision = document.getElementById('f-decision');
  const resource = document.getElementById('f-resource');
  const count = document.getElementById('shown-count');
  const none = document.getElementById('none-shown');
  if (!who || !decision || !resource || !count) return;
  const matches = (f, i, d, r) =>
    (i === '' || f.ids.includes(i)) &&
    (d === '' || f.e === d || f.o === d) &&
    (r === '' || f.r === r);
  // One pass over the rows, touching only those whose visibility changes: fast enough for
  // tens of thousands of rows.
  const apply = () => {
    const i = who.value;
    const d = decision.value;
    const r = resource.value;
    let shown = 0;
    for (let k = 0; k < rows.length; k++) {
      const show = matches(facts[k], i, d, r);
      if (rows[k].hidden === show) rows[k].hidden = !show;
      if (show) shown++;
    }
    count.textContent = `${shown} of ${rows.length} entries shown`;
    if (none) none.hidden = shown > 0;
  };
  for (const el of [who, decision, resource]) el.addEventListener('change', apply);
  document.getElementById('f-clear')?.addEventListener('click', () => {
    who.value = '';
    decision.value = '';
    resource.value = '';
    apply();
  });
  // A reload may restore the selects' last values: show the rows they select.
  apply();
})();
"#;

/// What the page is about besides its records: the file read, and the filters of the command
/// line that already left records out.
pub struct Source<'a> {
    pub file: &'a Path,
    pub log: &'a str,
    pub filters: Vec<String>,
}

/// Write the page for `kept` (the records the command line's filters kept, in log order) to
/// `out`. Errors are lowercase and name the path.
pub fn write(
    out: &Path,
    src: &Source<'_>,
    v: &Verification,
    kept: &[&Record],
) -> Result<(), String> {
    if same_file(out, src.file) {
        return Err(format!(
            "--html `{}` is the record file itself; writing the page there would destroy the record: choose another path",
            out.display()
        ));
    }
    let nonce = nonce()?;
    let text = page(src, v, kept, &nonce);
    std::fs::write(out, text).map_err(|e| {
        format!(
            "cannot write the page to `{}`: {}",
            out.display(),
            crate::report::lower(&e.to_string())
        )
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// 128 random bits, in hex: the nonce the page's style and script carry.
fn nonce() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| format!("cannot get random bytes for the page's script nonce: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `s` for HTML text or a quoted attribute value: controls and reordering characters spelled
/// out as `\u{..}` first, then `& < > " '` as entities.
fn esc(s: &str) -> String {
    let shown = printable(s);
    let mut out = String::with_capacity(shown.len() + 8);
    for c in shown.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A multi-line text (a body) escaped line by line, so its line breaks stay line breaks; cut at
/// [`BODY_SHOWN`] bytes with a note of how much more the record holds.
fn esc_lines(s: &str) -> String {
    let mut end = s.len().min(BODY_SHOWN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s[..end]
        .split('\n')
        .map(|l| esc(l.strip_suffix('\r').unwrap_or(l)))
        .collect::<Vec<_>>()
        .join("\n");
    if end < s.len() {
        let _ = write!(
            out,
            "\n… {} more bytes in the record (run kubeleash replay --format json to read them)",
            s.len() - end
        );
    }
    out
}

/// The page.
pub fn page(src: &Source<'_>, v: &Verification, kept: &[&Record], nonce: &str) -> String {
    let mut out = String::with_capacity(4096 + kept.len() * 1600);
    let file = src.file.display().to_string();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; img-src data:; \
         base-uri 'none'; form-action 'none'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <link rel=\"icon\" href=\"data:,\">\n\
         <title>kubeleash session: {}</title>\n<style nonce=\"{nonce}\">\n{STYLE}</style>\n</head>\n<body>\n",
        esc(&file)
    );
    let bad = broken_rows(src.log, v, kept);
    header(&mut out, &file, v, kept);
    verification(&mut out, src, v, &bad);
    summary(&mut out, kept, &src.filters);
    approvals_section(&mut out, kept);
    timeline(&mut out, kept, &bad);
    let _ = write!(
        out,
        "<footer>Made by <code>kubeleash replay --html</code> from <code>{}</code>. \
         This page loads nothing from the network; everything it shows is in this file.</footer>\n\
         <script nonce=\"{nonce}\">\n{SCRIPT}</script>\n</body>\n</html>\n",
        esc(&file)
    );
    out
}

fn header(out: &mut String, file: &str, v: &Verification, kept: &[&Record]) {
    let mut sessions: Vec<&str> = Vec::new();
    for r in &v.records {
        if !sessions.contains(&r.session.as_str()) {
            sessions.push(&r.session);
        }
    }
    let more = sessions.len().saturating_sub(SESSIONS_NAMED);
    sessions.truncate(SESSIONS_NAMED);
    let first = kept.first().map(|r| r.body.time.as_str()).unwrap_or("-");
    let last = kept.last().map(|r| r.body.time.as_str()).unwrap_or("-");
    let _ = write!(
        out,
        "<header>\n<h1>What the agent did: a kubeleash session record</h1>\n\
         <p class=\"meta\">Record <code>{}</code> · session {}{} · from {} to {}</p>\n</header>\n",
        esc(file),
        sessions
            .iter()
            .map(|s| format!("<code>{}</code>", esc(s)))
            .collect::<Vec<_>>()
            .join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        },
        esc(first),
        esc(last)
    );
}

/// The chain's verdict, first on the page and in plain words.
fn verification(out: &mut String, src: &Source<'_>, v: &Verification, bad: &HashMap<&str, usize>) {
    let n = v.records.len();
    let marked = |line: usize| {
        if bad.values().any(|&l| l == line) {
            format!(" The entry on line {line} is marked in the timeline below.")
        } else {
            String::new()
        }
    };
    let (class, title, text) = match v.problems.first() {
        Some((line, problem)) => (
            "broken",
            "✘ The record has been changed or damaged".to_string(),
            format!(
                "The first problem is on line {line} of the file: {}. \
                 Each entry carries a fingerprint (a SHA-256 hash) of its own content and of the \
                 entry before it, and this one does not match: an entry was edited, removed, \
                 added or moved after it was written. Do not take this page as an account of \
                 the session.{}",
                esc(problem),
                marked(*line)
            ),
        ),
        None if v.warnings.is_empty() => (
            "intact",
            "✔ The record is intact".to_string(),
            format!(
                "All {} entries are present, in the order they were written, none has been \
                 changed since, and the record ends with the closing entry a finished session \
                 writes. (Each entry carries a fingerprint of its own content and of the entry \
                 before it, so an edit, a removal, an addition or a reordering would show here.)",
                n.saturating_sub(1)
            ),
        ),
        None => (
            "incomplete",
            "⚠ The record is intact, but it may not be complete".to_string(),
            format!(
                "The {n} entries read fit together and none has been changed, but the record \
                 does not end the way a finished session does (see below): requests made after \
                 its last entry are not in it."
            ),
        ),
    };
    let _ = write!(
        out,
        "<section id=\"verification\" class=\"verdict {class}\">\n<h2>{title}</h2>\n<p>{text}</p>\n"
    );
    if v.problems.len() > 1 {
        out.push_str("<p>Further problems:</p>\n<ul class=\"problems\">\n");
        for (line, p) in v.problems.iter().skip(1).take(PROBLEMS_LISTED) {
            let _ = writeln!(out, "<li>line {line}: {}</li>", esc(p));
        }
        if v.problems.len() > PROBLEMS_LISTED + 1 {
            let _ = writeln!(
                out,
                "<li>and {} more (run <code>kubeleash replay --verify</code> for all of them)</li>",
                v.problems.len() - PROBLEMS_LISTED - 1
            );
        }
        out.push_str("</ul>\n");
    }
    if !v.warnings.is_empty() {
        out.push_str("<ul class=\"warnings\">\n");
        for w in &v.warnings {
            let _ = writeln!(out, "<li>Note: {}.</li>", esc(w));
        }
        out.push_str("</ul>\n");
    }
    let _ = writeln!(
        out,
        "<p class=\"how\">Checked when this page was made; to check the file again, run \
         <code>kubeleash replay --verify {}</code>.</p>\n</section>",
        esc(&src.file.display().to_string())
    );
}

/// Whether a record is the last record of a request (a request's own record, not the `held`,
/// `approval` or `forwarded` records on its way).
fn is_request(r: &Record) -> bool {
    r.body.kind == RecordKind::Request
}

fn summary(out: &mut String, kept: &[&Record], filters: &[String]) {
    let requests = kept.iter().filter(|r| is_request(r)).count();
    let denied = kept
        .iter()
        .filter(|r| is_request(r) && r.body.decision.outcome == Outcome::Refused)
        .count();
    let expired = kept
        .iter()
        .filter(|r| is_request(r) && r.body.decision.outcome == Outcome::Expired)
        .count();
    let held = approvals::figures(kept).total.asked;
    let responses = || kept.iter().filter_map(|r| r.body.response.as_ref());
    let masked = responses().filter(|r| r.stream == Stream::Masked).count();
    let recorded = responses().filter(|r| r.body.is_some()).count();
    let with_markers = responses()
        .filter(|r| r.body.as_deref().is_some_and(shows_markers))
        .count();
    let _ = write!(
        out,
        "<section id=\"summary\">\n<p class=\"summary\"><b>{requests}</b> {}, \
         <b>{denied}</b> denied, <b>{held}</b> held for a person's approval, \
         <b>{masked}</b> masked {}{}.</p>\n",
        plural(requests, "request", "requests"),
        plural(masked, "response", "responses"),
        if expired > 0 {
            format!(", <b>{expired}</b> expired with nobody answering")
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "<p class=\"gloss\">Denied: kubeleash refused the request, by its policy or by a \
         person's answer. Held: the policy asked a person before letting it through. Masked: \
         the response went through kubeleash's secret masker, which replaces secret values with \
         <code>[masked]</code> before the agent sees them; {}.</p>",
        if recorded == 0 {
            "this record keeps no response bodies, so which ones had secrets is not known"
                .to_string()
        } else {
            format!(
                "{with_markers} of the {recorded} response {} the record keeps {} masked values",
                plural(recorded, "body", "bodies"),
                if with_markers == 1 { "shows" } else { "show" }
            )
        }
    );
    if !filters.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"gloss\">Only the entries matching {} are in this page.</p>",
            filters
                .iter()
                .map(|f| format!("<code>{}</code>", esc(f)))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    out.push_str("</section>\n");
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// Whether a body shows a mask marker, as it is or base64-encoded (a Secret's `data`).
fn shows_markers(body: &str) -> bool {
    body.contains("[masked") || !b64_markers(body).is_empty()
}

/// The base64 values in `body` that decode to a mask marker, each with what it decodes to.
fn b64_markers(body: &str) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = Vec::new();
    for (at, _) in body.match_indices(MARKER_B64) {
        let token: String = body[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
            .collect();
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&token) else {
            continue;
        };
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        if text.starts_with("[masked") && !found.iter().any(|(t, _)| *t == token) {
            found.push((token, text));
        }
    }
    found
}

/// One approval: the request held for it and the record that settled it.
struct Ask<'a> {
    id: &'a str,
    held: Option<&'a Record>,
    answer: Option<&'a Record>,
}

/// The approvals in the order they were asked: every approval id with its `held` record and
/// the record that answered it (approved, denied, expired), if any.
fn asks<'a>(kept: &[&'a Record]) -> Vec<Ask<'a>> {
    let mut list: Vec<Ask<'a>> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for r in kept.iter().copied() {
        let d = &r.body.decision;
        let Some(id) = d.approval_id.as_deref().filter(|_| !d.coalesced) else {
            continue;
        };
        let i = *at.entry(id).or_insert_with(|| {
            list.push(Ask {
                id,
                held: None,
                answer: None,
            });
            list.len() - 1
        });
        let ask = &mut list[i];
        let answers = match r.body.kind {
            RecordKind::Held => {
                ask.held.get_or_insert(r);
                false
            }
            RecordKind::Approval | RecordKind::Expired => true,
            RecordKind::Request => {
                d.outcome == Outcome::Expired
                    || (d.outcome == Outcome::Refused && d.approver.is_some())
            }
            _ => false,
        };
        if answers && ask.answer.is_none() {
            ask.answer = Some(r);
        }
    }
    list
}

/// An approval's answer in words, and its class (`yes`, `no`, `none`).
fn answer_text(a: &Ask<'_>) -> (&'static str, String) {
    let Some(r) = a.answer else {
        return (
            "none",
            "no answer yet: still waiting when the record ends (or the proxy stopped)".into(),
        );
    };
    let d = &r.body.decision;
    let by = esc(d.approver.as_deref().unwrap_or("?"));
    match (r.body.kind, d.outcome) {
        (RecordKind::Approval, _) => (
            "yes",
            format!("<b>approved</b> by <b class=\"approver\">{by}</b>"),
        ),
        (RecordKind::Expired, _) => (
            "none",
            format!(
                "approved by <b class=\"approver\">{by}</b>, but the agent never sent the request again"
            ),
        ),
        (_, Outcome::Expired) => ("none", "nobody answered in time: <b>expired</b>".into()),
        _ if d.approver_reason.as_deref() == Some("self-approval") => (
            "no",
            format!(
                "<b>refused</b>: <b class=\"approver\">{by}</b> tried to approve their own request"
            ),
        ),
        _ if d.approver.as_deref() == Some("kubeleash") => (
            "no",
            "<b>withdrawn</b> by kubeleash itself before anyone answered".into(),
        ),
        _ => (
            "no",
            format!("<b>denied</b> by <b class=\"approver\">{by}</b>"),
        ),
    }
}

fn approvals_section(out: &mut String, kept: &[&Record]) {
    let list = asks(kept);
    out.push_str("<section id=\"approvals\">\n<h2>Approvals</h2>\n");
    if list.is_empty() {
        out.push_str(
            "<p class=\"gloss\">No request was held for a person's approval.</p>\n</section>\n",
        );
        return;
    }
    out.push_str(
        "<p class=\"gloss\">Requests the policy held until a person answered. The approver was \
         shown the request and its body (masked); the record does not keep the dry-run diff an \
         approvals channel may also have shown.</p>\n\
         <table class=\"approvals\">\n<thead><tr><th>Asked</th><th>Request</th><th>Answer</th>\
         <th>Answered</th><th>Approver's reason</th><th>What the approver saw</th></tr></thead>\n<tbody>\n",
    );
    for a in &list {
        approval_row(out, a);
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

fn approval_row(out: &mut String, a: &Ask<'_>) {
    let first = a.held.or(a.answer);
    let (class, answer) = answer_text(a);
    let _ = write!(
        out,
        "<tr class=\"answer-{class}\" data-approval=\"{}\">",
        esc(a.id)
    );
    match a.held {
        Some(h) => {
            let _ = write!(
                out,
                "<td><a href=\"#e{}\">{}</a></td>",
                h.seq,
                esc(&h.body.time)
            );
        }
        None => out.push_str("<td>(before this record)</td>"),
    }
    match first {
        Some(r) => {
            let _ = write!(
                out,
                "<td><code class=\"cmd\">{}</code><div>by {} · rule <code>{}</code></div>\
                 <div class=\"small\">approval <code>{}</code></div></td>",
                esc(&command(r)),
                who_inline(r),
                esc(r.body.decision.rule.as_deref().unwrap_or("-")),
                esc(a.id)
            );
        }
        None => out.push_str("<td></td>"),
    }
    let _ = write!(out, "<td class=\"answer\">{answer}</td>");
    match a.answer {
        Some(r) => {
            let waited = r
                .body
                .decision
                .waited_ms
                .map(|w| {
                    format!(
                        "<div class=\"small\">after {}</div>",
                        approvals::duration(w)
                    )
                })
                .unwrap_or_default();
            let _ = write!(
                out,
                "<td><a href=\"#e{}\">{}</a>{waited}</td>",
                r.seq,
                esc(&r.body.time)
            );
        }
        None => out.push_str("<td>-</td>"),
    }
    let reason = a
        .answer
        .and_then(|r| r.body.decision.approver_reason.as_deref())
        .map(esc)
        .unwrap_or_else(|| "<span class=\"small\">none given</span>".into());
    let _ = write!(out, "<td>{reason}</td><td>");
    if let Some(body) = first.and_then(|r| r.body.request.body.as_deref()) {
        details(out, "request body (masked)", body);
    } else {
        out.push_str("<span class=\"small\">the request line only (no body)</span>");
    }
    if let Some(g) = a.answer.and_then(|r| r.body.decision.grant.as_ref()) {
        let text = serde_json::to_string_pretty(g).unwrap_or_default();
        details(out, "grant left (a wider rule, for later requests)", &text);
    }
    out.push_str("</td></tr>\n");
}

/// A collapsed block of text; past [`PAGE_BODIES_UNTIL`], where to read it instead.
fn details(out: &mut String, label: &str, text: &str) {
    if out.len() > PAGE_BODIES_UNTIL {
        let _ = write!(
            out,
            "<div class=\"small\">{} not shown: this page is full (kubeleash replay --format json has it)</div>",
            esc(label)
        );
        return;
    }
    let _ = write!(
        out,
        "<details><summary>{}</summary><pre>{}</pre></details>",
        esc(label),
        esc_lines(text)
    );
}

fn who_inline(r: &Record) -> String {
    let user = &r.body.identity.user;
    format!(
        "<b>{}</b>",
        if user.is_empty() {
            "anonymous".to_string()
        } else {
            esc(user)
        }
    )
}

/// The tokens the filters match rows by: an identity (user or group), a decision (effect or
/// outcome), a resource. The page's script sees only these tokens, never a recorded string.
#[derive(Default)]
struct Facets {
    identities: BTreeMap<(u8, String), usize>,
    effects: BTreeMap<String, usize>,
    outcomes: BTreeMap<String, usize>,
    resources: BTreeMap<String, usize>,
}

const USER: u8 = 0;
const GROUP: u8 = 1;

impl Facets {
    fn of(kept: &[&Record]) -> Facets {
        let mut f = Facets::default();
        for r in kept {
            f.identities.insert((USER, user_name(r)), 0);
            for g in &r.body.identity.groups {
                f.identities.insert((GROUP, g.clone()), 0);
            }
            f.effects.insert(r.body.decision.effect.clone(), 0);
            f.outcomes
                .insert(r.body.decision.outcome.as_str().to_string(), 0);
            f.resources.insert(resource(r), 0);
        }
        // Number them in their sorted order: that is the order of the options too.
        for map in [&mut f.effects, &mut f.outcomes, &mut f.resources] {
            for (i, v) in map.values_mut().enumerate() {
                *v = i;
            }
        }
        for (i, v) in f.identities.values_mut().enumerate() {
            *v = i;
        }
        f
    }

    fn row_tokens(&self, r: &Record) -> String {
        let mut ids = vec![
            self.identities
                .get(&(USER, user_name(r)))
                .copied()
                .unwrap_or(0),
        ];
        ids.extend(
            r.body
                .identity
                .groups
                .iter()
                .filter_map(|g| self.identities.get(&(GROUP, g.clone())).copied()),
        );
        format!(
            "data-ids=\"{}\" data-e=\"e{}\" data-o=\"o{}\" data-r=\"r{}\"",
            ids.iter()
                .map(|i| format!("i{i}"))
                .collect::<Vec<_>>()
                .join(" "),
            self.effects
                .get(&r.body.decision.effect)
                .copied()
                .unwrap_or(0),
            self.outcomes
                .get(r.body.decision.outcome.as_str())
                .copied()
                .unwrap_or(0),
            self.resources.get(&resource(r)).copied().unwrap_or(0),
        )
    }
}

fn user_name(r: &Record) -> String {
    if r.body.identity.user.is_empty() {
        "anonymous".into()
    } else {
        r.body.identity.user.clone()
    }
}

/// The resource a record is about, as the resource filter names it: `pods`,
/// `clusterrolebindings.rbac.authorization.k8s.io`.
fn resource(r: &Record) -> String {
    match &r.body.request.attributes {
        Some(a) if a.resource_request && a.api_group.is_empty() => a.resource.clone(),
        Some(a) if a.resource_request => format!("{}.{}", a.resource, a.api_group),
        Some(_) => "(a non-resource URL)".into(),
        None => "(a request kubeleash could not read)".into(),
    }
}

/// What an effect or outcome means, for the decision filter.
fn gloss(kind: char, value: &str) -> String {
    let known = match (kind, value) {
        ('e', "allow") => "allow: the policy allows it",
        ('e', "deny") => "deny: the policy denies it",
        ('e', "approve") => "approve: the policy asks a person",
        ('o', "forwarded") => "sent to the cluster",
        ('o', "refused") => "refused (denied)",
        ('o', "held") => "held for a person",
        ('o', "approved") => "approved by a person",
        ('o', "audited") => "let through in audit mode",
        ('o', "expired") => "expired (nobody answered)",
        _ => "",
    };
    if known.is_empty() {
        esc(value)
    } else {
        known.to_string()
    }
}

fn filters(out: &mut String, f: &Facets, total: usize) {
    out.push_str(
        "<form id=\"filters\" class=\"filters\">\n<label>Who <select id=\"f-identity\">\
         <option value=\"\">everyone</option>",
    );
    for ((kind, name), i) in &f.identities {
        let k = if *kind == USER { "user" } else { "group" };
        let _ = write!(out, "<option value=\"i{i}\">{k}: {}</option>", esc(name));
    }
    out.push_str(
        "</select></label>\n<label>Decision <select id=\"f-decision\">\
         <option value=\"\">every decision</option><optgroup label=\"What the policy said\">",
    );
    for (v, i) in &f.effects {
        let _ = write!(out, "<option value=\"e{i}\">{}</option>", gloss('e', v));
    }
    out.push_str("</optgroup><optgroup label=\"What kubeleash did\">");
    for (v, i) in &f.outcomes {
        let _ = write!(out, "<option value=\"o{i}\">{}</option>", gloss('o', v));
    }
    out.push_str(
        "</optgroup></select></label>\n<label>Resource <select id=\"f-resource\">\
         <option value=\"\">every resource</option>",
    );
    for (v, i) in &f.resources {
        let _ = write!(out, "<option value=\"r{i}\">{}</option>", esc(v));
    }
    let _ = write!(
        out,
        "</select></label>\n<button type=\"button\" id=\"f-clear\">Show all</button>\n\
         <output id=\"shown-count\">{total} of {total} entries shown</output>\n</form>\n"
    );
}

fn timeline(out: &mut String, kept: &[&Record], bad: &HashMap<&str, usize>) {
    let facets = Facets::of(kept);
    out.push_str(
        "<section id=\"timeline-section\">\n<h2>Timeline</h2>\n<p class=\"gloss\">Every entry of \
         the record, in order: one per request, and for a request held for approval also its \
         hold, its answer and its sending. The command is what the request amounts to in \
         kubectl, the Kubernetes command line.</p>\n",
    );
    filters(out, &facets, kept.len());
    out.push_str(
        "<div id=\"timeline\" class=\"grid\" role=\"table\">\n<div class=\"row head\" role=\"row\">\
         <div role=\"columnheader\">#</div><div role=\"columnheader\">Time</div>\
         <div role=\"columnheader\">Who</div><div role=\"columnheader\">Request</div>\
         <div role=\"columnheader\">Decision</div><div role=\"columnheader\">Response</div></div>\n\
         <div class=\"rows\" role=\"rowgroup\">\n",
    );
    for r in kept {
        row(out, r, &facets, bad.get(r.hash.as_str()).copied());
    }
    out.push_str(
        "</div>\n</div>\n<p id=\"none-shown\" class=\"gloss\" hidden>No entry matches these \
         filters.</p>\n</section>\n",
    );
}

/// The rows to mark: the hash of each kept record that a chain problem names, with its line.
fn broken_rows<'a>(log: &str, v: &Verification, kept: &[&'a Record]) -> HashMap<&'a str, usize> {
    let lines: Vec<&str> = log.split('\n').collect();
    let named: HashMap<String, usize> = v
        .problems
        .iter()
        .filter_map(|(n, _)| {
            let line = lines.get(n.checked_sub(1)?)?;
            Some((serde_json::from_str::<Record>(line).ok()?.hash, *n))
        })
        .collect();
    kept.iter()
        .filter_map(|r| named.get(&r.hash).map(|n| (r.hash.as_str(), *n)))
        .collect()
}

fn row(out: &mut String, r: &Record, f: &Facets, broken_line: Option<usize>) {
    let d = &r.body.decision;
    let mut class = format!(
        "k-{} o-{}",
        token(r.body.kind.as_str()),
        token(d.outcome.as_str())
    );
    if broken_line.is_some() {
        class.push_str(" bad");
    }
    let _ = write!(
        out,
        "<div id=\"e{}\" class=\"row {class}\" role=\"row\" {}><div class=\"n\" role=\"cell\">{}</div>\
         <div class=\"time\" role=\"cell\">{}</div>",
        r.seq,
        f.row_tokens(r),
        r.seq,
        time_cell(&r.body.time)
    );
    who_cell(out, r);
    request_cell(out, r, broken_line);
    decision_cell(out, r);
    response_cell(out, r);
    out.push_str("</div>\n");
}

/// An RFC 3339 time as its date over its time of day; any other text as it is.
fn time_cell(t: &str) -> String {
    match (t.get(..10), t.get(11..)) {
        (Some(date), Some(time)) if t.as_bytes().get(10) == Some(&b'T') => {
            format!("{}<br><b>{}</b>", esc(date), esc(time))
        }
        _ => esc(t),
    }
}

/// A recorded word as a CSS class: letters only, so it cannot end the attribute.
fn token(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphabetic())
        .take(16)
        .collect()
}

fn who_cell(out: &mut String, r: &Record) {
    let groups = &r.body.identity.groups;
    let _ = write!(out, "<div class=\"who\" role=\"cell\">{}", who_inline(r));
    if !groups.is_empty() {
        let _ = write!(
            out,
            "<div class=\"small\">groups: {}</div>",
            groups.iter().map(|g| esc(g)).collect::<Vec<_>>().join(", ")
        );
    }
    out.push_str("</div>");
}

fn request_cell(out: &mut String, r: &Record, broken_line: Option<usize>) {
    let q = &r.body.request;
    out.push_str("<div class=\"req\" role=\"cell\">");
    if let Some(n) = broken_line {
        let _ = write!(
            out,
            "<div class=\"badline\">⚠ line {n}: this entry does not fit the chain; it is not what was recorded</div>"
        );
    }
    let _ = write!(out, "<code class=\"cmd\">{}</code>", esc(&command(r)));
    let _ = write!(
        out,
        "<div class=\"small target\">{} <span class=\"t\">{}</span>{}</div>",
        esc(&q.method),
        esc(&q.target),
        if q.dry_run { " · dry run" } else { "" }
    );
    if let Some(why) = &q.agent_reason {
        let _ = write!(
            out,
            "<div class=\"small\">the agent's reason: {}</div>",
            esc(why)
        );
    }
    if let Some(body) = &q.body {
        details(out, "request body (masked)", body);
    }
    out.push_str("</div>");
}

fn decision_cell(out: &mut String, r: &Record) {
    let d = &r.body.decision;
    let what = decision_text(r);
    let _ = write!(
        out,
        "<div class=\"dec\" role=\"cell\"><span class=\"badge e-{}\">{}</span> <span class=\"what\">{}</span>",
        token(&d.effect),
        esc(&d.effect),
        esc(&what)
    );
    // The timeline's words name the rule already, but for an answer.
    if let Some(rule) = d
        .rule
        .as_ref()
        .filter(|r| !what.contains(&format!("rule {}", printable(r))))
    {
        let _ = write!(
            out,
            "<div class=\"rule\">rule <code>{}</code></div>",
            esc(rule)
        );
    }
    if !d.reason.is_empty() {
        let _ = write!(out, "<div class=\"reason\">{}</div>", esc(&d.reason));
    }
    if let Some(by) = &d.approver {
        let _ = write!(
            out,
            "<div class=\"small\">answered by <b>{}</b>{}</div>",
            esc(by),
            d.approver_reason
                .as_deref()
                .map(|w| format!(": {}", esc(w)))
                .unwrap_or_default()
        );
    }
    if d.grant.is_some() && r.body.kind == RecordKind::Approval {
        out.push_str("<div class=\"small\">left a grant (see Approvals)</div>");
    }
    if d.coalesced {
        out.push_str(
            "<div class=\"small\">answered by an earlier approval, without asking again</div>",
        );
    }
    out.push_str("</div>");
}

fn response_cell(out: &mut String, r: &Record) {
    out.push_str("<div class=\"resp\" role=\"cell\">");
    let Some(resp) = &r.body.response else {
        let pending = match r.body.kind {
            RecordKind::Held => "none yet: waiting for a person",
            RecordKind::Approval | RecordKind::Forwarded => "in the request's next entry",
            _ => "none recorded",
        };
        let _ = write!(out, "<span class=\"small\">{pending}</span></div>");
        return;
    };
    let phrase = http::StatusCode::from_u16(resp.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let how = match resp.stream {
        Stream::Masked => "through the secret masker".to_string(),
        Stream::Passthrough => "a connection passed through (exec, attach, port-forward)".into(),
        Stream::Refused => "refused by kubeleash".into(),
        Stream::Answered => "answered by kubeleash itself; the request was not sent".into(),
        Stream::MaskedLimited => {
            "through the secret masker, then cut to the log's limitBytes".into()
        }
        Stream::Unknown => "not recorded".into(),
    };
    let _ = write!(
        out,
        "<b class=\"status s{}\">{} {phrase}</b><div class=\"small\">{how} · {} bytes · {} ms</div>",
        resp.status / 100,
        resp.status,
        resp.bytes,
        resp.duration_ms
    );
    if let Some(e) = &resp.error {
        let _ = write!(out, "<div class=\"small err\">{}</div>", esc(e));
    }
    if let Some(body) = &resp.body {
        let markers = b64_markers(body);
        if body.contains("[masked") || !markers.is_empty() {
            out.push_str("<div class=\"masked\">secret values masked");
            for (token, text) in markers.iter().take(4) {
                let _ = write!(
                    out,
                    "<div class=\"small\"><code>{}</code> is base64 for <code>{}</code></div>",
                    esc(token),
                    esc(text)
                );
            }
            out.push_str("</div>");
        }
        details(out, "response body (masked)", body);
    }
    out.push_str("</div>");
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup_and_no_controls() {
        assert_eq!(
            esc("</script><img src=x onerror='a(\"1\")'>&"),
            "&lt;/script&gt;&lt;img src=x onerror=&#39;a(&quot;1&quot;)&#39;&gt;&amp;"
        );
        assert_eq!(esc("a\u{202e}b\u{1b}"), r"a\u{202e}b\u{1b}");
        assert_eq!(esc_lines("a<\nb>\r\n"), "a&lt;\nb&gt;\n");
    }

    #[test]
    fn long_bodies_are_cut_on_a_character() {
        let body = "é".repeat(BODY_SHOWN);
        let shown = esc_lines(&body);
        assert!(
            shown.contains("more bytes in the record"),
            "{}",
            &shown[shown.len() - 100..]
        );
    }

    #[test]
    fn a_full_page_shows_no_more_bodies() {
        let mut out = "x".repeat(PAGE_BODIES_UNTIL + 1);
        details(&mut out, "request body (masked)", "{\"a\":1}");
        assert!(out.ends_with("request body (masked) not shown: this page is full (kubeleash replay --format json has it)</div>"));
        let mut out = String::new();
        details(&mut out, "b", "<x>");
        assert_eq!(
            out,
            "<details><summary>b</summary><pre>&lt;x&gt;</pre></details>"
        );
    }

    #[test]
    fn base64_markers_are_read() {
        let body = r#"{"data":{"a":"W21hc2tlZF0=","b":"W21hc2tlZF0=","c":"aGk="}}"#;
        assert_eq!(
            b64_markers(body),
            vec![("W21hc2tlZF0=".to_string(), "[masked]".to_string())]
        );
        assert!(!shows_markers(r#"{"c":"W21hc2tlX"}"#));
    }

    #[test]
    fn tokens_are_letters_only() {
        assert_eq!(token("re\"fused><x"), "refusedx");
    }
}
