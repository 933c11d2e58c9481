//! kube-rs through the layer, end to end, against two API servers: every scenario runs on both.
//!
//! - **sandbox**: `kubeleash_sandbox` in this process, a fresh one (default seed) per scenario;
//!   reached without credentials; it has no RBAC.
//! - **real**: a real kube-apiserver v1.34.4 + etcd (`tests/cluster/start.sh`), one per test
//!   binary, started by the first scenario that needs it and shared by all (see
//!   cli/tests/support/cluster.rs); seeded like the sandbox. The layer reaches it as
//!   `kubeleash-operator` with its client certificate: a restricted RBAC user that reads
//!   everything and writes configmaps, secrets... in dev and prod only
//!   (tests/cluster/operator-rbac.yaml). A cluster that does not start fails the `real` tests.
//!
//! `both!(scenario)` makes `scenario::sandbox` and `scenario::real` of one `async fn
//! scenario(Server)`; `cargo test -p kubeleash-tower --test kube_rs sandbox` runs the fast half
//! only. None of these scenarios needs a kubelet (logs, exec and attach are covered by the CLI's
//! and the bindings' sandbox suites). Where the two servers answer differently the scenario
//! asserts each one's own answer in a `match` marked DIFFERENCE; the real server is the judge.
//!
//! The real cluster is shared by scenarios running in parallel: each one names what it creates
//! `kube-rs-...` with a name no other scenario uses. What is really on a server is checked with
//! an unguarded client (the "judge"): the sandbox itself, or the real cluster's admin.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "../../cli/tests/support/cluster.rs"]
mod cluster;

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use kubeleash_core::policy::{Identity, Policy};
use kubeleash_sandbox::{Sandbox, Seed};
use kubeleash_tower::{Answer, ApprovalRequest, Approver, KubeleashLayer};
use tokio::sync::{mpsc, oneshot};

const POLICY: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: kube-rs-tests}
spec:
  # The window test approves Secret creates for a time; the default floor would approve them
  # exactly (tests/widening.rs tests the floor).
  approvals: {neverWiden: [{verbs: [delete]}]}
  rules:
    - {name: read-dev, effect: allow, verbs: [get, list, watch], apiGroups: [""], resources: [secrets, configmaps, pods], namespaces: [dev]}
    - {name: write-dev, effect: allow, verbs: [create, patch, delete], apiGroups: [""], resources: [configmaps], namespaces: [dev]}
    - {name: secrets-need-a-human, effect: approve, verbs: [create], apiGroups: [""], resources: [secrets], namespaces: [dev]}
    # kubeleash allows these two; the operator's RBAC on the real server does not.
    - {name: configmaps-in-default, effect: allow, verbs: [create], apiGroups: [""], resources: [configmaps], namespaces: [default]}
    - {name: delete-dev, effect: allow, verbs: [delete], apiGroups: [""], resources: [namespaces], names: [dev]}
    - {name: protect-prod, effect: deny, verbs: [delete], apiGroups: [""], resources: [namespaces], names: [prod]}
"#;

/// dev/db-credentials' password in both seeds (sandbox/src/seed, tests/cluster/seed.yaml).
const DB_PASSWORD: &str = "S3cr3t-Db-P4ssw0rd!";
/// A bound on waits that normally take milliseconds (a prompt, a retry let through): a
/// failure bound under load, never a measurement.
const PATIENCE: Duration = Duration::from_secs(60);

/// The API server behind the layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    /// A fresh in-process sandbox per scenario (default seed, no RBAC, no credentials).
    Sandbox,
    /// The shared real kube-apiserver, as kubeleash-operator (client certificate).
    Real,
}

/// `both!(scenario)`: the scenario on the sandbox (`scenario::sandbox`) and on the real server
/// (`scenario::real`).
macro_rules! both {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test]
            async fn sandbox() {
                super::$scenario(super::Server::Sandbox).await;
            }
            #[tokio::test]
            async fn real() {
                super::$scenario(super::Server::Real).await;
            }
        }
    };
}

/// One scenario's server: the operator's configuration (guarded clients are built from it) and
/// an unguarded judge.
struct World {
    server: Server,
    config: kube::Config,
    /// Full rights, not through kubeleash: the sandbox itself, or the real cluster's admin.
    judge: Client,
    sandbox: Option<Sandbox>,
}

impl World {
    async fn new(server: Server) -> World {
        match server {
            Server::Sandbox => {
                let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), Seed::Default)
                    .await
                    .unwrap();
                let config = kube::Config::new(sandbox.url().parse().unwrap());
                let judge = Client::try_from(config.clone()).unwrap();
                World {
                    server,
                    config,
                    judge,
                    sandbox: Some(sandbox),
                }
            }
            Server::Real => {
                let c = tokio::task::spawn_blocking(cluster::cluster).await.unwrap();
                let config = kubeconfig(&c.operator_cert_kubeconfig()).await;
                assert_eq!(
                    config.cluster_url.to_string().trim_end_matches('/'),
                    c.server()
                );
                let judge = build(Client::try_from(kubeconfig(&c.admin_kubeconfig()).await));
                World {
                    server,
                    config,
                    judge,
                    sandbox: None,
                }
            }
        }
    }

    /// A kube-rs client as the operator, through `layer`.
    fn client(&self, layer: &KubeleashLayer) -> Client {
        build(ClientBuilder::try_from(self.config.clone()).map(|b| b.with_layer(layer).build()))
    }

    /// The judge's view of `name` in `ns`: `None` if not found.
    async fn judge_get<K>(&self, ns: &str, name: &str) -> Option<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        Api::<K>::namespaced(self.judge.clone(), ns)
            .get_opt(name)
            .await
            .unwrap()
    }

    async fn namespace_phase(&self, name: &str) -> Option<String> {
        let ns = Api::<Namespace>::all(self.judge.clone())
            .get_opt(name)
            .await
            .unwrap()?;
        Some(ns.status.and_then(|s| s.phase).unwrap_or_default())
    }

    async fn end(self) {
        if let Some(sandbox) = self.sandbox {
            sandbox.shutdown().await;
        }
    }
}

async fn kubeconfig(path: &std::path::Path) -> kube::Config {
    let kubeconfig = Kubeconfig::read_from(path).unwrap();
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap()
}

/// The client, or a failure saying why (a kube without TLS cannot reach the real server).
fn build(client: kube::Result<Client>) -> Client {
    match client {
        Ok(c) => c,
        Err(kube::Error::TlsRequired) => panic!(
            "kube was built without a TLS stack, and the real API server is HTTPS: enable kube's \
             `rustls-tls` and `ring` features for tower-layer's tests (its kube dev-dependency)"
        ),
        Err(e) => panic!("cannot build the client: {e}"),
    }
}

/// An approver the test answers through a channel.
struct Channel(mpsc::Sender<(ApprovalRequest, oneshot::Sender<Answer>)>);

#[async_trait::async_trait]
impl Approver for Channel {
    async fn approve(&self, request: ApprovalRequest) -> Answer {
        let (tx, rx) = oneshot::channel();
        if self.0.send((request, tx)).await.is_err() {
            return Answer::Deny {
                by: "test".into(),
                reason: "test approver gone".into(),
            };
        }
        rx.await.unwrap_or(Answer::Deny {
            by: "test".into(),
            reason: "no answer".into(),
        })
    }
}

fn layer() -> KubeleashLayer {
    KubeleashLayer::new(Policy::from_yaml(POLICY).unwrap())
        .identity(Identity::new("agent-1", ["ai-agents"]))
}

fn configmap(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"k": "v"}}))
        .unwrap()
}

fn secret(name: &str, password: &str) -> Secret {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name}, "stringData": {"password": password}
    }))
    .unwrap()
}

fn api_error(r: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------

both!(secrets_are_masked_and_still_decode);
async fn secrets_are_masked_and_still_decode(server: Server) {
    let w = World::new(server).await;
    let secrets: Api<Secret> = Api::namespaced(w.client(&layer()), "dev");
    let list = secrets.list(&ListParams::default()).await.unwrap();
    let mut values = 0;
    for s in &list.items {
        let name = s.metadata.name.clone().unwrap();
        let real: Secret = w.judge_get("dev", &name).await.unwrap();
        let real = real.data.unwrap_or_default();
        for (k, v) in s.data.clone().unwrap_or_default() {
            assert_eq!(v.0, b"[masked]", "secret {name} key {k} was not masked");
            // The server holds something else, which never came through.
            assert_ne!(real[&k].0, b"[masked]", "{name} {k}");
            values += 1;
        }
    }
    assert!(values >= 5, "dev holds secrets with values: {values}");
    let one = secrets.get("db-credentials").await.unwrap();
    assert_eq!(one.data.unwrap()["password"].0, b"[masked]");
    let real: Secret = w.judge_get("dev", "db-credentials").await.unwrap();
    assert_eq!(real.data.unwrap()["password"].0, DB_PASSWORD.as_bytes());
    w.end().await;
}

both!(list_get_create_patch_delete);
async fn list_get_create_patch_delete(server: Server) {
    let w = World::new(server).await;
    let cms: Api<ConfigMap> = Api::namespaced(w.client(&layer()), "dev");
    let list = cms.list(&ListParams::default()).await.unwrap();
    assert!(
        list.items
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some("app-config")),
        "the seed's app-config is listed"
    );
    let got = cms.get("app-config").await.unwrap();
    assert_eq!(got.data.unwrap()["LOG_LEVEL"], "debug");

    let name = "kube-rs-crud";
    let made = cms
        .create(&PostParams::default(), &configmap(name))
        .await
        .unwrap();
    assert!(made.metadata.uid.is_some(), "the server gave it a uid");
    let patched = cms
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"patched": "yes"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.as_ref().unwrap()["patched"], "yes");
    let real: ConfigMap = w.judge_get("dev", name).await.expect("created for real");
    assert_eq!(
        serde_json::to_value(real.data).unwrap(),
        serde_json::json!({"k": "v", "patched": "yes"})
    );

    cms.delete(name, &DeleteParams::default()).await.unwrap();
    let status = api_error(cms.get(name).await);
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert!(w.judge_get::<ConfigMap>("dev", name).await.is_none());
    w.end().await;
}

both!(a_request_the_policy_denies_is_a_403_and_never_reaches_the_server);
async fn a_request_the_policy_denies_is_a_403_and_never_reaches_the_server(server: Server) {
    let w = World::new(server).await;
    let client = w.client(&layer());
    // On the real server the operator's RBAC allows writes in prod: the refusal is the policy's.
    let name = "kube-rs-denied";
    let prod: Api<ConfigMap> = Api::namespaced(client.clone(), "prod");
    let status = api_error(prod.create(&PostParams::default(), &configmap(name)).await);
    assert_eq!(status.code, 403);
    assert!(
        status
            .message
            .contains("kubeleash: no rule allows create on configmaps in namespace prod"),
        "{}",
        status.message
    );
    assert!(w.judge_get::<ConfigMap>("prod", name).await.is_none());
    // What the code gets: the refusal as fields, with the request the policy allows instead.
    assert!(
        status
            .message
            .ends_with("the nearest request the policy allows: create on configmaps in namespace dev (rule \"write-dev\")"),
        "{}",
        status.message
    );
    let details = status.details.as_ref().expect("details");
    assert_eq!(
        (details.kind.as_str(), details.group.as_str()),
        ("configmaps", "")
    );
    let cause = |field: &str| {
        details
            .causes
            .iter()
            .find(|c| c.field == field)
            .map(|c| c.message.clone())
            .unwrap_or_else(|| panic!("no cause {field}: {details:?}"))
    };
    assert_eq!(cause("kubeleash.rule"), "none");
    assert!(cause("kubeleash.approval").starts_with("none for this request"));
    assert_eq!(cause("kubeleash.nearest.namespace"), "dev");
    assert_eq!(cause("kubeleash.nearest.verb"), "create");
    assert_eq!(cause("kubeleash.nearest.resource"), "configmaps");

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "prod");
    let status = api_error(secrets.list(&ListParams::default()).await);
    assert_eq!(status.code, 403);
    assert!(
        status
            .message
            .contains("no rule allows list on secrets in namespace prod"),
        "{}",
        status.message
    );

    let namespaces: Api<Namespace> = Api::all(client);
    let status = api_error(namespaces.delete("prod", &DeleteParams::default()).await);
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert!(
        status.message.contains("kubeleash") && status.message.contains("protect-prod"),
        "{}",
        status.message
    );
    assert_eq!(w.namespace_phase("prod").await.as_deref(), Some("Active"));
    w.end().await;
}

both!(what_rbac_forbids_is_the_servers_403_unchanged);
/// kubeleash allows it; the operator's RBAC on the real server does not.
async fn what_rbac_forbids_is_the_servers_403_unchanged(server: Server) {
    let w = World::new(server).await;
    let client = w.client(&layer());
    let name = "kube-rs-rbac";
    let default: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = default
        .create(&PostParams::default(), &configmap(name))
        .await;
    let namespaces: Api<Namespace> = Api::all(client);
    let deleted = namespaces.delete("dev", &DeleteParams::default()).await;
    match server {
        Server::Real => {
            let status = api_error(created);
            assert_eq!(
                (status.code, status.reason.as_str(), status.message.as_str()),
                (
                    403,
                    "Forbidden",
                    "configmaps is forbidden: User \"kubeleash-operator\" cannot create resource \
                     \"configmaps\" in API group \"\" in the namespace \"default\""
                )
            );
            let details = status.details.expect("the server's Status has details");
            assert_eq!(details.kind, "configmaps");
            assert!(w.judge_get::<ConfigMap>("default", name).await.is_none());

            let status = api_error(deleted);
            assert_eq!(
                (status.code, status.message.as_str()),
                (
                    403,
                    "namespaces \"dev\" is forbidden: User \"kubeleash-operator\" cannot delete \
                     resource \"namespaces\" in API group \"\" in the namespace \"dev\""
                )
            );
            assert_eq!(w.namespace_phase("dev").await.as_deref(), Some("Active"));
        }
        Server::Sandbox => {
            // DIFFERENCE: the sandbox has no RBAC: what kubeleash allows is done.
            assert_eq!(created.unwrap().metadata.name.as_deref(), Some(name));
            assert!(w.judge_get::<ConfigMap>("default", name).await.is_some());
            deleted.unwrap();
            assert_eq!(
                w.namespace_phase("dev").await.as_deref(),
                Some("Terminating")
            );
        }
    }
    w.end().await;
}

both!(approval_holds_the_request_until_answered);
async fn approval_holds_the_request_until_answered(server: Server) {
    let w = World::new(server).await;
    let (tx, mut rx) = mpsc::channel(4);
    let secrets: Api<Secret> = Api::namespaced(w.client(&layer().approver(Channel(tx))), "dev");

    let create = tokio::spawn({
        let secrets = secrets.clone();
        async move {
            secrets
                .create(
                    &PostParams::default(),
                    &secret("kube-rs-approved", "hunter2-approved"),
                )
                .await
        }
    });
    let (req, answer) = tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(req.rule.as_deref(), Some("secrets-need-a-human"));
    assert_eq!(req.kubectl, "kubectl create -n dev -f -");
    let body = req.body.unwrap_or_default();
    assert!(body.contains("\"kube-rs-approved\""), "{body}");
    assert!(
        !body.contains("hunter2-approved"),
        "the person is shown the body masked: {body}"
    );
    assert!(
        !create.is_finished(),
        "the request is held while the approver thinks"
    );
    answer
        .send(Answer::Approve {
            by: "alice".into(),
            window: None,
        })
        .unwrap();
    let created = create.await.unwrap().unwrap();
    assert_eq!(created.metadata.name.as_deref(), Some("kube-rs-approved"));
    let real: Secret = w.judge_get("dev", "kube-rs-approved").await.unwrap();
    assert_eq!(
        real.data.unwrap()["password"].0,
        b"hunter2-approved",
        "the server got the body the agent sent, not the masked one the person saw"
    );

    let create = tokio::spawn({
        let secrets = secrets.clone();
        async move {
            secrets
                .create(&PostParams::default(), &secret("kube-rs-refused", "pw"))
                .await
        }
    });
    let (_, answer) = rx.recv().await.unwrap();
    answer
        .send(Answer::Deny {
            by: "bob".into(),
            reason: "not today".into(),
        })
        .unwrap();
    let status = api_error(create.await.unwrap());
    assert_eq!(status.code, 403);
    assert!(
        status.message.contains("bob denied") && status.message.contains("not today"),
        "{}",
        status.message
    );
    assert!(
        w.judge_get::<Secret>("dev", "kube-rs-refused")
            .await
            .is_none(),
        "a denied create never reaches the server"
    );
    w.end().await;
}

both!(approval_times_out_as_a_denial_and_no_approver_denies);
async fn approval_times_out_as_a_denial_and_no_approver_denies(server: Server) {
    let w = World::new(server).await;
    let (tx, _rx) = mpsc::channel(4);
    let slow = layer()
        .approver(Channel(tx))
        .approval_timeout(Duration::from_millis(300));
    let secrets: Api<Secret> = Api::namespaced(w.client(&slow), "dev");
    let status = api_error(
        secrets
            .create(&PostParams::default(), &secret("kube-rs-late", "pw"))
            .await,
    );
    assert!(
        status.code == 403 && status.message.contains("nobody answered"),
        "{}",
        status.message
    );

    let secrets: Api<Secret> = Api::namespaced(w.client(&layer()), "dev");
    let status = api_error(
        secrets
            .create(&PostParams::default(), &secret("kube-rs-nobody", "pw"))
            .await,
    );
    assert!(
        status.code == 403 && status.message.contains("no approver is configured"),
        "{}",
        status.message
    );
    for name in ["kube-rs-late", "kube-rs-nobody"] {
        assert!(w.judge_get::<Secret>("dev", name).await.is_none(), "{name}");
    }
    w.end().await;
}

both!(a_time_window_grant_covers_identical_requests_only);
async fn a_time_window_grant_covers_identical_requests_only(server: Server) {
    let w = World::new(server).await;
    let (tx, mut rx) = mpsc::channel(4);
    let secrets: Api<Secret> = Api::namespaced(w.client(&layer().approver(Channel(tx))), "dev");
    let one = secret("kube-rs-window-one", "pw-one");
    let first = tokio::spawn({
        let (secrets, one) = (secrets.clone(), one.clone());
        async move { secrets.create(&PostParams::default(), &one).await }
    });
    let (_, answer) = rx.recv().await.unwrap();
    answer
        .send(Answer::Approve {
            by: "alice".into(),
            window: Some(Duration::from_secs(60)),
        })
        .unwrap();
    first.await.unwrap().unwrap();
    // The very same request (same body bytes): covered, no prompt; the API server answers it
    // (the object exists now).
    let again = tokio::time::timeout(PATIENCE, secrets.create(&PostParams::default(), &one))
        .await
        .unwrap();
    let status = api_error(again);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists"),
        "{}",
        status.message
    );
    assert!(
        rx.try_recv().is_err(),
        "the grant answered without asking again"
    );
    // Same attributes, another body (the name): a request the person never saw, held again.
    let second = tokio::spawn({
        let secrets = secrets.clone();
        async move {
            secrets
                .create(&PostParams::default(), &secret("kube-rs-window-two", "pw"))
                .await
        }
    });
    let (shown, answer) = tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        shown
            .body
            .unwrap_or_default()
            .contains("\"kube-rs-window-two\"")
    );
    answer
        .send(Answer::Deny {
            by: "alice".into(),
            reason: "not that one".into(),
        })
        .unwrap();
    assert_eq!(api_error(second.await.unwrap()).code, 403);
    // So is the same body with another query (a dry run is another request).
    let third = tokio::spawn({
        let secrets = secrets.clone();
        async move {
            let pp = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            secrets.create(&pp, &one).await
        }
    });
    let (shown, answer) = tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(shown.target.contains("dryRun=All"), "{}", shown.target);
    drop(answer);
    assert_eq!(api_error(third.await.unwrap()).code, 403);
    assert!(
        w.judge_get::<Secret>("dev", "kube-rs-window-two")
            .await
            .is_none()
    );
    w.end().await;
}

both!(a_watch_streams_masked_events_as_they_happen);
async fn a_watch_streams_masked_events_as_they_happen(server: Server) {
    let w = World::new(server).await;
    let name = "kube-rs-watched";
    let secrets: Api<Secret> = Api::namespaced(w.client(&layer()), "dev");
    let rv = secrets
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap_or_else(|| "0".into());
    let mut stream = secrets
        .watch(&WatchParams::default().timeout(60), &rv)
        .await
        .unwrap()
        .boxed();

    // Someone else (the judge, not through kubeleash) makes a secret while the watch is open.
    let writer: Api<Secret> = Api::namespaced(w.judge.clone(), "dev");
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        writer
            .create(&PostParams::default(), &secret(name, "hunter2-fresh"))
            .await
            .unwrap();
    });
    // A failure bound inside the watch's own 60 s.
    let event = tokio::time::timeout(Duration::from_secs(45), async {
        while let Some(e) = stream.try_next().await.unwrap() {
            if let WatchEvent::Added(s) = e
                && s.metadata.name.as_deref() == Some(name)
            {
                return s;
            }
        }
        panic!("the watch ended before the event arrived");
    })
    .await
    .expect("the event arrived while the watch was still open");
    let data = event.data.unwrap_or_default();
    assert_eq!(
        data.get("password").map(|v| v.0.as_slice()),
        Some(&b"[masked]"[..])
    );
    w.end().await;
}

both!(client_new_with_a_service_builder_stack);
async fn client_new_with_a_service_builder_stack(server: Server) {
    use hyper_util::client::legacy::Client as HyperClient;
    use hyper_util::rt::TokioExecutor;
    use kube::client::ConfigExt;
    use tower::ServiceBuilder;

    let w = World::new(server).await;
    // http for the sandbox, https with the operator's client certificate for the real server.
    let connector = w.config.rustls_https_connector().unwrap();
    let http = HyperClient::builder(TokioExecutor::new()).build(connector);
    // The layer goes outside the base URI layer: it refuses any target that names a host, so
    // that no caller can send the operator's credential elsewhere.
    let service = ServiceBuilder::new()
        .layer(layer())
        .layer(w.config.base_uri_layer())
        .option_layer(w.config.auth_layer().unwrap())
        .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
        .service(http);
    let client = Client::new(service, "dev");
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let s = secrets.get("db-credentials").await.unwrap();
    let data = s.data.unwrap_or_default();
    assert!(!data.is_empty() && data.values().all(|v| v.0 == b"[masked]"));
    let prod: Api<Secret> = Api::namespaced(client, "prod");
    assert_eq!(api_error(prod.list(&ListParams::default()).await).code, 403);
    if w.server == Server::Real {
        assert!(w.config.cluster_url.to_string().starts_with("https://"));
    }
    w.end().await;
}

both!(non_blocking_approvals_answer_kube_rs_at_once_and_let_its_retry_through);
/// Non-blocking mode with kube-rs: the held create comes back at once as a 403 naming the
/// approval; once a person approves, the identical retry is created; another body is held anew.
async fn non_blocking_approvals_answer_kube_rs_at_once_and_let_its_retry_through(server: Server) {
    let w = World::new(server).await;
    let (tx, mut rx) = mpsc::channel(4);
    let layer =
        layer()
            .approver(Channel(tx))
            .approval_mode(kubeleash_tower::ApprovalMode::NonBlocking {
                retry_after: Duration::from_secs(1),
            });
    let secrets: Api<Secret> = Api::namespaced(w.client(&layer), "dev");
    let one = secret("kube-rs-nonblocking-one", "pw-nb");
    // Answered at once, before anyone is asked to answer: no task needed.
    let first = api_error(secrets.create(&PostParams::default(), &one).await);
    assert_eq!(first.code, 403, "{}", first.message);
    let (shown, answer) = rx.recv().await.unwrap();
    assert!(
        first.message.contains(&shown.id),
        "the 403 names approval {}: {}",
        shown.id,
        first.message
    );
    // Asked again before anyone answered: the same approval, still pending, not a new prompt.
    let again = api_error(secrets.create(&PostParams::default(), &one).await);
    assert!(again.message.contains(&shown.id), "{}", again.message);
    assert!(rx.try_recv().is_err(), "one prompt for one request");
    answer
        .send(Answer::Approve {
            by: "alice".into(),
            window: None,
        })
        .unwrap();
    // The identical retry goes through once the answer is in (polled: the approver answers on
    // its own task).
    let mut created = None;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        match secrets.create(&PostParams::default(), &one).await {
            Ok(s) => {
                created = Some(s);
                break;
            }
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains(&shown.id) => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(created.is_some(), "the approved retry was created");
    assert!(
        w.judge_get::<Secret>("dev", "kube-rs-nonblocking-one")
            .await
            .is_some()
    );
    // Another body: a request nobody approved, held under a new id.
    let two = api_error(
        secrets
            .create(
                &PostParams::default(),
                &secret("kube-rs-nonblocking-two", "pw"),
            )
            .await,
    );
    let (shown_two, _answer) = rx.recv().await.unwrap();
    assert_ne!(shown_two.id, shown.id);
    assert!(two.message.contains(&shown_two.id), "{}", two.message);
    assert!(
        w.judge_get::<Secret>("dev", "kube-rs-nonblocking-two")
            .await
            .is_none()
    );
    w.end().await;
}
