//! Real kubectl against the sandbox. Each test gets its own sandbox and a fresh HOME (kubectl
//! caches discovery under ~/.kube/cache). Without kubectl the tests print why and pass.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::Kubectl;
use kubeleash_sandbox::{Sandbox, Seed};
use tokio::runtime::Runtime;

/// A runtime serving a sandbox while the test thread runs kubectl synchronously.
fn setup(seed: Seed) -> Option<(Runtime, Sandbox, Kubectl)> {
    let bin = common::kubectl_path()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sandbox = rt.block_on(common::start(seed));
    let kubectl = Kubectl::new(bin, &sandbox);
    Some((rt, sandbox, kubectl))
}

fn teardown(rt: Runtime, sandbox: Sandbox) {
    rt.block_on(sandbox.shutdown());
}

#[test]
fn get_prints_tables_and_yaml() {
    let Some((rt, sandbox, k)) = setup(Seed::Default) else {
        return;
    };
    let ns = k.ok(&["get", "namespaces"]);
    for name in ["default", "kube-system", "dev", "prod"] {
        assert!(ns.contains(name), "{ns}");
    }
    // Server-side columns: kubectl prints READY/STATUS only when it got a Table.
    let pods = k.ok(&["get", "pods", "-n", "dev"]);
    assert!(pods.starts_with("NAME "), "{pods}");
    assert!(
        pods.contains("READY") && pods.contains("Running") && pods.contains("1/1"),
        "{pods}"
    );
    let wide = k.ok(&["get", "deployments", "-A", "-o", "wide"]);
    assert!(
        wide.contains("SELECTOR") && wide.contains("app=web"),
        "{wide}"
    );
    let secrets = k.ok(&["get", "secrets", "-n", "prod"]);
    assert!(
        secrets.contains("kubernetes.io/tls") && secrets.contains("helm.sh/release.v1"),
        "{secrets}"
    );

    let yaml = k.ok(&["get", "secret", "db-credentials", "-n", "dev", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Secret") && yaml.contains("password: "),
        "{yaml}"
    );
    assert!(
        yaml.contains("kubectl.kubernetes.io/last-applied-configuration"),
        "{yaml}"
    );
    let list = k.ok(&["get", "secrets", "-n", "dev", "-o", "yaml"]);
    assert!(
        list.contains("kind: List") && list.contains("deployer-token"),
        "{list}"
    );
    let one = k.ok(&[
        "get",
        "cm",
        "app-config",
        "-n",
        "dev",
        "-o",
        "jsonpath={.data.DATABASE_URL}",
    ]);
    assert!(one.starts_with("postgres://app:"), "{one}");
    let labelled = k.ok(&["get", "secrets", "-A", "-l", "owner=helm", "-o", "name"]);
    assert_eq!(labelled.trim(), "secret/sh.helm.release.v1.payments.v1");
    let by_field = k.ok(&[
        "get",
        "pods",
        "-A",
        "--field-selector",
        "metadata.namespace=prod",
        "-o",
        "name",
    ]);
    assert_eq!(by_field.lines().count(), 2, "{by_field}");
    let missing = k.fails(&["get", "secret", "nope", "-n", "dev"]);
    assert!(missing.contains(r#"secrets "nope" not found"#), "{missing}");
    teardown(rt, sandbox);
}

#[test]
fn watch_streams_a_change_made_during_it() {
    let Some((rt, sandbox, k)) = setup(Seed::Default) else {
        return;
    };
    let mut child = k
        .command(&[
            "get",
            "configmaps",
            "-n",
            "dev",
            "-w",
            "--output-watch-events",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str| {
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(15)) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    seen.push(line);
                    if hit {
                        return seen;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; saw {seen:?}"),
            }
        }
    };
    let initial = wait_for("app-config");
    assert!(initial.iter().any(|l| l.contains("EVENT")), "{initial:?}");
    k.ok(&[
        "create",
        "configmap",
        "made-during-watch",
        "-n",
        "dev",
        "--from-literal=k=v",
    ]);
    let added = wait_for("made-during-watch");
    assert!(
        added.last().is_some_and(|l| l.starts_with("ADDED")),
        "{added:?}"
    );
    k.ok(&[
        "label",
        "configmap",
        "made-during-watch",
        "-n",
        "dev",
        "x=y",
    ]);
    let modified = wait_for("made-during-watch");
    assert!(
        modified.last().is_some_and(|l| l.starts_with("MODIFIED")),
        "{modified:?}"
    );
    k.ok(&["delete", "configmap", "made-during-watch", "-n", "dev"]);
    let deleted = wait_for("made-during-watch");
    assert!(
        deleted.last().is_some_and(|l| l.starts_with("DELETED")),
        "{deleted:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
    teardown(rt, sandbox);
}

const MANIFEST: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: dev
spec:
  replicas: REPLICAS
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      containers:
      - name: api
        image: registry.example.com/api:1.0
        env:
        - {name: API_KEY, value: KEY}
---
apiVersion: v1
kind: Secret
metadata:
  name: api-secret
  namespace: dev
stringData:
  password: KEY
";

#[test]
fn apply_client_side_then_server_side() {
    let Some((rt, sandbox, k)) = setup(Seed::Default) else {
        return;
    };
    let file = k.home().join("app.yaml");
    let write = |replicas: &str, key: &str| {
        std::fs::write(
            &file,
            MANIFEST.replace("REPLICAS", replicas).replace("KEY", key),
        )
        .unwrap();
    };
    let path = file.to_str().unwrap();

    write("1", "first");
    let created = k.ok(&["apply", "-f", path]);
    assert!(
        created.contains("deployment.apps/api created")
            && created.contains("secret/api-secret created"),
        "{created}"
    );
    let again = k.ok(&["apply", "-f", path]);
    assert!(again.contains("deployment.apps/api unchanged"), "{again}");
    write("3", "second");
    let changed = k.ok(&["apply", "-f", path]);
    assert!(
        changed.contains("deployment.apps/api configured"),
        "{changed}"
    );
    let got = k.ok(&["get", "deploy", "api", "-n", "dev", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].env[0].value} {.metadata.annotations}"]);
    assert!(got.starts_with("3 second "), "{got}");
    assert!(got.contains("last-applied-configuration"), "{got}");
    let secret = k.ok(&[
        "get",
        "secret",
        "api-secret",
        "-n",
        "dev",
        "-o",
        "jsonpath={.data.password}",
    ]);
    assert_eq!(secret, "c2Vjb25k"); // "second"

    write("2", "third");
    let ssa = k.ok(&["apply", "--server-side", "--force-conflicts", "-f", path]);
    assert!(ssa.contains("serverside-applied"), "{ssa}");
    let got = k.ok(&[
        "get",
        "deploy",
        "api",
        "-n",
        "dev",
        "-o",
        "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].env[0].value}",
    ]);
    assert_eq!(got, "2 third");
    let managers = k.ok(&[
        "get",
        "deploy",
        "api",
        "-n",
        "dev",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert!(managers.contains("kubectl"), "{managers}");
    let dry = k.ok(&["apply", "--dry-run=server", "-f", path]);
    assert!(dry.contains("(server dry run)"), "{dry}");

    let scaled = k.ok(&["scale", "deploy", "api", "-n", "dev", "--replicas=5"]);
    assert!(scaled.contains("scaled"), "{scaled}");
    let ready = k.ok(&[
        "get",
        "deploy",
        "api",
        "-n",
        "dev",
        "-o",
        "jsonpath={.status.readyReplicas}",
    ]);
    assert_eq!(ready, "5");
    k.ok(&[
        "set",
        "image",
        "deploy/api",
        "-n",
        "dev",
        "api=registry.example.com/api:1.1",
    ]);
    let image = k.ok(&[
        "get",
        "deploy",
        "api",
        "-n",
        "dev",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(image, "registry.example.com/api:1.1");
    teardown(rt, sandbox);
}

#[test]
fn create_secret_generic_then_delete() {
    let Some((rt, sandbox, k)) = setup(Seed::Default) else {
        return;
    };
    // kubectl's typed clients send this body as protobuf.
    let out = k.ok(&[
        "create",
        "secret",
        "generic",
        "api-key",
        "-n",
        "dev",
        "--from-literal=token=s3cr3t",
        "--from-literal=user=bot",
    ]);
    assert!(out.contains("secret/api-key created"), "{out}");
    let data = k.ok(&[
        "get",
        "secret",
        "api-key",
        "-n",
        "dev",
        "-o",
        "jsonpath={.type} {.data.token}",
    ]);
    assert_eq!(data, "Opaque czNjcjN0");
    let dup = k.fails(&[
        "create",
        "secret",
        "generic",
        "api-key",
        "-n",
        "dev",
        "--from-literal=a=b",
    ]);
    assert!(dup.contains(r#"secrets "api-key" already exists"#), "{dup}");
    let tls = k.ok(&[
        "create",
        "secret",
        "docker-registry",
        "pull",
        "-n",
        "dev",
        "--docker-server=r.example.com",
        "--docker-username=u",
        "--docker-password=p",
    ]);
    assert!(tls.contains("secret/pull created"), "{tls}");
    k.ok(&["create", "serviceaccount", "robot", "-n", "dev"]);
    let token = k.ok(&["create", "token", "robot", "-n", "dev"]);
    assert!(
        token.starts_with("eyJ") && token.matches('.').count() == 2,
        "{token}"
    );

    let deleted = k.ok(&["delete", "secret", "api-key", "-n", "dev"]);
    assert!(deleted.contains(r#"secret "api-key" deleted"#), "{deleted}");
    let gone = k.fails(&["get", "secret", "api-key", "-n", "dev"]);
    assert!(gone.contains("NotFound"), "{gone}");
    let pod = k.ok(&["get", "pods", "-n", "prod", "-o", "name"]);
    let pod = pod.lines().next().unwrap().to_owned();
    let deleted = k.ok(&["delete", "-n", "prod", &pod]);
    assert!(deleted.contains("deleted"), "{deleted}");

    k.ok(&["create", "namespace", "scratch"]);
    k.ok(&[
        "create",
        "configmap",
        "c",
        "-n",
        "scratch",
        "--from-literal=a=b",
    ]);
    let ns = k.ok(&["delete", "namespace", "scratch"]);
    assert!(ns.contains(r#"namespace "scratch" deleted"#), "{ns}");
    let gone = k.fails(&["get", "namespace", "scratch"]);
    assert!(gone.contains("NotFound"), "{gone}");
    let removed = k.ok(&["delete", "secrets", "-n", "dev", "--all"]);
    assert!(removed.contains("db-credentials"), "{removed}");
    teardown(rt, sandbox);
}

#[test]
fn logs_api_resources_and_exec() {
    let Some((rt, sandbox, k)) = setup(Seed::Default) else {
        return;
    };
    let pods = k.ok(&["get", "pods", "-n", "dev", "-l", "app=web", "-o", "name"]);
    let logs: Vec<String> = pods
        .lines()
        .map(|p| k.ok(&["logs", "-n", "dev", p]))
        .collect();
    assert!(
        logs.iter()
            .any(|l| l.contains("-----BEGIN RSA PRIVATE KEY-----")),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("\"Authorization\": \"Bearer eyJ")),
        "{logs:?}"
    );
    let first = pods.lines().next().unwrap();
    let tail = k.ok(&["logs", "-n", "dev", first, "--tail=1"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");

    let resources = k.ok(&["api-resources"]);
    for row in [
        "deployments",
        "clusterrolebindings",
        "serviceaccounts",
        "events",
    ] {
        assert!(resources.contains(row), "{resources}");
    }
    assert!(
        resources.contains("apps/v1") && resources.contains("rbac.authorization.k8s.io/v1"),
        "{resources}"
    );
    let namespaced = k.ok(&["api-resources", "--namespaced=false", "-o", "name"]);
    assert!(
        namespaced.contains("namespaces") && !namespaced.contains("pods"),
        "{namespaced}"
    );

    let exec = k.fails(&["exec", "-n", "dev", first, "--", "cat", "/etc/hostname"]);
    assert!(
        exec.contains("not supported by the kubeleash sandbox"),
        "{exec}"
    );
    teardown(rt, sandbox);
}
