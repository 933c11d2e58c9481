//! What the sandbox holds at start.
//!
//! The default seed looks like a small real cluster, and its secrets look like real secrets on
//! purpose: it is what the masker is tested on. Every credential here is made up for the sandbox
//! (the key material in `material/` was generated for it and is trusted nowhere; the AWS pair is
//! AWS's documented example).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use std::io::Write as _;

use crate::catalog;
use crate::defaults;
use crate::fields;
use crate::ids::Ids;
use crate::store::{Inner, Store};
use crate::time;

/// Which objects the sandbox starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Seed {
    /// A small cluster: namespaces `default`, `kube-system`, `dev`, `prod`, with deployments,
    /// pods (and their logs), services, service accounts, RBAC, events, config maps and secrets
    /// of every common type.
    #[default]
    Default,
    /// Only the `default` namespace.
    Empty,
}

const CLUSTER_CA: &str = include_str!("material/cluster-ca.crt");
const WEB_TLS_CRT: &str = include_str!("material/web-tls.crt");
const WEB_TLS_KEY: &str = include_str!("material/web-tls.key");
const DEPLOY_KEY: &str = include_str!("material/deploy-key.pem");

const DAY: i64 = 86_400;

/// The namespace of the service account whose token a seeded pod leaks in its log.
const LEAKED_TOKEN_NAMESPACE: &str = "dev";

fn b64(s: &str) -> String {
    STANDARD.encode(s)
}

struct Seeder<'a> {
    store: &'a mut Inner,
    ids: &'a Ids,
    now: i64,
}

impl Seeder<'_> {
    /// Store `object` as if created `age` seconds ago by `manager`.
    fn add(&mut self, mut object: Value, age: i64, manager: &str) -> Value {
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        let Some(def) = catalog::index_of(kind).and_then(catalog::by_index) else {
            return object;
        };
        let Some(index) = catalog::index_of(kind) else {
            return object;
        };
        let created = time::rfc3339(self.now - age);
        defaults::on_create(def, &mut object, self.ids, &created);
        let set = fields::changed_fields(None, &object);
        fields::record(
            &mut object,
            manager,
            "Update",
            &def.api_version(),
            None,
            set,
            &created,
        );
        let ns = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        self.store.put((index, ns, name), object)
    }

    /// Like `add`, for a manifest applied with client-side `kubectl apply`: the manifest as
    /// written, `stringData` and literal env values included, is kept in the last-applied
    /// annotation (keys sorted, trailing newline, as kubectl writes it).
    fn apply(&mut self, manifest: Value, age: i64) -> Value {
        let mut object = manifest.clone();
        let annotation = format!("{manifest}\n");
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            let ann = meta.entry("annotations").or_insert_with(|| json!({}));
            if let Some(a) = ann.as_object_mut() {
                a.insert(
                    "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
                    json!(annotation),
                );
            }
        }
        self.add(object, age, "kubectl-client-side-apply")
    }
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

fn service_account(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}})
}

fn root_ca(ns: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kube-root-ca.crt", "namespace": ns,
            "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
        "data": {"ca.crt": CLUSTER_CA}})
}

/// A legacy (non-expiring) service-account token as the token controller wrote them before 1.24.
fn legacy_token(ids: &Ids, ns: &str, sa: &str, sa_uid: &str, secret: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = json!({"alg": "RS256", "kid": URL_SAFE_NO_PAD.encode(ids.bytes(32))});
    let claims = json!({
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": ns,
        "kubernetes.io/serviceaccount/secret.name": secret,
        "kubernetes.io/serviceaccount/service-account.name": sa,
        "kubernetes.io/serviceaccount/service-account.uid": sa_uid,
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
    });
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(ids.bytes(256))
    )
}

/// A Helm 3 release secret payload: the release JSON, gzipped, base64-encoded by Helm (and once
/// more by the API, as all secret data).
fn helm_release(values: &Value) -> String {
    let release = json!({
        "name": "payments",
        "namespace": "prod",
        "version": 1,
        "info": {"status": "deployed", "description": "Install complete",
                 "first_deployed": "2025-03-02T10:15:04Z", "last_deployed": "2025-03-02T10:15:04Z"},
        "chart": {"metadata": {"name": "payments", "version": "1.4.2", "appVersion": "2.9.0",
                               "apiVersion": "v2", "type": "application"},
                  "values": {"replicaCount": 1, "image": {"repository": "registry.example.com/shop/payments"}}},
        "config": values,
        "manifest": "---\n# Source: payments/templates/deployment.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: payments\n",
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = gz.write_all(release.to_string().as_bytes());
    let packed = gz.finish().unwrap_or_default();
    STANDARD.encode(STANDARD.encode(packed))
}

struct App<'a> {
    ns: &'a str,
    name: &'a str,
    image: &'a str,
    replicas: usize,
    env: Value,
    port: u16,
    service_account: &'a str,
}

fn deployment_manifest(app: &App<'_>) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app.name, "namespace": app.ns, "labels": {"app": app.name}},
        "spec": {
            "replicas": app.replicas,
            "selector": {"matchLabels": {"app": app.name}},
            "template": {
                "metadata": {"labels": {"app": app.name}},
                "spec": {
                    "serviceAccountName": app.service_account,
                    "containers": [{
                        "name": app.name,
                        "image": app.image,
                        "ports": [{"containerPort": app.port, "name": "http"}],
                        "env": app.env,
                    }],
                },
            },
        },
    })
}

/// The pods a ReplicaSet of `deployment` would have made, each with a log.
fn pods_of(s: &mut Seeder<'_>, deployment: &Value, age: i64, logs: &[String]) {
    let ns = deployment
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = deployment
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let hash = defaults::template_hash(deployment);
    let rs = format!("{name}-{hash}");
    let replicas = deployment
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    let template = deployment
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(json!({}));
    for i in 0..replicas {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod"});
        let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
        meta["name"] = json!(format!("{rs}-{}", s.ids.suffix(5)));
        meta["namespace"] = json!(ns);
        meta["generateName"] = json!(format!("{rs}-"));
        meta["labels"]["pod-template-hash"] = json!(hash);
        meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
            "uid": s.ids.uid(), "controller": true, "blockOwnerDeletion": true}]);
        pod["metadata"] = meta;
        pod["spec"] = template.get("spec").cloned().unwrap_or(json!({}));
        let stored = s.add(pod, age, "kube-controller-manager");
        let pod_name = stored
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let container = stored
            .pointer("/spec/containers/0/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let log = logs
            .get(i as usize)
            .or(logs.last())
            .cloned()
            .unwrap_or_default();
        s.store.set_log(ns, pod_name, container, log);
    }
}

/// A core/v1 Event about `object` (kind, name), reported by `component`.
fn event(
    ns: &str,
    name: &str,
    object: (&str, &str),
    what: (&str, &str, &str),
    component: &str,
    at: &str,
) -> Value {
    let (kind, object) = object;
    let (typ, reason, message) = what;
    json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {"apiVersion": if kind == "Deployment" { "apps/v1" } else { "v1" },
                           "kind": kind, "name": object, "namespace": ns},
        "reason": reason, "message": message, "type": typ,
        "source": {"component": component},
        "firstTimestamp": at, "lastTimestamp": at, "count": 1,
        "reportingComponent": component, "reportingInstance": ""})
}

/// Fill `store` with `seed`.
pub fn load(seed: Seed, store: &Store, ids: &Ids) {
    let mut inner = store.lock();
    let mut s = Seeder {
        store: &mut inner,
        ids,
        now: time::now(),
    };
    match seed {
        Seed::Empty => {
            s.add(namespace("default"), 30 * DAY, "kube-apiserver");
        }
        Seed::Default => default_cluster(&mut s),
    }
    inner.forget_history();
}

fn default_cluster(s: &mut Seeder<'_>) {
    for ns in ["default", "kube-system"] {
        s.add(namespace(ns), 30 * DAY, "kube-apiserver");
    }
    for ns in ["dev", "prod"] {
        s.apply(namespace(ns), 21 * DAY);
    }
    let mut sa_uids = std::collections::HashMap::new();
    for (ns, sa) in [
        ("default", "default"),
        ("kube-system", "default"),
        ("kube-system", "coredns"),
        ("dev", "default"),
        ("dev", "web"),
        ("dev", "deployer"),
        ("prod", "default"),
        ("prod", "payments"),
    ] {
        let stored = s.add(service_account(ns, sa), 21 * DAY, "kube-controller-manager");
        let uid = stored
            .pointer("/metadata/uid")
            .cloned()
            .unwrap_or(Value::Null);
        sa_uids.insert((ns, sa), uid);
        s.add(root_ca(ns), 21 * DAY, "kube-controller-manager");
    }
    seed_secrets(s, &sa_uids);
    seed_config(s);
    seed_workloads(s);
    seed_rbac(s);
}

fn seed_secrets(s: &mut Seeder<'_>, sa_uids: &std::collections::HashMap<(&str, &str), Value>) {
    // Applied with stringData, so the last-applied annotation holds the password in plain text.
    s.apply(
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db-credentials", "namespace": "dev", "labels": {"app": "web"}},
            "type": "Opaque",
            "stringData": {"username": "app", "password": "S3cr3t-Db-P4ssw0rd!",
                           "url": "postgres://app:S3cr3t-Db-P4ssw0rd!@db.dev.svc.cluster.local:5432/shop"}}),
        14 * DAY,
    );
    s.add(
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "web-tls", "namespace": "prod", "labels": {"app": "web"}},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": b64(WEB_TLS_CRT), "tls.key": b64(WEB_TLS_KEY)}}),
        10 * DAY,
        "cert-manager-certificates-issuing",
    );
    let auth = b64("ci-bot:rg-7Jq2xW9vLp4NzT8c");
    let docker = json!({"auths": {"registry.example.com": {"username": "ci-bot",
        "password": "rg-7Jq2xW9vLp4NzT8c", "auth": auth}}});
    for ns in ["dev", "prod"] {
        s.add(
            json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "regcred", "namespace": ns},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": b64(&docker.to_string())}}),
            20 * DAY,
            "kubectl-create",
        );
    }
    let uid = sa_uids
        .get(&("dev", "deployer"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let token = legacy_token(s.ids, "dev", "deployer", &uid, "deployer-token");
    s.add(
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "deployer-token", "namespace": "dev",
                "annotations": {"kubernetes.io/service-account.name": "deployer",
                                "kubernetes.io/service-account.uid": uid}},
            "type": "kubernetes.io/service-account-token",
            "data": {"token": b64(&token), "ca.crt": b64(CLUSTER_CA), "namespace": b64("dev")}}),
        21 * DAY,
        "kube-controller-manager",
    );
    s.add(
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "sh.helm.release.v1.payments.v1", "namespace": "prod",
                "labels": {"name": "payments", "owner": "helm", "status": "deployed", "version": "1"}},
            "type": "helm.sh/release.v1",
            "data": {"release": helm_release(&json!({
                "database": {"host": "payments-db.prod.svc", "user": "payments", "password": "H3lm-V4lues-Pa55w0rd"},
                "gateway": {"apiKey": "pgw_live_51Hc9sT2eZvKYlo2CkQ8wXr0n"},
                "replicaCount": 2}))}}),
        12 * DAY,
        "helm",
    );
    s.add(
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "aws-credentials", "namespace": "prod"},
            "type": "Opaque",
            "data": {"AWS_ACCESS_KEY_ID": b64("AKIAIOSFODNN7EXAMPLE"),
                     "AWS_SECRET_ACCESS_KEY": b64("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")}}),
        9 * DAY,
        "kubectl-create",
    );
    s.add(
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "git-credentials", "namespace": "default"},
            "type": "kubernetes.io/basic-auth",
            "data": {"username": b64("deploy-bot"), "password": b64("gh-Pa55-for-deploy-bot")}}),
        7 * DAY,
        "kubectl-create",
    );
    s.add(
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "deploy-ssh-key", "namespace": "default"},
            "type": "kubernetes.io/ssh-auth",
            "data": {"ssh-privatekey": b64(DEPLOY_KEY)}}),
        7 * DAY,
        "kubectl-create",
    );
    s.add(
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "bootstrap-token-7x2k9q", "namespace": "kube-system"},
            "type": "bootstrap.kubernetes.io/token",
            "data": {"token-id": b64("7x2k9q"), "token-secret": b64("m4c8r2t6v0y3b7d1"),
                     "usage-bootstrap-authentication": b64("true"),
                     "usage-bootstrap-signing": b64("true"),
                     "auth-extra-groups": b64("system:bootstrappers:kubeadm:default-node-token")}}),
        30 * DAY,
        "kubeadm",
    );
}

fn seed_config(s: &mut Seeder<'_>) {
    s.apply(
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "app-config", "namespace": "dev", "labels": {"app": "web"}},
            "data": {
                "DATABASE_URL": "postgres://app:S3cr3t-Db-P4ssw0rd!@db.dev.svc.cluster.local:5432/shop?sslmode=require",
                "LOG_LEVEL": "debug",
                "FEATURE_FLAGS": "checkout-v2,fast-search"}}),
        14 * DAY,
    );
    s.add(
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "data": {"Corefile": ".:53 {\n    errors\n    health {\n       lameduck 5s\n    }\n    ready\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n       pods insecure\n       fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }\n    prometheus :9153\n    forward . /etc/resolv.conf {\n       max_concurrent 1000\n    }\n    cache 30\n    loop\n    reload\n    loadbalance\n}\n"}}),
        30 * DAY,
        "kubeadm",
    );
}

/// A log timestamp `ms` milliseconds after `start` (seconds since the epoch).
fn stamp(start: i64, ms: i64) -> String {
    let at = start * 1000 + ms;
    let secs = time::rfc3339(at.div_euclid(1000));
    format!("{}.{:03}Z", secs.trim_end_matches('Z'), at.rem_euclid(1000))
}

/// Logs of the two web pods, started at `start`: the first leaks a service-account token (a
/// debug dump of request headers) and a private key (a "dump for debugging" of its client
/// certificate), as applications really do.
fn web_logs(ids: &Ids, start: i64) -> Vec<String> {
    let leaked = ids.service_account_jwt(
        LEAKED_TOKEN_NAMESPACE,
        "web",
        &ids.uid(),
        &["https://kubernetes.default.svc.cluster.local".to_owned()],
        start,
        start + 365 * DAY,
    );
    let t = |ms| stamp(start, ms);
    let first = format!(
        "{} INFO  starting web 1.8.3 (commit 4c1e9a2)\n\
         {} INFO  config loaded from /etc/web/config.yaml\n\
         {} INFO  connected to postgres at db.dev.svc.cluster.local:5432\n\
         {} DEBUG kubernetes client: GET https://10.96.0.1:443/api/v1/namespaces/dev/configmaps/app-config\n\
         {} DEBUG request headers: {{\"Accept\": \"application/json\", \"Authorization\": \"Bearer {leaked}\"}}\n\
         {} WARN  TLS client certificate configured from inline PEM; dumping for debugging:\n\
         {DEPLOY_KEY}\
         {} INFO  listening on :8080\n\
         {} INFO  GET /healthz 200 0.4ms\n\
         {} INFO  POST /api/checkout 201 38.2ms user=4411\n",
        t(114),
        t(131),
        t(402),
        t(1010),
        t(1011),
        t(1250),
        t(1251),
        t(99_870),
        t(130_033),
    );
    let second = format!(
        "{} INFO  starting web 1.8.3 (commit 4c1e9a2)\n\
         {} INFO  config loaded from /etc/web/config.yaml\n\
         {} INFO  connected to postgres at db.dev.svc.cluster.local:5432\n\
         {} INFO  listening on :8080\n\
         {} INFO  GET /healthz 200 0.3ms\n",
        t(201),
        t(230),
        t(511),
        t(530),
        t(102_002),
    );
    vec![first, second]
}

fn seed_workloads(s: &mut Seeder<'_>) {
    let web = deployment_manifest(&App {
        ns: "dev",
        name: "web",
        image: "registry.example.com/shop/web:1.8.3",
        replicas: 2,
        port: 8080,
        service_account: "web",
        env: json!([
            {"name": "LOG_LEVEL", "value": "debug"},
            {"name": "DATABASE_URL", "value": "postgres://app:S3cr3t-Db-P4ssw0rd!@db.dev.svc.cluster.local:5432/shop"},
            {"name": "API_TOKEN", "value": "sk-dev-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"},
            {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db-credentials", "key": "password"}}}
        ]),
    });
    let stored = s.apply(web, 14 * DAY);
    let logs = web_logs(s.ids, s.now - 3 * DAY);
    pods_of(s, &stored, 3 * DAY, &logs);

    let payments = deployment_manifest(&App {
        ns: "prod",
        name: "payments",
        image: "registry.example.com/shop/payments:2.9.0",
        replicas: 2,
        port: 8443,
        service_account: "payments",
        env: json!([
            {"name": "PAYMENT_GATEWAY_API_KEY", "value": "pgw_live_51Hc9sT2eZvKYlo2CkQ8wXr0n"},
            {"name": "JWT_SIGNING_SECRET", "value": "b2f7c1e9d4a8f3b6c0e5d9a2f7b1c4e8"},
            {"name": "DB_USER", "value": "payments"},
            {"name": "DB_PASSWORD", "value": "H3lm-V4lues-Pa55w0rd"}
        ]),
    });
    let mut payments = payments;
    payments["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("Helm");
    payments["metadata"]["annotations"] =
        json!({"meta.helm.sh/release-name": "payments", "meta.helm.sh/release-namespace": "prod"});
    let stored = s.add(payments, 12 * DAY, "helm");
    let t = |ms| stamp(s.now - 2 * DAY, ms);
    let log = format!(
        "{} level=info msg=\"payments 2.9.0 starting\"\n\
         {} level=info msg=\"gateway client ready\" endpoint=https://api.gateway.example.com\n\
         {} level=error msg=\"db connect failed, retrying\" dsn=\"postgres://payments:H3lm-V4lues-Pa55w0rd@payments-db.prod.svc:5432/payments\"\n\
         {} level=info msg=\"db connected\"\n\
         {} level=info msg=\"listening\" addr=:8443\n",
        t(1),
        t(120),
        t(121),
        t(2140),
        t(2141),
    );
    pods_of(s, &stored, 2 * DAY, &[log]);

    let mut coredns = deployment_manifest(&App {
        ns: "kube-system",
        name: "coredns",
        image: "registry.k8s.io/coredns/coredns:v1.12.0",
        replicas: 1,
        port: 53,
        service_account: "coredns",
        env: json!([]),
    });
    coredns["metadata"]["labels"] = json!({"k8s-app": "kube-dns"});
    coredns["spec"]["selector"] = json!({"matchLabels": {"k8s-app": "kube-dns"}});
    coredns["spec"]["template"]["metadata"]["labels"] = json!({"k8s-app": "kube-dns"});
    coredns["spec"]["template"]["spec"]["containers"][0]["args"] =
        json!(["-conf", "/etc/coredns/Corefile"]);
    if let Some(c) = coredns
        .pointer_mut("/spec/template/spec/containers/0")
        .and_then(Value::as_object_mut)
    {
        c.remove("env");
    }
    let stored = s.add(coredns, 30 * DAY, "kubeadm");
    let log = ".:53\n[INFO] plugin/reload: Running configuration SHA512 = 1b226df79860026c6a52e67daa10d7f0d57ec5b023288ec00c5e05f93523c894564e15b91770d3a07ae1cfbe861d15b37d4a0027e69c546ab112970993a3b03b\nCoreDNS-1.12.0\nlinux/amd64, go1.23.3, 51e11f1\n".to_owned();
    pods_of(s, &stored, 30 * DAY, &[log]);

    for svc in [
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}}),
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
            "spec": {"clusterIP": "10.96.0.10", "selector": {"k8s-app": "kube-dns"},
                     "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                               {"name": "dns-tcp", "port": 53}, {"name": "metrics", "port": 9153}]}}),
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "dev", "labels": {"app": "web"}},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "payments", "namespace": "prod", "labels": {"app": "payments"}},
            "spec": {"selector": {"app": "payments"}, "ports": [{"name": "https", "port": 443, "targetPort": 8443}]}}),
    ] {
        s.add(svc, 14 * DAY, "kubectl-create");
    }

    let at = time::rfc3339(s.now - 3 * DAY);
    for ev in [
        event(
            "dev",
            "web.17f1a2b3c4d5e6f7",
            ("Deployment", "web"),
            (
                "Normal",
                "ScalingReplicaSet",
                "Scaled up replica set web-7d4b9c8f6 to 2",
            ),
            "deployment-controller",
            &at,
        ),
        event(
            "dev",
            "web-pod.17f1a2b3c4d5e700",
            ("Pod", "web"),
            (
                "Normal",
                "Pulled",
                "Container image \"registry.example.com/shop/web:1.8.3\" already present on machine",
            ),
            "kubelet",
            &at,
        ),
        event(
            "prod",
            "payments.17f1a2b3c4d5e711",
            ("Pod", "payments"),
            (
                "Warning",
                "BackOff",
                "Back-off restarting failed container payments in pod payments",
            ),
            "kubelet",
            &at,
        ),
    ] {
        s.add(ev, 3 * DAY, "kubelet");
    }
}

fn seed_rbac(s: &mut Seeder<'_>) {
    let rbac = "rbac.authorization.k8s.io/v1";
    let bootstrap = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    for role in [
        json!({"apiVersion": rbac, "kind": "ClusterRole",
            "metadata": {"name": "cluster-admin", "labels": bootstrap,
                         "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                      {"nonResourceURLs": ["*"], "verbs": ["*"]}]}),
        json!({"apiVersion": rbac, "kind": "ClusterRole",
            "metadata": {"name": "view", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults",
                         "rbac.authorization.k8s.io/aggregate-to-edit": "true"}},
            "rules": [{"apiGroups": [""], "resources": ["configmaps", "events", "pods", "pods/log", "serviceaccounts", "services", "namespaces"], "verbs": ["get", "list", "watch"]},
                      {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"], "verbs": ["get", "list", "watch"]}]}),
        json!({"apiVersion": rbac, "kind": "ClusterRole",
            "metadata": {"name": "edit", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults",
                         "rbac.authorization.k8s.io/aggregate-to-admin": "true"}},
            "rules": [{"apiGroups": [""], "resources": ["configmaps", "pods", "secrets", "services", "serviceaccounts"], "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]},
                      {"apiGroups": [""], "resources": ["pods/exec", "pods/attach", "pods/portforward", "serviceaccounts/token"], "verbs": ["create", "get"]},
                      {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"], "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]}]}),
    ] {
        s.add(role, 30 * DAY, "kube-apiserver");
    }
    s.add(
        json!({"apiVersion": rbac, "kind": "ClusterRoleBinding",
            "metadata": {"name": "cluster-admin", "labels": bootstrap},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}]}),
        30 * DAY,
        "kube-apiserver",
    );
    s.apply(
        json!({"apiVersion": rbac, "kind": "Role",
            "metadata": {"name": "deployer", "namespace": "dev"},
            "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "patch", "update"]},
                      {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]},
                      {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["db-credentials"], "verbs": ["get"]}]}),
        14 * DAY,
    );
    s.apply(
        json!({"apiVersion": rbac, "kind": "RoleBinding",
            "metadata": {"name": "deployer", "namespace": "dev"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"},
            "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": "dev"}]}),
        14 * DAY,
    );
    s.apply(
        json!({"apiVersion": rbac, "kind": "RoleBinding",
            "metadata": {"name": "developers-view", "namespace": "prod"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "developers"},
                         {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice@example.com"}]}),
        14 * DAY,
    );
}
