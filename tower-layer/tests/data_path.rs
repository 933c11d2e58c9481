//! The layer around a stub inner service: what reaches the server, and concurrency.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use kubeleash_core::policy::{Decision, Effect, Identity, Policy};
use kubeleash_tower::{Answer, ApprovalRequest, Approver, Credential, KubeleashLayer};
use tower::{Service, ServiceBuilder, ServiceExt};

const POLICY: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  rules:
    - {name: read, effect: allow, verbs: [get, list], apiGroups: [""], resources: [configmaps], namespaces: [dev]}
    - {name: held, effect: approve, verbs: [get], apiGroups: [""], resources: [configmaps], namespaces: [dev], names: ["held-*"]}
"#;

type Seen = Arc<Mutex<Vec<HeaderMap>>>;

/// An API server stand-in: answers a ConfigMap named after the request path, and keeps the
/// headers it was sent.
fn server(
    seen: Seen,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future: Send,
> + Clone
+ Send {
    tower::service_fn(move |req: Request<Full<Bytes>>| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock().unwrap().push(req.headers().clone());
            let name = req
                .uri()
                .path()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            let body = format!(
                r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"{name}"}},"data":{{"token":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJlLXRoYXQtaXMtbG9uZw"}}}}"#
            );
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r.headers_mut()
                .insert("content-length", "999".parse().unwrap());
            Ok::<_, Infallible>(r)
        }
    })
}

/// The agent's side: it puts its own credential and an impersonation header on every request.
fn agent_request(path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(path)
        .header("authorization", "Bearer agent-stolen-token")
        .header("impersonate-user", "system:admin")
        .header(
            "accept",
            "application/vnd.kubernetes.protobuf,application/json",
        )
        .header("accept-encoding", "gzip")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn only_the_layers_credential_reaches_the_server() {
    let seen: Seen = Arc::default();
    let policy = Policy::from_yaml(POLICY).unwrap();
    let layer = KubeleashLayer::new(policy)
        .identity(Identity::new("agent", Vec::<String>::new()))
        .credential(Credential::token("operator-token").unwrap());
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(server(Arc::clone(&seen)));

    // Impersonation is refused outright: the policy does not name it.
    let r = svc
        .ready()
        .await
        .unwrap()
        .call(agent_request("/api/v1/namespaces/dev/configmaps/a"))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        seen.lock().unwrap().is_empty(),
        "a refused request never reaches the server"
    );

    let mut req = agent_request("/api/v1/namespaces/dev/configmaps/a");
    req.headers_mut().remove("impersonate-user");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    let r = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.extensions().get::<Decision>().map(|d| d.effect),
        Some(Effect::Allow)
    );
    assert!(
        r.headers().get("content-length").is_none(),
        "the body changes, so its length goes"
    );
    let body = r.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("[masked:jwt]") || text.contains("[masked"),
        "the JWT in a ConfigMap is masked: {text}"
    );
    let headers = seen.lock().unwrap().pop().unwrap();
    assert_eq!(
        headers.get("authorization").unwrap(),
        "Bearer operator-token"
    );
    assert!(
        headers
            .keys()
            .all(|k| !k.as_str().starts_with("impersonate-"))
    );
    assert_eq!(headers.get("accept").unwrap(), "application/json");
    assert!(headers.get("accept-encoding").is_none());
}

#[tokio::test]
async fn the_credential_never_shows_in_debug_or_refusals() {
    let c = Credential::token("super-secret-operator-token").unwrap();
    assert!(!format!("{c:?}").contains("super-secret"));
    let layer = KubeleashLayer::new(Policy::from_yaml(POLICY).unwrap()).credential(c);
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(server(Arc::default()));
    let r = svc
        .ready()
        .await
        .unwrap()
        .call(agent_request("/api/v1/namespaces/prod/secrets"))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert!(!String::from_utf8_lossy(&body).contains("super-secret"));
    let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(status["code"], 403);
}

/// Approves after a delay that depends on the request, so answers come back out of order.
struct Jittery;

#[async_trait::async_trait]
impl Approver for Jittery {
    async fn approve(&self, r: ApprovalRequest) -> Answer {
        let n: u64 = r
            .attributes
            .name
            .trim_start_matches("held-")
            .parse()
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis((n * 7) % 50)).await;
        if n.is_multiple_of(3) {
            Answer::Deny {
                by: "jitter".into(),
                reason: format!("no to {}", r.attributes.name),
            }
        } else {
            Answer::Approve {
                by: "jitter".into(),
                window: None,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_in_flight_none_lost_none_crossed() {
    let layer = KubeleashLayer::new(Policy::from_yaml(POLICY).unwrap())
        .identity(Identity::new("agent", Vec::<String>::new()))
        .approver(Jittery)
        .max_held(200, 200);
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(server(Arc::default()));
    let mut tasks = Vec::new();
    for i in 0..400u32 {
        let mut svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let name = if i.is_multiple_of(2) {
                format!("held-{i}")
            } else {
                format!("plain-{i}")
            };
            let mut req = agent_request(&format!("/api/v1/namespaces/dev/configmaps/{name}"));
            req.headers_mut().remove("impersonate-user");
            let r = svc.ready().await.unwrap().call(req).await.unwrap();
            let status = r.status().as_u16();
            let body = r.into_body().collect().await.unwrap().to_bytes();
            (i, name, status, String::from_utf8_lossy(&body).into_owned())
        }));
    }
    let mut done = 0;
    for t in tasks {
        let (i, name, status, body) = t.await.unwrap();
        let denied = i.is_multiple_of(2) && i.is_multiple_of(3);
        if denied {
            assert_eq!(status, 403, "{name}");
            assert!(
                body.contains(&format!("no to {name}")),
                "{name} got another request's answer: {body}"
            );
        } else {
            assert_eq!(status, 200, "{name}: {body}");
            assert!(
                body.contains(&format!("\"name\":\"{name}\"")),
                "{name} got another request's response: {body}"
            );
        }
        done += 1;
    }
    assert_eq!(done, 400);
}

/// Keeps every record.
#[derive(Clone, Default)]
struct Keep(Arc<Mutex<Vec<kubeleash_tower::RecordBody>>>);

impl kubeleash_tower::Recorder for Keep {
    fn record(&self, r: kubeleash_tower::RecordBody) -> Result<(), kubeleash_tower::RecordError> {
        self.0.lock().unwrap().push(r);
        Ok(())
    }

    fn record_durable(&self, r: kubeleash_tower::RecordBody) -> kubeleash_tower::Durable<'_> {
        self.0.lock().unwrap().push(r);
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn audit_mode_decides_records_and_lets_through() {
    let seen: Seen = Arc::default();
    let keep = Keep::default();
    let layer = KubeleashLayer::new(Policy::from_yaml(POLICY).unwrap())
        .identity(Identity::new("agent", Vec::<String>::new()))
        .recorder(keep.clone())
        .mode(kubeleash_tower::Mode::Audit);
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(server(Arc::clone(&seen)));
    let mut req = agent_request("/api/v1/namespaces/prod/configmaps/x");
    req.headers_mut().remove("impersonate-user");
    let r = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "audit mode forwards what enforce mode would deny"
    );
    assert_eq!(
        r.extensions().get::<Decision>().map(|d| d.effect),
        Some(Effect::Deny)
    );
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert!(
        !String::from_utf8_lossy(&body).contains("eyJhbGciOiJIUzI1NiJ9.eyJzdWIi"),
        "masking still applies in audit mode"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    let records = keep.0.lock().unwrap();
    assert_eq!(records.len(), 1, "one record, written when the body ended");
    assert_eq!(records[0].decision.outcome, "audited");
    assert_eq!(records[0].decision.effect, "deny");
    let response = records[0].response.as_ref().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.stream, "masked");
    assert_eq!(response.bytes as usize, body.len());
}

#[tokio::test]
async fn a_rotated_token_file_is_read_again() {
    let dir = std::env::temp_dir().join(format!("kubeleash-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("token");
    std::fs::write(&path, "first-token\n").unwrap();
    let seen: Seen = Arc::default();
    let layer = KubeleashLayer::new(Policy::from_yaml(POLICY).unwrap())
        .credential(Credential::token_file(&path).unwrap());
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(server(Arc::clone(&seen)));
    let get = || {
        let mut r = agent_request("/api/v1/namespaces/dev/configmaps/a");
        r.headers_mut().remove("impersonate-user");
        r
    };
    svc.ready().await.unwrap().call(get()).await.unwrap();
    // A new mtime, and past the one-second recheck interval.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&path, "second-token\n").unwrap();
    svc.ready().await.unwrap().call(get()).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].get("authorization").unwrap(), "Bearer first-token");
    assert_eq!(seen[1].get("authorization").unwrap(), "Bearer second-token");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_body_over_the_api_servers_limit_is_refused_and_recorded() {
    let keep = Keep::default();
    let seen: Seen = Arc::default();
    let layer = KubeleashLayer::new(Policy::from_yaml(POLICY).unwrap()).recorder(keep.clone());
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(server(Arc::clone(&seen)));
    let big = Bytes::from(vec![b' '; 4 * 1024 * 1024]);
    let req = Request::builder()
        .method("PUT")
        .uri("/api/v1/namespaces/dev/configmaps/a")
        .body(Full::new(big))
        .unwrap();
    let r = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(r.status(), 413);
    assert!(seen.lock().unwrap().is_empty());
    let records = keep.0.lock().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].response.as_ref().map(|r| r.status), Some(413));
}
