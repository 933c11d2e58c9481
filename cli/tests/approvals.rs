//! Approvals: the socket only its owner can open, `kubeleash approvals list|approve|deny`
//! answering a held request through it, shutdown denying what is held, and the webhook
//! approver against a tiny HTTP server.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests"
)]

// The binary has no library target: the module is compiled into this test as well.
#[allow(dead_code, unused_imports)]
#[path = "../src/approvals.rs"]
mod approvals;

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use approvals::{SocketApprover, WebhookApprover};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kubeleash_core::policy::Identity;
use kubeleash_core::request::Attributes;
use kubeleash_tower::{Answer, ApprovalRequest, Approver};
use serde_json::Value;

/// A directory of one test's own, removed when the test ends. Short: socket paths are limited.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("kl-appr-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn held(id: &str) -> ApprovalRequest {
    ApprovalRequest {
        id: id.into(),
        identity: Identity::new("agent-1", ["ai-agents"]),
        method: "POST".into(),
        target: "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings?fieldManager=kubectl-create"
            .into(),
        attributes: Attributes {
            resource_request: true,
            verb: "create".into(),
            api_group: "rbac.authorization.k8s.io".into(),
            api_version: "v1".into(),
            resource: "clusterrolebindings".into(),
            path: "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings".into(),
            ..Attributes::default()
        },
        kubectl: "kubectl create clusterrolebinding agent-admin --clusterrole=cluster-admin".into(),
        body: Some(
            r#"{"kind":"ClusterRoleBinding","metadata":{"name":"agent-admin","annotations":{"token":"[masked]"}}}"#
                .into(),
        ),
        content_type: Some("application/json".into()),
        impersonation: None,
        rule: Some("hold-rbac-writes".into()),
        reason: "rule \"hold-rbac-writes\" holds create on clusterrolebindings for approval".into(),
        agent_reason: None,
        dry_run: None,
        widen: Default::default(),
    }
}

/// Run the CLI off the runtime's threads, as user `alice`.
async fn cli(args: &[&str]) -> Output {
    cli_as(Some("alice"), args).await
}

async fn cli_as(user: Option<&str>, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let user = user.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kubeleash"));
        c.arg("approvals").args(&args).env_remove("LOGNAME");
        match user {
            Some(u) => c.env("USER", u),
            None => c.env_remove("USER"),
        };
        c.output().unwrap()
    })
    .await
    .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A bound on waits that normally take milliseconds: a failure bound under load, never a
/// measurement.
const PATIENCE: Duration = Duration::from_secs(60);

async fn until_pending(a: &SocketApprover, n: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while a.pending_count() != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pending count stayed {}, not {n}",
            a.pending_count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn hold(a: &SocketApprover, id: &str) -> tokio::task::JoinHandle<Answer> {
    let a = a.clone();
    let req = held(id);
    tokio::spawn(async move { a.approve(req).await })
}

fn sock(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_the_operators_alone() {
    let dir = Scratch::new("perm");
    let path = dir.0.join("run").join("kubeleash").join("approvals.sock");
    let a = SocketApprover::bind(&path).unwrap();
    assert_eq!(a.path(), path);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&path), 0o600, "socket mode");
    assert_eq!(mode(path.parent().unwrap()), 0o700, "created directory");
    // Nothing but the socket is left in the directory.
    let entries: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("approvals.sock")]);

    // A second proxy on the same socket is refused while the first serves it.
    let err = SocketApprover::bind(&path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");

    // The last clone dropped: the socket file goes with it.
    let b = a.clone();
    drop(a);
    assert!(path.exists());
    drop(b);
    assert!(!path.exists());

    // A stale socket (its process gone) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let a = SocketApprover::bind(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    drop(a);

    // Anything else at the path is left alone.
    std::fs::write(&path, "precious").unwrap();
    let err = SocketApprover::bind(&path).unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");

    // A directory other users may write is refused: they could swap the socket.
    let open = dir.0.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = SocketApprover::bind(&open.join("approvals.sock")).unwrap_err();
    assert!(err.to_string().contains("writable by other users"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_approve_and_deny_through_the_cli() {
    let dir = Scratch::new("cli");
    let path = dir.0.join("approvals.sock");
    let a = SocketApprover::bind(&path).unwrap();

    let first = hold(&a, "0123456789abcdef");
    let second = hold(&a, "fedcba9876543210");
    until_pending(&a, 2).await;

    let out = cli(&["list", "--socket", sock(&path)]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let list = text(&out.stdout);
    for shown in [
        "0123456789abcdef",
        "fedcba9876543210",
        "kubectl create clusterrolebinding agent-admin --clusterrole=cluster-admin",
        "agent-1 (groups: ai-agents)",
        "hold-rbac-writes",
        "holds create on clusterrolebindings for approval",
        "\"token\": \"[masked]\"",
        "POST /apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    ] {
        assert!(list.contains(shown), "{shown} not in\n{list}");
    }

    // --socket also goes before the subcommand; --json is the proxy's answer.
    let out = cli(&["--socket", sock(&path), "list", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pending = v["pending"].as_array().unwrap();
    assert_eq!(pending.len(), 2);
    // The two holds were spawned concurrently: either may have arrived first.
    let mut ids: Vec<&str> = pending.iter().map(|p| p["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["0123456789abcdef", "fedcba9876543210"]);
    for p in pending {
        assert_eq!(p["attributes"]["resource"], "clusterrolebindings");
        assert!(p["waiting_seconds"].is_u64());
    }

    let out = cli(&[
        "approve",
        "0123456789abcdef",
        "--for",
        "15m",
        "--reason",
        "ticket 42",
        "--socket",
        sock(&path),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("approved 0123456789abcdef"));
    assert_eq!(
        first.await.unwrap(),
        Answer::Approve {
            by: "alice (reason: ticket 42)".into(),
            window: Some(Duration::from_secs(900)),
        }
    );

    let out = cli(&[
        "deny",
        "fedcba9876543210",
        "--reason",
        "too broad",
        "--socket",
        sock(&path),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        second.await.unwrap(),
        Answer::Deny {
            by: "alice".into(),
            reason: "too broad".into(),
        }
    );
    assert_eq!(a.pending_count(), 0);

    let out = cli(&["list", "--socket", sock(&path)]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("no requests are held"));

    // An approval without a window; without a user name, the answer is given in the name of
    // the connecting uid. An id names one request: a second hold under a held id is refused at
    // once, and the answer resolves the one request held under it.
    let x = hold(&a, "1111111111111111");
    until_pending(&a, 1).await;
    let y = hold(&a, "1111111111111111");
    assert!(
        matches!(y.await.unwrap(), Answer::Deny { by, .. } if by == "kubeleash"),
        "a second hold under a held id is refused"
    );
    let z = hold(&a, "2222222222222222");
    until_pending(&a, 2).await;
    let out = cli_as(
        None,
        &["approve", "1111111111111111", "--socket", sock(&path)],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "approved 1111111111111111");
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&path).unwrap());
    assert_eq!(
        x.await.unwrap(),
        Answer::Approve {
            by: format!("uid {uid}"),
            window: None
        }
    );
    assert_eq!(a.pending_count(), 1, "the other request is still held");
    let out = cli(&["approve", "1111111111111111", "--socket", sock(&path)]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "an answered id answers nothing more"
    );
    assert!(!z.is_finished());
    a.deny_all("test over");
    assert!(matches!(z.await.unwrap(), Answer::Deny { .. }));
}

/// A held request with a body of `size` bytes.
fn held_big(id: &str, size: usize) -> ApprovalRequest {
    let mut r = held(id);
    let filler = "x".repeat(size);
    r.body = Some(format!(
        r#"{{"kind":"ConfigMap","data":{{"k":"{filler}"}}}}"#
    ));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_large_holds_stay_listable() {
    let dir = Scratch::new("big");
    let path = dir.0.join("approvals.sock");
    let a = SocketApprover::bind(&path).unwrap();
    // More holds than a page, each with a 3 MiB body (as an embedder's caller could hand
    // the socket directly; the layer itself cuts what it shows).
    let n = 40;
    let holds: Vec<_> = (0..n)
        .map(|i| {
            let a = a.clone();
            let req = held_big(&format!("{i:032x}"), 3 * 1024 * 1024);
            tokio::spawn(async move { a.approve(req).await })
        })
        .collect();
    until_pending(&a, n).await;

    let out = cli(&["list", "--socket", sock(&path), "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        out.stdout.len() < 4 * 1024 * 1024,
        "a list answer stays small: {} bytes",
        out.stdout.len()
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total"], n);
    let first = v["pending"].as_array().unwrap().len();
    assert!(first > 0 && first < n, "{first}");
    for p in v["pending"].as_array().unwrap() {
        let body = p["body"].as_str().unwrap();
        assert!(body.len() < 70 * 1024, "{}", body.len());
        assert!(body.contains("not shown"), "the cut is said");
    }
    // The rest is one page further; together they are every hold, once.
    let out = cli(&[
        "list",
        "--socket",
        sock(&path),
        "--json",
        "--offset",
        &first.to_string(),
    ])
    .await;
    let rest: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut ids: Vec<String> = v["pending"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["pending"].as_array().unwrap())
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);
    // The text list says where the next page starts.
    let out = cli(&["list", "--socket", sock(&path)]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("list --offset {first}")),
        "{}",
        text(&out.stdout).lines().last().unwrap_or_default()
    );
    a.deny_all("test over");
    for h in holds {
        assert!(matches!(h.await.unwrap(), Answer::Deny { .. }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_cli_refuses() {
    let dir = Scratch::new("refuse");
    let path = dir.0.join("approvals.sock");

    // No proxy: exit 2, and how to get one.
    let out = cli(&["list", "--socket", sock(&path)]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("kubeleash proxy") && err.contains("--socket"),
        "{err}"
    );

    let a = SocketApprover::bind(&path).unwrap();
    let h = hold(&a, "0123456789abcdef");
    until_pending(&a, 1).await;

    // An unknown id: the proxy says no, exit 1; nothing is answered.
    let out = cli(&["approve", "nope", "--socket", sock(&path)]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no pending approval `nope`"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&["deny", "nope", "--reason", "x", "--socket", sock(&path)]).await;
    assert_eq!(out.status.code(), Some(1));

    // Usage: a deny needs a reason, a duration needs a unit.
    for args in [
        vec!["deny", "0123456789abcdef", "--socket", sock(&path)],
        vec![
            "deny",
            "0123456789abcdef",
            "--reason",
            " ",
            "--socket",
            sock(&path),
        ],
        vec![
            "approve",
            "0123456789abcdef",
            "--for",
            "15",
            "--socket",
            sock(&path),
        ],
        vec![
            "approve",
            "0123456789abcdef",
            "--for",
            "0s",
            "--socket",
            sock(&path),
        ],
    ] {
        let out = cli(&args).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(a.pending_count(), 1);

    // Malformed protocol lines get an error, not a hang.
    let reply = raw(&path, "{\"op\":\"approve\"}\n").await;
    assert_eq!(reply["ok"], false);
    let reply = raw(&path, "{\"op\":\"fly\"}\n").await;
    assert_eq!(reply["ok"], false);
    let reply = raw(
        &path,
        "{\"op\":\"approve\",\"id\":\"0123456789abcdef\",\"for_seconds\":18446744073709551615}\n",
    )
    .await;
    assert_eq!(reply["ok"], false);
    assert!(reply["error"].as_str().unwrap().contains("at most 24h"));
    assert_eq!(a.pending_count(), 1);
    a.deny_all("test over");
    assert!(matches!(h.await.unwrap(), Answer::Deny { .. }));
}

/// One protocol line, one answer.
async fn raw(path: &Path, line: &str) -> Value {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(path).await.unwrap();
    s.write_all(line.as_bytes()).await.unwrap();
    let mut r = tokio::io::BufReader::new(s);
    let mut answer = String::new();
    r.read_line(&mut answer).await.unwrap();
    serde_json::from_str(&answer).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_denies_what_is_held() {
    let dir = Scratch::new("shut");
    let path = dir.0.join("approvals.sock");
    let a = SocketApprover::bind(&path).unwrap();

    // A request whose caller gave up (the layer's timeout) is no longer listed.
    let gone = tokio::time::timeout(Duration::from_millis(50), a.approve(held("aaaa"))).await;
    assert!(gone.is_err());
    assert_eq!(a.pending_count(), 0);

    let one = hold(&a, "aaaaaaaaaaaaaaaa");
    let two = hold(&a, "bbbbbbbbbbbbbbbb");
    until_pending(&a, 2).await;
    assert_eq!(a.deny_all("the proxy is shutting down"), 2);
    for h in [one, two] {
        assert_eq!(
            h.await.unwrap(),
            Answer::Deny {
                by: "kubeleash".into(),
                reason: "the proxy is shutting down".into(),
            }
        );
    }
    assert_eq!(a.pending_count(), 0);

    // Closed: later requests are denied at once, and the socket is gone.
    let three = hold(&a, "cccccccccccccccc");
    until_pending(&a, 1).await;
    assert_eq!(a.close("the proxy stopped"), 1);
    assert!(matches!(three.await.unwrap(), Answer::Deny { .. }));
    assert_eq!(
        a.approve(held("dddddddddddddddd")).await,
        Answer::Deny {
            by: "kubeleash".into(),
            reason: "the proxy stopped".into(),
        }
    );
    assert!(!path.exists());
}

/// The shared secret of the signed webhook paths.
const SECRET: &[u8] = b"0123456789abcdef-shared-secret";

/// A webhook that answers by path and keeps what it was sent. It answers with the request's
/// `id` (except where a path says otherwise); paths under `/signed` check the request's
/// signature and sign the answer with [`SECRET`].
async fn webhook_server() -> (String, Arc<Mutex<Vec<Value>>>) {
    use kubeleash_tower::signature::{SIGNATURE_HEADER, sign_answer, verify_request};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let seen = Arc::clone(&kept);
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        let path = req.uri().path().to_string();
                        let ct = req
                            .headers()
                            .get(http::header::CONTENT_TYPE)
                            .map(|v| v.to_str().unwrap().to_string());
                        let signed = req
                            .headers()
                            .get(SIGNATURE_HEADER)
                            .map(|v| v.to_str().unwrap().to_string());
                        assert_eq!(req.method(), http::Method::POST);
                        assert_eq!(ct.as_deref(), Some("application/json"));
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let sent: Value = serde_json::from_slice(&body).unwrap();
                        let id = sent["id"].as_str().unwrap().to_string();
                        seen.lock().unwrap().push(sent);
                        let with_id = |rest: &str| format!(r#"{{"id":"{id}",{rest}}}"#);
                        let (status, answer) = match path.as_str() {
                            "/approve" | "/signed/approve" | "/signed/unsigned"
                            | "/signed/wrong-key" => (
                                200,
                                with_id(r#""approve":true,"by":"bot","forSeconds":600"#),
                            ),
                            "/approve-once" => (200, with_id(r#""approve":true"#)),
                            "/deny" | "/signed/deny" => (
                                200,
                                with_id(r#""approve":false,"by":"bot","reason":"not now""#),
                            ),
                            "/other" => (200, r#"{"approve":true,"id":"zzzz"}"#.to_string()),
                            "/no-id" => (200, r#"{"approve":true}"#.to_string()),
                            "/forever" => (
                                200,
                                with_id(r#""approve":true,"forSeconds":18446744073709551615"#),
                            ),
                            "/garbage" => (200, "yes please".to_string()),
                            _ => (500, "boom".to_string()),
                        };
                        let mut r = http::Response::builder()
                            .status(status)
                            .header("content-type", "application/json");
                        if let Some(rest) = path.strip_prefix("/signed/") {
                            // A signed request, or no answer at all.
                            let ok = signed
                                .as_deref()
                                .is_some_and(|s| verify_request(SECRET, &body, s));
                            if !ok {
                                return Ok::<_, Infallible>(
                                    http::Response::builder()
                                        .status(401)
                                        .body(Full::new(Bytes::new()))
                                        .unwrap(),
                                );
                            }
                            match rest {
                                "unsigned" => {}
                                "wrong-key" => {
                                    r = r.header(
                                        SIGNATURE_HEADER,
                                        sign_answer(
                                            b"another-secret-of-enough-bytes",
                                            answer.as_bytes(),
                                        ),
                                    );
                                }
                                _ => {
                                    r = r.header(
                                        SIGNATURE_HEADER,
                                        sign_answer(SECRET, answer.as_bytes()),
                                    )
                                }
                            }
                        } else if path == "/approve" {
                            // A signature a webhook without a secret configured would not send:
                            // harmless when kubeleash has no secret either.
                            r = r.header(SIGNATURE_HEADER, sign_answer(SECRET, answer.as_bytes()));
                        }
                        Ok::<_, Infallible>(r.body(Full::new(Bytes::from(answer))).unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (base, seen)
}

fn denied(a: Answer, why: &str) {
    match a {
        Answer::Deny { reason, .. } => {
            assert!(reason.contains(why), "{reason}");
            assert!(!reason.contains("s3cret"), "the URL leaked: {reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_answers() {
    let (base, seen) = webhook_server().await;
    let ask = |path: &str| {
        let w = WebhookApprover::with_secret(&format!("{base}{path}?token=s3cret"), None).unwrap();
        async move { w.approve(held("0123456789abcdef")).await }
    };

    assert_eq!(
        ask("/approve").await,
        Answer::Approve {
            by: "bot".into(),
            window: Some(Duration::from_secs(600)),
        }
    );
    let sent = seen.lock().unwrap()[0].clone();
    assert_eq!(sent["id"], "0123456789abcdef");
    assert_eq!(
        sent["kubectl"],
        "kubectl create clusterrolebinding agent-admin --clusterrole=cluster-admin"
    );
    assert_eq!(sent["identity"]["user"], "agent-1");
    assert_eq!(sent["rule"], "hold-rbac-writes");
    assert!(sent["body"].as_str().unwrap().contains("[masked]"));

    assert_eq!(
        ask("/approve-once").await,
        Answer::Approve {
            by: "webhook".into(),
            window: None,
        }
    );
    assert_eq!(
        ask("/deny").await,
        Answer::Deny {
            by: "bot".into(),
            reason: "not now".into(),
        }
    );
    denied(ask("/fail").await, "500");
    denied(ask("/garbage").await, "not understood");
    denied(ask("/other").await, "another request");
    // An answer must name the request it answers.
    denied(ask("/no-id").await, "not understood");
    // A window past the limit would overflow the grant's deadline: denied, not clamped.
    denied(ask("/forever").await, "window longer than 24h");

    // Nobody listening: a port bound but never listened on, kept for the rest of the test so
    // that no other test (they run in parallel) can start listening on it meanwhile.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = reserved.local_addr().unwrap().port();
    let w =
        WebhookApprover::with_secret(&format!("http://127.0.0.1:{port}/hook?token=s3cret"), None)
            .unwrap();
    denied(
        w.approve(held("0123456789abcdef")).await,
        "could not be reached",
    );
    drop(reserved);
}

/// With a shared secret, requests are signed and only answers signed with it are believed:
/// an unsigned answer, one signed with another key, and one for another request all deny.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_with_a_secret_believes_only_signed_answers() {
    let (base, _seen) = webhook_server().await;
    let ask = |path: &str, secret: &[u8]| {
        let w =
            WebhookApprover::with_secret(&format!("{base}{path}"), Some(secret.to_vec())).unwrap();
        async move { w.approve(held("0123456789abcdef0123456789abcdef")).await }
    };
    assert_eq!(
        ask("/signed/approve", SECRET).await,
        Answer::Approve {
            by: "bot".into(),
            window: Some(Duration::from_secs(600)),
        }
    );
    assert_eq!(
        ask("/signed/deny", SECRET).await,
        Answer::Deny {
            by: "bot".into(),
            reason: "not now".into(),
        }
    );
    denied(ask("/signed/unsigned", SECRET).await, "not signed");
    denied(ask("/signed/wrong-key", SECRET).await, "not signed");
    // Answers that would approve without a secret: unsigned, so not believed.
    denied(ask("/approve-once", SECRET).await, "not signed");
    denied(ask("/other", SECRET).await, "not signed");
    // kubeleash signs with another key: the webhook refuses to answer.
    denied(
        ask("/signed/approve", b"a-different-secret-of-32-bytes!!").await,
        "401",
    );
    // A weak secret is refused at start.
    let err = WebhookApprover::with_secret(&format!("{base}/x"), Some(b"short".to_vec()))
        .err()
        .unwrap();
    assert!(err.to_string().contains("at least 16"), "{err}");
    assert!(!err.to_string().contains("short"), "{err}");
}

#[test]
fn webhook_urls() {
    let err = WebhookApprover::new("https://hooks.example/approve").unwrap_err();
    assert!(err.to_string().contains("not supported yet"), "{err}");
    for bad in ["ftp://x/y", "hooks.example/approve", "http://", "not a url"] {
        assert!(WebhookApprover::new(bad).is_err(), "{bad}");
    }
    assert!(WebhookApprover::new("http://127.0.0.1:9/approve").is_ok());
}

#[test]
fn default_socket_path() {
    let p = approvals::default_socket_path();
    assert!(p.ends_with("approvals.sock"), "{}", p.display());
    assert!(p.is_absolute());
}
