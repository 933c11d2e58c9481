//! `kubeleash learn` and `kubeleash whatif` on a real session: the one `kubeleash demo` records
//! (the sandbox API server, the proxy, kubectl as the agent, a person approving).
//!
//! A learned policy, replayed with `whatif` over the record it was learned from, changes
//! nothing; with one rule removed, `whatif` reports exactly the requests that rule let through.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::LazyLock;

use serde_json::Value;

#[path = "support/process.rs"]
mod process;
use process::{require_kubectl, sandbox_for_operator, serve};

const BIN: &str = env!("CARGO_BIN_EXE_kubeleash");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The demo's record, once per test process.
static SESSION: LazyLock<PathBuf> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("kubeleash-learn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = run(&["demo", "--no-color"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let log = said
        .lines()
        .find_map(|l| l.split_once("full log: ").map(|(_, p)| p))
        .unwrap_or_else(|| panic!("no `full log:` in the demo's output:\n{said}"))
        .trim()
        .to_string();
    let kept = dir.join("session.jsonl");
    std::fs::copy(&log, &kept).unwrap();
    kept
});

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The learned policy's rules as `(block text, record seqs it names)`, and the text without
/// any of them.
fn blocks(policy: &str) -> Vec<(String, BTreeSet<u64>)> {
    let mut out: Vec<(String, BTreeSet<u64>)> = Vec::new();
    let mut current: Option<(String, BTreeSet<u64>)> = None;
    for line in policy.lines() {
        if let Some(seqs) = line.trim().strip_prefix("# from records ") {
            if let Some(c) = current.take() {
                out.push(c);
            }
            let seqs = seqs.split(", ").map(|s| s.parse().unwrap()).collect();
            current = Some((format!("{line}\n"), seqs));
        } else if line.starts_with("  tests:") {
            if let Some(c) = current.take() {
                out.push(c);
            }
        } else if let Some((block, _)) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    out
}

#[test]
fn a_learned_policy_changes_nothing_and_each_rule_is_what_it_let_through() {
    let session = &*SESSION;
    let dir = session.parent().unwrap().to_path_buf();
    let rbac = dir.join("rbac.yaml");
    let out = run(&[
        "learn",
        "--rbac",
        rbac.to_str().unwrap(),
        session.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let learned = String::from_utf8(out.stdout).unwrap();
    let path = write(&dir, "learned.yaml", &learned);

    // It compiles, and its own tests (from the record) pass: what went through goes through,
    // what was refused is refused.
    let out = run(&["test", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}\n{learned}", text(&out));
    assert!(
        learned.contains("expect: deny"),
        "the demo's refusal is a test:\n{learned}"
    );
    assert!(
        learned.contains("expect: approve"),
        "the demo's approval is a test:\n{learned}"
    );
    // The person-approved binding is an approve rule, never an allow.
    let crb = blocks(&learned)
        .into_iter()
        .find(|(b, _)| b.contains("clusterrolebindings"))
        .unwrap_or_else(|| panic!("no rule for the approved binding:\n{learned}"));
    assert!(crb.0.contains("effect: approve"), "{}", crb.0);

    // Over its own record: no change.
    let out = run(&[
        "whatif",
        "--policy",
        path.to_str().unwrap(),
        session.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}\n{learned}", text(&out));
    assert!(text(&out).starts_with("no change"), "{}", text(&out));

    // Each rule removed: exactly the requests it let through change.
    let rules = blocks(&learned);
    assert!(rules.len() >= 3, "{learned}");
    for (block, seqs) in &rules {
        let without = learned.replacen(block.as_str(), "", 1);
        let p = write(&dir, "without.yaml", &without);
        let out = run(&[
            "whatif",
            "--json",
            "--policy",
            p.to_str().unwrap(),
            session.to_str().unwrap(),
        ]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}\nremoved:\n{block}",
            text(&out)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let changed: BTreeSet<u64> = report["changed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(&changed, seqs, "removed:\n{block}\nreport: {report:#}");
        for c in report["changed"].as_array().unwrap() {
            assert_eq!(c["after"]["effect"], "deny", "{c}");
            assert!(
                c["kubectl"].as_str().unwrap().starts_with("kubectl "),
                "{c}"
            );
        }
    }

    // The table, for a person.
    let (first, _) = &rules[0];
    let p = write(
        &dir,
        "without.yaml",
        &learned.replacen(first.as_str(), "", 1),
    );
    let out = run(&[
        "whatif",
        "--policy",
        p.to_str().unwrap(),
        session.to_str().unwrap(),
    ]);
    let table = text(&out);
    assert!(table.starts_with("SEQ  WHO"), "{table}");
    assert!(table.contains("would be decided differently"), "{table}");

    // The operator's RBAC: a Role in dev for what the agent read there.
    let rbac = std::fs::read_to_string(&rbac).unwrap();
    assert!(
        rbac.contains("kind: Role\nmetadata: {name: \"learned\", namespace: \"dev\"}"),
        "{rbac}"
    );
    assert!(rbac.contains("resources: [\"pods\"]"), "{rbac}");
}

#[test]
fn whatif_and_learn_say_what_is_wrong() {
    let out = run(&[
        "whatif",
        "--policy",
        "/nonexistent.yaml",
        "/nonexistent.jsonl",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let dir = std::env::temp_dir().join(format!("kubeleash-whatif-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = write(
        &dir,
        "p.yaml",
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec: {rules: []}\n",
    );
    let out = run(&[
        "whatif",
        "--policy",
        policy.to_str().unwrap(),
        "/nonexistent.jsonl",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("cannot read record `/nonexistent.jsonl`"),
        "{}",
        text(&out)
    );
    let empty = write(&dir, "empty.jsonl", "");
    let out = run(&["learn", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("nothing to learn"), "{}", text(&out));
}

/// Observe mode feeds `learn`: a policy that allows nothing, observed, lets everything through
/// and records what it would have refused; the policy learned from that lets it all through,
/// and `whatif` shows each request going from deny to allow.
#[test]
fn observe_mode_records_what_learn_writes_a_policy_from() {
    require_kubectl();
    let home = std::env::temp_dir().join(format!("kl-observe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let _sandbox = sandbox_for_operator(&home);
    let nothing = write(
        &home,
        "nothing.yaml",
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec: {rules: []}\n",
    );
    let p = |f: &str| home.join(f).to_str().unwrap().to_string();
    let args = [
        "proxy",
        "--policy",
        &p("nothing.yaml"),
        "--kubeconfig",
        &p("operator.kubeconfig"),
        "--listen",
        "127.0.0.1:0",
        "--record",
        &p("observed.jsonl"),
        "--mode",
        "observe",
        "--user",
        "agent-1",
        "--group",
        "ai-agents",
        "--agent-kubeconfig",
        &p("agent.kubeconfig"),
        "--agent-namespace",
        "dev",
    ];
    let (mut proxy, _) = serve(&args, Some(&home.join("proxy.stderr")));
    let kubectl = |args: &[&str]| {
        let out = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", home.join("agent.kubeconfig"))
            .env("HOME", &home)
            .output()
            .unwrap();
        assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Let through, though the policy allows nothing; masking still applies.
    kubectl(&["get", "pods", "-n", "dev"]);
    let secret = kubectl(&["get", "secret", "db-credentials", "-n", "dev", "-o", "json"]);
    assert!(secret.contains("W21hc2tlZF0="), "{secret}");
    kubectl(&[
        "create",
        "configmap",
        &format!("observed-{}", std::process::id()),
        "-n",
        "dev",
    ]);
    // Stopped as an operator stops it (SIGTERM): the record is flushed and closed.
    let pid = proxy.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let _ = proxy.0.wait();

    let record = home.join("observed.jsonl");
    let log = std::fs::read_to_string(&record).unwrap();
    assert!(log.contains(r#""outcome":"audited""#), "{log}");
    let out = run(&["learn", record.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let learned = String::from_utf8(out.stdout).unwrap();
    let path = write(&home, "learned.yaml", &learned);
    let out = run(&["test", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}\n{learned}", text(&out));
    assert!(learned.contains("resources: [\"configmaps\"]"), "{learned}");

    // Every request the observed policy would have refused, the learned one lets through.
    let out = run(&[
        "whatif",
        "--json",
        "--policy",
        path.to_str().unwrap(),
        record.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let changed = report["changed"].as_array().unwrap();
    assert_eq!(
        changed.len(),
        report["requests"].as_u64().unwrap() as usize,
        "{report:#}"
    );
    assert!(changed.len() >= 3, "{report:#}");
    for c in changed {
        assert_eq!(
            (
                c["before"]["effect"].as_str(),
                c["after"]["effect"].as_str()
            ),
            (Some("deny"), Some("allow")),
            "{c}"
        );
    }
    // And the policy that was observed, over the same record: nothing changes.
    let out = run(&[
        "whatif",
        "--policy",
        nothing.to_str().unwrap(),
        record.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let _ = std::fs::remove_dir_all(&home);
}

/// A record is the agent's own words (user names from tokens, targets, bodies): nothing in it
/// becomes policy text but quoted strings. A newline in an image or a user name does not add a
/// rule to the learned policy.
#[test]
fn hostile_record_contents_stay_quoted_in_the_learned_policy() {
    let dir = std::env::temp_dir().join(format!("kubeleash-learn-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pwn = "\n    - {name: pwn, effect: allow, verbs: [\"*\"], resources: [\"*\"]}\n#";
    let body = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web", "evil": format!("x{pwn}"), "team.example.com/owner": "ops"}},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [
            {"name": "c", "image": format!("evil.io{pwn}/x:1")},
            {"name": "d", "image": "registry.example.com/app:2"},
        ]}}},
    });
    let record = serde_json::json!({
        "seq": 0, "prev": "0".repeat(64), "session": "s",
        "time": "2026-12-05T00:00:00Z", "kind": "request",
        "identity": {"user": format!("agent{pwn}"), "groups": [format!("g{pwn}")]},
        "request": {
            "method": "POST", "target": "/apis/apps/v1/namespaces/dev/deployments",
            "attributes": {"resourceRequest": true, "verb": "create", "apiGroup": "apps", "apiVersion": "v1",
                "namespace": "dev", "resource": "deployments", "subresource": "", "name": "",
                "path": "/apis/apps/v1/namespaces/dev/deployments"},
            "contentType": "application/json", "body": body.to_string(),
        },
        "decision": {"effect": "allow", "rule": "r", "reason": "ok", "outcome": "forwarded"},
        "response": {"status": 201, "bytes": 1, "durationMs": 1, "stream": "masked"},
    });
    // A record line starts with its hash (this one does not match: learn warns and goes on).
    let line = format!(
        "{{\"hash\":\"{}\",{}",
        "0".repeat(64),
        &record.to_string()[1..]
    );
    let log = write(&dir, "hostile.jsonl", &format!("{line}\n"));
    let out = run(&["learn", log.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let learned = String::from_utf8(out.stdout).unwrap();
    let rules = learned
        .lines()
        .filter(|l| l.starts_with("    - name:"))
        .count();
    assert_eq!(rules, 1, "{learned}");
    assert!(
        !learned
            .lines()
            .any(|l| l.trim_start().starts_with("- {name: pwn")),
        "{learned}"
    );
    // The plain registry is suggested; the hostile one is not.
    assert!(
        learned.contains("matches: \"registry.example.com/*\""),
        "{learned}"
    );
    assert!(!learned.contains("evil.io"), "{learned}");
    // Labels seen are suggested; the hostile value is not.
    assert!(
        learned.contains("when: [{path: \"$.metadata.labels.app\", in: [\"web\"]}]"),
        "{learned}"
    );
    assert!(!learned.contains("evil"), "{learned}");
    assert!(learned.contains("between: [2, 2]"), "{learned}");
    // And it compiles, with its tests passing.
    let p = write(&dir, "learned.yaml", &learned);
    let out = run(&["test", p.to_str().unwrap()]);
    assert!(out.status.success(), "{}\n{learned}", text(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A hand-written record line (its hash does not match: learn and whatif warn and go on).
fn record_line(
    seq: u64,
    method: &str,
    target: &str,
    attrs: Value,
    body: Option<&str>,
    dry_run: bool,
) -> String {
    let record = serde_json::json!({
        "seq": seq, "prev": "0".repeat(64), "session": "s",
        "time": "2026-12-05T00:00:00Z", "kind": "request",
        "identity": {"user": "agent-1", "groups": ["ai-agents"]},
        "request": {"method": method, "target": target, "attributes": attrs,
            "contentType": "application/json", "dryRun": dry_run, "body": body},
        "decision": {"effect": "allow", "rule": "r", "reason": "ok", "outcome": "forwarded"},
        "response": {"status": 200, "bytes": 1, "durationMs": 1, "stream": "masked"},
    });
    format!(
        "{{\"hash\":\"{}\",{}\n",
        "0".repeat(64),
        &record.to_string()[1..]
    )
}

fn attrs(verb: &str, resource: &str, name: &str) -> Value {
    serde_json::json!({"resourceRequest": true, "verb": verb, "apiGroup": "", "apiVersion": "v1",
        "namespace": "dev", "resource": resource, "subresource": "", "name": name, "path": ""})
}

/// An agent cannot plant a wildcard in what is learned (a request for the object named `*`), nor
/// a write through a dry run; and a planted mask marker does not hide a change from whatif.
#[test]
fn planted_stars_dry_runs_and_markers_do_not_widen_or_hide() {
    let dir = std::env::temp_dir().join(format!("kubeleash-learn-planted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = [
        record_line(
            0,
            "GET",
            "/api/v1/namespaces/dev/secrets/app",
            attrs("get", "secrets", "app"),
            None,
            false,
        ),
        record_line(
            1,
            "GET",
            "/api/v1/namespaces/dev/secrets/*",
            attrs("get", "secrets", "*"),
            None,
            false,
        ),
        record_line(
            2,
            "DELETE",
            "/api/v1/namespaces/dev/configmaps/x?dryRun=All",
            attrs("delete", "configmaps", "x"),
            None,
            true,
        ),
    ]
    .concat();
    let log = write(&dir, "planted.jsonl", &log);
    let out = run(&["learn", log.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let learned = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(learned.contains("names: [\"app\"]"), "{learned}");
    assert!(!learned.contains("\"*\""), "{learned}");
    assert!(
        !learned.contains("delete"),
        "a dry run is not learned as the write: {learned}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("record 1 names `*`"),
        "{}",
        text(&out)
    );

    // A write whose recorded body carries a marker, under a policy whose rule looks at the body.
    let body =
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"k":"[masked]"}}"#;
    let log = write(
        &dir,
        "marker.jsonl",
        &record_line(
            0,
            "POST",
            "/api/v1/namespaces/dev/configmaps",
            attrs("create", "configmaps", ""),
            Some(body),
            false,
        ),
    );
    let policy = write(
        &dir,
        "conditioned.yaml",
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - {name: only-v, effect: allow, verbs: [create], resources: [configmaps], namespaces: [dev], when: [{path: \"$.data.k\", equals: v}]}\n",
    );
    let out = run(&[
        "whatif",
        "--json",
        "--policy",
        policy.to_str().unwrap(),
        log.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["changed"][0]["after"]["effect"], "undetermined",
        "{report:#}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
