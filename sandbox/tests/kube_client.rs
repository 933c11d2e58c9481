//! kube-rs typed clients against the sandbox: get, list, watch, create, patch, delete.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use futures_util::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, Namespace, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{
    Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kubeleash_sandbox::{Options, Seed};
use serde_json::json;

/// What a client learns from a failed call: code, reason, message.
struct ApiFailure {
    code: u16,
    reason: String,
    message: String,
}

fn api_error(e: kube::Error) -> ApiFailure {
    match e {
        kube::Error::Api(s) => ApiFailure {
            code: s.code,
            reason: s.reason.clone(),
            message: s.message.clone(),
        },
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn typed_get_and_list_of_every_kind() {
    let sandbox = common::start(Seed::Default).await;
    let client = common::kube_client(&sandbox);
    let names = |l: Vec<String>| l;

    let ns: Vec<String> = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(names(ns), ["default", "dev", "kube-system", "prod"]);

    let secret = Api::<Secret>::namespaced(client.clone(), "dev")
        .get("db-credentials")
        .await
        .unwrap();
    let password = secret.data.unwrap().remove("password").unwrap();
    assert_eq!(password.0, b"S3cr3t-Db-P4ssw0rd!");
    let tls = Api::<Secret>::namespaced(client.clone(), "prod")
        .get("web-tls")
        .await
        .unwrap();
    assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
    let key = String::from_utf8(tls.data.unwrap()["tls.key"].0.clone()).unwrap();
    assert!(key.starts_with("-----BEGIN EC PRIVATE KEY-----"));

    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 5);
    let web = Api::<Pod>::namespaced(client.clone(), "dev")
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(web.items.len(), 2);
    let env = web.items[0].spec.as_ref().unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    assert!(
        env.iter()
            .any(|e| e.name == "API_TOKEN" && e.value.is_some())
    );

    let deploy = Api::<Deployment>::namespaced(client.clone(), "dev")
        .get("web")
        .await
        .unwrap();
    assert_eq!(deploy.status.unwrap().ready_replicas, Some(2));
    let cm = Api::<ConfigMap>::namespaced(client.clone(), "dev")
        .get("app-config")
        .await
        .unwrap();
    assert!(cm.data.unwrap()["DATABASE_URL"].contains("S3cr3t"));
    assert!(
        Api::<ServiceAccount>::namespaced(client.clone(), "dev")
            .get("deployer")
            .await
            .is_ok()
    );
    assert!(
        Api::<Service>::namespaced(client.clone(), "default")
            .get("kubernetes")
            .await
            .is_ok()
    );
    assert!(
        Api::<Event>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len()
            >= 3
    );
    assert!(
        Api::<Role>::namespaced(client.clone(), "dev")
            .get("deployer")
            .await
            .is_ok()
    );
    assert!(
        Api::<RoleBinding>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len()
            >= 2
    );
    assert!(
        Api::<ClusterRole>::all(client.clone())
            .get("cluster-admin")
            .await
            .is_ok()
    );
    assert!(
        Api::<ClusterRoleBinding>::all(client.clone())
            .get("cluster-admin")
            .await
            .is_ok()
    );

    // Field selector on metadata.name, and pagination with limit/continue.
    let one = Api::<Secret>::all(client.clone())
        .list(&ListParams::default().fields("metadata.name=regcred"))
        .await
        .unwrap();
    assert_eq!(one.items.len(), 2);
    let secrets = Api::<Secret>::all(client.clone());
    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(3);
    loop {
        let page = secrets.list(&lp).await.unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.into_iter().filter_map(|s| s.metadata.name));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => {
                lp = ListParams::default().limit(3).continue_token(&token)
            }
            _ => break,
        }
    }
    let all = secrets.list(&ListParams::default()).await.unwrap();
    assert_eq!(seen.len(), all.items.len());
    assert!(seen.len() >= 9, "{seen:?}");

    let err = api_error(
        Api::<Secret>::namespaced(client.clone(), "dev")
            .get("nope")
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert_eq!(err.message, r#"secrets "nope" not found"#);
    let bad = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields("spec.bogus=1"))
        .await
        .unwrap_err();
    assert_eq!(api_error(bad).code, 400);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn typed_create_patch_delete() {
    let sandbox = common::start(Seed::Default).await;
    let client = common::kube_client(&sandbox);
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "dev");

    let generated: ConfigMap = serde_json::from_value(json!({
        "metadata": {"generateName": "job-config-", "labels": {"batch": "1"}},
        "data": {"a": "1"}
    }))
    .unwrap();
    let made = cms
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let name = made.metadata.name.clone().unwrap();
    assert!(
        name.starts_with("job-config-") && name.len() == "job-config-".len() + 5,
        "{name}"
    );
    assert!(made.metadata.uid.is_some() && made.metadata.resource_version.is_some());

    let dup = cms.create(&PostParams::default(), &made).await.unwrap_err();
    assert_eq!(api_error(dup).code, 500, "resourceVersion set on create");
    let mut again = made.clone();
    again.metadata.resource_version = None;
    let dup = api_error(
        cms.create(&PostParams::default(), &again)
            .await
            .unwrap_err(),
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));

    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let mut ghost = generated.clone();
    ghost.metadata.generate_name = None;
    ghost.metadata.name = Some("ghost".into());
    cms.create(&dry, &ghost).await.unwrap();
    assert!(cms.get_opt("ghost").await.unwrap().is_none());

    let merged = cms
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"b": "2", "a": null}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.data.unwrap().into_iter().collect::<Vec<_>>(),
        [("b".into(), "2".into())]
    );
    let jp: json_patch_ops::Ops =
        json_patch_ops::ops(json!([{"op": "add", "path": "/data/c", "value": "3"}]));
    let jsoned = cms
        .patch(&name, &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .unwrap();
    assert_eq!(jsoned.data.unwrap()["c"], "3");
    let failed = cms
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::<()>::Json(json_patch_ops::ops(
                json!([{"op": "test", "path": "/data/c", "value": "9"}]),
            )),
        )
        .await
        .unwrap_err();
    assert_eq!(api_error(failed).code, 422);

    let deployments = Api::<Deployment>::namespaced(client.clone(), "dev");
    let sp = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "env": [{"name": "NEW_VAR", "value": "x"}]}]}}}})),
        )
        .await
        .unwrap();
    let env = sp.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    assert!(
        env.iter().any(|e| e.name == "API_TOKEN"),
        "strategic merge keeps other env entries"
    );
    assert!(env.iter().any(|e| e.name == "NEW_VAR"));
    assert_eq!(sp.metadata.generation, Some(2));

    let applied: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "worker", "namespace": "dev"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "worker"}},
                 "template": {"metadata": {"labels": {"app": "worker"}},
                              "spec": {"containers": [{"name": "w", "image": "worker:1"}]}}}
    }))
    .unwrap();
    let ssa = PatchParams::apply("sandbox-test").force();
    let created = deployments
        .patch("worker", &ssa, &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(created.spec.unwrap().replicas, Some(2));
    let managers: Vec<String> = created
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["sandbox-test"]);
    let scale = deployments.get_scale("worker").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(2));
    deployments
        .patch_scale(
            "worker",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(
        deployments
            .get("worker")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(4)
    );

    let invalid: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "broken"},
        "spec": {"selector": {"matchLabels": {"app": "a"}},
                 "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c"}]}}}
    }))
    .unwrap();
    let e = api_error(
        deployments
            .create(&PostParams::default(), &invalid)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message
            .starts_with(r#"Deployment.apps "broken" is invalid: ["#),
        "{}",
        e.message
    );

    // Delete answers per kind: a Status for secrets, the object for pods and service accounts.
    let secrets = Api::<Secret>::namespaced(client.clone(), "dev");
    let gone = secrets
        .delete("db-credentials", &DeleteParams::default())
        .await
        .unwrap();
    assert!(gone.is_right(), "secrets answer with a Status");
    let pods = Api::<Pod>::namespaced(client.clone(), "dev");
    let pod = pods.list(&ListParams::default()).await.unwrap().items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    let gone = pods.delete(&pod, &DeleteParams::default()).await.unwrap();
    assert!(gone.is_left(), "pods answer with the pod");
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), "dev");
    assert!(
        sas.delete("web", &DeleteParams::default())
            .await
            .unwrap()
            .is_left()
    );
    let nss = Api::<Namespace>::all(client.clone());
    let terminating = nss
        .delete("prod", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(
        terminating.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    let deleted = cms
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("batch=1"),
        )
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(deleted.items.len(), 1);
    // The namespace is finalized a moment after its delete, on a task of the sandbox's: waited
    // for (event, not time); the bound is only for a failure.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while nss.get_opt("prod").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "namespace never finalized"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        Api::<Secret>::namespaced(client.clone(), "prod")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    let token = Api::<ServiceAccount>::namespaced(client.clone(), "dev")
        .create_token_request(
            "deployer",
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    audiences: vec!["vault".into()],
                    expiration_seconds: Some(600),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(token.status.unwrap().token.starts_with("eyJ"));

    let logs = Api::<Pod>::namespaced(client.clone(), "dev");
    let mut texts = Vec::new();
    for p in logs.list(&ListParams::default()).await.unwrap().items {
        texts.push(
            logs.logs(&p.metadata.name.unwrap(), &LogParams::default())
                .await
                .unwrap(),
        );
    }
    assert!(
        texts.iter().all(|t| t.contains("starting web")),
        "{texts:?}"
    );
    sandbox.shutdown().await;
}

/// A bound on waits that normally take milliseconds: a failure bound under load, never a
/// measurement.
const PATIENCE: Duration = Duration::from_secs(30);
/// The watches' own timeout: past every wait of the test.
const WATCH_SECONDS: u32 = 120;

/// The next event on `stream` that is not a periodic bookmark: those come every 200 ms here, so
/// one may come before a change made meanwhile, however quickly the change is made.
async fn next_change<K>(
    stream: &mut (impl futures_util::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin),
) -> Option<WatchEvent<K>> {
    loop {
        match tokio::time::timeout(PATIENCE, stream.try_next())
            .await
            .expect("an event within the bound")
            .unwrap()
        {
            Some(WatchEvent::Bookmark(_)) => {}
            other => return other,
        }
    }
}

#[tokio::test]
async fn typed_watch() {
    let sandbox = common::start_with(
        Options::new(Seed::Default).bookmark_interval(Duration::from_millis(200)),
    )
    .await;
    let client = common::kube_client(&sandbox);
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "dev");

    // From "0": the current state as ADDED, then live changes.
    let mut stream = cms
        .watch(&WatchParams::default().timeout(WATCH_SECONDS), "0")
        .await
        .unwrap()
        .boxed();
    let mut initial = Vec::new();
    while initial.len() < 2 {
        match stream.try_next().await.unwrap() {
            Some(WatchEvent::Added(cm)) => initial.push(cm.metadata.name.unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(initial, ["app-config", "kube-root-ca.crt"]);
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "live"}, "data": {"k": "v"}})).unwrap();
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    match next_change(&mut stream).await {
        Some(WatchEvent::Added(c)) => assert_eq!(c.metadata.name.as_deref(), Some("live")),
        other => panic!("unexpected {other:?}"),
    }

    // From a resourceVersion: only what came after it.
    let rv = created.metadata.resource_version.unwrap();
    cms.patch(
        "live",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "w"}})),
    )
    .await
    .unwrap();
    cms.delete("live", &DeleteParams::default()).await.unwrap();
    let mut resumed = cms
        .watch(&WatchParams::default().timeout(WATCH_SECONDS), &rv)
        .await
        .unwrap()
        .boxed();
    let first = resumed.try_next().await.unwrap();
    assert!(
        matches!(first, Some(WatchEvent::Modified(ref c)) if c.data.as_ref().unwrap()["k"] == "w"),
        "{first:?}"
    );
    assert!(matches!(
        resumed.try_next().await.unwrap(),
        Some(WatchEvent::Deleted(_))
    ));

    // Streaming lists: initial events, then a bookmark marking their end.
    let mut listing = cms
        .watch(&WatchParams::streaming_lists().timeout(WATCH_SECONDS), "")
        .await
        .unwrap()
        .boxed();
    let mut added = 0;
    loop {
        match listing.try_next().await.unwrap() {
            Some(WatchEvent::Added(_)) => added += 1,
            Some(WatchEvent::Bookmark(b)) => {
                assert_eq!(
                    b.metadata
                        .annotations
                        .get("k8s.io/initial-events-end")
                        .map(String::as_str),
                    Some("true")
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(added, 2);
    // Periodic bookmarks (every 200 ms here).
    let bookmark = tokio::time::timeout(PATIENCE, listing.try_next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(bookmark, Some(WatchEvent::Bookmark(_))),
        "{bookmark:?}"
    );

    // A selector watch sees an object leave its selector as DELETED.
    let pods = Api::<Pod>::namespaced(client.clone(), "dev");
    let name = pods.list(&ListParams::default()).await.unwrap().items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    let mut selected = pods
        .watch(
            &WatchParams::default()
                .labels("app=web")
                .timeout(WATCH_SECONDS),
            "0",
        )
        .await
        .unwrap()
        .boxed();
    for _ in 0..2 {
        assert!(matches!(
            selected.try_next().await.unwrap(),
            Some(WatchEvent::Added(_))
        ));
    }
    pods.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    match next_change(&mut selected).await {
        Some(WatchEvent::Deleted(p)) => assert_eq!(p.metadata.name.as_deref(), Some(name.as_str())),
        other => panic!("unexpected {other:?}"),
    }
    drop(selected);
    let _ = stream.next().await;
    sandbox.shutdown().await;
}

/// JSON Patch operations as kube's `Patch::Json` takes them, without depending on the
/// `json-patch` crate's types directly.
mod json_patch_ops {
    pub type Ops = json_patch::Patch;
    pub fn ops(v: serde_json::Value) -> Ops {
        serde_json::from_value(v).unwrap()
    }
}
