//! kube-rs through the layer against a real kube-apiserver v1.34.4 (`tests/cluster/start.sh`,
//! one per test binary, see cli/tests/support/cluster.rs), reached as `kubeleash-operator` with
//! its client certificate: the operator's RBAC (tests/cluster/operator-rbac.yaml) reads
//! everything and writes configmaps, secrets... in dev and prod only.
//!
//! Needs kube's `rustls-tls` and `ring` features (the server is HTTPS with client certificates).
//! tower-layer's own kube dev-dependency does not enable them; `cargo test --workspace` does (the
//! CLI enables them and features unify), as does
//! `cargo test -p kubeleash-tower -p kubeleash-cli --test kube_rs_real`.

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
use kubeleash_tower::KubeleashLayer;

const POLICY: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: kube-rs-real}
spec:
  rules:
    - {name: read-dev, effect: allow, verbs: [get, list, watch], apiGroups: [""], resources: [secrets, configmaps, pods], namespaces: [dev]}
    - {name: write-dev, effect: allow, verbs: [create, patch, delete], apiGroups: [""], resources: [configmaps], namespaces: [dev]}
    # Allowed by kubeleash, forbidden by the operator's RBAC.
    - {name: configmaps-in-default, effect: allow, verbs: [create], apiGroups: [""], resources: [configmaps], namespaces: [default]}
    - {name: delete-dev, effect: allow, verbs: [delete], apiGroups: [""], resources: [namespaces], names: [dev]}
    - {name: protect-prod, effect: deny, verbs: [delete], apiGroups: [""], resources: [namespaces], names: [prod]}
"#;

/// A kube-rs client for the real cluster as kubeleash-operator, through the layer.
async fn client() -> Client {
    let c = tokio::task::spawn_blocking(cluster::cluster).await.unwrap();
    let kubeconfig = Kubeconfig::read_from(c.operator_cert_kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    assert_eq!(
        config.cluster_url.to_string().trim_end_matches('/'),
        c.server()
    );
    let layer = KubeleashLayer::new(Policy::from_yaml(POLICY).unwrap())
        .identity(Identity::new("agent-1", ["ai-agents"]));
    match ClientBuilder::try_from(config) {
        Ok(b) => b.with_layer(&layer).build(),
        Err(kube::Error::TlsRequired) => panic!(
            "kube was built without a TLS stack, and the real API server is HTTPS: enable kube's \
             `rustls-tls` and `ring` features for tower-layer's tests (its kube dev-dependency), \
             or run with `-p kubeleash-tower -p kubeleash-cli` so the CLI's features apply"
        ),
        Err(e) => panic!("cannot build the client: {e}"),
    }
}

fn configmap(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"k": "v"}}))
        .unwrap()
}

/// What the admin (not through kubeleash) sees of `kind/name` in `ns`: `None` if not found.
fn admin_get(kind: &str, name: &str, ns: &str) -> Option<serde_json::Value> {
    let (ok, out) = cluster::cluster().admin(&["get", kind, name, "-n", ns, "-o", "json"]);
    if !ok {
        assert!(out.contains("NotFound"), "{out}");
        return None;
    }
    Some(serde_json::from_str(&out).unwrap())
}

fn api_error(r: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn list_get_create_patch_delete() {
    let cms: Api<ConfigMap> = Api::namespaced(client().await, "dev");
    let list = cms.list(&ListParams::default()).await.unwrap();
    assert!(
        list.items
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some("app-config")),
        "the seed's app-config is listed"
    );
    let got = cms.get("app-config").await.unwrap();
    assert_eq!(got.data.unwrap()["LOG_LEVEL"], "debug");

    let name = "kube-rs-real-crud";
    let made = cms
        .create(&PostParams::default(), &configmap(name))
        .await
        .unwrap();
    assert!(made.metadata.uid.is_some(), "the real server gave it a uid");
    let patched = cms
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"patched": "yes"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.as_ref().unwrap()["patched"], "yes");
    let real = admin_get("configmap", name, "dev").expect("created for real");
    assert_eq!(
        real["data"],
        serde_json::json!({"k": "v", "patched": "yes"})
    );

    cms.delete(name, &DeleteParams::default()).await.unwrap();
    let status = api_error(cms.get(name).await);
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert!(admin_get("configmap", name, "dev").is_none());
}

#[tokio::test]
async fn secrets_come_masked() {
    let secrets: Api<Secret> = Api::namespaced(client().await, "dev");
    let list = secrets.list(&ListParams::default()).await.unwrap();
    let mut values = 0;
    for s in &list.items {
        let name = s.metadata.name.clone().unwrap();
        let real = admin_get("secret", &name, "dev").unwrap();
        for (k, v) in s.data.clone().unwrap_or_default() {
            assert_eq!(v.0, b"[masked]", "secret {name} key {k} was not masked");
            // The real value is something else (and never came through).
            assert_ne!(real["data"][&k], "W21hc2tlZF0=", "{name} {k}");
            values += 1;
        }
    }
    assert!(values >= 5, "dev holds secrets with values: {values}");
    let one = secrets.get("db-credentials").await.unwrap();
    assert_eq!(one.data.unwrap()["password"].0, b"[masked]");
}

#[tokio::test]
async fn a_write_the_policy_denies_never_reaches_the_server() {
    let client = client().await;
    // The operator's RBAC allows writes in prod; the policy gives the agent nothing there.
    let prod: Api<ConfigMap> = Api::namespaced(client.clone(), "prod");
    let status = api_error(
        prod.create(&PostParams::default(), &configmap("kube-rs-denied"))
            .await,
    );
    assert_eq!(status.code, 403);
    assert!(
        status
            .message
            .contains("kubeleash: no rule allows create on configmaps in namespace prod"),
        "{}",
        status.message
    );
    assert!(admin_get("configmap", "kube-rs-denied", "prod").is_none());

    let namespaces: Api<Namespace> = Api::all(client);
    let status = api_error(namespaces.delete("prod", &DeleteParams::default()).await);
    assert_eq!(status.code, 403);
    assert!(
        status.message.contains("protect-prod"),
        "{}",
        status.message
    );
    let prod = admin_get("namespace", "prod", "default").unwrap();
    assert_eq!(prod["status"]["phase"], "Active");
}

#[tokio::test]
async fn what_rbac_forbids_is_the_servers_403_unchanged() {
    let client = client().await;
    let default: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let status = api_error(
        default
            .create(&PostParams::default(), &configmap("kube-rs-rbac"))
            .await,
    );
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
    assert!(admin_get("configmap", "kube-rs-rbac", "default").is_none());

    let namespaces: Api<Namespace> = Api::all(client);
    let status = api_error(namespaces.delete("dev", &DeleteParams::default()).await);
    assert_eq!(
        (status.code, status.message.as_str()),
        (
            403,
            "namespaces \"dev\" is forbidden: User \"kubeleash-operator\" cannot delete resource \
             \"namespaces\" in API group \"\" in the namespace \"dev\""
        )
    );
}

#[tokio::test]
async fn a_watch_streams_what_happens() {
    let cms: Api<ConfigMap> = Api::namespaced(client().await, "dev");
    let name = "kube-rs-real-watched";
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().timeout(30), &rv)
        .await
        .unwrap()
        .boxed();
    cms.create(&PostParams::default(), &configmap(name))
        .await
        .unwrap();
    let added = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = stream.try_next().await.unwrap() {
            if let WatchEvent::Added(cm) = ev
                && cm.metadata.name.as_deref() == Some(name)
            {
                return cm;
            }
        }
        panic!("the watch ended before the event");
    })
    .await
    .expect("the event arrived while the watch was open");
    assert_eq!(added.data.unwrap()["k"], "v");
    cms.delete(name, &DeleteParams::default()).await.unwrap();
}
