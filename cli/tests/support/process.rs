//! Child processes of the CLI tests: killed when the test ends, however it ends, and the
//! `kubeleash` servers (`proxy`, `sandbox`) started with the URL read from their first line.
#![allow(dead_code, reason = "each test binary uses a part")]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A child process killed when the test ends, however it ends.
pub struct Guard(pub Child);

impl Guard {
    /// Stop the process as an operator does (SIGTERM) and wait for it, so that a proxy has
    /// written its whole record (reads are recorded by a writer thread: a process killed
    /// outright can take its last records with it). Killed if it is still running after 60 s,
    /// a bound only a failure reaches.
    pub fn stop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `kubeleash ARGS` and read the URL from its first line (`listening on URL`). Its
/// stderr goes to the file `stderr` (shown if the first line is not the URL), or to the
/// test's own stderr.
pub fn serve(args: &[&str], stderr: Option<&Path>) -> (Guard, String) {
    let err = match stderr {
        Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
        None => Stdio::inherit(),
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubeleash"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let guard = Guard(child);
    let Some(url) = line.trim().strip_prefix("listening on ") else {
        panic!(
            "kubeleash {args:?}: unexpected first line {line:?}; stderr:\n{}",
            stderr
                .and_then(|p| std::fs::read_to_string(p).ok())
                .unwrap_or_default()
        );
    };
    (guard, url.to_string())
}

/// kubectl is required: a machine without one fails the tests that drive the proxy with it,
/// rather than skipping them.
pub fn require_kubectl() {
    let ok = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "no kubectl on PATH: these tests drive the proxy with it (install a 1.27-1.35 kubectl)"
    );
}

/// Start `kubeleash sandbox` and write `home/operator.kubeconfig` pointing at it (namespace
/// dev, no credential: the sandbox authenticates nobody).
pub fn sandbox_for_operator(home: &Path) -> Guard {
    let (guard, sandbox) = serve(&["sandbox", "--listen", "127.0.0.1:0"], None);
    std::fs::write(
        home.join("operator.kubeconfig"),
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {sandbox}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u, namespace: dev}}\ncurrent-context: c\nusers:\n- name: u\n  user: {{}}\n"
        ),
    )
    .unwrap();
    guard
}
