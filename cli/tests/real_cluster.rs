//! `kubeleash proxy` end to end with real kubectl, against two upstreams: the sandbox
//! (`kubeleash sandbox`) and a real kube-apiserver v1.34.4 + etcd (`tests/cluster/start.sh`),
//! where the real server is the judge.
//!
//! Every scenario is a function taking a [`Backend`]; `both!` makes a `sandbox` and a `real`
//! test of it, `real_only!` only the second. Where the two upstreams answer differently the
//! scenario asserts each one's actual answer and says why in a comment marked DIFFERENCE (these
//! are findings about the sandbox or kubeleash; the tests pin today's behaviour).
//!
//! The real cluster: one per test binary (`support/cluster.rs`), seeded like the sandbox plus a
//! cert-manager `Certificate` CRD. kubeleash talks to it as `kubeleash-operator`, a restricted RBAC
//! user (tests/cluster/operator-rbac.yaml: reads everything; writes configmaps, pods, services,
//! secrets, deployments in dev and prod only; no namespace deletes). The sandbox has no RBAC.
//! Scenarios run in parallel on the one real cluster, so each creates objects with names of its
//! own.

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
#[path = "support/wire.rs"]
mod wire;

use process::{Guard, serve};

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kubeleash");

/// The upstream `kubeleash proxy` fronts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    /// A fresh `kubeleash sandbox` per scenario (default seed: no RBAC, no CRD until a scenario
    /// creates one).
    Sandbox,
    /// The shared real kube-apiserver, reached as kubeleash-operator.
    Real,
}

/// Which of the operator's kubeconfigs the proxy uses on the real cluster.
#[derive(Clone, Debug)]
enum Credential {
    Cert,
    Token,
    Exec,
    /// A kubeconfig the test wrote (a wrong CA, an exec plugin of its own).
    File(PathBuf),
}

/// The test policy: what an agent (user agent-1, group ai-agents) may do. It differs from
/// examples/agent-policy.yaml (which only reads dev) in that it lets the agent write in dev and
/// has rules that allow what the operator's RBAC forbids.
const POLICY: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: real-cluster-e2e}
spec:
  rules:
    - name: read-dev
      effect: allow
      subjects: {groups: [ai-agents]}
      verbs: [get, list, watch]
      apiGroups: ["*"]
      resources: ["*"]
      namespaces: [dev]
    - name: write-dev
      effect: allow
      subjects: {groups: [ai-agents]}
      verbs: [create, update, patch, delete]
      apiGroups: ["", apps]
      resources: [configmaps, secrets, services, deployments, deployments/scale, serviceaccounts/token]
      namespaces: [dev]
    # kubeleash allows these two; the operator's RBAC does not: the API server's 403 must reach
    # the agent as it is.
    - name: configmaps-in-default
      effect: allow
      verbs: [create]
      apiGroups: [""]
      resources: [configmaps]
      namespaces: [default]
    - name: delete-the-dev-namespace
      effect: allow
      verbs: [delete]
      apiGroups: [""]
      resources: [namespaces]
      names: [dev]
    - name: protect-production
      effect: deny
      reason: production is off limits to agents
      verbs: [delete, deletecollection, update, patch]
      apiGroups: [""]
      resources: [namespaces]
      names: [prod, kube-system]
    - name: ask-the-server
      effect: allow
      verbs: [create]
      apiGroups: [authorization.k8s.io]
      resources: [selfsubjectaccessreviews, selfsubjectrulesreviews]
    - name: discovery
      effect: allow
      verbs: [get]
      nonResourceURLs: [/api, "/api/*", /apis, "/apis/*", /version, "/openapi/*", /healthz, /readyz, /livez]
"#;

fn home(name: &str, backend: Backend) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "kubeleash-real-{name}-{backend:?}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// One scenario's world: the upstream, the proxy in front of it, the agent's kubeconfig.
struct World {
    backend: Backend,
    home: PathBuf,
    /// The proxy's URL: `https://127.0.0.1:PORT`.
    agent_server: String,
    /// The proxy's token, as the agent's kubeconfig holds it (`user.token`).
    token: String,
    /// kubectl straight to the upstream with full rights: the sandbox itself, or the real
    /// cluster's admin. The judge of what is really there.
    upstream_kubeconfig: PathBuf,
    proxy: Guard,
    _sandbox: Option<Guard>,
}

fn world(name: &str, backend: Backend) -> World {
    world_with(name, backend, POLICY, Credential::Cert)
}

fn world_with(name: &str, backend: Backend, policy: &str, credential: Credential) -> World {
    world_args(name, backend, policy, credential, &[])
}

/// A world whose proxy gets `extra` flags too.
fn world_args(
    name: &str,
    backend: Backend,
    policy: &str,
    credential: Credential,
    extra: &[&str],
) -> World {
    let home = home(name, backend);
    let (sandbox, operator, upstream) = match backend {
        Backend::Sandbox => {
            let (guard, url) = serve(
                &["sandbox", "--listen", "127.0.0.1:0"],
                Some(&home.join("sandbox.stderr")),
            );
            let config = home.join("sandbox.kubeconfig");
            std::fs::write(
                &config,
                format!(
                    "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {url}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u, namespace: dev}}\ncurrent-context: c\nusers:\n- name: u\n  user: {{}}\n"
                ),
            )
            .unwrap();
            (Some(guard), config.clone(), config)
        }
        Backend::Real => {
            let c = cluster::cluster();
            let operator = match credential {
                Credential::Cert => c.operator_cert_kubeconfig(),
                Credential::Token => c.operator_token_kubeconfig(),
                Credential::Exec => c.operator_exec_kubeconfig(),
                Credential::File(f) => f,
            };
            (None, operator, c.admin_kubeconfig())
        }
    };
    let policy_file = home.join("policy.yaml");
    std::fs::write(&policy_file, policy).unwrap();
    let agent = home.join("agent.kubeconfig");
    let record = home.join("session.jsonl");
    let args: Vec<&str> = [
        "proxy",
        "--policy",
        policy_file.to_str().unwrap(),
        "--kubeconfig",
        operator.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--record",
        record.to_str().unwrap(),
        "--user",
        "agent-1",
        "--group",
        "ai-agents",
        "--agent-kubeconfig",
        agent.to_str().unwrap(),
        "--agent-namespace",
        "dev",
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .collect();
    let (proxy, url) = serve(&args, Some(&home.join("proxy.stderr")));
    let agent_config = std::fs::read_to_string(&agent).unwrap();
    let agent_server = wire::server_of_kubeconfig(&agent_config);
    // HTTPS, the token the user's, the CA in the kubeconfig: nothing in the URL's path.
    assert_eq!(agent_server, url, "{agent_config}");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca = wire::ca_of_kubeconfig(&agent_config).expect("the agent's kubeconfig has the CA");
    wire::trust(&url, &ca);
    std::fs::write(home.join("proxy-ca.pem"), &ca).unwrap();
    let token = wire::token_of_kubeconfig(&agent_config).expect("the kubeconfig has the token");
    World {
        backend,
        home,
        agent_server,
        token,
        upstream_kubeconfig: upstream,
        proxy,
        _sandbox: sandbox,
    }
}

/// kubectl with `kubeconfig`: success, stdout, stderr.
fn run_kubectl3(kubeconfig: &Path, home: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("kubectl")
        .arg("--request-timeout=30s")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .env("KUBECACHEDIR", home.join("kube-cache"))
        .stdin(Stdio::null())
        .output()
        .expect("kubectl runs (Debian's kubernetes-client package provides one)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// kubectl with `kubeconfig`: success, and stdout followed by stderr.
fn run_kubectl(kubeconfig: &Path, home: &Path, args: &[&str]) -> (bool, String) {
    let (ok, out, err) = run_kubectl3(kubeconfig, home, args);
    (ok, format!("{out}{err}"))
}

impl Drop for World {
    /// The scenario's directory goes once it passed (kept, with the proxy's stderr and record,
    /// when it failed).
    fn drop(&mut self) {
        self.stop_proxy();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.home);
        }
    }
}

impl World {
    /// Stop the proxy (SIGTERM: it finishes writing its record).
    fn stop_proxy(&mut self) {
        self.proxy.stop();
    }

    /// kubectl as the agent, through the proxy.
    fn kubectl(&self, args: &[&str]) -> (bool, String) {
        run_kubectl(&self.home.join("agent.kubeconfig"), &self.home, args)
    }

    /// kubectl as the agent; must succeed. Its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = run_kubectl3(&self.home.join("agent.kubeconfig"), &self.home, args);
        assert!(
            ok,
            "{:?}: kubectl {args:?} failed:\n{out}{err}",
            self.backend
        );
        out
    }

    /// kubectl as the agent; must fail.
    fn fails(&self, args: &[&str]) -> String {
        let (ok, out) = self.kubectl(args);
        assert!(
            !ok,
            "{:?}: kubectl {args:?} succeeded:\n{out}",
            self.backend
        );
        out
    }

    /// kubectl straight to the upstream with full rights (not through kubeleash).
    fn upstream(&self, args: &[&str]) -> (bool, String) {
        run_kubectl(&self.upstream_kubeconfig, &self.home, args)
    }

    fn spawn_kubectl(&self, args: &[&str]) -> (Guard, Receiver<String>) {
        let mut child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.home.join("agent.kubeconfig"))
            .env("HOME", &self.home)
            .env("KUBECACHEDIR", self.home.join("kube-cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (Guard(child), rx)
    }

    /// A raw HTTP/1.1 request to the proxy as the agent, over HTTPS with its token.
    fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let addr = wire::addr_of(&self.agent_server);
        let mut s = wire::connect(&self.agent_server);
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.token,
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        (status, body)
    }

    /// A name unique to this scenario and backend on the shared real cluster.
    fn name(&self, base: &str) -> String {
        format!("{base}-{}", format!("{:?}", self.backend).to_lowercase())
    }

    fn write(&self, file: &str, text: &str) -> PathBuf {
        let p = self.home.join(file);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// Lines from `rx` until `want` holds for everything seen so far, or `within` passes.
fn wait_for(
    rx: &Receiver<String>,
    seen: &mut String,
    within: Duration,
    want: impl Fn(&str) -> bool,
) -> bool {
    let deadline = Instant::now() + within;
    while !want(seen) {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return false;
        };
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
            }
            Err(_) => return want(seen),
        }
    }
    true
}

/// An HTTP/1.1 chunked body, decoded.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The first pod of deployment web in dev. DIFFERENCE: the sandbox names its pods anew at each
/// start (`web-4qwwg5tn7g-xxxxx`, Running) where tests/cluster/seed.yaml has the fixed
/// `web-7d4b9c8f6-x2k9p`, `...-q8m4z` (Pending: no scheduler), though its README says the names
/// are the same.
fn a_web_pod(w: &World) -> String {
    let out = w.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let pod = out
        .split_whitespace()
        .find(|p| p.starts_with("web-"))
        .unwrap_or_else(|| panic!("{:?}: no web pod in dev: {out}", w.backend))
        .to_string();
    if w.backend == Backend::Real {
        assert!(pod.starts_with("web-7d4b9c8f6-"), "{pod}");
    }
    pod
}

/// Standard base64 (padded), enough for secret values.
fn b64decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
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
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Every secret value in dev as the upstream really holds it (read with full rights, not through
/// kubeleash): the base64 text, the decoded text, and each long line of it (PEM bodies).
/// Values shorter than 8 bytes (`dev`, `true`) would match innocent text and are left out.
fn real_secret_values(w: &World) -> Vec<String> {
    let (ok, out) = w.upstream(&["get", "secrets", "-n", "dev", "-o", "json"]);
    assert!(ok, "{out}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut values = Vec::new();
    for item in list["items"].as_array().unwrap() {
        for v in item["data"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, v)| v.as_str())
        {
            let decoded = String::from_utf8_lossy(&b64decode(v).unwrap()).into_owned();
            if decoded.len() < 8 {
                continue;
            }
            values.push(v.to_string());
            values.extend(
                decoded
                    .lines()
                    .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
                    .map(str::to_string),
            );
            values.push(decoded);
        }
    }
    assert!(
        values.len() > 10,
        "dev holds secrets with values: {values:?}"
    );
    values
}

fn assert_no_secret_value(what: &str, out: &str, values: &[String]) {
    for v in values {
        assert!(
            !out.contains(v.as_str()),
            "{what}: a real secret value came through: {v:?}\n{out}"
        );
    }
}

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

// ---------------------------------------------------------------------------------------------

both!(get_in_every_output_format);
fn get_in_every_output_format(b: Backend) {
    let w = world("get", b);
    let pod = a_web_pod(&w);
    let pod = pod.as_str();

    let out = w.ok(&["get", "pods", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["kind"], "List", "{out}");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    assert!(names.contains(&pod), "{names:?}");

    let out = w.ok(&["get", "pod", pod, "-o", "yaml"]);
    assert!(
        out.contains("kind: Pod") && out.contains(&format!("name: {pod}")),
        "{out}"
    );
    assert!(out.contains("serviceAccountName: web"), "{out}");

    // The server prints the table (Accept: application/json;as=Table); kubectl adds nothing.
    let out = w.ok(&["get", "pods", "-o", "wide"]);
    let header = out.lines().next().unwrap();
    for col in [
        "NAME",
        "READY",
        "STATUS",
        "RESTARTS",
        "AGE",
        "IP",
        "NODE",
        "NOMINATED NODE",
        "READINESS GATES",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert!(out.lines().any(|l| l.starts_with(pod)), "{out}");

    let out = w.ok(&["get", "pods", "-o", "name"]);
    assert!(out.lines().any(|l| l == format!("pod/{pod}")), "{out}");

    let out = w.ok(&["get", "pods", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert!(out.split_whitespace().any(|n| n == pod), "{out}");

    let out = w.ok(&[
        "get",
        "pods",
        "-o",
        "custom-columns=NAME:.metadata.name,SA:.spec.serviceAccountName",
    ]);
    assert!(
        out.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .eq(["NAME", "SA"]),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.split_whitespace().eq([pod, "web"])),
        "{out}"
    );

    // Deployments and services as tables too.
    let out = w.ok(&["get", "deployments", "-o", "wide"]);
    assert!(
        out.contains("READY") && out.contains("CONTAINERS") && out.contains("web"),
        "{out}"
    );
    let out = w.ok(&["get", "services"]);
    assert!(out.contains("CLUSTER-IP") && out.contains("web"), "{out}");

    // The policy: nothing outside dev.
    let out = w.fails(&["get", "pods", "-n", "kube-system"]);
    assert!(
        out.contains("Forbidden")
            && out.contains("kubeleash: no rule allows list on pods in namespace kube-system"),
        "{out}"
    );
}

both!(secrets_are_masked_in_every_format);
fn secrets_are_masked_in_every_format(b: Backend) {
    let w = world("secrets", b);
    let values = real_secret_values(&w);

    let yaml = w.ok(&["get", "secrets", "-o", "yaml"]);
    assert!(yaml.contains("password: W21hc2tlZF0="), "{yaml}");
    assert!(yaml.contains("name: db-credentials"), "{yaml}");
    assert_no_secret_value("get secrets -o yaml", &yaml, &values);

    let json = w.ok(&["get", "secrets", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut masked = 0;
    for s in list["items"].as_array().unwrap() {
        for (k, v) in s["data"].as_object().into_iter().flatten() {
            assert_eq!(v, "W21hc2tlZF0=", "{} {k}", s["metadata"]["name"]);
            masked += 1;
        }
    }
    assert!(masked > 5, "{json}");
    assert_no_secret_value("get secrets -o json", &json, &values);

    let one = w.ok(&[
        "get",
        "secret",
        "db-credentials",
        "-o",
        "jsonpath={.data.password}",
    ]);
    assert_eq!(one, "W21hc2tlZF0=");
    let table = w.ok(&["get", "secrets"]);
    assert!(
        table.contains("kubernetes.io/dockerconfigjson") && table.contains("db-credentials"),
        "{table}"
    );
    // The client-side-apply annotation holds the object as applied, stringData included: masked.
    let (ok, annotation) =
        w.upstream(&["get", "secret", "db-credentials", "-n", "dev", "-o", "yaml"]);
    assert!(
        ok && annotation.contains("last-applied-configuration"),
        "{annotation}"
    );
    assert!(yaml.contains("\"password\":\"[masked]\""), "{yaml}");
}

both!(watch_sees_a_configmap_created_meanwhile);
fn watch_sees_a_configmap_created_meanwhile(b: Backend) {
    let w = world("watch", b);
    let name = w.name("made-during-watch");
    let (mut watch, rx) = w.spawn_kubectl(&[
        "get",
        "configmaps",
        "-w",
        "--output-watch-events",
        "-o",
        "json",
    ]);
    let mut seen = String::new();
    assert!(
        wait_for(&rx, &mut seen, Duration::from_secs(20), |s| s
            .contains("\"ADDED\"")
            && s.contains("app-config")),
        "{b:?}: the watch lists what is there first:\n{seen}"
    );
    w.ok(&["create", "configmap", &name, "--from-literal=k=v"]);
    assert!(
        wait_for(&rx, &mut seen, Duration::from_secs(20), |s| s
            .contains(&format!("\"name\":\"{name}\""))),
        "{b:?}: the event for the new configmap arrived while the watch was open:\n{seen}"
    );
    assert!(
        watch.0.try_wait().unwrap().is_none(),
        "the watch is still open"
    );
    drop(watch);
    w.ok(&["delete", "configmap", &name]);
}

both!(apply_client_side_then_server_side);
fn apply_client_side_then_server_side(b: Backend) {
    let w = world("apply", b);
    let csa = w.name("applied");
    let manifest = |name: &str, v: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: dev\ndata:\n  k: \"{v}\"\n"
        )
    };
    let f = w.write("csa.yaml", &manifest(&csa, "1"));
    // kubectl's validation reads `GET /openapi/v3` first, which the real server answers as
    // `text/plain`: kubeleash masks it as the JSON it holds and passes it on, so strict
    // validation works on both servers.
    let validate = "--validate=strict";
    let apply = |extra: &[&str], f: &Path| {
        let mut args = vec!["apply", validate];
        args.extend(extra);
        args.extend(["-f", f.to_str().unwrap()]);
        w.kubectl(&args)
    };
    let (ok, out) = apply(&[], &f);
    assert!(
        ok && out.contains(&format!("configmap/{csa} created")),
        "{out}"
    );
    w.write("csa.yaml", &manifest(&csa, "2"));
    let (ok, out) = apply(&[], &f);
    assert!(
        ok && out.contains(&format!("configmap/{csa} configured")),
        "{out}"
    );
    let (_, out) = apply(&[], &f);
    assert!(out.contains(&format!("configmap/{csa} unchanged")), "{out}");
    let (ok, real) = w.upstream(&["get", "configmap", &csa, "-n", "dev", "-o", "json"]);
    assert!(ok, "{real}");
    let real: serde_json::Value = serde_json::from_str(&real).unwrap();
    assert_eq!(real["data"]["k"], "2");
    assert!(
        real["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .is_some_and(|a| a.contains("\"k\":\"2\"")),
        "{real}"
    );

    let ssa = w.name("server-applied");
    let f = w.write("ssa.yaml", &manifest(&ssa, "1"));
    let (ok, out) = apply(&["--server-side"], &f);
    assert!(
        ok && out.contains(&format!("configmap/{ssa} serverside-applied")),
        "{out}"
    );
    let (ok, real) = w.upstream(&[
        "get",
        "configmap",
        &ssa,
        "-n",
        "dev",
        "-o",
        "json",
        "--show-managed-fields",
    ]);
    assert!(ok, "{real}");
    let real: serde_json::Value = serde_json::from_str(&real).unwrap();
    let managers: Vec<(String, String)> = real["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["manager"].as_str().unwrap().to_string(),
                m["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        managers,
        [("kubectl".to_string(), "Apply".to_string())],
        "{real}"
    );
    // Another manager takes the field; applying over it is a conflict (409) until --force-conflicts.
    w.ok(&[
        "patch",
        "configmap",
        &ssa,
        "--type",
        "merge",
        "-p",
        r#"{"data":{"k":"patched"}}"#,
    ]);
    w.write("ssa.yaml", &manifest(&ssa, "3"));
    let (ok, out) = apply(&["--server-side"], &f);
    // The sandbox detects apply conflicts too (since it tracks field managers).
    assert!(
        !ok && out.contains("conflict") && out.contains("kubectl-patch"),
        "{b:?}: {out}"
    );
    let (ok, out) = apply(&["--server-side", "--force-conflicts"], &f);
    assert!(ok && out.contains("serverside-applied"), "{out}");
    assert_eq!(
        w.ok(&["get", "configmap", &ssa, "-o", "jsonpath={.data.k}"]),
        "3"
    );
    w.ok(&["delete", "configmap", &csa, &ssa]);
}

both!(create_patch_three_ways_delete);
fn create_patch_three_ways_delete(b: Backend) {
    let w = world("patch", b);
    let cm = w.name("patched");
    let out = w.ok(&["create", "configmap", &cm, "--from-literal=a=1"]);
    assert!(out.contains(&format!("configmap/{cm} created")), "{out}");
    let out = w.ok(&[
        "patch",
        "configmap",
        &cm,
        "--type",
        "merge",
        "-p",
        r#"{"data":{"b":"2"}}"#,
    ]);
    assert!(out.contains("patched"), "{out}");
    let out = w.ok(&[
        "patch",
        "configmap",
        &cm,
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/data/a","value":"3"}]"#,
    ]);
    assert!(out.contains("patched"), "{out}");
    let (ok, real) = w.upstream(&[
        "get",
        "configmap",
        &cm,
        "-n",
        "dev",
        "-o",
        "jsonpath={.data}",
    ]);
    assert!(ok, "{real}");
    let data: serde_json::Value = serde_json::from_str(&real).unwrap();
    assert_eq!(data, serde_json::json!({"a": "3", "b": "2"}));

    // Strategic merge: containers merge by name (a merge patch would replace the list).
    let dep = w.name("strategic");
    // `kubectl create deployment` sends the Deployment as protobuf; both servers take it.
    let (ok, out) = w.kubectl(&["create", "deployment", &dep, "--image=nginx:1.0"]);
    assert!(
        ok && out.contains(&format!("deployment.apps/{dep} created")),
        "{b:?}: {out}"
    );
    let out = w.ok(&[
        "patch",
        "deployment",
        &dep,
        "--type",
        "strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox:1.0"}]}}}}"#,
    ]);
    assert!(out.contains("patched"), "{out}");
    let (ok, real) = w.upstream(&[
        "get",
        "deployment",
        &dep,
        "-n",
        "dev",
        "-o",
        "jsonpath={.spec.template.spec.containers[*].name}",
    ]);
    assert!(ok, "{real}");
    let mut names: Vec<&str> = real.split_whitespace().collect();
    names.sort_unstable();
    assert_eq!(names, ["nginx", "sidecar"]);
    let out = w.ok(&["scale", "deployment", &dep, "--replicas=3"]);
    assert!(out.contains("scaled"), "{out}");
    assert_eq!(
        w.ok(&["get", "deployment", &dep, "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );

    let out = w.ok(&["delete", "configmap", &cm]);
    assert!(
        out.contains(&format!("configmap \"{cm}\" deleted")),
        "{out}"
    );
    let out = w.ok(&["delete", "deployment", &dep]);
    assert!(out.contains("deleted"), "{out}");
    let out = w.fails(&["get", "configmap", &cm]);
    assert!(out.contains("NotFound") && out.contains(&cm), "{out}");
    let (ok, out) = w.upstream(&["get", "configmap", &cm, "-n", "dev"]);
    assert!(!ok && out.contains("NotFound"), "{out}");
}

both!(auth_can_i_answers_with_the_policy);
/// `kubectl auth can-i` POSTs a SelfSubjectAccessReview, `--list` a SelfSubjectRulesReview
/// (both as protobuf). kubeleash answers them from the policy, so the agent learns its leash,
/// narrowed by what the operator's credential may do where the API server says (the real
/// cluster's RBAC; the sandbox allows everything). What `can-i` says is what the request gets.
fn auth_can_i_answers_with_the_policy(b: Backend) {
    let mut w = world("can-i", b);
    let ask = |args: &[&str]| {
        let mut all = vec!["auth", "can-i"];
        all.extend(args);
        let (ok, out, err) = run_kubectl3(&w.home.join("agent.kubeconfig"), &w.home, &all);
        (ok, out.trim().to_string(), err)
    };
    // The policy allows it, and so does the credential: yes, and the request goes through.
    let (ok, said, err) = ask(&["create", "configmaps", "-n", "dev"]);
    assert!(ok && said == "yes", "{b:?}: {said}{err}");
    let cm = format!("{}-{}", w.name("can-i"), std::process::id());
    w.ok(&["create", "configmap", &cm, "-n", "dev"]);
    w.ok(&["delete", "configmap", &cm, "-n", "dev"]);

    // The policy denies it, though the credential may: no, with the policy's reason, as the
    // request itself is told.
    let (ok, said, err) = ask(&["create", "configmaps", "-n", "prod"]);
    assert!(!ok, "{b:?}: {said}{err}");
    assert!(
        said.starts_with("no - kubeleash denies it: no rule allows create on configmaps in namespace prod for user agent-1 in group ai-agents"),
        "{b:?}: {said}"
    );
    let out = w.fails(&["create", "configmap", "can-i-said-no", "-n", "prod"]);
    assert!(
        out.contains("kubeleash: no rule allows create on configmaps in namespace prod"),
        "{out}"
    );
    // The refusal says what the agent may do instead.
    assert!(
        out.contains("the nearest request the policy allows: create on configmaps in namespace dev (rule \"write-dev\")"),
        "{out}"
    );

    // A deny rule: its name and reason.
    let (ok, said, _) = ask(&["delete", "namespace/prod"]);
    assert!(
        !ok && said.contains("rule \"protect-production\" denies delete on namespaces/prod"),
        "{b:?}: {said}"
    );
    assert!(
        said.contains("production is off limits to agents"),
        "{said}"
    );

    // The policy allows it; the credential may not on the real cluster (no RoleBinding in
    // default): no, saying so; the sandbox lets the credential do anything: yes.
    let (ok, said, err) = ask(&["create", "configmaps", "-n", "default"]);
    match b {
        Backend::Real => {
            assert!(!ok, "{said}{err}");
            assert!(
                said.contains("rule \"configmaps-in-default\" allows")
                    && said.contains("the cluster credential kubeleash holds may not do it"),
                "{said}"
            );
            // And the request fails at the API server, as said.
            let out = w.fails(&["create", "configmap", "can-i-default", "-n", "default"]);
            assert!(
                out.contains("Forbidden") || out.contains("forbidden"),
                "{out}"
            );
        }
        Backend::Sandbox => assert!(ok && said == "yes", "{said}{err}"),
    }

    // A privileged request that `read-dev`'s `*` seems to cover (a service proxy): no, and why.
    let (ok, said, _) = ask(&["get", "services", "--subresource=proxy", "-n", "dev"]);
    assert!(!ok && said.contains("only through `*`"), "{b:?}: {said}");

    // --list: what the policy lets the agent do in dev, with a warning for what RBAC's rules
    // cannot say (the denials).
    let (ok, list, err) = ask(&["--list", "-n", "dev"]);
    assert!(ok, "{b:?}: {list}{err}");
    let row = |resource: &str| {
        list.lines()
            .find(|l| l.split_whitespace().next() == Some(resource))
            .unwrap_or_else(|| panic!("{b:?}: no {resource} row:\n{list}"))
            .to_string()
    };
    assert!(
        row("configmaps").contains("[create update patch delete]"),
        "{list}"
    );
    assert!(row("*.*").contains("[get list watch]"), "{list}");
    assert!(
        row("selfsubjectaccessreviews.authorization.k8s.io").contains("[create]"),
        "{list}"
    );
    assert!(
        err.contains("may be incomplete") && err.contains("rule \"protect-production\" denies"),
        "{b:?}: {err}"
    );
    // In prod the agent has no write rule: configmaps is not listed for writing there.
    let (_, prod, _) = ask(&["--list", "-n", "prod"]);
    assert!(
        !prod
            .lines()
            .any(|l| l.starts_with("configmaps ") && l.contains("create")),
        "{prod}"
    );

    // `kubectl auth whoami`: the agent's identity, never the operator credential's.
    let (ok, me, err) = run_kubectl3(
        &w.home.join("agent.kubeconfig"),
        &w.home,
        &["auth", "whoami"],
    );
    assert!(ok, "{b:?}: {me}{err}");
    assert!(
        me.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Username", "agent-1"])
            && me.contains("[ai-agents]"),
        "{b:?}: {me}"
    );
    assert!(!me.contains("kubeleash-operator"), "{me}");

    // The record says kubeleash answered them.
    w.stop_proxy();
    let record = std::fs::read_to_string(w.home.join("session.jsonl")).unwrap();
    assert!(record.contains(r#""outcome":"answered""#), "{record}");
    // And replays them as the kubectl commands they were.
    let out = Command::new(BIN)
        .args(["replay"])
        .arg(w.home.join("session.jsonl"))
        .output()
        .unwrap();
    let replayed = String::from_utf8_lossy(&out.stdout);
    for line in [
        "kubectl auth can-i create configmaps -n dev",
        "kubectl auth can-i delete namespaces/prod",
        "kubectl auth can-i get services --subresource proxy -n dev",
        "kubectl auth can-i --list -n dev",
        "kubectl auth whoami",
    ] {
        assert!(
            replayed.contains(line),
            "{b:?}: no `{line}` in:\n{replayed}"
        );
    }
}

both!(discovery_api_resources_and_explain);
fn discovery_api_resources_and_explain(b: Backend) {
    let w = world("discovery", b);
    let out = w.ok(&["api-resources"]);
    for r in [
        "configmaps",
        "deployments",
        "secrets",
        "namespaces",
        "selfsubjectaccessreviews",
    ] {
        let present = out.lines().any(|l| l.starts_with(&format!("{r} ")));
        assert!(present, "{b:?} {r}:\n{out}");
    }
    // DIFFERENCE: only the real cluster has the cert-manager CRD.
    assert_eq!(
        out.lines()
            .any(|l| l.starts_with("certificates ") && l.contains("cert-manager.io/v1")),
        b == Backend::Real,
        "{out}"
    );
    let out = w.ok(&["version", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    if b == Backend::Real {
        assert_eq!(v["serverVersion"]["gitVersion"], "v1.34.4", "{out}");
    }

    let (ok, out) = w.kubectl(&["explain", "pods.spec.containers"]);
    match b {
        Backend::Sandbox => {
            // The sandbox's OpenAPI v3 documents hold the Pod schema too.
            assert!(
                ok && out.contains("KIND:") && out.contains("FIELD:"),
                "{out}"
            );
        }
        Backend::Real => {
            // The real server answers `GET /openapi/v3` as `text/plain; charset=utf-8` (the
            // index of its OpenAPI documents); kubeleash masks it as the JSON it holds, so
            // explain works through the proxy as it does straight to the server.
            assert!(
                ok && out.contains("KIND:") && out.contains("FIELD:"),
                "{out}"
            );
            let (ok, direct) = run_kubectl(
                &cluster::cluster().operator_cert_kubeconfig(),
                &w.home,
                &["explain", "pods.spec.containers"],
            );
            assert!(ok && direct.contains("KIND:"), "{direct}");
        }
    }
}

both!(create_token_is_masked);
fn create_token_is_masked(b: Backend) {
    let w = world("token", b);
    // The TokenRequest is made (the server signs a token) and its status.token masked.
    let out = w.ok(&["create", "token", "web"]);
    assert_eq!(out.trim(), "[masked]", "{b:?}");
    assert!(!out.contains("eyJ"), "{out}");
    // No rule allows tokens outside dev.
    let out = w.fails(&["create", "token", "web", "-n", "prod"]);
    assert!(
        out.contains(
            "kubeleash: no rule allows create on serviceaccounts/web/token in namespace prod"
        ),
        "{out}"
    );
}

/// The cert-manager CRD and its two Certificates from the real cluster's seed
/// (tests/cluster/seed.yaml), for the sandbox, whose default seed has no CRD: created through
/// the sandbox's own API, as an operator would, so the scenario is the same on both servers.
fn seed_the_sandbox_with_the_crd(w: &World) {
    let seed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/cluster/seed.yaml"),
    )
    .unwrap();
    let docs: Vec<&str> = seed
        .split("\n---\n")
        .filter(|d| {
            d.contains("\nkind: CustomResourceDefinition\n") || d.contains("\nkind: Certificate\n")
        })
        .collect();
    assert_eq!(docs.len(), 3, "the seed's CRD and its two Certificates");
    let crd = w.write("crd.yaml", docs[0]);
    let (ok, out) = w.upstream(&["create", "-f", crd.to_str().unwrap()]);
    assert!(ok, "{out}");
    let (ok, out) = w.upstream(&[
        "wait",
        "--for=condition=Established",
        "crd/certificates.cert-manager.io",
        "--timeout=20s",
    ]);
    assert!(ok, "{out}");
    let certs = w.write("certificates.yaml", &docs[1..].join("\n---\n"));
    let (ok, out) = w.upstream(&["create", "-f", certs.to_str().unwrap()]);
    assert!(ok, "{out}");
}

both!(custom_resources);
fn custom_resources(b: Backend) {
    let w = world("crd", b);
    if b == Backend::Sandbox {
        seed_the_sandbox_with_the_crd(&w);
    }
    let (ok, out) = w.kubectl(&["get", "certificates"]);
    assert!(ok, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("web-tls ") && l.contains("web-tls-dev")),
        "{out}"
    );
    let out = w.ok(&[
        "get",
        "certificates.cert-manager.io",
        "web-tls",
        "-o",
        "jsonpath={.spec.dnsNames[0]}",
    ]);
    assert_eq!(out, "dev.shop.example.com");
    let out = w.fails(&["get", "certificates", "-n", "prod"]);
    assert!(
        out.contains(
            "kubeleash: no rule allows list on certificates.cert-manager.io in namespace prod"
        ),
        "{out}"
    );
}

/// What kubectl's typed `create` commands send is protobuf: the policy judges it by what it says.
const PROTOBUF_POLICY: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: protobuf-e2e}
spec:
  rules:
    - {name: read-dev, effect: allow, verbs: [get, list, watch], apiGroups: ["*"], resources: ["*"], namespaces: [dev]}
    - {name: small-deployments, effect: allow, verbs: [create], apiGroups: [apps], resources: [deployments], namespaces: [dev], when: [{path: "$.spec.replicas", equals: 1}]}
    - {name: big-deployments-need-a-human, effect: approve, verbs: [create], apiGroups: [apps], resources: [deployments], namespaces: [dev], when: [{path: "$.spec.replicas", notEquals: 1}]}
    - {name: no-cluster-admin, effect: deny, verbs: [create], apiGroups: [rbac.authorization.k8s.io], resources: [rolebindings, clusterrolebindings], when: [{path: "$.roleRef.name", equals: cluster-admin}]}
    - {name: bindings-in-dev, effect: allow, verbs: [create], apiGroups: [rbac.authorization.k8s.io], resources: [rolebindings], namespaces: [dev]}
    - {name: discovery, effect: allow, verbs: [get], nonResourceURLs: [/api, "/api/*", /apis, "/apis/*", /version, "/openapi/*"]}
"#;

both!(kubectls_protobuf_creates_are_judged_by_what_they_say);
/// `kubectl create deployment|rolebinding` send `application/vnd.kubernetes.protobuf`. A
/// condition reads what they say (replicas, roleRef); a held one is shown to the approver as the
/// JSON it decodes to and, approved, reaches the server as sent.
fn kubectls_protobuf_creates_are_judged_by_what_they_say(b: Backend) {
    let socket = home("protobuf", b).join("approvals.sock");
    let w = world_args(
        "protobuf",
        b,
        PROTOBUF_POLICY,
        Credential::Cert,
        &[
            "--approvals",
            "socket",
            "--approvals-socket",
            socket.to_str().unwrap(),
        ],
    );
    let small = w.name("pb-small");
    let out = w.ok(&[
        "create",
        "deployment",
        &small,
        "--image=nginx",
        "--replicas=1",
    ]);
    assert!(
        out.contains(&format!("deployment.apps/{small} created")),
        "{out}"
    );
    let out = w.fails(&[
        "create",
        "rolebinding",
        &w.name("pb-admin"),
        "--clusterrole=cluster-admin",
        "--user=mallory",
    ]);
    assert!(
        out.contains("kubeleash: rule \"no-cluster-admin\" denies create on rolebindings")
            && out.contains("$.roleRef.name equals \"cluster-admin\""),
        "{out}"
    );
    // A binding to `view`: kubeleash lets it through; the sandbox creates it, the real
    // server's RBAC refuses the operator (DIFFERENCE: the sandbox has no RBAC).
    let view = w.name("pb-view");
    let (ok, out) = w.kubectl(&[
        "create",
        "rolebinding",
        &view,
        "--clusterrole=view",
        "--user=mallory",
    ]);
    match b {
        Backend::Sandbox => assert!(ok && out.contains("created"), "{out}"),
        Backend::Real => assert!(
            !ok && out.contains(
                "is forbidden: User \"kubeleash-operator\" cannot create resource \"rolebindings\""
            ) && !out.contains("kubeleash:"),
            "{out}"
        ),
    }
    // Three replicas: held. The approver sees the decoded body, then approves.
    let big = w.name("pb-big");
    let (_kubectl, rx) = w.spawn_kubectl(&[
        "create",
        "deployment",
        &big,
        "--image=nginx",
        "--replicas=3",
    ]);
    let held = held_containing(&socket, &big);
    assert_eq!(
        held["content_type"], "application/vnd.kubernetes.protobuf",
        "{held}"
    );
    let body: serde_json::Value = serde_json::from_str(held["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["kind"], "Deployment", "{body}");
    assert_eq!(body["spec"]["replicas"], 3, "{body}");
    answer(&socket, held["id"].as_str().unwrap(), "approve");
    let out = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(
        out.contains(&format!("deployment.apps/{big} created")),
        "{out}"
    );
    let (ok, replicas) = w.upstream(&[
        "get",
        "deployment",
        &big,
        "-n",
        "dev",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert!(ok && replicas.trim() == "3", "{replicas}");
    // Nothing denied reached the server.
    let (ok, out) = w.upstream(&["get", "rolebinding", &w.name("pb-admin"), "-n", "dev"]);
    assert!(!ok && out.contains("NotFound"), "{out}");
}

/// The held request (as `kubeleash approvals list --json` shows it) whose JSON mentions
/// `needle`, waiting up to 60 s (a failure bound under load) for it to be held.
fn held_containing(socket: &Path, needle: &str) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let out = Command::new(BIN)
            .args(["approvals", "list", "--json", "--socket"])
            .arg(socket)
            .output()
            .unwrap();
        let listed: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
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

/// kubectl as the agent on a thread of its own (a held request waits for its answer): success,
/// and stdout followed by stderr.
fn kubectl_meanwhile(w: &World, args: &[&str]) -> std::thread::JoinHandle<(bool, String)> {
    let config = w.home.join("agent.kubeconfig");
    let home = w.home.clone();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_kubectl(&config, &home, &args)
    })
}

/// `kubeleash approvals approve|deny ID`.
fn answer(socket: &Path, id: &str, how: &str) {
    let mut cmd = Command::new(BIN);
    cmd.args(["approvals", how, id, "--socket"]).arg(socket);
    if how == "deny" {
        cmd.args(["--reason", "not now"]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const DIFF_POLICY: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: diff-e2e}
spec:
  rules:
    - {name: read-dev, effect: allow, verbs: [get, list, watch], apiGroups: ["*"], resources: ["*"], namespaces: [dev]}
    - {name: changes-need-a-human, effect: approve, verbs: [patch, update], apiGroups: ["", apps], resources: [deployments, configmaps], namespaces: [dev]}
    - {name: discovery, effect: allow, verbs: [get], nonResourceURLs: [/api, "/api/*", /apis, "/apis/*", /version, "/openapi/*"]}
"#;

both!(a_held_write_shows_the_change_the_server_would_make);
/// A held write is dry-run on the API server first: the approver sees the change from the live
/// object to the result (replicas 2 -> 5, the image), a masked value only as changed, and a
/// write the server would refuse as refused. The dry run changes nothing.
fn a_held_write_shows_the_change_the_server_would_make(b: Backend) {
    let socket = home("diff", b).join("approvals.sock");
    let w = world_args(
        "diff",
        b,
        DIFF_POLICY,
        Credential::Cert,
        &[
            "--approvals",
            "socket",
            "--approvals-socket",
            socket.to_str().unwrap(),
        ],
    );
    let dep = w.name("diff-dep");
    let cm = w.name("diff-cm");
    // Two files, not one `kind: List`: kubectl validates a List against OpenAPI v2 in
    // protobuf, which the sandbox does not serve (DIFFERENCE; the real server does).
    for (file, object) in [
        (
            "deployment.json",
            serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": dep, "namespace": "dev"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": dep}},
                    "template": {"metadata": {"labels": {"app": dep}},
                        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}),
        ),
        (
            "configmap.json",
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": cm, "namespace": "dev"},
                "data": {"color": "blue", "db-password": "Old-Pa55word-41"}}),
        ),
    ] {
        let f = w.write(file, &object.to_string());
        let (ok, out) = w.upstream(&["create", "-f", f.to_str().unwrap()]);
        assert!(ok, "{out}");
    }

    // Scale and change the image: held, shown as the change, denied; nothing changed.
    let k = kubectl_meanwhile(
        &w,
        &[
            "patch",
            "deployment",
            &dep,
            "-p",
            r#"{"spec":{"replicas":5,"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.28"}]}}}}"#,
        ],
    );
    let held = held_containing(&socket, &dep);
    let diff = held["dry_run"]["diff"].as_str().unwrap_or_default();
    assert!(diff.contains("~ spec.replicas: 2 -> 5"), "{held}");
    assert!(
        diff.contains("~ spec.template.spec.containers[0].image: nginx:1.27 -> nginx:1.28"),
        "{held}"
    );
    assert!(held["dry_run"]["rejected"].is_null(), "{held}");
    answer(&socket, held["id"].as_str().unwrap(), "deny");
    let (ok, out) = k.join().unwrap();
    assert!(!ok && out.contains("not now"), "{out}");
    let (ok, replicas) = w.upstream(&[
        "get",
        "deployment",
        &dep,
        "-n",
        "dev",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert!(
        ok && replicas.trim() == "2",
        "the dry run changed nothing: {replicas}"
    );

    // A credential-named ConfigMap key: the change is shown, never either value.
    let k = kubectl_meanwhile(
        &w,
        &[
            "patch",
            "configmap",
            &cm,
            "--type",
            "merge",
            "-p",
            r#"{"data":{"color":"red","db-password":"New-Pa55word-42"}}"#,
        ],
    );
    let held = held_containing(&socket, &cm);
    let text = held.to_string();
    assert!(
        !text.contains("Pa55word"),
        "no password in what the approver sees: {text}"
    );
    let diff = held["dry_run"]["diff"].as_str().unwrap_or_default();
    assert!(diff.contains("~ data.color: blue -> red"), "{held}");
    assert!(
        diff.contains("~ data.db-password: changed (masked)"),
        "{held}"
    );
    answer(&socket, held["id"].as_str().unwrap(), "approve");
    let (ok, out) = k.join().unwrap();
    assert!(ok && out.contains("patched"), "{out}");
    let (ok, color) = w.upstream(&[
        "get",
        "configmap",
        &cm,
        "-n",
        "dev",
        "-o",
        "jsonpath={.data.color}",
    ]);
    assert!(ok && color.trim() == "red", "{color}");

    // A write the API server would refuse: shown as refused, with its reason.
    let k = kubectl_meanwhile(
        &w,
        &[
            "patch",
            "deployment",
            &dep,
            "-p",
            r#"{"spec":{"replicas":-3}}"#,
        ],
    );
    let held = held_containing(&socket, &dep);
    let rejected = held["dry_run"]["rejected"].as_str().unwrap_or_default();
    assert_eq!(held["dry_run"]["status"], 422, "{held}");
    assert!(rejected.contains("spec.replicas"), "{held}");
    answer(&socket, held["id"].as_str().unwrap(), "deny");
    let (ok, _) = k.join().unwrap();
    assert!(!ok);
}

const RESULT_POLICY: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: result-e2e}
spec:
  rules:
    - {name: read-dev, effect: allow, verbs: [get, list, watch], apiGroups: ["*"], resources: ["*"], namespaces: [dev]}
    - {name: edit-deployments, effect: allow, verbs: [patch], apiGroups: [apps], resources: [deployments], namespaces: [dev]}
    - name: pods-run-as-non-root
      effect: deny
      verbs: [patch, update]
      apiGroups: [apps]
      resources: [deployments]
      when: [{path: "$.spec.template.spec.securityContext.runAsNonRoot", exists: false}]
    - name: no-unvetted-images
      effect: deny
      verbs: [patch, update]
      apiGroups: [apps]
      resources: [deployments]
      when: [{path: "$.spec.template.spec.containers[*].image", matches: "unvetted.example/*"}]
    - {name: discovery, effect: allow, verbs: [get], nonResourceURLs: [/api, "/api/*", /apis, "/apis/*", /version, "/openapi/*"]}
"#;

both!(patches_are_judged_by_the_object_they_produce_too);
/// A patch's effect depends on the stored object: on its text alone, a deny rule on absence
/// (`exists: false`) holds for every patch that leaves the field out. kubeleash asks the API
/// server for the result (a dry run) and judges that: a scale of a compliant deployment goes
/// through (its stored security context stays), a strategic `$patch: delete` of the security
/// context is denied by the condition on the result, and a scale of a deployment whose stored
/// image a rule forbids is denied, though its text names no image.
fn patches_are_judged_by_the_object_they_produce_too(b: Backend) {
    let w = world_with("result", b, RESULT_POLICY, Credential::Cert);
    let good = w.name("nonroot");
    let bad = w.name("unvetted");
    for (name, image) in [(&good, "nginx:1.27"), (&bad, "unvetted.example/app:1")] {
        let f = w.write(
            "deployment.json",
            &serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": "dev"},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                        "spec": {"securityContext": {"runAsNonRoot": true},
                            "containers": [{"name": "web", "image": image}]}}}})
            .to_string(),
        );
        let (ok, out) = w.upstream(&["create", "-f", f.to_str().unwrap()]);
        assert!(ok, "{out}");
    }
    let scale = r#"{"spec":{"replicas":2}}"#;
    let out = w.ok(&["patch", "deployment", &good, "-p", scale]);
    assert!(out.contains("patched"), "{out}");
    let out = w.fails(&["patch", "deployment", &bad, "-p", scale]);
    assert!(
        out.contains("no-unvetted-images")
            && out.contains("on the object the API server's dry run of this request produced"),
        "{out}"
    );
    let out = w.fails(&[
        "patch",
        "deployment",
        &good,
        "-p",
        r#"{"spec":{"template":{"spec":{"securityContext":{"$patch":"delete"}}}}}"#,
    ]);
    assert!(
        out.contains("pods-run-as-non-root")
            && out.contains("on the object the API server's dry run of this request produced"),
        "{out}"
    );
    let (ok, out) = w.upstream(&[
        "get",
        "deployment",
        &good,
        "-n",
        "dev",
        "-o",
        "jsonpath={.spec.replicas} {.spec.template.spec.securityContext.runAsNonRoot}",
    ]);
    assert!(ok && out.trim() == "2 true", "{out}");
    let (ok, out) = w.upstream(&[
        "get",
        "deployment",
        &bad,
        "-n",
        "dev",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert!(ok && out.trim() == "1", "{out}");
}

both!(client_side_apply_computes_its_patch_from_the_openapi_merge_keys);
/// A second `kubectl apply` computes a strategic merge patch from the server's OpenAPI v3
/// document, whose `x-kubernetes-patch-merge-key`s must reach kubectl as they are (masked, they
/// made kubectl warn "does not contain declared merge key: [masked]" and fall back).
fn client_side_apply_computes_its_patch_from_the_openapi_merge_keys(b: Backend) {
    let w = world("apply-merge-keys", b);
    let name = w.name("merge");
    let manifest = |value: &str, port: u16| {
        serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "dev"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [
                        {"name": "a", "image": "nginx:1", "env": [{"name": "X", "value": value}],
                         "ports": [{"containerPort": port}]},
                        {"name": "b", "image": "busybox:1"}]}}}
        })
        .to_string()
    };
    let f = w.write("merge.json", &manifest("1", 80));
    let (ok, out, err) = run_kubectl3(
        &w.home.join("agent.kubeconfig"),
        &w.home,
        &["apply", "-f", f.to_str().unwrap()],
    );
    assert!(ok && out.contains("created"), "{out}{err}");
    let f = w.write("merge.json", &manifest("2", 81));
    let (ok, out, err) = run_kubectl3(
        &w.home.join("agent.kubeconfig"),
        &w.home,
        &["apply", "-f", f.to_str().unwrap()],
    );
    assert!(ok && out.contains("configured"), "{out}{err}");
    assert!(
        !err.contains("merge key") && !err.contains("[masked]"),
        "{err}"
    );
    let got = w.ok(&[
        "get",
        "deployment",
        &name,
        "-o",
        "jsonpath={.spec.template.spec.containers[*].name} {.spec.template.spec.containers[0].env[0].value} {.spec.template.spec.containers[0].ports[0].containerPort}",
    ]);
    assert_eq!(got.trim(), "a b 2 81");
    let doc = w.ok(&["get", "--raw", "/openapi/v3/apis/apps/v1"]);
    assert!(
        doc.contains("\"x-kubernetes-patch-merge-key\":\"name\""),
        "merge keys pass unmasked"
    );
    assert!(!doc.contains("[masked"), "nothing in the schema is masked");
}

both!(impersonation_is_refused);
fn impersonation_is_refused(b: Backend) {
    let w = world("as", b);
    // With no discovery cache yet, kubectl's first requests are discovery ones (aggregated
    // discovery, Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList),
    // which carry the Impersonate-User header too. kubeleash refuses them with its 403 Status,
    // but kubectl cannot read it there: all it prints is "Error from server (Forbidden):
    // unknown" (both backends: it is kubeleash's answer; kubectl's, really).
    let out = w.fails(&["get", "pods", "--as", "system:admin"]);
    assert!(
        out.contains("Error from server (Forbidden): unknown"),
        "{out}"
    );
    // With discovery cached, the refusal of the request itself reads as it should.
    w.ok(&["get", "pods"]);
    let out = w.fails(&["get", "pods", "--as", "system:admin"]);
    assert!(
        out.contains("Forbidden")
            && out.contains("kubeleash: the request impersonates another identity"),
        "{out}"
    );
    let out = w.fails(&[
        "get",
        "pods",
        "--as",
        "agent-1",
        "--as-group",
        "system:masters",
    ]);
    assert!(
        out.contains("Forbidden") && out.contains("impersonat"),
        "{out}"
    );
}

both!(what_rbac_forbids_comes_back_unchanged);
/// kubeleash allows it; the operator's RBAC does not: the agent gets the API server's own 403.
fn what_rbac_forbids_comes_back_unchanged(b: Backend) {
    let w = world("rbac", b);
    let name = w.name("rbac-says-no");
    let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}}).to_string();
    let (status, text) = w.http("POST", "/api/v1/namespaces/default/configmaps", &body);
    match b {
        Backend::Real => {
            assert_eq!(status, 403, "{text}");
            let got: serde_json::Value = serde_json::from_str(&text).unwrap();
            // Exactly the Status kube-apiserver writes, not one kubeleash made.
            assert_eq!(
                got,
                serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "configmaps is forbidden: User \"kubeleash-operator\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"default\"",
                    "reason": "Forbidden", "details": {"kind": "configmaps"}, "code": 403
                }),
                "{text}"
            );
            // And kubectl says what it says straight to the server as the operator.
            let via = w.fails(&["create", "configmap", &name, "-n", "default"]);
            let (ok, direct) = run_kubectl(
                &cluster::cluster().operator_cert_kubeconfig(),
                &w.home,
                &["create", "configmap", &name, "-n", "default"],
            );
            assert!(!ok);
            assert_eq!(via, direct);
            let via = w.fails(&["delete", "namespace", "dev", "--wait=false"]);
            assert_eq!(
                via.trim(),
                "Error from server (Forbidden): namespaces \"dev\" is forbidden: User \"kubeleash-operator\" cannot delete resource \"namespaces\" in API group \"\" in the namespace \"dev\""
            );
            let (ok, out) =
                w.upstream(&["get", "namespace", "dev", "-o", "jsonpath={.status.phase}"]);
            assert!(ok && out == "Active", "{out}");
            let (ok, out) = w.upstream(&["get", "configmap", &name, "-n", "default"]);
            assert!(!ok && out.contains("NotFound"), "{out}");
        }
        Backend::Sandbox => {
            // DIFFERENCE: the sandbox has no RBAC: what kubeleash allows is done.
            assert_eq!(status, 201, "{text}");
            let (ok, out) = w.upstream(&["get", "configmap", &name, "-n", "default"]);
            assert!(ok, "{out}");
            let out = w.ok(&["delete", "namespace", "dev", "--wait=false"]);
            assert!(out.contains("namespace \"dev\" deleted"), "{out}");
        }
    }
}

both!(a_denied_write_never_reaches_the_server);
fn a_denied_write_never_reaches_the_server(b: Backend) {
    let mut w = world("denied", b);
    // prod: RBAC lets the operator write there; the policy lets the agent do nothing there.
    let name = w.name("never-made");
    let out = w.fails(&[
        "create",
        "configmap",
        &name,
        "-n",
        "prod",
        "--from-literal=k=v",
    ]);
    assert!(out.contains("kubeleash: no rule allows create on configmaps in namespace prod for user agent-1 in group ai-agents"), "{out}");
    let out = w.fails(&["delete", "namespace", "prod", "--wait=false"]);
    assert!(
        out.contains("Forbidden")
            && out.contains(
                "kubeleash: rule \"protect-production\" denies delete on namespaces/prod"
            ),
        "{out}"
    );
    let out = w.fails(&[
        "patch",
        "deployment",
        "payments",
        "-n",
        "prod",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"replicas":9}}"#,
    ]);
    assert!(out.contains("kubeleash: no rule allows"), "{out}");
    // The judge: nothing changed upstream.
    let (ok, out) = w.upstream(&["get", "configmap", &name, "-n", "prod"]);
    assert!(!ok && out.contains("NotFound"), "{out}");
    let (ok, out) = w.upstream(&["get", "namespace", "prod", "-o", "jsonpath={.status.phase}"]);
    assert!(ok && out == "Active", "{out}");
    let (ok, out) = w.upstream(&[
        "get",
        "deployment",
        "payments",
        "-n",
        "prod",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert!(ok && out != "9", "{out}");
    if b == Backend::Real {
        // ... though RBAC would have let the operator do the first.
        let (ok, out) = run_kubectl(
            &cluster::cluster().operator_cert_kubeconfig(),
            &w.home,
            &["auth", "can-i", "create", "configmaps", "-n", "prod"],
        );
        assert!(ok && out.trim() == "yes", "{out}");
    }
    // The record says so.
    w.stop_proxy();
    let record = std::fs::read_to_string(w.home.join("session.jsonl")).unwrap();
    assert!(record.contains("protect-production"), "{record}");
}

both!(the_example_agent_policy);
/// examples/agent-policy.yaml as shipped (the policy `kubeleash demo` runs).
fn the_example_agent_policy(b: Backend) {
    let policy = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/agent-policy.yaml"
    ))
    .unwrap();
    let w = world_with("example", b, &policy, Credential::Cert);
    let pod = a_web_pod(&w);
    assert!(w.ok(&["get", "pods"]).contains(&pod));
    let values = real_secret_values(&w);
    let out = w.ok(&["get", "secret", "db-credentials", "-o", "yaml"]);
    assert!(out.contains("password: W21hc2tlZF0="), "{out}");
    assert_no_secret_value("example policy, get secret", &out, &values);
    let out = w.fails(&["delete", "namespace", "prod", "--wait=false"]);
    assert!(out.contains("protect-production"), "{out}");
    let out = w.fails(&["get", "secrets", "-n", "prod"]);
    assert!(
        out.contains("Forbidden") && out.contains("kubeleash:"),
        "{out}"
    );
    // rbac-needs-a-human: the request needs approval, and this proxy has no --approvals, so it
    // is denied. (`kubectl create clusterrolebinding` sends protobuf, which kubeleash decodes.)
    let out = w.fails(&[
        "create",
        "clusterrolebinding",
        "agent-admin",
        "--clusterrole=cluster-admin",
        "--user=agent-1",
    ]);
    assert!(
        out.contains("rule \"rbac-needs-a-human\" requires approval")
            && out.contains("no approver is configured"),
        "{out}"
    );
    let (ok, out) = w.upstream(&["get", "clusterrolebinding", "agent-admin"]);
    assert!(!ok && out.contains("NotFound"), "{out}");
    // The example policy allows only reads: writes in dev are denied.
    let out = w.fails(&["create", "configmap", "example-write", "--from-literal=k=v"]);
    assert!(
        out.contains("kubeleash: no rule allows create on configmaps in namespace dev"),
        "{out}"
    );
}

both!(raw_requests_go_through);
/// `kubectl get --raw PATH` sends PATH as is, replacing the server URL's path. The proxy serves
/// HTTPS and the agent kubeconfig holds the token as the user's, so kubectl sends it as a bearer
/// header: raw reads, discovery, health and OpenAPI go through, decided by the policy, secrets
/// masked.
fn raw_requests_go_through(b: Backend) {
    let w = world("raw", b);
    for (path, want) in [
        (
            "/api/v1/namespaces/dev/configmaps",
            "\"kind\":\"ConfigMapList\"",
        ),
        ("/version", "\"gitVersion\""),
        ("/apis", "\"kind\":\"APIGroupList\""),
        ("/healthz", "ok"),
        ("/readyz", "ok"),
        ("/openapi/v3", "\"paths\""),
    ] {
        let out = w.ok(&["get", "--raw", path]);
        assert!(out.contains(want), "{b:?}: get --raw {path}: {out}");
    }
    // OpenAPI v2, a big JSON document from the real server. The sandbox's answer is its own
    // (the document, or a 404 where it does not serve it), never the proxy's 401.
    let (ok, out) = w.kubectl(&["get", "--raw", "/openapi/v2"]);
    let head: String = out.chars().take(500).collect();
    match b {
        Backend::Real => assert!(ok && out.contains("\"swagger\":\"2.0\""), "{head}"),
        Backend::Sandbox => assert!(
            (ok && out.contains("\"swagger\":\"2.0\"")) || (!ok && out.contains("NotFound")),
            "{head}"
        ),
    }
    let values = real_secret_values(&w);
    let out = w.ok(&["get", "--raw", "/api/v1/namespaces/dev/secrets"]);
    assert!(
        out.contains("\"kind\":\"SecretList\"") && out.contains("W21hc2tlZF0="),
        "{out}"
    );
    assert_no_secret_value("get --raw secrets", &out, &values);
    // The policy decides: nothing outside dev, and no rule for /metrics.
    let out = w.fails(&["get", "--raw", "/api/v1/namespaces/prod/configmaps"]);
    assert!(out.contains("Forbidden"), "{out}");
    let out = w.fails(&["get", "--raw", "/metrics"]);
    assert!(
        out.contains("Forbidden") && out.contains("/metrics"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// Real cluster only.

#[test]
fn operator_token_and_exec_kubeconfigs_work() {
    for credential in [Credential::Token, Credential::Exec] {
        let credential_name = format!("{credential:?}");
        let w = world_with(&credential_name, Backend::Real, POLICY, credential);
        let out = w.ok(&["get", "pods"]);
        assert!(out.contains("web-7d4b9c8f6-"), "{credential_name}: {out}");
        // The server sees the operator, whichever credential carried it.
        let out = w.fails(&["create", "configmap", "who-am-i", "-n", "default"]);
        assert!(
            out.contains("User \"kubeleash-operator\" cannot create"),
            "{credential_name}: {out}"
        );
    }
}

/// The proxy's front door on the real server: a cluster CA that does not match the server's
/// certificate gives the agent a 502 with a correlation id and nothing else (the operator's log
/// names the cluster and the untrusted certificate); an exec credential that is already expired
/// is fetched again for each request, and every request succeeds.
#[test]
fn a_wrong_ca_and_an_expired_exec_credential() {
    let c = cluster::cluster();
    let dir = home("front-door", Backend::Real);
    let other_ca = dir.join("other-ca.pem");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=not-the-cluster-ca", "-keyout"])
        .arg(dir.join("other-ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let token = c.var("KUBELEASH_CLUSTER_OPERATOR_TOKEN").to_string();
    let kubeconfig = |user: &str, ca: &Path| {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: wrong-ca-cluster\n  cluster:\n    server: {}\n    certificate-authority: {}\ncontexts:\n- name: c\n  context: {{cluster: wrong-ca-cluster, user: u, namespace: dev}}\ncurrent-context: c\nusers:\n- name: u\n  user:\n{user}",
            c.server(),
            ca.display()
        )
    };
    let wrong = dir.join("wrong-ca.kubeconfig");
    std::fs::write(
        &wrong,
        kubeconfig(&format!("    token: {token}\n"), &other_ca),
    )
    .unwrap();
    let w = world_with("wrong-ca", Backend::Real, POLICY, Credential::File(wrong));
    // kubectl shows only the status of a failed discovery; the Status itself says more.
    let out = w.fails(&["get", "configmaps"]);
    assert!(
        out.contains("InternalError") || out.contains("error on the server"),
        "{out}"
    );
    let raw = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--cacert"])
        .arg(w.home.join("proxy-ca.pem"))
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", w.token))
        .arg(format!(
            "{}/api/v1/namespaces/dev/configmaps",
            w.agent_server
        ))
        .output()
        .unwrap();
    let raw = String::from_utf8_lossy(&raw.stdout).into_owned();
    assert!(
        raw.ends_with("\n502") && raw.contains("correlation id"),
        "{raw}"
    );
    let out = format!("{out}{raw}");
    for leak in [
        token.as_str(),
        "127.0.0.1",
        "wrong-ca-cluster",
        "certificate",
        "not-the-cluster-ca",
    ] {
        assert!(!out.contains(leak), "the agent saw `{leak}`: {out}");
    }
    let log = std::fs::read_to_string(w.home.join("proxy.stderr")).unwrap();
    assert!(
        log.contains("correlation id") && log.contains("wrong-ca-cluster"),
        "{log}"
    );
    assert!(
        !log.contains(&token),
        "the operator's log shows the token: {log}"
    );

    // An exec plugin whose credential has already expired: run again for every request.
    let calls = dir.join("calls");
    let plugin = dir.join("expired-plugin.sh");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\necho call >> '{}'\nprintf '%s' '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"{token}\",\"expirationTimestamp\":\"2020-01-01T00:00:00Z\"}}}}'\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let exec = dir.join("expired-exec.kubeconfig");
    std::fs::write(
        &exec,
        kubeconfig(
            &format!(
                "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {}\n      interactiveMode: Never\n",
                plugin.display()
            ),
            Path::new(c.var("KUBELEASH_CLUSTER_CA")),
        ),
    )
    .unwrap();
    let w = world_with(
        "expired-exec",
        Backend::Real,
        POLICY,
        Credential::File(exec),
    );
    let before = std::fs::read_to_string(&calls)
        .unwrap_or_default()
        .lines()
        .count();
    for _ in 0..3 {
        let out = w.ok(&["get", "configmaps"]);
        assert!(out.contains("kube-root-ca.crt"), "{out}");
    }
    let after = std::fs::read_to_string(&calls)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(
        after >= before + 3,
        "the plugin ran {before} then {after} times"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_cluster_is_the_one_start_sh_describes() {
    let c = cluster::cluster();
    assert!(
        c.server().starts_with("https://127.0.0.1:"),
        "{}",
        c.server()
    );
    let (ok, out) = c.admin(&["get", "crd", "certificates.cert-manager.io", "-o", "name"]);
    assert!(ok, "{out}");
    let (ok, out) = c.kubectl(
        &c.operator_cert_kubeconfig(),
        &["auth", "can-i", "delete", "namespaces"],
    );
    assert!(!ok && out.lines().next() == Some("no"), "{out}");
    assert!(
        c.started_in < Duration::from_secs(120),
        "{:?}",
        c.started_in
    );
}

/// `kubeleash lint --kubeconfig` checks rules against what the real API server serves, read
/// with the operator's credential: the examples name only served resources; a typo, a
/// singular, and a CRD's resource in the wrong group are found.
#[test]
fn lint_checks_resources_against_the_real_servers_discovery() {
    let c = cluster::cluster();
    let kubeconfig = c.operator_cert_kubeconfig();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO_BIN_EXE_kubeleash"))
        .args(["lint", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg(root.join("examples/agent-policy.yaml"))
        .arg(root.join("examples/agents.yaml"))
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{said}");
    let dir = home("lint", Backend::Real);
    let bad = dir.join("typos.yaml");
    std::fs::write(
        &bad,
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    \
         - {name: typo, effect: allow, verbs: [get], apiGroups: [\"\"], resources: [pod, pods/logs], namespaces: [dev]}\n    \
         - {name: cert-in-core, effect: allow, verbs: [get], apiGroups: [\"\"], resources: [certificates], namespaces: [dev]}\n    \
         - {name: cert-manager, effect: allow, verbs: [get], apiGroups: [cert-manager.io], resources: [certificates], namespaces: [dev]}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kubeleash"))
        .args(["lint", "--json", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["code"].as_str().unwrap().to_string(),
                v["rule"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("never-matches".to_string(), "typo".to_string()),
            ("never-matches".to_string(), "cert-in-core".to_string()),
        ],
        "the CRD the cluster serves (cert-manager.io certificates) is not a finding"
    );
}
