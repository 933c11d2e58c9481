//! A `kubeleash proxy` in front of any upstream, with held writes answered on its approvals
//! socket: the agent's kubectl, what the approver is shown (`kubeleash approvals list --json`),
//! the answers, the record, and every form a masked value could leak in.
//!
//! Use it with `#[path = "support/approvals.rs"] mod approvals;` next to `support/process.rs`
//! (as `mod process`). Each [`Proxy`] has a directory of its own, removed when the test passed.

#![allow(dead_code, reason = "each test binary uses a part")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use crate::process::{Guard, serve};

const BIN: &str = env!("CARGO_BIN_EXE_kubeleash");

/// How long a held request may take to be listed: its dry run (at most 10 s in the layer)
/// comes first.
const HELD_WITHIN: Duration = Duration::from_secs(60);

/// A fresh directory for one test.
pub fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kubeleash-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `kubectl ARGS` with `kubeconfig` (and `home` as HOME and cache): success, stdout, stderr.
pub fn kubectl3(kubeconfig: &Path, home: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("kubectl")
        .arg("--request-timeout=60s")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .env("KUBECACHEDIR", home.join("kube-cache"))
        .stdin(Stdio::null())
        .output()
        .expect("kubectl runs (install a 1.27-1.35 kubectl)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `kubeleash proxy --approvals socket`, its agent kubeconfig and its record.
pub struct Proxy {
    pub home: PathBuf,
    pub socket: PathBuf,
    pub record: PathBuf,
    guard: Guard,
}

/// What the proxy is started with.
pub struct Setup<'a> {
    /// The directory's name (under the temporary directory).
    pub name: &'a str,
    pub policy: &'a str,
    /// The credential kubeleash uses upstream.
    pub operator_kubeconfig: &'a Path,
    /// The agent's default namespace.
    pub namespace: &'a str,
    /// More flags (`--approvals` is socket unless these say otherwise).
    pub extra: &'a [&'a str],
    /// Environment for the proxy (a webhook secret file).
    pub env: &'a [(&'a str, &'a Path)],
}

impl Proxy {
    /// Start the proxy as agent-1 (group ai-agents) with `setup`; an approvals socket unless
    /// `extra` names another channel.
    pub fn start(setup: &Setup<'_>) -> Proxy {
        let home = fresh_dir(setup.name);
        let policy = home.join("policy.yaml");
        std::fs::write(&policy, setup.policy).unwrap();
        let socket = home.join("approvals.sock");
        let record = home.join("session.jsonl");
        let agent = home.join("agent.kubeconfig");
        let p = |p: &Path| p.to_str().unwrap().to_string();
        let mut args: Vec<String> = [
            "proxy",
            "--policy",
            &p(&policy),
            "--kubeconfig",
            &p(setup.operator_kubeconfig),
            "--listen",
            "127.0.0.1:0",
            "--record",
            &p(&record),
            "--user",
            "agent-1",
            "--group",
            "ai-agents",
            "--agent-kubeconfig",
            &p(&agent),
            "--agent-namespace",
            setup.namespace,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !setup.extra.contains(&"--approval-timeout") {
            args.extend(["--approval-timeout".into(), "120".into()]);
        }
        if !setup.extra.contains(&"--approvals") {
            args.extend(["--approvals".into(), "socket".into()]);
            args.extend(["--approvals-socket".into(), p(&socket)]);
        }
        args.extend(setup.extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stderr = home.join("proxy.stderr");
        let (guard, url) = if setup.env.is_empty() {
            serve(&args, Some(&stderr))
        } else {
            serve_with_env(&args, setup.env, &stderr)
        };
        assert!(url.starts_with("https://127.0.0.1:"), "{url}");
        Proxy {
            home,
            socket,
            record,
            guard,
        }
    }

    pub fn agent_kubeconfig(&self) -> PathBuf {
        self.home.join("agent.kubeconfig")
    }

    /// kubectl as the agent, through the proxy: success, and stdout followed by stderr.
    pub fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let (ok, out, err) = kubectl3(&self.agent_kubeconfig(), &self.home, args);
        (ok, format!("{out}{err}"))
    }

    /// kubectl as the agent on a thread of its own (a held request waits for its answer).
    pub fn kubectl_meanwhile(&self, args: &[&str]) -> JoinHandle<(bool, String)> {
        let config = self.agent_kubeconfig();
        let home = self.home.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (ok, out, err) = kubectl3(&config, &home, &args);
            (ok, format!("{out}{err}"))
        })
    }

    /// `kubeleash approvals ARGS --socket SOCKET` with `USER`/`LOGNAME` set to `user` (the
    /// name an answer is given in): success, stdout, stderr.
    pub fn approvals_as(&self, user: &str, args: &[&str]) -> (bool, String, String) {
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
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The held request whose JSON (as `kubeleash approvals list --json` shows it) mentions
    /// `needle`, polled for until it is held.
    pub fn held_containing(&self, needle: &str) -> Value {
        let started = Instant::now();
        loop {
            let (_, out, _) = self.approvals_as("alice", &["list", "--json"]);
            let listed: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
            if let Some(h) = listed["pending"]
                .as_array()
                .and_then(|a| a.iter().find(|h| h.to_string().contains(needle)))
            {
                return h.clone();
            }
            assert!(
                started.elapsed() < HELD_WITHIN,
                "nothing held mentions {needle}: {listed}\nproxy stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `kubeleash approvals approve ID` (or `deny ID --reason REASON`) as `user`; must succeed.
    pub fn answer_as(&self, user: &str, id: &str, approve: bool, reason: &str) {
        let (ok, out, err) = if approve {
            self.approvals_as(user, &["approve", id])
        } else {
            self.approvals_as(user, &["deny", id, "--reason", reason])
        };
        assert!(ok, "kubeleash approvals as {user}: {out}{err}");
    }

    /// Stop the proxy as an operator does (SIGTERM), so that it closes its record.
    pub fn stop(&mut self) {
        self.guard.stop();
    }

    /// Kill the proxy outright (SIGKILL), as a node failure or the OOM killer does.
    pub fn kill(&mut self) {
        let _ = self.guard.0.kill();
        let _ = self.guard.0.wait();
    }

    /// The proxy's stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.home.join("proxy.stderr")).unwrap_or_default()
    }

    /// The record so far, as text.
    pub fn record_text(&self) -> String {
        std::fs::read_to_string(&self.record).unwrap_or_default()
    }

    /// The records of approval `id`, polled for until `want` holds for them.
    pub fn records_of(&self, id: &str, want: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let recs: Vec<Value> = self
                .record_text()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|r| r["decision"]["approvalId"] == id)
                .collect();
            if want(&recs) {
                return recs;
            }
            assert!(
                started.elapsed() < HELD_WITHIN,
                "the records of approval {id} are not as expected: {recs:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Proxy {
    /// The proxy stops; the directory goes once the test passed (kept, with the proxy's
    /// stderr and record, when it failed).
    fn drop(&mut self) {
        let _ = self.guard.0.kill();
        let _ = self.guard.0.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.home);
        }
    }
}

/// `kubeleash ARGS` with `env` set, its stderr in `stderr`; the URL from its first line.
fn serve_with_env(args: &[&str], env: &[(&str, &Path)], stderr: &Path) -> (Guard, String) {
    use std::io::{BufRead, BufReader};
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("KUBELEASH_WEBHOOK_SECRET")
        .env_remove("KUBELEASH_WEBHOOK_SECRET_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let guard = Guard(child);
    let Some(url) = line.trim().strip_prefix("listening on ") else {
        panic!(
            "kubeleash {args:?}: unexpected first line {line:?}; stderr:\n{}",
            std::fs::read_to_string(stderr).unwrap_or_default()
        );
    };
    (guard, url.to_string())
}

/// Every form in which `secret` could be carried in text a person or a program reads: as it
/// is, JSON-escaped, percent-encoded, hex, and base64 (standard and URL-safe, at each of the
/// three alignments it can have inside a longer base64 text, the quanta it shares with its
/// neighbours left out).
pub fn forms_of(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_string()];
    let json = serde_json::to_string(secret).unwrap();
    forms.push(json[1..json.len() - 1].to_string());
    forms.push(
        secret
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect(),
    );
    forms.push(secret.bytes().map(|b| format!("{b:02x}")).collect());
    for engine in [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE,
    ] {
        forms.push(engine.encode(secret));
        for shift in 0..3usize {
            let mut shifted = vec![0u8; shift];
            shifted.extend_from_slice(secret.as_bytes());
            let b64 = engine.encode(&shifted);
            // The first quantum holds the neighbour's bytes when shifted; the last may hold
            // the next ones or padding.
            let start = if shift == 0 { 0 } else { 4 };
            let end = (b64.len() / 4 - 1) * 4;
            if end > start + 8 {
                forms.push(b64[start..end].to_string());
            }
        }
    }
    forms.sort();
    forms.dedup();
    forms
}

/// Each form ([`forms_of`]) of each of `secrets` that is in `text`, described.
pub fn shown_forms(text: &str, secrets: &[&str]) -> Vec<String> {
    secrets
        .iter()
        .flat_map(|s| {
            forms_of(s)
                .into_iter()
                .filter(|f| text.contains(f.as_str()))
                .map(move |f| format!("the masked value {s:?} (as {f:?})"))
        })
        .collect()
}

/// Fails if any form ([`forms_of`]) of any of `secrets` is in `text`.
pub fn assert_never_shown(what: &str, text: &str, secrets: &[&str]) {
    let shown = shown_forms(text, secrets);
    assert!(shown.is_empty(), "{what} carries {shown:?}:\n{text}");
}

#[test]
fn the_forms_of_a_value_are_found_where_it_hides() {
    let forms = forms_of("Hunter2-Hunter2-Hunter2");
    let engine = base64::engine::general_purpose::STANDARD;
    for neighbour in ["", "x", "xy", "xyz"] {
        let inside = engine.encode(format!("{neighbour}Hunter2-Hunter2-Hunter2 and more"));
        assert!(
            forms.iter().any(|f| inside.contains(f.as_str())),
            "{neighbour:?}: {inside} {forms:?}"
        );
    }
    assert!(forms.contains(&"48756e746572322d48756e746572322d48756e74657232".to_string()));
    assert!(
        !forms
            .iter()
            .any(|f| "[masked] W21hc2tlZF0=".contains(f.as_str()))
    );
}
