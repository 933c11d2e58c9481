//! `kubeleash replay --approvals` and `--grants`: approval-fatigue figures and widened grants
//! read from records built by hand (every figure and its edge cases), and from the record of a
//! real `kubeleash proxy` in front of `kubeleash sandbox`, answered over its approvals socket.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "support/process.rs"]
mod process;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kubeleash_core::policy::Identity;
use kubeleash_core::record::{
    Chain, Outcome, RecordBody, RecordKind, RecordedDecision, RecordedRequest,
};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_kubeleash");

// ---------------------------------------------------------------------------------------------
// Records built by hand.

/// One record, as the tower layer writes it for a held configmap create.
#[derive(Clone)]
struct Rec {
    kind: &'static str,
    user: &'static str,
    rule: &'static str,
    outcome: &'static str,
    id: &'static str,
    by: Option<&'static str>,
    why: Option<&'static str>,
    waited: Option<u64>,
    coalesced: bool,
    grant: Option<Value>,
    method: &'static str,
    target: &'static str,
}

impl Rec {
    fn new(kind: &'static str, outcome: &'static str, id: &'static str) -> Rec {
        Rec {
            kind,
            user: "agent-1",
            rule: "config-needs-a-human",
            outcome,
            id,
            by: None,
            why: None,
            waited: None,
            coalesced: false,
            grant: None,
            method: "POST",
            target: "/api/v1/namespaces/dev/configmaps?fieldManager=kubectl-create",
        }
    }
    fn held(id: &'static str) -> Rec {
        Rec::new("held", "held", id)
    }
    fn by(mut self, by: &'static str, why: Option<&'static str>, waited: Option<u64>) -> Rec {
        self.by = Some(by);
        self.why = why;
        self.waited = waited;
        self
    }
    fn user(mut self, user: &'static str) -> Rec {
        self.user = user;
        self
    }
    fn rule(mut self, rule: &'static str) -> Rec {
        self.rule = rule;
        self
    }
    fn coalesced(mut self) -> Rec {
        self.coalesced = true;
        self
    }
    fn target(mut self, method: &'static str, target: &'static str) -> Rec {
        self.method = method;
        self.target = target;
        self
    }
    fn grant(mut self, g: Value) -> Rec {
        self.grant = Some(g);
        self
    }

    fn body(&self, time: String) -> RecordBody {
        RecordBody {
            time,
            kind: word(self.kind),
            identity: Identity::new(self.user, ["ai-agents"]),
            request: RecordedRequest {
                method: self.method.into(),
                target: self.target.into(),
                ..Default::default()
            },
            decision: RecordedDecision {
                effect: "approve".into(),
                rule: Some(self.rule.into()),
                reason: format!("rule \"{}\" holds it", self.rule),
                outcome: word(self.outcome),
                // "" for a record that names no approval.
                approval_id: (!self.id.is_empty()).then(|| self.id.to_string()),
                approver: self.by.map(str::to_string),
                approver_reason: self.why.map(str::to_string),
                waited_ms: self.waited,
                coalesced: self.coalesced,
                grant: self.grant.clone(),
            },
            response: None,
            checkpoint: None,
        }
    }
}

/// A record: the records in order, a second apart from 10:00:00, and a closing record.
fn chain(recs: &[Rec]) -> String {
    let mut c = Chain::new("test");
    let mut out = String::new();
    for (i, r) in recs.iter().enumerate() {
        out.push_str(&c.seal(r.body(time(i))));
        out.push('\n');
    }
    out.push_str(&c.end("2026-11-27T11:00:00.000Z"));
    out.push('\n');
    out
}

fn time(i: usize) -> String {
    format!("2026-11-27T10:{:02}:{:02}.000Z", i / 60, i % 60)
}

/// A plain read, allowed by policy: no approval in it.
fn plain_read(c: &mut Chain, t: &str) -> String {
    c.seal(RecordBody {
        time: t.into(),
        kind: RecordKind::Request,
        identity: Identity::new("agent-1", ["ai-agents"]),
        request: RecordedRequest {
            method: "GET".into(),
            target: "/api/v1/namespaces/dev/configmaps".into(),
            ..Default::default()
        },
        decision: RecordedDecision {
            effect: "allow".into(),
            rule: Some("read-dev".into()),
            reason: "allowed".into(),
            outcome: Outcome::Forwarded,
            ..Default::default()
        },
        response: None,
        checkpoint: None,
    })
}

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kubeleash-replay-appr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn replay(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).arg("replay").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kubeleash replay --approvals FILE --format json ARGS`, parsed.
fn figures(file: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--approvals", file.to_str().unwrap(), "--format", "json"];
    all.extend_from_slice(args);
    let (code, out, err) = replay(&all);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "one JSON line: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// A widened grant as the layer records it on its approval.
fn a_grant(id: &str) -> Value {
    json!({
        "rule": {
            "name": format!("grant-{}", &id[..8]),
            "effect": "allow",
            "reason": format!("approved by alice (approval {id}), widened: names matching `web-*`, 3 more uses, for 900s"),
            "subjects": {"users": ["agent-1"]},
            "verbs": ["update"],
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "namespaces": ["dev"],
            "names": ["web-*"],
            "when": [{"path": "$.spec.replicas", "between": [1.0, 5.0]}]
        },
        "uses": 3,
        "seconds": 900,
        "pinned": [
            "the request target and query `/apis/apps/v1/namespaces/dev/deployments/{name}?fieldManager=kubectl-edit`",
            "every other field of the body, as approved",
            "the content type and impersonation headers"
        ]
    })
}

const GRANT_ID: &str = "9f1c2b3a4d5e6f708192a3b4c5d6e7f8";

/// Every way an approval ends, and every way a request is resolved without a new prompt.
fn every_figure() -> Vec<Rec> {
    let deploy = "/apis/apps/v1/namespaces/dev/deployments/web-2?fieldManager=kubectl-edit";
    vec![
        // A: approved by a person (blocking): the approval, then the write it let through.
        Rec::held("A"),
        Rec::new("approval", "approved", "A").by("alice", None, Some(1200)),
        Rec::new("forwarded", "approved", "A").by("alice", None, Some(1200)),
        Rec::new("request", "approved", "A").by("alice", None, Some(1200)),
        // B: denied.
        Rec::held("B"),
        Rec::new("request", "refused", "B").by("bob", Some("not now"), Some(3000)),
        // C: the agent approved itself; refused.
        Rec::held("C").user("agent-2").rule("scale-needs-a-human"),
        Rec::new("request", "refused", "C")
            .user("agent-2")
            .rule("scale-needs-a-human")
            .by("agent-2", Some("self-approval"), Some(50)),
        // D: nobody answered in time.
        Rec::held("D"),
        Rec::new("request", "expired", "D").by_none(Some("timed out"), Some(120_000)),
        // E (non-blocking): pending answers, two retries, approved and never sent again.
        Rec::held("E").user("agent-2"),
        Rec::new("request", "refused", "E")
            .user("agent-2")
            .by_none(Some("approval pending"), None),
        Rec::new("request", "refused", "E")
            .user("agent-2")
            .by_none(Some("approval pending"), None)
            .coalesced(),
        Rec::new("request", "refused", "E")
            .user("agent-2")
            .by_none(Some("approval pending"), None)
            .coalesced(),
        Rec::new("expired", "expired", "E").user("agent-2").by(
            "alice",
            Some("approved, but not sent again"),
            None,
        ),
        // F (non-blocking): denied, then one retry told the refusal.
        Rec::held("F").rule("scale-needs-a-human"),
        Rec::new("request", "refused", "F")
            .rule("scale-needs-a-human")
            .by_none(Some("approval pending"), None),
        Rec::new("request", "refused", "F")
            .rule("scale-needs-a-human")
            .by("bob", Some("no"), Some(400)),
        Rec::new("request", "refused", "F")
            .rule("scale-needs-a-human")
            .by("bob", Some("no"), None)
            .coalesced(),
        // G: approved and widened; its grant then covers two writes (a forwarded record and a
        // completion each) and a read.
        Rec::held(GRANT_ID).rule("scale-needs-a-human"),
        Rec::new("approval", "approved", GRANT_ID)
            .rule("scale-needs-a-human")
            .by("alice", None, Some(800))
            .grant(a_grant(GRANT_ID)),
        Rec::new("forwarded", "approved", GRANT_ID)
            .rule("scale-needs-a-human")
            .by("alice", None, Some(800)),
        Rec::new("request", "approved", GRANT_ID)
            .rule("scale-needs-a-human")
            .by("alice", None, Some(800)),
        Rec::new("forwarded", "approved", GRANT_ID)
            .rule("scale-needs-a-human")
            .by(
                "alice",
                Some("covered by the grant this approval left"),
                None,
            )
            .coalesced()
            .target("PUT", deploy),
        Rec::new("request", "approved", GRANT_ID)
            .rule("scale-needs-a-human")
            .by(
                "alice",
                Some("covered by the grant this approval left"),
                None,
            )
            .coalesced()
            .target("PUT", deploy),
        Rec::new("forwarded", "approved", GRANT_ID)
            .rule("scale-needs-a-human")
            .by(
                "alice",
                Some("covered by the grant this approval left"),
                None,
            )
            .coalesced()
            .target("PUT", deploy),
        Rec::new("request", "approved", GRANT_ID)
            .rule("scale-needs-a-human")
            .by(
                "alice",
                Some("covered by the grant this approval left"),
                None,
            )
            .coalesced()
            .target("PUT", deploy),
        Rec::new("request", "approved", GRANT_ID)
            .rule("scale-needs-a-human")
            .by(
                "alice",
                Some("covered by the grant this approval left"),
                None,
            )
            .coalesced()
            .target("GET", "/apis/apps/v1/namespaces/dev/deployments/web-3"),
        // H: held when the record ends.
        Rec::held("H").rule("scale-needs-a-human"),
        // K: refused by kubeleash itself (the proxy stopped): not a person's answer.
        Rec::held("K"),
        Rec::new("request", "refused", "K").by(
            "kubeleash",
            Some("the proxy is shutting down"),
            Some(10),
        ),
        // R: approved, but the policy reloaded meanwhile denies it: still a person's approval.
        Rec::held("R").user("agent-2"),
        Rec::new("request", "refused", "R").user("agent-2").by(
            "alice",
            Some("the reloaded policy denies it"),
            Some(700),
        ),
    ]
}

impl Rec {
    fn by_none(mut self, why: Option<&'static str>, waited: Option<u64>) -> Rec {
        self.why = why;
        self.waited = waited;
        self
    }
}

#[test]
fn every_figure_is_counted_in_total_per_identity_and_per_rule() {
    let p = write("every.jsonl", &chain(&every_figure()));
    let v = figures(&p, &["--verify"]);
    assert_eq!(
        v["total"],
        json!({
            "asked": 10,
            "answered": {"total": 6, "approved": 3, "denied": 2, "selfApprovalRefused": 1},
            "expired": {"total": 2, "unanswered": 1, "unused": 1},
            "withdrawn": 1,
            "open": 1,
            "withoutHeld": 0,
            // 50, 400, 700, 800, 1200, 3000: nearest rank.
            "timeToAnswerMs": {"answers": 6, "median": 700, "p90": 3000, "max": 3000},
            "coalesced": {"total": 6, "retries": 3, "grantUses": 3},
            "grantsLeft": 1
        })
    );
    let a1 = &v["byIdentity"]["agent-1"];
    assert_eq!(a1["asked"], 7);
    assert_eq!(
        a1["answered"],
        json!({"total": 4, "approved": 2, "denied": 2, "selfApprovalRefused": 0})
    );
    assert_eq!(
        a1["timeToAnswerMs"],
        json!({"answers": 4, "median": 800, "p90": 3000, "max": 3000})
    );
    assert_eq!(
        a1["coalesced"],
        json!({"total": 4, "retries": 1, "grantUses": 3})
    );
    assert_eq!(
        (a1["open"].clone(), a1["withdrawn"].clone()),
        (json!(1), json!(1))
    );
    let a2 = &v["byIdentity"]["agent-2"];
    assert_eq!(a2["asked"], 3);
    assert_eq!(
        a2["answered"],
        json!({"total": 2, "approved": 1, "denied": 0, "selfApprovalRefused": 1})
    );
    assert_eq!(
        a2["expired"],
        json!({"total": 1, "unanswered": 0, "unused": 1})
    );
    assert_eq!(a2["coalesced"]["retries"], 2);
    assert_eq!(
        a2["timeToAnswerMs"],
        json!({"answers": 2, "median": 50, "p90": 700, "max": 700})
    );
    assert_eq!(v["byIdentity"].as_object().unwrap().len(), 2);
    let config = &v["byRule"]["config-needs-a-human"];
    let scale = &v["byRule"]["scale-needs-a-human"];
    assert_eq!(
        (config["asked"].clone(), scale["asked"].clone()),
        (json!(6), json!(4))
    );
    assert_eq!(scale["grantsLeft"], 1);
    assert_eq!(scale["coalesced"]["grantUses"], 3);
    assert_eq!(scale["open"], 1);
    assert_eq!(config["expired"]["total"], 2);
    assert_eq!(
        v["grants"],
        json!([{
            "approvalId": GRANT_ID,
            "name": "grant-9f1c2b3a",
            "identity": "agent-1",
            "approver": "alice",
            "time": time(20),
            "uses": 3,
            "seconds": 900,
            "used": 3
        }])
    );
}

/// Blocking mode: a request identical to one already held waits for its answer, recorded
/// `held` without an id of its own; the answer it gets is coalesced.
#[test]
fn identical_requests_that_waited_are_coalesced() {
    let waiting = |user| {
        Rec::new("held", "held", "")
            .user(user)
            .by_none(
                Some("waits for the answer to an identical request held before it"),
                None,
            )
            .coalesced()
    };
    let recs = vec![
        Rec::held("A"),
        waiting("agent-1"),
        Rec::new("request", "refused", "A").by("bob", Some("no"), Some(2000)),
        Rec::new("request", "refused", "A")
            .by("bob", Some("no"), None)
            .coalesced(),
        Rec::held("B"),
        waiting("agent-1"),
        Rec::new("request", "expired", "B").by_none(Some("timed out"), Some(5000)),
        Rec::new("request", "expired", "B")
            .by_none(Some("timed out"), None)
            .coalesced(),
        // A wait that timed out on its own names no approval: counted for its own identity.
        waiting("agent-3"),
        Rec::new("request", "expired", "")
            .user("agent-3")
            .by_none(Some("timed out"), None)
            .coalesced(),
    ];
    let p = write("waited.jsonl", &chain(&recs));
    let v = figures(&p, &["--verify"]);
    let t = &v["total"];
    assert_eq!(t["asked"], 2, "{t}");
    assert_eq!(t["answered"]["denied"], 1);
    assert_eq!(
        t["expired"],
        json!({"total": 1, "unanswered": 1, "unused": 0})
    );
    assert_eq!(
        t["coalesced"],
        json!({"total": 3, "retries": 3, "grantUses": 0})
    );
    assert_eq!(t["open"], 0);
    assert_eq!(t["withoutHeld"], 0);
    assert_eq!(v["byIdentity"]["agent-3"]["coalesced"]["retries"], 1);
    assert_eq!(v["byIdentity"]["agent-3"]["asked"], 0);
}

#[test]
fn the_text_reads_at_a_glance() {
    let p = write("glance.jsonl", &chain(&every_figure()));
    let (code, out, err) = replay(&["--approvals", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let expected = format!(
        "approvals: 10 asked, 6 answered by a person, 2 expired, 1 still open
  answered        3 approved, 2 denied, 1 self-approval refused
  expired         1 nobody answered, 1 approved but never used
  time to answer  median 700ms, p90 3.0s, max 3.0s (over 6 answers)
  coalesced       6 requests resolved without a new prompt: 3 retries, 3 grant uses
  grants left     1, used 3 times
  withdrawn       1 refused by kubeleash itself before anyone answered

IDENTITY  ASKED  APPROVED  DENIED  SELF  EXPIRED  OPEN  MEDIAN    P90    MAX  RETRIES  GRANT USES  GRANTS
agent-1       7         2       2     0        1     1   800ms   3.0s   3.0s        1           3       1
agent-2       3         1       0     1        1     0    50ms  700ms  700ms        2           0       0

RULE                  ASKED  APPROVED  DENIED  SELF  EXPIRED  OPEN  MEDIAN    P90    MAX  RETRIES  GRANT USES  GRANTS
config-needs-a-human      6         2       1     0        2     0    1.2s   3.0s   3.0s        2           0       0
scale-needs-a-human       4         1       1     1        0     1   400ms  800ms  800ms        1           3       1

GRANT           APPROVAL                          APPROVED BY  FOR      USES  SECONDS  USED
grant-9f1c2b3a  {GRANT_ID}  alice        agent-1     3      900     3
"
    );
    assert_eq!(out, expected, "\n{out}");
}

#[test]
fn a_record_without_approvals_has_zero_figures() {
    let mut c = Chain::new("test");
    let log = format!(
        "{}\n{}\n",
        plain_read(&mut c, "2026-11-27T10:00:00.000Z"),
        c.end("2026-11-27T10:00:01.000Z")
    );
    let p = write("none.jsonl", &log);
    let v = figures(&p, &["--verify"]);
    assert_eq!(v["total"]["asked"], 0);
    assert_eq!(v["total"]["answered"]["total"], 0);
    assert_eq!(
        v["total"]["timeToAnswerMs"],
        json!({"answers": 0, "median": null, "p90": null, "max": null})
    );
    assert_eq!(v["byIdentity"], json!({}));
    assert_eq!(v["byRule"], json!({}));
    assert_eq!(v["grants"], json!([]));
    let (code, out, _) = replay(&["--approvals", p.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("approvals: 0 asked, 0 answered by a person, 0 expired, 0 still open\n"),
        "{out}"
    );
    assert!(out.contains("time to answer  no answers\n"), "{out}");
    // An empty file: the same.
    let empty = write("empty.jsonl", "");
    assert_eq!(figures(&empty, &[])["total"]["asked"], 0);
}

#[test]
fn an_answer_without_its_held_record_is_counted_but_not_asked() {
    let recs = vec![
        Rec::held("A"),
        Rec::new("approval", "approved", "A").by("alice", None, Some(900)),
        Rec::new("request", "expired", "B").by_none(Some("timed out"), Some(300_000)),
    ];
    let p = write("orphan.jsonl", &chain(&recs));
    let v = figures(&p, &[]);
    assert_eq!(v["total"]["asked"], 1);
    assert_eq!(v["total"]["answered"]["approved"], 1);
    assert_eq!(v["total"]["expired"]["unanswered"], 1);
    assert_eq!(v["total"]["withoutHeld"], 1);
    assert_eq!(v["total"]["open"], 0);
    // --since cuts the held record off: the answer is still counted, as without its prompt.
    let v = figures(&p, &["--since", &time(1)]);
    assert_eq!(v["total"]["asked"], 0);
    assert_eq!(v["total"]["answered"]["approved"], 1);
    assert_eq!(v["total"]["withoutHeld"], 2);
    assert_eq!(v["total"]["timeToAnswerMs"]["max"], 900);
    let (_, out, _) = replay(&["--approvals", p.to_str().unwrap(), "--since", &time(1)]);
    assert!(out.contains("  without held    2 answered or expired approvals whose held record is not in the range read"), "{out}");
}

#[test]
fn filters_narrow_the_figures() {
    let p = write("filters.jsonl", &chain(&every_figure()));
    let all = figures(&p, &[]);
    let agent2 = figures(&p, &["--identity", "agent-2"]);
    assert_eq!(agent2["total"], all["byIdentity"]["agent-2"]);
    assert_eq!(agent2["byIdentity"].as_object().unwrap().len(), 1);
    // A group matches too.
    assert_eq!(
        figures(&p, &["--identity", "ai-agents"])["total"],
        all["total"]
    );
    assert_eq!(figures(&p, &["--identity", "nobody"])["total"]["asked"], 0);
    // --until before B's answer: A settled, B still open.
    let early = figures(&p, &["--until", &time(5)]);
    assert_eq!(early["total"]["asked"], 2);
    assert_eq!(early["total"]["answered"]["total"], 1);
    assert_eq!(early["total"]["open"], 1);
    // --decision is for the timeline.
    let (code, _, err) = replay(&["--approvals", p.to_str().unwrap(), "--decision", "held"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn a_torn_log_still_counts_and_verifies_with_allow_open() {
    let recs = vec![
        Rec::held("A"),
        Rec::new("approval", "approved", "A").by("alice", None, Some(900)),
        Rec::held("B"),
        Rec::new("request", "refused", "B").by("bob", Some("no"), Some(100)),
    ];
    // A recorder still running, cut in the middle of writing B's answer.
    let mut c = Chain::new("test");
    let mut log = String::new();
    for (i, r) in recs.iter().enumerate() {
        log.push_str(&c.seal(r.body(time(i))));
        log.push('\n');
    }
    let cut = log.trim_end().len() - 40;
    let torn = &log[..cut];
    let p = write("torn.jsonl", torn);
    let v = figures(&p, &["--verify", "--allow-open"]);
    assert_eq!(v["total"]["asked"], 2);
    assert_eq!(v["total"]["answered"]["total"], 1);
    assert_eq!(v["total"]["open"], 1, "B's answer is torn: B is still open");
    let (code, _, err) = replay(&[
        "--approvals",
        p.to_str().unwrap(),
        "--verify",
        "--allow-open",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("line 4 is torn"), "{err}");
    assert!(err.contains("verified: 3 records"), "{err}");
    // Without --allow-open it is a log cut short: the figures print, the exit says so.
    let (code, out, err) = replay(&["--approvals", p.to_str().unwrap(), "--verify"]);
    assert_eq!(code, 1, "{err}");
    assert!(out.starts_with("approvals: 2 asked"), "{out}");
    // And a broken chain is reported, not hidden behind the figures.
    let edited = chain(&recs).replacen("\"waitedMs\":900", "\"waitedMs\":1", 1);
    let p = write("edited.jsonl", &edited);
    let (code, _, err) = replay(&["--approvals", p.to_str().unwrap(), "--verify"]);
    assert_eq!(code, 1);
    assert!(err.contains("chain broken: record 1 was edited"), "{err}");
}

#[test]
fn hostile_names_print_escaped() {
    let recs = vec![
        Rec::held("A")
            .user("agent\u{1b}]0;x\u{7}")
            .rule("rule\u{202e}x"),
        Rec::new("approval", "approved", "A")
            .user("agent\u{1b}]0;x\u{7}")
            .rule("rule\u{202e}x")
            .by("eve\u{9b}2J", None, Some(1)),
    ];
    let p = write("hostile.jsonl", &chain(&recs));
    for format in ["kubectl", "json"] {
        let (code, out, _) = replay(&["--approvals", p.to_str().unwrap(), "--format", format]);
        assert_eq!(code, 0);
        let bad = |c: char| c.is_control() && c != '\n' || matches!(c, '\u{202a}'..='\u{202e}');
        assert!(!out.chars().any(bad), "{format}: {out:?}");
    }
    let v = figures(&p, &[]);
    assert_eq!(v["byIdentity"]["agent\u{1b}]0;x\u{7}"]["asked"], 1);
}

// ---------------------------------------------------------------------------------------------
// --grants, from records built by hand (the approvals CLI cannot widen an approval yet).

fn grant_record() -> String {
    chain(&[
        Rec::held(GRANT_ID).rule("scale-needs-a-human"),
        Rec::new("approval", "approved", GRANT_ID)
            .rule("scale-needs-a-human")
            .by("alice", None, Some(800))
            .grant(a_grant(GRANT_ID))
            .target(
                "PUT",
                "/apis/apps/v1/namespaces/dev/deployments/web-1?fieldManager=kubectl-edit",
            ),
        Rec::new("request", "approved", GRANT_ID)
            .by(
                "alice",
                Some("covered by the grant this approval left"),
                None,
            )
            .coalesced()
            .target("GET", "/apis/apps/v1/namespaces/dev/deployments/web-3"),
        Rec::held("B"),
        Rec::new("approval", "approved", "B").by(
            "bob",
            Some("approved exactly, not widened: secrets are never widened"),
            Some(5),
        ),
    ])
}

const FRAGMENT: &str = r#"# 1 widened grant recorded in FILE
# review each rule before adding it to a policy's spec.rules: a grant was temporary, a rule is not
rules:
  # approved by alice at 2026-11-27T10:00:01.000Z, approval 9f1c2b3a4d5e6f708192a3b4c5d6e7f8, for agent-1
  # the grant had 3 more uses within 900s; used 1 time in this record
  # this rule is wider than the grant was: the grant also pinned
  #   - the request target and query `/apis/apps/v1/namespaces/dev/deployments/{name}?fieldManager=kubectl-edit`
  #   - every other field of the body, as approved
  #   - the content type and impersonation headers
  - name: grant-9f1c2b3a
    effect: allow
    reason: "approved by alice (approval 9f1c2b3a4d5e6f708192a3b4c5d6e7f8), widened: names matching `web-*`, 3 more uses, for 900s"
    subjects:
      users: [agent-1]
    verbs: [update]
    apiGroups: [apps]
    resources: [deployments]
    namespaces: [dev]
    names: [web-*]
    when:
      - path: $.spec.replicas
        between: [1.0, 5.0]
"#;

#[test]
fn grants_print_as_a_reviewable_policy_fragment() {
    let p = write("grants.jsonl", &grant_record());
    let (code, out, err) = replay(&["--grants", p.to_str().unwrap(), "--verify"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, FRAGMENT.replace("FILE", p.to_str().unwrap()));
    // The fragment is a policy's rules: under a policy's spec it compiles and allows what the
    // grant allowed.
    let policy = format!(
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n{}",
        out.lines()
            .skip(2)
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
    );
    let compiled = kubeleash_core::policy::Policy::from_yaml(&policy).unwrap();
    let d = compiled
        .evaluate(
            &Identity::new("agent-1", ["ai-agents"]),
            "PUT",
            "/apis/apps/v1/namespaces/dev/deployments/web-9",
            &http::HeaderMap::new(),
            Some(br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web-9","namespace":"dev"},"spec":{"replicas":4}}"#),
        )
        .decision;
    assert_eq!(d.rule.as_deref(), Some("grant-9f1c2b3a"), "{}", d.reason);
    // No grants: an empty list.
    let mut c = Chain::new("t");
    let none = write("nogrants.jsonl", &format!("{}\n", plain_read(&mut c, "t")));
    let (code, out, _) = replay(&["--grants", none.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.ends_with("\nrules: []\n"), "{out}");
    assert!(out.starts_with("# 0 widened grants recorded in"), "{out}");
}

const POLICY: &str = "apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: agents}
spec:
  rules:
    - name: read-dev
      effect: allow
      verbs: [get, list, watch]
      apiGroups: [\"\", apps]
      resources: [configmaps, deployments]
      namespaces: [dev]
    - name: grant-9f1c2b3a   # a name the grant's rule takes too
      effect: approve
      verbs: [update]
      apiGroups: [apps]
      resources: [deployments]
  # masks follow the rules
  masks:
    disable: []
";

#[test]
fn grants_as_a_diff_of_a_policy_that_compiles() {
    let rec = write("grants-diff.jsonl", &grant_record());
    let policy = write("policy.yaml", POLICY);
    let (code, out, err) = replay(&[
        "--grants",
        rec.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: 1 grant rule lets nothing through as appended"),
        "{err}"
    );
    let p = policy.to_str().unwrap();
    let expected = format!(
        "--- {p}
+++ {p} (with grants)
@@ -14,6 +14,27 @@
       verbs: [update]
       apiGroups: [apps]
       resources: [deployments]
+    # approved by alice at 2026-11-27T10:00:01.000Z, approval 9f1c2b3a4d5e6f708192a3b4c5d6e7f8, for agent-1
+    # the grant had 3 more uses within 900s; used 1 time in this record
+    # this rule is wider than the grant was: the grant also pinned
+    #   - the request target and query `/apis/apps/v1/namespaces/dev/deployments/{{name}}?fieldManager=kubectl-edit`
+    #   - every other field of the body, as approved
+    #   - the content type and impersonation headers
+    # renamed from `grant-9f1c2b3a`: another rule has that name
+    # note: rule `grant-9f1c2b3a` (approve) matches the approved request too, and approve beats allow: as appended, this rule lets nothing through until `grant-9f1c2b3a` is narrowed
+    - name: grant-9f1c2b3a-2
+      effect: allow
+      reason: \"approved by alice (approval 9f1c2b3a4d5e6f708192a3b4c5d6e7f8), widened: names matching `web-*`, 3 more uses, for 900s\"
+      subjects:
+        users: [agent-1]
+      verbs: [update]
+      apiGroups: [apps]
+      resources: [deployments]
+      namespaces: [dev]
+      names: [web-*]
+      when:
+        - path: $.spec.replicas
+          between: [1.0, 5.0]
   # masks follow the rules
   masks:
     disable: []
"
    );
    assert_eq!(out, expected, "\n{out}");
    // Applied, the diff gives a policy that compiles, with P's text unchanged around it.
    let applied = apply(POLICY, &out);
    assert!(applied.starts_with(&POLICY[..POLICY.find("  # masks").unwrap()]));
    assert!(applied.ends_with("  # masks follow the rules\n  masks:\n    disable: []\n"));
    let compiled = kubeleash_core::policy::Policy::from_yaml(&applied).unwrap();
    assert_eq!(compiled.rule_count(), 3);
}

/// `patch`, for a diff of one hunk that only adds lines.
fn apply(old: &str, diff: &str) -> String {
    let hunk = diff.split("\n@@ ").nth(1).unwrap();
    let header = hunk.split(' ').next().unwrap();
    let start: usize = header
        .trim_start_matches('-')
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let body: Vec<&str> = hunk.lines().skip(1).collect();
    let context = body.iter().take_while(|l| l.starts_with(' ')).count();
    let added: String = body
        .iter()
        .filter(|l| l.starts_with('+'))
        .map(|l| format!("{}\n", &l[1..]))
        .collect();
    let lines: Vec<&str> = old.split_inclusive('\n').collect();
    let at = start - 1 + context;
    format!("{}{added}{}", lines[..at].concat(), lines[at..].concat())
}

#[test]
fn grants_that_do_not_compile_or_cannot_be_trusted_are_refused() {
    // A grant whose rule the compiler refuses: the errors, no diff, exit 1.
    let mut bad = a_grant(GRANT_ID);
    bad["rule"]["verbs"] = json!(["frobnicate"]);
    let rec = write(
        "bad-grant.jsonl",
        &chain(&[Rec::new("approval", "approved", GRANT_ID)
            .by("alice", None, Some(1))
            .grant(bad)]),
    );
    let policy = write("policy-bad.yaml", POLICY);
    let (code, out, err) = replay(&[
        "--grants",
        rec.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("(with grants):"), "{err}");
    assert!(err.contains("frobnicate"), "{err}");
    assert!(
        err.contains(&format!("(the grant of approval {GRANT_ID})")),
        "{err}"
    );
    assert!(err.contains("does not compile"), "{err}");
    let (code, _, err) = replay(&["--grants", rec.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    // A policy written in flow style cannot be appended to textually: it says how to write it.
    let flow = write(
        "flow.yaml",
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules: [{name: a, effect: allow, verbs: [get], resources: [pods]}]\n",
    );
    let good = write("good-grant.jsonl", &grant_record());
    let (code, _, err) = replay(&[
        "--grants",
        good.to_str().unwrap(),
        "--policy",
        flow.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("write it as a block list"), "{err}");
    // A policy that does not compile on its own: its errors, usage exit.
    let broken = write("broken.yaml", "apiVersion: v9\n");
    let (code, _, err) = replay(&[
        "--grants",
        good.to_str().unwrap(),
        "--policy",
        broken.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not compile"), "{err}");
    // A record whose chain is broken: its grants could have been written by anyone.
    let forged = grant_record().replacen("\"uses\":3", "\"uses\":300", 1);
    let forged = write("forged.jsonl", &forged);
    let (code, out, err) = replay(&["--grants", forged.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("cannot be trusted"), "{err}");
    // --policy without --grants is a usage error.
    let (code, _, _) = replay(&[good.to_str().unwrap(), "--policy", flow.to_str().unwrap()]);
    assert_eq!(code, 2);
}

// ---------------------------------------------------------------------------------------------
// End to end: kubectl through `kubeleash proxy` in front of `kubeleash sandbox`.

/// Holds configmap creates in dev; reads and discovery pass.
const PROXY_POLICY: &str = r#"apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: fatigue}
spec:
  rules:
    - name: read-dev
      effect: allow
      verbs: [get, list, watch]
      apiGroups: [""]
      resources: [configmaps]
      namespaces: [dev]
    - name: config-needs-a-human
      effect: approve
      reason: configuration changes what runs
      verbs: [create]
      apiGroups: [""]
      resources: [configmaps]
      namespaces: [dev]
    - name: discovery
      effect: allow
      verbs: [get]
      nonResourceURLs: [/api, "/api/*", /apis, "/apis/*", /version, "/openapi/*"]
"#;

/// One `kubeleash proxy` run with socket approvals and its own record.
struct Run {
    dir: PathBuf,
    _proxy: process::Guard,
}

impl Run {
    /// A proxy in `home/name` in front of the sandbox `home/operator.kubeconfig` names.
    fn start(home: &Path, name: &str, extra: &[&str]) -> Run {
        let dir = home.join(name);
        std::fs::create_dir_all(dir.join("s")).unwrap();
        std::fs::write(dir.join("policy.yaml"), PROXY_POLICY).unwrap();
        let p = |f: &Path| f.to_str().unwrap().to_string();
        let mut args: Vec<String> = vec![
            "proxy".into(),
            "--policy".into(),
            p(&dir.join("policy.yaml")),
            "--kubeconfig".into(),
            p(&home.join("operator.kubeconfig")),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--record".into(),
            p(&dir.join("session.jsonl")),
            "--user".into(),
            "agent-1".into(),
            "--group".into(),
            "ai-agents".into(),
            "--agent-kubeconfig".into(),
            p(&dir.join("agent.kubeconfig")),
            "--agent-namespace".into(),
            "dev".into(),
            "--approvals".into(),
            "socket".into(),
            "--approvals-socket".into(),
            p(&dir.join("s").join("approvals.sock")),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (guard, url) = process::serve(&args, Some(&dir.join("proxy.stderr")));
        assert!(url.starts_with("https://127.0.0.1:"), "{url}");
        Run { dir, _proxy: guard }
    }

    fn record(&self) -> PathBuf {
        self.dir.join("session.jsonl")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("proxy.stderr")).unwrap_or_default()
    }

    /// `kubectl create configmap NAME` as the agent: success and its output.
    fn create(&self, name: &str) -> (bool, String) {
        kubectl_create(&self.dir, name)
    }

    /// The same on a thread of its own (a held request waits for its answer).
    fn create_meanwhile(&self, name: &str) -> std::thread::JoinHandle<(bool, String)> {
        let (dir, name) = (self.dir.clone(), name.to_string());
        std::thread::spawn(move || kubectl_create(&dir, &name))
    }

    /// `kubeleash approvals ARGS` as `user`: success and output.
    fn approvals(&self, user: &str, args: &[&str]) -> (bool, String) {
        let out = Command::new(BIN)
            .arg("approvals")
            .args(args)
            .arg("--socket")
            .arg(self.dir.join("s").join("approvals.sock"))
            .env("USER", user)
            .env("LOGNAME", user)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// The id of the held request that creates configmap `name`, polled for until it is held.
    fn held(&self, name: &str) -> String {
        let started = Instant::now();
        loop {
            let (_, out) = self.approvals("alice", &["list", "--json"]);
            let listed: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
            let found = listed["pending"].as_array().and_then(|a| {
                a.iter()
                    .find(|h| h.to_string().contains(name))
                    .and_then(|h| h["id"].as_str())
                    .map(str::to_string)
            });
            if let Some(id) = found {
                return id;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{name} was never held: {listed}\nproxy stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn answer(&self, user: &str, verb: &str, id: &str, extra: &[&str]) {
        let mut args = vec![verb, id];
        args.extend_from_slice(extra);
        let (ok, out) = self.approvals(user, &args);
        assert!(ok, "kubeleash approvals {args:?} as {user}: {out}");
    }

    /// The records of approval `id`, polled for until one satisfies `want`.
    fn until_recorded(&self, id: &str, what: &str, want: impl Fn(&Value) -> bool) {
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(self.record()).unwrap_or_default();
            let recs: Vec<Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|r| r["decision"]["approvalId"] == id)
                .collect();
            if recs.iter().any(&want) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "approval {id}: no record of {what}: {recs:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn kubectl_create(dir: &Path, name: &str) -> (bool, String) {
    let out = Command::new("kubectl")
        .args([
            "--request-timeout=120s",
            "create",
            "configmap",
            name,
            "--from-literal=k=v",
            "-n",
            "dev",
        ])
        .env("KUBECONFIG", dir.join("agent.kubeconfig"))
        .env("HOME", dir)
        .env("KUBECACHEDIR", dir.join("kube-cache"))
        .stdin(Stdio::null())
        .output()
        .expect("kubectl runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The approval id in a non-blocking refusal: 32 hex digits after "held for approval ".
fn held_id(text: &str) -> Option<String> {
    let rest = text.split("held for approval ").nth(1)?;
    let id: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
    (id.len() == 32).then_some(id)
}

/// The figures' `timeToAnswerMs` over `n` answers: every statistic present.
fn assert_waits(v: &Value, n: u64) {
    let w = &v["total"]["timeToAnswerMs"];
    assert_eq!(w["answers"], n, "{w}");
    for k in ["median", "p90", "max"] {
        assert!(w[k].as_u64().is_some(), "{k} missing: {w}");
    }
}

#[test]
fn the_figures_of_a_real_session_through_the_proxy() {
    process::require_kubectl();
    let home = std::env::temp_dir().join(format!("kl-ra-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let _sandbox = process::sandbox_for_operator(&home);

    // Blocking: approved by alice, denied by bob, approved by the agent itself (refused).
    let run = Run::start(&home, "b", &["--approval-timeout", "120"]);
    for (name, by, verb, ok) in [
        ("fa-approved", "alice", "approve", true),
        ("fa-denied", "bob", "deny", false),
        ("fa-self", "agent-1", "approve", false),
    ] {
        let kubectl = run.create_meanwhile(name);
        let id = run.held(name);
        if by == "agent-1" {
            // The CLI says the layer refused it.
            let (ok, out) = run.approvals(by, &[verb, &id]);
            assert!(!ok && out.contains("cannot approve itself"), "{out}");
        } else {
            let extra: &[&str] = if verb == "deny" {
                &["--reason", "not now"]
            } else {
                &[]
            };
            run.answer(by, verb, &id, extra);
        }
        let (done, out) = kubectl.join().unwrap();
        assert_eq!(done, ok, "{name}: {out}");
    }
    let v = figures(&run.record(), &[]);
    assert_eq!(v["total"]["asked"], 3, "{v}");
    assert_eq!(
        v["total"]["answered"],
        json!({"total": 3, "approved": 1, "denied": 1, "selfApprovalRefused": 1})
    );
    assert_eq!(v["total"]["expired"]["total"], 0);
    assert_eq!(v["total"]["open"], 0);
    assert_waits(&v, 3);
    assert_eq!(v["byIdentity"]["agent-1"]["asked"], 3);
    assert_eq!(v["byRule"]["config-needs-a-human"]["answered"]["total"], 3);
    drop(run);

    // Blocking, a one-second timeout: nobody answers.
    let run = Run::start(&home, "t", &["--approval-timeout", "1"]);
    let (ok, out) = run.create("fa-unanswered");
    assert!(!ok, "{out}");
    assert!(out.contains("nobody answered approval"), "{out}");
    let v = figures(&run.record(), &[]);
    assert_eq!(v["total"]["asked"], 1, "{v}");
    assert_eq!(
        v["total"]["expired"],
        json!({"total": 1, "unanswered": 1, "unused": 0})
    );
    assert_eq!(v["total"]["answered"]["total"], 0);
    assert_eq!(v["total"]["timeToAnswerMs"]["answers"], 0);
    drop(run);

    // Non-blocking: retries while pending and after a refusal are coalesced; an approval the
    // agent never comes back for, and a request nobody answers, expire.
    let run = Run::start(
        &home,
        "n",
        &["--approvals-nonblocking=1", "--approval-timeout", "8"],
    );
    let (ok, out) = run.create("fa-retried");
    assert!(!ok, "{out}");
    let approved = held_id(&out).unwrap_or_else(|| panic!("not held: {out}"));
    run.held("fa-retried");
    let (ok, out) = run.create("fa-retried");
    assert!(!ok && held_id(&out).as_deref() == Some(&approved), "{out}");
    let mut retries = 1;
    run.answer("alice", "approve", &approved, &[]);
    loop {
        let (ok, out) = run.create("fa-retried");
        if ok {
            break;
        }
        assert_eq!(held_id(&out).as_deref(), Some(approved.as_str()), "{out}");
        retries += 1;
    }
    let (ok, out) = run.create("fa-refused");
    assert!(!ok, "{out}");
    let denied = held_id(&out).unwrap_or_else(|| panic!("not held: {out}"));
    run.held("fa-refused");
    run.answer("bob", "deny", &denied, &["--reason", "no"]);
    loop {
        let (ok, out) = run.create("fa-refused");
        assert!(!ok, "{out}");
        retries += 1;
        if held_id(&out).is_none() {
            assert!(
                out.contains(&format!("bob denied approval {denied}")),
                "{out}"
            );
            break;
        }
    }
    // The refusal is told once more, from what is known.
    let (ok, out) = run.create("fa-refused");
    assert!(!ok && out.contains("bob denied approval"), "{out}");
    retries += 1;
    let (_, out) = run.create("fa-unused");
    let unused = held_id(&out).unwrap_or_else(|| panic!("not held: {out}"));
    run.held("fa-unused");
    run.answer("alice", "approve", &unused, &[]);
    let (_, out) = run.create("fa-nobody");
    let nobody = held_id(&out).unwrap_or_else(|| panic!("not held: {out}"));
    run.until_recorded(&unused, "its approval expiring unused", |r| {
        r["kind"] == "expired"
    });
    run.until_recorded(&nobody, "it expiring", |r| {
        r["decision"]["outcome"] == "expired"
    });
    let v = figures(&run.record(), &[]);
    assert_eq!(v["total"]["asked"], 4, "{v}");
    assert_eq!(
        v["total"]["answered"],
        json!({"total": 2, "approved": 1, "denied": 1, "selfApprovalRefused": 0})
    );
    assert_eq!(
        v["total"]["expired"],
        json!({"total": 2, "unanswered": 1, "unused": 1})
    );
    assert_eq!(
        v["total"]["coalesced"],
        json!({"total": retries, "retries": retries, "grantUses": 0})
    );
    assert_eq!(v["total"]["open"], 0);
    assert_waits(&v, 2);
    let (code, text, err) = replay(&["--approvals", run.record().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        text.starts_with("approvals: 4 asked, 2 answered by a person, 2 expired, 0 still open\n"),
        "{text}"
    );
    drop(run);
    let _ = std::fs::remove_dir_all(&home);
}

/// A widened approval given with `kubeleash approvals approve --names --uses`, used once by a
/// later request, is counted as a grant and exported as a policy diff that compiles.
#[test]
fn a_widened_approval_exports_as_a_policy_diff() {
    process::require_kubectl();
    let home = std::env::temp_dir().join(format!("kl-rg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let _sandbox = process::sandbox_for_operator(&home);
    let run = Run::start(&home, "w", &["--approval-timeout", "120"]);

    let first = run.create_meanwhile("web-1");
    let id = run.held("web-1");
    run.answer(
        "alice",
        "approve",
        &id,
        &["--names", "web-*", "--uses", "2"],
    );
    let (ok, out) = first.join().unwrap();
    assert!(ok, "{out}");
    // Covered by the grant: it goes through without being held (were it held, the test says so
    // rather than wait for the timeout).
    let second = run.create_meanwhile("web-2");
    loop {
        if second.is_finished() {
            break;
        }
        let (_, listed) = run.approvals("alice", &["list", "--json"]);
        assert!(!listed.contains("web-2"), "web-2 was held: {listed}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, out) = second.join().unwrap();
    assert!(ok, "{out}");

    let v = figures(&run.record(), &["--verify", "--allow-open"]);
    assert_eq!(v["total"]["asked"], 1, "{v}");
    assert_eq!(v["total"]["answered"]["approved"], 1);
    assert_eq!(v["total"]["grantsLeft"], 1);
    assert_eq!(
        v["total"]["coalesced"],
        json!({"total": 1, "retries": 0, "grantUses": 1})
    );
    let g = &v["grants"][0];
    assert_eq!(g["approvalId"], id.as_str());
    assert_eq!(
        (g["approver"].clone(), g["uses"].clone(), g["used"].clone()),
        (json!("alice"), json!(2), json!(1))
    );

    // The fragment, and the diff onto the policy the proxy ran with.
    let record = run.record();
    let (code, fragment, err) = replay(&["--grants", record.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(fragment.contains("approved by alice at "), "{fragment}");
    assert!(
        fragment.contains(&format!("approval {id}, for agent-1")),
        "{fragment}"
    );
    assert!(
        fragment.contains("the grant had 2 more uses within 900s; used 1 time"),
        "{fragment}"
    );
    assert!(fragment.contains("matches: web-*"), "{fragment}");
    let policy = run.dir.join("policy.yaml");
    let (code, diff, err) = replay(&[
        "--grants",
        record.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let short: String = id.chars().take(8).collect();
    assert!(
        diff.contains(&format!("+    - name: grant-{short}\n")),
        "{diff}"
    );
    // The rule that held the request still holds it: the review is told which to narrow.
    assert!(
        diff.contains(
            "note: rule `config-needs-a-human` (approve) matches the approved request too"
        ),
        "{diff}"
    );
    let applied = apply(PROXY_POLICY, &diff);
    let compiled = kubeleash_core::policy::Policy::from_yaml(&applied)
        .unwrap_or_else(|e| panic!("{e}\n{applied}"));
    assert_eq!(compiled.rule_count(), 4);
    drop(run);
    let _ = std::fs::remove_dir_all(&home);
}

/// A record word (`held`, `approved`, ...) as the log spells it, read as its enum.
fn word<T: serde::de::DeserializeOwned>(w: &str) -> T {
    serde_json::from_value(serde_json::Value::String(w.into())).expect("a record word")
}
