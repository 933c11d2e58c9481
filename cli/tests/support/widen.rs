//! A `kubeleash proxy` whose held requests a person answers, in front of the sandbox or the
//! real kube-apiserver, for the widened-approval scenarios: the agent's kubectl, what is held
//! (`kubeleash approvals list --json`), the answers, and the record.
//!
//! Use it with `#[path = "support/widen.rs"] mod widen;` next to `support/process.rs` (as
//! `mod process`) and `support/cluster.rs` (as `mod cluster`).
//!
//! Synchronization is by what the proxy says, never by time: a kubectl command either finishes
//! (it went through, or was refused) or its request shows up in the held list, and
//! [`World::outcome`] waits for whichever comes first.

#![allow(dead_code, reason = "each test binary uses a part")]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster;
use crate::process::Guard;

const BIN: &str = env!("CARGO_BIN_EXE_kubeleash");

/// How long anything may take before the test gives up (a hang guard, not an assertion about
/// time): a held request is listed after its dry run (at most 10 s in the layer).
const PATIENCE: Duration = Duration::from_secs(60);

/// The upstream the proxy fronts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A fresh `kubeleash sandbox` for the world.
    Sandbox,
    /// The real kube-apiserver of this test binary, reached as kubeleash-operator.
    Real,
}

/// What a world's proxy is started with.
pub struct Setup<'a> {
    /// Short: it names the directory, which holds the approvals socket (about 100 bytes at most).
    pub name: &'a str,
    pub backend: Backend,
    pub policy: &'a str,
    /// More proxy flags (`--approvals` is the socket unless these name another channel).
    pub extra: &'a [&'a str],
    /// Environment for the proxy (a secret file).
    pub env: &'a [(&'a str, &'a Path)],
}

/// What became of a kubectl command: it finished, or its request is held.
pub enum Outcome {
    /// It finished: success, and stdout followed by stderr.
    Done(bool, String),
    /// It is held: the held request as listed, and the command, still waiting.
    Held(Value, JoinHandle<(bool, String)>),
}

/// One scenario's proxy, upstream and directory (removed when the scenario passed).
pub struct World {
    pub backend: Backend,
    pub home: PathBuf,
    pub socket: PathBuf,
    pub record: PathBuf,
    /// kubectl straight to the upstream with full rights: the judge of what is there.
    admin: PathBuf,
    proxy: Guard,
    _sandbox: Option<Guard>,
}

/// `kubectl ARGS` with `kubeconfig`: success, and stdout followed by stderr.
pub fn kubectl_with(kubeconfig: &Path, home: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .arg("--request-timeout=90s")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .env("KUBECACHEDIR", home.join("kube-cache"))
        .stdin(Stdio::null())
        .output()
        .expect("kubectl runs (install a 1.27-1.35 kubectl)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

impl World {
    /// Start the upstream (the sandbox) or take the real cluster, then the proxy in front of it
    /// as agent-1 (group ai-agents, namespace dev).
    pub fn start(setup: &Setup<'_>) -> World {
        crate::process::require_kubectl();
        let home = std::env::temp_dir().join(format!(
            "kl-w-{}-{}-{}",
            setup.name,
            match setup.backend {
                Backend::Sandbox => "s",
                Backend::Real => "r",
            },
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        let (sandbox, operator, admin) = match setup.backend {
            Backend::Sandbox => {
                let (guard, url) = crate::process::serve(
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
                (None, c.operator_cert_kubeconfig(), c.admin_kubeconfig())
            }
        };
        let policy = home.join("policy.yaml");
        std::fs::write(&policy, setup.policy).unwrap();
        let socket = home.join("approvals.sock");
        let record = home.join("session.jsonl");
        let p = |p: &Path| p.to_str().unwrap().to_string();
        let mut args: Vec<String> = [
            "proxy",
            "--policy",
            &p(&policy),
            "--kubeconfig",
            &p(&operator),
            "--listen",
            "127.0.0.1:0",
            "--record",
            &p(&record),
            "--user",
            "agent-1",
            "--group",
            "ai-agents",
            "--agent-kubeconfig",
            &p(&home.join("agent.kubeconfig")),
            "--agent-namespace",
            "dev",
            "--approval-timeout",
            "120",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !setup.extra.contains(&"--approvals") {
            args.extend(["--approvals".into(), "socket".into()]);
            args.extend(["--approvals-socket".into(), p(&socket)]);
        }
        args.extend(setup.extra.iter().map(|s| s.to_string()));
        let stderr = home.join("proxy.stderr");
        let mut cmd = Command::new(BIN);
        cmd.args(&args)
            .env_remove("KUBELEASH_WEBHOOK_SECRET")
            .env_remove("KUBELEASH_WEBHOOK_SECRET_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap());
        for (k, v) in setup.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let proxy = Guard(child);
        assert!(
            line.trim().starts_with("listening on https://127.0.0.1:"),
            "kubeleash proxy: unexpected first line {line:?}; stderr:\n{}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        World {
            backend: setup.backend,
            home,
            socket,
            record,
            admin,
            proxy,
            _sandbox: sandbox,
        }
    }

    /// kubectl as the agent, through the proxy.
    pub fn kubectl(&self, args: &[&str]) -> (bool, String) {
        kubectl_with(&self.home.join("agent.kubeconfig"), &self.home, args)
    }

    /// kubectl as the agent on a thread of its own (a held request waits for its answer).
    pub fn kubectl_meanwhile(&self, args: &[&str]) -> JoinHandle<(bool, String)> {
        let config = self.home.join("agent.kubeconfig");
        let home = self.home.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            kubectl_with(&config, &home, &args)
        })
    }

    /// kubectl straight to the upstream with full rights; must succeed. Its output.
    pub fn admin(&self, args: &[&str]) -> String {
        let (ok, out) = kubectl_with(&self.admin, &self.home, args);
        assert!(ok, "{:?}: upstream kubectl {args:?}: {out}", self.backend);
        out
    }

    /// A deployment `name` in dev with `replicas`, created upstream (not through kubeleash).
    pub fn deployment(&self, name: &str, replicas: u32) {
        self.admin(&[
            "create",
            "deployment",
            name,
            "--image=nginx:1.27",
            "-n",
            "dev",
            &format!("--replicas={replicas}"),
        ]);
    }

    /// What the upstream stores at `jsonpath` of `kind name` in dev.
    pub fn stored(&self, kind: &str, name: &str, jsonpath: &str) -> String {
        self.admin(&[
            "get",
            kind,
            name,
            "-n",
            "dev",
            "-o",
            &format!("jsonpath={jsonpath}"),
        ])
        .trim()
        .to_string()
    }

    /// `kubeleash approvals ARGS --socket SOCKET` as `user` (`USER` and `LOGNAME`): exit code,
    /// stdout, stderr.
    pub fn approvals_as(&self, user: &str, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(BIN)
            .arg("approvals")
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .env("USER", user)
            .env("LOGNAME", user)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `kubeleash approvals ARGS` as alice; must succeed. Its stdout.
    pub fn approvals(&self, args: &[&str]) -> String {
        let (code, out, err) = self.approvals_as("alice", args);
        assert_eq!(code, 0, "kubeleash approvals {args:?}: {out}{err}");
        out
    }

    /// The held requests now, as `kubeleash approvals list --json` lists them.
    pub fn pending(&self) -> Vec<Value> {
        let listed: Value = serde_json::from_str(&self.approvals(&["list", "--json"])).unwrap();
        listed["pending"].as_array().cloned().unwrap_or_default()
    }

    /// The held request whose JSON mentions `needle`, once it is held.
    pub fn held(&self, needle: &str) -> Value {
        let started = Instant::now();
        loop {
            if let Some(h) = self
                .pending()
                .into_iter()
                .find(|h| h.to_string().contains(needle))
            {
                return h;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "nothing held mentions {needle}; proxy stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Run kubectl as the agent until it finishes or its request (the held one mentioning
    /// `needle`) is held, whichever comes first.
    pub fn outcome(&self, args: &[&str], needle: &str) -> Outcome {
        let k = self.kubectl_meanwhile(args);
        let started = Instant::now();
        loop {
            if k.is_finished() {
                let (ok, out) = k.join().unwrap();
                return Outcome::Done(ok, out);
            }
            if let Some(h) = self
                .pending()
                .into_iter()
                .find(|h| h.to_string().contains(needle))
            {
                return Outcome::Held(h, k);
            }
            assert!(
                started.elapsed() < PATIENCE,
                "kubectl {args:?} neither finished nor was held; proxy stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// kubectl as the agent; it must go through without being held. Its output.
    pub fn through(&self, args: &[&str], needle: &str) -> String {
        match self.outcome(args, needle) {
            Outcome::Done(true, out) => out,
            Outcome::Done(false, out) => panic!("kubectl {args:?} failed: {out}"),
            Outcome::Held(h, _) => panic!("kubectl {args:?} was held, not let through: {h:#}"),
        }
    }

    /// kubectl as the agent; it must be held. The held request and the waiting command.
    pub fn held_by(&self, args: &[&str], needle: &str) -> (Value, JoinHandle<(bool, String)>) {
        match self.outcome(args, needle) {
            Outcome::Held(h, k) => (h, k),
            Outcome::Done(ok, out) => {
                panic!("kubectl {args:?} was not held (it finished, success {ok}): {out}")
            }
        }
    }

    /// kubectl as the agent; it must be held, and is denied (by alice) and fails.
    pub fn held_and_denied(&self, args: &[&str], needle: &str) -> String {
        let (h, k) = self.held_by(args, needle);
        let id = h["id"].as_str().unwrap();
        self.approvals(&["deny", id, "--reason", "not this one"]);
        let (ok, out) = k.join().unwrap();
        assert!(!ok && out.contains("not this one"), "{out}");
        id.to_string()
    }

    /// The proxy's stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.home.join("proxy.stderr")).unwrap_or_default()
    }

    /// Every record so far.
    pub fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    /// The records of approval `id`, polled for until `want` holds for them.
    pub fn records_of(&self, id: &str, want: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let recs: Vec<Value> = self
                .records()
                .into_iter()
                .filter(|r| r["decision"]["approvalId"] == id)
                .collect();
            if want(&recs) {
                return recs;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "the records of approval {id} are not as expected: {recs:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The approval record of `id` (written before the approved request goes out).
    pub fn approval_record(&self, id: &str) -> Value {
        self.records_of(id, |recs| recs.iter().any(|r| r["kind"] == "approval"))
            .into_iter()
            .find(|r| r["kind"] == "approval")
            .unwrap()
    }

    /// Stop the proxy as an operator would (SIGTERM: it closes its record), then check the
    /// record's chain with `kubeleash replay --verify`.
    pub fn stop_and_verify(&mut self) -> String {
        let pid = self.proxy.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let started = Instant::now();
        let status = loop {
            if let Some(s) = self.proxy.0.try_wait().unwrap() {
                break s;
            }
            assert!(started.elapsed() < PATIENCE, "the proxy did not exit");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{}", self.stderr());
        let out = Command::new(BIN)
            .args(["replay", "--verify"])
            .arg(&self.record)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubeleash replay --verify: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for World {
    /// The proxy stops; the directory goes once the scenario passed (kept, with the proxy's
    /// stderr and record, when it failed).
    fn drop(&mut self) {
        let _ = self.proxy.0.kill();
        let _ = self.proxy.0.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.home);
        }
    }
}
