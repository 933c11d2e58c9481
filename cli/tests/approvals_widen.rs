//! Widened approvals end to end: real kubectl through `kubeleash proxy`, on the real
//! kube-apiserver and on the sandbox, a held request answered by a person who widens the
//! approval on purpose, along the axes the prompt offers (`kubeleash approvals approve ID
//! --names GLOB --field PATH=RANGE --uses N --for T`, a webhook's answer, a signed chat
//! callback). What the grant lets through goes through without a prompt; everything else is
//! held; the policy's floor approves exactly; the approver is never the agent; the record holds
//! the grant as a policy fragment and its chain verifies.
//!
//! Every scenario is a function of a [`Backend`]; `both!` makes a `sandbox` and a `real` test of
//! it. Scenarios share one real API server per test binary, so each uses names of its own.
//! Nothing waits on time: a kubectl command either finishes or shows up held
//! ([`widen::World::outcome`]).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/process.rs"]
mod process;
#[path = "support/widen.rs"]
mod widen;

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kubeleash_tower::signature::{sign_answer, sign_callback, verify_request};
use serde_json::{Value, json};
use widen::{Backend, Outcome, Setup, World};

/// Scaling and configuration changes in dev need a person; reads and discovery pass.
const POLICY: &str = r#"apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: widen-e2e}
spec:
  rules:
    - {name: read-dev, effect: allow, verbs: [get, list, watch], apiGroups: ["*"], resources: ["*"], namespaces: [dev]}
    - {name: scaling-needs-a-human, effect: approve, reason: scaling changes what runs, verbs: [patch, update], apiGroups: [apps], resources: [deployments, deployments/scale], namespaces: [dev]}
    - {name: config-needs-a-human, effect: approve, reason: configuration changes what runs, verbs: [create, update, patch, delete], apiGroups: [""], resources: [configmaps, secrets], namespaces: [dev]}
    - {name: discovery, effect: allow, verbs: [get], nonResourceURLs: [/api, "/api/*", /apis, "/apis/*", /version, "/openapi/*"]}
"#;

/// The same, with a floor of its own: configmaps are never widened (and, the default floor
/// replaced, nothing else is).
fn policy_with_own_floor() -> String {
    format!("{POLICY}  approvals:\n    neverWiden:\n      - {{resources: [configmaps]}}\n")
}

const SECRET: &str = "widen-test-secret-0123456789abcdef";

/// A `sandbox` and a `real` test of a scenario.
macro_rules! both {
    ($scenario:ident) => {
        mod $scenario {
            #[test]
            fn sandbox() {
                super::$scenario(super::Backend::Sandbox);
            }
            #[test]
            fn real() {
                super::$scenario(super::Backend::Real);
            }
        }
    };
}

fn world(name: &str, b: Backend, policy: &str) -> World {
    World::start(&Setup {
        name,
        backend: b,
        policy,
        extra: &[],
        env: &[],
    })
}

/// `kubectl scale deployment NAME --replicas=N` (in dev, the agent's namespace).
fn scale(name: &str, n: u32) -> Vec<String> {
    ["scale", "deployment", name, &format!("--replicas={n}")]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The axes a held scale of one deployment offers.
fn scale_axes() -> Value {
    json!({"names": true, "fields": ["spec.replicas"], "usesAndTime": true})
}

/// The records of the requests a grant left by approval `id` let through (not the approved one).
fn covered(w: &World, id: &str) -> Vec<Value> {
    w.records()
        .into_iter()
        .filter(|r| {
            r["decision"]["approvalId"] == id
                && r["decision"]["coalesced"] == true
                && r["kind"] == "request"
        })
        .collect()
}

both!(names_fields_and_uses);
/// `kubectl scale deployment web-1 --replicas=5` held and approved with `--names 'web-*'
/// --field spec.replicas=1..5 --uses 2`: another web deployment scaled within the range goes
/// through without a prompt; out of the range, another name, or past the two uses is held. What
/// cannot fit is refused before anything is approved. The record holds the grant.
fn names_fields_and_uses(b: Backend) {
    let mut w = world("ranges", b, POLICY);
    for name in ["wr-web-1", "wr-web-2", "wr-db"] {
        w.deployment(name, 1);
    }
    let (held, k) = w.held_by(&strs(&scale("wr-web-1", 5)), "wr-web-1");
    let id = held["id"].as_str().unwrap().to_string();
    assert_eq!(held["widen"], scale_axes(), "{held:#}");
    let listed = w.approvals(&["list"]);
    assert!(
        listed.contains("widen     names (a glob); fields spec.replicas; uses, time"),
        "{listed}"
    );
    assert!(listed.contains("--names GLOB"), "{listed}");

    // What cannot fit is refused, and nothing is approved.
    for (args, code, says) in [
        (
            vec!["--field", "spec.replicas=5..1"],
            2,
            "`spec.replicas=5..1`",
        ),
        (
            vec!["--field", "spec.paused=1..2"],
            1,
            "does not offer the field `spec.paused` to widen (it offers spec.replicas)",
        ),
        (
            vec!["--names", "wr-db*"],
            1,
            "the name glob `wr-db*` does not match the held request's own name `wr-web-1`",
        ),
        (
            vec!["--field", "spec.replicas=1..3"],
            1,
            "`spec.replicas` is 5, outside 1..3",
        ),
        (vec!["--uses", "0"], 2, "--uses"),
        (
            vec!["--names", "wr-web-*", "--for", "25h"],
            2,
            "at most 24h",
        ),
    ] {
        let mut all = vec!["approve", id.as_str()];
        all.extend(&args);
        let (got, out, err) = w.approvals_as("alice", &all);
        assert_eq!(got, code, "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?}: {err}");
        if code == 1 {
            assert!(err.contains("still held"), "{err}");
        }
    }
    assert!(
        w.pending().iter().any(|h| h["id"] == id.as_str()),
        "still held after the refusals"
    );

    let said = w.approvals(&[
        "approve",
        &id,
        "--names",
        "wr-web-*",
        "--field",
        "spec.replicas=1..5",
        "--uses",
        "2",
        "--reason",
        "the web tier needs room",
    ]);
    assert!(
        said.contains(&format!(
            "approved {id}, widened to requests from the same identity that differ only in: \
             names matching `wr-web-*`, spec.replicas within 1..5, 2 more uses, for 15m (the default)"
        )),
        "{said}"
    );
    let (ok, out) = k.join().unwrap();
    assert!(ok && out.contains("scaled"), "{out}");

    // Within the grant: no prompt.
    w.through(&strs(&scale("wr-web-2", 3)), "wr-web-2");
    // Outside it: held, whatever else is the same.
    w.held_and_denied(&strs(&scale("wr-web-2", 6)), "wr-web-2");
    w.held_and_denied(&strs(&scale("wr-db", 3)), "wr-db");
    // The second use, then none left.
    w.through(&strs(&scale("wr-web-1", 2)), "wr-web-1");
    w.held_and_denied(&strs(&scale("wr-web-2", 4)), "wr-web-2");
    for (name, replicas) in [("wr-web-1", "2"), ("wr-web-2", "3"), ("wr-db", "1")] {
        assert_eq!(
            w.stored("deployment", name, "{.spec.replicas}"),
            replicas,
            "{name}"
        );
    }

    // The record: the grant as a policy fragment, on the approval, before what it let through.
    let approval = w.approval_record(&id);
    let grant = &approval["decision"]["grant"];
    let rule = &grant["rule"];
    assert_eq!(rule["effect"], "allow", "{grant:#}");
    assert_eq!(rule["names"], json!(["wr-web-*"]), "{grant:#}");
    assert_eq!(rule["resources"], json!(["deployments/scale"]), "{grant:#}");
    assert_eq!(rule["verbs"], json!(["patch"]), "{grant:#}");
    assert_eq!(rule["namespaces"], json!(["dev"]), "{grant:#}");
    assert_eq!(rule["subjects"], json!({"users": ["agent-1"]}), "{grant:#}");
    assert_eq!(rule["when"][0]["path"], "$.spec.replicas", "{grant:#}");
    assert_eq!(
        rule["when"][0]["between"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect::<Vec<_>>(),
        [1.0, 5.0],
        "{grant:#}"
    );
    assert_eq!(grant["uses"], 2, "{grant:#}");
    assert_eq!(grant["seconds"], 900, "{grant:#}");
    assert!(
        approval["decision"]["approver"]
            .as_str()
            .unwrap()
            .starts_with("alice"),
        "{approval:#}"
    );
    assert!(
        approval["decision"]["approverReason"].is_null(),
        "{approval:#}"
    );
    let used = covered(&w, &id);
    assert_eq!(used.len(), 2, "{used:#?}");
    let records = w.records();
    let at = |r: &Value| records.iter().position(|x| x == r).unwrap();
    assert!(used.iter().all(|u| at(u) > at(&approval)));
    w.stop_and_verify();
}

both!(a_short_time_ends_the_grant);
/// A grant widened in time ends when its time does: the same widened request goes through
/// until, once the time has passed, it is held again. (Nothing here waits on the clock: each
/// attempt either goes through or is held.)
fn a_short_time_ends_the_grant(b: Backend) {
    let mut w = world("time", b, POLICY);
    w.deployment("wt-web-1", 1);
    w.deployment("wt-web-2", 1);
    let (held, k) = w.held_by(&strs(&scale("wt-web-1", 2)), "wt-web-1");
    let id = held["id"].as_str().unwrap().to_string();
    let said = w.approvals(&["approve", &id, "--names", "wt-web-*", "--for", "2s"]);
    assert!(said.contains("names matching `wt-web-*`, for 2s"), "{said}");
    let (ok, out) = k.join().unwrap();
    assert!(ok, "{out}");
    let started = Instant::now();
    let mut through = 0;
    loop {
        match w.outcome(&strs(&scale("wt-web-2", 2)), "wt-web-2") {
            Outcome::Done(true, _) => through += 1,
            Outcome::Done(false, out) => panic!("{out}"),
            Outcome::Held(h, k) => {
                let again = h["id"].as_str().unwrap();
                assert_ne!(again, id);
                w.approvals(&["deny", again, "--reason", "time is up"]);
                let (ok, out) = k.join().unwrap();
                assert!(!ok && out.contains("time is up"), "{out}");
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "a 2s grant still covered requests after 120s"
        );
    }
    assert_eq!(covered(&w, &id).len(), through);
    assert_eq!(w.approval_record(&id)["decision"]["grant"]["seconds"], 2);
    w.stop_and_verify();
}

both!(the_default_floor_approves_exactly);
/// Deletes and Secret writes are under the default floor: approved with widening flags, they go
/// through once, leave no grant (the identical or the matching request is held again), and the
/// approver and the record are told why.
fn the_default_floor_approves_exactly(b: Backend) {
    let mut w = world("floor", b, POLICY);
    for name in ["wf-gone-1", "wf-gone-2"] {
        w.admin(&[
            "create",
            "configmap",
            name,
            "--from-literal=a=b",
            "-n",
            "dev",
        ]);
    }
    let (held, k) = w.held_by(&["delete", "configmap", "wf-gone-1"], "wf-gone-1");
    let id = held["id"].as_str().unwrap().to_string();
    let never = "the policy never widens approvals of verbs [delete, deletecollection]";
    assert_eq!(held["widen"]["never"], never, "{held:#}");
    let listed = w.approvals(&["list"]);
    assert!(
        listed.contains(&format!(
            "widen     no: it can only be approved exactly ({never})"
        )),
        "{listed}"
    );
    let said = w.approvals(&["approve", &id, "--names", "wf-gone-*", "--uses", "3"]);
    assert!(
        said.contains(&format!(
            "approved {id} exactly, once; not widened: {never}"
        )),
        "{said}"
    );
    let (ok, out) = k.join().unwrap();
    assert!(ok && out.contains("deleted"), "{out}");
    let approval = w.approval_record(&id);
    assert!(approval["decision"]["grant"].is_null(), "{approval:#}");
    assert_eq!(
        approval["decision"]["approverReason"],
        format!("approved exactly, not widened: {never}"),
        "{approval:#}"
    );
    w.held_and_denied(&["delete", "configmap", "wf-gone-2"], "wf-gone-2");
    assert_eq!(w.stored("configmap", "wf-gone-2", "{.data.a}"), "b");

    // A Secret: the identical create is held again (not covered, so not a 409 either).
    let create = [
        "create",
        "secret",
        "generic",
        "wf-secret",
        "--from-literal=password=floor-Pa55",
    ];
    let (held, k) = w.held_by(&create, "wf-secret");
    let id = held["id"].as_str().unwrap().to_string();
    let never = held["widen"]["never"].as_str().unwrap().to_string();
    assert!(never.contains("secrets"), "{held:#}");
    let said = w.approvals(&["approve", &id, "--uses", "2", "--for", "10m"]);
    assert!(said.contains("exactly, once; not widened"), "{said}");
    let (ok, out) = k.join().unwrap();
    assert!(ok && out.contains("created"), "{out}");
    w.held_and_denied(&create, "wf-secret");
    let approval = w.approval_record(&id);
    assert!(approval["decision"]["grant"].is_null(), "{approval:#}");
    assert!(
        approval["decision"]["approverReason"]
            .as_str()
            .unwrap()
            .starts_with("approved exactly, not widened: "),
        "{approval:#}"
    );
    w.stop_and_verify();
}

both!(a_policy_floor_of_its_own);
/// `neverWiden: [{resources: [configmaps]}]`: configmap writes are approved exactly, and the
/// default floor is replaced (a scale is widened as asked).
fn a_policy_floor_of_its_own(b: Backend) {
    let mut w = world("ownfloor", b, &policy_with_own_floor());
    w.admin(&[
        "create",
        "configmap",
        "wo-cm",
        "--from-literal=color=blue",
        "-n",
        "dev",
    ]);
    w.deployment("wo-web-1", 1);
    let patch = [
        "patch",
        "configmap",
        "wo-cm",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"color":"red"}}"#,
    ];
    let (held, k) = w.held_by(&patch, "wo-cm");
    let id = held["id"].as_str().unwrap().to_string();
    let never = "the policy never widens approvals of resources [configmaps]";
    assert_eq!(
        held["widen"],
        json!({"never": never, "names": false, "fields": [], "usesAndTime": false}),
        "{held:#}"
    );
    let said = w.approvals(&["approve", &id, "--field", "data.color=*", "--uses", "2"]);
    assert!(
        said.contains(&format!("exactly, once; not widened: {never}")),
        "{said}"
    );
    let (ok, out) = k.join().unwrap();
    assert!(ok && out.contains("patched"), "{out}");
    w.held_and_denied(&patch, "wo-cm");
    assert!(w.approval_record(&id)["decision"]["grant"].is_null());

    // Not a configmap: widened as asked.
    let (held, k) = w.held_by(&strs(&scale("wo-web-1", 2)), "wo-web-1");
    assert_eq!(held["widen"], scale_axes(), "{held:#}");
    let id = held["id"].as_str().unwrap().to_string();
    let said = w.approvals(&["approve", &id, "--uses", "1"]);
    assert!(said.contains("widened"), "{said}");
    assert!(k.join().unwrap().0);
    w.through(&strs(&scale("wo-web-1", 2)), "wo-web-1");
    assert!(w.approval_record(&id)["decision"]["grant"].is_object());
    w.stop_and_verify();
}

both!(the_agent_cannot_widen_its_own_approval);
/// An approval given in the agent's own name (whatever the case, with a reason or not) is
/// refused though widened: the request fails, no grant is left, and the approver is told.
fn the_agent_cannot_widen_its_own_approval(b: Backend) {
    let w = world("self", b, POLICY);
    w.deployment("ws-web-1", 1);
    w.deployment("ws-web-2", 1);
    for (user, extra) in [
        ("agent-1", &["--reason", "trust me"][..]),
        ("AGENT-1", &[][..]),
    ] {
        let (held, k) = w.held_by(&strs(&scale("ws-web-1", 3)), "ws-web-1");
        let id = held["id"].as_str().unwrap().to_string();
        let mut args = vec![
            "approve",
            id.as_str(),
            "--names",
            "ws-web-*",
            "--field",
            "spec.replicas=1..5",
            "--uses",
            "5",
        ];
        args.extend(extra);
        let (code, out, err) = w.approvals_as(user, &args);
        assert_eq!(code, 1, "{user}: {out}{err}");
        assert!(err.contains("cannot approve itself"), "{user}: {err}");
        let (ok, out) = k.join().unwrap();
        assert!(
            !ok && out.contains("cannot approve itself"),
            "{user}: {out}"
        );
        let recs = w.records_of(&id, |recs| {
            recs.iter().any(|r| r["decision"]["outcome"] == "refused")
        });
        assert!(
            recs.iter()
                .all(|r| r["decision"]["outcome"] != "approved" && r["decision"]["grant"].is_null()),
            "{recs:#?}"
        );
        // No grant: a request it would have covered is held.
        w.held_and_denied(&strs(&scale("ws-web-2", 2)), "ws-web-2");
    }
    assert_eq!(w.stored("deployment", "ws-web-1", "{.spec.replicas}"), "1");
    assert_eq!(w.stored("deployment", "ws-web-2", "{.spec.replicas}"), "1");
}

// ---------------------------------------------------------------------------------------------
// The webhook and chat channels (on the sandbox: what they add is kubeleash's own).

/// One HTTP/1.1 request (headers and a Content-Length body) from `s`.
fn read_request(s: &mut TcpStream) -> (HashMap<String, String>, Vec<u8>) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let mut headers = HashMap::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers
        .get("content-length")
        .map_or(0, |l| l.parse().unwrap());
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (headers, body)
}

/// A request the webhook received, and where its answer goes.
struct Asked {
    json: Value,
    answer: mpsc::Sender<String>,
}

/// The approval webhook: each POST (signature checked) goes to the test, which answers it;
/// the answer is signed and sent back.
fn webhook_service() -> (String, mpsc::Receiver<Asked>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/approve", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let (headers, body) = read_request(&mut s);
            let sig = headers.get("x-kubeleash-signature").unwrap();
            assert!(verify_request(SECRET.as_bytes(), &body, sig));
            let (answer, answered) = mpsc::channel();
            let json = serde_json::from_slice(&body).unwrap();
            if tx.send(Asked { json, answer }).is_err() {
                break;
            }
            let Ok(reply) = answered.recv_timeout(Duration::from_secs(100)) else {
                continue;
            };
            let sig = sign_answer(SECRET.as_bytes(), reply.as_bytes());
            let _ = s.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Kubeleash-Signature: {sig}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                )
                .as_bytes(),
            );
        }
    });
    (url, rx)
}

fn secret_file(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).unwrap();
    let f = dir.join("approvals.secret");
    std::fs::write(&f, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    f
}

/// Run kubectl as the agent until it finishes, failing if the channel is asked meanwhile.
fn through_unasked<T>(w: &World, args: &[&str], asked: &mpsc::Receiver<T>) -> String {
    let k = w.kubectl_meanwhile(args);
    let started = Instant::now();
    loop {
        if k.is_finished() {
            let (ok, out) = k.join().unwrap();
            assert!(ok, "{out}");
            return out;
        }
        assert!(
            asked.try_recv().is_err(),
            "kubectl {args:?} was held and its approver asked"
        );
        assert!(started.elapsed() < Duration::from_secs(60), "kubectl hangs");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_webhook_answer_widens_along_what_is_offered() {
    let (url, asked) = webhook_service();
    let dir = std::env::temp_dir().join(format!("kl-w-hook-secret-{}", std::process::id()));
    let secret = secret_file(&dir);
    let hook = format!("webhook={url}");
    let w = World::start(&Setup {
        name: "hook",
        backend: Backend::Sandbox,
        policy: POLICY,
        extra: &["--approvals", &hook],
        env: &[("KUBELEASH_WEBHOOK_SECRET_FILE", &secret)],
    });
    w.deployment("wh-web-1", 1);
    w.deployment("wh-web-2", 1);
    let next = || {
        asked
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the webhook was not asked:\n{}", w.stderr()))
    };
    let answer = |a: &Asked, widen: Value| {
        let id = a.json["id"].as_str().unwrap();
        a.answer
            .send(json!({"id": id, "approve": true, "by": "bob", "widen": widen}).to_string())
            .unwrap();
    };

    // The payload carries the axes. A widening along one not offered denies.
    let k = w.kubectl_meanwhile(&strs(&scale("wh-web-1", 4)));
    let a = next();
    assert_eq!(a.json["widen"], scale_axes(), "{:#}", a.json);
    answer(
        &a,
        json!({"fields": [{"path": "spec.paused", "min": 0, "max": 1}]}),
    );
    let (ok, out) = k.join().unwrap();
    assert!(
        !ok && out.contains("widened the approval along what the request does not offer"),
        "{out}"
    );
    assert!(
        w.stderr()
            .contains("does not offer the field `spec.paused`"),
        "{}",
        w.stderr()
    );

    // One that fits: approved, and the next request within it is not asked about.
    let k = w.kubectl_meanwhile(&strs(&scale("wh-web-1", 4)));
    let a = next();
    let id = a.json["id"].as_str().unwrap().to_string();
    answer(
        &a,
        json!({"names": "wh-web-*", "fields": [{"path": "spec.replicas", "min": 1, "max": 5}], "uses": 1}),
    );
    let (ok, out) = k.join().unwrap();
    assert!(ok, "{out}");
    through_unasked(&w, &strs(&scale("wh-web-2", 2)), &asked);
    // Its one use spent: asked again, and denied.
    let k = w.kubectl_meanwhile(&strs(&scale("wh-web-2", 3)));
    let a = next();
    let again = a.json["id"].as_str().unwrap();
    a.answer
        .send(json!({"id": again, "approve": false, "by": "bob", "reason": "enough"}).to_string())
        .unwrap();
    let (ok, out) = k.join().unwrap();
    assert!(!ok && out.contains("enough"), "{out}");
    let grant = &w.approval_record(&id)["decision"]["grant"];
    assert_eq!(grant["rule"]["names"], json!(["wh-web-*"]), "{grant:#}");
    assert_eq!(grant["uses"], 1, "{grant:#}");
    assert_eq!(w.stored("deployment", "wh-web-2", "{.spec.replicas}"), "2");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The chat service: takes every message (answering `ok`, as Slack does) and hands it over.
fn chat_service() -> (String, mpsc::Receiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let (_, body) = read_request(&mut s);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            );
            if tx.send(serde_json::from_slice(&body).unwrap()).is_err() {
                break;
            }
        }
    });
    (url, rx)
}

/// POST `body` to the callback URL, signed with `secret` at `ts` (or a signature of `signed`
/// instead, to tamper); the status.
fn call_back(url: &str, body: &str, signed: &str, ts: u64, secret: &str) -> u16 {
    let sig = sign_callback(secret.as_bytes(), ts, signed.as_bytes());
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_once('/').unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Kubeleash-Timestamp: {ts}\r\nX-Kubeleash-Signature: {sig}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"))
}

#[test]
fn a_signed_chat_callback_widens_along_what_is_offered() {
    let (url, messages) = chat_service();
    let dir = std::env::temp_dir().join(format!("kl-w-chat-secret-{}", std::process::id()));
    let secret = secret_file(&dir);
    let chat = format!("chat={url}");
    let w = World::start(&Setup {
        name: "chat",
        backend: Backend::Sandbox,
        policy: POLICY,
        extra: &["--approvals", &chat, "--approvals-callback", "127.0.0.1:0"],
        env: &[("KUBELEASH_WEBHOOK_SECRET_FILE", &secret)],
    });
    let stderr = w.stderr();
    let cb = stderr
        .lines()
        .find_map(|l| l.split("approval callbacks at ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no callback URL:\n{stderr}"))
        .to_string();
    w.deployment("wc-web-1", 1);
    w.deployment("wc-web-2", 1);

    let k = w.kubectl_meanwhile(&strs(&scale("wc-web-1", 4)));
    let m = messages
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no message:\n{}", w.stderr()));
    let id = m["kubeleash"]["id"].as_str().unwrap().to_string();
    assert_eq!(m["kubeleash"]["widen"], scale_axes(), "{m:#}");
    let blocks = m["blocks"].to_string();
    assert!(blocks.contains("*Can be widened*"), "{blocks}");
    assert!(blocks.contains("`spec.replicas`"), "{blocks}");
    assert!(blocks.contains("any *name* matching a glob"), "{blocks}");
    // The buttons approve or deny exactly; a widening is never a button.
    let actions = m["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "actions")
        .unwrap();
    let values: Vec<&str> = actions["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, [format!("approve:{id}"), format!("deny:{id}")]);

    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let answer = |by: &str, widen: Value| {
        json!({"id": id, "approve": true, "by": by, "widen": widen}).to_string()
    };
    let good = answer(
        "alice@example.com",
        json!({"names": "wc-web-*", "fields": [{"path": "spec.replicas", "min": 1, "max": 5}], "uses": 1}),
    );
    // The widening is inside the signed body: widened on the way, the signature fails.
    let wider = answer(
        "alice@example.com",
        json!({"names": "*", "fields": [{"path": "spec.replicas", "min": 1, "max": 500}], "uses": 1000}),
    );
    assert_eq!(call_back(&cb, &wider, &good, t, SECRET), 401);
    // Along an axis not offered, or a range the request is outside: refused, still held.
    let paused = answer(
        "alice@example.com",
        json!({"fields": [{"path": "spec.paused", "min": 0, "max": 1}]}),
    );
    assert_eq!(call_back(&cb, &paused, &paused, t + 1, SECRET), 400);
    let narrow = answer(
        "alice@example.com",
        json!({"fields": [{"path": "spec.replicas", "min": 1, "max": 3}]}),
    );
    assert_eq!(call_back(&cb, &narrow, &narrow, t + 2, SECRET), 400);
    // The agent widening its own approval.
    let own = answer("agent-1", json!({"names": "wc-web-*"}));
    assert_eq!(call_back(&cb, &own, &own, t + 3, SECRET), 403);
    // Still held: the good answer is taken.
    assert_eq!(call_back(&cb, &good, &good, t + 4, SECRET), 200);
    let (ok, out) = k.join().unwrap();
    assert!(ok, "{out}");
    through_unasked(&w, &strs(&scale("wc-web-2", 2)), &messages);
    let approval = w.approval_record(&id);
    assert_eq!(approval["decision"]["approver"], "alice@example.com");
    assert_eq!(
        approval["decision"]["grant"]["rule"]["names"],
        json!(["wc-web-*"]),
        "{approval:#}"
    );
    let stderr = w.stderr();
    assert!(
        stderr.contains(&format!(
            "approval {id} approved, widened: names matching `wc-web-*`"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("does not offer the field `spec.paused`"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
