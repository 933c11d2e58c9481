//! `kubeleash proxy` under load, as separate processes of the built binary: the sandbox, and the
//! proxy in front of it recording to a file, reached over HTTPS (its default: the CA it made at
//! start, its token as a bearer header). 64 clients on keep-alive connections send 9,984
//! requests (allowed gets and lists of config maps, pods and logs, masked secrets, requests denied
//! in `prod` and by default), and 8 watches each see a secret created through the proxy while
//! they run: 10,000 requests in all.
//!
//! Every response must match its request (status and content: the object, list or name the
//! request asked for, and secret data masked), none may be lost, and after SIGTERM the proxy
//! exits 0 having written one `request` record per request sent (same method, target and
//! status), a chain `kubeleash replay --verify` accepts, and no secret value from the sandbox.
//!
//! Crossed responses: most requests carry a marker unique to the request that the response
//! echoes (a name in the path that comes back in a 404 or 403 message). Gets and lists of
//! existing objects address one of 257 objects made for the test, chosen by the request's
//! number, and carry a unique label-selector clause (`load-r!=rN`) that keeps the result the
//! same; a response crossed with another request's shows up as the wrong object, wrong kind or
//! wrong status.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests"
)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

const CLIENTS: usize = 64;
const PER_CLIENT: usize = 156;
const WATCHES: usize = 8;
/// Each watch task sends a watch and a create.
const TOTAL: usize = CLIENTS * PER_CLIENT + 2 * WATCHES;
/// Config maps and secrets made for the test (a prime, so a client's requests walk all of them).
const POOL: usize = 257;
/// What a masked Secret data value reads ("[masked]").
const MASKED: &str = "W21hc2tlZF0=";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

const POLICY: &str = r#"apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: load}
spec:
  rules:
    - name: read-dev
      effect: allow
      subjects: {groups: [ai-agents]}
      verbs: [get, list, watch]
      apiGroups: [""]
      resources: [pods, pods/log, configmaps, secrets]
      namespaces: [dev]
    - name: create-secrets-in-dev
      effect: allow
      subjects: {groups: [ai-agents]}
      verbs: [create]
      apiGroups: [""]
      resources: [secrets]
      namespaces: [dev]
    - name: no-prod
      effect: deny
      reason: production is off limits to agents
      verbs: ["*"]
      apiGroups: ["*"]
      resources: ["*"]
      namespaces: [prod]
"#;

// ---------------------------------------------------------------------------------------------
// Processes

/// A directory of the test's own, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("kubeleash-proxy-load-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A child process of the test, killed when dropped (a panic included).
struct Proc {
    name: &'static str,
    child: Option<Child>,
    stderr: PathBuf,
}

impl Proc {
    /// Start `kubeleash ARGS` and wait for its `listening on URL` line.
    fn start(name: &'static str, args: &[&str], stderr: PathBuf) -> (Proc, String) {
        let err = std::fs::File::create(&stderr).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_kubeleash"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let proc = Proc {
            name,
            child: Some(child),
            stderr,
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // The first line to the test, the rest read and dropped so the child never blocks.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(_) => panic!(
                "{name} printed no first line within 30 s; stderr:\n{}",
                proc.stderr_text()
            ),
        };
        let Some(url) = line.strip_prefix("listening on ") else {
            panic!(
                "{name} printed `{line}` first; stderr:\n{}",
                proc.stderr_text()
            );
        };
        assert!(
            url.starts_with("http://127.0.0.1:") || url.starts_with("https://127.0.0.1:"),
            "{name} listens on {url}"
        );
        let url = url.to_string();
        (proc, url)
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, then wait (bounded) for the exit.
    fn terminate(&mut self, within: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {} failed", child.id());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not exit within {within:?} of SIGTERM; stderr:\n{}",
                    self.name,
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

type Http = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The proxy once it runs: its URL, its token, and TLS that trusts its CA alone.
struct Proxy {
    base: String,
    token: String,
    tls: rustls::ClientConfig,
}

static PROXY: OnceLock<Proxy> = OnceLock::new();

/// A TLS client configuration that trusts `ca_pem` alone.
fn tls_trusting(ca_pem: &str) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// One client: its own pool, so its requests go one after another over one keep-alive
/// connection (a TLS one to the proxy, plain HTTP to the sandbox).
fn http() -> Http {
    let tls = PROXY
        .get()
        .map(|p| p.tls.clone())
        .unwrap_or_else(|| tls_trusting(""));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(connector)
}

fn request(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("accept", "application/json");
    // To the proxy, the agent's token as a bearer, as kubectl sends it over HTTPS.
    if let Some(p) = PROXY.get().filter(|p| p.base == base) {
        b = b.header("authorization", format!("Bearer {}", p.token));
    }
    let body = match body {
        Some(v) => {
            b = b.header("content-type", "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    b.body(Full::new(body)).unwrap()
}

/// Send a request and read the whole response.
async fn send(
    c: &Http,
    base: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Bytes), String> {
    let exchange = async {
        let resp = c
            .request(request(base, method, path, body))
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{method} {path}: body: {e}"))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{method} {path}: no response within {REQUEST_TIMEOUT:?}"))?
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Requests and what their responses must be

#[derive(Debug, Clone)]
enum Expect {
    /// 200, the config map `load-cm-K` with its marker.
    ConfigMap(usize),
    /// 200, a list holding exactly `load-cm-K`.
    ConfigMapList(usize),
    /// 200, this Secret, every data value masked.
    Secret(String),
    /// 200, a list holding exactly `load-s-K`, masked.
    SecretList(usize),
    /// 200, the seed's `web` pods.
    PodList,
    /// 200, the pod's log (masked).
    Log,
    /// 404 naming this object.
    NotFound(String),
    /// 403 from kubeleash, its message holding all of these.
    Denied(Vec<String>),
}

impl Expect {
    fn status(&self) -> u16 {
        match self {
            Expect::NotFound(_) => 404,
            Expect::Denied(_) => 403,
            _ => 200,
        }
    }
}

#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    path: String,
    expect: Expect,
}

fn selector(clauses: &str, r: usize) -> String {
    // As client-go encodes it: `,` `!` `=` escaped.
    format!("{clauses},load-r!=r{r}")
        .replace('!', "%21")
        .replace('=', "%3D")
        .replace(',', "%2C")
}

/// The requests of load client `c`.
fn plan(c: usize, pods: &[String]) -> Vec<Req> {
    (0..PER_CLIENT)
        .map(|j| {
            let r = c * PER_CLIENT + j;
            let k = (r * 7 + c) % POOL;
            let dev = "/api/v1/namespaces/dev";
            let (method, path, expect) = match r % 10 {
                0 => (
                    "GET",
                    format!("{dev}/configmaps/load-cm-{k}"),
                    Expect::ConfigMap(k),
                ),
                1 => (
                    "GET",
                    format!(
                        "{dev}/configmaps?labelSelector={}",
                        selector(&format!("load-k=k{k}"), r)
                    ),
                    Expect::ConfigMapList(k),
                ),
                2 => (
                    "GET",
                    format!("{dev}/secrets/load-s-{k}"),
                    Expect::Secret(format!("load-s-{k}")),
                ),
                3 => (
                    "GET",
                    format!(
                        "{dev}/secrets?labelSelector={}",
                        selector(&format!("load-k=k{k}"), r)
                    ),
                    Expect::SecretList(k),
                ),
                4 => (
                    "GET",
                    format!("{dev}/pods/load-r{r}"),
                    Expect::NotFound(format!("load-r{r}")),
                ),
                5 => (
                    "GET",
                    format!("/api/v1/namespaces/prod/secrets/load-r{r}"),
                    Expect::Denied(vec![
                        format!("secrets/load-r{r} in namespace prod"),
                        "no-prod".into(),
                    ]),
                ),
                6 => (
                    "DELETE",
                    format!("{dev}/configmaps/load-r{r}"),
                    Expect::Denied(vec![
                        format!("delete on configmaps/load-r{r} in namespace dev"),
                        "no rule allows".into(),
                    ]),
                ),
                7 => (
                    "GET",
                    format!("{dev}/pods?labelSelector={}", selector("app=web", r)),
                    Expect::PodList,
                ),
                8 => {
                    let name = ["db-credentials", "deployer-token"][(r / 10) % 2];
                    (
                        "GET",
                        format!("{dev}/secrets/{name}"),
                        Expect::Secret(name.into()),
                    )
                }
                _ => {
                    let pod = &pods[(r / 10) % pods.len()];
                    ("GET", format!("{dev}/pods/{pod}/log"), Expect::Log)
                }
            };
            Req {
                method,
                path,
                expect,
            }
        })
        .collect()
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Every `data` value of a Secret is the mask.
fn check_masked(secret: &Value) -> Result<(), String> {
    let data = secret["data"]
        .as_object()
        .ok_or_else(|| format!("secret without data: {secret}"))?;
    if data.is_empty() {
        return Err(format!("secret with empty data: {secret}"));
    }
    for (key, v) in data {
        if v.as_str() != Some(MASKED) {
            return Err(format!("secret data `{key}` is {v}, not masked"));
        }
    }
    Ok(())
}

/// Secret values to look for in responses and in the record, indexed by their first 8 bytes
/// so that a scan costs about one table lookup per byte however many values there are.
struct Secrets {
    values: Vec<String>,
    /// Which 2-byte openings any value has (a quick no for most positions).
    openings: Vec<bool>,
    by_prefix: HashMap<[u8; 8], Vec<usize>>,
}

impl Secrets {
    fn new(mut values: Vec<String>) -> Secrets {
        values.sort();
        values.dedup();
        let mut openings = vec![false; 1 << 16];
        let mut by_prefix: HashMap<[u8; 8], Vec<usize>> = HashMap::new();
        for (i, v) in values.iter().enumerate() {
            let b = v.as_bytes();
            assert!(b.len() >= 8, "secret value `{v}` too short to look for");
            openings[usize::from(b[0]) << 8 | usize::from(b[1])] = true;
            by_prefix
                .entry(b[..8].try_into().unwrap())
                .or_default()
                .push(i);
        }
        Secrets {
            values,
            openings,
            by_prefix,
        }
    }

    /// The first secret value `body` holds, if any.
    fn leak(&self, body: &[u8]) -> Option<&str> {
        for i in 0..body.len().saturating_sub(7) {
            if !self.openings[usize::from(body[i]) << 8 | usize::from(body[i + 1])] {
                continue;
            }
            let Some(candidates) = self.by_prefix.get(&body[i..i + 8]) else {
                continue;
            };
            for &c in candidates {
                let v = self.values[c].as_bytes();
                if body[i..].starts_with(v) {
                    return Some(&self.values[c]);
                }
            }
        }
        None
    }
}

fn check(
    req: &Req,
    status: u16,
    body: &[u8],
    pods: &[String],
    secrets: &Secrets,
) -> Result<(), String> {
    let expected = req.expect.status();
    if status != expected {
        return Err(format!(
            "status {status}, expected {expected}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    if let Some(s) = secrets.leak(body) {
        return Err(format!("the response holds the secret value `{s}`"));
    }
    if matches!(req.expect, Expect::Log) {
        let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
        return if text.contains("starting web") {
            Ok(())
        } else {
            Err(format!("not the web pod's log: {text}"))
        };
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON ({e})"))?;
    let name = v["metadata"]["name"].as_str().unwrap_or("");
    let kind = v["kind"].as_str().unwrap_or("");
    let message = v["message"].as_str().unwrap_or("");
    let ok = match &req.expect {
        Expect::ConfigMap(k) => {
            kind == "ConfigMap"
                && name == format!("load-cm-{k}")
                && v["data"]["marker"] == json!(format!("cm-{k}"))
        }
        Expect::ConfigMapList(k) => {
            kind == "ConfigMapList" && names(&v) == [format!("load-cm-{k}")]
        }
        Expect::Secret(n) => {
            check_masked(&v)?;
            kind == "Secret" && name == n
        }
        Expect::SecretList(k) => {
            for item in v["items"].as_array().into_iter().flatten() {
                check_masked(item)?;
            }
            kind == "SecretList" && names(&v) == [format!("load-s-{k}")]
        }
        Expect::PodList => kind == "PodList" && names(&v) == pods,
        Expect::NotFound(n) => {
            kind == "Status"
                && v["details"]["name"] == json!(n)
                && message.contains(&format!("\"{n}\""))
        }
        Expect::Denied(needles) => {
            kind == "Status"
                && message.starts_with("kubeleash:")
                && needles.iter().all(|n| message.contains(n.as_str()))
        }
        Expect::Log => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "response does not match {:?}: {}",
            req.expect,
            String::from_utf8_lossy(&body[..body.len().min(400)])
        ))
    }
}

/// What one task saw: responses received, failures (all counted, the first few kept), and what
/// it sent as (method, target, expected status).
#[derive(Default)]
struct Outcome {
    responses: usize,
    failed: usize,
    failures: Vec<String>,
    sent: Vec<(String, String, u16)>,
}

impl Outcome {
    fn fail(&mut self, what: String) {
        self.failed += 1;
        if self.failures.len() < 5 {
            self.failures.push(what);
        }
    }
}

async fn load_client(
    base: Arc<str>,
    reqs: Vec<Req>,
    pods: Arc<Vec<String>>,
    secrets: Arc<Secrets>,
) -> Outcome {
    let c = http();
    let mut out = Outcome::default();
    for req in reqs {
        out.sent
            .push((req.method.into(), req.path.clone(), req.expect.status()));
        match send(&c, &base, req.method, &req.path, None).await {
            Ok((status, body)) => {
                out.responses += 1;
                if let Err(e) = check(&req, status, &body, &pods, &secrets) {
                    out.fail(format!("{} {}: {e}", req.method, req.path));
                }
            }
            Err(e) => out.fail(e),
        }
    }
    out
}

/// A watch on the test's labelled secrets; while it runs, create one such secret through the
/// proxy; the watch must deliver it masked, and end when its `timeoutSeconds` is up.
async fn watch_client(base: Arc<str>, w: usize, value: String, secrets: Arc<Secrets>) -> Outcome {
    let mut out = Outcome::default();
    tokio::time::sleep(Duration::from_millis(200 + 300 * w as u64)).await;
    // Long enough that the create below, sent through a proxy under full load, is made while the
    // watch is still open: a watch that ended first would never deliver it.
    let path =
        "/api/v1/namespaces/dev/secrets?watch=1&timeoutSeconds=20&labelSelector=load-watch%3Dyes";
    out.sent.push(("GET".into(), path.into(), 200));
    let c = http();
    let resp = match tokio::time::timeout(
        REQUEST_TIMEOUT,
        c.request(request(&base, "GET", path, None)),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            out.fail(format!("watch {w}: {e}"));
            return out;
        }
        Err(_) => {
            out.fail(format!("watch {w}: no response headers"));
            return out;
        }
    };
    if resp.status() != 200 {
        out.fail(format!("watch {w}: status {}", resp.status()));
    }
    // The watch is registered (its headers are here): create this task's secret.
    let name = format!("load-watch-{w}");
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "labels": {"load-watch": "yes"}},
        "type": "Opaque", "data": {"value": b64(value.as_bytes())}});
    let create = "/api/v1/namespaces/dev/secrets";
    out.sent.push(("POST".into(), create.into(), 201));
    match send(&http(), &base, "POST", create, Some(&secret)).await {
        Ok((status, body)) => {
            out.responses += 1;
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if status != 201 || v["metadata"]["name"] != json!(name) {
                out.fail(format!(
                    "create {name}: {status} {}",
                    String::from_utf8_lossy(&body)
                ));
            } else if let Err(e) = check_masked(&v) {
                out.fail(format!("create {name}: {e}"));
            }
            if let Some(s) = secrets.leak(&body) {
                out.fail(format!("create {name}: the response holds `{s}`"));
            }
        }
        Err(e) => out.fail(e),
    }
    let body = match tokio::time::timeout(Duration::from_secs(60), resp.into_body().collect()).await
    {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            out.fail(format!("watch {w}: stream error: {e}"));
            return out;
        }
        Err(_) => {
            out.fail(format!(
                "watch {w}: did not end within 60 s (timeoutSeconds=20)"
            ));
            return out;
        }
    };
    out.responses += 1;
    if let Some(s) = secrets.leak(&body) {
        out.fail(format!("watch {w}: the stream holds `{s}`"));
    }
    let mut seen = Vec::new();
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let event: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => {
                out.fail(format!("watch {w}: event is not JSON ({e})"));
                continue;
            }
        };
        let object = &event["object"];
        if object["kind"] != "Secret"
            || !matches!(event["type"].as_str(), Some("ADDED" | "MODIFIED"))
        {
            out.fail(format!("watch {w}: unexpected event {event}"));
            continue;
        }
        if let Err(e) = check_masked(object) {
            out.fail(format!("watch {w}: {e}"));
        }
        seen.push(
            object["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    if !seen.contains(&name) {
        out.fail(format!("watch {w}: never delivered {name}; saw {seen:?}"));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Setup on the sandbox directly

/// Every Secret data value in the cluster long enough not to turn up by chance, base64 and
/// decoded.
async fn seed_secret_values(sandbox: &str) -> Vec<String> {
    let (status, body) = send(&http(), sandbox, "GET", "/api/v1/secrets", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let list: Value = serde_json::from_slice(&body).unwrap();
    let mut out = Vec::new();
    for item in list["items"].as_array().unwrap() {
        for v in item["data"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, v)| v)
        {
            let Some(encoded) = v.as_str() else { continue };
            if encoded.len() >= 8 {
                out.push(encoded.to_string());
            }
            if let Some(plain) = unb64(encoded).and_then(|b| String::from_utf8(b).ok()) {
                // Certificates are public; the private parts and tokens are what must not leak.
                let plain = plain.trim();
                if plain.len() >= 8 && !plain.starts_with("-----BEGIN CERTIFICATE") {
                    out.push(plain.to_string());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    assert!(
        out.iter().any(|s| s.contains("S3cr3t-Db-P4ssw0rd!")),
        "the seed changed: no db password among {} values",
        out.len()
    );
    out
}

/// The test's config maps and secrets, made directly on the sandbox.
async fn make_pool(sandbox: Arc<str>, nonce: u128) -> Vec<String> {
    let mut tasks = Vec::new();
    for part in 0..16 {
        let sandbox = Arc::clone(&sandbox);
        tasks.push(tokio::spawn(async move {
            let c = http();
            let mut values = Vec::new();
            for k in (part..POOL).step_by(16) {
                let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("load-cm-{k}"), "labels": {"load-k": format!("k{k}")}},
                    "data": {"marker": format!("cm-{k}")}});
                let (s, b) = send(&c, &sandbox, "POST", "/api/v1/namespaces/dev/configmaps", Some(&cm))
                    .await
                    .unwrap();
                assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
                let value = format!("load-secret-value-{k}-{nonce}");
                let password = format!("pw-{nonce}-{k}-Xy7!");
                let secret = json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": format!("load-s-{k}"), "labels": {"load-k": format!("k{k}")}},
                    "type": "Opaque",
                    "data": {"value": b64(value.as_bytes()), "password": b64(password.as_bytes())}});
                let (s, b) = send(&c, &sandbox, "POST", "/api/v1/namespaces/dev/secrets", Some(&secret))
                    .await
                    .unwrap();
                assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
                values.extend([b64(value.as_bytes()), value, b64(password.as_bytes()), password]);
            }
            values
        }));
    }
    let mut values = Vec::new();
    for t in tasks {
        values.extend(t.await.unwrap());
    }
    values
}

/// What the seed's pod logs leak: bearer tokens, and the lines of private keys.
async fn logged_credentials(sandbox: &str, pods: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for pod in pods {
        let path = format!("/api/v1/namespaces/dev/pods/{pod}/log");
        let (status, body) = send(&http(), sandbox, "GET", &path, None).await.unwrap();
        assert_eq!(status, 200);
        let text = String::from_utf8(body.to_vec()).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("Bearer ") {
            rest = &rest[at + "Bearer ".len()..];
            let end = rest.find(['"', ' ', '\n']).unwrap_or(rest.len());
            out.push(rest[..end].to_string());
        }
        let mut in_key = false;
        for line in text.lines() {
            if line.starts_with("-----BEGIN") && line.contains("PRIVATE KEY") {
                in_key = true;
            } else if line.starts_with("-----END") {
                in_key = false;
            } else if in_key && line.len() >= 40 {
                out.push(line.to_string());
            }
        }
    }
    out
}

fn write_operator_kubeconfig(path: &Path, sandbox: &str) {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {sandbox}\ncontexts:\n- name: sandbox\n  context: {{cluster: sandbox, user: operator}}\ncurrent-context: sandbox\nusers:\n- name: operator\n  user: {{}}\n"
        ),
    )
    .unwrap();
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_mixed_requests_none_lost_none_crossed_all_recorded() {
    let started = Instant::now();
    let scratch = Scratch::new();
    let (_sandbox, sandbox_url) = Proc::start(
        "sandbox",
        &["sandbox", "--listen", "127.0.0.1:0"],
        scratch.path("sandbox.err"),
    );
    let sandbox: Arc<str> = sandbox_url.as_str().into();

    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut secret_values = seed_secret_values(&sandbox).await;
    secret_values.extend(make_pool(Arc::clone(&sandbox), nonce).await);
    let watch_values: Vec<String> = (0..WATCHES)
        .map(|w| format!("watch-secret-value-{w}-{nonce}"))
        .collect();
    for v in &watch_values {
        secret_values.push(b64(v.as_bytes()));
        secret_values.push(v.clone());
    }
    let (s, body) = send(
        &http(),
        &sandbox,
        "GET",
        "/api/v1/namespaces/dev/pods?labelSelector=app%3Dweb",
        None,
    )
    .await
    .unwrap();
    assert_eq!(s, 200);
    let pods = names(&serde_json::from_slice(&body).unwrap());
    assert_eq!(pods.len(), 2, "the seed has two web pods in dev: {pods:?}");
    // One of them leaks a service-account token and a private key in its log: the proxy must
    // mask both.
    let leaked = logged_credentials(&sandbox, &pods).await;
    assert!(
        leaked.len() >= 2,
        "the seed's logs no longer leak a token and a key: {leaked:?}"
    );
    secret_values.extend(leaked);

    let policy = scratch.path("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let kubeconfig = scratch.path("operator.kubeconfig");
    write_operator_kubeconfig(&kubeconfig, &sandbox);
    let record = scratch.path("record.jsonl");
    let token_file = scratch.path("agent.token");
    let ca_file = scratch.path("proxy-ca.pem");
    let (mut proxy, proxy_url) = Proc::start(
        "proxy",
        &[
            "proxy",
            "--policy",
            policy.to_str().unwrap(),
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--user",
            "agent-1",
            "--group",
            "ai-agents",
            "--record",
            record.to_str().unwrap(),
            "--agent-token-file",
            token_file.to_str().unwrap(),
            "--agent-ca-file",
            ca_file.to_str().unwrap(),
        ],
        scratch.path("proxy.err"),
    );
    let setup = started.elapsed();

    // HTTPS with the CA the proxy made at start; its token as a bearer header.
    assert!(proxy_url.starts_with("https://"), "{proxy_url}");
    let token = std::fs::read_to_string(&token_file).unwrap();
    let ca = std::fs::read_to_string(&ca_file).unwrap();
    assert!(
        PROXY
            .set(Proxy {
                base: proxy_url.clone(),
                token: token.trim().to_string(),
                tls: tls_trusting(&ca),
            })
            .is_ok()
    );
    let base: Arc<str> = proxy_url.as_str().into();
    let pods = Arc::new(pods);
    let secrets = Arc::new(Secrets::new(secret_values));
    let load_started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        tasks.push(tokio::spawn(load_client(
            Arc::clone(&base),
            plan(c, &pods),
            Arc::clone(&pods),
            Arc::clone(&secrets),
        )));
    }
    for (w, value) in watch_values.iter().enumerate() {
        tasks.push(tokio::spawn(watch_client(
            Arc::clone(&base),
            w,
            value.clone(),
            Arc::clone(&secrets),
        )));
    }
    let mut responses = 0;
    let mut failed = 0;
    let mut failures = Vec::new();
    let mut sent = Vec::new();
    for t in tasks {
        let o = t.await.unwrap();
        responses += o.responses;
        failed += o.failed;
        failures.extend(o.failures.into_iter().take(20 - failures.len().min(20)));
        sent.extend(o.sent);
    }
    let load = load_started.elapsed();
    eprintln!(
        "proxy_load: {TOTAL} requests in {load:.2?} ({:.0}/s) after {setup:.2?} of setup",
        TOTAL as f64 / load.as_secs_f64()
    );
    assert!(
        failed == 0,
        "{failed} failures, among them:\n{}",
        failures.join("\n")
    );
    assert_eq!(sent.len(), TOTAL, "requests sent");
    assert_eq!(responses, TOTAL, "responses received");

    // SIGTERM: the proxy finishes, closes the record and exits 0.
    let status = proxy.terminate(Duration::from_secs(20));
    let proxy_err = proxy.stderr_text();
    assert!(
        status.success(),
        "the proxy exited with {status} after SIGTERM; stderr:\n{proxy_err}"
    );
    assert!(
        !proxy_err.contains("panicked"),
        "the proxy panicked:\n{proxy_err}"
    );

    let verify = Command::new(env!("CARGO_BIN_EXE_kubeleash"))
        .args(["replay", "--verify", record.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "replay --verify exited {}: {}",
        verify.status,
        String::from_utf8_lossy(&verify.stderr)
    );

    // One `request` record per request: same method, target and status, as multisets.
    let text = std::fs::read_to_string(&record).unwrap();
    let mut recorded: BTreeMap<(String, String, u16), i64> = BTreeMap::new();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for line in text.lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        let kind = r["kind"].as_str().unwrap().to_string();
        if kind == "request" {
            let status = r["response"]["status"].as_u64().unwrap_or(0) as u16;
            let key = (
                r["request"]["method"].as_str().unwrap().to_string(),
                r["request"]["target"].as_str().unwrap().to_string(),
                status,
            );
            *recorded.entry(key).or_default() += 1;
        }
        *kinds.entry(kind).or_default() += 1;
    }
    assert_eq!(
        kinds.get("request"),
        Some(&TOTAL),
        "records by kind: {kinds:?}"
    );
    assert_eq!(kinds.get("end"), Some(&1), "records by kind: {kinds:?}");
    for s in sent {
        *recorded.entry(s).or_default() -= 1;
    }
    let off: Vec<_> = recorded.iter().filter(|(_, n)| **n != 0).take(10).collect();
    assert!(off.is_empty(), "recorded minus sent, where not 0: {off:?}");
    if let Some(s) = secrets.leak(text.as_bytes()) {
        panic!("the record holds the secret value `{s}`");
    }
    eprintln!("proxy_load: {:.2?} in all", started.elapsed());
}
