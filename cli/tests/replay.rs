//! `kubeleash replay`: the requests kubectl sends, recorded, replay as the commands they were;
//! and every kind of tampering is found by `--verify`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::path::PathBuf;
use std::process::Command;

use kubeleash_core::policy::Identity;
use kubeleash_core::record::{
    Chain, Outcome, RecordBody, RecordKind, RecordedDecision, RecordedRequest,
};

/// method, target, content type, upgrade, expected command
type Form = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
);

const FORMS: &[Form] = &[
    (
        "GET",
        "/api/v1/namespaces/dev/secrets?limit=500",
        None,
        None,
        "kubectl get secrets -n dev -o yaml",
    ),
    (
        "GET",
        "/api/v1/namespaces/dev/secrets/db",
        None,
        None,
        "kubectl get secret db -n dev -o yaml",
    ),
    (
        "DELETE",
        "/api/v1/namespaces/prod",
        Some("application/json"),
        None,
        "kubectl delete namespace prod",
    ),
    (
        "PATCH",
        "/apis/apps/v1/namespaces/dev/deployments/web?fieldManager=kubectl&fieldValidation=Strict&force=false",
        Some("application/apply-patch+yaml"),
        None,
        "kubectl apply --server-side --field-manager=kubectl -n dev -f -",
    ),
    (
        "GET",
        "/api/v1/namespaces/dev/pods/web-1/exec?command=sh&container=app&stdin=true&stdout=true&tty=true",
        None,
        Some("websocket"),
        "kubectl exec web-1 -n dev -it -c app -- sh",
    ),
    (
        "GET",
        "/api/v1/namespaces/dev/pods/web-1/log?container=app&follow=true",
        None,
        None,
        "kubectl logs web-1 -n dev -c app -f",
    ),
    (
        "POST",
        "/api/v1/namespaces/dev/serviceaccounts/builder/token",
        Some("application/json"),
        None,
        "kubectl create token builder -n dev",
    ),
    (
        "GET",
        "/api/v1/namespaces/dev/pods?resourceVersion=100&watch=true",
        None,
        None,
        "kubectl get pods -n dev --watch",
    ),
    (
        "POST",
        "/apis/proxy.example/v1/weird",
        None,
        None,
        "kubectl create -f -",
    ),
    ("OPTIONS", "/metrics", None, None, "OPTIONS /metrics"),
];

fn log_of(forms: &[Form]) -> String {
    let mut chain = Chain::new("test");
    let mut out = String::new();
    for (i, (method, target, ct, upgrade, _)) in forms.iter().enumerate() {
        let body = RecordBody {
            time: format!("2026-11-27T10:00:{i:02}.000Z"),
            kind: RecordKind::Request,
            identity: Identity::new("agent-1", ["ai-agents"]),
            request: RecordedRequest {
                attributes: {
                    let mut h = http::HeaderMap::new();
                    if let Some(u) = upgrade {
                        h.insert("upgrade", u.parse().unwrap());
                    }
                    kubeleash_core::request::classify(method, target, &h)
                        .ok()
                        .map(|r| r.attributes)
                },
                method: method.to_string(),
                target: target.to_string(),
                content_type: ct.map(str::to_string),
                upgrade: upgrade.map(str::to_string),
                body: (*method == "PATCH").then(|| {
                    r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"}}"#
                        .to_string()
                }),
                ..Default::default()
            },
            decision: RecordedDecision {
                effect: if i % 3 == 2 { "deny" } else { "allow" }.into(),
                outcome: if i % 3 == 2 {
                    Outcome::Refused
                } else {
                    Outcome::Forwarded
                },
                reason: "test".into(),
                rule: Some(format!("rule-{i}")),
                ..Default::default()
            },
            response: None,
            checkpoint: None,
        };
        out.push_str(&chain.seal(body));
        out.push('\n');
    }
    out.push_str(&chain.end("2026-11-27T10:01:00.000Z"));
    out.push('\n');
    out
}

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kubeleash-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn replay(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kubeleash"))
        .arg("replay")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_kubectl_form_replays_as_its_command() {
    let p = write("forms.jsonl", &log_of(FORMS));
    let (code, out, err) = replay(&[p.to_str().unwrap(), "--verify"]);
    assert_eq!(code, 0, "{err}");
    for (_, _, _, _, expected) in FORMS {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }
    assert!(
        out.contains("<<'EOF'\n{\"apiVersion\":\"apps/v1\""),
        "apply shows its (masked) body:\n{out}"
    );
    assert!(out.contains("DENIED by rule rule-2"), "{out}");
    assert!(err.contains("verified: 11 records"), "{err}");
}

#[test]
fn filters_and_formats() {
    let p = write("filters.jsonl", &log_of(FORMS));
    let (_, out, _) = replay(&[p.to_str().unwrap(), "--decision", "refused"]);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("2026")).count(),
        3,
        "{out}"
    );
    let (_, out, _) = replay(&[
        p.to_str().unwrap(),
        "--since",
        "2026-11-27T10:00:05Z",
        "--until",
        "2026-11-27T10:00:07Z",
    ]);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("2026")).count(),
        2,
        "{out}"
    );
    let (_, out, _) = replay(&[p.to_str().unwrap(), "--identity", "someone-else"]);
    assert!(out.is_empty());
    let (_, out, _) = replay(&[p.to_str().unwrap(), "--format", "audit"]);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(first["verb"], "list");
    assert_eq!(first["objectRef"]["resource"], "secrets");
    let (_, out, _) = replay(&[p.to_str().unwrap(), "--format", "json"]);
    assert_eq!(out.lines().count(), 10);
}

#[test]
fn verify_finds_every_kind_of_tampering() {
    let log = log_of(FORMS);
    let lines: Vec<&str> = log.lines().collect();
    let join = |ls: &[&str]| ls.iter().map(|l| format!("{l}\n")).collect::<String>();
    let mut reordered = lines.clone();
    reordered.swap(3, 4);
    let cases = [
        (
            "edited",
            log.replacen(
                "\"target\":\"/api/v1/namespaces/prod\"",
                "\"target\":\"/api/v1/namespaces/dev\"",
                1,
            ),
            "edited.jsonl:3: chain broken: record 2 was edited",
        ),
        (
            "deleted",
            join(&[&lines[..4], &lines[5..]].concat()),
            "deleted.jsonl:5: chain broken: record 5 does not follow",
        ),
        (
            "reordered",
            join(&reordered),
            "reordered.jsonl:4: chain broken: record 4 does not follow",
        ),
        ("torn", log[..log.len() - 30].to_string(), "torn"),
        ("cut", join(&lines[..6]), "no closing record"),
    ];
    for (name, text, expected) in cases {
        let p = write(&format!("{name}.jsonl"), &text);
        let (code, _, err) = replay(&[p.to_str().unwrap(), "--verify"]);
        assert_eq!(code, 1, "{name}: --verify must fail\n{err}");
        assert!(
            err.contains(expected),
            "{name}: expected `{expected}` in:\n{err}"
        );
    }
    let open = write("open.jsonl", &join(&lines[..6]));
    let (code, _, err) = replay(&[open.to_str().unwrap(), "--verify", "--allow-open"]);
    assert_eq!(
        code, 0,
        "a running recorder's log verifies with --allow-open: {err}"
    );
}

/// Whatever the agent put in a recorded string (identity, rule, target, body), the timeline
/// prints no control character or terminal escape, every command word is quoted, and a body
/// cannot end its here-document early.
#[test]
fn hostile_records_print_quoted_and_escaped() {
    let mut chain = Chain::new("test");
    let mut log = String::new();
    let hostile = [
        (
            "POST",
            "/api/v1/namespaces/x$(touch${IFS}PWNED)/configmaps",
            "{\"a\":1}\nEOF\ntouch PWNED\n",
        ),
        ("GET", "/apis/x`id`.io/v1/foos", ""),
        ("GET", "/api/v1/namespaces/dev/pods/a'b|id", ""),
    ];
    for (i, (method, target, body)) in hostile.iter().enumerate() {
        let rec = RecordBody {
            time: format!("2026-11-27T10:00:{i:02}.000Z"),
            kind: RecordKind::Request,
            identity: Identity::new("agent\u{1b}]0;owned\u{7}\u{9b}2J", ["g\u{202e}x"]),
            request: RecordedRequest {
                method: method.to_string(),
                target: target.to_string(),
                content_type: Some("application/json".into()),
                body: (!body.is_empty()).then(|| body.to_string()),
                ..Default::default()
            },
            decision: RecordedDecision {
                effect: "allow".into(),
                outcome: Outcome::Forwarded,
                reason: "r\u{1b}[2J".into(),
                rule: Some("rule\u{1b}[31m".into()),
                ..Default::default()
            },
            response: None,
            checkpoint: None,
        };
        log.push_str(&chain.seal(rec));
        log.push('\n');
    }
    let p = write("hostile.jsonl", &log);
    for format in ["kubectl", "json", "audit"] {
        let (_, out, err) = replay(&[p.to_str().unwrap(), "--format", format]);
        let bad = |c: char| c.is_control() && c != '\n' || matches!(c, '\u{202a}'..='\u{202e}');
        assert!(
            !out.chars().any(bad),
            "{format}: raw control character in:\n{out:?}"
        );
        assert!(
            !err.chars().any(bad),
            "{format}: raw control character in:\n{err:?}"
        );
        if format != "kubectl" {
            for line in out.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert!(v.is_object());
            }
        }
    }
    let (_, out, _) = replay(&[p.to_str().unwrap()]);
    assert!(out.contains(r"agent\u{1b}]0;owned\u{7}\u{9b}2J"), "{out}");
    assert!(out.contains(r"rule\u{1b}[31m"), "{out}");
    assert!(
        out.contains("kubectl create -n 'x$(touch${IFS}PWNED)' -f - <<'EOF1'\n"),
        "{out}"
    );
    // A target refused for its invalid group is printed whole, in single quotes.
    assert!(out.contains("GET '/apis/x`id`.io/v1/foos'"), "{out}");
    assert!(
        out.contains("kubectl get pod 'a'\\''b|id' -n dev -o yaml"),
        "{out}"
    );
    // A body line `EOF` does not end the here-document: its delimiter is another word.
    assert!(!out.contains("<<'EOF'\n"), "{out}");
}
