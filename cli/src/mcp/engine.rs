//! The guarded client every tool call goes through: the kubeleash layer over the operator's
//! upstream, exactly as `kubeleash proxy` builds it (same policy, approvals, masking and
//! record), so a tool call is decided as the requests it amounts to, and nothing of the
//! operator's credential is ever in reach of what a tool returns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use kubeleash_core::policy::Identity;
use kubeleash_tower::{ApprovalMode, JsonlRecorder, KubeleashLayer, Mode, OnHold, PolicyHandle};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::approvals::SocketApprover;
use crate::proxy::{Approvals, approver, connect, connect_failed, load_policy, open_recorder};

/// The most a tool reads of one answer from the API server. Past it the tool says so and how to
/// narrow the question, rather than hand an agent a truncated object.
pub const MAX_ANSWER: usize = 8 * 1024 * 1024;

/// Answers held in memory at once, over all calls: with [`MAX_ANSWER`] and the copies a tool
/// makes (parsed, serialised twice), this bounds what the agent can make kubeleash hold.
const ANSWERS_AT_ONCE: usize = 8;

/// Who sent a call: the identity the layer decides it for (set on every request the engine
/// sends; a verified OIDC identity over HTTP, else the one from `--user`/`--group`).
#[derive(Debug, Clone)]
pub struct Caller(pub Identity);

/// Set when a request went past the layer to the API server: an answer to a request that did
/// not is the layer's own (a refusal, a hold), whatever its text says.
#[derive(Clone, Default)]
struct Reached(Arc<AtomicBool>);

/// What the engine is built from (`kubeleash mcp`'s flags).
pub struct Setup {
    pub policy: std::path::PathBuf,
    pub kubeconfig: Option<std::path::PathBuf>,
    pub context: Option<String>,
    /// The identity of every call (`--user`/`--group`); `None` when each HTTP request proves
    /// its own (OIDC), carried as a [`Caller`].
    pub identity: Option<Identity>,
    pub record: Option<std::path::PathBuf>,
    pub record_bodies: Option<usize>,
    pub signing_key: Option<std::path::PathBuf>,
    pub record_session: Option<String>,
    pub approvals: Approvals,
    pub approval_timeout: Duration,
    pub approval_mode: ApprovalMode,
    pub mode: Mode,
    pub namespace: Option<String>,
}

/// One request a tool sends.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    /// Path and query, encoded.
    pub target: String,
    pub content_type: Option<&'static str>,
    pub body: Bytes,
    /// The agent's reason (`X-Kubeleash-Reason`), shown to an approver.
    pub reason: Option<String>,
}

impl Call {
    /// A request without a body.
    pub fn get(target: String) -> Call {
        Call {
            method: Method::GET,
            target,
            content_type: None,
            body: Bytes::new(),
            reason: None,
        }
    }
}

/// What came back.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The request reached the API server: the answer is the server's, not the layer's.
    pub reached: bool,
    /// This answer's share of [`ANSWERS_AT_ONCE`], held while the tool uses it.
    _room: OwnedSemaphorePermit,
}

/// The guarded client and what the tools need to know about it.
pub struct Engine {
    client: kube::Client,
    policy: PolicyHandle,
    identity: Option<Identity>,
    mode: Mode,
    namespace: String,
    approvals: bool,
    approval_mode: ApprovalMode,
    approval_timeout: Duration,
    answers: Arc<Semaphore>,
    recorder: Option<Arc<JsonlRecorder>>,
    /// Kept open for as long as the engine: `kubeleash approvals` talks to it.
    _socket: Option<Arc<SocketApprover>>,
}

impl Engine {
    /// Compile the policy, open the record and the approver, connect the upstream.
    pub async fn start(s: Setup) -> Result<Engine, String> {
        let policy = load_policy(&s.policy)?;
        let recorder = open_recorder(
            s.record.as_deref(),
            s.record_bodies,
            s.signing_key.as_deref(),
            s.record_session.clone(),
        )?;
        let (chosen, socket) = approver(&s.approvals)?;
        // Every request the engine sends carries its caller; one without is refused (401).
        let mut layer = KubeleashLayer::new(policy)
            .identity_from(|parts| match parts.extensions.get::<Caller>() {
                Some(Caller(id)) => Ok(id.clone()),
                None => Err("the call carries no identity".into()),
            })
            .mode(s.mode)
            .approval_timeout(s.approval_timeout)
            .approval_mode(s.approval_mode);
        let approvals = chosen.is_some();
        if let Some(a) = chosen {
            layer = layer.approver(a);
        }
        if let Some(r) = &recorder {
            layer = layer.recorder(Arc::clone(r));
        }
        let upstream = connect(None, s.kubeconfig.as_deref(), s.context.as_deref()).await?;
        let namespace = s
            .namespace
            .clone()
            .unwrap_or_else(|| upstream.default_namespace().to_string());
        // Under the layer: what goes on to the API server is marked as having reached it.
        let reached = tower::util::MapRequestLayer::new(|req: Request<kube::client::Body>| {
            if let Some(r) = req.extensions().get::<Reached>() {
                r.0.store(true, Ordering::Release);
            }
            req
        });
        let client = upstream
            .client_builder()
            .map_err(connect_failed)?
            .with_layer(&reached)
            .with_layer(&layer)
            .build();
        Ok(Engine {
            client,
            policy: layer.policy_handle(),
            identity: s.identity,
            mode: s.mode,
            namespace,
            approvals,
            approval_mode: s.approval_mode,
            approval_timeout: s.approval_timeout,
            answers: Arc::new(Semaphore::new(ANSWERS_AT_ONCE)),
            recorder,
            _socket: socket,
        })
    }

    pub fn policy(&self) -> &PolicyHandle {
        &self.policy
    }

    /// The fixed identity (`--user`/`--group`), if calls do not prove their own.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The namespace a tool works in when its call names none.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Whether held requests wait for a person (else they are answered at once).
    pub fn blocking(&self) -> bool {
        matches!(self.approval_mode, ApprovalMode::Blocking)
    }

    /// Whether anyone answers held requests (else the policy's holds are refusals).
    pub fn has_approver(&self) -> bool {
        self.approvals
    }

    pub fn approval_timeout(&self) -> Duration {
        self.approval_timeout
    }

    /// Send `call` from `caller` through the layer; `held` learns the approval's id if a person
    /// is asked.
    pub async fn send(
        &self,
        caller: &Identity,
        call: &Call,
        held: Option<oneshot::Sender<String>>,
    ) -> Result<Reply, String> {
        let mut req = Request::builder()
            .method(call.method.clone())
            .uri(&call.target)
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(ct) = call.content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        if let Some(why) = &call.reason {
            // Printable ASCII only in a header; the layer caps and masks it again.
            let clean: String = why
                .chars()
                .map(|c| {
                    if c.is_ascii_graphic() || c == ' ' {
                        c
                    } else {
                        '?'
                    }
                })
                .take(500)
                .collect();
            if let Ok(v) = HeaderValue::from_str(&clean) {
                req = req.header("x-kubeleash-reason", v);
            }
        }
        let req = req
            .body(kube::client::Body::from(call.body.clone()))
            .map_err(|e| format!("cannot build the request `{}`: {e}", call.target))?;
        let key = format!("{} {}", call.method, call.target);
        let note = kubeleash_connect::Note::default();
        let reached = Reached::default();
        let mut req = req;
        req.extensions_mut().insert(note.clone());
        req.extensions_mut().insert(reached.clone());
        req.extensions_mut().insert(Caller(caller.clone()));
        if let Some(tx) = held {
            // The layer tells this very request's approval id, from the request's own task.
            let tx = Mutex::new(Some(tx));
            req.extensions_mut().insert(OnHold::new(move |id| {
                if let Some(tx) = tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    let _ = tx.send(id.to_string());
                }
            }));
        }
        let resp = self.client.send(req).await.map_err(|e| {
            let told = kubeleash_connect::sanitize(&key, &e);
            eprintln!("kubeleash mcp: {}", told.operator);
            told.agent
        })?;
        if note.is_set()
            && let Some(detail) = note.take()
        {
            // What only the operator may see goes to standard error; the agent gets the
            // layer's fixed Status with its correlation id.
            eprintln!("kubeleash mcp: upstream error on {key}: {detail}");
        }
        let (parts, body) = resp.into_parts();
        let room = Arc::clone(&self.answers)
            .acquire_owned()
            .await
            .map_err(|_| "kubeleash mcp is shutting down".to_string())?;
        let body = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    format!(
                        "the API server's answer is larger than {} MiB; narrow the question (a namespace, a label or field selector, a smaller limit)",
                        MAX_ANSWER / (1024 * 1024)
                    )
                } else {
                    let told = kubeleash_connect::sanitize(&key, e.as_ref());
                    eprintln!("kubeleash mcp: {}", told.operator);
                    told.agent
                }
            })?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
            reached: reached.0.load(Ordering::Acquire),
            _room: room,
        })
    }

    /// Close the record (its closing entry written and flushed), at the end of the session.
    /// It waits for the recorder's thread: call it off the runtime's threads.
    pub fn close(&self) {
        if let Some(r) = &self.recorder {
            r.close();
        }
    }
}
