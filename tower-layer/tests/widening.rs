//! Widened approvals ([`Answer::Widen`]) through the layer, against a stand-in API server:
//!
//! - a grant lets through exactly the requests that differ from the approved one only along the
//!   axes the approver chose (a name glob, a field range, a number of uses), and nothing else
//!   (property-tested);
//! - the policy's floor (`approvals.neverWiden`, or the default one) turns a widening into an
//!   exact approval, and the record says so;
//! - the grant is in the chain, as a policy fragment, before a request it covers goes out;
//! - a grant ends with its time, and a widened answer from the requester is still refused;
//! - identical held requests are asked once: a refusal answers both, an exact approval covers
//!   one (the other is asked itself), a widened one covers the one that waited.

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
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use kubeleash_core::policy::{Identity, Policy};
use kubeleash_tower::{
    Answer, ApprovalRequest, Approver, BoxError, Credential, Durable, KubeleashLayer, RecordBody,
    RecordError, Recorder, Widening,
};
use proptest::prelude::*;
use tower::{Service, ServiceBuilder, ServiceExt};

const POLICY: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  rules:
    - {name: scale, effect: approve, verbs: [patch], apiGroups: [apps], resources: [deployments/scale, deployments], namespaces: [dev]}
    - {name: delete, effect: approve, verbs: [delete], apiGroups: [apps], resources: [deployments], namespaces: [dev]}
    - {name: configmaps, effect: approve, verbs: [create], apiGroups: [""], resources: [configmaps], namespaces: [dev]}
"#;

fn policy(text: &str) -> Policy {
    Policy::from_yaml(text).unwrap()
}

fn default_policy() -> Policy {
    static COMPILED: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
    COMPILED.get_or_init(|| policy(POLICY)).clone()
}

/// What the stand-in server was really sent (dry runs left out).
type Seen = Arc<Mutex<Vec<String>>>;

fn server(
    seen: Seen,
) -> impl Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = BoxError, Future: Send>
+ Clone
+ Send {
    tower::service_fn(move |req: Request<Full<Bytes>>| {
        let seen = Arc::clone(&seen);
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let query = parts.uri.query().unwrap_or_default();
            if query.split('&').any(|p| p == "dryRun=All") || parts.method == http::Method::GET {
                return Ok::<_, BoxError>(
                    Response::builder()
                        .status(404)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(b"{\"kind\":\"Status\"}")))
                        .unwrap(),
                );
            }
            seen.lock().unwrap().push(format!(
                "{} {} {}",
                parts.method,
                parts.uri,
                String::from_utf8_lossy(&body)
            ));
            Ok::<_, BoxError>(
                Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(
                        b"{\"kind\":\"Scale\",\"apiVersion\":\"autoscaling/v1\"}",
                    )))
                    .unwrap(),
            )
        }
    })
}

/// Answers the first request it is asked with `first`, every later one with a denial, and
/// keeps what it was shown.
struct Person {
    first: Mutex<Option<Answer>>,
    asked: AtomicUsize,
    shown: Mutex<Vec<ApprovalRequest>>,
}

impl Person {
    fn new(first: Answer) -> Arc<Person> {
        Arc::new(Person {
            first: Mutex::new(Some(first)),
            asked: AtomicUsize::new(0),
            shown: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait::async_trait]
impl Approver for Person {
    async fn approve(&self, request: ApprovalRequest) -> Answer {
        self.asked.fetch_add(1, Ordering::SeqCst);
        self.shown.lock().unwrap().push(request);
        self.first.lock().unwrap().take().unwrap_or(Answer::Deny {
            by: "alice".into(),
            reason: "not this one".into(),
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

fn layer(policy: Policy, person: &Arc<Person>, keep: &Keep) -> KubeleashLayer {
    KubeleashLayer::new(policy)
        .identity(Identity::new("agent", ["agents"]))
        .credential(Credential::token("operator-token").unwrap())
        .approver(Arc::clone(person))
        .recorder(keep.clone())
}

async fn call<S>(svc: &mut S, req: Request<Full<Bytes>>) -> u16
where
    S: Service<
            Request<Full<Bytes>>,
            Response = Response<kubeleash_tower::KubeleashBody<Full<Bytes>>>,
        >,
    S::Error: std::fmt::Debug,
{
    let r = svc.ready().await.unwrap().call(req).await.unwrap();
    let status = r.status().as_u16();
    let _ = r.into_body().collect().await;
    status
}

fn request(method: &str, target: &str, content_type: &str, body: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(target)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn scale(name: &str, replicas: i64, extra: bool) -> Request<Full<Bytes>> {
    let body = if extra {
        format!(r#"{{"spec":{{"replicas":{replicas}}},"metadata":{{"labels":{{"a":"b"}}}}}}"#)
    } else {
        format!(r#"{{"spec":{{"replicas":{replicas}}}}}"#)
    };
    request(
        "PATCH",
        &format!("/apis/apps/v1/namespaces/dev/deployments/{name}/scale"),
        "application/merge-patch+json",
        &body,
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A later request, as the property generates it.
#[derive(Debug, Clone)]
struct Later {
    name: &'static str,
    replicas: i64,
    extra: bool,
}

fn later() -> impl Strategy<Value = Later> {
    (
        prop::sample::select(vec!["web-1", "web-2", "web-", "webx", "db", "web-1-old"]),
        -1i64..9,
        prop::bool::weighted(0.2),
    )
        .prop_map(|(name, replicas, extra)| Later {
            name,
            replicas,
            extra,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// After a widened approval, each later request goes through without a person exactly when
    /// its name matches the glob, its replicas are within the range, it changes nothing else,
    /// and the grant has uses left; every other one is asked (and denied here).
    #[test]
    fn a_grant_covers_exactly_the_widened_requests(
        approved in 1i64..6,
        span in (0i64..3, 0i64..3),
        uses in prop::option::of(0u32..4),
        glob in prop::sample::select(vec!["web-*", "web-1", "*-1"]),
        laters in prop::collection::vec(later(), 1..8),
    ) {
        let (min, max) = (approved - span.0, approved + span.1);
        let widening = Widening {
            names: Some(glob.to_string()),
            fields: vec![format!("spec.replicas={min}..{max}").parse().unwrap()],
            uses,
            seconds: None,
        };
        let person = Person::new(Answer::Widen { by: "alice".into(), widening });
        let keep = Keep::default();
        let seen: Seen = Arc::default();
        let mut svc = ServiceBuilder::new()
            .layer(layer(default_policy(), &person, &keep))
            .service(server(Arc::clone(&seen)));
        rt().block_on(async {
            prop_assert_eq!(call(&mut svc, scale("web-1", approved, false)).await, 200);
            let mut left = uses;
            let mut asked = 1;
            let mut sent = 1;
            for l in &laters {
                let name_ok = match glob {
                    "web-*" => l.name.starts_with("web-"),
                    "web-1" => l.name == "web-1",
                    _ => l.name.ends_with("-1"),
                };
                let covered = name_ok
                    && (min..=max).contains(&l.replicas)
                    && !l.extra
                    && left != Some(0);
                let status = call(&mut svc, scale(l.name, l.replicas, l.extra)).await;
                if covered {
                    prop_assert_eq!(status, 200, "{:?} should be covered", l);
                    left = left.map(|n| n - 1);
                    sent += 1;
                } else {
                    prop_assert_eq!(status, 403, "{:?} should be asked and denied", l);
                    asked += 1;
                }
                prop_assert_eq!(person.asked.load(Ordering::SeqCst), asked);
                prop_assert_eq!(seen.lock().unwrap().len(), sent);
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn the_prompt_offers_the_axes_and_the_floor_says_why_not() {
    let person = Person::new(Answer::Deny {
        by: "alice".into(),
        reason: "no".into(),
    });
    let keep = Keep::default();
    let seen: Seen = Arc::default();
    let mut svc = ServiceBuilder::new()
        .layer(layer(default_policy(), &person, &keep))
        .service(server(Arc::clone(&seen)));
    assert_eq!(call(&mut svc, scale("web-1", 3, false)).await, 403);
    assert_eq!(
        call(
            &mut svc,
            request(
                "DELETE",
                "/apis/apps/v1/namespaces/dev/deployments/web-1",
                "application/json",
                ""
            )
        )
        .await,
        403
    );
    let shown = person.shown.lock().unwrap();
    let scale_axes = serde_json::to_value(&shown[0].widen).unwrap();
    assert_eq!(
        scale_axes,
        serde_json::json!({"names": true, "fields": ["spec.replicas"], "usesAndTime": true})
    );
    assert!(
        shown[1]
            .widen
            .never
            .as_deref()
            .is_some_and(|n| n.contains("delete")),
        "{:?}",
        shown[1].widen
    );
}

/// Approve `first` widened by `widening`, then send `second`: whether the person was asked
/// again, and the records.
async fn widened_then(
    policy: Policy,
    widening: Widening,
    first: Request<Full<Bytes>>,
    second: Request<Full<Bytes>>,
) -> (bool, Vec<RecordBody>) {
    let person = Person::new(Answer::Widen {
        by: "alice".into(),
        widening,
    });
    let keep = Keep::default();
    let seen: Seen = Arc::default();
    let mut svc = ServiceBuilder::new()
        .layer(layer(policy, &person, &keep))
        .service(server(Arc::clone(&seen)));
    assert_eq!(
        call(&mut svc, first).await,
        200,
        "the approved request goes"
    );
    call(&mut svc, second).await;
    let asked_again = person.asked.load(Ordering::SeqCst) == 2;
    let records = keep.0.lock().unwrap().clone();
    (asked_again, records)
}

fn approval_record(records: &[RecordBody]) -> RecordBody {
    records
        .iter()
        .find(|r| r.kind == "approval")
        .cloned()
        .expect("an approval record")
}

#[tokio::test]
async fn the_default_floor_approves_a_delete_exactly_and_says_so() {
    let delete = || {
        request(
            "DELETE",
            "/apis/apps/v1/namespaces/dev/deployments/web-1",
            "application/json",
            "",
        )
    };
    let widening = Widening {
        uses: Some(5),
        ..Widening::default()
    };
    let (asked_again, records) = widened_then(default_policy(), widening, delete(), delete()).await;
    assert!(asked_again, "the identical delete is held again");
    let a = approval_record(&records);
    assert!(a.decision.grant.is_none());
    assert!(
        a.decision.approver_reason.as_deref().is_some_and(
            |r| r.starts_with("approved exactly, not widened: the policy never widens")
        ),
        "{:?}",
        a.decision.approver_reason
    );
}

#[tokio::test]
async fn a_policy_floor_holds_for_what_it_names() {
    let floored = policy(&POLICY.replace(
        "spec:\n",
        "spec:\n  approvals: {neverWiden: [{resources: [configmaps]}]}\n",
    ));
    let create = |name: &str| {
        request(
            "POST",
            "/api/v1/namespaces/dev/configmaps",
            "application/json",
            &format!(
                r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"k":"v"}}}}"#
            ),
        )
    };
    let widening = Widening {
        names: Some("app-*".into()),
        ..Widening::default()
    };
    let (asked_again, _) =
        widened_then(floored, widening.clone(), create("app-1"), create("app-2")).await;
    assert!(asked_again, "configmaps are under this policy's floor");
    // Without that floor the same widening covers the second create.
    let (asked_again, records) =
        widened_then(default_policy(), widening, create("app-1"), create("app-2")).await;
    assert!(!asked_again, "a create's name is widened by the glob");
    let covered = records
        .iter()
        .filter(|r| {
            r.kind == "forwarded" && r.decision.coalesced && r.decision.outcome == "approved"
        })
        .count();
    assert_eq!(covered, 1, "the covered request is recorded as coalesced");
}

#[tokio::test]
async fn the_grant_is_recorded_as_a_policy_fragment_before_it_is_used() {
    let widening = Widening {
        names: Some("web-*".into()),
        fields: vec!["spec.replicas=1..5".parse().unwrap()],
        uses: Some(1),
        seconds: Some(600),
    };
    let (asked_again, records) = widened_then(
        default_policy(),
        widening,
        scale("web-1", 5, false),
        scale("web-2", 2, false),
    )
    .await;
    assert!(!asked_again);
    let a = approval_record(&records);
    let grant = a.decision.grant.clone().expect("the grant");
    assert_eq!(grant["uses"], 1);
    assert_eq!(grant["seconds"], 600);
    let rule = &grant["rule"];
    assert_eq!(rule["names"], serde_json::json!(["web-*"]));
    assert_eq!(rule["resources"], serde_json::json!(["deployments/scale"]));
    assert_eq!(
        rule["when"],
        serde_json::json!([{"path": "$.spec.replicas", "between": [1.0, 5.0]}])
    );
    // The fragment is a rule the policy compiler accepts, and it allows the covered request.
    let doc = serde_json::json!({
        "apiVersion": "kubeleash.dev/v1alpha1", "kind": "Policy", "spec": {"rules": [rule]}
    });
    let p = Policy::from_yaml(&doc.to_string()).unwrap();
    let mut h = http::HeaderMap::new();
    h.insert(
        "content-type",
        "application/merge-patch+json".parse().unwrap(),
    );
    let e = p.evaluate(
        &Identity::new("agent", ["agents"]),
        "PATCH",
        "/apis/apps/v1/namespaces/dev/deployments/web-2/scale",
        &h,
        Some(br#"{"spec":{"replicas":2}}"#),
    );
    assert!(e.decision.allowed(), "{e:?}");
    // The approval's record comes before the covered request's.
    let at = |pred: &dyn Fn(&RecordBody) -> bool| records.iter().position(pred).unwrap();
    assert!(
        at(&|r| r.kind == "approval") < at(&|r| r.decision.coalesced),
        "{records:#?}"
    );
    assert!(a.decision.waited_ms.is_some());
}

#[tokio::test]
async fn a_grant_ends_with_its_time() {
    let person = Person::new(Answer::Widen {
        by: "alice".into(),
        widening: Widening {
            seconds: Some(1),
            ..Widening::default()
        },
    });
    let keep = Keep::default();
    let seen: Seen = Arc::default();
    let mut svc = ServiceBuilder::new()
        .layer(layer(default_policy(), &person, &keep))
        .service(server(Arc::clone(&seen)));
    assert_eq!(call(&mut svc, scale("web-1", 3, false)).await, 200);
    assert_eq!(call(&mut svc, scale("web-1", 3, false)).await, 200);
    assert_eq!(
        person.asked.load(Ordering::SeqCst),
        1,
        "covered within its time"
    );
    // Past the window (a lower bound, so this cannot pass early): asked again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(call(&mut svc, scale("web-1", 3, false)).await, 403);
    assert_eq!(person.asked.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_widened_answer_from_the_requester_is_refused() {
    let person = Person::new(Answer::Widen {
        by: "Agent".into(),
        widening: Widening {
            names: Some("*".into()),
            ..Widening::default()
        },
    });
    let keep = Keep::default();
    let seen: Seen = Arc::default();
    let mut svc = ServiceBuilder::new()
        .layer(layer(default_policy(), &person, &keep))
        .service(server(Arc::clone(&seen)));
    assert_eq!(call(&mut svc, scale("web-1", 3, false)).await, 403);
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(call(&mut svc, scale("web-2", 3, false)).await, 403);
    assert_eq!(person.asked.load(Ordering::SeqCst), 2, "no grant was left");
}

/// An approver the test answers by hand.
struct Hand(
    tokio::sync::mpsc::UnboundedSender<(ApprovalRequest, tokio::sync::oneshot::Sender<Answer>)>,
);

#[async_trait::async_trait]
impl Approver for Hand {
    async fn approve(&self, request: ApprovalRequest) -> Answer {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.0.send((request, tx));
        rx.await.unwrap_or(Answer::Deny {
            by: "test".into(),
            reason: "gone".into(),
        })
    }
}

/// Send the same request twice; answer the first prompt with `answer` once the second is
/// recorded as waiting on it; what each got, how many prompts there were, and the records.
async fn identical_pair(answer: Answer) -> (u16, u16, usize, Vec<RecordBody>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let keep = Keep::default();
    let seen: Seen = Arc::default();
    let svc = ServiceBuilder::new()
        .layer(
            KubeleashLayer::new(default_policy())
                .identity(Identity::new("agent", ["agents"]))
                .credential(Credential::token("operator-token").unwrap())
                .approver(Hand(tx))
                .recorder(keep.clone()),
        )
        .service(server(Arc::clone(&seen)));
    let send = |svc: &_| {
        let mut svc = Clone::clone(svc);
        tokio::spawn(async move { call(&mut svc, scale("web-1", 4, false)).await })
    };
    let first = send(&svc);
    let (_, reply) = rx.recv().await.unwrap();
    let second = send(&svc);
    // Event, not time: the second is recorded as waiting before the first is answered.
    let waiting = || {
        keep.0
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.kind == "held" && r.decision.coalesced)
    };
    for _ in 0..10_000 {
        if waiting() {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(waiting(), "the identical request waits on the first");
    reply.send(answer).unwrap();
    let a = first.await.unwrap();
    // A second prompt (after an exact approval) is denied by hand.
    let mut second = second;
    let mut prompts = 1;
    let b = loop {
        tokio::select! {
            asked = rx.recv() => {
                prompts += 1;
                let deny = Answer::Deny { by: "alice".into(), reason: "once was enough".into() };
                asked.unwrap().1.send(deny).unwrap();
            }
            done = &mut second => break done.unwrap(),
        }
    };
    let records = keep.0.lock().unwrap().clone();
    (a, b, prompts, records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_holds_are_asked_once_and_a_refusal_answers_both() {
    let (a, b, prompts, records) = identical_pair(Answer::Deny {
        by: "alice".into(),
        reason: "no".into(),
    })
    .await;
    assert_eq!((a, b, prompts), (403, 403, 1));
    let joined = records
        .iter()
        .filter(|r| r.decision.coalesced && r.decision.outcome == "refused")
        .count();
    assert_eq!(joined, 1, "{records:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_approval_covers_one_and_the_identical_one_is_asked_itself() {
    let (a, b, prompts, _) = identical_pair(Answer::Approve {
        by: "alice".into(),
        window: None,
    })
    .await;
    assert_eq!((a, b, prompts), (200, 403, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_widened_approval_covers_the_identical_one_that_waited() {
    let (a, b, prompts, _) = identical_pair(Answer::Widen {
        by: "alice".into(),
        widening: Widening {
            uses: Some(1),
            ..Widening::default()
        },
    })
    .await;
    assert_eq!((a, b, prompts), (200, 200, 1));
}

/// Grants kept in memory shared by several layers, as replicas share them through the cluster:
/// a use is taken under the lock, once.
#[derive(Default)]
struct SharedStore {
    grants: Mutex<Vec<kubeleash_tower::KeptGrant>>,
    unreadable: std::sync::atomic::AtomicBool,
}

/// One layer's handle on the shared store.
struct Handle(Arc<SharedStore>);

#[async_trait::async_trait]
impl kubeleash_tower::GrantStore for Handle {
    async fn keep(&self, grant: kubeleash_tower::KeptGrant) -> Result<(), String> {
        self.0.grants.lock().unwrap().push(grant);
        Ok(())
    }
    async fn kept_for(&self, identity: &str) -> Result<Vec<kubeleash_tower::KeptGrant>, String> {
        if self.0.unreadable.load(Ordering::SeqCst) {
            return Err("the store cannot be read".into());
        }
        Ok(self
            .0
            .grants
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.identity == identity)
            .cloned()
            .collect())
    }
    async fn take_use(&self, approval: &str) -> Result<bool, String> {
        let mut grants = self.0.grants.lock().unwrap();
        let Some(g) = grants.iter_mut().find(|g| g.approval == approval) else {
            return Ok(false);
        };
        match &mut g.uses_left {
            Some(0) => Ok(false),
            Some(n) => {
                *n -= 1;
                Ok(true)
            }
            None => Ok(true),
        }
    }
}

/// Layers sharing a grant store honour a grant any of them kept, under the same policy only;
/// its uses are taken once across them however many ask at once; a store that cannot be read
/// covers nothing (the request is held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_grant_holds_on_every_layer_sharing_it_and_its_uses_are_taken_once() {
    let store = Arc::new(SharedStore::default());
    let approver = Person::new(Answer::Widen {
        by: "alice".into(),
        widening: Widening {
            names: Some("web-*".into()),
            uses: Some(3),
            ..Widening::default()
        },
    });
    let others = Person::new(Answer::Deny {
        by: "alice".into(),
        reason: "not this one".into(),
    });
    let keep = Keep::default();
    let seen: Seen = Arc::default();
    let replica = |person: &Arc<Person>, policy: Policy| {
        ServiceBuilder::new()
            .layer(layer(policy, person, &keep).grant_store(Handle(Arc::clone(&store))))
            .service(server(Arc::clone(&seen)))
    };
    let mut first = replica(&approver, default_policy());
    assert_eq!(call(&mut first, scale("web-1", 3, false)).await, 200);
    assert_eq!(store.grants.lock().unwrap().len(), 1, "kept in the store");
    // Twelve like requests at once, on two other layers: three are covered.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let mut svc = replica(&others, default_policy());
        tasks.push(tokio::spawn(async move {
            call(&mut svc, scale(&format!("web-{}", i + 2), 3, false)).await
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 3, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 403).count(), 9, "{codes:?}");
    assert_eq!(others.asked.load(Ordering::SeqCst), 9);
    // Under another policy (a reload, or a replica that runs another), a grant covers nothing.
    store.grants.lock().unwrap()[0].uses_left = Some(5);
    let asked = others.asked.load(Ordering::SeqCst);
    let mut reloaded = replica(&others, policy(&format!("{POLICY}\n# changed\n")));
    assert_eq!(call(&mut reloaded, scale("web-20", 3, false)).await, 403);
    assert_eq!(others.asked.load(Ordering::SeqCst), asked + 1);
    // The same policy: covered; a store that cannot be read: held.
    let mut same = replica(&others, default_policy());
    assert_eq!(call(&mut same, scale("web-21", 3, false)).await, 200);
    store.unreadable.store(true, Ordering::SeqCst);
    assert_eq!(call(&mut same, scale("web-22", 3, false)).await, 403);
    assert_eq!(others.asked.load(Ordering::SeqCst), asked + 2);
}
