//! The agent's own access reviews (`kubectl auth can-i`, `--list`), answered by the layer from
//! the policy and narrowed by the API server's answer about the layer's credential.
//!
//! The stand-in upstream answers SelfSubjectAccessReviews as RBAC would for the credential:
//! allowed everywhere but in namespace `locked`, with a reason naming the credential's binding
//! (which must never reach the agent).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use kubeleash_core::policy::{Identity, Policy};
use kubeleash_core::record::{Outcome, Stream};
use kubeleash_tower::{
    BoxError, Credential, Durable, KubeleashLayer, Mode, RecordBody, RecordError, Recorder,
};
use serde_json::{Value, json};
use tower::{Service, ServiceBuilder, ServiceExt};

const POLICY: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  rules:
    - {name: read-dev, effect: allow, verbs: [get, list, watch], resources: [pods, configmaps], namespaces: [dev, locked]}
    - {name: no-prod, effect: deny, reason: production is off limits, verbs: ["*"], apiGroups: ["*"], resources: ["*"], namespaces: [prod]}
    - {name: bindings-need-a-human, effect: approve, verbs: [create], apiGroups: [rbac.authorization.k8s.io], resources: [rolebindings]}
"#;

const BINDING: &str = "operator-secret-binding";

/// One request the stand-in received: method, target, authorization header, body.
type Seen = (String, String, String, Bytes);

/// What the stand-in received.
#[derive(Clone, Default)]
struct Upstream {
    /// Every request: method, target, authorization header, body.
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Answer reviews with 500.
    broken: Arc<AtomicBool>,
}

impl Upstream {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn service(
        &self,
    ) -> impl Service<
        Request<Full<Bytes>>,
        Response = Response<Full<Bytes>>,
        Error = BoxError,
        Future: Send,
    > + Clone
    + Send
    + use<> {
        let up = self.clone();
        tower::service_fn(move |req: Request<Full<Bytes>>| {
            let up = up.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                let auth = parts
                    .headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                up.seen.lock().unwrap().push((
                    parts.method.to_string(),
                    parts.uri.to_string(),
                    auth,
                    body.clone(),
                ));
                if up.broken.load(Ordering::SeqCst) {
                    return Ok::<_, BoxError>(
                        Response::builder()
                            .status(500)
                            .body(Full::new(Bytes::from_static(b"boom")))
                            .unwrap(),
                    );
                }
                let mut review: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
                let ns = review["spec"]["resourceAttributes"]["namespace"].clone();
                let allowed = ns != "locked";
                review["status"] = json!({
                    "allowed": allowed,
                    "reason": format!("RBAC: allowed by ClusterRoleBinding \"{BINDING}\""),
                });
                Ok(Response::builder()
                    .status(201)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(review.to_string())))
                    .unwrap())
            }
        })
    }
}

/// Keeps every record.
#[derive(Clone, Default)]
struct Keep(Arc<Mutex<Vec<RecordBody>>>);

impl Recorder for Keep {
    fn record(&self, r: RecordBody) -> Result<(), RecordError> {
        self.0.lock().unwrap().push(r);
        Ok(())
    }

    fn record_durable(&self, r: RecordBody) -> Durable<'_> {
        let r = self.record(r);
        Box::pin(async move { r })
    }
}

fn layer(keep: &Keep, mode: Mode) -> KubeleashLayer {
    KubeleashLayer::new(Policy::from_yaml(POLICY).unwrap())
        .identity(Identity::new("agent-1", ["agents"]))
        .credential(Credential::token("operator-token").unwrap())
        .recorder(keep.clone())
        .mode(mode)
}

fn review(kind: &str, spec: Value) -> Request<Full<Bytes>> {
    let resource = match kind {
        "SelfSubjectAccessReview" => "selfsubjectaccessreviews",
        _ => "selfsubjectrulesreviews",
    };
    let body = json!({"kind": kind, "apiVersion": "authorization.k8s.io/v1", "spec": spec});
    Request::builder()
        .method("POST")
        .uri(format!("/apis/authorization.k8s.io/v1/{resource}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn can_i(verb: &str, group: &str, resource: &str, ns: &str) -> Request<Full<Bytes>> {
    review(
        "SelfSubjectAccessReview",
        json!({"resourceAttributes": {"verb": verb, "group": group, "resource": resource, "namespace": ns}}),
    )
}

async fn call<S>(svc: &S, req: Request<Full<Bytes>>) -> (u16, Value)
where
    S: Service<Request<Full<Bytes>>> + Clone,
    S::Response: Into<Response<kubeleash_tower::KubeleashBody<Full<Bytes>>>>,
    S::Error: std::fmt::Debug,
{
    let resp: Response<_> = svc.clone().oneshot(req).await.unwrap().into();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn reviews_sent(up: &Upstream) -> Vec<Value> {
    up.seen()
        .into_iter()
        .filter(|(_, t, _, _)| t.contains("selfsubjectaccessreviews"))
        .map(|(_, _, auth, body)| {
            assert_eq!(
                auth, "Bearer operator-token",
                "the server check uses the credential"
            );
            serde_json::from_slice(&body).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn can_i_is_answered_from_the_policy_and_the_credential() {
    let up = Upstream::default();
    let keep = Keep::default();
    let svc = ServiceBuilder::new()
        .layer(layer(&keep, Mode::Enforce))
        .service(up.service());

    // Allowed by the policy and by the credential: yes.
    let (status, yes) = call(&svc, can_i("list", "", "pods", "dev")).await;
    assert_eq!(status, 201, "{yes}");
    assert_eq!(yes["status"]["allowed"], true, "{yes}");
    assert_eq!(yes["kind"], "SelfSubjectAccessReview");
    assert!(
        yes["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("read-dev")
    );
    // The credential was asked once, with a review built from the attributes.
    let sent = reviews_sent(&up);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["spec"]["resourceAttributes"]["namespace"], "dev");
    // The same question again: the server's answer is reused.
    let (_, again) = call(&svc, can_i("list", "", "pods", "dev")).await;
    assert_eq!(again["status"]["allowed"], true);
    assert_eq!(reviews_sent(&up).len(), 1, "cached");

    // Denied by the policy: no, denied, and the server is not asked.
    let (status, no) = call(&svc, can_i("get", "", "configmaps", "prod")).await;
    assert_eq!(status, 201);
    assert_eq!(
        (
            no["status"]["allowed"].clone(),
            no["status"]["denied"].clone()
        ),
        (json!(false), json!(true))
    );
    assert!(
        no["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("production is off limits"),
        "{no}"
    );
    assert_eq!(reviews_sent(&up).len(), 1);

    // Allowed by the policy, not by the credential: no, and the server's reason stays out.
    let (_, locked) = call(&svc, can_i("list", "", "pods", "locked")).await;
    assert_eq!(locked["status"]["allowed"], false, "{locked}");
    let reason = locked["status"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("the cluster credential kubeleash holds may not do it"),
        "{reason}"
    );
    assert!(!locked.to_string().contains(BINDING), "{locked}");
    assert!(!yes.to_string().contains(BINDING), "{yes}");

    // Held for approval: not allowed, not denied, and said so; the credential is not asked
    // (that would let an agent map its RBAC through a catch-all approve rule).
    let asked = reviews_sent(&up).len();
    let (_, held) = call(
        &svc,
        can_i("create", "rbac.authorization.k8s.io", "rolebindings", "dev"),
    )
    .await;
    assert_eq!(held["status"]["allowed"], false, "{held}");
    assert!(held["status"].get("denied").is_none(), "{held}");
    assert!(
        held["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("a person's approval")
    );
    assert_eq!(
        reviews_sent(&up).len(),
        asked,
        "a held question is not asked of the server"
    );

    // Nothing but the server checks went upstream: the agent's reviews themselves never did.
    for (method, target, _, _) in up.seen() {
        assert_eq!(
            (method.as_str(), target.as_str()),
            (
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
            )
        );
    }

    // Each review is recorded as answered by kubeleash.
    let records = keep.0.lock().unwrap().clone();
    assert_eq!(records.len(), 5, "{records:#?}");
    for r in &records {
        assert_eq!(r.decision.outcome, Outcome::Answered);
        let resp = r.response.as_ref().unwrap();
        assert_eq!((resp.status, resp.stream), (201, Stream::Answered));
        assert!(
            r.decision
                .reason
                .starts_with("kubeleash answers the agent's own access reviews")
        );
    }
    assert!(
        records[2]
            .decision
            .reason
            .contains("no: kubeleash denies it"),
        "{}",
        records[2].decision.reason
    );
}

#[tokio::test]
async fn an_agent_cannot_smuggle_anything_into_the_credentials_review() {
    let up = Upstream::default();
    let keep = Keep::default();
    let svc = ServiceBuilder::new()
        .layer(layer(&keep, Mode::Enforce))
        .service(up.service());
    let req = review(
        "SelfSubjectAccessReview",
        json!({
            "resourceAttributes": {"verb": "list", "resource": "pods", "namespace": "dev", "fieldSelector": {"rawSelector": "smuggled=1"}},
            "user": "smuggled-user", "groups": ["system:masters"], "extra": {"smuggled": ["1"]},
        }),
    );
    let (status, answer) = call(&svc, req).await;
    assert_eq!(status, 201, "{answer}");
    let sent = reviews_sent(&up);
    assert_eq!(sent.len(), 1);
    assert!(!sent[0].to_string().contains("smuggled"), "{}", sent[0]);
    // Nor does it come back: the answer is the question as read. (The record keeps the
    // agent's request, masked, as it keeps every request.)
    assert!(!answer.to_string().contains("smuggled"), "{answer}");
    assert_eq!(
        answer["spec"],
        json!({"resourceAttributes": {"verb": "list", "resource": "pods", "namespace": "dev"}})
    );
}

#[tokio::test]
async fn a_server_that_cannot_answer_leaves_the_policys_answer_with_a_note() {
    let up = Upstream::default();
    up.broken.store(true, Ordering::SeqCst);
    let svc = ServiceBuilder::new()
        .layer(layer(&Keep::default(), Mode::Enforce))
        .service(up.service());
    let (_, answer) = call(&svc, can_i("list", "", "pods", "dev")).await;
    assert_eq!(answer["status"]["allowed"], true, "{answer}");
    assert!(
        answer["status"]["evaluationError"]
            .as_str()
            .unwrap()
            .contains("could not ask the API server"),
        "{answer}"
    );
    assert!(!answer.to_string().contains("boom"));
}

#[tokio::test]
async fn a_rules_review_is_the_policys_and_asks_nobody() {
    let up = Upstream::default();
    let svc = ServiceBuilder::new()
        .layer(layer(&Keep::default(), Mode::Enforce))
        .service(up.service());
    let (status, list) = call(
        &svc,
        review("SelfSubjectRulesReview", json!({"namespace": "dev"})),
    )
    .await;
    assert_eq!(status, 201, "{list}");
    let rules = list["status"]["resourceRules"].as_array().unwrap();
    assert!(
        rules
            .iter()
            .any(|r| r["resources"] == json!(["pods", "configmaps"])),
        "{list}"
    );
    assert_eq!(list["status"]["incomplete"], true);
    assert!(
        list["status"]["evaluationError"]
            .as_str()
            .unwrap()
            .contains("bindings-need-a-human")
    );
    assert!(up.seen().is_empty());
    // Malformed: the API server's error, nothing sent.
    let (status, bad) = call(&svc, review("SelfSubjectRulesReview", json!({}))).await;
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["kind"], "Status");
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn in_audit_mode_and_under_impersonation_the_review_is_not_kubeleashs() {
    // Audit mode lets everything through: the API server's answer about the credential is the
    // true one, so the review goes to it as sent.
    let up = Upstream::default();
    let svc = ServiceBuilder::new()
        .layer(layer(&Keep::default(), Mode::Audit))
        .service(up.service());
    let (status, answer) = call(&svc, can_i("get", "", "configmaps", "prod")).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        answer["status"]["allowed"], true,
        "the server's answer: {answer}"
    );
    assert_eq!(up.seen().len(), 1);

    // A review about someone else (impersonation) is a request like any: the policy decides
    // the impersonation, and this one has no rule for it.
    let up = Upstream::default();
    let svc = ServiceBuilder::new()
        .layer(layer(&Keep::default(), Mode::Enforce))
        .service(up.service());
    let mut req = can_i("get", "", "pods", "dev");
    req.headers_mut()
        .insert("impersonate-user", "someone-else".parse().unwrap());
    let (status, answer) = call(&svc, req).await;
    assert_eq!(status, 403, "{answer}");
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn kubectl_auth_whoami_is_the_agent_never_the_credential() {
    let up = Upstream::default();
    let keep = Keep::default();
    let svc = ServiceBuilder::new()
        .layer(layer(&keep, Mode::Enforce))
        .service(up.service());
    let req = Request::builder()
        .method("POST")
        .uri("/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"kind":"SelfSubjectReview","apiVersion":"authentication.k8s.io/v1","metadata":{"creationTimestamp":null},"status":{}}"#,
        )))
        .unwrap();
    let (status, me) = call(&svc, req).await;
    assert_eq!(status, 201, "{me}");
    assert_eq!(me["kind"], "SelfSubjectReview");
    assert_eq!(
        me["status"]["userInfo"],
        json!({"username": "agent-1", "groups": ["agents"]})
    );
    assert!(up.seen().is_empty(), "nothing went upstream");
    let records = keep.0.lock().unwrap().clone();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].decision.outcome, Outcome::Answered);
}
