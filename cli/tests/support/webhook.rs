//! A validating admission webhook of the test's own, served over HTTPS on 127.0.0.1 and
//! registered with the real API server (`support/cluster.rs`), so that a test sees admission
//! from both sides: what the API server answered, and every AdmissionReview it sent.
//!
//! Use it with `#[path = "support/webhook.rs"] mod webhook;` next to `support/cluster.rs` (as
//! `mod cluster`):
//!
//! ```ignore
//! let hook = webhook::Webhook::start(Box::new(|req: &Value| {
//!     (req["object"]["data"].get("forbidden").is_some()).then(|| "no forbidden key".to_string())
//! }));
//! let hook = hook.register(c, "deny.kl-webhook.kubeleash.dev", "kl-webhook", &probe, "no forbidden key");
//! // ... writes in kl-webhook ...; hook.reviews() is every review received so far.
//! // Dropping it deletes the ValidatingWebhookConfiguration, then stops the server.
//! ```
//!
//! The CA and the serving certificate (IP SAN 127.0.0.1) are made with rcgen when the server
//! starts, in memory; the CA's certificate is the registration's `caBundle`, so the API server
//! trusts this server and nothing else on that port. A registration covers ConfigMap creates and
//! updates in one namespace only (`namespaceSelector` on `kubernetes.io/metadata.name`), so the
//! other tests of a binary sharing the cluster never meet it, even before it is deleted.

#![allow(dead_code, reason = "each test binary uses a part")]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};

use crate::cluster::Cluster;

/// What the webhook answers to an AdmissionRequest (`review.request`): `Some(message)` denies
/// it with that message and code [`DENY_CODE`], `None` allows it.
pub type Judge = Box<dyn Fn(&Value) -> Option<String> + Send + Sync>;

/// The code a denial carries in its `status` (the API server answers the client with it).
pub const DENY_CODE: u16 = 403;

/// The largest AdmissionReview read (the API server's own request limit).
const MAX_REVIEW: usize = 3 * 1024 * 1024;

/// One AdmissionReview the webhook received.
#[derive(Clone, Debug)]
pub struct Review {
    /// Its `request` as received (uid, operation, name, namespace, userInfo, dryRun, object).
    pub request: Value,
    /// When it arrived.
    pub at: Instant,
    /// Whether the webhook denied it.
    pub denied: bool,
}

impl Review {
    /// `request.dryRun` (false when absent, as the API server means it).
    pub fn dry_run(&self) -> bool {
        self.request["dryRun"] == true
    }

    /// `request.userInfo.username`.
    pub fn user(&self) -> &str {
        self.request["userInfo"]["username"]
            .as_str()
            .unwrap_or_default()
    }
}

/// A running webhook server: `https://127.0.0.1:PORT/validate`.
pub struct Webhook {
    pub url: String,
    /// The CA that signed the serving certificate, PEM.
    pub ca_pem: String,
    reviews: Arc<Mutex<Vec<Review>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Webhook {
    /// Serve on a free loopback port, answering with `judge`; every review is recorded before
    /// it is answered, so a review the API server acted on is always in [`Webhook::reviews`].
    pub fn start(judge: Judge) -> Webhook {
        let (acceptor, ca_pem) = tls();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("https://{}/validate", listener.local_addr().unwrap());
        let reviews = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let state = Arc::new((judge, Arc::clone(&reviews)));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    () = accept(listener, acceptor, state) => {}
                    _ = stopped => {}
                }
            });
        });
        Webhook {
            url,
            ca_pem,
            reviews,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Every review received so far, in the order they arrived.
    pub fn reviews(&self) -> Vec<Review> {
        self.reviews.lock().unwrap().clone()
    }

    /// Register this server with the API server as the validating webhook `name` (a DNS name
    /// of three labels or more) for ConfigMap creates and updates in `namespace`, with the
    /// cluster's admin credential, and wait until it is in force: until an admin
    /// `kubectl ARGS` (`probe`, a `--dry-run=server` write it denies) fails with `message`.
    pub fn register<'c>(
        self,
        cluster: &'c Cluster,
        name: &str,
        namespace: &str,
        probe: &[&str],
        message: &str,
    ) -> Registered<'c> {
        let config = configuration(name, namespace, &self.url, &self.ca_pem);
        let f = cluster.dir.join(format!("{name}.json"));
        std::fs::write(&f, config.to_string()).unwrap();
        let registered = Registered {
            cluster,
            name: name.to_string(),
            webhook: self,
        };
        let (ok, out) = cluster.admin(&["apply", "-f", f.to_str().unwrap()]);
        assert!(ok, "registering the webhook {name}: {out}");
        // The API server picks the configuration up from its own watch: the first refusal of
        // the probe is the moment it is in force.
        let started = Instant::now();
        loop {
            let (ok, out) = cluster.admin(probe);
            if !ok && out.contains(message) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the webhook {name} is not in force a minute after it was registered \
                 (kubectl {probe:?}: {out})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "webhook {name} in force {:.0} ms after it was registered",
            started.elapsed().as_secs_f64() * 1000.0
        );
        registered
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A webhook registered with the API server: dropping it deletes the registration first (so
/// nothing is sent to a server that is gone, where `failurePolicy: Fail` would refuse every
/// write in its namespace), then stops the server.
pub struct Registered<'c> {
    cluster: &'c Cluster,
    name: String,
    pub webhook: Webhook,
}

impl Registered<'_> {
    pub fn reviews(&self) -> Vec<Review> {
        self.webhook.reviews()
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let (ok, out) = self.cluster.admin(&[
            "delete",
            "validatingwebhookconfiguration",
            &self.name,
            "--ignore-not-found",
        ]);
        if !ok {
            eprintln!("could not delete the webhook {}: {out}", self.name);
        }
    }
}

/// The ValidatingWebhookConfiguration: one webhook at `url`, trusted through `ca_pem`, for
/// ConfigMap creates and updates in `namespace` only. `sideEffects: None`, or the API server
/// refuses every dry run it matches without calling it.
fn configuration(name: &str, namespace: &str, url: &str, ca_pem: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "kubeleash-tests"}},
        "webhooks": [{
            "name": name,
            "admissionReviewVersions": ["v1"],
            "clientConfig": {
                "url": url,
                "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
            },
            "rules": [{
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["configmaps"],
                "scope": "Namespaced",
            }],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "matchPolicy": "Equivalent",
            "timeoutSeconds": 10,
        }],
    })
}

/// A fresh CA and, signed by it, a serving certificate for 127.0.0.1: the acceptor, and the
/// CA's certificate (PEM).
fn tls() -> (tokio_rustls::TlsAcceptor, String) {
    let now = time::OffsetDateTime::now_utc();
    let mut ca = CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "kubeleash test webhook CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - time::Duration::hours(1);
    ca.not_after = now + time::Duration::days(1);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();

    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, "kubeleash test webhook");
    leaf.subject_alt_names = vec![SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())];
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = ca.not_before;
    leaf.not_after = ca.not_after;
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &Issuer::new(ca, ca_key)).unwrap();

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone()];
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    // The API server's client would take HTTP/2 if offered; this server speaks HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        ca_cert.pem(),
    )
}

type State = Arc<(Judge, Arc<Mutex<Vec<Review>>>)>;

async fn accept(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: State,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let acceptor = acceptor.clone();
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// One AdmissionReview: recorded, judged, answered with the same uid.
async fn handle(state: &State, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let at = Instant::now();
    if req.method() != hyper::Method::POST || req.uri().path() != "/validate" {
        return reply(
            StatusCode::NOT_FOUND,
            &json!({"error": "POST /validate only"}),
        );
    }
    let Ok(body) = Limited::new(req.into_body(), MAX_REVIEW).collect().await else {
        return reply(
            StatusCode::BAD_REQUEST,
            &json!({"error": "unreadable body"}),
        );
    };
    let Ok(review) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
        return reply(StatusCode::BAD_REQUEST, &json!({"error": "not JSON"}));
    };
    let request = review["request"].clone();
    let (judge, reviews) = &**state;
    let denial = judge(&request);
    let uid = request["uid"].clone();
    reviews.lock().unwrap().push(Review {
        request,
        at,
        denied: denial.is_some(),
    });
    let response = match denial {
        Some(message) => json!({"uid": uid, "allowed": false,
            "status": {"code": DENY_CODE, "reason": "Forbidden", "message": message}}),
        None => json!({"uid": uid, "allowed": true}),
    };
    reply(
        StatusCode::OK,
        &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}),
    )
}

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}
