//! A real kube-apiserver and etcd (`tests/cluster/start.sh`) shared by every test of one test
//! binary: started by the first test that asks for it, stopped when the binary exits.
//!
//! Use it from a test file with `#[path = "support/cluster.rs"] mod cluster;` (or the path from
//! another crate, e.g. `../../cli/tests/support/cluster.rs`); it needs only std.
//!
//! - One cluster per test binary: a `OnceLock`, so tests running in parallel share it. Tests must
//!   therefore use names of their own for what they create.
//! - If `start.sh` fails, every test that asks for the cluster FAILS with its output (never skips).
//! - Stopping: an `atexit` handler runs `stop.sh` when the binary exits (libtest has no "after
//!   all tests" hook, and a `static` is never dropped); if the binary is killed instead,
//!   `KUBELEASH_CLUSTER_OWNER_PID` (this process) makes start.sh's watcher stop the servers within
//!   about a second.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The repository's `tests/cluster`, from either crate (both sit one level below the root).
fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/cluster")
}

/// A running cluster: the directory start.sh wrote and the `env` file it wrote there.
pub struct Cluster {
    pub dir: PathBuf,
    env: HashMap<String, String>,
    /// How long start.sh took.
    pub started_in: std::time::Duration,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The cluster of this test binary, started on first use. Panics (the test fails) with start.sh's
/// output if it cannot be started.
pub fn cluster() -> &'static Cluster {
    match CLUSTER.get_or_init(start) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

impl Cluster {
    /// A variable of `DIR/env`; panics if start.sh did not write it.
    pub fn var(&self, key: &str) -> &str {
        self.env
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{}/env has no {key}: {:?}", self.dir.display(), self.env))
    }

    /// `https://127.0.0.1:PORT`.
    pub fn server(&self) -> &str {
        self.var("KUBELEASH_CLUSTER_SERVER")
    }

    /// kubeleash-admin (system:masters), client certificate.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        PathBuf::from(self.var("KUBECONFIG_ADMIN"))
    }

    /// kubeleash-operator (restricted RBAC), client certificate.
    pub fn operator_cert_kubeconfig(&self) -> PathBuf {
        PathBuf::from(self.var("KUBECONFIG_OPERATOR_CERT"))
    }

    /// kubeleash-operator, static bearer token.
    pub fn operator_token_kubeconfig(&self) -> PathBuf {
        PathBuf::from(self.var("KUBECONFIG_OPERATOR_TOKEN"))
    }

    /// kubeleash-operator, exec credential plugin.
    pub fn operator_exec_kubeconfig(&self) -> PathBuf {
        PathBuf::from(self.var("KUBECONFIG_OPERATOR_EXEC"))
    }

    /// `kubectl --kubeconfig KUBECONFIG ARGS` straight to the API server (no kubeleash): whether
    /// it succeeded, and stdout followed by stderr.
    pub fn kubectl(&self, kubeconfig: &Path, args: &[&str]) -> (bool, String) {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--request-timeout=30s")
            .args(args)
            .env("KUBECACHEDIR", self.dir.join("kube-cache"))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run kubectl: {e}"));
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// kubectl as the cluster's admin: the judge of what really is in the cluster.
    pub fn admin(&self, args: &[&str]) -> (bool, String) {
        self.kubectl(&self.admin_kubeconfig(), args)
    }

    /// Stop the servers (idempotent) and, if that worked, remove the directory.
    pub fn stop(&self) -> Result<(), String> {
        let out = Command::new(scripts().join("stop.sh"))
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run stop.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "tests/cluster/stop.sh {} failed ({}):\n{}{}",
                self.dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

fn start() -> Result<Cluster, String> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "kubeleash-cluster-{}-{nanos:x}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let script = scripts().join("start.sh");
    let t0 = Instant::now();
    let out = Command::new(&script)
        .arg(&dir)
        .env(
            "KUBELEASH_CLUSTER_OWNER_PID",
            std::process::id().to_string(),
        )
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let started_in = t0.elapsed();
    if !out.status.success() {
        return Err(format!(
            "the real API server did not start: {} {} exited with {} after {:.1}s \
             (it needs Go >= 1.26 for the first build, openssl, python3, curl and kubectl; \
             logs in {}):\n--- stdout\n{}--- stderr\n{}",
            script.display(),
            dir.display(),
            out.status,
            started_in.as_secs_f64(),
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    exit::register();
    let text = std::fs::read_to_string(dir.join("env"))
        .map_err(|e| format!("start.sh succeeded but {}/env: {e}", dir.display()))?;
    let env = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), unquote(v)))
        .collect();
    eprintln!(
        "real API server started in {:.1}s ({})",
        started_in.as_secs_f64(),
        dir.display()
    );
    Ok(Cluster {
        dir,
        env,
        started_in,
    })
}

/// A value as bash's `printf %q` writes it (start.sh's values are paths, URLs, hex and pids):
/// `''` is empty, a backslash escapes the next character.
fn unquote(v: &str) -> String {
    if v == "''" {
        return String::new();
    }
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '\'' => {}
            c => out.push(c),
        }
    }
    out
}

/// Stopping the cluster when the test binary exits, however the tests ended (libtest calls
/// `exit` both when all pass and when some fail).
mod exit {
    use std::sync::Once;

    #[allow(
        unsafe_code,
        reason = "atexit from the C library std already links: the only hook that runs after \
                  the last test; the handler only spawns stop.sh"
    )]
    mod ffi {
        unsafe extern "C" {
            fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
        }

        pub(super) fn at_exit(callback: extern "C" fn()) -> bool {
            // SAFETY: registers a plain function pointer; libc keeps it until exit.
            unsafe { atexit(callback) == 0 }
        }
    }

    extern "C" fn stop_cluster() {
        if let Some(Ok(c)) = super::CLUSTER.get()
            && let Err(e) = c.stop()
        {
            eprintln!("{e}");
        }
    }

    pub(super) fn register() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            if !ffi::at_exit(stop_cluster) {
                eprintln!(
                    "atexit failed: the cluster is stopped by start.sh's owner watcher instead"
                );
            }
        });
    }
}
