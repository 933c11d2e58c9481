//! kube-rs through the layer, against the sandbox API server on loopback.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube::client::ClientBuilder;
use kube::{Api, Client};
use kubeleash_core::policy::{Identity, Policy};
use kubeleash_sandbox::{Sandbox, Seed};
use kubeleash_tower::{Answer, ApprovalRequest, Approver, KubeleashLayer};
use tokio::sync::{mpsc, oneshot};

const POLICY: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: tower-tests}
spec:
  rules:
    - {name: read-dev, effect: allow, verbs: [get, list, watch], apiGroups: [""], resources: [secrets, configmaps, pods], namespaces: [dev]}
    - {name: write-dev, effect: allow, verbs: [create, delete], apiGroups: [""], resources: [secrets, configmaps], namespaces: [dev]}
    - {name: configmaps-need-a-human, effect: approve, verbs: [create], apiGroups: [""], resources: [configmaps], namespaces: [dev]}
    - {name: protect-prod, effect: deny, verbs: [delete], apiGroups: [""], resources: [namespaces], names: [prod]}
    - {name: delete-namespaces, effect: allow, verbs: [delete], apiGroups: [""], resources: [namespaces]}
"#;

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

async fn setup(layer: KubeleashLayer) -> (Sandbox, Client) {
    let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), Seed::Default)
        .await
        .unwrap();
    let config = kube::Config::new(sandbox.url().parse().unwrap());
    let client = ClientBuilder::try_from(config)
        .unwrap()
        .with_layer(&layer)
        .build();
    (sandbox, client)
}

fn layer() -> KubeleashLayer {
    KubeleashLayer::new(Policy::from_yaml(POLICY).unwrap())
        .identity(Identity::new("agent-1", ["ai-agents"]))
}

#[tokio::test]
async fn secrets_list_masked_and_still_decodes() {
    let (sandbox, client) = setup(layer()).await;
    let secrets: Api<Secret> = Api::namespaced(client, "dev");
    let list = secrets.list(&ListParams::default()).await.unwrap();
    assert!(!list.items.is_empty(), "the sandbox seeds secrets in dev");
    let mut values = 0;
    for s in &list.items {
        for (k, v) in s.data.clone().unwrap_or_default() {
            assert_eq!(
                v.0, b"[masked]",
                "secret {:?} key {k} was not masked",
                s.metadata.name
            );
            values += 1;
        }
    }
    assert!(values > 0);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn protected_namespace_delete_is_a_403_naming_the_rule() {
    let (sandbox, client) = setup(layer()).await;
    let namespaces: Api<Namespace> = Api::all(client);
    match namespaces.delete("prod", &DeleteParams::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403);
            assert!(
                status.message.contains("protect-prod"),
                "{}",
                status.message
            );
            assert!(status.message.contains("kubeleash"), "{}", status.message);
        }
        other => panic!("expected a 403, got {other:?}"),
    }
    sandbox.shutdown().await;
}

#[tokio::test]
async fn other_namespaces_are_refused() {
    let (sandbox, client) = setup(layer()).await;
    let secrets: Api<Secret> = Api::namespaced(client, "prod");
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403);
            assert!(
                status
                    .message
                    .contains("no rule allows list on secrets in namespace prod"),
                "{}",
                status.message
            );
        }
        other => panic!("expected a 403, got {other:?}"),
    }
    sandbox.shutdown().await;
}

fn configmap(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"k": "v"}}))
        .unwrap()
}

#[tokio::test]
async fn approval_holds_the_request_until_answered() {
    let (tx, mut rx) = mpsc::channel(4);
    let (sandbox, client) = setup(layer().approver(Channel(tx))).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "dev");

    let create = tokio::spawn({
        let cms = cms.clone();
        async move {
            cms.create(&PostParams::default(), &configmap("approved"))
                .await
        }
    });
    let (req, answer) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(req.rule.as_deref(), Some("configmaps-need-a-human"));
    assert_eq!(req.kubectl, "kubectl create -n dev -f -");
    assert!(
        req.body
            .as_deref()
            .unwrap_or_default()
            .contains("\"approved\"")
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
    assert_eq!(created.metadata.name.as_deref(), Some("approved"));

    let create = tokio::spawn({
        let cms = cms.clone();
        async move {
            cms.create(&PostParams::default(), &configmap("refused"))
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
    match create.await.unwrap() {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert!(
                s.message.contains("bob denied") && s.message.contains("not today"),
                "{}",
                s.message
            );
        }
        other => panic!("expected a 403, got {other:?}"),
    }
    assert!(
        cms.get_opt("refused").await.unwrap().is_none(),
        "a denied create never reaches the server"
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn approval_times_out_as_a_denial_and_no_approver_denies() {
    let (tx, _rx) = mpsc::channel(4);
    let (sandbox, client) = setup(
        layer()
            .approver(Channel(tx))
            .approval_timeout(Duration::from_millis(300)),
    )
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "dev");
    match cms.create(&PostParams::default(), &configmap("late")).await {
        Err(kube::Error::Api(s)) => assert!(
            s.code == 403 && s.message.contains("nobody answered"),
            "{}",
            s.message
        ),
        other => panic!("expected a 403, got {other:?}"),
    }
    sandbox.shutdown().await;

    let (sandbox, client) = setup(layer()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "dev");
    match cms
        .create(&PostParams::default(), &configmap("nobody"))
        .await
    {
        Err(kube::Error::Api(s)) => assert!(
            s.code == 403 && s.message.contains("no approver is configured"),
            "{}",
            s.message
        ),
        other => panic!("expected a 403, got {other:?}"),
    }
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_time_window_grant_covers_identical_requests_only() {
    let (tx, mut rx) = mpsc::channel(4);
    let (sandbox, client) = setup(layer().approver(Channel(tx))).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "dev");
    let first = tokio::spawn({
        let cms = cms.clone();
        async move { cms.create(&PostParams::default(), &configmap("one")).await }
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
    let again = tokio::time::timeout(
        Duration::from_secs(5),
        cms.create(&PostParams::default(), &configmap("one")),
    )
    .await
    .unwrap();
    match again {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409, "{}", s.message),
        other => panic!("expected the API server's 409, got {other:?}"),
    }
    assert!(
        rx.try_recv().is_err(),
        "the grant answered without asking again"
    );
    // Same attributes, another body (the name): a request the person never saw, held again.
    let second = tokio::spawn({
        let cms = cms.clone();
        async move { cms.create(&PostParams::default(), &configmap("two")).await }
    });
    let (shown, answer) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(shown.body.unwrap_or_default().contains("\"two\""));
    answer
        .send(Answer::Deny {
            by: "alice".into(),
            reason: "not that one".into(),
        })
        .unwrap();
    match second.await.unwrap() {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{}", s.message),
        other => panic!("expected a 403, got {other:?}"),
    }
    // So is the same body with another query (a dry run is another request).
    let third = tokio::spawn({
        let cms = cms.clone();
        async move {
            let pp = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            cms.create(&pp, &configmap("one")).await
        }
    });
    let (shown, answer) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(shown.target.contains("dryRun=All"), "{}", shown.target);
    drop(answer);
    assert!(third.await.unwrap().is_err());
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_watch_streams_masked_events_as_they_happen() {
    let (sandbox, client) = setup(layer()).await;
    let secrets: Api<Secret> = Api::namespaced(client, "dev");
    let list = secrets.list(&ListParams::default()).await.unwrap();
    let rv = list
        .metadata
        .resource_version
        .clone()
        .unwrap_or_else(|| "0".into());
    let mut stream = secrets
        .watch(&WatchParams::default().timeout(60), &rv)
        .await
        .unwrap()
        .boxed();

    let writer = secrets.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let s: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "fresh"}, "stringData": {"password": "hunter2-fresh"}
        }))
        .unwrap();
        writer.create(&PostParams::default(), &s).await.unwrap();
    });
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = stream.try_next().await.unwrap() {
            if let WatchEvent::Added(s) = e
                && s.metadata.name.as_deref() == Some("fresh")
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
    sandbox.shutdown().await;
}

#[tokio::test]
async fn client_new_with_a_service_builder_stack() {
    use hyper_util::client::legacy::Client as HyperClient;
    use hyper_util::rt::TokioExecutor;
    use kube::client::ConfigExt;
    use tower::ServiceBuilder;

    let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), Seed::Default)
        .await
        .unwrap();
    let config = kube::Config::new(sandbox.url().parse().unwrap());
    let http = HyperClient::builder(TokioExecutor::new()).build_http::<kube::client::Body>();
    // The layer goes outside the base URI layer: it refuses any target that names a host, so
    // that no caller can send the operator's credential elsewhere.
    let service = ServiceBuilder::new()
        .layer(layer())
        .layer(config.base_uri_layer())
        .service(http);
    let client = Client::new(service, "dev");
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let s = secrets.get("db-credentials").await.unwrap();
    assert!(
        s.data
            .unwrap_or_default()
            .values()
            .all(|v| v.0 == b"[masked]")
    );
    let prod: Api<Secret> = Api::namespaced(client, "prod");
    assert!(
        matches!(prod.list(&ListParams::default()).await, Err(kube::Error::Api(s)) if s.code == 403)
    );
    sandbox.shutdown().await;
}
