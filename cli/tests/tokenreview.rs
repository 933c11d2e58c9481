//! `kubeleash proxy --tokenreview-audience AUD`: agents identified as workloads, by the
//! ServiceAccount tokens the real kube-apiserver issues (`kubectl create token --audience`) and
//! reviews (TokenReview). The invariants: a request is decided as the identity the API server
//! gives the token, and only a token bound to kubeleash's audience, live and of a service account
//! that still exists, gives one; the token is never recorded, logged or forwarded; a review the
//! operator's side cannot make fails closed without telling the agent why.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "support/certs.rs"]
mod certs;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/process.rs"]
mod process;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use process::{Guard, serve};

const POLICY: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  rules:
    - name: agent-a-reads-pods
      effect: allow
      subjects: {users: ["system:serviceaccount:dev:tr-agent-a"]}
      verbs: [get, list]
      apiGroups: [""]
      resources: [pods]
      namespaces: [dev]
    - name: dev-accounts-list-services
      effect: allow
      subjects: {groups: ["system:serviceaccounts:dev"]}
      verbs: [list]
      apiGroups: [""]
      resources: [services]
      namespaces: [dev]
    - name: discovery
      effect: allow
      verbs: [get]
      nonResourceURLs: [/api, "/api/*", /apis, "/apis/*", /version, "/openapi/*"]
"#;

/// kubectl's words for a 401 (`Unauthorized` in the Status, "You must be logged in").
fn unauthorized(out: &str) -> bool {
    out.contains("You must be logged in to the server") || out.contains("Unauthorized")
}

fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kubeleash-tr-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The proxy in front of `operator`'s cluster, identifying agents by tokens for `kubeleash`.
fn proxy(home: &Path, operator: &Path) -> Guard {
    let policy = home.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let (guard, url) = serve(
        &[
            "proxy",
            "--policy",
            p(&policy),
            "--kubeconfig",
            p(operator),
            "--listen",
            "127.0.0.1:0",
            "--record",
            p(&home.join("session.jsonl")),
            "--tokenreview-audience",
            "kubeleash",
            "--agent-kubeconfig",
            p(&home.join("agent.kubeconfig")),
            "--agent-namespace",
            "dev",
        ],
        Some(&home.join("proxy.stderr")),
    );
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    guard
}

/// kubectl through the proxy with `token`: success, and stdout then stderr.
fn kubectl(home: &Path, token: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .arg("--request-timeout=30s")
        .args(["--token", token])
        .args(args)
        .env("KUBECONFIG", home.join("agent.kubeconfig"))
        .env("HOME", home)
        .env("KUBECACHEDIR", home.join("kube-cache"))
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

/// The admin's kubectl on the real cluster; must succeed. Its stdout.
fn admin(args: &[&str]) -> String {
    let (ok, out) = cluster::cluster().admin(args);
    assert!(ok, "kubectl {args:?}: {out}");
    out.trim().to_string()
}

/// A token as `payload` says, signed with the cluster's service-account key (`pki/sa.key`)
/// under the header of a real one: what only the API server's key holder can make.
fn signed_like(real: &str, payload: &serde_json::Value) -> String {
    let c = cluster::cluster();
    let header = real.split('.').next().unwrap();
    let body = B64URL.encode(payload.to_string());
    let input = format!("{header}.{body}");
    let dir = fresh_dir("jwt");
    std::fs::write(dir.join("input"), &input).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(c.dir.join("pki/sa.key"))
        .arg(dir.join("input"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    format!("{input}.{}", B64URL.encode(out.stdout))
}

#[test]
fn service_account_tokens_are_the_agents_identity_and_only_good_ones_are() {
    process::require_kubectl();
    let c = cluster::cluster();
    let home = fresh_dir("real");
    for sa in ["tr-agent-a", "tr-agent-b", "tr-agent-gone"] {
        admin(&["create", "serviceaccount", sa, "-n", "dev"]);
    }
    let token = |sa: &str, audience: Option<&str>| {
        let mut args = vec!["create", "token", sa, "-n", "dev"];
        if let Some(a) = audience {
            args.extend(["--audience", a]);
        }
        admin(&args)
    };
    let mut guard = proxy(&home, &c.operator_cert_kubeconfig());

    // A good token: the request is decided as the service account, by user and by its
    // namespace's group, and the server's answer comes back.
    let a = token("tr-agent-a", Some("kubeleash"));
    let (ok, out) = kubectl(&home, &a, &["get", "pods", "-n", "dev", "-o", "name"]);
    assert!(ok && out.contains("pod/"), "{out}");
    let (ok, out) = kubectl(&home, &a, &["get", "services", "-n", "dev"]);
    assert!(ok, "{out}");
    let b = token("tr-agent-b", Some("kubeleash"));
    let (ok, out) = kubectl(&home, &b, &["get", "services", "-n", "dev"]);
    assert!(ok, "the group system:serviceaccounts:dev: {out}");
    let (ok, out) = kubectl(&home, &b, &["get", "pods", "-n", "dev"]);
    assert!(
        !ok && out.contains("system:serviceaccount:dev:tr-agent-b"),
        "b is not a: {out}"
    );
    let (ok, out) = kubectl(&home, &a, &["get", "pods", "-n", "prod"]);
    assert!(!ok && out.contains("Forbidden"), "{out}");

    // A token for another audience, or the API server's own: not kubeleash's.
    for (what, t) in [
        ("another audience", token("tr-agent-a", Some("vault"))),
        ("the API server's audience", token("tr-agent-a", None)),
    ] {
        let (ok, out) = kubectl(&home, &t, &["get", "pods", "-n", "dev"]);
        assert!(!ok && unauthorized(&out), "{what}: {out}");
        assert!(
            out.contains("does not accept the token for audience \"kubeleash\""),
            "{what}: {out}"
        );
    }

    // Expired: a token like `a` whose time is over, signed with the cluster's own key.
    let claims: serde_json::Value =
        serde_json::from_slice(&B64URL.decode(a.split('.').nth(1).unwrap()).unwrap()).unwrap();
    let mut expired = claims.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    expired["iat"] = (now - 7200).into();
    expired["nbf"] = (now - 7200).into();
    expired["exp"] = (now - 3600).into();
    let (ok, out) = kubectl(
        &home,
        &signed_like(&a, &expired),
        &["get", "pods", "-n", "dev"],
    );
    assert!(!ok && unauthorized(&out), "{out}");
    // The API server's reason is the operator's, under the id the agent is given.
    let id = out
        .split("the operator's log has the reason under id ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_alphanumeric()).next())
        .unwrap_or_else(|| panic!("no id: {out}"))
        .to_string();
    let logged = std::fs::read_to_string(home.join("proxy.stderr")).unwrap();
    let line = logged
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("{logged}"));
    assert!(
        line.contains("refused a token") && line.contains("expired"),
        "{line}"
    );
    // The same claims re-signed as they were still work: what failed is the time alone.
    let (ok, out) = kubectl(
        &home,
        &signed_like(&a, &claims),
        &["get", "pods", "-n", "dev"],
    );
    assert!(ok, "{out}");

    // A service account deleted after its token was made.
    let gone = token("tr-agent-gone", Some("kubeleash"));
    admin(&["delete", "serviceaccount", "tr-agent-gone", "-n", "dev"]);
    let (ok, out) = kubectl(&home, &gone, &["get", "services", "-n", "dev"]);
    assert!(!ok && unauthorized(&out), "{out}");

    // No token at all, and garbage.
    let (ok, out) = kubectl(&home, "not-a-token", &["get", "pods", "-n", "dev"]);
    assert!(!ok && unauthorized(&out), "{out}");
    // A good token with more after it (the API server would read the first word only): not a
    // token here, and no review is spent on it.
    let (ok, out) = kubectl(&home, &format!("{a} x"), &["get", "pods", "-n", "dev"]);
    assert!(
        !ok && unauthorized(&out) && out.contains("is not a token"),
        "{out}"
    );

    guard.stop();
    let record = std::fs::read_to_string(home.join("session.jsonl")).unwrap();
    assert!(
        record.contains("\"user\":\"system:serviceaccount:dev:tr-agent-a\""),
        "{record}"
    );
    assert!(record.contains("system:serviceaccounts:dev"), "{record}");
    let stderr = std::fs::read_to_string(home.join("proxy.stderr")).unwrap();
    for t in [&a, &b, &gone] {
        let sig = t.rsplit('.').next().unwrap();
        assert!(
            !record.contains(sig) && !stderr.contains(sig),
            "a token was written down"
        );
    }
    for sa in ["tr-agent-a", "tr-agent-b"] {
        admin(&["delete", "serviceaccount", sa, "-n", "dev"]);
    }
    let _ = std::fs::remove_dir_all(&home);
}

/// A CA and a serving certificate for `name` (openssl), the chain file (serving certificate,
/// then the CA) and the key: what an operator's CA or cert-manager gives a proxy agents reach by
/// a Service's name.
fn certificate_for(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca = certs::ca(dir, "agents-ca");
    let (chain, key) = leaf(dir, name, "tls");
    std::fs::write(dir.join("tls.crt"), chain).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
    (dir.join("tls.crt"), dir.join("tls.key"), ca)
}

/// A new key and serving certificate for the DNS name `name` under the CA `certificate_for`
/// made in `dir`: the chain and the key (PEM).
fn leaf(dir: &Path, name: &str, tag: &str) -> (String, String) {
    certs::leaf(dir, &format!("DNS:{name}"), tag)
}

/// The SHA-256 fingerprint of the certificate the server at 127.0.0.1:`port` serves for `name`.
fn served_fingerprint(port: &str, name: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername {name} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The SHA-256 fingerprint of the first certificate in a PEM text.
fn fingerprint(pem: &str, dir: &Path) -> String {
    let f = dir.join("fingerprint.pem");
    std::fs::write(&f, pem).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in", p(&f)])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// As in a cluster, on loopback: agents reach the proxy by a Service's DNS name, over the
/// certificate the operator gave it, with their ServiceAccount tokens; a `Host` it was not given
/// is refused; and off loopback it will not listen without both a per-request identity and a
/// certificate of the operator's.
#[test]
fn served_by_a_name_with_the_operators_certificate() {
    process::require_kubectl();
    let c = cluster::cluster();
    let home = fresh_dir("named");
    let name = "kubeleash.agents.svc";
    let (cert, key, ca) = certificate_for(&home, name);
    let policy = home.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let operator = c.operator_cert_kubeconfig();
    let agent_ca = home.join("agent-ca.crt");
    let base = [
        "proxy",
        "--policy",
        p(&policy),
        "--kubeconfig",
        p(&operator),
        "--tokenreview-audience",
        "kubeleash",
        "--agent-ca-file",
        p(&agent_ca),
    ];
    let mut args: Vec<&str> = base.to_vec();
    args.extend([
        "--listen",
        "127.0.0.1:0",
        "--tls-cert-file",
        p(&cert),
        "--tls-key-file",
        p(&key),
        "--serve-name",
        name,
    ]);
    let (mut guard, url) = serve(&args, Some(&home.join("proxy.stderr")));
    let port = url.rsplit(':').next().unwrap().to_string();
    // The CA agents are told to trust is the chain's last certificate: the operator's.
    assert_eq!(
        std::fs::read_to_string(home.join("agent-ca.crt"))
            .unwrap()
            .trim(),
        std::fs::read_to_string(&ca).unwrap().trim()
    );
    admin(&["create", "serviceaccount", "tr-agent-named", "-n", "dev"]);
    let token = admin(&[
        "create",
        "token",
        "tr-agent-named",
        "-n",
        "dev",
        "--audience",
        "kubeleash",
    ]);
    let curl = |extra: &[&str]| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "30",
                "--cacert",
                p(&ca),
                "--resolve",
                &format!("{name}:{port}:127.0.0.1"),
            ])
            .args([
                "-H",
                &format!("Authorization: Bearer {token}"),
                "-w",
                "\n%{http_code}",
            ])
            .args(extra)
            .arg(format!(
                "https://{name}:{port}/api/v1/namespaces/dev/services"
            ))
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let out = curl(&[]);
    assert!(
        out.ends_with("\n200") && out.contains("\"kind\":\"ServiceList\""),
        "{out}"
    );
    // A name it was not given (DNS rebinding), over the same connection: refused.
    let out = curl(&["-H", "Host: evil.example"]);
    assert!(
        out.ends_with("\n403") && out.contains("is not this proxy's address"),
        "{out}"
    );
    // Renewed (cert-manager, then the kubelet updates the Secret's files): new connections get
    // the new certificate within seconds, without a restart.
    let first = served_fingerprint(&port, name);
    assert_eq!(
        first,
        fingerprint(&std::fs::read_to_string(&cert).unwrap(), &home)
    );
    let (chain, new_key) = leaf(&home, name, "renewed");
    std::fs::write(&key, &new_key).unwrap();
    std::fs::write(&cert, &chain).unwrap();
    let renewed = fingerprint(&chain, &home);
    assert_ne!(renewed, first);
    let started = std::time::Instant::now();
    while served_fingerprint(&port, name) != renewed {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the renewed certificate was never served: {}",
            std::fs::read_to_string(home.join("proxy.stderr")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(curl(&[]).ends_with("\n200"));
    // A renewal half written (a certificate without its key): the one in service stays.
    let (other_chain, _) = leaf(&home, name, "half");
    std::fs::write(&cert, &other_chain).unwrap();
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(home.join("proxy.stderr"))
        .unwrap_or_default()
        .contains("the certificate in service stays")
    {
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(served_fingerprint(&port, name), renewed);
    assert!(curl(&[]).ends_with("\n200"));
    let stderr = std::fs::read_to_string(home.join("proxy.stderr")).unwrap_or_default();
    assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
    guard.stop();
    admin(&["delete", "serviceaccount", "tr-agent-named", "-n", "dev"]);

    // Off loopback: refused at start without the operator's certificate (nothing is bound).
    let mut args: Vec<&str> = base.to_vec();
    args.extend(["--listen", "0.0.0.0:0"]);
    let out = Command::new(env!("CARGO_BIN_EXE_kubeleash"))
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("listens off loopback only when every request proves its identity"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&home);
}

/// When the review itself fails (here the upstream has no TokenReview API: the sandbox), the
/// request is refused with an id to quote and nothing of why; the operator's log has the rest.
#[test]
fn a_review_that_cannot_be_made_fails_closed() {
    process::require_kubectl();
    let home = fresh_dir("sandbox");
    let _sandbox = process::sandbox_for_operator(&home);
    let mut guard = proxy(&home, &home.join("operator.kubeconfig"));
    let (ok, out) = kubectl(
        &home,
        "some-token",
        &["get", "--raw", "/api/v1/namespaces/dev/pods"],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("kubeleash could not check the request's token with the API server; the operator's log has the details under id"),
        "{out}"
    );
    assert!(
        !out.contains("404") && !out.contains("tokenreviews"),
        "{out}"
    );
    guard.stop();
    let stderr = std::fs::read_to_string(home.join("proxy.stderr")).unwrap();
    assert!(stderr.contains("cannot check an agent's token"), "{stderr}");
    assert!(!stderr.contains("some-token"), "{stderr}");
    let _ = std::fs::remove_dir_all(&home);
}
