//! `kubeleash mcp` end to end, over its two transports, against the sandbox and the real
//! kube-apiserver: the invariants a tool call must keep whatever the agent sends.
//!
//! - A tool call is decided as the requests it amounts to: what the policy refuses through
//!   kubectl it refuses here, with the rule; what it holds waits for a person.
//! - No argument changes the path a request lands on: a name is one path segment or the call
//!   is refused before anything is sent (checked against the record, which holds every request
//!   the layer saw).
//! - Nothing of the operator's credential reaches the agent, in any result or error.
//! - The tools listed are exactly those the policy lets the identity use.
//!
//! The official Python and TypeScript SDKs drive the same server in python/tests/test_mcp.py and
//! node/test/mcp.test.mjs; here the client is a few lines of JSON-RPC, so that a test can send
//! what no SDK would.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests"
)]

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/process.rs"]
mod process;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use serde_json::{Value, json};

const POLICY: &str = include_str!("../../examples/agent-policy.yaml");

/// A policy that lets the agent change config maps in dev and read its secrets, holds writes
/// to secrets and RBAC for a person, and allows discovery. (The real cluster's operator may
/// write secrets but no RBAC: a binding approved there is refused by the API server itself.)
const WRITE_POLICY: &str = r#"apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  rules:
    - {name: dev-config, effect: allow, subjects: {groups: [ai-agents]}, verbs: [get, list, create, update, patch, delete], resources: [configmaps], namespaces: [dev]}
    - {name: dev-secrets-read, effect: allow, subjects: {groups: [ai-agents]}, verbs: [get, list], resources: [secrets], namespaces: [dev]}
    - {name: secrets-need-a-human, effect: approve, verbs: [create, update, patch, delete], resources: [secrets], namespaces: [dev]}
    - {name: protect-production, effect: deny, reason: production is off limits to agents, verbs: [delete], resources: [namespaces], names: [prod]}
    - {name: rbac-needs-a-human, effect: approve, verbs: [create, update, patch, delete], apiGroups: [rbac.authorization.k8s.io], resources: [rolebindings, clusterrolebindings]}
    - {name: discovery, effect: allow, verbs: [get], nonResourceURLs: [/api, "/api/*", /apis, "/apis/*"]}
"#;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Sandbox,
    Real,
}

/// A scratch directory and the operator's kubeconfig for `backend`.
struct World {
    home: PathBuf,
    operator: PathBuf,
    /// The kubeconfig that sees what is really there (the sandbox's, or the cluster's admin).
    judge: PathBuf,
    _sandbox: Option<process::Guard>,
}

fn world(name: &str, backend: Backend) -> World {
    let home = std::env::temp_dir().join(format!(
        "kubeleash-mcp-{name}-{backend:?}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    match backend {
        Backend::Sandbox => {
            let guard = process::sandbox_for_operator(&home);
            let operator = home.join("operator.kubeconfig");
            World {
                home,
                judge: operator.clone(),
                operator,
                _sandbox: Some(guard),
            }
        }
        Backend::Real => {
            let c = cluster::cluster();
            World {
                home,
                operator: c.operator_token_kubeconfig(),
                judge: c.admin_kubeconfig(),
                _sandbox: None,
            }
        }
    }
}

impl World {
    /// kubectl with the judge's kubeconfig, past kubeleash.
    fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.judge)
            .args(args)
            .env("KUBECACHEDIR", self.home.join("kube-cache"))
            .stdin(Stdio::null())
            .output()
            .expect("kubectl runs");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn policy(&self, text: &str) -> PathBuf {
        let p = self.home.join("policy.yaml");
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// `kubeleash mcp` on stdio and a JSON-RPC client of it.
struct Session {
    child: process::Guard,
    stdin: ChildStdin,
    from: Receiver<Value>,
    next: u64,
    /// Notifications received so far.
    notes: Vec<Value>,
    stderr: PathBuf,
}

fn mcp_args<'a>(w: &'a World, policy: &'a Path, extra: &[&'a str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "mcp",
        "--policy",
        policy.to_str().unwrap(),
        "--kubeconfig",
        w.operator.to_str().unwrap(),
        "--user",
        "agent-1",
        "--group",
        "ai-agents",
        "--namespace",
        "dev",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

impl Session {
    fn start(w: &World, policy: &Path, extra: &[&str]) -> Session {
        let stderr = w.home.join(format!("mcp-{}.stderr", extra.len()));
        let mut child: Child = Command::new(env!("CARGO_BIN_EXE_kubeleash"))
            .args(mcp_args(w, policy, extra))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()))
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, from) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                    Err(e) => panic!("kubeleash mcp wrote a line that is not JSON ({e}): {line}"),
                }
            }
        });
        let mut s = Session {
            child: process::Guard(child),
            stdin,
            from,
            next: 0,
            notes: Vec::new(),
            stderr,
        };
        let init = s.request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "kubeleash-tests", "version": "1"}}),
        );
        assert_eq!(init["result"]["serverInfo"]["name"], "kubeleash", "{init}");
        s.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        s
    }

    fn send(&mut self, v: &Value) {
        writeln!(self.stdin, "{v}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn send_line(&mut self, raw: &str) {
        writeln!(self.stdin, "{raw}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The answer to the request with `id`, within 60 s (kept aside if it came while another
    /// was awaited).
    fn answer(&mut self, id: u64) -> Value {
        if let Some(i) = self.notes.iter().position(|m| m["id"] == json!(id)) {
            return self.notes.remove(i);
        }
        loop {
            let m = self
                .from
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| {
                    panic!(
                        "no answer to request {id} ({e}); stderr:\n{}",
                        std::fs::read_to_string(&self.stderr).unwrap_or_default()
                    )
                });
            if m["id"] == json!(id) {
                return m;
            }
            self.notes.push(m);
        }
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        self.answer(id)
    }

    /// `tools/call`: the result (an error answer panics).
    fn call(&mut self, tool: &str, args: Value) -> Value {
        let a = self.request("tools/call", json!({"name": tool, "arguments": args}));
        assert!(a.get("error").is_none(), "{tool} {a}");
        a["result"].clone()
    }

    fn tools(&mut self) -> Vec<Value> {
        let a = self.request("tools/list", json!({}));
        a["result"]["tools"].as_array().cloned().unwrap_or_default()
    }

    /// End the session as a client does (stdin closed), and wait for it to finish its record.
    fn close(mut self) {
        drop(self.stdin);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.stop();
    }
}

fn text(result: &Value) -> String {
    result["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_error(result: &Value) -> bool {
    result["isError"] == json!(true)
}

/// The records of a session: `kubeleash replay --verify` must pass; the JSON records.
fn records(record: &Path) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_kubeleash"))
        .args(["replay", "--verify", "--format", "json"])
        .arg(record)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the record does not verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r.get("request").is_some())
        .collect()
}

fn replay(record: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kubeleash"))
        .args(["replay", "--verify"])
        .arg(record)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn names(tools: &[Value]) -> Vec<String> {
    tools
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_tools_listed_are_those_the_policy_lets_the_identity_use() {
    let w = world("tools", Backend::Sandbox);
    let cases: [(&str, &[&str], &[&str]); 5] = [
        // The demo policy: reads in dev, RBAC writes held (create, update, patch, delete); no
        // rule reaches a scale subresource or patches a workload.
        (
            POLICY,
            &[],
            &[
                "get",
                "list",
                "events",
                "logs",
                "apply",
                "patch",
                "delete",
                "can_i",
                "api_resources",
            ],
        ),
        // Reads of pods only: no tool that writes, no events, no logs (pods/log is not pods),
        // no api_resources (no rule allows discovery).
        (
            "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - {name: read, effect: allow, verbs: [get, list], resources: [pods], namespaces: [dev]}\n",
            &[],
            &["get", "list", "can_i"],
        ),
        // Scaling deployments, held: scale is listed; patch and rollout_restart (which patch
        // the deployment itself, not its scale subresource) are not.
        (
            "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - {name: scale, effect: approve, verbs: [patch], apiGroups: [apps], resources: [deployments/scale]}\n",
            &[],
            &["scale", "can_i"],
        ),
        // Rules for another group only: the agent can use nothing but the questions.
        (
            "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - {name: ops, effect: allow, subjects: {groups: [ops]}, verbs: [\"*\"], resources: [\"*\"]}\n    - {name: no-delete, effect: deny, verbs: [delete], resources: [pods]}\n",
            &[],
            &["can_i"],
        ),
        // Observe mode refuses nothing: every tool.
        (
            "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules: []\n",
            &["--mode", "observe"],
            &[
                "get",
                "list",
                "events",
                "logs",
                "apply",
                "patch",
                "delete",
                "scale",
                "rollout_restart",
                "can_i",
                "api_resources",
            ],
        ),
    ];
    for (policy, extra, want) in cases {
        let p = w.policy(policy);
        let mut s = Session::start(&w, &p, extra);
        let tools = s.tools();
        assert_eq!(names(&tools), want, "{policy}");
        for t in &tools {
            let a = &t["annotations"];
            let name = t["name"].as_str().unwrap();
            let reads = ["get", "list", "events", "logs", "can_i", "api_resources"].contains(&name);
            assert_eq!(a["readOnlyHint"], json!(reads), "{t}");
            if name == "delete" {
                assert_eq!(a["destructiveHint"], json!(true), "{t}");
            }
            assert_eq!(
                t["inputSchema"]["additionalProperties"],
                json!(false),
                "{t}"
            );
            // No tool shows configuration, contexts or credentials.
            assert!(
                !name.contains("config") && !name.contains("context"),
                "{name}"
            );
        }
        s.close();
    }
    // The descriptions say what the policy does for this identity.
    let p = w.policy(POLICY);
    let mut s = Session::start(&w, &p, &[]);
    let tools = s.tools();
    let apply = tools.iter().find(|t| t["name"] == "apply").unwrap();
    let d = apply["description"].as_str().unwrap();
    assert!(
        d.contains("Needs a person's approval: rule \"rbac-needs-a-human\""),
        "{d}"
    );
    let get = tools.iter().find(|t| t["name"] == "get").unwrap();
    assert!(
        get["description"]
            .as_str()
            .unwrap()
            .contains("in namespace dev"),
        "{get}"
    );
    s.close();
}

#[test]
fn a_reloaded_policy_changes_the_tools_and_the_decisions() {
    let w = world("reload", Backend::Sandbox);
    let read = "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - {name: read, effect: allow, verbs: [get, list], resources: [configmaps], namespaces: [dev]}\n    - {name: discovery, effect: allow, verbs: [get], nonResourceURLs: [/api, \"/api/*\", /apis, \"/apis/*\"]}\n";
    let p = w.policy(read);
    let mut s = Session::start(&w, &p, &[]);
    assert!(!names(&s.tools()).contains(&"delete".to_string()));
    let cm = format!("mcp-reload-{}", std::process::id());
    let (ok, out) = w.kubectl(&["create", "configmap", &cm, "-n", "dev"]);
    assert!(ok, "{out}");
    let refused = s.call("delete", json!({"resource": "configmaps", "name": cm}));
    assert!(
        text(&refused).starts_with("kubeleash refused this:"),
        "{refused}"
    );
    // Not compiling: the previous policy stays, and nothing changes.
    std::fs::write(&p, "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec: {rules: [{name: x, effect: maybe}]}\n").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&s.stderr)
        .unwrap_or_default()
        .contains("the previous policy stays in force")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the broken policy was not noticed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!names(&s.tools()).contains(&"delete".to_string()));
    assert!(s.notes.is_empty(), "{:?}", s.notes);
    std::fs::write(
        &p,
        read.replace("verbs: [get, list]", "verbs: [get, list, delete]"),
    )
    .unwrap();
    // The client is told the list changed, and the new list and decisions follow the policy.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !s
        .notes
        .iter()
        .any(|n| n["method"] == "notifications/tools/list_changed")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no tools/list_changed: {:?}",
            s.notes
        );
        if let Ok(m) = s.from.recv_timeout(Duration::from_millis(200)) {
            s.notes.push(m);
        }
    }
    assert!(names(&s.tools()).contains(&"delete".to_string()));
    let deleted = s.call("delete", json!({"resource": "configmaps", "name": cm}));
    assert!(!is_error(&deleted), "{deleted}");
    let (ok, _) = w.kubectl(&["get", "configmap", &cm, "-n", "dev"]);
    assert!(!ok, "the config map is still there");
    s.close();
}

/// Names, namespaces and resource words an agent might send to reach another path.
const TRICKS: &[&str] = &[
    "../secrets/x",
    "..",
    ".",
    "a/b",
    "db-credentials/../../prod/secrets/web-tls",
    "%2e%2e",
    "%2F",
    "a%2fb",
    "web?labelSelector=x",
    "web#frag",
    "web\n",
    "web\r\nX-Evil: 1",
    "web\u{0}",
    "web\u{2215}x",
    "ＡＢＣ",
    "",
    " web",
    "web ",
    "\\..\\x",
];

#[test]
fn no_argument_changes_the_path_a_request_lands_on() {
    let w = world("paths", Backend::Sandbox);
    let p = w.policy(WRITE_POLICY);
    let record = w.home.join("paths.jsonl");
    let mut s = Session::start(&w, &p, &["--record", record.to_str().unwrap()]);
    let big = "a".repeat(1024 * 1024);
    let mut tricks: Vec<String> = TRICKS.iter().map(|s| s.to_string()).collect();
    tricks.push(big.clone());
    tricks.push("x".repeat(254));
    for t in &tricks {
        for (tool, args) in [
            ("get", json!({"resource": "configmaps", "name": t})),
            ("delete", json!({"resource": "configmaps", "name": t})),
            (
                "get",
                json!({"resource": "configmaps", "name": "app-config", "namespace": t}),
            ),
            ("get", json!({"resource": t, "name": "app-config"})),
            ("logs", json!({"name": t})),
            ("logs", json!({"name": "web", "container": t})),
            (
                "patch",
                json!({"resource": "configmaps", "name": t, "patch": {"data": {"a": "b"}}, "type": "merge"}),
            ),
            (
                "apply",
                json!({"manifest": format!("{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":{}}}}}", json!(t))}),
            ),
            (
                "apply",
                json!({"manifest": format!("{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"ok\",\"namespace\":{}}}}}", json!(t))}),
            ),
        ] {
            let r = s.call(tool, args.clone());
            assert!(is_error(&r), "{tool} {args} was not refused: {r}");
            let said = text(&r);
            assert!(
                said.starts_with("invalid arguments:") || said.contains("has no resource type"),
                "{tool} with {:?}: {said}",
                &t[..t.len().min(40)]
            );
            assert!(
                said.len() < 2048,
                "an error quotes at most a little of the input: {}",
                said.len()
            );
        }
    }
    // Arguments a tool does not take, and values of the wrong type.
    for (tool, args) in [
        (
            "get",
            json!({"resource": "configmaps", "name": "app-config", "path": "/api/v1/secrets"}),
        ),
        ("list", json!({"resource": "configmaps", "limit": "all"})),
        ("list", json!({"resource": "configmaps", "limit": 0})),
        (
            "scale",
            json!({"resource": "deployments", "name": "web", "replicas": -1}),
        ),
        (
            "patch",
            json!({"resource": "configmaps", "name": "app-config", "patch": 7}),
        ),
        (
            "patch",
            json!({"resource": "configmaps", "name": "app-config", "patch": {}, "type": "xml"}),
        ),
        ("apply", json!({"manifest": "kind: [unclosed"})),
        ("apply", json!({"manifest": big})),
    ] {
        let r = s.call(tool, args.clone());
        assert!(is_error(&r), "{tool} {args}: {r}");
    }
    // An unknown tool and a malformed message are protocol errors, and the session goes on.
    let a = s.request(
        "tools/call",
        json!({"name": "configuration_view", "arguments": {}}),
    );
    assert_eq!(a["error"]["code"], json!(-32602), "{a}");
    s.send_line("{\"jsonrpc\": \"2.0\", \"id\": 9999, \"method\": \"tools/call\", \"params\": ");
    s.send_line("not json at all");
    let ok = s.call(
        "get",
        json!({"resource": "configmaps", "name": "app-config"}),
    );
    assert!(!is_error(&ok), "{ok}");
    s.close();
    // Every request that reached the layer is discovery or the one good read.
    for r in records(&record) {
        let target = r["request"]["target"].as_str().unwrap_or_default();
        assert!(
            target.starts_with("/api/v1?")
                || target == "/api/v1"
                || target == "/apis"
                || target.starts_with("/apis/") && target.matches('/').count() == 3
                || target == "/api/v1/namespaces/dev/configmaps/app-config",
            "a request no call should have sent: {r}"
        );
    }
}

fn session_on(b: Backend) {
    let w = world("session", b);
    let p = w.policy(WRITE_POLICY);
    let record = w.home.join("session.jsonl");
    let socket = w.home.join("approvals.sock");
    let mut s = Session::start(
        &w,
        &p,
        &[
            "--record",
            record.to_str().unwrap(),
            "--approvals",
            "socket",
            "--approvals-socket",
            socket.to_str().unwrap(),
            "--approvals-nonblocking=1",
        ],
    );
    // Reads, and a Secret comes back masked.
    let list = s.call("list", json!({"resource": "cm"}));
    assert!(!is_error(&list), "{list}");
    assert!(
        text(&list).contains("\"ConfigMapList\"") || list["structuredContent"]["items"].is_array(),
        "{list}"
    );
    let (ok, real) = w.kubectl(&["get", "secret", "db-credentials", "-n", "dev", "-o", "json"]);
    assert!(ok, "{real}");
    let real: Value = serde_json::from_str(&real).unwrap();
    let secret = s.call(
        "get",
        json!({"resource": "secret", "name": "db-credentials"}),
    );
    assert!(!is_error(&secret), "{secret}");
    let shown = serde_json::to_string(&secret).unwrap();
    for (k, v) in real["data"].as_object().unwrap() {
        let v = v.as_str().unwrap();
        assert!(
            !shown.contains(v),
            "the value of {k} came back unmasked: {shown}"
        );
    }
    assert!(shown.contains("masked"), "{shown}");
    // A write the policy allows.
    let cm = format!("mcp-session-{}", std::process::id());
    let applied = s.call(
        "apply",
        json!({"manifest": format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {cm}\ndata:\n  answer: y\n")}),
    );
    assert!(!is_error(&applied), "{applied}");
    let (ok, out) = w.kubectl(&[
        "get",
        "configmap",
        &cm,
        "-n",
        "dev",
        "-o",
        "jsonpath={.data.answer}",
    ]);
    assert!(ok && out == "y", "{out}");
    // Refused with the rule, and nothing happened.
    let refused = s.call("delete", json!({"resource": "namespaces", "name": "prod"}));
    assert!(is_error(&refused), "{refused}");
    let said = text(&refused);
    assert!(
        said.starts_with("kubeleash refused this:") && said.contains("protect-production"),
        "{said}"
    );
    assert_eq!(
        refused["structuredContent"]["status"]["code"],
        json!(403),
        "{refused}"
    );
    let (ok, out) = w.kubectl(&["get", "namespace", "prod"]);
    assert!(ok, "prod is gone: {out}");
    // Held: pending with an id, nothing done until a person approves, done once after.
    let secret = format!("mcp-held-{}", std::process::id());
    let manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {secret}}}\nstringData: {{token: not-for-agents}}\n"
    );
    let held = s.call(
        "apply",
        json!({"manifest": manifest, "reason": "rotating the token"}),
    );
    let id = pending(&held);
    let (ok, _) = w.kubectl(&["get", "secret", &secret, "-n", "dev"]);
    assert!(!ok, "the secret exists before anyone approved it");
    answer(&socket, &["approve", &id]);
    let done = again(
        &mut s,
        &id,
        json!({"manifest": manifest, "reason": "rotating the token"}),
    );
    assert!(!is_error(&done), "{done}");
    assert!(
        !serde_json::to_string(&done)
            .unwrap()
            .contains("not-for-agents"),
        "{done}"
    );
    let (ok, out) = w.kubectl(&["get", "secret", &secret, "-n", "dev"]);
    assert!(ok, "{out}");
    // Binding cluster-admin: held; refused by a person, nothing bound.
    let crb = format!("mcp-agent-admin-{}", std::process::id());
    let binding = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: {crb}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}}\nsubjects: [{{kind: User, name: agent-1}}]\n"
    );
    let held = s.call("apply", json!({"manifest": binding}));
    let id = pending(&held);
    answer(&socket, &["deny", &id, "--reason", "not today"]);
    let refused = again(&mut s, &id, json!({"manifest": binding}));
    assert!(
        is_error(&refused) && text(&refused).contains("not today"),
        "{refused}"
    );
    let (ok, _) = w.kubectl(&["get", "clusterrolebinding", &crb]);
    assert!(!ok, "a refused binding exists");
    // Approved (another binding: the refused one stays refused for the approval timeout), it
    // reaches the API server: the sandbox binds it; the real server refuses the operator's
    // credential, which may not write RBAC, and says so as the API server.
    let crb2 = format!("mcp-agent-admin-2-{}", std::process::id());
    let binding = binding.replace(&crb, &crb2);
    let held = s.call(
        "apply",
        json!({"manifest": binding, "reason": "approved this time"}),
    );
    let id = pending(&held);
    answer(&socket, &["approve", &id]);
    let after = again(
        &mut s,
        &id,
        json!({"manifest": binding, "reason": "approved this time"}),
    );
    let (bound, out) = w.kubectl(&["get", "clusterrolebinding", &crb2]);
    match b {
        Backend::Sandbox => assert!(!is_error(&after) && bound, "{after} {out}"),
        Backend::Real => {
            assert!(!bound, "{out}");
            let said = text(&after);
            assert!(
                said.starts_with("the API server answered 403 Forbidden"),
                "{said}"
            );
            assert!(said.contains("kubeleash-operator"), "{said}");
        }
    }
    // The questions are answered from the policy.
    let can = s.call(
        "can_i",
        json!({"verb": "create", "resource": "clusterrolebindings"}),
    );
    assert_eq!(
        can["structuredContent"]["needsApproval"],
        json!(true),
        "{can}"
    );
    s.close();
    // The record verifies and replays as kubectl.
    let shown = replay(&record);
    for line in [
        "kubectl get configmaps -n dev",
        "kubectl get secret db-credentials -n dev",
        "kubectl apply --server-side",
        "kubectl delete namespace prod",
        "kubectl auth can-i create clusterrolebindings.rbac.authorization.k8s.io",
    ] {
        assert!(shown.contains(line), "no `{line}` in the replay:\n{shown}");
    }
    let _ = w.kubectl(&["delete", "clusterrolebinding", &crb2]);
    let _ = w.kubectl(&["delete", "secret", &secret, "-n", "dev"]);
    let _ = w.kubectl(&["delete", "configmap", &cm, "-n", "dev"]);
}

/// The approval id of a call answered "held" (non-blocking approvals).
fn pending(held: &Value) -> String {
    assert!(is_error(held), "{held}");
    assert_eq!(
        held["structuredContent"]["approval"]["state"], "pending",
        "{held}"
    );
    let id = held["structuredContent"]["approval"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text(held).contains(&id), "{held}");
    id
}

/// The same `apply` call made again, as the pending result tells an agent to, until it is no
/// longer pending on approval `id` (the answer reaches the held request just after
/// `kubeleash approvals` returns): at most 60 s.
fn again(s: &mut Session, id: &str, args: Value) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = s.call("apply", args.clone());
        let still = r["structuredContent"]["approval"]["id"] == json!(id);
        if !still || std::time::Instant::now() > deadline {
            return r;
        }
        let wait = r["structuredContent"]["approval"]["retryAfterSeconds"]
            .as_u64()
            .unwrap_or(1);
        std::thread::sleep(Duration::from_secs(wait));
    }
}

/// `kubeleash approvals --socket SOCKET ARGS`, which must succeed.
fn answer(socket: &Path, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_kubeleash"))
        .arg("approvals")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_session_on_the_sandbox() {
    session_on(Backend::Sandbox);
}

#[test]
fn a_session_on_the_real_api_server() {
    session_on(Backend::Real);
}

#[test]
fn a_held_call_waits_with_progress_until_a_person_answers() {
    let w = world("held", Backend::Real);
    let p = w.policy(WRITE_POLICY);
    let socket = w.home.join("approvals.sock");
    let mut s = Session::start(
        &w,
        &p,
        &[
            "--approvals",
            "socket",
            "--approvals-socket",
            socket.to_str().unwrap(),
        ],
    );
    let secret = format!("mcp-progress-{}", std::process::id());
    let manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {secret}}}\nstringData: {{token: not-for-agents}}\n"
    );
    s.next += 1;
    let id = s.next;
    s.send(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "apply", "arguments": {"manifest": manifest}, "_meta": {"progressToken": "p-1"}}}));
    // The first progress notification names the approval.
    let approval = loop {
        let m = s
            .from
            .recv_timeout(Duration::from_secs(60))
            .expect("a progress notification");
        assert!(
            m.get("id").is_none(),
            "answered before anyone approved: {m}"
        );
        if m["method"] == "notifications/progress" {
            assert_eq!(m["params"]["progressToken"], "p-1", "{m}");
            let msg = m["params"]["message"].as_str().unwrap().to_string();
            let id = msg
                .split_whitespace()
                .find(|w| w.len() == 32 && w.bytes().all(|b| b.is_ascii_hexdigit()))
                .unwrap_or_else(|| panic!("no approval id in {msg}"))
                .to_string();
            break id;
        }
    };
    let (ok, _) = w.kubectl(&["get", "secret", &secret, "-n", "dev"]);
    assert!(!ok, "the secret exists before anyone approved it");
    answer(&socket, &["approve", &approval]);
    let a = s.answer(id);
    assert!(!is_error(&a["result"]), "{a}");
    let (ok, out) = w.kubectl(&["get", "secret", &secret, "-n", "dev"]);
    assert!(ok, "{out}");
    let _ = w.kubectl(&["delete", "secret", &secret, "-n", "dev"]);
    s.close();
}

#[test]
fn logs_come_back_with_the_leaked_token_masked() {
    // The real cluster has no kubelet to serve logs: the sandbox's seeded pod leaks a token.
    let w = world("logs", Backend::Sandbox);
    let p = w.policy(POLICY);
    let mut s = Session::start(&w, &p, &[]);
    let pods = s.call(
        "list",
        json!({"resource": "pods", "labelSelector": "app=web"}),
    );
    let names: Vec<String> = pods["structuredContent"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    // The pod whose log leaks a token, and the token, as the API server serves them.
    let (pod, jwt) = names
        .iter()
        .find_map(|pod| {
            let (ok, raw) = w.kubectl(&["logs", "-n", "dev", pod]);
            assert!(ok, "{raw}");
            raw.split(|c: char| c.is_whitespace() || c == '"' || c == '=')
                .find(|w| w.starts_with("eyJ") && w.matches('.').count() == 2)
                .map(|jwt| (pod.clone(), jwt.to_string()))
        })
        .unwrap_or_else(|| panic!("no seeded web pod leaks a token in its log: {names:?}"));
    let logs = s.call("logs", json!({"name": pod}));
    assert!(!is_error(&logs), "{logs}");
    let shown = serde_json::to_string(&logs).unwrap();
    assert!(!shown.contains(&jwt), "the token came back: {shown}");
    assert!(shown.contains("masked"), "{shown}");
    s.close();
}

#[test]
fn nothing_of_the_operators_credential_reaches_the_agent() {
    let w = world("credential", Backend::Real);
    let config = std::fs::read_to_string(&w.operator).unwrap();
    let token = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("the operator's kubeconfig holds a token")
        .trim_matches('"')
        .to_string();
    assert!(token.len() >= 16, "{token}");
    let p = w.policy(POLICY);
    let mut s = Session::start(&w, &p, &[]);
    let mut seen = String::new();
    seen.push_str(&serde_json::to_string(&s.tools()).unwrap());
    for (tool, args) in [
        ("api_resources", json!({})),
        (
            "get",
            json!({"resource": "secret", "name": "db-credentials"}),
        ),
        (
            "get",
            json!({"resource": "secret", "name": "deployer-token"}),
        ),
        ("list", json!({"resource": "secrets"})),
        (
            "list",
            json!({"resource": "secrets", "allNamespaces": true}),
        ),
        ("get", json!({"resource": "nope", "name": "x"})),
        ("get", json!({"resource": "pods", "name": "does-not-exist"})),
        ("delete", json!({"resource": "namespaces", "name": "prod"})),
        ("can_i", json!({"verb": "get", "resource": "secrets"})),
        ("logs", json!({"name": "does-not-exist"})),
        ("events", json!({})),
    ] {
        let r = s.call(tool, args);
        seen.push_str(&serde_json::to_string(&r).unwrap());
    }
    assert!(
        !seen.contains(&token),
        "the operator's token reached the agent"
    );
    assert!(
        !seen.contains(w.operator.to_str().unwrap()),
        "the kubeconfig's path reached the agent"
    );
    assert!(
        !seen.contains("client-certificate") && !seen.contains("BEGIN"),
        "kubeconfig material reached the agent"
    );
    s.close();
}

/// One HTTP/1.1 request to `addr`: the status code and body.
fn http(addr: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "POST /mcp HTTP/1.1\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    c.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

#[test]
fn over_http_only_the_agent_with_the_token_gets_in() {
    let w = world("http", Backend::Sandbox);
    let p = w.policy(POLICY);
    let token_file = w.home.join("agent.token");
    let args = mcp_args(
        &w,
        &p,
        &[
            "--listen",
            "127.0.0.1:0",
            "--agent-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_guard, url) = process::serve(&args, Some(&w.home.join("http.stderr")));
    let addr = url
        .strip_prefix("http://")
        .and_then(|u| u.strip_suffix("/mcp"))
        .unwrap_or_else(|| panic!("{url}"))
        .to_string();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o077,
        0,
        "the token file is readable by others: {mode:o}"
    );
    let token = std::fs::read_to_string(&token_file).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let base = [
        ("Host", addr.as_str()),
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
    ];
    let with = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
        base.iter()
            .chain(extra.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let send = |hs: Vec<(String, String)>| {
        let hs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        http(&addr, &hs, init)
    };
    let (code, out) = send(with(&[("Authorization", &bearer)]));
    assert_eq!(code, 200, "{out}");
    assert!(out.contains("\"serverInfo\""), "{out}");
    let (code, out) = send(with(&[]));
    assert_eq!(code, 401, "no token: {out}");
    let wrong = format!("Bearer kubeleash-{}", "0".repeat(64));
    let (code, out) = send(with(&[("Authorization", &wrong)]));
    assert_eq!(code, 401, "a wrong token: {out}");
    let (code, out) = send(with(&[
        ("Authorization", &bearer),
        ("Origin", "http://evil.example"),
    ]));
    assert_eq!(code, 403, "a web page: {out}");
    let evil: Vec<(String, String)> = [
        ("Host", "evil.example"),
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
        ("Authorization", bearer.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (code, out) = send(evil);
    assert_eq!(code, 403, "DNS rebinding: {out}");
    assert!(!out.contains(token.trim()), "a refusal quotes the token");
}

/// One JSON-RPC exchange over streamable HTTP: the status, the session id the server gave (if
/// any), and the JSON-RPC message answering `id` (from a JSON body or an event stream).
fn rpc(addr: &str, headers: &[(&str, &str)], body: &Value) -> (u16, Option<String>, Value) {
    let body = body.to_string();
    let mut hs: Vec<(&str, &str)> = vec![
        ("Host", addr),
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
    ];
    hs.extend_from_slice(headers);
    let (code, raw) = http(addr, &hs, &body);
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let session = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .starts_with("mcp-session-id:")
            .then(|| l.split_once(':').map(|(_, v)| v.trim().to_string()))
            .flatten()
    });
    let answer = rest
        .lines()
        .filter_map(|l| {
            serde_json::from_str::<Value>(l.strip_prefix("data:").unwrap_or(l).trim()).ok()
        })
        .find(|m| m.get("id").is_some())
        .unwrap_or(Value::Null);
    (code, session, answer)
}

/// A token for `sub` in `groups`, signed by the test issuer's key (cli/src/proxy/testdata).
fn oidc_token(sub: &str, groups: &[&str], exp_from_now: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({"iss": "https://issuer.example", "aud": "kubeleash", "sub": sub, "groups": groups, "exp": now + exp_from_now});
    let key = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/proxy/testdata/rsa_a.pem"
    ))
    .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("test".into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(key.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[test]
fn over_http_with_oidc_each_token_gets_its_own_tools_and_decisions() {
    let w = world("oidc", Backend::Sandbox);
    let public: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/proxy/testdata/public.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let jwks = json!({"keys": [{"kty": "RSA", "kid": "test", "alg": "RS256", "use": "sig", "n": public["rsa_a"]["n"], "e": public["rsa_a"]["e"]}]});
    let jwks_path = w.home.join("jwks.json");
    std::fs::write(&jwks_path, jwks.to_string()).unwrap();
    // Agents read config maps in dev; ops may also delete them.
    let p = w.policy(
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - {name: agents-read, effect: allow, subjects: {groups: [ai-agents, ops]}, verbs: [get, list], resources: [configmaps], namespaces: [dev]}\n    - {name: ops-delete, effect: allow, subjects: {groups: [ops]}, verbs: [delete], resources: [configmaps], namespaces: [dev]}\n    - {name: discovery, effect: allow, verbs: [get], nonResourceURLs: [/api, \"/api/*\", /apis, \"/apis/*\"]}\n",
    );
    let args: Vec<String> = [
        "mcp",
        "--policy",
        p.to_str().unwrap(),
        "--kubeconfig",
        w.operator.to_str().unwrap(),
        "--namespace",
        "dev",
        "--listen",
        "127.0.0.1:0",
        "--oidc-issuer",
        "https://issuer.example",
        "--oidc-audience",
        "kubeleash",
        "--oidc-jwks",
        jwks_path.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_guard, url) = process::serve(&args, Some(&w.home.join("oidc.stderr")));
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_string();
    let session_for = |token: &str| -> (String, String) {
        let bearer = format!("Bearer {token}");
        let (code, session, init) = rpc(
            &addr,
            &[("Authorization", &bearer)],
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}),
        );
        assert_eq!(code, 200, "{init}");
        let session = session.expect("a session id");
        let (code, _, _) = rpc(
            &addr,
            &[("Authorization", &bearer), ("Mcp-Session-Id", &session)],
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        );
        assert!(code == 202 || code == 200, "{code}");
        (bearer, session)
    };
    let call = |who: &(String, String), method: &str, params: Value| -> Value {
        let (code, _, answer) = rpc(
            &addr,
            &[("Authorization", &who.0), ("Mcp-Session-Id", &who.1)],
            &json!({"jsonrpc": "2.0", "id": 2, "method": method, "params": params}),
        );
        assert_eq!(code, 200, "{answer}");
        answer
    };
    let agent = session_for(&oidc_token("agent-7", &["ai-agents"], 600));
    let ops = session_for(&oidc_token("ops-1", &["ops"], 600));
    let tools = |who| {
        names(
            call(who, "tools/list", json!({}))["result"]["tools"]
                .as_array()
                .unwrap(),
        )
    };
    assert!(
        !tools(&agent).contains(&"delete".to_string()),
        "{:?}",
        tools(&agent)
    );
    assert!(
        tools(&ops).contains(&"delete".to_string()),
        "{:?}",
        tools(&ops)
    );
    let (ok, out) = w.kubectl(&["create", "configmap", "mcp-oidc", "-n", "dev"]);
    assert!(ok, "{out}");
    let del =
        json!({"name": "delete", "arguments": {"resource": "configmaps", "name": "mcp-oidc"}});
    let refused = call(&agent, "tools/call", del.clone());
    assert_eq!(refused["result"]["isError"], json!(true), "{refused}");
    let (ok, _) = w.kubectl(&["get", "configmap", "mcp-oidc", "-n", "dev"]);
    assert!(ok, "the agent's refused delete deleted it");
    let done = call(&ops, "tools/call", del);
    assert_ne!(done["result"]["isError"], json!(true), "{done}");
    let (ok, _) = w.kubectl(&["get", "configmap", "mcp-oidc", "-n", "dev"]);
    assert!(!ok, "ops could not delete it");
    // A session is no identity: another token in the agent's session is decided as its own,
    // and a token that proves nothing gets nowhere.
    let swapped = (ops.0.clone(), agent.1.clone());
    assert!(tools(&swapped).contains(&"delete".to_string()));
    for bad in [oidc_token("agent-7", &["ops"], -600), "not-a-token".into()] {
        let (code, _, answer) = rpc(
            &addr,
            &[
                ("Authorization", &format!("Bearer {bad}")),
                ("Mcp-Session-Id", &agent.1),
            ],
            &json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {}}),
        );
        assert_eq!(code, 401, "{answer}");
    }
}

#[test]
fn each_held_call_is_told_the_approval_of_its_own_request() {
    let w = world("ids", Backend::Sandbox);
    let p = w.policy(
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - {name: config-needs-a-human, effect: approve, verbs: [patch], resources: [configmaps], namespaces: [dev]}\n    - {name: discovery, effect: allow, verbs: [get], nonResourceURLs: [/api, \"/api/*\", /apis, \"/apis/*\"]}\n",
    );
    let socket = w.home.join("approvals.sock");
    let mut s = Session::start(
        &w,
        &p,
        &[
            "--approvals",
            "socket",
            "--approvals-socket",
            socket.to_str().unwrap(),
        ],
    );
    // Three calls on one object: two different changes, and the first again (which waits on
    // the first's answer rather than asking a second time).
    let calls = [("a", "first"), ("b", "second"), ("c", "first")];
    for (i, (token, which)) in calls.iter().enumerate() {
        s.send(&json!({"jsonrpc": "2.0", "id": 100 + i, "method": "tools/call", "params": {
            "name": "patch",
            "arguments": {"resource": "configmaps", "name": "app-config", "type": "merge", "patch": {"metadata": {"labels": {"which": which}}}},
            "_meta": {"progressToken": token},
        }}));
        // One at a time, so that "c" comes after "a" is held.
        if *token != "c" {
            held_listing(&socket, &format!("\"which\":\"{which}\""));
        }
    }
    let mut told: std::collections::HashMap<String, String> = Default::default();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !(told.contains_key("a") && told.contains_key("b")) {
        assert!(
            std::time::Instant::now() < deadline,
            "not told: {told:?} {:?}",
            s.notes
        );
        let Ok(m) = s.from.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        assert!(m.get("id").is_none(), "answered before anyone did: {m}");
        if m["method"] == "notifications/progress" {
            let token = m["params"]["progressToken"].as_str().unwrap().to_string();
            let msg = m["params"]["message"].as_str().unwrap();
            if let Some(id) = msg
                .split_whitespace()
                .find(|w| w.len() == 32 && w.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                told.entry(token).or_insert_with(|| id.to_string());
            }
        }
    }
    // Each id is the one whose held request carries that call's own change.
    for (token, which) in [("a", "first"), ("b", "second")] {
        let held = held_listing(&socket, &format!("\"which\":\"{which}\""));
        assert_eq!(
            held["id"].as_str(),
            Some(told[token].as_str()),
            "{token}: {held}"
        );
    }
    assert!(
        !told.contains_key("c") || told["c"] == told["a"],
        "{told:?}"
    );
    answer(&socket, &["deny", &told["a"], "--reason", "no"]);
    answer(&socket, &["deny", &told["b"], "--reason", "no"]);
    for id in [100, 101, 102] {
        let a = s.answer(id);
        assert_eq!(a["result"]["isError"], json!(true), "{a}");
    }
    s.close();
}

/// The held request (`kubeleash approvals list --json`) whose body mentions `needle`, within 60 s.
fn held_listing(socket: &Path, needle: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new(env!("CARGO_BIN_EXE_kubeleash"))
            .args(["approvals", "list", "--json", "--socket"])
            .arg(socket)
            .output()
            .unwrap();
        let listed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if let Some(h) = listed["pending"].as_array().and_then(|a| {
            a.iter()
                .find(|h| h["body"].as_str().is_some_and(|b| b.contains(needle)))
        }) {
            return h.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no held body mentions {needle}: {listed}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An API server that repeats the bearer token it was sent (bare, not as `Bearer ...`, which
/// the masker's detectors know) in every answer: discovery for config maps, a ConfigMap holding
/// it, and a 403 whose message quotes it. Its address.
fn echoing_upstream() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(c.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let mut token = String::new();
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h
                            .strip_prefix("authorization: ")
                            .or_else(|| h.strip_prefix("Authorization: "))
                        {
                            token = v.trim().trim_start_matches("Bearer ").to_string();
                        }
                    }
                    let (code, body) = match target.split('?').next().unwrap_or("") {
                        "/api/v1" => (
                            200,
                            json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [{"name": "configmaps", "singularName": "configmap", "namespaced": true, "kind": "ConfigMap", "verbs": ["get", "list"], "shortNames": ["cm"]}]}),
                        ),
                        "/apis" => (200, json!({"kind": "APIGroupList", "groups": []})),
                        "/api/v1/namespaces/dev/configmaps/echo" => (
                            200,
                            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "echo", "namespace": "dev", "annotations": {"note": format!("you sent {token} to me")}}}),
                        ),
                        _ => (
                            403,
                            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403, "reason": "Forbidden", "message": format!("token {token} may not do that")}),
                        ),
                    };
                    let body = body.to_string();
                    let _ = write!(
                        c,
                        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                }
            });
        }
    });
    addr
}

#[test]
fn an_upstream_that_repeats_the_operators_token_shows_the_agent_stars() {
    let home = std::env::temp_dir().join(format!("kubeleash-mcp-echo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let token = "opaqueOperatorTok3n9x7Zq";
    let upstream = echoing_upstream();
    let operator = home.join("operator.kubeconfig");
    std::fs::write(
        &operator,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://{upstream}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u, namespace: dev}}\ncurrent-context: c\nusers:\n- name: u\n  user: {{token: {token}}}\n"),
    )
    .unwrap();
    let w = World {
        home: home.clone(),
        operator: operator.clone(),
        judge: operator,
        _sandbox: None,
    };
    let p = w.policy(POLICY);
    let mut s = Session::start(&w, &p, &[]);
    let got = s.call("get", json!({"resource": "configmaps", "name": "echo"}));
    let refused = s.call("get", json!({"resource": "configmaps", "name": "other"}));
    let shown = format!("{got}{refused}");
    assert!(
        shown.contains("you sent") && shown.contains("may not do that"),
        "{shown}"
    );
    assert!(
        !shown.contains(token),
        "the operator's token reached the agent: {shown}"
    );
    assert!(shown.contains(&"*".repeat(token.len())), "{shown}");
    s.close();
}
