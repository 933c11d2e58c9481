//! The chat approval channel end to end: real kubectl, through `kubeleash proxy --approvals
//! chat=URL --approvals-callback 127.0.0.1:0`, to `kubeleash sandbox`. A tiny HTTP server on
//! loopback plays the chat service: it takes the Slack message kubeleash posts for a held
//! request, then answers by calling the proxy's callback endpoint, signed or not.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "support/process.rs"]
mod process;
#[path = "support/wire.rs"]
mod wire;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use kubeleash_tower::signature::{sign_callback, verify_request};
use process::{Guard, require_kubectl, sandbox_for_operator};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kubeleash");
const SECRET: &str = "chat-test-secret-0123456789abcdef";
const USAGE: i32 = 2;

/// Holds configmap and secret creates in dev; reads and discovery pass.
const POLICY: &str = r#"apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: chat-approvals}
spec:
  rules:
    - name: read-dev
      effect: allow
      subjects: {groups: [ai-agents]}
      verbs: [get, list, watch]
      apiGroups: [""]
      resources: [configmaps, secrets]
      namespaces: [dev]
    - name: config-needs-a-human
      effect: approve
      reason: configuration changes what runs
      verbs: [create]
      apiGroups: [""]
      resources: [configmaps, secrets]
      namespaces: [dev]
    - name: discovery
      effect: allow
      verbs: [get]
      nonResourceURLs: [/api, "/api/*", /apis, "/apis/*", /version, "/openapi/*"]
"#;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kubeleash-chat-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One message the chat service received.
struct Posted {
    headers: HashMap<String, String>,
    raw: String,
    json: Value,
}

/// Read one HTTP/1.1 request (headers and a Content-Length body) from `s`.
fn read_request(s: &mut TcpStream) -> (String, HashMap<String, String>, Vec<u8>) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let request_line = line.trim().to_string();
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
    (request_line, headers, body)
}

/// The chat service: a loopback server that takes every message, answers `ok` (as Slack's
/// incoming webhooks do), and hands it to the test.
fn chat_service() -> (String, mpsc::Receiver<Posted>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/services/T0/B0/hook",
        listener.local_addr().unwrap()
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let (line, headers, body) = read_request(&mut s);
            assert_eq!(line, "POST /services/T0/B0/hook HTTP/1.1");
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            );
            let raw = String::from_utf8(body).unwrap();
            let json = serde_json::from_str(&raw).unwrap();
            if tx.send(Posted { headers, raw, json }).is_err() {
                break;
            }
        }
    });
    (url, rx)
}

/// POST `body` to the callback URL with the given headers (`None`: header left out); the
/// status.
fn post(url: &str, body: &[u8], timestamp: Option<&str>, signature: Option<&str>) -> u16 {
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_once('/').unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "POST /{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(t) = timestamp {
        head.push_str(&format!("X-Kubeleash-Timestamp: {t}\r\n"));
    }
    if let Some(sig) = signature {
        head.push_str(&format!("X-Kubeleash-Signature: {sig}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"))
}

/// A callback signed with `secret` at `ts`.
fn call_back(url: &str, body: &str, ts: u64, secret: &str) -> u16 {
    let sig = sign_callback(secret.as_bytes(), ts, body.as_bytes());
    post(url, body.as_bytes(), Some(&ts.to_string()), Some(&sig))
}

fn answer(id: &str, approve: bool, by: &str, reason: &str) -> String {
    serde_json::json!({"id": id, "approve": approve, "by": by, "reason": reason}).to_string()
}

struct Env {
    _sandbox: Guard,
    proxy: Guard,
    home: PathBuf,
    callback: String,
    messages: mpsc::Receiver<Posted>,
}

/// `kubeleash proxy ARGS` with `env` set, its stderr in `stderr`; the URL from its first line.
fn serve_with_env(args: &[&str], env: &[(&str, &Path)], stderr: &Path) -> (Guard, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("KUBELEASH_WEBHOOK_SECRET")
        .env_remove("KUBELEASH_WEBHOOK_SECRET_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let guard = Guard(child);
    let Some(url) = line.trim().strip_prefix("listening on ") else {
        panic!(
            "kubeleash proxy: unexpected first line {line:?}; stderr:\n{}",
            std::fs::read_to_string(stderr).unwrap_or_default()
        );
    };
    (guard, url.to_string())
}

fn proxy_args<'a>(home: &'a Path, extra: &[&'a str]) -> Vec<String> {
    let p = |f: &str| home.join(f).to_str().unwrap().to_string();
    let mut args: Vec<String> = [
        "proxy",
        "--policy",
        &p("policy.yaml"),
        "--kubeconfig",
        &p("operator.kubeconfig"),
        "--listen",
        "127.0.0.1:0",
        "--record",
        &p("session.jsonl"),
        "--user",
        "agent-1",
        "--group",
        "ai-agents",
        "--agent-kubeconfig",
        &p("agent.kubeconfig"),
        "--agent-namespace",
        "dev",
        "--approval-timeout",
        "120",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn write_secret(home: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let f = home.join("chat.secret");
    std::fs::write(&f, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    f
}

/// Sandbox, the chat service, and the proxy in front of the sandbox posting to the service.
fn env(name: &str) -> Env {
    require_kubectl();
    let home = dir(name);
    let sandbox_guard = sandbox_for_operator(&home);
    std::fs::write(home.join("policy.yaml"), POLICY).unwrap();
    let secret = write_secret(&home);
    let (chat_url, messages) = chat_service();
    let chat = format!("chat={chat_url}");
    let args = proxy_args(
        &home,
        &["--approvals", &chat, "--approvals-callback", "127.0.0.1:0"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stderr = home.join("proxy.stderr");
    let (proxy_guard, proxy) = serve_with_env(
        &args,
        &[("KUBELEASH_WEBHOOK_SECRET_FILE", &secret)],
        &stderr,
    );
    assert!(proxy.starts_with("https://127.0.0.1:"), "{proxy}");
    let err = std::fs::read_to_string(&stderr).unwrap();
    let callback = err
        .lines()
        .find_map(|l| l.split("approval callbacks at ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the proxy did not print its callback URL:\n{err}"))
        .to_string();
    assert!(
        callback.starts_with("http://127.0.0.1:") && callback.ends_with("/callback"),
        "{callback}"
    );
    Env {
        _sandbox: sandbox_guard,
        proxy: proxy_guard,
        home,
        callback,
        messages,
    }
}

impl Env {
    /// kubectl as the agent, running in the background.
    fn spawn_kubectl(&self, args: &[&str]) -> Child {
        Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.home.join("agent.kubeconfig"))
            .env("HOME", &self.home)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The message posted for the next held request.
    fn next_message(&self) -> Posted {
        self.messages
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "no message reached the chat service; proxy stderr:\n{}",
                    self.stderr()
                )
            })
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.home.join("proxy.stderr")).unwrap_or_default()
    }

    /// The records that name approval `id` (the record file is JSON Lines).
    fn records_of(&self, id: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.home.join("session.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["decision"]["approvalId"] == id)
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.proxy.0.kill();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// kubectl's exit and output, within `within`.
fn finish(mut child: Child, within: Duration) -> (bool, String) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            return (status.success(), out);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kubectl did not finish within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Slack shape of a message, and its approval id (from the buttons, checked against the
/// raw request under `kubeleash`).
fn check_slack_shape(m: &Posted, kubectl: &str) -> String {
    let v = &m.json;
    assert_eq!(
        m.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    let sig = m
        .headers
        .get("x-kubeleash-signature")
        .expect("a signed message");
    assert!(
        verify_request(SECRET.as_bytes(), m.raw.as_bytes(), sig),
        "the message's signature does not verify"
    );
    let id = v["kubeleash"]["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32, "{id}");
    assert!(
        v["text"].as_str().unwrap().contains(kubectl),
        "{}",
        v["text"]
    );
    let blocks = v["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    for b in blocks {
        let t = b["type"].as_str().unwrap();
        assert!(
            ["header", "section", "actions", "context"].contains(&t),
            "not a Slack block type: {t}"
        );
        if let Some(text) = b["text"]["text"].as_str() {
            assert!(text.chars().count() <= 3000, "too long for Slack: {text}");
        }
    }
    let all = serde_json::to_string(blocks).unwrap();
    assert!(all.contains(kubectl), "{all}");
    assert!(all.contains("agent-1"), "{all}");
    assert!(all.contains("config-needs-a-human"), "{all}");
    assert!(all.contains("configuration changes what runs"), "{all}");
    let actions = blocks.iter().find(|b| b["type"] == "actions").unwrap();
    let buttons = actions["elements"].as_array().unwrap();
    assert_eq!(buttons.len(), 2);
    assert!(buttons.iter().all(|b| b["type"] == "button"));
    assert_eq!(buttons[0]["value"], format!("approve:{id}"));
    assert_eq!(buttons[1]["value"], format!("deny:{id}"));
    assert_eq!(v["kubeleash"]["kubectl"], kubectl);
    assert_eq!(v["kubeleash"]["identity"]["user"], "agent-1");
    id
}

/// Still waiting: kubectl has not returned.
fn still_held(kubectl: &mut Child, what: &str) {
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        kubectl.try_wait().unwrap().is_none(),
        "the request was answered after {what}"
    );
}

#[test]
fn only_a_signed_fresh_callback_from_another_person_approves() {
    let e = env("approve");
    let mut kubectl = e.spawn_kubectl(&[
        "create",
        "configmap",
        "chat-approved-config",
        "--from-literal=greeting=hello",
        "-n",
        "dev",
    ]);
    let m = e.next_message();
    let id = check_slack_shape(&m, "kubectl create -n dev -f -");
    // What is created is in the (masked) body shown.
    let blocks = serde_json::to_string(&m.json["blocks"]).unwrap();
    assert!(
        blocks.contains("chat-approved-config") && blocks.contains("greeting"),
        "{blocks}"
    );
    let cb = &e.callback;
    let t = now();
    let good = answer(&id, true, "alice@example.com", "looks fine");

    // Forged: signed with another key, or not at all, or a signature that is not hex.
    assert_eq!(
        call_back(cb, &good, t, "another-secret-0123456789abcdef"),
        401
    );
    assert_eq!(post(cb, good.as_bytes(), Some(&t.to_string()), None), 401);
    let sig = sign_callback(SECRET.as_bytes(), t, good.as_bytes());
    assert_eq!(post(cb, good.as_bytes(), None, Some(&sig)), 401);
    assert_eq!(
        post(cb, good.as_bytes(), Some(&t.to_string()), Some("sha256=zz")),
        401
    );
    // Signed, but the body was changed on the way.
    let tampered = good.replace("alice@example.com", "mallory@example.com");
    assert_eq!(
        post(cb, tampered.as_bytes(), Some(&t.to_string()), Some(&sig)),
        401
    );
    still_held(&mut kubectl, "forged callbacks");

    // Stale, either way.
    assert_eq!(call_back(cb, &good, t - 400, SECRET), 401);
    assert_eq!(call_back(cb, &good, t + 400, SECRET), 401);
    still_held(&mut kubectl, "stale callbacks");

    // An id that is not held.
    let unknown = answer(
        "ffffffffffffffffffffffffffffffff",
        true,
        "alice@example.com",
        "",
    );
    assert_eq!(call_back(cb, &unknown, t, SECRET), 401);

    // The agent approving itself, then the same callback again (a replay is caught first).
    let own = answer(&id, true, "agent-1", "trust me");
    assert_eq!(call_back(cb, &own, t, SECRET), 403);
    assert_eq!(call_back(cb, &own, t, SECRET), 401);
    // A well-signed answer with the same id and timestamp as one seen: a replay too.
    assert_eq!(call_back(cb, &good, t, SECRET), 401);
    // No approver named.
    assert_eq!(
        call_back(cb, &answer(&id, true, "", ""), t + 1, SECRET),
        401
    );
    // Too big to read.
    let big = format!(
        r#"{{"id":"{id}","approve":true,"by":"alice","pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    assert_eq!(call_back(cb, &big, t + 2, SECRET), 413);
    still_held(&mut kubectl, "refused callbacks");

    // The good answer, fresh.
    assert_eq!(call_back(cb, &good, t + 3, SECRET), 200);
    let (ok, out) = finish(kubectl, Duration::from_secs(30));
    assert!(ok, "{out}");
    assert!(
        out.contains("configmap/chat-approved-config created"),
        "{out}"
    );
    // Replayed once the request is through: refused.
    assert_eq!(call_back(cb, &good, t + 3, SECRET), 401);

    // The record names the approver from `by`.
    let deadline = Instant::now() + Duration::from_secs(60);
    let approved = loop {
        let recs = e.records_of(&id);
        if let Some(r) = recs.iter().find(|r| r["decision"]["approver"].is_string()) {
            break r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no record names the approver of {id}: {recs:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(approved["decision"]["approver"], "alice@example.com");
    let stderr = e.stderr();
    assert!(
        stderr.contains(&format!("approval {id} approved by alice@example.com")),
        "{stderr}"
    );
    assert!(!stderr.contains(SECRET), "the secret was printed");
}

#[test]
fn a_denial_reaches_the_agent_and_masked_values_stay_masked() {
    let e = env("deny");
    let password = "hunter2-chat-secret-value";
    let arg = format!("--from-literal=password={password}");
    let kubectl = e.spawn_kubectl(&["create", "secret", "generic", "db-pass", &arg, "-n", "dev"]);
    let m = e.next_message();
    let id = check_slack_shape(&m, "kubectl create -n dev -f -");
    let b64 = base64::engine::general_purpose::STANDARD.encode(password);
    for leaked in [password, b64.as_str(), b64.trim_end_matches('=')] {
        assert!(
            !m.raw.contains(leaked),
            "the message carries {leaked}: {}",
            m.raw
        );
    }
    // The masked body is there, for the approver to judge.
    let body = m.json["kubeleash"]["body"].as_str().unwrap();
    assert!(body.contains("db-pass"), "{body}");
    assert!(
        serde_json::to_string(&m.json["blocks"])
            .unwrap()
            .contains("db-pass"),
        "{}",
        m.raw
    );

    let no = answer(
        &id,
        false,
        "bob@example.com",
        "not during the release freeze",
    );
    assert_eq!(call_back(&e.callback, &no, now(), SECRET), 200);
    let (ok, out) = finish(kubectl, Duration::from_secs(30));
    assert!(!ok, "{out}");
    assert!(out.contains("not during the release freeze"), "{out}");
    assert!(out.contains("bob@example.com"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let recs = e.records_of(&id);
        if let Some(r) = recs.iter().find(|r| r["decision"]["approver"].is_string()) {
            assert_eq!(r["decision"]["approver"], "bob@example.com", "{r}");
            assert_eq!(
                r["decision"]["approverReason"], "not during the release freeze",
                "{r}"
            );
            assert_eq!(r["response"]["status"], 403, "{r}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no record names who denied {id}: {recs:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, get) = {
        let c = e.spawn_kubectl(&["get", "secret", "db-pass", "-n", "dev"]);
        finish(c, Duration::from_secs(30))
    };
    assert!(
        get.contains("NotFound") || get.contains("not found"),
        "{get}"
    );
}

#[test]
fn the_chat_channel_is_refused_without_what_makes_it_safe() {
    let home = dir("flags");
    std::fs::write(home.join("policy.yaml"), POLICY).unwrap();
    std::fs::write(
        home.join("operator.kubeconfig"),
        "apiVersion: v1\nkind: Config\n",
    )
    .unwrap();
    let run = |extra: &[&str], secret: Option<&Path>| {
        let args = proxy_args(&home, extra);
        let mut cmd = Command::new(BIN);
        cmd.args(&args)
            .env_remove("KUBELEASH_WEBHOOK_SECRET")
            .env_remove("KUBELEASH_WEBHOOK_SECRET_FILE");
        if let Some(s) = secret {
            cmd.env("KUBELEASH_WEBHOOK_SECRET_FILE", s);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let chat = "chat=http://127.0.0.1:9/hook";
    let secret = write_secret(&home);
    let (code, err) = run(&["--approvals", chat], Some(&secret));
    assert_eq!(code, Some(USAGE), "{err}");
    assert!(err.contains("needs --approvals-callback"), "{err}");
    let (code, err) = run(&["--approvals-callback", "127.0.0.1:0"], Some(&secret));
    assert_eq!(code, Some(USAGE), "{err}");
    assert!(err.contains("is for --approvals chat=URL"), "{err}");
    let (code, err) = run(
        &["--approvals", chat, "--approvals-callback", "127.0.0.1:0"],
        None,
    );
    assert_eq!(code, Some(USAGE), "{err}");
    assert!(err.contains("needs a shared secret"), "{err}");
    let short = home.join("short.secret");
    std::fs::write(&short, "short").unwrap();
    let (code, err) = run(
        &["--approvals", chat, "--approvals-callback", "127.0.0.1:0"],
        Some(&short),
    );
    assert_eq!(code, Some(USAGE), "{err}");
    assert!(err.contains("at least 16"), "{err}");
    let (code, err) = run(
        &["--approvals", chat, "--approvals-callback", "0.0.0.0:0"],
        Some(&secret),
    );
    assert_eq!(code, Some(USAGE), "{err}");
    assert!(err.contains("not a loopback address"), "{err}");
    let (code, err) = run(
        &[
            "--approvals",
            "chat=https://hooks.slack.com/services/x",
            "--approvals-callback",
            "127.0.0.1:0",
        ],
        Some(&secret),
    );
    assert_eq!(code, Some(USAGE), "{err}");
    assert!(err.contains("https chat URLs are not supported"), "{err}");
    assert!(
        !err.contains("services/x"),
        "the URL (it may carry a token) was printed: {err}"
    );
    let _ = std::fs::remove_dir_all(&home);
}
