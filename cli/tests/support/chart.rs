//! The Helm chart (`deploy/helm/kubeleash`) for tests on the real API server: helm itself (from
//! the Go module proxy, `deploy/tools/build.sh`), the chart rendered, and kubeconfigs for
//! ServiceAccounts the tests act as.
//!
//! Use it with `#[path = "support/chart.rs"] mod chart;` next to `support/cluster.rs` (as
//! `mod cluster`).

#![allow(dead_code, reason = "each test binary uses a part")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// helm, built (or found cached) by `deploy/tools/build.sh`; the test fails without it.
pub fn helm() -> PathBuf {
    let out = Command::new(repo().join("deploy/tools/build.sh"))
        .arg("helm")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "deploy/tools/build.sh helm failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// `helm template RELEASE deploy/helm/kubeleash --namespace NS ARGS...`: the manifests.
pub fn render(release: &str, namespace: &str, args: &[&str]) -> String {
    let chart = repo().join("deploy/helm/kubeleash");
    let out = Command::new(helm())
        .args(["template", release])
        .arg(&chart)
        .args(["--namespace", namespace])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Write to `path` a kubeconfig for the cluster with `token` as its bearer and `namespace` as
/// its context's namespace.
pub fn token_kubeconfig(path: &Path, token: &str, namespace: &str) {
    let c = crate::cluster::cluster();
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u, namespace: {namespace}}}\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: {}\n",
            c.server(),
            c.var("KUBELEASH_CLUSTER_CA"),
            token.trim()
        ),
    )
    .unwrap();
}

/// A kubeconfig at `path` for ServiceAccount `namespace/name`, with a token the API server
/// issues for it (an hour).
pub fn service_account_kubeconfig(path: &Path, namespace: &str, name: &str) {
    let (ok, token) = crate::cluster::cluster().admin(&[
        "create",
        "token",
        name,
        "-n",
        namespace,
        "--duration",
        "1h",
    ]);
    assert!(ok, "kubectl create token {name}: {token}");
    token_kubeconfig(path, &token, namespace);
}
