//! Non-blocking approvals end to end: `kubeleash proxy --approvals socket
//! --approvals-nonblocking=1` in front of `kubeleash sandbox`, driven by real clients (kubectl,
//! and kube-rs), answered with `kubeleash approvals approve|deny`. A held request fails at once
//! with its approval id; sent again once approved, it goes through.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "support/process.rs"]
mod process;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use process::{Guard, require_kubectl, sandbox_for_operator, serve};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kubeleash");
/// A bound on waits that normally take milliseconds (a hold listed, an answer taken): a
/// failure bound under load, never a measurement.
const PATIENCE: Duration = Duration::from_secs(60);

/// Holds configmap creates in dev; reads and discovery pass.
const POLICY: &str = r#"apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: nonblocking-approvals}
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

struct Env {
    _sandbox: Guard,
    _proxy: Guard,
    home: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// The sandbox, and the proxy in front of it with socket approvals, non-blocking.
fn env(name: &str) -> Env {
    require_kubectl();
    // Short: a socket path is limited to about 100 bytes.
    let home = std::env::temp_dir().join(format!("kl-nb-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let sandbox_guard = sandbox_for_operator(&home);
    std::fs::write(home.join("policy.yaml"), POLICY).unwrap();
    let p = |f: &str| home.join(f).to_str().unwrap().to_string();
    let args = [
        "proxy".to_string(),
        "--policy".into(),
        p("policy.yaml"),
        "--kubeconfig".into(),
        p("operator.kubeconfig"),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--record".into(),
        p("session.jsonl"),
        "--user".into(),
        "agent-1".into(),
        "--group".into(),
        "ai-agents".into(),
        "--agent-kubeconfig".into(),
        p("agent.kubeconfig"),
        "--agent-namespace".into(),
        "dev".into(),
        "--approvals".into(),
        "socket".into(),
        "--approvals-socket".into(),
        p("s/approvals.sock"),
        "--approvals-nonblocking=1".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (proxy_guard, proxy) = serve(&args, Some(&home.join("proxy.stderr")));
    assert!(proxy.starts_with("https://127.0.0.1:"), "{proxy}");
    Env {
        _sandbox: sandbox_guard,
        _proxy: proxy_guard,
        home,
    }
}

/// The operator, answering over the approvals socket.
#[derive(Clone)]
struct Operator(PathBuf);

impl Operator {
    /// `kubeleash approvals ARGS --socket S`, as the operator `alice`.
    fn approvals(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("approvals")
            .args(args)
            .arg("--socket")
            .arg(&self.0)
            .env("USER", "alice")
            .env_remove("LOGNAME")
            .output()
            .unwrap()
    }

    /// The ids of the requests held now (`kubeleash approvals list --json`).
    fn pending(&self) -> Vec<String> {
        let out = self.approvals(&["list", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["pending"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Wait until `id` is held (its dry run done, the approver asked).
    fn until_listed(&self, id: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.pending().iter().any(|p| p == id) {
            assert!(Instant::now() < deadline, "approval {id} was never listed");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn answer(&self, verb: &str, id: &str, extra: &[&str]) {
        let mut args = vec![verb, id];
        args.extend_from_slice(extra);
        let out = self.approvals(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Env {
    fn operator(&self) -> Operator {
        Operator(self.home.join("s").join("approvals.sock"))
    }

    /// kubectl as the agent; its exit, its output (stdout then stderr) and how long it took.
    fn kubectl(&self, args: &[&str]) -> (bool, String, Duration) {
        let started = Instant::now();
        let out = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.home.join("agent.kubeconfig"))
            .env("HOME", &self.home)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text, started.elapsed())
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

/// The approval id in a held request's error: 32 hex digits after "held for approval ".
fn held_id(text: &str) -> String {
    let rest = text
        .split("held for approval ")
        .nth(1)
        .unwrap_or_else(|| panic!("no approval id in {text:?}"));
    let id: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
    assert_eq!(id.len(), 32, "{text}");
    id
}

/// Run `send` until its answer is no longer "held for approval `id`" (the proxy has taken the
/// person's answer); that answer.
fn until_answered<T>(id: &str, mut send: impl FnMut() -> (T, String)) -> (T, String) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (r, text) = send();
        if !text.contains(&format!("held for approval {id}")) {
            return (r, text);
        }
        assert!(Instant::now() < deadline, "approval {id} stayed pending");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const CREATE: &[&str] = &[
    "create",
    "configmap",
    "nb-config",
    "--from-literal=greeting=hello",
    "-n",
    "dev",
];

#[test]
fn kubectl_fails_at_once_with_the_id_and_succeeds_once_approved() {
    let e = env("kubectl");
    let op = e.operator();

    // Held: kubectl fails at once (it does not retry a 403), the id in its error.
    let (ok, text, took) = e.kubectl(CREATE);
    assert!(!ok, "{text}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    // `kubectl create configmap` says "failed to create configmap: MESSAGE".
    assert!(text.contains("failed to create configmap"), "{text}");
    assert!(text.contains("configuration changes what runs"), "{text}");
    assert!(text.contains("retry after 1s"), "{text}");
    let id = held_id(&text);
    assert!(
        text.contains(&format!("kubeleash approvals approve {id}")),
        "{text}"
    );
    op.until_listed(&id);

    // The same command again: the same id, one prompt.
    let (ok, again, _) = e.kubectl(CREATE);
    assert!(!ok);
    assert_eq!(held_id(&again), id);
    assert_eq!(op.pending(), std::slice::from_ref(&id));
    let (ok, text, _) = e.kubectl(&["get", "configmap", "nb-config", "-n", "dev"]);
    assert!(
        !ok && text.contains("NotFound"),
        "nothing was created: {text}"
    );

    // Approved: the same command succeeds.
    op.answer("approve", &id, &[]);
    let (ok, text) = until_answered(&id, || {
        let (ok, text, _) = e.kubectl(CREATE);
        (ok, text)
    });
    assert!(ok, "{text}");
    assert!(text.contains("configmap/nb-config created"), "{text}");
    let (ok, text, _) = e.kubectl(&[
        "get",
        "configmap",
        "nb-config",
        "-n",
        "dev",
        "-o",
        "jsonpath={.data.greeting}",
    ]);
    assert!(ok, "{text}");
    assert_eq!(text, "hello");

    // Used once: the identical command is held anew; denied, it is told why.
    let (ok, text, _) = e.kubectl(CREATE);
    assert!(!ok);
    let id2 = held_id(&text);
    assert_ne!(id2, id);
    op.until_listed(&id2);
    op.answer("deny", &id2, &["--reason", "one is enough"]);
    let (ok, text) = until_answered(&id2, || {
        let (ok, text, _) = e.kubectl(CREATE);
        (ok, text)
    });
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("alice denied approval {id2}")),
        "{text}"
    );
    assert!(text.contains("one is enough"), "{text}");
    assert!(op.pending().is_empty());

    // Other kubectl commands show the Status as any API error: "Error from server (Forbidden)".
    let manifest = e.home.join("cm.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-file, namespace: dev}\ndata: {a: b}\n",
    )
    .unwrap();
    let (ok, text, _) = e.kubectl(&["create", "-f", manifest.to_str().unwrap()]);
    assert!(!ok);
    assert!(text.contains("Error from server (Forbidden)"), "{text}");
    let id3 = held_id(&text);
    assert!(id3 != id && id3 != id2);

    // Recorded: held, the answers given at once, the approval, the write; and the refusal.
    let kinds = |id: &str| -> Vec<(String, String)> {
        e.records_of(id)
            .iter()
            .map(|r| {
                (
                    r["kind"].as_str().unwrap().to_string(),
                    r["decision"]["outcome"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let first = kinds(&id);
    assert_eq!(first[0], ("held".into(), "held".into()), "{first:?}");
    for want in [
        ("request", "refused"),
        ("approval", "approved"),
        ("forwarded", "approved"),
        ("request", "approved"),
    ] {
        assert!(
            first.contains(&(want.0.into(), want.1.into())),
            "{want:?} not in {first:?}"
        );
    }
    let second = kinds(&id2);
    assert_eq!(second[0], ("held".into(), "held".into()), "{second:?}");
    assert!(second.iter().all(|k| k.1 != "approved"), "{second:?}");
    assert!(
        e.records_of(&id2)
            .iter()
            .any(|r| r["decision"]["approverReason"] == "one is enough"),
        "{second:?}"
    );
}

/// The agent's kubeconfig, as kube-rs reads it.
async fn kube_client(path: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(path).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
    kube::Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_sees_a_403_with_the_id_then_creates_once_approved() {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};

    let e = env("kube");
    let client = kube_client(&e.home.join("agent.kubeconfig")).await;
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "ConfigMap"));
    let api: Api<DynamicObject> = Api::namespaced_with(client, "dev", &ar);
    let cm = DynamicObject::new("from-kube", &ar)
        .data(serde_json::json!({"data": {"greeting": "hello"}}));
    let create = || async { api.create(&PostParams::default(), &cm).await };

    let status = match create().await {
        Err(kube::Error::Api(s)) => s,
        other => panic!("not held: {other:?}"),
    };
    assert_eq!(status.code, 403);
    assert_eq!(status.reason, "Forbidden");
    let details = status.details.clone().unwrap();
    let id = details.uid.clone();
    assert_eq!(id.len(), 32, "{status:?}");
    assert_eq!(details.retry_after_seconds, 1);
    assert_eq!(details.causes[0].reason, "ApprovalPending");
    assert!(status.message.contains(&id), "{}", status.message);

    let (op, held) = (e.operator(), id.clone());
    tokio::task::spawn_blocking(move || {
        op.until_listed(&held);
        op.answer("approve", &held, &[]);
    })
    .await
    .unwrap();
    let mut created = None;
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        match create().await {
            Ok(obj) => {
                created = Some(obj);
                break;
            }
            Err(kube::Error::Api(s)) if s.details.as_ref().is_some_and(|d| d.uid == id) => {
                assert!(s.message.contains("held for approval"), "{}", s.message);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    let created = created.expect("approved, the create went through");
    assert_eq!(created.metadata.name.as_deref(), Some("from-kube"));
    assert_eq!(created.data["data"]["greeting"], "hello");
    // Used once: held anew under another id.
    match create().await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert_ne!(s.details.unwrap().uid, id);
        }
        other => panic!("not held again: {other:?}"),
    }
}
