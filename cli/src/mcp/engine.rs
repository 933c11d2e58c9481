//! The guarded client every tool call goes through: the kubeleash layer over the operator's
//! upstream, exactly as `kubeleash proxy` builds it (same policy, approvals, masking and
//! record), so a tool call is decided as the requests it amounts to, and nothing of the
//! operator's credential is ever in reach of what a tool returns.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use kubeleash_core::policy::Identity;
use kubeleash_tower::{
    Answer, ApprovalMode, ApprovalRequest, Approver, JsonlRecorder, KubeleashLayer, Mode,
    PolicyHandle,
};
use tokio::sync::oneshot;

use crate::approvals::SocketApprover;
use crate::proxy::{Approvals, approver, connect, connect_failed, load_policy, open_recorder};

/// The most a tool reads of one answer from the API server. Past it the tool says so and how to
/// narrow the question, rather than hand an agent a truncated object.
pub const MAX_ANSWER: usize = 8 * 1024 * 1024;

/// What the engine is built from (`kubeleash mcp`'s flags).
pub struct Setup {
    pub policy: std::path::PathBuf,
    pub kubeconfig: Option<std::path::PathBuf>,
    pub context: Option<String>,
    /// A plain-HTTP upstream with no credential instead of a kubeconfig (tests, the demo).
    pub upstream: Option<String>,
    pub identity: Identity,
    pub record: Option<std::path::PathBuf>,
    pub record_bodies: Option<usize>,
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
}

/// The guarded client and what the tools need to know about it.
pub struct Engine {
    client: kube::Client,
    policy: PolicyHandle,
    identity: Identity,
    mode: Mode,
    namespace: String,
    approvals: bool,
    approval_mode: ApprovalMode,
    approval_timeout: Duration,
    announcer: Arc<Announcer>,
    recorder: Option<Arc<JsonlRecorder>>,
    /// Kept open for as long as the engine: `kubeleash approvals` talks to it.
    _socket: Option<Arc<SocketApprover>>,
}

impl Engine {
    /// Compile the policy, open the record and the approver, connect the upstream.
    pub async fn start(s: Setup) -> Result<Engine, String> {
        let policy = load_policy(&s.policy)?;
        let recorder = open_recorder(s.record.as_deref(), s.record_bodies)?;
        let (chosen, socket) = approver(&s.approvals)?;
        let announcer = Arc::new(Announcer {
            inner: chosen.clone(),
            waiting: Mutex::default(),
        });
        let mut layer = KubeleashLayer::new(policy)
            .identity(s.identity.clone())
            .mode(s.mode)
            .approval_timeout(s.approval_timeout)
            .approval_mode(s.approval_mode);
        if chosen.is_some() {
            layer = layer.approver(Arc::clone(&announcer));
        }
        if let Some(r) = &recorder {
            layer = layer.recorder(Arc::clone(r));
        }
        let upstream = connect(
            s.upstream.as_deref(),
            s.kubeconfig.as_deref(),
            s.context.as_deref(),
        )
        .await?;
        let namespace = s
            .namespace
            .clone()
            .unwrap_or_else(|| upstream.default_namespace().to_string());
        let client = upstream
            .client_builder()
            .map_err(connect_failed)?
            .with_layer(&layer)
            .build();
        Ok(Engine {
            client,
            policy: layer.policy_handle(),
            identity: s.identity,
            mode: s.mode,
            namespace,
            approvals: chosen.is_some(),
            approval_mode: s.approval_mode,
            approval_timeout: s.approval_timeout,
            announcer,
            recorder,
            _socket: socket,
        })
    }

    pub fn policy(&self) -> &PolicyHandle {
        &self.policy
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
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

    /// Send `call` through the layer; `held` learns the approval's id if a person is asked.
    pub async fn send(
        &self,
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
        let waiting = held.map(|tx| self.announcer.wait(&key, tx));
        let note = kubeleash_connect::Note::default();
        let mut req = req;
        req.extensions_mut().insert(note.clone());
        let sent = self.client.send(req).await;
        if let Some(w) = waiting {
            self.announcer.forget(&key, w);
        }
        let resp = sent.map_err(|e| {
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

/// The approver the layer asks: it tells the tool call whose request is held the approval's
/// id (for its progress notifications), then asks the real approver.
struct Announcer {
    inner: Option<Arc<dyn Approver>>,
    /// Tool calls waiting to learn an id, by `METHOD target`, first come first told.
    waiting: Mutex<HashMap<String, VecDeque<Waiter>>>,
}

/// A tool call waiting to learn its approval's id: its number, and where to tell it.
type Waiter = (u64, oneshot::Sender<String>);

static NEXT_WAITER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Announcer {
    fn wait(&self, key: &str, tx: oneshot::Sender<String>) -> u64 {
        let n = NEXT_WAITER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        w.entry(key.to_string()).or_default().push_back((n, tx));
        n
    }

    fn forget(&self, key: &str, n: u64) {
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = w.get_mut(key) {
            q.retain(|(m, _)| *m != n);
            if q.is_empty() {
                w.remove(key);
            }
        }
    }
}

#[async_trait::async_trait]
impl Approver for Announcer {
    async fn approve(&self, request: ApprovalRequest) -> Answer {
        let key = format!("{} {}", request.method, request.target);
        let told = {
            let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            let told = w.get_mut(&key).and_then(VecDeque::pop_front);
            if w.get(&key).is_some_and(VecDeque::is_empty) {
                w.remove(&key);
            }
            told
        };
        if let Some((_, tx)) = told {
            let _ = tx.send(request.id.clone());
        }
        match &self.inner {
            Some(a) => a.approve(request).await,
            None => Answer::Deny {
                by: "kubeleash".into(),
                reason: "nobody answers approvals here".into(),
            },
        }
    }
}
