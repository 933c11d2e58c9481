//! The Helm chart (`deploy/helm/kubeleash`), judged by helm and by the real kube-apiserver:
//! `helm lint` and `helm template` (helm from the Go module proxy, `deploy/tools/build.sh`),
//! the rendered manifests applied in a namespace that enforces the `restricted` Pod Security
//! Standard, the pod the Deployment would make admitted there (and a weakened one refused),
//! the chart's RBAC exactly what the proxy needs, and the proxy itself run with the rendered
//! arguments, certificate, policy and the chart's ServiceAccount token as its credential,
//! serving an agent's ServiceAccount token through the Service's name. (There is no kubelet, so
//! the Deployment's pods themselves never start; the container runs here instead, on loopback.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "support/chart.rs"]
mod chart;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/process.rs"]
mod process;

use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::Value;

use chart::{helm, repo};

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn admin(args: &[&str]) -> String {
    let (ok, out) = cluster::cluster().admin(args);
    assert!(ok, "kubectl {args:?}: {out}");
    out
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&admin(args)).unwrap()
}

#[test]
fn the_chart_lints_renders_applies_restricted_and_its_proxy_serves_agents() {
    process::require_kubectl();
    let c = cluster::cluster();
    let helm = helm();
    let chart = repo().join("deploy/helm/kubeleash");
    let ns = format!("kubeleash-chart-{}", std::process::id());
    let home = std::env::temp_dir().join(&ns);
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();

    let (ok, out) = run(Command::new(&helm).args(["lint", "--strict", p(&chart)]));
    assert!(ok && out.contains("0 chart(s) failed"), "{out}");
    let (ok, rendered) = run(Command::new(&helm).args([
        "template",
        "kl",
        p(&chart),
        "--namespace",
        &ns,
        "--include-crds",
    ]));
    assert!(ok, "{rendered}");
    // With an audit webhook, a sidecar ships the record.
    let (ok, shipped) = run(Command::new(&helm).args([
        "template",
        "kl",
        p(&chart),
        "--namespace",
        &ns,
        "--set",
        "ship.auditWebhook=http://fluent-bit.logging:8888/audit",
    ]));
    assert!(
        ok && shipped.contains("- ship")
            && shipped.contains("\"--audit-webhook=http://fluent-bit.logging:8888/audit\""),
        "{shipped}"
    );
    // The NetworkPolicy lets the sidecar reach the receiver's port, and only with shipping on.
    assert!(
        shipped.contains("- {port: 8888, protocol: TCP}"),
        "{shipped}"
    );
    assert!(!rendered.contains("port: 8888"), "{rendered}");
    let manifests = home.join("rendered.yaml");
    std::fs::write(&manifests, &rendered).unwrap();

    // A namespace that enforces the restricted Pod Security Standard.
    admin(&["create", "namespace", &ns]);
    admin(&[
        "label",
        "namespace",
        &ns,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    ]);
    let out = admin(&["apply", "-n", &ns, "-f", p(&manifests)]);
    for what in [
        "serviceaccount/kl-kubeleash",
        "clusterrole.rbac.authorization.k8s.io/kl-kubeleash-operator",
        "clusterrole.rbac.authorization.k8s.io/kl-kubeleash-tokenreview",
        "deployment.apps/kl-kubeleash",
        "service/kl-kubeleash",
        "networkpolicy.networking.k8s.io/kl-kubeleash",
        "configmap/kl-kubeleash-policy",
        "secret/kl-kubeleash-tls",
        "configmap/kl-kubeleash-ca",
        "customresourcedefinition.apiextensions.k8s.io/approvals.kubeleash.dev",
        "customresourcedefinition.apiextensions.k8s.io/grants.kubeleash.dev",
        "role.rbac.authorization.k8s.io/kl-kubeleash-approvals",
        "role.rbac.authorization.k8s.io/kl-kubeleash-approver",
        format!(
            "validatingadmissionpolicy.admissionregistration.k8s.io/kl-kubeleash-{ns}-approvals"
        )
        .as_str(),
    ] {
        assert!(out.contains(what), "{what} not applied: {out}");
    }

    // The pod the Deployment makes is admitted under `restricted`; one without the chart's
    // hardening is not (so the check can fail).
    let deploy = json(&["get", "deployment", "kl-kubeleash", "-n", &ns, "-o", "json"]);
    let template = &deploy["spec"]["template"];
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kl-check", "namespace": ns}, "spec": template["spec"]});
    let pod_file = home.join("pod.json");
    std::fs::write(&pod_file, pod.to_string()).unwrap();
    admin(&["create", "--dry-run=server", "-f", p(&pod_file)]);
    let mut weak = pod.clone();
    weak["spec"]["containers"][0]["securityContext"] = serde_json::json!({});
    weak["spec"]["securityContext"] = serde_json::json!({});
    std::fs::write(&pod_file, weak.to_string()).unwrap();
    let (ok, out) = c.admin(&["create", "--dry-run=server", "-f", p(&pod_file)]);
    assert!(
        !ok && out.contains("violates PodSecurity \"restricted"),
        "{out}"
    );
    let security = &template["spec"]["containers"][0]["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");

    // The chart's RBAC: what the proxy needs, and not more.
    let sa = format!("system:serviceaccount:{ns}:kl-kubeleash");
    for (args, want) in [
        (vec!["create", "tokenreviews.authentication.k8s.io"], "yes"),
        (vec!["list", "pods", "--all-namespaces"], "yes"),
        (vec!["get", "secrets", "-n", "dev"], "no"),
        (vec!["delete", "pods", "-n", "dev"], "no"),
        (vec!["create", "clusterrolebindings"], "no"),
        (
            vec!["create", "subjectaccessreviews.authorization.k8s.io"],
            "no",
        ),
        // Approvals kept in its own namespace, and nowhere else.
        (
            vec!["create", "approvals.kubeleash.dev", "-n", ns.as_str()],
            "yes",
        ),
        (
            vec![
                "update",
                "approvals.kubeleash.dev",
                "--subresource=status",
                "-n",
                ns.as_str(),
            ],
            "yes",
        ),
        (
            vec!["update", "grants.kubeleash.dev", "-n", ns.as_str()],
            "yes",
        ),
        (vec!["create", "approvals.kubeleash.dev", "-n", "dev"], "no"),
    ] {
        let mut a = vec!["auth", "can-i", "--as", &sa];
        a.extend(args.iter().copied());
        let (_, out) = c.admin(&a);
        // (kubectl warns on stderr that a cluster-scoped resource has no namespace.)
        assert_eq!(
            out.lines().next().unwrap_or_default().trim(),
            want,
            "{args:?}: {out}"
        );
    }

    // The container, run here: the rendered arguments, the chart's policy and certificate, and
    // the chart's ServiceAccount's token as the operator credential.
    let container = &template["spec"]["containers"][0];
    let mut args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let secret = json(&["get", "secret", "kl-kubeleash-tls", "-n", &ns, "-o", "json"]);
    let field = |k: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(secret["data"][k].as_str().unwrap())
            .unwrap()
    };
    let tls = home.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    std::fs::write(tls.join("tls.crt"), field("tls.crt")).unwrap();
    std::fs::write(tls.join("tls.key"), field("tls.key")).unwrap();
    let ca = json(&[
        "get",
        "configmap",
        "kl-kubeleash-ca",
        "-n",
        &ns,
        "-o",
        "json",
    ])["data"]["ca.crt"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(home.join("ca.crt"), &ca).unwrap();
    let policy = json(&[
        "get",
        "configmap",
        "kl-kubeleash-policy",
        "-n",
        &ns,
        "-o",
        "json",
    ])["data"]["policy.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::create_dir_all(home.join("policy")).unwrap();
    std::fs::write(home.join("policy/policy.yaml"), policy).unwrap();
    for d in ["lib", "run"] {
        std::fs::create_dir_all(home.join(d)).unwrap();
    }
    for a in &mut args {
        *a = a
            .replace("/etc/kubeleash/policy", p(&home.join("policy")))
            .replace("/etc/kubeleash/tls", p(&tls))
            .replace("/var/lib/kubeleash", p(&home.join("lib")))
            .replace("/var/run/kubeleash", p(&home.join("run")))
            // What the kubelet expands from the pod's env.
            .replace("$(POD_NAME)", "kl-kubeleash-5d8f7-x2x9z")
            // Loopback only, here.
            .replace("--listen=0.0.0.0:8443", "--listen=127.0.0.1:0");
    }
    let kubeconfig = home.join("operator.kubeconfig");
    chart::service_account_kubeconfig(&kubeconfig, &ns, "kl-kubeleash");
    args.extend(["--kubeconfig".to_string(), p(&kubeconfig).to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut guard, url) = process::serve(&args, Some(&home.join("proxy.stderr")));
    let port = url.rsplit(':').next().unwrap().to_string();

    // An agent: a ServiceAccount in the namespace the default policy serves.
    let (_, _) = c.admin(&["create", "namespace", "agents"]);
    let agent = format!("chart-agent-{}", std::process::id());
    admin(&["create", "serviceaccount", &agent, "-n", "agents"]);
    let agent_token = admin(&[
        "create",
        "token",
        &agent,
        "-n",
        "agents",
        "--audience",
        "kubeleash",
    ]);
    let name = format!("kl-kubeleash.{ns}.svc");
    let curl = |path: &str| {
        run(Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "30",
                "--cacert",
                p(&home.join("ca.crt")),
                "--resolve",
                &format!("{name}:{port}:127.0.0.1"),
            ])
            .args([
                "-H",
                &format!("Authorization: Bearer {}", agent_token.trim()),
                "-w",
                "\n%{http_code}",
            ])
            .arg(format!("https://{name}:{port}{path}")))
        .1
    };
    let out = curl("/api/v1/namespaces/agents/pods");
    assert!(
        out.ends_with("\n200") && out.contains("\"kind\":\"PodList\""),
        "{out}"
    );
    let out = curl("/api/v1/namespaces/dev/pods");
    assert!(
        out.ends_with("\n403"),
        "the policy allows the agents namespace only: {out}"
    );
    guard.stop();
    let stderr = std::fs::read_to_string(home.join("proxy.stderr")).unwrap();
    assert!(
        stderr.contains("the record is signed; verify it with")
            && stderr.contains("-----BEGIN PUBLIC KEY-----"),
        "{stderr}"
    );
    let record = std::fs::read_to_string(home.join("lib/session.jsonl")).unwrap();
    assert!(record.contains(&format!("system:serviceaccount:agents:{agent}")));
    // Each replica's records name it.
    assert!(
        record
            .lines()
            .all(|l| l.contains("\"session\":\"kl-kubeleash-5d8f7-x2x9z\"")),
        "{record}"
    );

    admin(&["delete", "serviceaccount", &agent, "-n", "agents"]);
    admin(&["delete", "-n", &ns, "-f", p(&manifests), "--wait=false"]);
    admin(&["delete", "namespace", &ns, "--wait=false"]);
    let _ = std::fs::remove_dir_all(&home);
}

/// The chart mounts the policy from a ConfigMap, which the kubelet updates the way its atomic
/// writer does: the files go into a new timestamped folder, and the `..data` link is swapped to
/// it in one rename, the file itself a link through `..data`. The proxy reloads the policy
/// when that happens (here with the sandbox, on loopback: the layout is the kubelet's).
#[test]
fn a_policy_configmap_updated_as_the_kubelet_does_is_reloaded() {
    process::require_kubectl();
    let home = std::env::temp_dir().join(format!("kubeleash-chart-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let _sandbox = process::sandbox_for_operator(&home);
    let mount = home.join("policy");
    std::fs::create_dir_all(&mount).unwrap();
    let policy = |verbs: &str| {
        format!(
            "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - {{name: discovery, effect: allow, verbs: [get], nonResourceURLs: [/api, \"/api/*\", /apis, \"/apis/*\", /version, \"/openapi/*\"]}}\n    - {{name: pods, effect: allow, verbs: [{verbs}], apiGroups: [\"\"], resources: [pods], namespaces: [dev]}}\n"
        )
    };
    // What the kubelet writes: ..TIMESTAMP/policy.yaml, ..data -> ..TIMESTAMP, policy.yaml ->
    // ..data/policy.yaml.
    let publish = |stamp: &str, text: &str| {
        let dir = mount.join(format!("..{stamp}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("policy.yaml"), text).unwrap();
        let tmp = mount.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("..{stamp}"), &tmp).unwrap();
        std::fs::rename(&tmp, mount.join("..data")).unwrap();
    };
    publish("2026_12_06_01", &policy("get"));
    std::os::unix::fs::symlink("..data/policy.yaml", mount.join("policy.yaml")).unwrap();
    let agent = home.join("agent.kubeconfig");
    let (mut guard, _) = process::serve(
        &[
            "proxy",
            "--policy",
            p(&mount.join("policy.yaml")),
            "--kubeconfig",
            p(&home.join("operator.kubeconfig")),
            "--listen",
            "127.0.0.1:0",
            "--user",
            "agent-1",
            "--agent-kubeconfig",
            p(&agent),
            "--agent-namespace",
            "dev",
        ],
        Some(&home.join("proxy.stderr")),
    );
    let kubectl = |args: &[&str]| {
        run(Command::new("kubectl")
            .args(["--request-timeout=30s"])
            .args(args)
            .env("KUBECONFIG", &agent)
            .env("HOME", &home)
            .env("KUBECACHEDIR", home.join("kube-cache")))
    };
    let (ok, out) = kubectl(&["get", "pods", "-n", "dev"]);
    assert!(!ok && out.contains("no rule allows list"), "{out}");
    publish("2026_12_06_02", &policy("get, list"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (ok, out) = kubectl(&["get", "pods", "-n", "dev"]);
        if ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reloaded: {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    guard.stop();
    let stderr = std::fs::read_to_string(home.join("proxy.stderr")).unwrap();
    assert!(stderr.contains("reloaded"), "{stderr}");
    let _ = std::fs::remove_dir_all(&home);
}
