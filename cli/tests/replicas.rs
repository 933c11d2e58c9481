//! Replicas that share approvals through the real API server (`--approvals kubernetes`): the
//! chart's CRDs, RBAC and admission policy applied to a real kube-apiserver, three proxy
//! processes in front of it, approvers who are ServiceAccounts answering with
//! `kubeleash approvals --kubernetes` and with plain kubectl.
//!
//! What must hold, whatever replica a request reaches:
//! - a request held on one replica is answered through any, once, in the answerer's own name;
//! - the grant an approval leaves is honoured by every replica, its uses drawn down once across
//!   them, and deleting it revokes it;
//! - a replica that stops while holding a request, a request nobody answers in time, and an
//!   agent that stops waiting each leave an approval that is closed and cannot be answered, and
//!   nothing is sent for it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "support/approvals.rs"]
mod approvals;
#[path = "support/chart.rs"]
mod chart;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/process.rs"]
mod process;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use approvals::{Proxy, Setup, fresh_dir};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kubeleash");

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn admin(args: &[&str]) -> String {
    let (ok, out) = cluster::cluster().admin(args);
    assert!(ok, "kubectl {args:?}: {out}");
    out
}

/// The chart's CRDs, applied once per test binary (tests run in parallel).
fn crds() {
    static APPLIED: OnceLock<()> = OnceLock::new();
    APPLIED.get_or_init(|| {
        let crds = chart::repo().join("deploy/helm/kubeleash/crds/kubeleash.dev.yaml");
        admin(&["apply", "-f", p(&crds)]);
        admin(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/approvals.kubeleash.dev",
            "crd/grants.kubeleash.dev",
        ]);
    });
}

/// One release of the chart (approvals kept in the cluster) in a namespace of its own, its
/// approvers alice and bob, and a namespace `work` whose configmap writes need a person.
struct World {
    ns: String,
    work: String,
    home: PathBuf,
    operator: PathBuf,
    alice: PathBuf,
    bob: PathBuf,
    policy: String,
}

impl World {
    fn new(tag: &str) -> World {
        process::require_kubectl();
        crds();
        let pid = std::process::id();
        let ns = format!("kl-{tag}-{pid}");
        let work = format!("work-{tag}-{pid}");
        let home = fresh_dir(&format!("replicas-{tag}"));
        let values = home.join("values.yaml");
        std::fs::write(
            &values,
            format!(
                "approvers:\n  - {{kind: ServiceAccount, name: alice, namespace: {ns}}}\n  - {{kind: ServiceAccount, name: bob, namespace: {ns}}}\n\
                 operatorRules:\n  - apiGroups: [\"\"]\n    resources: [configmaps]\n    verbs: [get, list, watch, create, update, patch, delete]\n"
            ),
        )
        .unwrap();
        // Cluster-scoped objects are named after the release: one per test.
        let release = format!("r{tag}");
        let rendered = chart::render(&release, &ns, &["-f", p(&values)]);
        let manifests = home.join("rendered.yaml");
        std::fs::write(&manifests, rendered).unwrap();
        admin(&["create", "namespace", &ns]);
        admin(&["create", "namespace", &work]);
        admin(&["create", "namespace", &format!("{work}-free")]);
        let out = admin(&["apply", "-n", &ns, "-f", p(&manifests)]);
        assert!(
            out.contains(&format!(
                "validatingadmissionpolicybinding.admissionregistration.k8s.io/{release}-kubeleash-{ns}-approvals"
            )),
            "{out}"
        );
        for sa in ["alice", "bob"] {
            admin(&["create", "serviceaccount", sa, "-n", &ns]);
        }
        let kubeconfig = |who: &str| {
            let path = home.join(format!("{who}.kubeconfig"));
            chart::service_account_kubeconfig(&path, &ns, who);
            path
        };
        let world = World {
            operator: kubeconfig(&format!("{release}-kubeleash")),
            alice: kubeconfig("alice"),
            bob: kubeconfig("bob"),
            policy: format!(
                "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - name: read\n      effect: allow\n      verbs: [get, list, watch]\n      resources: [configmaps]\n    - name: writes-need-a-person\n      effect: approve\n      verbs: [create, update, patch, delete]\n      resources: [configmaps]\n      namespaces: [{work}]\n    - name: free-writes\n      effect: allow\n      verbs: [create, get, list, delete]\n      resources: [configmaps]\n      namespaces: [{work}-free]\n    - name: careless-everything-in-kubeleash-namespace\n      effect: allow\n      verbs: [\"*\"]\n      apiGroups: [\"*\"]\n      resources: [\"*\"]\n      namespaces: [{ns}]\n    - name: careless-kubeleash-objects\n      effect: allow\n      verbs: [\"*\"]\n      apiGroups: [kubeleash.dev]\n      resources: [\"*\"]\n"
            ),
            ns,
            work,
            home,
        };
        world.wait_for_admission_policy();
        world
    }

    /// The admission policy takes effect a moment after it is created: wait until it refuses
    /// an answer in another's name (on an approval made for the purpose).
    fn wait_for_admission_policy(&self) {
        // Made as the proxy makes them (only it may), named by its id.
        let probe = self.home.join("probe.yaml");
        std::fs::write(
            &probe,
            format!(
                "apiVersion: kubeleash.dev/v1alpha1\nkind: Approval\nmetadata: {{name: probe, namespace: {}}}\nspec: {{replica: none, expires: 1, request: {{id: probe}}}}\n",
                self.ns
            ),
        )
        .unwrap();
        let started = Instant::now();
        loop {
            let (ok, out) = self.kubectl_as(&self.operator, &["create", "-f", p(&probe)]);
            if ok {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{out}");
            std::thread::sleep(Duration::from_millis(250));
        }
        let started = Instant::now();
        loop {
            let (ok, out) = self.kubectl_as(
                &self.bob,
                &[
                    "patch",
                    "approval",
                    "probe",
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    r#"{"status":{"answer":{"decision":"deny","by":"alice","reason":"probe"}}}"#,
                    "--dry-run=server",
                ],
            );
            if !ok && out.contains("in your own name") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the admission policy never took effect: {out}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        admin(&["delete", "approval", "probe", "-n", &self.ns]);
    }

    /// A proxy replica named `name` (its record signed and named after it).
    fn replica(&self, name: &str, extra: &[&str]) -> Proxy {
        self.replica_recording_as(name, name, extra)
    }

    /// A proxy replica with the directory, record and key of `name`, recording as `session`.
    fn replica_recording_as(&self, name: &str, session: &str, extra: &[&str]) -> Proxy {
        let key = self.home.join(format!("{name}.key"));
        let approvals = format!("kubernetes={}", self.ns);
        let mut args = vec![
            "--approvals",
            &approvals,
            "--record-session",
            session,
            "--signing-key",
            p(&key),
        ];
        args.extend_from_slice(extra);
        Proxy::start(&Setup {
            name: &format!("{}-{name}", self.ns),
            policy: &self.policy,
            operator_kubeconfig: &self.operator,
            namespace: &self.work,
            extra: &args,
            env: &[],
        })
    }

    /// kubectl with `kubeconfig`: success, and stdout followed by stderr.
    fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> (bool, String) {
        let (ok, out, err) = approvals::kubectl3(kubeconfig, &self.home, args);
        (ok, format!("{out}{err}"))
    }

    /// `kubectl patch approval ID --subresource=status` (a merge patch) as `kubeconfig`'s user.
    fn patch_status_as(&self, kubeconfig: &Path, id: &str, patch: &str) -> (bool, String) {
        self.kubectl_as(
            kubeconfig,
            &[
                "patch",
                "approval",
                id,
                "--subresource=status",
                "--type=merge",
                "-p",
                patch,
            ],
        )
    }

    /// `kubeleash approvals --kubernetes ARGS` as `kubeconfig`'s user: exit code and output.
    fn approvals(&self, kubeconfig: &Path, args: &[&str]) -> (i32, String) {
        let out = Command::new(BIN)
            .args([
                "approvals",
                "--kubernetes",
                "--kubeconfig",
                p(kubeconfig),
                "-n",
                &self.ns,
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// The held request (as `kubeleash approvals --kubernetes list --json` shows it) whose
    /// kubectl command or body mentions `needle`, polled for.
    fn held(&self, needle: &str) -> Value {
        let started = Instant::now();
        loop {
            let (code, out) = self.approvals(&self.alice, &["list", "--json"]);
            assert_eq!(code, 0, "{out}");
            let listed: Value = serde_json::from_str(&out).unwrap();
            if let Some(h) = listed["pending"]
                .as_array()
                .and_then(|a| a.iter().find(|h| h.to_string().contains(needle)))
            {
                return h.clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "nothing held mentions {needle}: {listed}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A 10-minute window alice gives to `kubectl create configmap NAME BODY --dry-run=server`
    /// held on replica `held_on`; the identical request on `covered_on` then goes through
    /// unasked. The approval's id.
    fn window_covering(
        &self,
        held_on: &Proxy,
        covered_on: &Proxy,
        name: &str,
        body: &str,
    ) -> String {
        let create = ["create", "configmap", name, body, "--dry-run=server"];
        let first = held_on.kubectl_meanwhile(&create);
        let id = self.held(name)["id"].as_str().unwrap().to_string();
        let (code, out) = self.approvals(&self.alice, &["approve", &id, "--for", "10m"]);
        assert_eq!(code, 0, "{out}");
        assert!(first.join().unwrap().0);
        let (ok, out) = covered_on.kubectl(&create);
        assert!(ok, "the window covers it on the other replica: {out}");
        id
    }

    /// The Approval object `id`, as the API server keeps it.
    fn approval(&self, id: &str) -> Value {
        serde_json::from_str(&admin(&[
            "get", "approval", id, "-n", &self.ns, "-o", "json",
        ]))
        .unwrap()
    }

    /// Whether configmap `name` exists in the work namespace.
    fn exists(&self, name: &str) -> bool {
        cluster::cluster()
            .admin(&["get", "configmap", name, "-n", &self.work])
            .0
    }

    /// Poll until approval `id` is closed; its reason.
    fn closed(&self, id: &str, within: Duration) -> String {
        let started = Instant::now();
        loop {
            let a = self.approval(id);
            if let Some(r) = a["status"]["closed"]["reason"].as_str() {
                assert!(a["status"].get("answer").is_none(), "{a}");
                return r.to_string();
            }
            assert!(
                started.elapsed() < within,
                "approval {id} was never closed: {a}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `kubeleash replay --verify --key` on a replica's record, with `extra` flags.
    fn verify(&self, proxy: &Proxy, name: &str, extra: &[&str]) -> String {
        let public = self.home.join(format!("{name}.pub"));
        let out = Command::new(BIN)
            .args(["replay", "--verify", "--key", p(&public)])
            .args(extra)
            .arg(&proxy.record)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{name}'s record does not verify: {said}"
        );
        said
    }

    fn delete(self) {
        admin(&[
            "delete",
            "namespace",
            &self.ns,
            &self.work,
            &format!("{}-free", self.work),
            "--wait=false",
        ]);
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// A request held on replica A is answered through the cluster (not A), once, in the approver's
/// own name; the grant it leaves lets the same agent's like requests through on C and B, its
/// uses drawn down once across them; then requests are held again; a deleted grant covers
/// nothing, nor one given under a policy since changed (and changed back).
#[test]
fn held_on_one_replica_answered_through_another_honoured_by_a_third() {
    let w = World::new("share");
    let a = w.replica("replica-a", &[]);
    let b = w.replica("replica-b", &[]);
    let c = w.replica("replica-c", &[]);

    let first = a.kubectl_meanwhile(&["create", "configmap", "web-1", "--from-literal=k=v"]);
    let held = w.held("web-1");
    let id = held["id"].as_str().unwrap().to_string();
    assert_eq!(held["held_by"], "replica-a", "{held}");
    assert!(!w.exists("web-1"), "nothing goes before the answer");

    // An answer in another's name is refused by the API server; so is rewriting what was held.
    let (ok, out) = w.patch_status_as(
        &w.bob,
        &id,
        r#"{"status":{"answer":{"decision":"approve","by":"system:serviceaccount:x:alice"}}}"#,
    );
    assert!(!ok && out.contains("in your own name"), "{out}");
    let (ok, out) = w.kubectl_as(
        &w.alice,
        &[
            "patch",
            "approval",
            &id,
            "--type=merge",
            "-p",
            r#"{"spec":{"replica":"x"}}"#,
        ],
    );
    assert!(!ok && out.contains("forbidden"), "{out}");

    // alice approves, widened to names web-* and two more uses.
    let (code, out) = w.approvals(
        &w.alice,
        &["approve", &id, "--names", "web-*", "--uses", "2"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("widened"), "{out}");
    let (ok, out) = first.join().unwrap();
    assert!(ok && out.contains("configmap/web-1 created"), "{out}");
    // Once: bob's answer after it is refused, by kubeleash and by the API server.
    let (code, out) = w.approvals(&w.bob, &["deny", &id, "--reason", "too late"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("already answered") && out.contains("alice"),
        "{out}"
    );
    let (ok, out) = w.patch_status_as(
        &w.bob,
        &id,
        &format!(
            r#"{{"status":{{"answer":{{"decision":"deny","by":"system:serviceaccount:{}:bob","reason":"x"}}}}}}"#,
            w.ns
        ),
    );
    assert!(!ok && out.contains("already answered"), "{out}");
    let answer = &w.approval(&id)["status"]["answer"];
    assert_eq!(
        answer["by"],
        format!("system:serviceaccount:{}:alice", w.ns)
    );

    // The grant holds on C and on B, two uses in all, whichever replica takes them.
    let (ok, out) = c.kubectl(&["create", "configmap", "web-2", "--from-literal=k=v"]);
    assert!(ok, "covered on replica C: {out}");
    let (ok, out) = b.kubectl(&["create", "configmap", "web-3", "--from-literal=k=v"]);
    assert!(ok, "covered on replica B: {out}");
    let grant: Value =
        serde_json::from_str(&admin(&["get", "grant", &id, "-n", &w.ns, "-o", "json"])).unwrap();
    assert_eq!(grant["spec"]["usesLeft"], 0, "{grant}");
    assert!(
        !grant.to_string().contains("\"k\":\"v\""),
        "a grant keeps digests, not the body: {grant}"
    );
    // Used up: the next is held again (and denied here), and not created.
    let fourth = a.kubectl_meanwhile(&["create", "configmap", "web-4", "--from-literal=k=v"]);
    let again = w.held("web-4");
    assert_ne!(again["id"], held["id"]);
    let (code, out) = w.approvals(
        &w.bob,
        &["deny", again["id"].as_str().unwrap(), "--reason", "enough"],
    );
    assert_eq!(code, 0, "{out}");
    let (ok, out) = fourth.join().unwrap();
    assert!(!ok && out.contains("enough"), "{out}");
    assert!(!w.exists("web-4"));

    // A time-only grant (an exact approval with a window) on B covers the identical request on
    // A and C until an approver deletes it.
    let body = "--from-literal=k=same";
    let window_id = w.window_covering(&b, &a, "db-1", body);
    let (ok, out) = w.kubectl_as(&w.bob, &["delete", "grant", &window_id]);
    assert!(ok, "an approver revokes a grant: {out}");
    let revoked = c.kubectl_meanwhile(&["create", "configmap", "db-1", body, "--dry-run=server"]);
    let h = w.held("db-1");
    assert_ne!(h["id"].as_str().unwrap(), window_id);
    let (code, out) = w.approvals(
        &w.bob,
        &["deny", h["id"].as_str().unwrap(), "--reason", "revoked"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(!revoked.join().unwrap().0);

    // A changed policy ends grants: replica C loads a change and removes a grant given under
    // the old text; changed back, the grant does not come back to life, on any replica.
    let changed_id = w.window_covering(&b, &a, "db-2", body);
    let policy_file = c.home.join("policy.yaml");
    std::fs::write(&policy_file, format!("{}# changed\n", w.policy)).unwrap();
    let started = Instant::now();
    while cluster::cluster()
        .admin(&["get", "grant", &changed_id, "-n", &w.ns])
        .0
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a replica under another policy never removed the grant"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::write(&policy_file, &w.policy).unwrap();
    let after = a.kubectl_meanwhile(&["create", "configmap", "db-2", body, "--dry-run=server"]);
    let h = w.held("db-2");
    assert_ne!(h["id"].as_str().unwrap(), changed_id);
    let (code, out) = w.approvals(
        &w.bob,
        &[
            "deny",
            h["id"].as_str().unwrap(),
            "--reason",
            "policy changed",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(!after.join().unwrap().0);

    // Each replica's record names it, shows what it did, and verifies with its key.
    let (mut a, mut b, mut c) = (a, b, c);
    for r in [&mut a, &mut b, &mut c] {
        r.stop();
    }
    let rec_c = c.record_text();
    assert!(
        rec_c
            .lines()
            .any(|l| l.contains("web-2") && l.contains(&id) && l.contains("alice")),
        "C's record names the approval (from A) and who gave it: {rec_c}"
    );
    for (r, name) in [(&a, "replica-a"), (&b, "replica-b"), (&c, "replica-c")] {
        assert!(
            r.record_text()
                .lines()
                .all(|l| l.contains(&format!("\"session\":\"{name}\""))),
            "{name}"
        );
        w.verify(r, name, &[]);
    }
    w.delete();
}

/// A replica killed while it holds a request: the agent's request fails, another replica closes
/// the approval once the dead one's heartbeat is stale, and it can no longer be approved, so
/// nothing is sent. A request nobody answers in time and one whose agent stops waiting are
/// closed by the replica holding them.
#[test]
fn a_replica_that_dies_holding_a_request_leaves_it_closed_and_unanswerable() {
    let w = World::new("fault");
    let mut a = w.replica("replica-a", &["--approval-timeout", "6"]);
    let mut b = w.replica("replica-b", &[]);

    let doomed = b.kubectl_meanwhile(&["create", "configmap", "orphan", "--from-literal=k=v"]);
    let id = w.held("orphan")["id"].as_str().unwrap().to_string();
    // Killed once its record of the hold is signed (a checkpoint follows any record within a
    // second), so what it wrote can be verified afterwards.
    let started = Instant::now();
    while !b
        .record_text()
        .lines()
        .last()
        .unwrap_or_default()
        .contains("\"kind\":\"checkpoint\"")
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            b.record_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    b.kill();
    let (ok, out) = doomed.join().unwrap();
    assert!(!ok, "the agent's request ends with its replica: {out}");
    let why = w.closed(&id, Duration::from_secs(60));
    assert!(
        why.contains("replica-b") && why.contains("stopped"),
        "{why}"
    );
    let (code, out) = w.approvals(&w.alice, &["approve", &id]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("closed"), "{out}");
    assert!(!w.exists("orphan"), "nothing was sent for it");

    // Nobody answers within A's six seconds: the agent is told, the approval is closed.
    let (ok, out) = a.kubectl(&["create", "configmap", "late", "--from-literal=k=v"]);
    assert!(!ok && out.contains("nobody answered"), "{out}");
    let late = w.approval_named("late");
    let why = w.closed(&late, Duration::from_secs(30));
    assert!(why.contains("nobody answered"), "{why}");
    let (code, out) = w.approvals(&w.alice, &["approve", &late]);
    assert_eq!(code, 1, "{out}");
    assert!(!w.exists("late"));

    // The agent stops waiting (kubectl's own timeout): closed at once.
    let (ok, _) = a.kubectl(&[
        "create",
        "configmap",
        "gone",
        "--from-literal=k=v",
        "--request-timeout=2s",
    ]);
    assert!(!ok);
    let gone = w.approval_named("gone");
    let why = w.closed(&gone, Duration::from_secs(30));
    assert!(why.contains("stopped waiting"), "{why}");

    a.stop();
    w.verify(&a, "replica-a", &[]);
    // B was killed: its record may end without a signed close; what it holds verifies.
    w.verify(&b, "replica-b", &["--allow-open"]);
    w.delete();
}

impl World {
    /// The id of the one approval whose held request mentions `needle` (open or not).
    fn approval_named(&self, needle: &str) -> String {
        let list: Value =
            serde_json::from_str(&admin(&["get", "approvals", "-n", &self.ns, "-o", "json"]))
                .unwrap();
        let found: Vec<&Value> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["spec"]["request"]["body"].to_string().contains(needle))
            .collect();
        assert_eq!(found.len(), 1, "{list}");
        found[0]["metadata"]["name"].as_str().unwrap().to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Load and faults

#[path = "support/receiver.rs"]
mod receiver;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::json;

/// Clients per replica.
const CLIENTS: usize = 64;
/// Rounds per client: a create and a read back of its own object each.
const ROUNDS: usize = 4;
/// Every this many clients, one also sends a write that is held for a person.
const HOLDER_EVERY: usize = 32;

type Https = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// What an agent needs to reach a replica: its URL, bearer token and CA, from the agent
/// kubeconfig it wrote.
#[derive(Clone)]
struct Agent {
    base: String,
    token: String,
    tls: rustls::ClientConfig,
}

impl Agent {
    fn of(proxy: &Proxy) -> Agent {
        let text = std::fs::read_to_string(proxy.agent_kubeconfig()).unwrap();
        let field = |key: &str| -> String {
            let line = text
                .lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .unwrap_or_else(|| panic!("{key} in {text}"));
            serde_json::from_str(line.trim()).unwrap()
        };
        use base64::Engine as _;
        let ca = base64::engine::general_purpose::STANDARD
            .decode(field("certificate-authority-data:"))
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca) {
            roots.add(c.unwrap()).unwrap();
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Agent {
            base: field("server:"),
            token: field("token:"),
            tls,
        }
    }

    /// A client of its own: one keep-alive connection, requests one after another.
    fn client(&self) -> Https {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(self.tls.clone())
            .https_only()
            .enable_http1()
            .build();
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .build(connector)
    }

    async fn send(
        &self,
        c: &Https,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token))
            .header("accept", "application/json");
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        let body = body.map(|v| Bytes::from(v.to_string())).unwrap_or_default();
        let exchange = async {
            let resp = c
                .request(b.body(Full::new(body)).unwrap())
                .await
                .map_err(|e| format!("{method} {path}: {e}"))?;
            let status = resp.status().as_u16();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{method} {path}: body: {e}"))?
                .to_bytes();
            Ok((
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            ))
        };
        tokio::time::timeout(Duration::from_secs(180), exchange)
            .await
            .map_err(|_| format!("{method} {path}: no answer within 180s"))?
    }
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    /// Objects it created (201) and read back as its own.
    created: Vec<String>,
    /// Objects read back with another client's content: must stay empty.
    crossed: Vec<String>,
    /// Answers that were neither what the policy allows nor a failure of the replica itself.
    wrong: Vec<String>,
    /// The first failure to reach its replica (only a killed replica's clients have one).
    cut: Option<String>,
    /// Its held write, once approved and created.
    held: Option<String>,
}

/// One client of `replica`: ROUNDS creates of an object of its own, each read back; a holder
/// also sends one write the policy holds, which an approver answers through the cluster.
async fn client(
    agent: Agent,
    replica: String,
    i: usize,
    free: String,
    work: String,
    done: Arc<AtomicUsize>,
) -> Seen {
    let c = agent.client();
    let mut seen = Seen::default();
    for round in 0..ROUNDS {
        let name = format!("{replica}-{i}-{round}");
        let owner = format!("{replica}/{i}/{round}");
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"owner": owner}});
        match agent
            .send(
                &c,
                "POST",
                &format!("/api/v1/namespaces/{free}/configmaps"),
                Some(body),
            )
            .await
        {
            Ok((201, _)) => {}
            Ok((code, v)) => {
                seen.wrong.push(format!("create {name}: {code} {v}"));
                continue;
            }
            Err(e) => {
                seen.cut = Some(e);
                return seen;
            }
        }
        match agent
            .send(
                &c,
                "GET",
                &format!("/api/v1/namespaces/{free}/configmaps/{name}"),
                None,
            )
            .await
        {
            Ok((200, v)) if v["data"]["owner"] == owner.as_str() => seen.created.push(name),
            Ok((200, v)) => seen.crossed.push(format!("{name}: {v}")),
            Ok((code, v)) => seen.wrong.push(format!("get {name}: {code} {v}")),
            Err(e) => {
                // Created: the API server has it, whatever became of the read.
                seen.created.push(name);
                seen.cut = Some(e);
                return seen;
            }
        }
        done.fetch_add(1, Ordering::SeqCst);
        if round == 1 && i.is_multiple_of(HOLDER_EVERY) {
            let name = format!("held-{replica}-{i}");
            let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}});
            match agent
                .send(
                    &c,
                    "POST",
                    &format!("/api/v1/namespaces/{work}/configmaps"),
                    Some(body),
                )
                .await
            {
                Ok((201, _)) => seen.held = Some(name),
                Ok((code, v)) => seen.wrong.push(format!("held {name}: {code} {v}")),
                Err(e) => {
                    seen.cut = Some(e);
                    return seen;
                }
            }
        }
    }
    seen
}

/// The records of a file, by `SESSION-SEQ`.
fn record_ids(proxy: &Proxy) -> BTreeSet<String> {
    proxy
        .record_text()
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            format!("{}-{}", r["session"].as_str().unwrap(), r["seq"])
        })
        .collect()
}

/// Three replicas, 64 clients each, on the real API server: every client's objects are its own
/// (none crossed), none lost (every create a client saw is in the cluster and in its replica's
/// record), held writes on each replica answered through the cluster, replica C killed mid-run,
/// the audit receiver stopped and started again: every record of every replica arrives, and
/// every chain verifies with its replica's key.
#[test]
fn three_replicas_under_load_with_a_replica_and_the_receiver_killed() {
    let w = World::new("load");
    let free = format!("{}-free", w.work);
    let names = ["replica-a", "replica-b", "replica-c"];
    let mut proxies: Vec<Proxy> = names.iter().map(|n| w.replica(n, &[])).collect();
    let receiver = receiver::Receiver::new();
    receiver.start(7);
    // Killed when the test ends, however it ends.
    let shippers: Vec<process::Guard> = proxies
        .iter()
        .map(|p| process::Guard(receiver::shipper(&p.record, receiver.port, true)))
        .collect();

    // An approver answers every held request through the cluster, as it appears.
    let approving = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let approved = Arc::new(std::sync::Mutex::new(BTreeMap::<String, String>::new()));
    let approver = {
        let (alice, ns, approving, approved) = (
            w.alice.clone(),
            w.ns.clone(),
            Arc::clone(&approving),
            Arc::clone(&approved),
        );
        std::thread::spawn(move || {
            while approving.load(Ordering::SeqCst) {
                let out = Command::new(BIN)
                    .args([
                        "approvals",
                        "--kubernetes",
                        "--kubeconfig",
                        p(&alice),
                        "-n",
                        &ns,
                        "list",
                        "--json",
                    ])
                    .output()
                    .unwrap();
                let listed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
                for h in listed["pending"].as_array().into_iter().flatten() {
                    let id = h["id"].as_str().unwrap().to_string();
                    let ok = Command::new(BIN)
                        .args([
                            "approvals",
                            "--kubernetes",
                            "--kubeconfig",
                            p(&alice),
                            "-n",
                            &ns,
                            "approve",
                            &id,
                        ])
                        .output()
                        .unwrap()
                        .status
                        .success();
                    if ok {
                        approved
                            .lock()
                            .unwrap()
                            .insert(id, h["held_by"].as_str().unwrap_or_default().to_string());
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let done: Vec<Arc<AtomicUsize>> = names.iter().map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    for (r, proxy) in proxies.iter().enumerate() {
        let agent = Agent::of(proxy);
        for i in 0..CLIENTS {
            let fut = client(
                agent.clone(),
                names[r].to_string(),
                i,
                free.clone(),
                w.work.clone(),
                Arc::clone(&done[r]),
            );
            tasks.push((r, runtime.spawn(fut)));
        }
    }
    // Mid-run: the receiver goes down and comes back; replica C is killed outright once its
    // clients are a third of the way through.
    let started = Instant::now();
    while done[2].load(Ordering::SeqCst) < CLIENTS * ROUNDS / 3 {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "replica C's clients made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    receiver.stop();
    proxies[2].kill();
    std::thread::sleep(Duration::from_millis(1500));
    receiver.start(7);

    let mut seen: Vec<Vec<Seen>> = names.iter().map(|_| Vec::new()).collect();
    for (r, t) in tasks {
        seen[r].push(runtime.block_on(t).unwrap());
    }
    approving.store(false, Ordering::SeqCst);
    approver.join().unwrap();
    for proxy in &mut proxies[..2] {
        proxy.stop();
    }

    // None crossed, none wrong; A and B lost nothing; C's clients were cut, not misled.
    let mut created = BTreeSet::new();
    for (r, clients) in seen.iter().enumerate() {
        for (i, s) in clients.iter().enumerate() {
            assert!(
                s.crossed.is_empty(),
                "{} client {i} read another's object: {:?}",
                names[r],
                s.crossed
            );
            assert!(s.wrong.is_empty(), "{} client {i}: {:?}", names[r], s.wrong);
            if r < 2 {
                assert!(s.cut.is_none(), "{} client {i}: {:?}", names[r], s.cut);
                assert_eq!(s.created.len(), ROUNDS, "{} client {i}", names[r]);
                if i.is_multiple_of(HOLDER_EVERY) {
                    assert!(
                        s.held.is_some(),
                        "{} client {i}'s held write was approved and sent",
                        names[r]
                    );
                }
            }
            created.extend(s.created.iter().cloned());
        }
    }
    assert!(
        seen[2].iter().any(|s| s.cut.is_some()),
        "replica C was killed while its clients ran"
    );
    // Every object a client saw created is in the cluster.
    let listed: Value =
        serde_json::from_str(&admin(&["get", "configmaps", "-n", &free, "-o", "json"])).unwrap();
    let in_cluster: BTreeSet<String> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<&String> = created.difference(&in_cluster).collect();
    assert!(
        missing.is_empty(),
        "created but not in the cluster: {missing:?}"
    );
    // Held writes were answered through the cluster, each once, whichever replica held it.
    let approved = approved.lock().unwrap().clone();
    for name in &names[..2] {
        assert!(approved.values().any(|h| h == name), "{approved:?}");
    }

    // A's and B's records hold every create and read their clients saw.
    for r in 0..2 {
        let text = proxies[r].record_text();
        for name in seen[r].iter().flat_map(|s| s.created.iter()) {
            let target = format!("\"target\":\"/api/v1/namespaces/{free}/configmaps/{name}\"");
            assert!(
                text.contains(&target),
                "{}'s record lacks the read of {name}",
                names[r]
            );
        }
        let creates = text
            .lines()
            .filter(|l| {
                l.contains(&format!(
                    "\"target\":\"/api/v1/namespaces/{free}/configmaps\""
                )) && l.contains("\"status\":201")
            })
            .count();
        assert_eq!(creates, CLIENTS * ROUNDS, "{}'s recorded creates", names[r]);
    }

    // Every record of every replica arrives (C's: what it wrote before it died).
    let want: BTreeSet<String> = proxies.iter().flat_map(record_ids).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got: BTreeSet<String> = receiver::events(&receiver)
            .iter()
            .map(|e| e["auditID"].as_str().unwrap().to_string())
            .collect();
        let absent: Vec<&String> = want.difference(&got).collect();
        if absent.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} records never arrived, e.g. {:?}",
            absent.len(),
            &absent[..absent.len().min(5)]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(shippers);
    receiver.stop();

    // Every chain verifies with its replica's key, and holds what was shipped from it; C's may
    // end without a signed close.
    let copy = w.home.join("shipped.jsonl");
    let kept: Vec<String> = receiver
        .got
        .lock()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    std::fs::write(&copy, kept.join("\n")).unwrap();
    let said = w.verify(
        &proxies[0],
        names[0],
        &["--shipped", p(&copy), "--session", names[0]],
    );
    assert!(
        said.contains("holds all") && said.contains("unchanged"),
        "{said}"
    );
    w.verify(
        &proxies[1],
        names[1],
        &["--shipped", p(&copy), "--session", names[1]],
    );
    w.verify(
        &proxies[2],
        names[2],
        &["--allow-open", "--shipped", p(&copy), "--session", names[2]],
    );

    // Whoever holds A's signing key replaces its whole record with a fresh, signed one: the key
    // alone cannot tell, what was shipped can.
    // Under the same session name, or under another.
    let a_record = proxies[0].record.clone();
    drop(proxies);
    for (session, why) in [
        ("replica-a", "after it was shipped"),
        (
            "replica-a-2",
            "the file holds no record of session replica-a",
        ),
    ] {
        let mut forged = w.replica_recording_as("replica-a", session, &[]);
        assert_eq!(forged.record, a_record);
        let (ok, out) = forged.kubectl(&[
            "create",
            "configmap",
            &format!("forged-{session}"),
            "-n",
            &free,
        ]);
        assert!(ok, "{out}");
        forged.stop();
        w.verify(&forged, names[0], &[]);
        let out = Command::new(BIN)
            .args(["replay", "--verify", "--key"])
            .arg(w.home.join("replica-a.pub"))
            .args(["--shipped", p(&copy), "--session", "replica-a"])
            .arg(&forged.record)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{session}: {said}");
        assert!(
            said.contains(why),
            "the replacement is caught by what was shipped: {said}"
        );
    }
    w.delete();
}

/// kubeleash's own state is out of the agent's reach, though the agent's requests go upstream
/// with the very credential that writes it, and a careless policy allows everything in that
/// namespace and on kubeleash.dev objects: the layer refuses them before the policy. And the
/// API server itself refuses an answer from the proxy's account, an answer by the requester, a
/// close by an approver, and an approval made by anyone but the proxy.
#[test]
fn kubeleash_own_state_is_out_of_the_agents_reach() {
    let w = World::new("own");
    let a = w.replica("replica-a", &[]);
    let held = a.kubectl_meanwhile(&["create", "configmap", "mine", "--from-literal=k=v"]);
    let id = w.held("mine")["id"].as_str().unwrap().to_string();
    let approvals = format!("/apis/kubeleash.dev/v1alpha1/namespaces/{}/approvals", w.ns);
    let answer = w.home.join("answer.json");
    let mut object = w.approval(&id);
    object["status"] = json!({"answer": {"decision": "approve", "by": format!("system:serviceaccount:{}:r{}-kubeleash", w.ns, "own")}});
    std::fs::write(&answer, object.to_string()).unwrap();
    for args in [
        vec!["get", "--raw", approvals.as_str()],
        vec!["get", "--raw", "/apis/kubeleash.dev/v1alpha1/approvals"],
        vec!["get", "--raw", "/apis/kubeleash.dev/v1alpha1/grants"],
        vec![
            "replace",
            "--raw",
            &format!("{approvals}/{id}/status"),
            "-f",
            p(&answer),
        ],
        vec![
            "create",
            "--raw",
            &format!("/apis/kubeleash.dev/v1alpha1/namespaces/{}/grants", w.work),
            "-f",
            p(&answer),
        ],
        vec![
            "get",
            "--raw",
            &format!("/apis/coordination.k8s.io/v1/namespaces/{}/leases", w.ns),
        ],
        vec![
            "get",
            "--raw",
            &format!("/api/v1/namespaces/{}/configmaps", w.ns),
        ],
        vec!["delete", "--raw", &format!("/api/v1/namespaces/{}", w.ns)],
    ] {
        let (ok, out) = a.kubectl(&args);
        assert!(
            !ok && out.contains("Forbidden")
                && (out.contains("kubeleash's own") || out.contains("keeps its own state")),
            "{args:?}: {out}"
        );
    }
    // The API server refuses the proxy's own account as an answerer (the request above could
    // not even reach it), the requester's name as the answerer, and an approver's close.
    let (ok, out) = w.kubectl_as(
        &w.operator,
        &["replace", "--subresource=status", "-f", p(&answer)],
    );
    assert!(!ok && out.contains("never answers"), "{out}");
    let (ok, out) = w.patch_status_as(
        &w.alice,
        &id,
        r#"{"status":{"closed":{"reason":"nobody answered in time","by":"replica-a","at":1}}}"#,
    );
    assert!(!ok && out.contains("only the proxy closes"), "{out}");
    let decoy = w.home.join("decoy.yaml");
    std::fs::write(
        &decoy,
        format!("apiVersion: kubeleash.dev/v1alpha1\nkind: Approval\nmetadata: {{name: harmless, namespace: {}}}\nspec: {{replica: replica-a, expires: 9999999999, request: {{id: {id}}}}}\n", w.ns),
    )
    .unwrap();
    let (ok, out) = w.kubectl_as(&w.operator, &["create", "-f", p(&decoy)]);
    assert!(!ok && out.contains("named by its approval id"), "{out}");
    let (ok, out) = cluster::cluster().admin(&["create", "-f", p(&decoy)]);
    assert!(
        !ok && out.contains("only the proxy holds requests"),
        "{out}"
    );
    // Nothing of the above answered it; a person does.
    let (code, out) = w.approvals(&w.bob, &["deny", &id, "--reason", "not today"]);
    assert_eq!(code, 0, "{out}");
    let (ok, out) = held.join().unwrap();
    assert!(!ok && out.contains("not today"), "{out}");
    w.delete();
}

/// One identity holds at most sixteen requests at once across the replicas (each is an object
/// in etcd): the seventeenth, on whichever replica, is refused at once and says why.
#[test]
fn one_identity_holds_at_most_sixteen_across_replicas() {
    let w = World::new("many");
    let replicas: Vec<Proxy> = ["replica-a", "replica-b", "replica-c"]
        .iter()
        .map(|n| w.replica(n, &[]))
        .collect();
    let waiting: Vec<_> = (0..16)
        .map(|i| {
            replicas[i % 3].kubectl_meanwhile(&[
                "create",
                "configmap",
                &format!("many-{i}"),
                "--from-literal=k=v",
            ])
        })
        .collect();
    let started = Instant::now();
    loop {
        let (code, out) = w.approvals(&w.alice, &["list", "--json"]);
        assert_eq!(code, 0, "{out}");
        let listed: Value = serde_json::from_str(&out).unwrap();
        if listed["total"] == 16 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{listed}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let (ok, out) = replicas[2].kubectl(&["create", "configmap", "many-16", "--from-literal=k=v"]);
    assert!(!ok && out.contains("already has 16 requests held"), "{out}");
    // Answered, they are no longer held.
    let (_, out) = w.approvals(&w.alice, &["list", "--json", "--offset", "0"]);
    let mut ids: Vec<String> = Vec::new();
    let mut offset = 0;
    loop {
        let (_, out2) = w.approvals(
            &w.alice,
            &["list", "--json", "--offset", &offset.to_string()],
        );
        let listed: Value = serde_json::from_str(&out2).unwrap();
        let page = listed["pending"].as_array().unwrap();
        if page.is_empty() {
            break;
        }
        ids.extend(page.iter().map(|h| h["id"].as_str().unwrap().to_string()));
        offset += page.len();
    }
    assert_eq!(ids.len(), 16, "{out}");
    for id in &ids {
        let (code, out) = w.approvals(&w.bob, &["deny", id, "--reason", "too many"]);
        assert_eq!(code, 0, "{out}");
    }
    for h in waiting {
        let (ok, out) = h.join().unwrap();
        assert!(!ok && out.contains("too many"), "{out}");
    }
    let (ok, out) = replicas[0].kubectl(&[
        "create",
        "configmap",
        "many-17",
        "--from-literal=k=v",
        "--request-timeout=3s",
    ]);
    assert!(
        !ok && !out.contains("already has 16"),
        "held again once the others were answered: {out}"
    );
    w.delete();
}
