//! Non-blocking approvals (`ApprovalMode::NonBlocking`): a held request is answered at once with
//! 403 and its approval id while the approver is asked in the background; the identical request
//! sent again learns the answer, and goes through once when approved.
//!
//! The stand-in upstream counts dry runs (a query with `dryRun=All`) apart from what was really
//! sent.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use kubeleash_core::policy::{Identity, Policy};
use kubeleash_tower::{
    Answer, ApprovalMode, ApprovalRequest, Approver, BoxError, Credential, Durable, KubeleashLayer,
    RecordBody, RecordError, Recorder,
};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tower::{Service, ServiceBuilder, ServiceExt};

const POLICY: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  # Windows on held Secret writes are tested here; the default floor would approve them
  # exactly (tests/widening.rs tests the floor).
  approvals: {neverWiden: [{verbs: [delete]}]}
  rules:
    - {name: read, effect: allow, verbs: [get, list], apiGroups: [""], resources: [secrets], namespaces: [dev]}
    - {name: held, effect: approve, reason: secrets are for people, verbs: [create], apiGroups: [""], resources: [secrets], namespaces: [dev]}
"#;

const SECRETS: &str = "/api/v1/namespaces/dev/secrets";
/// A bound on waits that normally take milliseconds: a failure bound under load, never a
/// measurement.
const PATIENCE: Duration = Duration::from_secs(60);
const BODY: &str =
    r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"a"},"stringData":{"k":"v"}}"#;

/// What the stand-in received: the requests really sent (not dry runs), and how many dry runs.
#[derive(Clone, Default)]
struct Upstream {
    sent: Arc<Mutex<Vec<(String, Bytes)>>>,
    dry_runs: Arc<AtomicUsize>,
}

impl Upstream {
    fn sent(&self) -> Vec<(String, Bytes)> {
        self.sent.lock().unwrap().clone()
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
                let query = parts.uri.query().unwrap_or_default();
                if query.split('&').any(|p| p == "dryRun=All") {
                    up.dry_runs.fetch_add(1, Ordering::SeqCst);
                    return Ok::<_, BoxError>(
                        Response::builder()
                            .status(201)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(BODY)))
                            .unwrap(),
                    );
                }
                if parts.method == http::Method::GET {
                    // The live object a dry run compares with: none.
                    return Ok(Response::builder()
                        .status(404)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(
                            br#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#,
                        )))
                        .unwrap());
                }
                up.sent.lock().unwrap().push((parts.uri.to_string(), body));
                Ok(Response::builder()
                    .status(201)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(BODY)))
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

impl Keep {
    fn all(&self) -> Vec<RecordBody> {
        self.0.lock().unwrap().clone()
    }
}

/// An approver the test answers through a channel.
struct Channel(mpsc::UnboundedSender<(ApprovalRequest, oneshot::Sender<Answer>)>);

#[async_trait::async_trait]
impl Approver for Channel {
    async fn approve(&self, request: ApprovalRequest) -> Answer {
        let (tx, rx) = oneshot::channel();
        if self.0.send((request, tx)).is_err() {
            return Answer::Deny {
                by: "test".into(),
                reason: "gone".into(),
            };
        }
        // Dropped unanswered: the layer's timeout decides.
        match rx.await {
            Ok(a) => a,
            Err(_) => std::future::pending().await,
        }
    }
}

type Prompts = mpsc::UnboundedReceiver<(ApprovalRequest, oneshot::Sender<Answer>)>;

fn layer(approver: Channel, keep: &Keep) -> KubeleashLayer {
    KubeleashLayer::new(Policy::from_yaml(POLICY).unwrap())
        .identity(Identity::new("agent", ["agents"]))
        .credential(Credential::token("operator-token").unwrap())
        .approver(approver)
        .recorder(keep.clone())
        .approval_mode(ApprovalMode::NonBlocking {
            retry_after: Duration::from_secs(10),
        })
}

fn post(target: &str, body: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method("POST")
        .uri(target)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// One answer: status, headers, the body as JSON.
struct Got {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Got {
    fn id(&self) -> String {
        let h = self.headers["x-kubeleash-approval-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(self.body["details"]["uid"], h.as_str(), "{}", self.body);
        h
    }

    fn message(&self) -> &str {
        self.body["message"].as_str().unwrap()
    }
}

async fn call<S>(svc: &S, req: Request<Full<Bytes>>) -> Got
where
    S: Service<
            Request<Full<Bytes>>,
            Response = Response<kubeleash_tower::KubeleashBody<Full<Bytes>>>,
        > + Clone,
    S::Error: std::fmt::Debug,
{
    let mut svc = svc.clone();
    let r = svc.ready().await.unwrap().call(req).await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Got {
        status,
        headers,
        body,
    }
}

/// A held answer: 403, the id in the header, `details.uid`, a cause and the message, and
/// `Retry-After` with `details.retryAfterSeconds`.
fn assert_pending(g: &Got) -> String {
    assert_eq!(g.status, 403, "{}", g.body);
    assert_eq!(g.body["kind"], "Status");
    assert_eq!(g.body["reason"], "Forbidden");
    assert_eq!(g.body["code"], 403);
    let id = g.id();
    assert_eq!(id.len(), 32, "128 random bits");
    assert_eq!(g.headers["retry-after"], "10");
    assert_eq!(g.body["details"]["retryAfterSeconds"], 10);
    assert_eq!(g.body["details"]["causes"][0]["reason"], "ApprovalPending");
    assert!(g.message().contains(&id), "{}", g.message());
    assert!(
        g.message().contains("secrets are for people"),
        "the policy's reason: {}",
        g.message()
    );
    id
}

/// Send `req` again until the held request's answer is known (the background task has taken
/// it); the first answer that is not "pending" under `id`.
async fn until_answered<S>(svc: &S, req: impl Fn() -> Request<Full<Bytes>>, id: &str) -> Got
where
    S: Service<
            Request<Full<Bytes>>,
            Response = Response<kubeleash_tower::KubeleashBody<Full<Bytes>>>,
        > + Clone,
    S::Error: std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let g = call(svc, req()).await;
        let pending = g.status == 403
            && g.headers.contains_key("retry-after")
            && g.headers["x-kubeleash-approval-id"] == id;
        if !pending {
            return g;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "approval {id} stayed pending"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait (event, not time) until a record satisfies `want`.
async fn until_recorded(keep: &Keep, what: &str, want: impl Fn(&RecordBody) -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !keep.all().iter().any(&want) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never recorded: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn no_prompt(prompts: &mut Prompts) {
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(prompts.try_recv().is_err(), "the approver was asked again");
}

#[tokio::test]
async fn held_at_once_then_approved_once() {
    let (tx, mut prompts) = mpsc::unbounded_channel();
    let keep = Keep::default();
    let up = Upstream::default();
    let svc = ServiceBuilder::new()
        .layer(layer(Channel(tx), &keep))
        .service(up.service());

    // Answered at once, nothing sent; the approver is asked in the background, dry run and all.
    let first = call(&svc, post(SECRETS, BODY)).await;
    let id = assert_pending(&first);
    let (shown, answer) = prompts.recv().await.unwrap();
    assert_eq!(shown.id, id);
    assert_eq!(shown.method, "POST");
    assert_eq!(shown.target, SECRETS);
    assert!(shown.body.as_deref().unwrap().contains("Secret"));
    assert!(shown.dry_run.is_some(), "the prompt has the dry run");
    assert!(up.dry_runs.load(Ordering::SeqCst) >= 1);
    assert!(up.sent().is_empty(), "only a dry run went upstream");

    // Sent again while nobody has answered: the same id, no second prompt.
    let again = call(&svc, post(SECRETS, BODY)).await;
    assert_eq!(assert_pending(&again), id);
    no_prompt(&mut prompts).await;
    assert!(up.sent().is_empty());

    // Approved: the next identical request goes through, exactly once.
    answer
        .send(Answer::Approve {
            by: "alice".into(),
            window: None,
        })
        .unwrap();
    let through = until_answered(&svc, || post(SECRETS, BODY), &id).await;
    assert_eq!(through.status, 201, "{}", through.body);
    let sent = up.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, SECRETS);
    assert_eq!(sent[0].1, BODY.as_bytes());

    // The approval is used up: the identical request is held anew.
    let next = call(&svc, post(SECRETS, BODY)).await;
    let id2 = assert_pending(&next);
    assert_ne!(id2, id);
    let (shown2, _answer2) = prompts.recv().await.unwrap();
    assert_eq!(shown2.id, id2);
    assert_eq!(up.sent().len(), 1, "forwarded once");

    // Recorded as in blocking mode, each with the id: held, refused (the answers at once),
    // the approval, then the write sent and answered.
    let records = keep.all();
    let of = |id: &str| -> Vec<(String, String, Option<u16>)> {
        records
            .iter()
            .filter(|r| r.decision.approval_id.as_deref() == Some(id))
            .map(|r| {
                (
                    r.kind.to_string(),
                    r.decision.outcome.to_string(),
                    r.response.as_ref().map(|x| x.status),
                )
            })
            .collect()
    };
    let mine = of(&id);
    assert_eq!(mine[0], ("held".into(), "held".into(), None), "{mine:?}");
    assert!(
        mine.iter()
            .filter(|r| r.1 == "refused")
            .all(|r| r.2 == Some(403))
    );
    assert!(mine.iter().filter(|r| r.1 == "refused").count() >= 2);
    let approved: Vec<_> = mine.iter().filter(|r| r.1 == "approved").collect();
    assert_eq!(
        approved,
        [
            &("approval".to_string(), "approved".to_string(), None),
            &("forwarded".to_string(), "approved".to_string(), None),
            &("request".to_string(), "approved".to_string(), Some(201)),
        ],
        "{mine:?}"
    );
    let approval = records
        .iter()
        .find(|r| r.kind == "approval" && r.decision.approval_id.as_deref() == Some(&id))
        .unwrap();
    assert_eq!(approval.decision.approver.as_deref(), Some("alice"));
}

#[tokio::test]
async fn denied_is_told_with_the_reason() {
    let (tx, mut prompts) = mpsc::unbounded_channel();
    let keep = Keep::default();
    let up = Upstream::default();
    let svc = ServiceBuilder::new()
        .layer(layer(Channel(tx), &keep))
        .service(up.service());
    let id = assert_pending(&call(&svc, post(SECRETS, BODY)).await);
    let (_, answer) = prompts.recv().await.unwrap();
    answer
        .send(Answer::Deny {
            by: "bob".into(),
            reason: "not on a Friday".into(),
        })
        .unwrap();
    let told = until_answered(&svc, || post(SECRETS, BODY), &id).await;
    assert_eq!(told.status, 403, "{}", told.body);
    assert_eq!(told.id(), id);
    assert!(!told.headers.contains_key("retry-after"));
    assert_eq!(
        told.body["details"]["causes"][0]["reason"],
        "ApprovalRefused"
    );
    for shown in ["bob denied approval", "not on a Friday", id.as_str()] {
        assert!(told.message().contains(shown), "{}", told.message());
    }
    // The refusal stands for the identical request: told again, nobody asked again.
    let again = call(&svc, post(SECRETS, BODY)).await;
    assert_eq!(again.id(), id);
    assert!(again.message().contains("not on a Friday"));
    no_prompt(&mut prompts).await;
    assert!(up.sent().is_empty());
    // Recorded when refused (the approver's name and reason), and at each answer.
    let refusals: Vec<_> = keep
        .all()
        .into_iter()
        .filter(|r| {
            r.decision.approval_id.as_deref() == Some(&id)
                && r.decision.approver.as_deref() == Some("bob")
        })
        .collect();
    assert!(refusals.len() >= 3, "{}", refusals.len());
    assert!(refusals.iter().all(|r| {
        r.decision.outcome == "refused"
            && r.decision.approver_reason.as_deref() == Some("not on a Friday")
    }));
}

#[tokio::test]
async fn another_body_or_target_is_another_hold() {
    let (tx, mut prompts) = mpsc::unbounded_channel();
    let keep = Keep::default();
    let up = Upstream::default();
    let svc = ServiceBuilder::new()
        .layer(layer(Channel(tx), &keep))
        .service(up.service());
    let id = assert_pending(&call(&svc, post(SECRETS, BODY)).await);
    let (_, answer) = prompts.recv().await.unwrap();
    let other_body = BODY.replace("\"v\"", "\"w\"");
    let other_target = format!("{SECRETS}?fieldManager=x");
    let b = assert_pending(&call(&svc, post(SECRETS, &other_body)).await);
    let t = assert_pending(&call(&svc, post(&other_target, BODY)).await);
    assert!(b != id && t != id && b != t);
    let mut asked = [prompts.recv().await.unwrap(), prompts.recv().await.unwrap()];
    asked.sort_by_key(|(r, _)| r.target.clone());
    assert_eq!(asked[0].0.id, b);
    assert_eq!(asked[1].0.id, t);
    // Approving one lets through that one only.
    answer
        .send(Answer::Approve {
            by: "alice".into(),
            window: None,
        })
        .unwrap();
    let through = until_answered(&svc, || post(SECRETS, BODY), &id).await;
    assert_eq!(through.status, 201);
    assert_eq!(
        assert_pending(&call(&svc, post(SECRETS, &other_body)).await),
        b
    );
    assert_eq!(
        assert_pending(&call(&svc, post(&other_target, BODY)).await),
        t
    );
    assert_eq!(up.sent().len(), 1);
}

#[tokio::test]
async fn a_window_extends_an_approval_and_an_unused_one_expires() {
    let (tx, mut prompts) = mpsc::unbounded_channel();
    let keep = Keep::default();
    let up = Upstream::default();
    let svc = ServiceBuilder::new()
        .layer(layer(Channel(tx), &keep).approval_timeout(Duration::from_millis(400)))
        .service(up.service());
    // A window: the identical request goes through more than once.
    let id = assert_pending(&call(&svc, post(SECRETS, BODY)).await);
    let (_, answer) = prompts.recv().await.unwrap();
    answer
        .send(Answer::Approve {
            by: "alice".into(),
            window: Some(Duration::from_secs(600)),
        })
        .unwrap();
    assert_eq!(
        until_answered(&svc, || post(SECRETS, BODY), &id)
            .await
            .status,
        201
    );
    assert_eq!(call(&svc, post(SECRETS, BODY)).await.status, 201);
    assert_eq!(up.sent().len(), 2);

    // An approval not used within the approval timeout expires: held anew.
    let other = BODY.replace("\"v\"", "\"w\"");
    let id = assert_pending(&call(&svc, post(SECRETS, &other)).await);
    let (_, answer) = prompts.recv().await.unwrap();
    answer
        .send(Answer::Approve {
            by: "alice".into(),
            window: None,
        })
        .unwrap();
    // Waits for the expiry's record (written once the approval is forgotten), not for time.
    until_recorded(&keep, "the unused approval expired", |r| {
        r.kind == "expired" && r.decision.approval_id.as_deref() == Some(id.as_str())
    })
    .await;
    let later = call(&svc, post(SECRETS, &other)).await;
    assert_ne!(assert_pending(&later), id, "the approval expired");
    assert_eq!(up.sent().len(), 2);

    // Nobody answers: the question times out (recorded), and the request is held anew. The
    // identical request is told the same pending id until the timeout has been taken.
    let (timed, _unanswered) = prompts.recv().await.unwrap();
    until_recorded(&keep, "the unanswered question timed out", |r| {
        r.decision.approval_id.as_deref() == Some(timed.id.as_str())
            && r.decision.approver_reason.as_deref() == Some("timed out")
    })
    .await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let after = call(&svc, post(SECRETS, &other)).await;
        if assert_pending(&after) != timed.id {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the timed-out question still holds the request"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(up.sent().len(), 2);
}

#[tokio::test]
async fn the_hold_limits_apply_until_an_approval_is_used() {
    let (tx, mut prompts) = mpsc::unbounded_channel();
    let keep = Keep::default();
    let up = Upstream::default();
    let svc = ServiceBuilder::new()
        .layer(layer(Channel(tx), &keep).max_held(1, 1))
        .service(up.service());
    let id = assert_pending(&call(&svc, post(SECRETS, BODY)).await);
    let other = BODY.replace("\"v\"", "\"w\"");
    assert_eq!(call(&svc, post(SECRETS, &other)).await.status, 429);
    let (_, answer) = prompts.recv().await.unwrap();
    answer
        .send(Answer::Approve {
            by: "alice".into(),
            window: None,
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Approved but not used yet: it still counts.
    assert_eq!(call(&svc, post(SECRETS, &other)).await.status, 429);
    assert_eq!(
        until_answered(&svc, || post(SECRETS, BODY), &id)
            .await
            .status,
        201
    );
    assert_pending(&call(&svc, post(SECRETS, &other)).await);
}

#[tokio::test]
async fn an_approval_is_decided_again_under_a_reloaded_policy() {
    let (tx, mut prompts) = mpsc::unbounded_channel();
    let keep = Keep::default();
    let up = Upstream::default();
    let l = layer(Channel(tx), &keep);
    let handle = l.policy_handle();
    let svc = ServiceBuilder::new().layer(l).service(up.service());
    let id = assert_pending(&call(&svc, post(SECRETS, BODY)).await);
    let (_, answer) = prompts.recv().await.unwrap();
    answer
        .send(Answer::Approve {
            by: "alice".into(),
            window: None,
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Reloaded to deny: the approval given before lets nothing through.
    let deny = POLICY.replace("effect: approve", "effect: deny");
    handle.set(Policy::from_yaml(&deny).unwrap());
    let refused = call(&svc, post(SECRETS, BODY)).await;
    assert_eq!(refused.status, 403);
    assert!(!refused.headers.contains_key("x-kubeleash-approval-id"));
    assert!(up.sent().is_empty());
    // Reloaded again, still holding such writes: decided again, and the approval goes on.
    handle.set(Policy::from_yaml(POLICY).unwrap());
    let through = call(&svc, post(SECRETS, BODY)).await;
    assert_eq!(through.status, 201, "{}", through.body);
    assert_eq!(up.sent().len(), 1);
    assert!(keep
        .all()
        .iter()
        .any(|r| r.kind == "approval" && r.decision.approval_id.as_deref() == Some(id.as_str())));
}

#[tokio::test]
async fn blocking_stays_the_default() {
    let (tx, mut prompts) = mpsc::unbounded_channel();
    let keep = Keep::default();
    let up = Upstream::default();
    let svc = ServiceBuilder::new()
        .layer(layer(Channel(tx), &keep).approval_mode(ApprovalMode::Blocking))
        .service(up.service());
    let t = tokio::spawn({
        let svc = svc.clone();
        async move { call(&svc, post(SECRETS, BODY)).await }
    });
    let (_, answer) = prompts.recv().await.unwrap();
    assert!(!t.is_finished(), "held open until answered");
    answer
        .send(Answer::Approve {
            by: "alice".into(),
            window: None,
        })
        .unwrap();
    assert_eq!(t.await.unwrap().status, 201);
    assert_eq!(up.sent().len(), 1);
}
