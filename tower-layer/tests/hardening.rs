//! The layer's invariants against an agent that controls every byte it sends (and, for some,
//! an upstream that misbehaves), each stated once and tried over many variants:
//!
//! - no response byte reaches the client unmasked, except the 101 switch of an allowed
//!   exec/attach/portforward/proxy request; any other upgrade is refused before it leaves;
//! - only a path goes upstream (no scheme or host), without the caller's `Host`, framing or
//!   hop-by-hop headers; the bytes decided and recorded are the bytes sent;
//! - an approval and its window cover exactly the request shown;
//! - nothing is forwarded unrecorded once recording fails;
//! - a reload reaches held requests and open streams;
//! - holds are bounded; upstream errors never reach the client.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use kubeleash_core::policy::{Identity, Policy};
use kubeleash_tower::{
    Answer, ApprovalRequest, Approver, BoxError, Credential, Durable, KubeleashLayer, Mode,
    RecordBody, RecordError, Recorder,
};
use proptest::prelude::*;
use tokio::sync::{mpsc, oneshot};
use tower::{Service, ServiceBuilder, ServiceExt};

const POLICY: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  # Windows on held Secret writes are what these tests check; the default floor would refuse
  # to widen them (tests/widening.rs tests the floor).
  approvals: {neverWiden: [{resources: [pods/exec]}]}
  rules:
    - {name: read, effect: allow, verbs: [get, list, watch], apiGroups: [""], resources: [configmaps, secrets, pods], namespaces: [dev]}
    - {name: write, effect: allow, verbs: [create, update, patch, delete], apiGroups: [""], resources: [configmaps], namespaces: [dev]}
    - {name: connect, effect: allow, verbs: [get, create], apiGroups: [""], resources: [pods/exec, pods/attach, pods/portforward, pods/proxy, services/proxy], namespaces: [dev]}
    - {name: held, effect: approve, verbs: [create], apiGroups: [""], resources: [secrets], namespaces: [dev]}
    - {name: held-exec, effect: approve, verbs: [get, create], apiGroups: [""], resources: [pods/exec], namespaces: [held]}
    - {name: as-bob, effect: approve, verbs: [impersonate], apiGroups: [""], resources: [users], names: [bob]}
"#;

/// What a masked response may never carry: a JWT the built-in detectors mask.
const RAW: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJlLXRoYXQtaXMtbG9uZw";

/// What the stand-in server received.
#[derive(Debug, Clone)]
struct Got {
    uri: String,
    headers: HeaderMap,
    body: Bytes,
}

type Seen = Arc<Mutex<Vec<Got>>>;

/// How the stand-in answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Upstream {
    /// 101 with raw bytes to a request that asks to upgrade, else 200 JSON with the secret.
    Honest,
    /// 101 with raw bytes to everything.
    AlwaysSwitch,
}

fn server(
    seen: Seen,
    mode: Upstream,
) -> impl Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = BoxError, Future: Send>
+ Clone
+ Send {
    tower::service_fn(move |req: Request<Full<Bytes>>| {
        let seen = Arc::clone(&seen);
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let upgrade = parts.headers.contains_key("upgrade");
            // A held write's dry run changes nothing: `seen` is what was really sent
            // (`tests/dry_run.rs` tests what dry runs show).
            let query = parts.uri.query().unwrap_or_default();
            if query.split('&').any(|p| p == "dryRun=All") {
                return Ok::<_, BoxError>(
                    Response::builder()
                        .status(if parts.method == http::Method::GET {
                            404
                        } else {
                            201
                        })
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(b"{\"kind\":\"Status\"}")))
                        .unwrap(),
                );
            }
            seen.lock().unwrap().push(Got {
                uri: parts.uri.to_string(),
                headers: parts.headers,
                body,
            });
            let r = if upgrade || mode == Upstream::AlwaysSwitch {
                Response::builder()
                    .status(101)
                    .header("upgrade", "websocket")
                    .body(Full::new(Bytes::from(format!("RAW {RAW}"))))
                    .unwrap()
            } else {
                Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(format!(
                        r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"x"}},"data":{{"token":"{RAW}"}}}}"#
                    ))))
                    .unwrap()
            };
            Ok::<_, BoxError>(r)
        }
    })
}

/// Keeps every record; can be told to fail.
#[derive(Clone, Default)]
struct Keep {
    records: Arc<Mutex<Vec<RecordBody>>>,
    failing: Arc<AtomicBool>,
}

impl Recorder for Keep {
    fn record(&self, r: RecordBody) -> Result<(), RecordError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(RecordError::Write("no space left on device".into()));
        }
        self.records.lock().unwrap().push(r);
        Ok(())
    }

    fn record_durable(&self, r: RecordBody) -> Durable<'_> {
        let r = self.record(r);
        Box::pin(async move { r })
    }
}

fn policy() -> Policy {
    static COMPILED: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
    COMPILED
        .get_or_init(|| Policy::from_yaml(POLICY).unwrap())
        .clone()
}

fn layer() -> KubeleashLayer {
    KubeleashLayer::new(policy())
        .identity(Identity::new("agent", ["agents"]))
        .credential(Credential::token("operator-token").unwrap())
}

async fn call<S>(svc: &mut S, req: Request<Full<Bytes>>) -> (u16, HeaderMap, Bytes)
where
    S: Service<
            Request<Full<Bytes>>,
            Response = Response<kubeleash_tower::KubeleashBody<Full<Bytes>>>,
        >,
    S::Error: std::fmt::Debug,
{
    let r = svc.ready().await.unwrap().call(req).await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    // A body the masker refused ends with an error: what came before it is what was sent.
    let mut body = r.into_body();
    let mut out = Vec::new();
    while let Some(f) = body.frame().await {
        match f {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    out.extend_from_slice(d);
                }
            }
            Err(_) => break,
        }
    }
    (status, headers, Bytes::from(out))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Targets that cannot switch protocols, and the ones that can.
const PLAIN_TARGETS: &[&str] = &[
    "/api/v1/namespaces/dev/configmaps/x",
    "/api/v1/namespaces/dev/configmaps?watch=1",
    "/api/v1/namespaces/dev/secrets",
    "/api/v1/namespaces/dev/pods/p/log?follow=true",
    "/api/v1/namespaces/dev/pods/p",
    "/api/v1/namespaces/dev/pods/p/status",
    "/apis/apps/v1/namespaces/dev/deployments/d",
];
const CONNECT_TARGETS: &[&str] = &[
    "/api/v1/namespaces/dev/pods/p/exec?command=sh&stdin=true",
    "/api/v1/namespaces/dev/pods/p/attach?stdout=true",
    "/api/v1/namespaces/dev/pods/p/portforward?ports=80",
    "/api/v1/namespaces/dev/pods/p/proxy/metrics",
    "/api/v1/namespaces/dev/services/s/proxy/",
];

fn upgrade_headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let value = prop_oneof![
        Just(b"".to_vec()),
        Just(b"websocket".to_vec()),
        Just(b"WebSocket".to_vec()),
        Just(b"h2c".to_vec()),
        Just(b"SPDY/3.1".to_vec()),
        Just(b"x".to_vec()),
        Just(b"websocket, h2c".to_vec()),
        Just(b"\xff\xfe".to_vec()),
        "[ -~]{0,12}".prop_map(String::into_bytes),
    ];
    let connection = prop_oneof![
        Just(b"Upgrade".to_vec()),
        Just(b"upgrade".to_vec()),
        Just(b"keep-alive, UPGRADE".to_vec()),
        Just(b" close ,upgrade ".to_vec()),
        Just(b"keep-alive".to_vec()),
        Just(b"upgraded".to_vec()),
    ];
    // Names in any case (HTTP/1 names are case-insensitive), repeated or not.
    let one = prop_oneof![
        (
            prop_oneof![
                Just("upgrade"),
                Just("Upgrade"),
                Just("UPGRADE"),
                Just("uPgRaDe")
            ],
            value
        )
            .prop_map(|(n, v)| (n.to_string(), v)),
        (
            prop_oneof![Just("connection"), Just("Connection"), Just("CONNECTION")],
            connection
        )
            .prop_map(|(n, v)| (n.to_string(), v)),
    ];
    proptest::collection::vec(one, 0..4)
}

fn asks(headers: &[(String, Vec<u8>)]) -> bool {
    headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("upgrade")
            || v.split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    /// No response byte reaches the client unmasked, except the 101 switch of an allowed
    /// connect subresource that asked for it; an upgrade asked for anywhere else is refused
    /// before it leaves. Against an honest upstream and one that switches whatever it is asked.
    #[test]
    fn no_unmasked_byte_but_an_allowed_switch(
        method in prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("PATCH"), Just("DELETE"), Just("OPTIONS")],
        connect in any::<bool>(),
        which in 0usize..16,
        headers in upgrade_headers(),
        always_switch in any::<bool>(),
    ) {
        let target = if connect {
            CONNECT_TARGETS[which % CONNECT_TARGETS.len()]
        } else {
            PLAIN_TARGETS[which % PLAIN_TARGETS.len()]
        };
        let seen: Seen = Arc::default();
        let mode = if always_switch { Upstream::AlwaysSwitch } else { Upstream::Honest };
        let mut svc = ServiceBuilder::new().layer(layer()).service(server(Arc::clone(&seen), mode));
        let mut req = Request::builder().method(method).uri(target);
        for (n, v) in &headers {
            req = req.header(n.as_str(), HeaderValue::from_bytes(v).unwrap());
        }
        let req = req.body(Full::new(Bytes::new())).unwrap();
        let asked = asks(&headers);
        let (status, _, body) = rt().block_on(call(&mut svc, req));
        let text = String::from_utf8_lossy(&body);
        if asked && !connect {
            prop_assert_eq!(status, 400, "{}", text);
            prop_assert!(seen.lock().unwrap().is_empty(), "a refused upgrade never leaves");
        }
        if text.contains(RAW) {
            prop_assert!(connect && asked && status == 101, "{} {} {:?}: {} {}", method, target, headers, status, text);
        }
        // Whatever went out asked for an upgrade only when it was an allowed connect switch.
        for got in seen.lock().unwrap().iter() {
            let out_asks = got.headers.contains_key("upgrade")
                || got.headers.get_all("connection").iter().any(|v| v.as_bytes().eq_ignore_ascii_case(b"upgrade"));
            prop_assert!(!out_asks || (connect && asked), "{:?}", got.headers);
            prop_assert!(got.headers.get("host").is_none());
        }
    }

    /// A target with a scheme or host is refused before anything leaves: the agent never picks
    /// where the operator's credential goes.
    #[test]
    fn absolute_targets_never_leave(
        scheme in prop_oneof![Just("http"), Just("https"), Just("HTTP")],
        host in "[a-z]{1,8}(\\.[a-z]{2,4})?(:[0-9]{1,4})?",
        path in prop_oneof![Just("/api/v1/namespaces/dev/configmaps/x"), Just("/"), Just("/api/v1/namespaces/dev/pods/p/exec")],
        method in prop_oneof![Just("GET"), Just("POST"), Just("CONNECT")],
        authority_form in any::<bool>(),
    ) {
        let seen: Seen = Arc::default();
        let mut svc = ServiceBuilder::new().layer(layer()).service(server(Arc::clone(&seen), Upstream::Honest));
        let uri = if authority_form { host.clone() } else { format!("{scheme}://{host}{path}") };
        let Ok(req) = Request::builder().method(method).uri(uri.as_str()).body(Full::new(Bytes::new())) else {
            return Ok(());
        };
        let (status, _, body) = rt().block_on(call(&mut svc, req));
        prop_assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
        prop_assert!(seen.lock().unwrap().is_empty());
    }

    /// The bytes decided and recorded are the bytes sent: whatever framing and hop-by-hop
    /// headers the caller sends, the server gets the layer's own, and a length that matches.
    #[test]
    fn framing_is_the_layers_own(
        // Bodies kubeleash forwards: none, or JSON it decodes strictly (core refuses any other
        // write body before framing matters).
        body in prop_oneof![
            Just(Vec::new()),
            ".{0,200}".prop_map(|text| serde_json::to_vec(&serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"k": text}
            })).unwrap_or_default()),
        ],
        claimed in 0usize..400,
        extra in proptest::collection::vec(
            prop_oneof![
                Just(("transfer-encoding", "chunked")),
                Just(("transfer-encoding", "gzip, chunked")),
                Just(("host", "evil.example")),
                Just(("connection", "close, x-hop")),
                Just(("connection", "keep-alive")),
                Just(("x-hop", "1")),
                Just(("keep-alive", "timeout=5")),
                Just(("proxy-connection", "keep-alive")),
                Just(("te", "trailers")),
                Just(("trailer", "x-checksum")),
            ],
            0..6,
        ),
        recorded in any::<bool>(),
    ) {
        let seen: Seen = Arc::default();
        let keep = Keep::default();
        let l = if recorded { layer().recorder(keep.clone()) } else { layer() };
        let mut svc = ServiceBuilder::new().layer(l).service(server(Arc::clone(&seen), Upstream::Honest));
        let mut req = Request::builder()
            .method("PUT")
            .uri("/api/v1/namespaces/dev/configmaps/x")
            .header("content-type", "application/json")
            .header("content-length", claimed.to_string());
        for (n, v) in &extra {
            req = req.header(*n, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.clone()))).unwrap();
        let (status, _, _) = rt().block_on(call(&mut svc, req));
        prop_assert_eq!(status, 200);
        let got = seen.lock().unwrap().pop().unwrap();
        prop_assert_eq!(&got.body[..], &body[..]);
        for n in ["host", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"] {
            prop_assert!(got.headers.get(n).is_none(), "{} went out: {:?}", n, got.headers);
        }
        // A header `Connection` names is for this hop only.
        if extra.contains(&("connection", "close, x-hop")) {
            prop_assert!(got.headers.get("x-hop").is_none(), "{:?}", got.headers);
        }
        match got.headers.get("content-length") {
            Some(v) => prop_assert_eq!(v.to_str().unwrap(), body.len().to_string()),
            None => prop_assert!(!recorded, "a body the layer read goes with its own length"),
        }
        prop_assert!(got.uri.starts_with('/'), "{}", got.uri);
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
                reason: "gone".into(),
            };
        }
        rx.await.unwrap_or(Answer::Deny {
            by: "test".into(),
            reason: "no answer".into(),
        })
    }
}

fn post(target: &str, content_type: &str, body: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method("POST")
        .uri(target)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

const SECRETS: &str = "/api/v1/namespaces/dev/secrets";
const BODY: &str =
    r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"a"},"stringData":{"k":"v"}}"#;

#[tokio::test]
async fn an_approval_window_covers_exactly_the_request_shown() {
    let (tx, mut rx) = mpsc::channel(8);
    let seen: Seen = Arc::default();
    let svc = ServiceBuilder::new()
        .layer(layer().approver(Channel(tx)))
        .service(server(Arc::clone(&seen), Upstream::Honest));
    let first = tokio::spawn({
        let mut svc = svc.clone();
        async move { call(&mut svc, post(SECRETS, "application/json", BODY)).await }
    });
    let (shown, answer) = rx.recv().await.unwrap();
    assert_eq!(shown.id.len(), 32, "128 random bits");
    answer
        .send(Answer::Approve {
            by: "alice".into(),
            // More than the layer allows: cut to a day, not refused and not endless.
            window: Some(Duration::from_secs(u64::MAX / 4)),
        })
        .unwrap();
    assert_eq!(first.await.unwrap().0, 200);
    // The identical request: covered.
    let mut s = svc.clone();
    assert_eq!(
        call(&mut s, post(SECRETS, "application/json", BODY))
            .await
            .0,
        200
    );
    assert!(rx.try_recv().is_err());
    // Every difference in what reaches the server is a new request, held again.
    let variants = [
        post(SECRETS, "application/json", &BODY.replace("\"v\"", "\"w\"")),
        post(&format!("{SECRETS}?dryRun=All"), "application/json", BODY),
        post(
            &format!("{SECRETS}?fieldManager=x"),
            "application/json",
            BODY,
        ),
        post(SECRETS, "application/yaml", BODY),
        post(SECRETS, "application/json", &format!("{BODY} ")),
        {
            let mut r = post(SECRETS, "application/json", BODY);
            r.headers_mut()
                .insert("impersonate-user", HeaderValue::from_static("bob"));
            r
        },
    ];
    for (i, v) in variants.into_iter().enumerate() {
        let mut t = tokio::spawn({
            let mut svc = svc.clone();
            async move { call(&mut svc, v).await }
        });
        // Held again (the approver is asked), or refused on its own merits: never covered.
        tokio::select! {
            asked = rx.recv() => drop(asked.unwrap().1),
            done = &mut t => {
                let (status, _, body) = done.unwrap();
                assert_ne!(status, 200, "variant {i} went through: {}", String::from_utf8_lossy(&body));
                continue;
            }
        }
        assert_eq!(t.await.unwrap().0, 403, "variant {i}");
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "only the approved request and its twin"
    );
}

#[tokio::test]
async fn an_approved_impersonation_goes_out_as_approved() {
    let (tx, mut rx) = mpsc::channel(8);
    let seen: Seen = Arc::default();
    let svc = ServiceBuilder::new()
        .layer(layer().approver(Channel(tx)))
        .service(server(Arc::clone(&seen), Upstream::Honest));
    let req = || {
        Request::builder()
            .uri("/api/v1/namespaces/dev/configmaps/x")
            .header("impersonate-user", "bob")
            .header("authorization", "Bearer agent-token")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let t = tokio::spawn({
        let mut svc = svc.clone();
        async move { call(&mut svc, req()).await }
    });
    let (shown, answer) = rx.recv().await.unwrap();
    assert_eq!(
        shown.impersonation.as_ref().and_then(|i| i.user.as_deref()),
        Some("bob"),
        "the approver is shown who the request acts as"
    );
    answer
        .send(Answer::Approve {
            by: "alice".into(),
            window: None,
        })
        .unwrap();
    assert_eq!(t.await.unwrap().0, 200);
    let got = seen.lock().unwrap().pop().unwrap();
    assert_eq!(got.headers.get("impersonate-user").unwrap(), "bob");
    assert_eq!(
        got.headers.get("authorization").unwrap(),
        "Bearer operator-token"
    );
}

#[tokio::test]
async fn nothing_is_forwarded_once_recording_fails() {
    let keep = Keep::default();
    let seen: Seen = Arc::default();
    let (tx, mut rx) = mpsc::channel(8);
    let svc = ServiceBuilder::new()
        .layer(layer().recorder(keep.clone()).approver(Channel(tx)))
        .service(server(Arc::clone(&seen), Upstream::Honest));
    let get = || {
        Request::builder()
            .uri("/api/v1/namespaces/dev/configmaps/x")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let mut s = svc.clone();
    assert_eq!(call(&mut s, get()).await.0, 200);
    // The disk fills: the request in flight cannot be recorded...
    keep.failing.store(true, Ordering::SeqCst);
    assert_eq!(call(&mut s, get()).await.0, 200);
    let sent = seen.lock().unwrap().len();
    // ...and from then on nothing is forwarded, reads, writes and held requests alike.
    for req in [
        get(),
        post(
            "/api/v1/namespaces/dev/configmaps",
            "application/json",
            "{}",
        ),
        post(SECRETS, "application/json", BODY),
    ] {
        let (status, _, body) = call(&mut s, req).await;
        assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("cannot record"));
    }
    assert!(rx.try_recv().is_err(), "no approver is asked");
    assert_eq!(seen.lock().unwrap().len(), sent);
    // Writable again: the next refusal is recorded, and requests flow again.
    keep.failing.store(false, Ordering::SeqCst);
    assert_eq!(call(&mut s, get()).await.0, 503);
    assert_eq!(call(&mut s, get()).await.0, 200);
    assert_eq!(seen.lock().unwrap().len(), sent + 1);
}

#[tokio::test]
async fn a_held_request_that_cannot_be_recorded_is_not_held() {
    /// Fails only the `held` record.
    #[derive(Clone, Default)]
    struct NoHeld(Keep);
    impl Recorder for NoHeld {
        fn record(&self, r: RecordBody) -> Result<(), RecordError> {
            if r.kind == "held" {
                return Err(RecordError::Write("disk full".into()));
            }
            self.0.record(r)
        }
        fn record_durable(&self, r: RecordBody) -> Durable<'_> {
            self.0.record_durable(r)
        }
    }
    let seen: Seen = Arc::default();
    let (tx, mut rx) = mpsc::channel(8);
    let mut svc = ServiceBuilder::new()
        .layer(layer().recorder(NoHeld::default()).approver(Channel(tx)))
        .service(server(Arc::clone(&seen), Upstream::Honest));
    let (status, _, _) = call(&mut svc, post(SECRETS, "application/json", BODY)).await;
    assert_eq!(status, 503);
    assert!(rx.try_recv().is_err());
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_jsonl_recorder_on_a_full_disk_stops_the_traffic() {
    let recorder = kubeleash_tower::JsonlRecorder::open(
        "/dev/full",
        kubeleash_tower::RecorderOptions {
            format: kubeleash_tower::Format::Audit,
            ..Default::default()
        },
    );
    // Linux has /dev/full (every write fails with ENOSPC); without it this test cannot say
    // anything, so it fails rather than passing silently.
    let recorder = recorder.expect("/dev/full cannot be opened: this test needs Linux's /dev/full");
    let seen: Seen = Arc::default();
    let mut svc = ServiceBuilder::new()
        .layer(layer().recorder(recorder))
        .service(server(Arc::clone(&seen), Upstream::Honest));
    let get = || {
        Request::builder()
            .uri("/api/v1/namespaces/dev/configmaps/x")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    // A refused request's record is waited for: the write fails, and so does everything after.
    let denied = Request::builder()
        .uri("/api/v1/namespaces/prod/configmaps/x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(call(&mut svc, denied).await.0, 403);
    for _ in 0..3 {
        assert_eq!(call(&mut svc, get()).await.0, 503);
    }
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_reload_reaches_a_held_request() {
    let (tx, mut rx) = mpsc::channel(8);
    let seen: Seen = Arc::default();
    let keep = Keep::default();
    let l = layer().approver(Channel(tx)).recorder(keep.clone());
    let handle = l.policy_handle();
    let mut svc = ServiceBuilder::new()
        .layer(l)
        .service(server(Arc::clone(&seen), Upstream::Honest));
    let t =
        tokio::spawn(async move { call(&mut svc, post(SECRETS, "application/json", BODY)).await });
    let (_, answer) = rx.recv().await.unwrap();
    // Secrets writes are now denied.
    handle.set(
        Policy::from_yaml(&POLICY.replace(
            "effect: approve, verbs: [create], apiGroups: [\"\"], resources: [secrets]",
            "effect: deny, verbs: [create], apiGroups: [\"\"], resources: [secrets]",
        ))
        .unwrap(),
    );
    answer
        .send(Answer::Approve {
            by: "alice".into(),
            window: Some(Duration::from_secs(600)),
        })
        .unwrap();
    let (status, _, body) = t.await.unwrap();
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("reloaded"));
    assert!(seen.lock().unwrap().is_empty());
    let records = keep.records.lock().unwrap();
    let last = records.last().unwrap();
    assert_eq!(last.decision.outcome, "refused");
    assert_eq!(last.response.as_ref().unwrap().status, 403);
}

/// A response body fed by the test, frame by frame.
struct Chan(mpsc::UnboundedReceiver<Bytes>);

impl http_body::Body for Chan {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

#[tokio::test]
async fn an_open_watch_ends_at_an_event_boundary_on_reload() {
    let (feed, rx) = mpsc::unbounded_channel::<Bytes>();
    let rx = Arc::new(Mutex::new(Some(rx)));
    let inner = tower::service_fn(move |_req: Request<Full<Bytes>>| {
        let rx = rx.lock().unwrap().take().unwrap();
        async move {
            Ok::<_, BoxError>(
                Response::builder()
                    .header("content-type", "application/json")
                    .body(Chan(rx))
                    .unwrap(),
            )
        }
    });
    let l = layer();
    let handle = l.policy_handle();
    let mut svc = ServiceBuilder::new().layer(l).service(inner);
    let req = Request::builder()
        .uri("/api/v1/namespaces/dev/secrets?watch=1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = svc.ready().await.unwrap().call(req).await.unwrap();
    let mut body = r.into_body();
    let event = |name: &str| {
        format!(
            r#"{{"type":"ADDED","object":{{"kind":"Secret","apiVersion":"v1","metadata":{{"name":"{name}"}},"data":{{"password":"aHVudGVyMg=="}}}}}}"#
        )
    };
    feed.send(Bytes::from(format!("{}\n", event("one"))))
        .unwrap();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.ends_with(b"\n"));
    // Half an event, then the reload, then the rest and another event.
    let second = format!("{}\n", event("two"));
    let (a, b) = second.split_at(40);
    feed.send(Bytes::from(a.to_string())).unwrap();
    let mut got = Vec::new();
    got.extend_from_slice(&body.frame().await.unwrap().unwrap().into_data().unwrap());
    handle.set(Policy::from_yaml(POLICY).unwrap());
    feed.send(Bytes::from(format!("{b}{}\n", event("three"))))
        .unwrap();
    while let Some(f) = body.frame().await {
        got.extend_from_slice(&f.unwrap().into_data().unwrap());
    }
    let text = String::from_utf8(got).unwrap();
    assert!(text.ends_with('\n'), "ends at a boundary: {text}");
    assert!(
        text.contains("\"two\""),
        "the event under way is finished: {text}"
    );
    assert!(!text.contains("three"), "nothing after the reload: {text}");
    assert!(!text.contains("aHVudGVyMg=="), "still masked: {text}");
}

/// Never answers.
struct Never(Arc<AtomicUsize>, Arc<Mutex<Vec<ApprovalRequest>>>);

#[async_trait::async_trait]
impl Approver for Never {
    async fn approve(&self, r: ApprovalRequest) -> Answer {
        self.0.fetch_add(1, Ordering::SeqCst);
        self.1.lock().unwrap().push(r);
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_are_bounded_per_identity_and_in_all() {
    let asked = Arc::new(AtomicUsize::new(0));
    let shown = Arc::new(Mutex::new(Vec::new()));
    let l = KubeleashLayer::new(Policy::from_yaml(POLICY).unwrap())
        .identity_from(|p| {
            let who = p
                .headers
                .get("x-agent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("nobody");
            Ok(Identity::new(who, ["agents"]))
        })
        .approver(Never(Arc::clone(&asked), Arc::clone(&shown)))
        .max_held(3, 5);
    let seen: Seen = Arc::default();
    let svc = ServiceBuilder::new()
        .layer(l)
        .service(server(Arc::clone(&seen), Upstream::Honest));
    // Bodies as large as an approver is shown whole.
    let big = format!(
        r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"big","annotations":{{"note":"{}"}}}}}}"#,
        "x".repeat(kubeleash_tower::MAX_SHOWN_BODY - 200)
    );
    // Each body its own (identical held requests would be asked once: see tests/widening.rs).
    let n = AtomicUsize::new(0);
    let send = |who: &'static str| {
        let mut svc = svc.clone();
        let i = n.fetch_add(1, Ordering::SeqCst);
        let mut req = post(
            SECRETS,
            "application/json",
            &big.replace("\"big\"", &format!("\"big-{i}\"")),
        );
        req.headers_mut()
            .insert("x-agent", HeaderValue::from_static(who));
        tokio::spawn(async move { call(&mut svc, req).await })
    };
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(send("a"));
    }
    while asked.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, _, body) = send("a").await.unwrap();
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&body));
    for _ in 0..2 {
        waiting.push(send("b"));
    }
    while asked.load(Ordering::SeqCst) < 5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(send("c").await.unwrap().0, 429, "the total is reached");
    assert_eq!(asked.load(Ordering::SeqCst), 5);
    for r in shown.lock().unwrap().iter() {
        let b = r.body.as_deref().unwrap();
        assert!(b.len() <= kubeleash_tower::MAX_SHOWN_BODY, "{}", b.len());
        assert!(
            b.contains(&"x".repeat(kubeleash_tower::MAX_SHOWN_BODY - 200)),
            "shown whole"
        );
    }
    // A hold that ends (the caller went away) frees its place.
    let gone = waiting.pop().unwrap();
    gone.abort();
    assert!(gone.await.unwrap_err().is_cancelled());
    let again = send("c");
    while asked.load(Ordering::SeqCst) < 6 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    again.abort();
    for w in waiting {
        w.abort();
    }
    assert!(seen.lock().unwrap().is_empty());
}

/// Request bodies in memory are bounded over every request in flight, not only per request:
/// held bodies count until their hold ends, a body past the budget is refused with 429 before
/// it reaches the upstream, and the budget comes back when a request is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_bodies_are_bounded_in_all() {
    let asked = Arc::new(AtomicUsize::new(0));
    let shown = Arc::new(Mutex::new(Vec::new()));
    let l = KubeleashLayer::new(Policy::from_yaml(POLICY).unwrap())
        .identity(Identity::new("a", ["agents"]))
        .approver(Never(Arc::clone(&asked), Arc::clone(&shown)))
        .max_held(64, 64)
        .max_buffered(128 * 1024);
    let seen: Seen = Arc::default();
    let svc = ServiceBuilder::new()
        .layer(l)
        .service(server(Arc::clone(&seen), Upstream::Honest));
    // Each body its own (identical held requests would be asked once: see tests/widening.rs).
    let serial = AtomicUsize::new(0);
    let body = |n: usize| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"big-{}","annotations":{{"note":"{}"}}}}}}"#,
            serial.fetch_add(1, Ordering::SeqCst),
            "x".repeat(n)
        )
    };
    let send = |b: String| {
        let mut svc = svc.clone();
        let req = post(SECRETS, "application/json", &b);
        tokio::spawn(async move { call(&mut svc, req).await })
    };
    // Two held bodies of 48 KiB each stay in memory (a held body is at most what an approver
    // is shown whole, 64 KiB).
    let mut waiting = vec![send(body(48 * 1024)), send(body(48 * 1024))];
    while asked.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A third that would pass 128 KiB in all is refused, though it is under 128 KiB itself.
    let (status, _, text) = send(body(48 * 1024)).await.unwrap();
    let text = String::from_utf8_lossy(&text);
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("retry shortly"), "{text}");
    assert_eq!(
        asked.load(Ordering::SeqCst),
        2,
        "the refused body was never held"
    );
    // A hold that ends gives its bytes back.
    let gone = waiting.pop().unwrap();
    gone.abort();
    assert!(gone.await.unwrap_err().is_cancelled());
    let again = send(body(48 * 1024));
    while asked.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    again.abort();
    for w in waiting {
        w.abort();
    }
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn upstream_errors_never_reach_the_agent() {
    const SECRET_TEXT: &str = "exec plugin `aws eks get-token --profile prod` failed: env AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY stderr: refresh_token=1//0gSECRETREFRESHTOKEN";
    let keep = Keep::default();
    let inner = tower::service_fn(|_req: Request<Full<Bytes>>| async {
        Err::<Response<Full<Bytes>>, BoxError>(SECRET_TEXT.into())
    });
    let mut svc = ServiceBuilder::new()
        .layer(layer().recorder(keep.clone()))
        .service(inner);
    let req = Request::builder()
        .uri("/api/v1/namespaces/dev/configmaps/x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = call(&mut svc, req).await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 502);
    for leak in [
        "aws",
        "AWS_SECRET",
        "wJalrXUtnFEMI",
        "refresh_token",
        "plugin",
        "prod",
    ] {
        assert!(!text.contains(leak), "{leak} reached the agent: {text}");
    }
    assert!(text.contains("correlation id"), "{text}");
    let cid = text
        .split("correlation id ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .to_string();
    let records = keep.records.lock().unwrap();
    let err = records[0].response.as_ref().unwrap().error.clone().unwrap();
    assert!(err.contains(&cid), "the record is found by the id: {err}");
    assert!(
        err.contains("exec plugin"),
        "the operator sees what failed: {err}"
    );
    assert!(
        !err.contains("wJalrXUtnFEMI/K7MDENG"),
        "masked in the record: {err}"
    );
}

#[tokio::test]
async fn a_credential_that_cannot_be_read_is_not_described_to_the_agent() {
    let dir = std::env::temp_dir().join(format!("kl-cred-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("operator-token-path");
    std::fs::write(&path, "t0ken").unwrap();
    let l = layer().credential(Credential::token_file(&path).unwrap());
    std::fs::remove_file(&path).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let seen: Seen = Arc::default();
    let mut svc = ServiceBuilder::new()
        .layer(l)
        .service(server(Arc::clone(&seen), Upstream::Honest));
    let req = Request::builder()
        .uri("/api/v1/namespaces/dev/configmaps/x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = call(&mut svc, req).await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 502);
    assert!(!text.contains("operator-token-path"), "{text}");
    assert!(seen.lock().unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_switch_the_upstream_makes_unasked_is_refused() {
    let seen: Seen = Arc::default();
    let mut svc = ServiceBuilder::new()
        .layer(layer())
        .service(server(Arc::clone(&seen), Upstream::AlwaysSwitch));
    for target in PLAIN_TARGETS.iter().chain(CONNECT_TARGETS) {
        let req = Request::builder()
            .uri(*target)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (status, _, body) = call(&mut svc, req).await;
        assert_ne!(status, 101, "{target}");
        assert!(!String::from_utf8_lossy(&body).contains(RAW), "{target}");
    }
}

#[tokio::test]
async fn an_allowed_exec_switch_passes_and_is_recorded() {
    let keep = Keep::default();
    let seen: Seen = Arc::default();
    let mut svc = ServiceBuilder::new()
        .layer(layer().recorder(keep.clone()))
        .service(server(Arc::clone(&seen), Upstream::Honest));
    let req = Request::builder()
        .uri(CONNECT_TARGETS[0])
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-protocol", "v5.channel.k8s.io")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = call(&mut svc, req).await;
    assert_eq!(status, 101);
    assert!(String::from_utf8_lossy(&body).contains(RAW));
    let got = seen.lock().unwrap().pop().unwrap();
    assert_eq!(got.headers.get("upgrade").unwrap(), "websocket");
    assert_eq!(got.headers.get("connection").unwrap(), "Upgrade");
    let r = keep.records.lock().unwrap().last().cloned().unwrap();
    assert_eq!(r.response.as_ref().unwrap().stream, "passthrough");
    assert_eq!(r.decision.effect, "allow");
    assert!(
        r.request.attributes.is_some(),
        "the decision's attributes are recorded"
    );
    // The same switch in audit mode, on a pod the policy does not allow: refused, not passed.
    let mut audit = ServiceBuilder::new()
        .layer(layer().mode(kubeleash_tower::Mode::Audit))
        .service(server(Arc::clone(&seen), Upstream::Honest));
    let req = Request::builder()
        .uri("/api/v1/namespaces/prod/pods/p/exec?command=sh")
        .header("upgrade", "SPDY/3.1")
        .header("connection", "Upgrade")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(call(&mut audit, req).await.0, 403);
}

/// A body that sends one event, then fails with a text that must not reach the agent.
struct Failing(u8);

impl http_body::Body for Failing {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0 += 1;
        Poll::Ready(Some(match self.0 {
            1 => Ok(Frame::data(Bytes::from_static(
                b"{\"type\":\"ADDED\",\"object\":{\"kind\":\"ConfigMap\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"a\"}}}\n",
            ))),
            _ => Err("connection to https://10.0.0.1:6443 reset; client cert /home/op/.kube/op.key".into()),
        }))
    }
}

#[tokio::test]
async fn a_failing_upstream_body_is_told_in_general_terms() {
    let keep = Keep::default();
    let inner = tower::service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, BoxError>(
            Response::builder()
                .header("content-type", "application/json")
                .body(Failing(0))
                .unwrap(),
        )
    });
    let mut svc = ServiceBuilder::new()
        .layer(layer().recorder(keep.clone()))
        .service(inner);
    let req = Request::builder()
        .uri("/api/v1/namespaces/dev/configmaps?watch=1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = svc.ready().await.unwrap().call(req).await.unwrap();
    let mut body = r.into_body();
    assert!(body.frame().await.unwrap().is_ok());
    let err = body.frame().await.unwrap().unwrap_err().to_string();
    assert!(!err.contains("10.0.0.1") && !err.contains(".key"), "{err}");
    assert!(err.contains("cut off"), "{err}");
    drop(body);
    let recorded = keep.records.lock().unwrap()[0]
        .response
        .as_ref()
        .unwrap()
        .error
        .clone()
        .unwrap();
    assert!(
        recorded.contains("reset"),
        "the operator sees why: {recorded}"
    );
}

#[tokio::test]
async fn a_followed_log_without_line_ends_still_ends_on_reload() {
    let (feed, rx) = mpsc::unbounded_channel::<Bytes>();
    let rx = Arc::new(Mutex::new(Some(rx)));
    let inner = tower::service_fn(move |_req: Request<Full<Bytes>>| {
        let rx = rx.lock().unwrap().take().unwrap();
        async move {
            Ok::<_, BoxError>(
                Response::builder()
                    .header("content-type", "text/plain")
                    .body(Chan(rx))
                    .unwrap(),
            )
        }
    });
    let l = layer();
    let handle = l.policy_handle();
    let mut svc = ServiceBuilder::new().layer(l).service(inner);
    let req = Request::builder()
        .uri("/api/v1/namespaces/dev/pods/p/log?follow=true")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = svc.ready().await.unwrap().call(req).await.unwrap();
    let mut body = r.into_body();
    feed.send(Bytes::from_static(b"no line end yet ")).unwrap();
    assert!(body.frame().await.unwrap().is_ok());
    handle.set(policy());
    // The pod keeps printing, never a line end: one more chunk at most, then the end.
    for _ in 0..3 {
        let _ = feed.send(Bytes::from_static(b"more and more "));
    }
    let mut frames = 0;
    while let Some(f) = body.frame().await {
        assert!(f.is_ok());
        frames += 1;
    }
    assert!(frames <= 1, "{frames} chunks after the reload");
}

/// A protobuf body (kubectl's typed creates) is held like JSON: the approver sees the JSON it
/// decodes to, masked, and what reaches the server after approval is the exact bytes held.
#[tokio::test]
async fn a_held_protobuf_body_is_shown_decoded_and_forwarded_exactly() {
    let pb = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/testdata/protobuf/secret-generic.pb"),
    )
    .unwrap();
    let (tx, mut rx) = mpsc::channel(8);
    let seen: Seen = Arc::default();
    let mut svc = ServiceBuilder::new()
        .layer(layer().approver(Channel(tx)))
        .service(server(Arc::clone(&seen), Upstream::Honest));
    let req = Request::builder()
        .method("POST")
        .uri(SECRETS)
        .header("content-type", "application/vnd.kubernetes.protobuf")
        .body(Full::new(Bytes::from(pb.clone())))
        .unwrap();
    let t = tokio::spawn(async move { call(&mut svc, req).await });
    let (shown, answer) = rx.recv().await.unwrap();
    let body = shown.body.clone().unwrap();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["kind"], "Secret", "{body}");
    assert_eq!(json["metadata"]["name"], "s1", "{body}");
    // kubectl create secret generic s1 --from-literal=password=hunter2: never shown.
    assert!(
        !body.contains("aHVudGVyMg==") && !body.contains("hunter2"),
        "{body}"
    );
    assert!(json["data"]["password"].is_string(), "{body}");
    answer
        .send(Answer::Approve {
            by: "alice".into(),
            window: None,
        })
        .unwrap();
    assert_eq!(t.await.unwrap().0, 200);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].body.as_ref(),
        pb.as_slice(),
        "forwarded byte for byte"
    );
}

/// The approver is never the agent: an approval given in the requester's own name (however
/// spelled) is refused, and nothing is sent.
#[tokio::test]
async fn a_request_cannot_approve_itself() {
    for by in ["agent", " Agent ", "AGENT\u{7}"] {
        let (tx, mut rx) = mpsc::channel(8);
        let seen: Seen = Arc::default();
        let mut svc = ServiceBuilder::new()
            .layer(layer().approver(Channel(tx)))
            .service(server(Arc::clone(&seen), Upstream::Honest));
        let t =
            tokio::spawn(
                async move { call(&mut svc, post(SECRETS, "application/json", BODY)).await },
            );
        let (_, answer) = rx.recv().await.unwrap();
        answer
            .send(Answer::Approve {
                by: by.into(),
                window: None,
            })
            .unwrap();
        let (status, _, body) = t.await.unwrap();
        assert_eq!(status, 403, "{by:?}");
        assert!(
            String::from_utf8_lossy(&body).contains("cannot approve itself"),
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert!(seen.lock().unwrap().is_empty(), "{by:?}: nothing is sent");
    }
}

/// A policy that allows every ordinary request: what the reserved namespace and kubeleash's own
/// objects must withstand.
const CARELESS: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  rules:
    - {name: everything, effect: allow, verbs: ["*"], apiGroups: ["*"], resources: ["*"]}
"#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Nothing in the namespace kubeleash keeps its state in, and no `kubeleash.dev` object
    /// anywhere, reaches the API server, whatever the method, resource or name, though the
    /// policy allows everything, and in observe mode too (which forwards what a policy denies);
    /// the same request elsewhere does.
    #[test]
    fn kubeleash_own_state_never_reaches_the_api_server(
        method in prop::sample::select(vec!["GET", "POST", "PUT", "PATCH", "DELETE"]),
        collection in prop::sample::select(vec![
            "/api/v1/namespaces/{ns}/configmaps",
            "/api/v1/namespaces/{ns}/secrets",
            "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
            "/apis/apps/v1/namespaces/{ns}/deployments",
            "/apis/kubeleash.dev/v1alpha1/namespaces/{ns}/approvals",
            "/apis/kubeleash.dev/v1alpha1/namespaces/{ns}/grants",
        ]),
        name in proptest::option::of("[a-z][a-z0-9-]{0,20}"),
        status in any::<bool>(),
        observe in any::<bool>(),
    ) {
        let seen: Seen = Arc::default();
        let layer = KubeleashLayer::new(Policy::from_yaml(CARELESS).unwrap())
            .identity(Identity::new("agent", ["agents"]))
            .credential(Credential::token("operator-token").unwrap())
            .mode(if observe { Mode::Audit } else { Mode::Enforce })
            .reserve_namespace("kubeleash-system");
        let mut svc = ServiceBuilder::new().layer(layer).service(server(Arc::clone(&seen), Upstream::Honest));
        let target = |ns: &str| {
            let mut t = collection.replace("{ns}", ns);
            match (&name, method) {
                (_, "POST") => {}
                (Some(n), _) => {
                    t.push('/');
                    t.push_str(n);
                    if status {
                        t.push_str("/status");
                    }
                }
                (None, _) if method != "GET" => t.push_str("/x"),
                (None, _) => {}
            }
            t
        };
        let send = |t: String| {
            Request::builder()
                .method(method)
                .uri(t)
                .header("content-type", if method == "PATCH" { "application/merge-patch+json" } else { "application/json" })
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap()
        };
        let (code, _, body) = rt().block_on(call(&mut svc, send(target("kubeleash-system"))));
        prop_assert_eq!(code, 403, "{}", String::from_utf8_lossy(&body));
        let own = collection.contains("kubeleash.dev");
        let (code, _, body) = rt().block_on(call(&mut svc, send(target("dev"))));
        if own {
            prop_assert_eq!(code, 403, "{}", String::from_utf8_lossy(&body));
            prop_assert!(seen.lock().unwrap().is_empty());
        } else {
            prop_assert_eq!(seen.lock().unwrap().len(), 1, "{}", String::from_utf8_lossy(&body));
            prop_assert!(seen.lock().unwrap()[0].uri.contains("/namespaces/dev/"));
        }
    }
}

/// The reserved namespace itself (the Namespace object, its status and finalize) is out of
/// reach too; other namespaces are not.
#[test]
fn the_reserved_namespace_object_is_out_of_reach() {
    let seen: Seen = Arc::default();
    let layer = KubeleashLayer::new(Policy::from_yaml(CARELESS).unwrap())
        .identity(Identity::new("agent", ["agents"]))
        .credential(Credential::token("operator-token").unwrap())
        .reserve_namespace("kubeleash-system");
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(server(Arc::clone(&seen), Upstream::Honest));
    for (method, target) in [
        ("GET", "/api/v1/namespaces/kubeleash-system"),
        ("DELETE", "/api/v1/namespaces/kubeleash-system"),
        ("PATCH", "/api/v1/namespaces/kubeleash-system"),
        ("PUT", "/api/v1/namespaces/kubeleash-system/finalize"),
        ("PUT", "/api/v1/namespaces/kubeleash-system/status"),
    ] {
        let content_type = if method == "PATCH" {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        let req = Request::builder()
            .method(method)
            .uri(target)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let (code, _, body) = rt().block_on(call(&mut svc, req));
        assert_eq!(
            code,
            403,
            "{method} {target}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    assert!(seen.lock().unwrap().is_empty());
    let req = Request::builder()
        .uri("/api/v1/namespaces/dev")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(rt().block_on(call(&mut svc, req)).0, 200);
}

/// The definitions of kubeleash's own objects cannot be changed or deleted (a conversion
/// webhook would answer every approval), nor definitions deleted by collection, in either
/// mode, though the policy names every verb on definitions (what a privileged write needs);
/// they can be read, and other definitions changed.
#[test]
fn the_definitions_of_kubeleash_objects_are_out_of_reach() {
    let definitions = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  rules:
    - name: definitions
      effect: allow
      verbs: [get, list, watch, create, update, patch, delete, deletecollection]
      apiGroups: [apiextensions.k8s.io]
      resources: [customresourcedefinitions, customresourcedefinitions/status]
"#;
    for mode in [Mode::Enforce, Mode::Audit] {
        let seen: Seen = Arc::default();
        let layer = KubeleashLayer::new(Policy::from_yaml(definitions).unwrap())
            .identity(Identity::new("agent", ["agents"]))
            .credential(Credential::token("operator-token").unwrap())
            .mode(mode);
        let mut svc = ServiceBuilder::new()
            .layer(layer)
            .service(server(Arc::clone(&seen), Upstream::Honest));
        let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
        let send = |method: &str, target: String| {
            let content_type = if method == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            Request::builder()
                .method(method)
                .uri(target)
                .header("content-type", content_type)
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap()
        };
        for (method, target) in [
            ("PATCH", format!("{crds}/approvals.kubeleash.dev")),
            ("PUT", format!("{crds}/grants.kubeleash.dev")),
            ("PATCH", format!("{crds}/grants.kubeleash.dev/status")),
            ("DELETE", format!("{crds}/approvals.kubeleash.dev")),
            ("DELETE", crds.to_string()),
        ] {
            let (code, _, body) = rt().block_on(call(&mut svc, send(method, target.clone())));
            assert_eq!(
                code,
                403,
                "{mode:?} {method} {target}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        assert!(seen.lock().unwrap().is_empty(), "{mode:?}");
        for (method, target) in [
            ("GET", format!("{crds}/approvals.kubeleash.dev")),
            ("PATCH", format!("{crds}/widgets.example.com")),
            (
                "DELETE",
                format!("{crds}/approvals.kubeleash.dev.example.com"),
            ),
        ] {
            let (code, _, body) = rt().block_on(call(&mut svc, send(method, target.clone())));
            assert_eq!(
                code,
                200,
                "{mode:?} {method} {target}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        assert_eq!(seen.lock().unwrap().len(), 3, "{mode:?}");
    }
}

/// An approval covers exactly the bytes the approver saw: a body too long to be shown whole is
/// refused before any approver is asked (a page of padding would push a privileged pod spec
/// out of view), in both approval modes; one that fits is shown whole.
#[tokio::test]
async fn a_body_too_long_to_show_whole_is_refused_not_held() {
    let padded = |pad: usize| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "a", "annotations": {"note": "x".repeat(pad)}},
            "stringData": {"k": "v"},
        })
        .to_string()
    };
    for mode in [
        kubeleash_tower::ApprovalMode::Blocking,
        kubeleash_tower::ApprovalMode::NonBlocking {
            retry_after: Duration::from_secs(1),
        },
    ] {
        let (tx, mut rx) = mpsc::channel(8);
        let seen: Seen = Arc::default();
        let mut svc = ServiceBuilder::new()
            .layer(layer().approver(Channel(tx)).approval_mode(mode))
            .service(server(Arc::clone(&seen), Upstream::Honest));
        let long = padded(kubeleash_tower::MAX_SHOWN_BODY);
        let (status, _, body) = call(&mut svc, post(SECRETS, "application/json", &long)).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 403, "{mode:?}: {text}");
        assert!(
            text.contains("more than an approver is shown whole"),
            "{text}"
        );
        assert!(rx.try_recv().is_err(), "{mode:?}: no approver was asked");
        assert!(
            seen.lock().unwrap().is_empty(),
            "{mode:?}: nothing was sent"
        );

        let fits = padded(kubeleash_tower::MAX_SHOWN_BODY - 200);
        let t =
            tokio::spawn(
                async move { call(&mut svc, post(SECRETS, "application/json", &fits)).await },
            );
        let (shown, answer) = rx.recv().await.unwrap();
        let body = shown.body.clone().unwrap();
        assert!(
            body.len() <= kubeleash_tower::MAX_SHOWN_BODY,
            "{}",
            body.len()
        );
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            json["metadata"]["annotations"]["note"]
                .as_str()
                .map(str::len),
            Some(kubeleash_tower::MAX_SHOWN_BODY - 200),
            "{mode:?}: shown whole"
        );
        answer
            .send(Answer::Deny {
                by: "alice".into(),
                reason: "no".into(),
            })
            .unwrap();
        assert_eq!(t.await.unwrap().0, 403);
    }
}
