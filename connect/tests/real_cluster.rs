//! `kubeleash-connect` against a real kube-apiserver (tests/cluster/start.sh): each credential
//! kind start.sh writes, a certificate authority that does not match, an exec plugin that fails
//! (at connect time and at refresh), and an exec credential that expires and is refreshed.
//!
//! One cluster serves every case (they run in order in one test): starting one takes ~10 s. A
//! cluster that does not start fails the test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use kubeleash_connect::{Note, Upstream, UpstreamService};
use kubeleash_core::policy::{Identity, Policy};
use kubeleash_tower::KubeleashLayer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{Layer, Service, ServiceExt};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const ENV_SECRET: &str = "env-secret-value-5f2c9a71e3";
const STDERR_MARKER: &str = "plugin-stderr-marker-81d4";

/// A cluster started by tests/cluster/start.sh in a fresh directory; stopped (and the
/// directory removed) when dropped.
struct Cluster {
    dir: PathBuf,
    env: HashMap<String, String>,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "kubeleash-connect-test-{}-{}",
            std::process::id(),
            kubeleash_connect::correlation_id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let started = Instant::now();
        let out = Command::new(format!("{REPO}/tests/cluster/start.sh"))
            .arg(&dir)
            .env(
                "KUBELEASH_CLUSTER_OWNER_PID",
                std::process::id().to_string(),
            )
            .output()
            .expect("tests/cluster/start.sh cannot be run");
        assert!(
            out.status.success(),
            "tests/cluster/start.sh failed ({}); a real API server is required, not optional (logs kept in {}):\n{}",
            out.status,
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("cluster started in {:?}", started.elapsed());
        let env = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        Cluster { dir, env }
    }

    fn var(&self, k: &str) -> String {
        self.env
            .get(k)
            .unwrap_or_else(|| panic!("start.sh printed no {k}"))
            .clone()
    }

    fn path(&self, k: &str) -> PathBuf {
        PathBuf::from(self.var(k))
    }

    /// A kubeconfig like start.sh's token one, with `server`, `ca` (base64 PEM) and `user`
    /// (the YAML body of the user entry, indented 4 spaces) replaced.
    fn kubeconfig(
        &self,
        name: &str,
        server: Option<&str>,
        ca: Option<&str>,
        user: &str,
    ) -> PathBuf {
        let ca = match ca {
            Some(c) => c.to_string(),
            None => b64(&std::fs::read(self.path("KUBELEASH_CLUSTER_CA")).unwrap()),
        };
        let server = server.map_or_else(|| self.var("KUBELEASH_CLUSTER_SERVER"), str::to_string);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kubeleash-test\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
             contexts:\n- name: t\n  context:\n    cluster: kubeleash-test\n    user: u\n    namespace: dev\ncurrent-context: t\nusers:\n- name: u\n  user:\n{user}"
        );
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// An executable script in the cluster's directory.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        p
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(format!("{REPO}/tests/cluster/stop.sh"))
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn request(method: &str, path: &str, body: &str) -> http::Request<kube::client::Body> {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(kube::client::Body::from(Bytes::from(body.to_string())))
        .unwrap()
}

async fn read<B>(resp: http::Response<B>) -> (u16, String)
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Who the server says the request's credential is (a SelfSubjectReview).
async fn whoami(svc: &mut UpstreamService) -> String {
    let review = r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#;
    let resp = svc
        .ready()
        .await
        .unwrap()
        .call(request(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            review,
        ))
        .await
        .unwrap_or_else(|e| panic!("the review was not answered: {e}"));
    let (status, body) = read(resp).await;
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["status"]["userInfo"]["username"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn connect(kc: &Path) -> (Upstream, UpstreamService) {
    let up = Upstream::from_kubeconfig(Some(kc), None)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", kc.display()));
    let svc = up
        .service()
        .unwrap_or_else(|e| panic!("{}: {e} / {:?}", kc.display(), e.operator_detail()));
    (up, svc)
}

const READ_DEV: &str = "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - {name: read-dev, effect: allow, subjects: {groups: [ai-agents]}, verbs: [get, list], resources: [secrets, pods], namespaces: [dev]}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_real_api_server() {
    let cluster = Cluster::start();
    let t = Instant::now();
    client_certificate(&cluster).await;
    token_and_exec(&cluster).await;
    a_ca_that_does_not_match(&cluster).await;
    a_failing_exec_plugin(&cluster).await;
    an_expired_exec_credential_is_refreshed(&cluster).await;
    a_plugin_that_fails_at_refresh_tells_the_agent_nothing(&cluster).await;
    eprintln!("all cases in {:?}", t.elapsed());
}

async fn client_certificate(c: &Cluster) {
    let (up, mut svc) = connect(&c.path("KUBECONFIG_OPERATOR_CERT")).await;
    assert_eq!(up.cluster(), "kubeleash-test");
    assert_eq!(up.server(), c.var("KUBELEASH_CLUSTER_SERVER"));
    assert_eq!(up.default_namespace(), "default");
    assert!(!format!("{up:?}").contains("BEGIN"), "{up:?}");
    assert_eq!(whoami(&mut svc).await, "kubeleash-operator");
    // The same stack under the kubeleash layer: a read goes through, masked.
    let layer = KubeleashLayer::new(Policy::from_yaml(READ_DEV).unwrap())
        .identity(Identity::new("agent-1", ["ai-agents"]));
    let mut guarded = layer.layer(svc);
    let resp = guarded
        .ready()
        .await
        .unwrap()
        .call(request(
            "GET",
            "/api/v1/namespaces/dev/secrets/db-credentials",
            "",
        ))
        .await
        .unwrap();
    let (status, body) = read(resp).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"]["password"], "W21hc2tlZF0=", "{body}");
    assert!(!body.contains("S3cr3t-Db-P4ssw0rd!"));
    let resp = guarded
        .ready()
        .await
        .unwrap()
        .call(request("GET", "/api/v1/namespaces/kube-system/secrets", ""))
        .await
        .unwrap();
    assert_eq!(read(resp).await.0, 403, "the policy denies kube-system");
}

async fn token_and_exec(c: &Cluster) {
    for k in ["KUBECONFIG_OPERATOR_TOKEN", "KUBECONFIG_OPERATOR_EXEC"] {
        let (_, mut svc) = connect(&c.path(k)).await;
        assert_eq!(whoami(&mut svc).await, "kubeleash-operator", "{k}");
    }
    // A token file, relative to the kubeconfig, with the newline an editor leaves (trimmed, as
    // kubectl does); then rotated to a token that is not valid, which is read again and refused.
    let token_file = c.dir.join("operator.token");
    std::fs::write(
        &token_file,
        format!("{}\n", c.var("KUBELEASH_CLUSTER_OPERATOR_TOKEN")),
    )
    .unwrap();
    let kc = c.kubeconfig(
        "token-file.kubeconfig",
        None,
        None,
        "    tokenFile: operator.token\n",
    );
    let (_, mut svc) = connect(&kc).await;
    assert_eq!(whoami(&mut svc).await, "kubeleash-operator");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    std::fs::write(&token_file, "rotated-but-not-valid\n").unwrap();
    let resp = svc
        .ready()
        .await
        .unwrap()
        .call(request("GET", "/api/v1/namespaces/dev/pods", ""))
        .await
        .unwrap();
    assert_eq!(
        read(resp).await.0,
        401,
        "the rotated token file was not read again"
    );
    // The admin's client certificate is someone else: the credential really is the one used.
    let (_, mut svc) = connect(&c.path("KUBECONFIG_ADMIN")).await;
    assert_eq!(whoami(&mut svc).await, "kubeleash-admin");
}

/// A TCP relay to `to` that counts the bytes clients send after their first TLS record (the
/// ClientHello).
async fn relay(to: String) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let after_hello = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&after_hello);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let to = to.clone();
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut server = tokio::net::TcpStream::connect(&to).await.unwrap();
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let up = async {
                    let (mut head, mut total, mut counted) = (Vec::new(), 0usize, 0usize);
                    let mut buf = [0u8; 16384];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if head.len() < 5 {
                            head.extend_from_slice(&buf[..n.min(5 - head.len())]);
                        }
                        total += n;
                        if head.len() == 5 {
                            let hello = 5 + usize::from(u16::from_be_bytes([head[3], head[4]]));
                            let after = total.saturating_sub(hello);
                            count.fetch_add(after - counted, Ordering::SeqCst);
                            counted = after;
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = sw.shutdown().await;
                };
                let down = async {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    let _ = cw.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    (format!("https://{addr}"), after_hello)
}

async fn a_ca_that_does_not_match(c: &Cluster) {
    let other = c.dir.join("other-ca");
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=not-the-cluster-ca",
            "-days",
            "1",
        ])
        .arg("-keyout")
        .arg(other.with_extension("key"))
        .arg("-out")
        .arg(other.with_extension("crt"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let ca = b64(&std::fs::read(other.with_extension("crt")).unwrap());
    let server = c.var("KUBELEASH_CLUSTER_SERVER");
    let (via, after_hello) = relay(server.trim_start_matches("https://").to_string()).await;
    // Control: the right CA through the relay sends the request (and its token).
    let token = format!("    token: {}\n", c.var("KUBELEASH_CLUSTER_OPERATOR_TOKEN"));
    let kc = c.kubeconfig("relay-good.kubeconfig", Some(&via), None, &token);
    let (_, mut svc) = connect(&kc).await;
    assert_eq!(whoami(&mut svc).await, "kubeleash-operator");
    let control = after_hello.swap(0, Ordering::SeqCst);
    assert!(
        control > 200,
        "the control request sent only {control} bytes after its hello"
    );
    drop(svc);

    let kc = c.kubeconfig("wrong-ca.kubeconfig", Some(&via), Some(&ca), &token);
    let (_, mut svc) = connect(&kc).await;
    let e = svc
        .ready()
        .await
        .unwrap()
        .call(request("GET", "/api/v1/namespaces/dev/pods", ""))
        .await
        .map(|r| r.status())
        .expect_err("a server the kubeconfig's CA did not sign was trusted");
    let text = e.to_string();
    assert!(text.contains("cluster `kubeleash-test`"), "{text}");
    assert!(text.contains("does not trust"), "{text}");
    assert!(text.contains("certificate-authority"), "{text}");
    assert!(
        !text.contains(&c.var("KUBELEASH_CLUSTER_OPERATOR_TOKEN")),
        "{text}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let sent = after_hello.load(Ordering::SeqCst);
    // At most an alert (and TLS 1.3's compatibility ChangeCipherSpec) follows the hello: no
    // request, no token.
    assert!(
        sent < 64,
        "{sent} bytes went to the server after the hello: a request reached it"
    );
    eprintln!("wrong CA: {text}");
}

async fn a_failing_exec_plugin(c: &Cluster) {
    let plugin = c.script(
        "failing-plugin.sh",
        &format!("echo \"{STDERR_MARKER}: cannot log in; secret=$PLUGIN_SECRET\" >&2\nexit 3\n"),
    );
    let user = format!(
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {}\n      args: [--login]\n      env: [{{name: PLUGIN_SECRET, value: {ENV_SECRET}}}]\n      interactiveMode: Never\n",
        plugin.display()
    );
    let kc = c.kubeconfig("failing-exec.kubeconfig", None, None, &user);
    let up = Upstream::from_kubeconfig(Some(&kc), None).await.unwrap();
    let e = up
        .service()
        .expect_err("a failing exec plugin gave a client");
    let agent = format!("{e} {e:?}");
    for leak in [
        STDERR_MARKER,
        ENV_SECRET,
        "PLUGIN_SECRET",
        "failing-plugin.sh",
        "--login",
    ] {
        assert!(
            !agent.contains(leak),
            "the agent's error carries {leak:?}: {agent}"
        );
    }
    assert!(
        agent.contains("cluster `kubeleash-test`") && agent.contains("exec plugin"),
        "{agent}"
    );
    let id = kubeleash_connect::id_in(e.to_string().as_bytes()).expect("no correlation id");
    let operator = e.operator_detail().expect("no detail for the operator");
    assert!(operator.contains(&id), "{operator}");
    assert!(
        operator.contains(STDERR_MARKER),
        "the operator is not told why: {operator}"
    );
    assert!(!operator.contains(ENV_SECRET), "{operator}");
    eprintln!("failing exec (agent): {e}");
}

/// An ExecCredential with `token` that expires `secs` seconds from now.
fn exec_credential(token: &str, when: &str) -> String {
    format!(
        "printf '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"%s\",\"expirationTimestamp\":\"%s\"}}}}\\n' \"{token}\" \"$(date -u {when} +%Y-%m-%dT%H:%M:%SZ)\""
    )
}

fn calls(p: &Path) -> usize {
    std::fs::read_to_string(p).map_or(0, |s| s.lines().count())
}

async fn an_expired_exec_credential_is_refreshed(c: &Cluster) {
    let counter = c.dir.join("expiring.calls");
    let token = c.var("KUBELEASH_CLUSTER_OPERATOR_TOKEN");
    let refreshed = c.dir.join("expiring.go");
    // While connecting (kube-rs runs the plugin more than once then: for the TLS identity and
    // for the credential) it hands out a token that is not valid and expired an hour ago;
    // afterwards the real one, valid for 20 s (inside kube-rs's 60 s margin, so every request
    // refreshes it).
    let plugin = c.script(
        "expiring-plugin.sh",
        &format!(
            "echo call >> {counter}\nif [ ! -e {refreshed} ]; then\n  {}\nelse\n  {}\nfi\n",
            exec_credential("not-a-valid-token-expired", "-d '-1 hour'"),
            exec_credential(&token, "-d '+20 seconds'"),
            counter = counter.display(),
            refreshed = refreshed.display(),
        ),
    );
    let user = format!(
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {}\n      interactiveMode: Never\n",
        plugin.display()
    );
    let kc = c.kubeconfig("expiring-exec.kubeconfig", None, None, &user);
    let (_, mut svc) = connect(&kc).await;
    let at_connect = calls(&counter);
    assert!(at_connect >= 1, "the plugin did not run to connect");
    std::fs::write(&refreshed, "").unwrap();
    // The expired credential is not sent: it is refreshed first, and the refreshed one works
    // (the expired one would be refused with 401).
    assert_eq!(whoami(&mut svc).await, "kubeleash-operator");
    assert_eq!(
        calls(&counter),
        at_connect + 1,
        "the expired credential was not refreshed"
    );
    assert_eq!(whoami(&mut svc).await, "kubeleash-operator");
    assert_eq!(
        calls(&counter),
        at_connect + 2,
        "a credential about to expire was not refreshed"
    );
    eprintln!("expiring exec: {at_connect} plugin runs to connect, one per request after");
}

async fn a_plugin_that_fails_at_refresh_tells_the_agent_nothing(c: &Cluster) {
    let counter = c.dir.join("refresh-fail.calls");
    let failing = c.dir.join("refresh-fail.now");
    let token = c.var("KUBELEASH_CLUSTER_OPERATOR_TOKEN");
    let plugin = c.script(
        "refresh-fail-plugin.sh",
        &format!(
            "echo call >> {counter}\nif [ ! -e {failing} ]; then\n  {}\nelse\n  echo \"{STDERR_MARKER}: refresh failed; secret=$PLUGIN_SECRET\" >&2\n  exit 4\nfi\n",
            exec_credential(&token, "-d '+20 seconds'"),
            counter = counter.display(),
            failing = failing.display(),
        ),
    );
    let user = format!(
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {}\n      env: [{{name: PLUGIN_SECRET, value: {ENV_SECRET}}}]\n      interactiveMode: Never\n",
        plugin.display()
    );
    let kc = c.kubeconfig("refresh-fail.kubeconfig", None, None, &user);
    let (_, svc) = connect(&kc).await;
    std::fs::write(&failing, "").unwrap();
    let layer = KubeleashLayer::new(Policy::from_yaml(READ_DEV).unwrap())
        .identity(Identity::new("agent-1", ["ai-agents"]));
    let mut guarded = layer.layer(svc);
    let note = Note::default();
    let mut req = request("GET", "/api/v1/namespaces/dev/pods", "");
    req.extensions_mut().insert(note.clone());
    let resp = guarded.ready().await.unwrap().call(req).await.unwrap();
    let (status, body) = read(resp).await;
    assert_eq!(status, 502, "{body}");
    for leak in [
        STDERR_MARKER,
        ENV_SECRET,
        "refresh-fail-plugin.sh",
        "127.0.0.1",
    ] {
        assert!(
            !body.contains(leak),
            "the agent's answer carries {leak:?}: {body}"
        );
    }
    let id = kubeleash_connect::id_in(body.as_bytes()).expect("no correlation id for the agent");
    let operator = note.take().expect("the operator's note was not left");
    assert!(
        operator.contains("cluster `kubeleash-test`") && operator.contains("exec"),
        "{operator}"
    );
    assert!(operator.contains(STDERR_MARKER), "{operator}");
    assert!(!operator.contains(ENV_SECRET), "{operator}");
    let told = kubeleash_connect::sanitize(
        "GET /api/v1/namespaces/dev/pods",
        &*Box::<dyn std::error::Error>::from(operator.clone()),
    );
    assert!(!told.agent.contains(STDERR_MARKER) && told.operator.contains(STDERR_MARKER));
    eprintln!("refresh failure (agent, id {id}): {body}");
}
