//! The proxy end to end: real kubectl, through `kubeleash proxy`, to `kubeleash sandbox`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_kubeleash");

/// A child process killed when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `kubeleash ARGS` and read the URL from its first line.
fn serve(args: &[&str]) -> (Guard, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_string();
    (Guard(child), url)
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kubeleash-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn kubeconfig(server: &str, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u, namespace: dev}}\ncurrent-context: c\nusers:\n- name: u\n  user: {user}\n"
    )
}

fn kubectl_present() -> bool {
    let ok = Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: no kubectl on PATH (Debian's kubernetes-client package provides one)");
    }
    ok
}

struct Env {
    _sandbox: Guard,
    _proxy: Guard,
    sandbox: String,
    proxy: String,
    home: PathBuf,
}

/// Sandbox, then the proxy in front of it with the demo policy, and the agent's kubeconfig.
fn env(name: &str, extra: &[&str]) -> Env {
    let home = dir(name);
    let (sandbox_guard, sandbox) = serve(&["sandbox", "--listen", "127.0.0.1:0"]);
    std::fs::write(home.join("operator.kubeconfig"), kubeconfig(&sandbox, "{}")).unwrap();
    // A copy, so a test can rewrite it while the proxy runs.
    let policy = home.join("policy.yaml");
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/agent-policy.yaml"),
        &policy,
    )
    .unwrap();
    let op = home.join("operator.kubeconfig");
    let record = home.join("session.jsonl");
    let mut args = vec![
        "proxy",
        "--policy",
        policy.to_str().unwrap(),
        "--kubeconfig",
        op.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--record",
        record.to_str().unwrap(),
    ];
    if extra.is_empty() {
        args.extend(["--user", "agent-1", "--group", "ai-agents"]);
    }
    args.extend(extra);
    let (proxy_guard, proxy) = serve(&args);
    let agent = Command::new(BIN)
        .args(["kubeconfig", "--server", &proxy, "--namespace", "dev"])
        .output()
        .unwrap();
    std::fs::write(home.join("agent.kubeconfig"), &agent.stdout).unwrap();
    Env {
        _sandbox: sandbox_guard,
        _proxy: proxy_guard,
        sandbox,
        proxy,
        home,
    }
}

impl Env {
    fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.home.join("agent.kubeconfig"))
            .env("HOME", &self.home)
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

    fn spawn_kubectl(&self, args: &[&str]) -> Guard {
        Guard(
            Command::new("kubectl")
                .args(args)
                .env("KUBECONFIG", self.home.join("agent.kubeconfig"))
                .env("HOME", &self.home)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

/// Read lines from a child's stdout until one satisfies `want` (or time runs out).
fn read_until(child: &mut Guard, within: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
    let out = child.0.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + within;
    let mut seen = String::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if want(&seen) {
                    return Some(seen);
                }
            }
            Err(_) => break,
        }
    }
    None
}

#[test]
fn kubectl_through_the_proxy() {
    if !kubectl_present() {
        return;
    }
    let e = env("kubectl", &[]);
    let agent_config = std::fs::read_to_string(e.home.join("agent.kubeconfig")).unwrap();
    for word in ["token", "client-key", "password", "client-certificate"] {
        assert!(
            !agent_config.contains(word),
            "the agent's kubeconfig holds a credential ({word}):\n{agent_config}"
        );
    }

    let (ok, out) = e.kubectl(&["get", "pods"]);
    assert!(ok && out.contains("web-"), "{out}");

    let (ok, out) = e.kubectl(&["get", "secret", "db-credentials", "-o", "yaml"]);
    assert!(ok, "{out}");
    assert!(out.contains("password: W21hc2tlZF0="), "{out}");
    assert!(!out.contains("S3cr3t") && !out.contains("hunter2"), "{out}");

    let (_, pods) = e.kubectl(&["get", "pods", "-o", "jsonpath={.items[*].metadata.name}"]);
    let mut leaked_masked = false;
    for pod in pods.split_whitespace() {
        let (ok, out) = e.kubectl(&["logs", pod]);
        assert!(ok, "{out}");
        assert!(
            !out.contains("BEGIN RSA PRIVATE KEY-----\nMII"),
            "a private key came through: {out}"
        );
        leaked_masked |= out.contains("[masked:private-key");
    }
    assert!(leaked_masked, "the seeded leaking log was masked");

    let (ok, out) = e.kubectl(&["delete", "namespace", "prod", "--wait=false"]);
    assert!(
        !ok && out.contains("Forbidden") && out.contains("protect-production"),
        "{out}"
    );

    let (ok, out) = e.kubectl(&["get", "pods", "--as", "system:admin"]);
    assert!(
        !ok && out.contains("Forbidden") && out.contains("impersonat"),
        "{out}"
    );

    let (ok, out) = e.kubectl(&["get", "secrets", "-n", "prod"]);
    assert!(!ok && out.contains("Forbidden"), "{out}");

    // The record: every request, chained, no secret in it.
    drop(e._proxy);
    let log = std::fs::read_to_string(e.home.join("session.jsonl")).unwrap_or_default();
    assert!(log.contains("protect-production"));
    assert!(
        !log.contains("S3cr3t-Db-P4ssw0rd"),
        "a secret reached the record"
    );
}

#[test]
fn watches_and_followed_logs_stream_through() {
    if !kubectl_present() {
        return;
    }
    let e = env("stream", &[]);
    let mut watch = e.spawn_kubectl(&[
        "get",
        "secrets",
        "-w",
        "-o",
        "json",
        "--output-watch-events",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    // A change made while the watch is open, straight on the sandbox.
    let body = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"created-during-watch"},"stringData":{"token":"live-watch-secret-value"}}"#;
    let (status, _) = http(
        &e.sandbox,
        "POST",
        "/api/v1/namespaces/dev/secrets",
        Some(body),
        None,
    );
    assert_eq!(status, 201);
    let seen = read_until(&mut watch, Duration::from_secs(20), |s| {
        s.contains("created-during-watch") && s.matches('}').count() > 8
    })
    .expect("the watch event arrived while the watch was open");
    assert!(
        !seen.contains("live-watch-secret-value")
            && !seen.contains("bGl2ZS13YXRjaC1zZWNyZXQtdmFsdWU"),
        "{seen}"
    );

    let (_, pods) = e.kubectl(&["get", "pods", "-o", "jsonpath={.items[*].metadata.name}"]);
    let pod = pods.split_whitespace().next().unwrap().to_string();
    let mut follow = e.spawn_kubectl(&["logs", "-f", &pod]);
    let lines = read_until(&mut follow, Duration::from_secs(20), |s| {
        s.lines().count() >= 2
    })
    .expect("followed log lines arrive before the log ends");
    assert!(!lines.is_empty());
}

/// A bare HTTP/1.1 request; returns the status and body.
fn http(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    bearer: Option<&str>,
) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let body = body.unwrap_or_default();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nAccept: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

fn b64url(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..=c.len() {
            s.push(char::from(T[((n >> (18 - 6 * k)) & 63) as usize]));
        }
    }
    s
}

fn jwt(secret: &[u8], claims: serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("test".into());
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

#[test]
fn oidc_tokens_good_and_bad() {
    let home = dir("oidc-keys");
    let secret = b"a-test-signing-secret-of-32-bytes!!";
    let jwks = serde_json::json!({"keys": [{"kty": "oct", "kid": "test", "alg": "HS256", "k": b64url(secret)}]});
    let jwks_path = home.join("jwks.json");
    std::fs::write(&jwks_path, jwks.to_string()).unwrap();
    let e = env(
        "oidc",
        &[
            "--oidc-issuer",
            "https://issuer.example",
            "--oidc-audience",
            "kubeleash",
            "--oidc-jwks",
            jwks_path.to_str().unwrap(),
        ],
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let good = jwt(
        secret,
        serde_json::json!({"iss": "https://issuer.example", "aud": "kubeleash", "sub": "agent-7", "groups": ["ai-agents"], "exp": now + 600}),
    );
    let (status, body) = http(
        &e.proxy,
        "GET",
        "/api/v1/namespaces/dev/pods",
        None,
        Some(&good),
    );
    assert_eq!(status, 200, "{body}");

    let cases = [
        (
            "expired",
            jwt(
                secret,
                serde_json::json!({"iss": "https://issuer.example", "aud": "kubeleash", "sub": "a", "exp": now - 600}),
            ),
        ),
        (
            "wrong audience",
            jwt(
                secret,
                serde_json::json!({"iss": "https://issuer.example", "aud": "other", "sub": "a", "exp": now + 600}),
            ),
        ),
        (
            "wrong issuer",
            jwt(
                secret,
                serde_json::json!({"iss": "https://evil.example", "aud": "kubeleash", "sub": "a", "exp": now + 600}),
            ),
        ),
        (
            "wrong key",
            jwt(
                b"another-secret-entirely-32-bytes!!!",
                serde_json::json!({"iss": "https://issuer.example", "aud": "kubeleash", "sub": "a", "exp": now + 600}),
            ),
        ),
        ("not a jwt", "garbage".to_string()),
    ];
    for (what, token) in cases {
        let (status, body) = http(
            &e.proxy,
            "GET",
            "/api/v1/namespaces/dev/pods",
            None,
            Some(&token),
        );
        assert_eq!(status, 401, "{what}: {body}");
        assert!(
            body.contains("\"kind\":\"Status\"") && body.contains("Unauthorized"),
            "{what}: {body}"
        );
    }
    let (status, _) = http(&e.proxy, "GET", "/api/v1/namespaces/dev/pods", None, None);
    assert_eq!(status, 401, "no token at all");
    let (status, body) = http(
        &e.proxy,
        "GET",
        "/api/v1/namespaces/prod/pods",
        None,
        Some(&good),
    );
    assert_eq!(
        status, 403,
        "a valid token still answers to the policy: {body}"
    );
}

#[test]
fn the_demo_tells_the_whole_story() {
    let out = Command::new(BIN)
        .args(["demo", "--no-color"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "allowed: web-",
        "allowed, masked: data = {\"password\":\"W21hc2tlZF0=\"",
        "[masked:private-key",
        "denied (403): kubeleash: rule \"protect-production\"",
        "held for a human: kubectl create -f -",
        "allowed: the binding was created after approval",
        "kubectl delete namespace prod",
        "hash chain intact",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    if kubectl_present() {
        let out = Command::new(BIN)
            .args(["demo", "--no-color", "--kubectl"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success()
                && text.contains("Forbidden")
                && text.contains("hash chain intact"),
            "{text}"
        );
    }
}

#[test]
fn policy_reloads_on_change_and_a_broken_one_keeps_the_old() {
    let e = env("reload", &[]);
    let policy = e.home.join("policy.yaml");
    let pods = || http(&e.proxy, "GET", "/api/v1/namespaces/dev/pods", None, None).0;
    assert_eq!(pods(), 200);
    // A policy that does not compile: the old one stays in force.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&policy, "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec: {rules: [{name: x, effect: maybe}]}\n").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        pods(),
        200,
        "a broken policy must not replace the working one"
    );
    // A valid policy that allows nothing: in force within a couple of seconds, no restart.
    std::fs::write(
        &policy,
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec: {rules: []}\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pods() != 403 {
        assert!(
            Instant::now() < deadline,
            "the new policy never took effect"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_watch_open_at_shutdown_is_still_recorded() {
    let mut e = env("shutdown", &[]);
    let addr = e.proxy.trim_start_matches("http://").to_string();
    let mut watch = TcpStream::connect(&addr).unwrap();
    write!(watch, "GET /api/v1/namespaces/dev/secrets?watch=1&timeoutSeconds=60 HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n").unwrap();
    watch
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut first = [0u8; 64];
    let n = watch.read(&mut first).unwrap();
    assert!(
        String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"),
        "the watch is open"
    );
    let pid = e._proxy.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = e._proxy.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "the proxy exits 0 on SIGTERM");
    let record = e.home.join("session.jsonl");
    let log = std::fs::read_to_string(&record).unwrap();
    assert!(
        log.contains("secrets?watch=1&timeoutSeconds=60"),
        "the open watch has a record:\n{log}"
    );
    let verify = Command::new(BIN)
        .args(["replay", "--verify", record.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}
