//! The proxy end to end: real kubectl, through `kubeleash proxy`, to `kubeleash sandbox`. The
//! proxy serves HTTPS (a CA made at start, in the agent's kubeconfig) unless `--plain-http`;
//! hand-made requests go through `support/wire.rs`.

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

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use process::{Guard, serve};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wire::{Conn, addr_of, connect};

const BIN: &str = env!("CARGO_BIN_EXE_kubeleash");
/// A bound on waits that normally take milliseconds (a connection cut, a reload taken): a
/// failure bound under load, never a measurement.
const PATIENCE: Duration = Duration::from_secs(60);

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

/// kubectl is required: a machine without one fails these tests rather than skipping them.
fn kubectl_present() -> bool {
    let ok = Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "no kubectl on PATH: the end-to-end tests drive the proxy with it (install a 1.27-1.35 kubectl, e.g. Debian's kubernetes-client)"
    );
    ok
}

struct Env {
    _sandbox: Guard,
    _proxy: Guard,
    sandbox: String,
    proxy: String,
    home: PathBuf,
    /// The proxy's bearer token (identity from flags), read from the kubeconfig it wrote.
    token: Option<String>,
}

/// The proxy's token in a kubeconfig it wrote: the user's token (HTTPS) or the last segment
/// of the server URL (plain HTTP).
fn token_of(kubeconfig: &str) -> Option<String> {
    wire::token_of_kubeconfig(kubeconfig)
}

/// A proxy's URL from its first line, with the CA in `kubeconfig` (the agent's, as the proxy
/// wrote it) trusted for it; the URL is https.
fn trust_from(url: &str, kubeconfig: &std::path::Path) {
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let ca = wire::ca_of_kubeconfig(&text)
        .unwrap_or_else(|| panic!("the agent's kubeconfig has no CA:\n{text}"));
    wire::trust(url, &ca);
}

/// Sandbox, then the proxy in front of it with the demo policy, and the agent's kubeconfig.
fn env(name: &str, extra: &[&str]) -> Env {
    env_with(name, extra, None)
}

/// [`env`] with `policy` (text) instead of the demo policy.
fn env_with(name: &str, extra: &[&str], policy_text: Option<&str>) -> Env {
    let home = dir(name);
    let (sandbox_guard, sandbox) = serve(&["sandbox", "--listen", "127.0.0.1:0"], None);
    std::fs::write(home.join("operator.kubeconfig"), kubeconfig(&sandbox, "{}")).unwrap();
    // A copy, so a test can rewrite it while the proxy runs.
    let policy = home.join("policy.yaml");
    match policy_text {
        Some(text) => std::fs::write(&policy, text).unwrap(),
        None => {
            std::fs::copy(
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/agent-policy.yaml"),
                &policy,
            )
            .unwrap();
        }
    }
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
    let agent_config = home.join("agent.kubeconfig");
    let ca_file = home.join("proxy-ca.pem");
    let fixed = !extra.contains(&"--oidc-issuer");
    if fixed {
        args.extend([
            "--user",
            "agent-1",
            "--group",
            "ai-agents",
            "--agent-kubeconfig",
            agent_config.to_str().unwrap(),
            "--agent-namespace",
            "dev",
        ]);
    }
    if !fixed {
        // With OIDC the agent brings its own token; it gets the proxy's CA from this file.
        args.extend(["--agent-ca-file", ca_file.to_str().unwrap()]);
    }
    args.extend(extra);
    let (proxy_guard, proxy) = serve(&args, Some(&home.join("proxy.stderr")));
    if !fixed {
        let agent = Command::new(BIN)
            .args([
                "kubeconfig",
                "--server",
                &proxy,
                "--namespace",
                "dev",
                "--certificate-authority",
                ca_file.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(agent.status.success(), "{agent:?}");
        std::fs::write(&agent_config, &agent.stdout).unwrap();
    }
    if extra.contains(&"--plain-http") {
        assert!(proxy.starts_with("http://127.0.0.1:"), "{proxy}");
    } else {
        trust_from(&proxy, &agent_config);
    }
    let token = token_of(&std::fs::read_to_string(&agent_config).unwrap());
    assert_eq!(token.is_some(), fixed);
    Env {
        _sandbox: sandbox_guard,
        _proxy: proxy_guard,
        sandbox,
        proxy,
        home,
        token,
    }
}

impl Env {
    /// The proxy's stderr so far.
    fn stderr(&self) -> String {
        std::fs::read_to_string(self.home.join("proxy.stderr")).unwrap_or_default()
    }

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

/// A child's stdout, line by line as it comes, and everything read so far.
struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    seen: String,
}

impl Lines {
    fn of(child: &mut Guard) -> Lines {
        let out = child.0.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: String::new(),
        }
    }

    /// Read on until what was read satisfies `want`: all of it; `None` if the output ends or
    /// `within` (a failure bound) passes first.
    fn until(&mut self, within: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + within;
        while !want(&self.seen) {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.rx.recv_timeout(left).ok()?;
            self.seen.push_str(&line);
            self.seen.push('\n');
        }
        Some(self.seen.clone())
    }
}

/// Read lines from a child's stdout until they satisfy `want` (or time runs out).
fn read_until(child: &mut Guard, within: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
    Lines::of(child).until(within, want)
}

#[test]
fn kubectl_through_the_proxy() {
    if !kubectl_present() {
        return;
    }
    let e = env("kubectl", &[]);
    let agent_config = std::fs::read_to_string(e.home.join("agent.kubeconfig")).unwrap();
    // The only credential in it is the proxy's own token.
    let token = e.token.clone().unwrap();
    assert!(
        token.starts_with("kubeleash-") && token.len() == 74,
        "{token}"
    );
    let without = agent_config.replace(&token, "");
    for word in [
        "kubeleash-",
        "client-key",
        "password",
        "client-certificate",
        "exec",
        "auth-provider",
        "tokenFile",
    ] {
        assert!(
            !without.contains(word),
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
    let mut events = Lines::of(&mut watch);
    // kubectl lists first, then watches from the list's resourceVersion: once the listed
    // secret is shown, a change made now can only reach it as a watch event.
    events
        .until(Duration::from_secs(60), |s| s.contains("db-credentials"))
        .expect("the watch listed the secrets there");
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
    let listed = events.seen.len();
    let seen = events
        .until(Duration::from_secs(60), |s| {
            s[listed..].contains("created-during-watch") && s[listed..].matches('}').count() > 8
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
    let addr = addr_of(base);
    let mut s = connect(base);
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

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/proxy/testdata");

fn testdata(name: &str) -> String {
    std::fs::read_to_string(format!("{TESTDATA}/{name}")).unwrap()
}

/// A token signed by the key in `pem` with `alg`, under `header` (kid "test" unless it says).
fn jwt_with(
    header: serde_json::Value,
    key: &jsonwebtoken::EncodingKey,
    claims: serde_json::Value,
) -> String {
    let alg: jsonwebtoken::Algorithm = header["alg"].as_str().unwrap().parse().unwrap();
    let msg = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), key, alg).unwrap();
    format!("{msg}.{sig}")
}

fn rsa_key(name: &str) -> jsonwebtoken::EncodingKey {
    jsonwebtoken::EncodingKey::from_rsa_pem(testdata(name).as_bytes()).unwrap()
}

fn jwt(pem: &str, claims: serde_json::Value) -> String {
    jwt_with(
        serde_json::json!({"alg": "RS256", "kid": "test", "typ": "JWT"}),
        &rsa_key(pem),
        claims,
    )
}

#[test]
fn oidc_tokens_good_and_bad() {
    let home = dir("oidc-keys");
    let public: serde_json::Value = serde_json::from_str(&testdata("public.json")).unwrap();
    let jwks = serde_json::json!({"keys": [{"kty": "RSA", "kid": "test", "alg": "RS256", "use": "sig", "n": public["rsa_a"]["n"], "e": public["rsa_a"]["e"]}]});
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
    let claims = serde_json::json!({"iss": "https://issuer.example", "aud": "kubeleash", "sub": "agent-7", "groups": ["ai-agents"], "exp": now + 600});
    let good = jwt("rsa_a.pem", claims.clone());
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
                "rsa_a.pem",
                serde_json::json!({"iss": "https://issuer.example", "aud": "kubeleash", "sub": "a", "exp": now - 600}),
            ),
        ),
        (
            "wrong audience",
            jwt(
                "rsa_a.pem",
                serde_json::json!({"iss": "https://issuer.example", "aud": "other", "sub": "a", "exp": now + 600}),
            ),
        ),
        (
            "wrong issuer",
            jwt(
                "rsa_a.pem",
                serde_json::json!({"iss": "https://evil.example", "aud": "kubeleash", "sub": "a", "exp": now + 600}),
            ),
        ),
        ("wrong key", jwt("rsa_b.pem", claims.clone())),
        ("not a jwt", "garbage".to_string()),
        (
            "future nbf",
            jwt(
                "rsa_a.pem",
                serde_json::json!({"iss": "https://issuer.example", "aud": "kubeleash", "sub": "a", "exp": now + 7200, "nbf": now + 3600}),
            ),
        ),
        (
            "future iat",
            jwt(
                "rsa_a.pem",
                serde_json::json!({"iss": "https://issuer.example", "aud": "kubeleash", "sub": "a", "exp": now + 7200, "iat": now + 3600}),
            ),
        ),
        (
            "no exp",
            jwt(
                "rsa_a.pem",
                serde_json::json!({"iss": "https://issuer.example", "aud": "kubeleash", "sub": "a"}),
            ),
        ),
        (
            "unknown crit header",
            jwt_with(
                serde_json::json!({"alg": "RS256", "kid": "test", "crit": ["x-must-understand"], "x-must-understand": 1}),
                &rsa_key("rsa_a.pem"),
                claims.clone(),
            ),
        ),
        (
            "PS256 with a key that says RS256",
            jwt_with(
                serde_json::json!({"alg": "PS256", "kid": "test"}),
                &rsa_key("rsa_a.pem"),
                claims.clone(),
            ),
        ),
        (
            "HS256 with the public key as the secret",
            jwt_with(
                serde_json::json!({"alg": "HS256", "kid": "test"}),
                &jsonwebtoken::EncodingKey::from_secret(testdata("rsa_a.pub.pem").as_bytes()),
                claims.clone(),
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64url(br#"{"alg":"none","kid":"test"}"#),
                b64url(claims.to_string().as_bytes())
            ),
        ),
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

    // kubectl reading the token from a file (`tokenFile`): client-go sends it because the
    // proxy is https, with the CA `kubeleash kubeconfig --certificate-authority` put in.
    if kubectl_present() {
        let token_file = e.home.join("agent.jwt");
        std::fs::write(&token_file, &good).unwrap();
        let out = Command::new(BIN)
            .args([
                "kubeconfig",
                "--server",
                &e.proxy,
                "--namespace",
                "dev",
                "--certificate-authority",
                e.home.join("proxy-ca.pem").to_str().unwrap(),
                "--token-file",
                token_file.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        std::fs::write(e.home.join("agent.kubeconfig"), &out.stdout).unwrap();
        let (ok, out) = e.kubectl(&["get", "pods"]);
        assert!(ok && out.contains("web-"), "{out}");
        let (ok, out) = e.kubectl(&["get", "--raw", "/api/v1/namespaces/dev/pods"]);
        assert!(ok && out.contains("\"kind\":\"PodList\""), "{out}");
        let (ok, out) = e.kubectl(&["get", "pods", "-n", "prod"]);
        assert!(!ok && out.contains("Forbidden"), "{out}");
        // An expired token in the file: 401, whatever the transport.
        std::fs::write(&token_file, cases_expired(now)).unwrap();
        let (ok, out) = e.kubectl(&["get", "pods"]);
        assert!(
            !ok && out.contains("You must be logged in") && out.contains("expired"),
            "{out}"
        );
    }
}

fn cases_expired(now: u64) -> String {
    jwt(
        "rsa_a.pem",
        serde_json::json!({"iss": "https://issuer.example", "aud": "kubeleash", "sub": "a", "groups": ["ai-agents"], "exp": now - 600}),
    )
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
    let pods = || {
        http(
            &e.proxy,
            "GET",
            "/api/v1/namespaces/dev/pods",
            None,
            e.token.as_deref(),
        )
        .0
    };
    assert_eq!(pods(), 200);
    // The proxy sees a change by the file's mtime: each rewrite is given one it has not seen
    // (whatever the file system's mtime granularity), instead of waiting for the clock to move.
    // It is rewritten until the proxy says `what` (event, not time): a change made before the
    // proxy started watching the file would otherwise go unseen.
    let mut mtime = 0;
    let mut rewrite_until_said = |text: &str, what: &str| {
        let before = e.stderr().matches(what).count();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            std::fs::write(&policy, text).unwrap();
            mtime += 10;
            std::fs::File::options()
                .write(true)
                .open(&policy)
                .unwrap()
                .set_modified(SystemTime::now() + Duration::from_secs(mtime))
                .unwrap();
            let again = Instant::now() + Duration::from_secs(3);
            while Instant::now() < again {
                if e.stderr().matches(what).count() > before {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(
                Instant::now() < deadline,
                "the proxy never said `{what}`:\n{}",
                e.stderr()
            );
        }
    };
    // A policy that does not compile: the old one stays in force.
    rewrite_until_said(
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec: {rules: [{name: x, effect: maybe}]}\n",
        "the previous policy stays in force",
    );
    assert_eq!(
        pods(),
        200,
        "a broken policy must not replace the working one"
    );
    // A valid policy that allows nothing: in force once read, no restart.
    rewrite_until_said(
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec: {rules: []}\n",
        "kubeleash proxy: policy reloaded",
    );
    assert_eq!(pods(), 403, "the new policy took effect:\n{}", e.stderr());
}

#[test]
fn a_watch_open_at_shutdown_is_still_recorded() {
    let mut e = env("shutdown", &[]);
    let addr = addr_of(&e.proxy).to_string();
    let mut watch = connect(&e.proxy);
    let token = e.token.clone().unwrap();
    write!(watch, "GET /api/v1/namespaces/dev/secrets?watch=1&timeoutSeconds=60 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: application/json\r\n\r\n").unwrap();
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

/// Send `head` (request line and headers, without the final blank line) as is; status and
/// whole response.
fn raw(base: &str, head: &str) -> (u16, String) {
    let mut s = connect(base);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "{head}Connection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

#[test]
fn only_the_agent_gets_in_by_the_proxys_own_address() {
    let e = env("door", &[]);
    let token = e.token.clone().unwrap();
    let addr = addr_of(&e.proxy).to_string();
    let port = addr.rsplit(':').next().unwrap().to_string();
    let path = "/api/v1/namespaces/dev/pods";
    let get = |host: &str, extra: &str| {
        raw(
            &e.proxy,
            &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n{extra}"),
        )
    };
    let auth = format!("Authorization: Bearer {token}\r\n");
    let (status, body) = get(&addr, &auth);
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(&format!("localhost:{port}"), &auth);
    assert_eq!(status, 200, "{body}");
    // The token as the first path segment (how kubectl sends it, from the server URL).
    let (status, body) = raw(
        &e.proxy,
        &format!("GET /{token}{path}?limit=5 HTTP/1.1\r\nHost: {addr}\r\n"),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"kind\":\"PodList\""), "{body}");

    // No token, a wrong one, another scheme: 401, and the token is never in the answer.
    let mut wrong = token.clone().into_bytes();
    let last = wrong.len() - 1;
    wrong[last] = if wrong[last] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap();
    for (prefix, extra) in [
        (format!("/{wrong}"), String::new()),
        (format!("/{}", &token[..token.len() - 1]), String::new()),
        (format!("/x{token}"), String::new()),
        (format!("/api/{token}"), String::new()),
    ] {
        let (status, body) = raw(
            &e.proxy,
            &format!("GET {prefix}{path} HTTP/1.1\r\nHost: {addr}\r\n{extra}"),
        );
        assert_eq!(status, 401, "{prefix}: {body}");
    }
    for extra in [
        String::new(),
        format!("Authorization: Bearer {wrong}\r\n"),
        format!("Authorization: Basic {token}\r\n"),
        format!("Authorization: {token}\r\n"),
        "Authorization: Bearer \r\n".to_string(),
    ] {
        let (status, body) = get(&addr, &extra);
        assert_eq!(status, 401, "{extra}: {body}");
        assert!(
            body.contains("\"kind\":\"Status\"") && body.contains("Unauthorized"),
            "{body}"
        );
        assert!(!body.contains(&token[10..]), "{body}");
    }

    // A DNS-rebinding name, another port, no port: 403, whatever the token.
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_string(),
        format!("127.0.0.1:{}", port.parse::<u32>().unwrap() + 1),
        "127.0.0.1".to_string(),
        format!("127.0.0.1.nip.io:{port}"),
    ] {
        let (status, body) = get(&host, &auth);
        assert_eq!(status, 403, "{host}: {body}");
        assert!(body.contains("not this proxy's address"), "{body}");
    }
    // Browsers: any Origin, or Sec-Fetch-*, is a 403, even with the token and the right Host.
    for h in [
        "Origin: https://evil.example\r\n",
        format!("Origin: http://{addr}\r\n").leak(),
        "Origin: null\r\n",
        "Sec-Fetch-Site: cross-site\r\n",
        "Sec-Fetch-Dest: iframe\r\n",
    ] {
        let (status, body) = get(&addr, &format!("{auth}{h}"));
        assert_eq!(status, 403, "{h}: {body}");
        assert!(body.contains("browser"), "{body}");
    }
    // A refusal at the door closes the connection, even one the client would keep alive: a
    // caller without the token cannot hold connection slots with refused requests.
    {
        let mut s = connect(&e.proxy);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nOrigin: https://evil.example\r\nConnection: keep-alive\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let closed = s.read_to_string(&mut out);
        assert!(closed.is_ok(), "the connection stayed open after: {out}");
        assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    }
    // No Host (HTTP/1.0), or two of them: refused.
    let (status, body) = raw(&e.proxy, &format!("GET {path} HTTP/1.0\r\n{auth}"));
    assert_eq!(status, 400, "{body}");
    let (status, body) = raw(
        &e.proxy,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nHost: evil.example:{port}\r\n{auth}"),
    );
    assert!(status == 400, "{body}");
    // An absolute target: refused before anything else.
    let (status, body) = raw(
        &e.proxy,
        &format!("GET http://evil.example{path} HTTP/1.1\r\nHost: {addr}\r\n{auth}"),
    );
    assert_eq!(status, 400, "{body}");
    // A write with the right Host but no token never reaches the cluster.
    let (status, _) = raw(
        &e.proxy,
        &format!(
            "DELETE /api/v1/namespaces/dev/configmaps/app-config HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n"
        ),
    );
    assert_eq!(status, 401);

    // The file is the owner's only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(e.home.join("agent.kubeconfig"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    if kubectl_present() {
        // Real kubectl with the kubeconfig the proxy wrote works (above, and here by localhost,
        // a name the proxy's certificate holds too).
        let (ok, out) = e.kubectl(&["get", "pods"]);
        assert!(ok && out.contains("web-"), "{out}");
        let (ok, out) = e.kubectl(&[
            "get",
            "pods",
            "--server",
            &format!("https://localhost:{port}"),
        ]);
        assert!(ok && out.contains("web-"), "{out}");

        // Without the token, or with a wrong one, kubectl is told it is unauthorized.
        let (ok, out) = e.kubectl(&["get", "pods", "--token", &wrong]);
        assert!(
            !ok && out.contains("You must be logged in") && out.contains("needs its token"),
            "{out}"
        );
        // (A kubeconfig with no credential at all makes kubectl prompt for a user name over
        // HTTPS; the raw requests above cover a request without the token.)
    }

    // The record: what was let in, with clean paths; never the token, nothing refused at the
    // door (the DELETE without a token never reached the policy or the cluster).
    // Stopped as an operator stops it: the record is whole.
    let Env {
        mut _proxy, home, ..
    } = e;
    _proxy.stop();
    let log = std::fs::read_to_string(home.join("session.jsonl")).unwrap_or_default();
    assert!(
        log.contains("/api/v1/namespaces/dev/pods"),
        "the admitted requests are recorded:\n{log}"
    );
    assert!(!log.contains(&token[10..]), "the token reached the record");
    assert!(
        !log.contains("app-config"),
        "a refused request reached the record"
    );
    assert!(
        !log.contains("evil.example"),
        "a refused request reached the record"
    );
}

#[test]
fn the_token_file_and_kubeleash_kubeconfig_work_together() {
    let home = dir("token-file");
    let (_sandbox, sandbox) = serve(&["sandbox", "--listen", "127.0.0.1:0"], None);
    let op = home.join("operator.kubeconfig");
    std::fs::write(&op, kubeconfig(&sandbox, "{}")).unwrap();
    let policy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/agent-policy.yaml");
    let base = [
        "proxy",
        "--policy",
        policy.to_str().unwrap(),
        "--kubeconfig",
        op.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--user",
        "agent-1",
        "--group",
        "ai-agents",
    ];
    // Without anywhere to put the token, the proxy does not start.
    let out = Command::new(BIN).args(base).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--agent-kubeconfig"), "{err}");

    let token_file = home.join("agent.token");
    let ca_file = home.join("proxy-ca.pem");
    let mut args = base.to_vec();
    args.extend(["--agent-token-file", token_file.to_str().unwrap()]);
    // The token alone is not enough over HTTPS: the agent needs the proxy's CA too.
    let out = Command::new(BIN).args(&args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--agent-ca-file") && err.contains("--plain-http"),
        "{err}"
    );
    args.extend(["--agent-ca-file", ca_file.to_str().unwrap()]);
    let (_proxy, proxy) = serve(&args, None);
    let ca = std::fs::read_to_string(&ca_file).unwrap();
    assert!(
        ca.starts_with("-----BEGIN CERTIFICATE-----") && !ca.contains("PRIVATE"),
        "{ca}"
    );
    wire::trust(&proxy, &ca);
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(token.starts_with("kubeleash-"), "{token}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (status, body) = http(
        &proxy,
        "GET",
        "/api/v1/namespaces/dev/pods",
        None,
        Some(token.trim()),
    );
    assert_eq!(status, 200, "{body}");
    if kubectl_present() {
        let agent = Command::new(BIN)
            .args([
                "kubeconfig",
                "--server",
                &proxy,
                "--namespace",
                "dev",
                "--proxy-token-file",
                token_file.to_str().unwrap(),
                "--certificate-authority",
                ca_file.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let config = String::from_utf8(agent.stdout).unwrap();
        assert_eq!(token_of(&config).as_deref(), Some(token.trim()), "{config}");
        assert_eq!(
            wire::server_of_kubeconfig(&config),
            proxy,
            "no token in the URL"
        );
        assert_eq!(
            wire::ca_of_kubeconfig(&config).as_deref(),
            Some(ca.as_str())
        );
        std::fs::write(home.join("agent.kubeconfig"), &config).unwrap();
        for args in [
            &["get", "pods"][..],
            &["get", "--raw", "/api/v1/namespaces/dev/pods"],
        ] {
            let out = Command::new("kubectl")
                .args(args)
                .env("KUBECONFIG", home.join("agent.kubeconfig"))
                .env("HOME", &home)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("web-"),
                "{args:?}: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Strings planted in the operator's kubeconfig and credential plugin: none may reach the agent.
const PLANTED: &[&str] = &[
    "PLANTED-ENV-AKIA7QX2",
    "PLANTED-ARG-CLIENT-SECRET-9c1f",
    "PLANTED-STDERR-REFRESH-TOKEN-77aa",
    "PLANTED-STDOUT-ACCESS-TOKEN-5e3d",
    "fail-plugin.sh",
    "credential-plugin",
];

/// An operator kubeconfig whose user runs `plugin` (with secret args and env) against `server`,
/// with `ca` (base64 PEM) as the cluster's CA if given.
fn exec_kubeconfig(server: &str, plugin: &std::path::Path, ca: Option<&str>) -> String {
    let ca = ca
        .map(|c| format!("\n    certificate-authority-data: {c}"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}{ca}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: {}\n      args: [\"--client-secret=PLANTED-ARG-CLIENT-SECRET-9c1f\", \"credential-plugin\"]\n      env:\n      - {{name: AWS_SECRET_ACCESS_KEY, value: PLANTED-ENV-AKIA7QX2}}\n      interactiveMode: Never\n",
        plugin.display()
    )
}

/// A credential plugin that runs `body`, except the first time (when the proxy starts: kube-rs
/// runs the plugin while it builds the client), when it gives a token that has already expired,
/// so the next request runs it again.
fn plugin(home: &std::path::Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = home.join("fail-plugin.sh");
    let first = home.join("plugin-ran");
    let _ = std::fs::remove_file(&first);
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\nif [ ! -e {first} ]; then touch {first}; echo '{{\"apiVersion\":\"client.authentication.k8s.io/v1beta1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"first\",\"expirationTimestamp\":\"2000-01-01T00:00:00Z\"}}}}'; exit 0; fi\n{body}\n",
            first = first.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A proxy whose operator kubeconfig is `config`, its stderr captured in a file.
fn proxy_with(home: &std::path::Path, config: &str) -> (Guard, String, String, PathBuf) {
    let op = home.join("operator.kubeconfig");
    std::fs::write(&op, config).unwrap();
    let agent = home.join("agent.kubeconfig");
    let stderr = home.join("proxy.stderr");
    let policy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/agent-policy.yaml");
    let mut child = Command::new(BIN)
        .args([
            "proxy",
            "--policy",
            policy.to_str().unwrap(),
            "--kubeconfig",
            op.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--user",
            "agent-1",
            "--group",
            "ai-agents",
            "--agent-kubeconfig",
            agent.to_str().unwrap(),
            "--agent-namespace",
            "dev",
        ])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| {
            panic!(
                "the proxy did not start: {line}\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            )
        })
        .to_string();
    trust_from(&url, &agent);
    let token = token_of(&std::fs::read_to_string(&agent).unwrap()).unwrap();
    (Guard(child), url, token, stderr)
}

/// What the agent sees of each failure: raw answers and real kubectl's output. None of it may
/// hold anything of the operator's; each says to ask the operator, with an id the log has.
fn assert_nothing_leaks(what: &str, home: &std::path::Path, config: &str, also: &[&str]) {
    let (proxy, url, token, stderr) = proxy_with(home, config);
    let mut seen = String::new();
    let mut failed = 0;
    for (method, path, body) in [
        ("GET", "/api/v1/namespaces/dev/pods", None),
        ("GET", "/api/v1/namespaces/dev/secrets?watch=1", None),
        (
            "POST",
            "/api/v1/namespaces/dev/configmaps",
            Some(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#),
        ),
        ("GET", "/version", None),
        ("GET", "/apis", None),
    ] {
        let (status, text) = http(&url, method, path, body, Some(&token));
        assert!(
            status == 502 || status == 403,
            "{what}: {method} {path}: {status} {text}"
        );
        if status == 502 {
            failed += 1;
            assert!(
                text.contains("\"kind\":\"Status\"")
                    && text.contains("could not get an answer from the API server")
                    && text.contains("correlation id"),
                "{what}: {text}"
            );
            let id = text
                .split("correlation id ")
                .nth(1)
                .map(|t| t.chars().take(16).collect::<String>())
                .unwrap();
            let log = std::fs::read_to_string(&stderr).unwrap();
            assert!(log.contains(&id), "{what}: the log has the id {id}:\n{log}");
        }
        seen.push_str(&text);
    }
    assert!(
        failed >= 3,
        "{what}: the failures reached the agent as 502s: {seen}"
    );
    if kubectl_present() {
        for args in [
            &["get", "pods"][..],
            &["get", "secret", "db-credentials", "-o", "yaml"],
            &["version"],
            &["api-resources"],
            &["auth", "can-i", "get", "pods"],
        ] {
            let out = Command::new("kubectl")
                .args(args)
                .args(["--request-timeout", "20s", "-v", "9"])
                .env("KUBECONFIG", home.join("agent.kubeconfig"))
                .env("HOME", home)
                .output()
                .unwrap();
            seen.push_str(&String::from_utf8_lossy(&out.stdout));
            seen.push_str(&String::from_utf8_lossy(&out.stderr));
        }
        assert!(seen.contains("correlation id"), "{what}: {seen}");
    }
    for s in PLANTED.iter().chain(also) {
        assert!(
            !seen.contains(s),
            "{what}: `{s}` reached the agent:\n{seen}"
        );
    }
    drop(proxy);
}

#[test]
fn upstream_errors_tell_the_agent_nothing_of_the_operators() {
    let home = dir("upstream-errors");
    let (_sandbox, sandbox) = serve(&["sandbox", "--listen", "127.0.0.1:0"], None);
    let sandbox_port = sandbox.rsplit(':').next().unwrap().to_string();

    // An exec plugin that fails, printing secrets on both streams.
    let p = plugin(
        &home,
        "echo 'PLANTED-STDOUT-ACCESS-TOKEN-5e3d'\necho \"refresh_token=PLANTED-STDERR-REFRESH-TOKEN-77aa $AWS_SECRET_ACCESS_KEY $*\" >&2\nexit 3",
    );
    assert_nothing_leaks(
        "failing exec plugin",
        &home,
        &exec_kubeconfig(&sandbox, &p, None),
        &[],
    );
    let log = std::fs::read_to_string(home.join("proxy.stderr")).unwrap();
    assert!(
        log.contains("upstream error") && log.contains("correlation id"),
        "the operator's log has the details:\n{log}"
    );

    // An exec plugin that "succeeds" with output that is not an ExecCredential.
    let p = plugin(
        &home,
        "echo '{\"kind\":\"ExecCredential\",\"status\":{\"token\":PLANTED-STDOUT-ACCESS-TOKEN-5e3d}}'\necho PLANTED-STDERR-REFRESH-TOKEN-77aa >&2",
    );
    assert_nothing_leaks(
        "plugin with bad output",
        &home,
        &exec_kubeconfig(&sandbox, &p, None),
        &[],
    );

    // A working plugin, but a server that is not there.
    let p = plugin(
        &home,
        "echo '{\"apiVersion\":\"client.authentication.k8s.io/v1beta1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"PLANTED-STDOUT-ACCESS-TOKEN-5e3d\"}}'",
    );
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let unreachable = format!("127.0.0.1:{closed}");
    assert_nothing_leaks(
        "unreachable server",
        &home,
        &exec_kubeconfig(&format!("http://{unreachable}"), &p, None),
        &[&unreachable],
    );

    // TLS to a server whose certificate no CA vouches for (the sandbox speaks plain HTTP): the
    // handshake fails.
    let ca = b64(testdata("ca.pem").as_bytes());
    let tls = format!("https://127.0.0.1:{sandbox_port}");
    assert_nothing_leaks(
        "bad CA / TLS failure",
        &home,
        &exec_kubeconfig(&tls, &p, Some(&ca)),
        &[
            &tls,
            &format!("127.0.0.1:{sandbox_port}"),
            "InvalidContentType",
            "kubeleash-test-ca",
        ],
    );
}

fn b64(b: &[u8]) -> String {
    b64url(b).replace('-', "+").replace('_', "/")
        + match b.len() % 3 {
            1 => "==",
            2 => "=",
            _ => "",
        }
}

// ---- Tunnels and reloads, and what a client may cost the proxy ----

/// A proxy in front of `upstream` (plain HTTP, no credential) with `policy` (rewritable: its
/// path is kept), fixed identity agent-1/ai-agents unless `extra` names an OIDC issuer, `extra`
/// flags, stderr in a file.
struct Bounded {
    proxy: Guard,
    /// `https://127.0.0.1:PORT`.
    url: String,
    addr: String,
    token: String,
    policy: PathBuf,
    stderr: PathBuf,
    record: PathBuf,
}

fn bounded(name: &str, upstream: &str, policy: &str, extra: &[&str]) -> Bounded {
    let home = dir(name);
    let op = home.join("operator.kubeconfig");
    std::fs::write(&op, kubeconfig(upstream, "{}")).unwrap();
    let policy_path = home.join("policy.yaml");
    std::fs::write(&policy_path, policy).unwrap();
    let agent = home.join("agent.kubeconfig");
    let stderr = home.join("proxy.stderr");
    let record = home.join("session.jsonl");
    let mut args = vec![
        "proxy",
        "--policy",
        policy_path.to_str().unwrap(),
        "--kubeconfig",
        op.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--record",
        record.to_str().unwrap(),
    ];
    let oidc = extra.contains(&"--oidc-issuer");
    if !oidc {
        args.extend([
            "--user",
            "agent-1",
            "--group",
            "ai-agents",
            "--agent-namespace",
            "dev",
        ]);
    }
    // The kubeconfig holds the CA (and, with a fixed identity, the token).
    args.extend(["--agent-kubeconfig", agent.to_str().unwrap()]);
    args.extend(extra);
    let mut child = Command::new(BIN)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| {
            panic!(
                "the proxy did not start: {line}\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            )
        })
        .to_string();
    trust_from(&url, &agent);
    let token = if oidc {
        String::new()
    } else {
        token_of(&std::fs::read_to_string(&agent).unwrap()).unwrap()
    };
    Bounded {
        proxy: Guard(child),
        addr: addr_of(&url).to_string(),
        url,
        token,
        policy: policy_path,
        stderr,
        record,
    }
}

impl Bounded {
    fn signal(&self, sig: &str) {
        let pid = self.proxy.0.id().to_string();
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// A TLS connection to the proxy (the handshake happens at the first read or write).
    fn connect(&self) -> Conn {
        connect(&self.url)
    }

    /// A bare TCP connection, which never starts the TLS handshake.
    fn connect_tcp(&self) -> TcpStream {
        TcpStream::connect(&self.addr).unwrap()
    }
}

const EXEC_POLICY: &str = "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - {name: exec, effect: allow, subjects: {groups: [ai-agents]}, verbs: [create], resources: [pods/exec, pods/attach, pods/portforward], namespaces: [dev]}\n    - {name: discovery, effect: allow, verbs: [get], nonResourceURLs: [/api, /version]}\n";
const NO_RULES: &str = "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec: {rules: []}\n";

/// An API server stand-in that switches protocols for every request and then writes a tick
/// every 50 ms until the connection is gone; each connection's end is reported on the channel.
fn ticking_upstream() -> (String, std::sync::mpsc::Receiver<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut b) {
                        Ok(1) => head.push(b[0]),
                        _ => return,
                    }
                }
                if conn
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n")
                    .is_err()
                {
                    return;
                }
                while conn.write_all(b"tick\n").is_ok() {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = tx.send(());
            });
        }
    });
    (url, rx)
}

/// Open an exec stream through the proxy; the connection, after the 101 answer.
fn open_exec(p: &Bounded) -> Conn {
    open_stream(
        p,
        "POST",
        "exec?command=sh&stdin=true&stdout=true",
        "SPDY/3.1",
    )
}

/// Open a stream on a pod's subresource through the proxy; the connection, after the 101.
fn open_stream(p: &Bounded, method: &str, sub: &str, upgrade: &str) -> Conn {
    let mut s = p.connect();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} /{}/api/v1/namespaces/dev/pods/web-1/{sub} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n",
        p.token, p.addr
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "closed before the answer");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "exec is allowed and the upstream switches: {head}\n{}",
        p.stderr()
    );
    s
}

/// Read from `s` until `n` ticks came (true) or it closed (false).
fn ticks(s: &mut impl Read, n: usize) -> bool {
    let mut seen = 0;
    let mut buf = [0u8; 256];
    while seen < n {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(k) => seen += buf[..k].iter().filter(|b| **b == b'\n').count(),
        }
    }
    true
}

/// Whether `s` closes (EOF or reset) within `within`, reading and dropping what comes.
fn closes_within(s: &mut Conn, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn a_reload_that_denies_exec_cuts_the_open_tunnels() {
    let (upstream, ended) = ticking_upstream();
    let p = bounded("tunnel-reload", &upstream, EXEC_POLICY, &[]);
    let mut a = open_exec(&p);
    let mut b = open_exec(&p);
    assert!(
        ticks(&mut a, 3) && ticks(&mut b, 3),
        "the tunnels carry data"
    );
    // Attach and port-forward, over WebSocket and SPDY, with GET as kubectl sends them.
    let mut others = [
        open_stream(&p, "GET", "attach?stdout=true", "websocket"),
        open_stream(&p, "GET", "portforward?ports=80", "SPDY/3.1"),
        open_stream(&p, "POST", "exec?command=sh", "websocket"),
    ];
    for s in &mut others {
        assert!(ticks(s, 2));
    }
    // The same policy again: the tunnels stay.
    std::fs::write(&p.policy, EXEC_POLICY).unwrap();
    p.signal("-HUP");
    let deadline = Instant::now() + PATIENCE;
    while p.stderr().matches("policy reloaded").count() < 1 {
        assert!(Instant::now() < deadline, "no reload: {}", p.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        ticks(&mut a, 5) && ticks(&mut b, 5),
        "a reload that still allows exec keeps them"
    );
    // No rules: both tunnels end, on both sides.
    std::fs::write(&p.policy, NO_RULES).unwrap();
    p.signal("-HUP");
    assert!(
        closes_within(&mut a, PATIENCE) && closes_within(&mut b, PATIENCE),
        "the tunnels outlived a reload that denies exec:\n{}",
        p.stderr()
    );
    for s in &mut others {
        assert!(closes_within(s, PATIENCE), "{}", p.stderr());
    }
    for _ in 0..5 {
        ended
            .recv_timeout(PATIENCE)
            .expect("the upstream side of a cut tunnel closes too");
    }
    // A cut is logged once it is made, which a client may see before the line is written:
    // wait for the lines, then check there are no more than the cuts.
    let deadline = Instant::now() + PATIENCE;
    while p
        .stderr()
        .matches("no longer allows an open tunnel")
        .count()
        < 5
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = p.stderr();
    assert_eq!(
        log.matches("no longer allows an open tunnel").count(),
        5,
        "each cut is logged:\n{log}"
    );
    // And a new one is refused.
    let mut s = p.connect();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "POST /{}/api/v1/namespaces/dev/pods/web-1/exec?command=sh HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n\r\n", p.token, p.addr).unwrap();
    let mut out = [0u8; 12];
    s.read_exact(&mut out).unwrap();
    assert_eq!(&out, b"HTTP/1.1 403");
}

#[test]
fn sigterm_cuts_open_tunnels_after_the_grace_period() {
    let (upstream, ended) = ticking_upstream();
    let mut p = bounded(
        "tunnel-term",
        &upstream,
        EXEC_POLICY,
        &["--shutdown-grace", "2"],
    );
    let mut a = open_exec(&p);
    assert!(ticks(&mut a, 3));
    let asked = Instant::now();
    p.signal("-TERM");
    // The grace period: the stream goes on for a while.
    assert!(
        ticks(&mut a, 5),
        "a tunnel is cut only after the grace period"
    );
    assert!(
        closes_within(&mut a, PATIENCE),
        "a tunnel outlived the shutdown:\n{}",
        p.stderr()
    );
    // A lower bound: the proxy got the signal after `asked`, so a proxy that keeps the grace
    // period cannot be early here, however loaded the machine.
    assert!(
        asked.elapsed() >= Duration::from_millis(1500),
        "cut before the grace period ended ({:?})",
        asked.elapsed()
    );
    ended.recv_timeout(PATIENCE).unwrap();
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(s) = p.proxy.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the proxy did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{}", p.stderr());
    // The tunnel has its record (decision and kubectl line), in a chain that verifies.
    let log = std::fs::read_to_string(&p.record).unwrap();
    assert!(log.contains("pods/web-1/exec?command=sh"), "{log}");
    let verify = Command::new(BIN)
        .args(["replay", "--verify", p.record.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// A raw request head to the proxy (no final blank line), with its token and Host.
fn request_head(p: &Bounded, line: &str, token: bool) -> String {
    let path_prefix = if token {
        format!("/{}", p.token)
    } else {
        String::new()
    };
    let (method, rest) = line.split_once(' ').unwrap();
    format!(
        "{method} {path_prefix}{rest} HTTP/1.1\r\nHost: {}\r\n",
        p.addr
    )
}

#[test]
fn slow_and_idle_clients_are_cut_at_the_deadlines() {
    let p = bounded(
        "slowloris",
        "http://127.0.0.1:9",
        EXEC_POLICY,
        &["--header-timeout", "1", "--body-timeout", "1"],
    );
    // Headers a byte at a time, never finished: cut while they still come (each byte does not
    // restart the clock). A byte every 200 ms keeps a clock that restarts from ever running out;
    // the head (~120 bytes) lasts ~25 s, far past the 1 s deadline however loaded the machine,
    // and a cut ends the dribble at once.
    let mut slow = p.connect();
    let started = Instant::now();
    let head = request_head(&p, "GET /api", true);
    let mut closed = false;
    for b in head.bytes() {
        if slow.write_all(&[b]).is_err() || closes_within(&mut slow, Duration::from_millis(200)) {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a connection dribbling headers stayed open for {:?}",
        started.elapsed()
    );
    // A connection that sends nothing: cut too, whether it never starts the TLS handshake
    // or finishes it and then sends no request.
    let mut idle = Conn::Plain(p.connect_tcp());
    let started = Instant::now();
    assert!(
        closes_within(&mut idle, PATIENCE),
        "a connection that never starts its TLS handshake stays open"
    );
    // A lower bound, which load cannot break: not cut before the deadline.
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    let mut idle = p.connect();
    idle.handshake().unwrap();
    assert!(
        closes_within(&mut idle, PATIENCE),
        "an idle connection stays open"
    );
    // Headers in, the body never finished: 408.
    let mut s = p.connect();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{}Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"kind\":",
        request_head(&p, "POST /api/v1/namespaces/dev/configmaps", true)
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.contains("did not arrive within"), "{out}");
}

/// An agent with the token cannot make the proxy hold `--max-connections` × 3 MiB: bodies
/// being read share one budget (64 MiB), and bodies past it are answered 429 while the others
/// are still arriving.
#[test]
fn bodies_being_read_share_one_budget() {
    let p = bounded(
        "budget",
        "http://127.0.0.1:9",
        EXEC_POLICY,
        &["--body-timeout", "300"],
    );
    let chunk = vec![b' '; 3 * 1024 * 1024 - 16];
    let head = || {
        format!(
            "{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            request_head(&p, "POST /api/v1/namespaces/dev/configmaps", true),
            chunk.len() + 1
        )
    };
    // 64 MiB holds 21 bodies of nearly 3 MiB: of 24 sent whole but for their last byte, at least
    // 3 are refused. The proxy reads the connections concurrently, so which ones it refuses is
    // not asserted, only how: 429, before the body is complete.
    struct Sent {
        conn: Conn,
        answer: Vec<u8>,
        closed: bool,
    }
    let mut sent = Vec::new();
    for _ in 0..24 {
        let mut conn = p.connect();
        conn.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(conn, "{}", head()).unwrap();
        let mut answer = Vec::new();
        let mut closed = false;
        // A proxy that answers early and closes can make the write fail: its answer is read
        // all the same.
        if conn.write_all(&chunk).is_err() {
            let mut out = [0u8; 12];
            if conn.read_exact_received(&mut out).is_ok() {
                answer.extend_from_slice(&out);
            }
            closed = true;
        }
        sent.push(Sent {
            conn,
            answer,
            closed,
        });
    }
    // Wait for the refusals (event, not time): a proxy that buffers without bound never sends
    // them, and fails at the deadline.
    let refused = |sent: &[Sent]| {
        sent.iter()
            .filter(|s| s.closed || s.answer.len() >= 12)
            .count()
    };
    let deadline = Instant::now() + PATIENCE;
    while refused(&sent) < 3 {
        assert!(
            Instant::now() < deadline,
            "only {} of 24 bodies were refused: the proxy's buffering is unbounded",
            refused(&sent)
        );
        for s in sent.iter_mut().filter(|s| !s.closed && s.answer.len() < 12) {
            s.conn
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let mut buf = [0u8; 12];
            match s.conn.read(&mut buf[..12 - s.answer.len()]) {
                Ok(0) => s.closed = true,
                Ok(n) => s.answer.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => s.closed = true,
            }
        }
    }
    let (answered, held): (Vec<Sent>, Vec<Sent>) = sent
        .into_iter()
        .partition(|s| s.closed || s.answer.len() >= 12);
    for s in &answered {
        assert_eq!(
            String::from_utf8_lossy(&s.answer),
            "HTTP/1.1 429",
            "a body refused before it was complete"
        );
    }
    // The budget is about 64 MiB, not much less: refusals made at the same moment on the
    // proxy's threads may cost a body or two of the 21 that fit.
    assert!(
        held.len() >= 18,
        "only {} bodies were held: {}",
        held.len(),
        p.stderr()
    );
    // The budget comes back when a body is done: finish one (it is then decided and answered).
    let mut held = held.into_iter();
    let mut first = held.next().unwrap().conn;
    first.set_read_timeout(Some(PATIENCE)).unwrap();
    first.write_all(b"x").unwrap();
    let mut out = [0u8; 12];
    first.read_exact(&mut out).unwrap();
    assert_ne!(
        &out, b"HTTP/1.1 429",
        "a held body is answered once complete"
    );
    drop(first);
    drop(held);
    drop(answered);
    // The proxy gives the bytes back as it sees the connections close: send until a body fits.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut s = p.connect();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(
            s,
            "{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            request_head(&p, "POST /api/v1/namespaces/dev/configmaps", true),
            chunk.len()
        )
        .unwrap();
        let mut out = [0u8; 12];
        if s.write_all(&chunk).is_err() {
            s.read_exact_received(&mut out).unwrap();
        } else {
            s.read_exact(&mut out).unwrap();
        }
        if &out != b"HTTP/1.1 429" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the budget did not come back: {}",
            p.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_large_body_without_the_token_is_refused_unread() {
    let p = bounded("unread", "http://127.0.0.1:9", EXEC_POLICY, &[]);
    for (what, head) in [
        (
            "no token",
            request_head(&p, "POST /api/v1/namespaces/dev/configmaps", false),
        ),
        (
            "a wrong token",
            format!(
                "{}Authorization: Bearer kubeleash-{}\r\n",
                request_head(&p, "POST /api/v1/namespaces/dev/configmaps", false),
                "0".repeat(64)
            ),
        ),
        (
            "a foreign Host",
            format!(
                "POST /{}/api/v1/namespaces/dev/configmaps HTTP/1.1\r\nHost: evil.example\r\n",
                p.token
            ),
        ),
    ] {
        let mut s = p.connect();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // Announce 3 MiB, send 1 KiB: the answer comes before the rest is sent.
        write!(
            s,
            "{head}Content-Type: application/json\r\nContent-Length: 3145728\r\n\r\n{}",
            "x".repeat(1024)
        )
        .unwrap();
        let mut out = [0u8; 12];
        s.read_exact(&mut out).unwrap();
        let out = String::from_utf8_lossy(&out).to_string();
        assert!(
            out == "HTTP/1.1 401" || out == "HTTP/1.1 403",
            "{what}: {out}"
        );
        // And it does not wait for (or read) the rest: the connection closes.
        assert!(closes_within(&mut s, PATIENCE), "{what}");
    }
}

#[test]
fn a_large_body_without_a_valid_oidc_token_is_refused_unread() {
    let home = dir("unread-oidc-keys");
    let public: serde_json::Value = serde_json::from_str(&testdata("public.json")).unwrap();
    let jwks = serde_json::json!({"keys": [{"kty": "RSA", "kid": "test", "alg": "RS256", "use": "sig", "n": public["rsa_a"]["n"], "e": public["rsa_a"]["e"]}]});
    let jwks_path = home.join("jwks.json");
    std::fs::write(&jwks_path, jwks.to_string()).unwrap();
    let p = bounded(
        "unread-oidc",
        "http://127.0.0.1:9",
        EXEC_POLICY,
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
    let expired = jwt(
        "rsa_a.pem",
        serde_json::json!({"iss": "https://issuer.example", "aud": "kubeleash", "sub": "a", "exp": now - 600}),
    );
    let forged = {
        let good = jwt(
            "rsa_a.pem",
            serde_json::json!({"iss": "https://issuer.example", "aud": "kubeleash", "sub": "a", "exp": now + 600}),
        );
        let mut parts: Vec<&str> = good.split('.').collect();
        let claims = b64url(
            br#"{"iss":"https://issuer.example","aud":"kubeleash","sub":"admin","exp":9999999999}"#,
        );
        parts[1] = &claims;
        parts.join(".")
    };
    for (what, auth) in [
        ("no token", String::new()),
        ("not a jwt", "Authorization: Bearer abc\r\n".to_string()),
        ("expired", format!("Authorization: Bearer {expired}\r\n")),
        ("forged", format!("Authorization: Bearer {forged}\r\n")),
    ] {
        let mut s = p.connect();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "{}{auth}Content-Type: application/json\r\nContent-Length: 3145728\r\n\r\n{}",
            request_head(&p, "POST /api/v1/namespaces/dev/configmaps", false),
            "x".repeat(1024)
        )
        .unwrap();
        let mut out = [0u8; 12];
        s.read_exact(&mut out).unwrap();
        assert_eq!(&out, b"HTTP/1.1 401", "{what}");
        assert!(closes_within(&mut s, PATIENCE), "{what}");
    }
}

#[test]
fn connections_beyond_the_cap_are_turned_away_and_slots_come_back() {
    let p = bounded(
        "cap",
        "http://127.0.0.1:9",
        EXEC_POLICY,
        &["--max-connections", "2"],
    );
    // The kernel queues connections in the order they are made; the proxy accepts in that
    // order, so the third is the one turned away.
    let held: Vec<TcpStream> = (0..2).map(|_| p.connect_tcp()).collect();
    let mut third = p.connect();
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = String::new();
    let _ = third.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("--max-connections"), "{out}");
    drop(held);
    // The slots come back when connections close.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = raw(
            &p.url,
            &format!(
                "{}Authorization: Bearer {}\r\n",
                request_head(&p, "GET /version", false),
                p.token
            ),
        );
        // The upstream (port 9) refuses: a 502 from the layer means the request got in.
        if status != 503 || !body.contains("--max-connections") {
            assert_ne!(status, 0, "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "the slots never came back");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_tunnel_holds_its_connection_slot() {
    let (upstream, _ended) = ticking_upstream();
    let p = bounded(
        "cap-tunnel",
        &upstream,
        EXEC_POLICY,
        &["--max-connections", "2"],
    );
    // The HTTP connection under a tunnel is done once it switched; the slot stays taken.
    let mut tunnel = open_exec(&p);
    assert!(ticks(&mut tunnel, 2));
    let _idle = p.connect();
    let mut third = p.connect();
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = String::new();
    let _ = third.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
}

// ---- HTTPS at the front door, `kubectl get --raw`, and --plain-http ----

/// What agents reach with `kubectl get --raw`: reads in dev, namespaces, discovery and health.
const RAW_POLICY: &str = r#"apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  rules:
    - {name: read-dev, effect: allow, subjects: {groups: [ai-agents]}, verbs: [get, list, watch], apiGroups: [""], resources: [pods, pods/log, secrets, configmaps], namespaces: [dev]}
    - {name: namespaces, effect: allow, subjects: {groups: [ai-agents]}, verbs: [get, list], apiGroups: [""], resources: [namespaces]}
    - {name: exec, effect: allow, subjects: {groups: [ai-agents]}, verbs: [create, get], apiGroups: [""], resources: [pods/exec, pods/attach, pods/portforward], namespaces: [dev]}
    - {name: discovery, effect: allow, verbs: [get], nonResourceURLs: [/api, "/api/*", /apis, "/apis/*", /version, /healthz, /readyz, /livez, "/openapi/*", /metrics]}
"#;

/// Every Secret data value in dev, straight from the sandbox (base64 as stored, and decoded).
fn dev_secret_values(sandbox: &str) -> Vec<String> {
    let (status, body) = http(sandbox, "GET", "/api/v1/namespaces/dev/secrets", None, None);
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value =
        serde_json::from_str(body.split_once("\r\n\r\n").unwrap().1).unwrap();
    let mut out = Vec::new();
    for item in list["items"].as_array().unwrap() {
        for (_, v) in item["data"].as_object().into_iter().flatten() {
            let v = v.as_str().unwrap().to_string();
            use base64::Engine;
            let plain = base64::engine::general_purpose::STANDARD
                .decode(&v)
                .unwrap();
            let plain = String::from_utf8_lossy(&plain).into_owned();
            if plain.len() >= 6 {
                out.push(plain);
                out.push(v);
            }
        }
    }
    assert!(out.len() >= 4, "the seed has secrets in dev: {out:?}");
    out
}

#[test]
fn kubectl_get_raw_works_over_https() {
    if !kubectl_present() {
        return;
    }
    let e = env_with("raw", &[], Some(RAW_POLICY));
    // The kubeconfig: the https URL with nothing after it, the CA, the token as the user's.
    let config = std::fs::read_to_string(e.home.join("agent.kubeconfig")).unwrap();
    assert_eq!(wire::server_of_kubeconfig(&config), e.proxy, "{config}");
    let token = e.token.clone().unwrap();
    assert!(config.contains(&format!("token: \"{token}\"")), "{config}");
    assert!(wire::ca_of_kubeconfig(&config).is_some(), "{config}");

    for (path, want) in [
        ("/api/v1/namespaces", "\"kind\":\"NamespaceList\""),
        ("/api/v1/namespaces/dev/pods", "\"kind\":\"PodList\""),
        ("/api/v1/namespaces/dev/pods?limit=1", "\"continue\""),
        ("/healthz", "ok"),
        ("/readyz", "ok"),
        ("/version", "\"gitVersion\""),
        ("/api", "\"kind\":\"APIVersions\""),
        ("/apis", "\"kind\":\"APIGroupList\""),
        ("/openapi/v3", "\"paths\""),
    ] {
        let (ok, out) = e.kubectl(&["get", "--raw", path]);
        assert!(ok && out.contains(want), "get --raw {path}: {out}");
    }
    // OpenAPI v2: the sandbox's own answer (the document, or a 404 from a sandbox that does not
    // serve it), never the proxy's 401.
    let (ok, out) = e.kubectl(&["get", "--raw", "/openapi/v2"]);
    assert!(
        (ok && out.contains("\"swagger\":\"2.0\"")) || (!ok && out.contains("NotFound")),
        "{}",
        out.chars().take(500).collect::<String>()
    );
    // Secrets through --raw are masked like any other read.
    let (ok, out) = e.kubectl(&["get", "--raw", "/api/v1/namespaces/dev/secrets"]);
    assert!(ok && out.contains("\"kind\":\"SecretList\""), "{out}");
    assert!(out.contains("W21hc2tlZF0="), "{out}");
    for v in dev_secret_values(&e.sandbox) {
        assert!(!out.contains(&v), "`{v}` came through --raw:\n{out}");
    }
    // And the policy still decides: a 403 with its reason, not a 401.
    let (ok, out) = e.kubectl(&["get", "--raw", "/api/v1/namespaces/prod/secrets"]);
    assert!(!ok && out.contains("Forbidden"), "{out}");

    // An upgrade (exec) goes through the TLS front door to the API server: the sandbox runs no
    // containers and says so.
    let (_, pods) = e.kubectl(&["get", "pods", "-o", "jsonpath={.items[*].metadata.name}"]);
    let pod = pods.split_whitespace().next().unwrap().to_string();
    let (ok, out) = e.kubectl(&["exec", &pod, "--", "true"]);
    assert!(
        !ok && out.contains("exec is not supported by the kubeleash sandbox"),
        "{out}"
    );

    // HTTP/1.1 keep-alive over TLS: several requests on one connection.
    let mut s = connect(&e.proxy);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let addr = addr_of(&e.proxy).to_string();
    for i in 0..3 {
        write!(
            s,
            "GET /api/v1/namespaces/dev/configmaps?limit={} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: application/json\r\n\r\n",
            i + 1
        )
        .unwrap();
        let mut r = BufReader::new(&mut s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "request {i}: {line}");
        let mut length = None;
        let mut chunked = false;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            let l = h.to_ascii_lowercase();
            if let Some(v) = l.strip_prefix("content-length:") {
                length = Some(v.trim().parse::<usize>().unwrap());
            }
            chunked |= l.starts_with("transfer-encoding:") && l.contains("chunked");
            assert!(!l.starts_with("connection: close"), "request {i}: {h}");
            if h == "\r\n" {
                break;
            }
        }
        if let Some(n) = length {
            let mut body = vec![0u8; n];
            r.read_exact(&mut body).unwrap();
            assert!(String::from_utf8_lossy(&body).contains("ConfigMapList"));
        } else {
            assert!(chunked, "request {i}: neither length nor chunked");
            let mut body = String::new();
            loop {
                let mut size = String::new();
                r.read_line(&mut size).unwrap();
                let n = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0u8; n + 2];
                r.read_exact(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                body.push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
            assert!(body.contains("ConfigMapList"), "{body}");
        }
    }

    // The record: the raw reads with their paths as sent, never the token.
    // Stopped as an operator stops it: the record is whole.
    let Env {
        mut _proxy, home, ..
    } = e;
    _proxy.stop();
    let log = std::fs::read_to_string(home.join("session.jsonl")).unwrap_or_default();
    for path in ["/api/v1/namespaces", "/healthz", "/openapi/v3"] {
        assert!(
            log.contains(&format!("\"{path}\"")),
            "{path} is recorded:\n{log}"
        );
    }
    assert!(!log.contains(&token[10..]), "the token reached the record");
}

/// A client that does not trust the proxy's CA (its own roots, another CA, another name) fails
/// the handshake: it never sends a request, so never the token. Plain HTTP to the HTTPS port is
/// told what to do.
#[test]
fn a_client_that_does_not_trust_the_proxys_ca_is_refused() {
    let e = env("untrusted", &[]);
    let addr = addr_of(&e.proxy).to_string();
    let ca =
        wire::ca_of_kubeconfig(&std::fs::read_to_string(e.home.join("agent.kubeconfig")).unwrap())
            .unwrap();
    let request = |mut s: Conn| {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /version HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .and_then(|()| s.flush())
        .map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        Ok::<String, String>(out)
    };
    // Trusting the proxy's CA: the handshake and the request go through (401: no token).
    let out = request(wire::connect_tls(&addr, "127.0.0.1", &ca)).unwrap();
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    // Another CA (the test one; a second proxy's would do the same).
    let err = request(wire::connect_tls(&addr, "127.0.0.1", &testdata("ca.pem"))).unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    // The right CA for a name the certificate does not hold.
    let err = request(wire::connect_tls(&addr, "evil.example", &ca)).unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");

    // Plain HTTP to the HTTPS port: a Status that says what to do, then the connection closes.
    let (status, body) = raw(
        &format!("http://{addr}"),
        &format!("GET /version HTTP/1.1\r\nHost: {addr}\r\n"),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("this proxy serves HTTPS") && body.contains("--plain-http"),
        "{body}"
    );

    if kubectl_present() {
        let token = e.token.clone().unwrap();
        // kubectl with its system roots, and with another CA: the certificate is not trusted.
        let other = e.home.join("other-ca.pem");
        std::fs::write(&other, testdata("ca.pem")).unwrap();
        for (what, cluster) in [
            ("system roots", e.proxy.clone()),
            (
                "another CA",
                format!(
                    "{}\n    certificate-authority: {}",
                    e.proxy,
                    other.display()
                ),
            ),
        ] {
            let config = e.home.join("untrusting.kubeconfig");
            std::fs::write(
                &config,
                kubeconfig(&cluster, &format!("{{token: {token}}}")),
            )
            .unwrap();
            let out = Command::new("kubectl")
                .args([
                    "get",
                    "--raw",
                    "/api/v1/namespaces/dev/configmaps?limit=7",
                    "--request-timeout",
                    "20s",
                ])
                .env("KUBECONFIG", &config)
                .env("HOME", &e.home)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && text.contains("certificate signed by unknown authority"),
                "{what}: {text}"
            );
        }
        // The proxy itself is fine, and with its CA kubectl gets in.
        let (ok, out) = e.kubectl(&["get", "pods"]);
        assert!(ok && out.contains("web-"), "{out}");
    }
    // None of the refused clients reached the policy or the record.
    // Stopped as an operator stops it: the record is whole.
    let Env {
        mut _proxy, home, ..
    } = e;
    _proxy.stop();
    let log = std::fs::read_to_string(home.join("session.jsonl")).unwrap_or_default();
    assert!(
        log.contains("/api/v1/namespaces/dev/pods") && !log.contains("limit=7"),
        "a request from an untrusting client was recorded:\n{log}"
    );
}

/// `--plain-http`, for clients that cannot do TLS: the URL is http, the kubeconfig carries the
/// token in the server URL's path (kubectl sends no credential over plain HTTP), and that form
/// still works; `kubectl get --raw` drops the path and with it the token (a 401 that says so).
#[test]
fn plain_http_still_works_with_the_token_in_the_path() {
    let e = env("plain", &["--plain-http"]);
    assert!(e.proxy.starts_with("http://127.0.0.1:"), "{}", e.proxy);
    let config = std::fs::read_to_string(e.home.join("agent.kubeconfig")).unwrap();
    let token = e.token.clone().unwrap();
    assert_eq!(
        wire::server_of_kubeconfig(&config),
        format!("{}/{token}", e.proxy),
        "{config}"
    );
    assert!(!config.contains("certificate-authority"), "{config}");
    assert!(!config.contains("token: "), "{config}");
    let path = "/api/v1/namespaces/dev/pods";
    let addr = addr_of(&e.proxy).to_string();
    let (status, body) = raw(
        &e.proxy,
        &format!("GET /{token}{path} HTTP/1.1\r\nHost: {addr}\r\n"),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(&e.proxy, "GET", path, None, Some(&token));
    assert_eq!(status, 200, "{body}");
    let (status, _) = http(&e.proxy, "GET", path, None, None);
    assert_eq!(status, 401);
    if kubectl_present() {
        let (ok, out) = e.kubectl(&["get", "pods"]);
        assert!(ok && out.contains("web-"), "{out}");
        let (ok, out) = e.kubectl(&["get", "secret", "db-credentials", "-o", "yaml"]);
        assert!(ok && out.contains("password: W21hc2tlZF0="), "{out}");
        let (ok, out) = e.kubectl(&["get", "--raw", path]);
        assert!(!ok && out.contains("this proxy needs its token"), "{out}");
    }
    // No CA to hand out with plain HTTP.
    let out = Command::new(BIN)
        .args([
            "proxy",
            "--policy",
            "x.yaml",
            "--plain-http",
            "--agent-ca-file",
            "ca.pem",
            "--user",
            "a",
            "--agent-token-file",
            "t",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let help = Command::new(BIN)
        .args(["proxy", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--plain-http") && help.contains("cannot do TLS"),
        "{help}"
    );
}
