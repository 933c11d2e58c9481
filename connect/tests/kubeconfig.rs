//! Kubeconfigs `kubeleash-connect` refuses, and how: no server needed (nothing is sent).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::PathBuf;

use kubeleash_connect::Upstream;

const SECRET: &str = "kc-secret-0d9e8f7a6b5c4d3e";

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "kubeleash-connect-kc-{}-{}",
        std::process::id(),
        kubeleash_connect::correlation_id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn remove(p: &std::path::Path) {
    if let Some(d) = p.parent() {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn kubeconfig(server: &str, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c1\n  cluster:\n    server: {server}\ncontexts:\n- name: t\n  context:\n    cluster: c1\n    user: u\n    namespace: dev\ncurrent-context: t\nusers:\n- name: u\n  user:\n{user}"
    )
}

async fn refused(text: &str) -> String {
    let p = write("kc", text);
    let e = Upstream::from_kubeconfig(Some(&p), None).await;
    remove(&p);
    let e = e.expect_err("the kubeconfig was accepted");
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains(SECRET), "{shown}");
    shown
}

#[tokio::test]
async fn server_urls_with_credentials_are_refused_unquoted() {
    for server in [
        format!("https://admin:{SECRET}@127.0.0.1:6443"),
        format!("https://127.0.0.1:6443/?token={SECRET}"),
        format!("ftp://u:{SECRET}@example.com"),
    ] {
        let m = refused(&kubeconfig(&server, "    token: t0k3n-value\n")).await;
        assert!(m.contains("cluster `c1`"), "{m}");
    }
}

#[tokio::test]
async fn basic_authentication_is_refused() {
    let m = refused(&kubeconfig(
        "https://127.0.0.1:6443",
        &format!("    username: admin\n    password: {SECRET}\n"),
    ))
    .await;
    assert!(m.contains("basic authentication"), "{m}");
}

#[tokio::test]
async fn an_unparsable_kubeconfig_is_not_quoted() {
    let m = refused(&format!(
        "apiVersion: v1\nusers:\n- name: u\n  user: {{token: [{SECRET}]}}\n"
    ))
    .await;
    assert!(m.contains("is not valid YAML for a kubeconfig"), "{m}");
}

#[tokio::test]
async fn a_missing_context_is_named() {
    let p = write(
        "kc",
        &kubeconfig("https://127.0.0.1:6443", "    token: x\n"),
    );
    let e = Upstream::from_kubeconfig(Some(&p), Some("other")).await;
    remove(&p);
    let e = e.expect_err("a missing context was accepted");
    assert!(e.to_string().contains("no context `other`"), "{e}");
}

#[tokio::test]
async fn a_good_kubeconfig_says_where_it_goes() {
    let p = write(
        "kc",
        &kubeconfig(
            "https://127.0.0.1:6443/prefix/",
            &format!("    token: {SECRET}\n"),
        ),
    );
    let up = Upstream::from_kubeconfig(Some(&p), None).await;
    remove(&p);
    let up = up.unwrap();
    assert_eq!(up.cluster(), "c1");
    assert_eq!(up.server(), "https://127.0.0.1:6443/prefix");
    assert_eq!(up.default_namespace(), "dev");
    assert!(!format!("{up:?}").contains(SECRET));
}

#[test]
fn in_cluster_outside_a_cluster_says_to_give_a_kubeconfig() {
    // The test process is no pod: no KUBERNETES_SERVICE_HOST, no mounted token.
    assert!(std::env::var_os("KUBERNETES_SERVICE_HOST").is_none());
    let e = Upstream::in_cluster().unwrap_err().to_string();
    assert!(
        e.contains("not in a cluster") && e.contains("give a kubeconfig"),
        "{e}"
    );
}
