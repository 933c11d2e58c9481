//! `listen`: the loopback listener `connect` points `@kubernetes/client-node` at.
//!
//! The listener runs on the binding's tokio runtime, bound to `127.0.0.1:0`. Every request must
//! carry the connection's random bearer secret (so other local processes cannot use it), name
//! the listener itself as its `Host` and carry no `Origin` (so a web page, even one whose name
//! was rebound to 127.0.0.1, cannot use it); it is then sent by the Rust stack: the kubeleash
//! tower layer (classify, decide, hold for approval, record, mask) around kube-rs's client built
//! from the operator's kubeconfig by `kubeleash-connect` (HTTPS with the kubeconfig's CA, client
//! certificates, tokens and token files, exec plugins and their refresh), which holds the
//! operator's credential. The credential never crosses into JavaScript, and nothing derived
//! from it, from the kubeconfig or from a failed connection upstream reaches the agent: those
//! details go to the operator (`onError`).

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONNECTION, HOST, ORIGIN, UPGRADE};
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kubeleash_connect::{Note, correlation_id, id_in, sanitize};
use kubeleash_core::body::MAX_BODY_BYTES as MAX_BODY;
use kubeleash_core::policy::Identity;
use kubeleash_core::record::{Verification, verify};
use kubeleash_tower::{
    Answer, ApprovalMode, Approver, BoxError, Format, JsonlRecorder, KubeleashLayer, MAX_WINDOW,
    Mode, RecorderOptions,
};
use napi::bindgen_prelude::{Either, Env, PromiseRaw};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Status, bindgen_prelude::Promise};
use napi_derive::napi;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::errors;
use crate::policy::{Attributes, Policy};
use crate::widen::{WidenAxes, widening};

/// A request held for approval, as the approver is shown it. Its body is masked.
#[napi(object, use_nullable = true)]
#[derive(Debug, Clone)]
pub struct ApprovalRequest {
    /// The approval's id: bound to exactly this request (identity, attributes, body). With
    /// `approvals: 'nonblocking'`, the id the agent's 403 names (`x-kubeleash-approval-id`,
    /// `details.uid`).
    pub id: String,
    /// Who sent it.
    pub user: String,
    /// The sender's groups.
    pub groups: Vec<String>,
    /// The HTTP method.
    pub method: String,
    /// The request target as sent.
    pub target: String,
    /// Its authorization attributes.
    pub attributes: Attributes,
    /// The kubectl command it amounts to.
    pub kubectl: String,
    /// The request body, masked with the same rules as responses.
    pub body: Option<String>,
    /// The rule that asked for approval.
    pub rule: Option<String>,
    /// The policy's reason.
    pub reason: String,
    /// The agent's own reason for the request (its `X-Kubeleash-Reason` header: printable, at
    /// most 500 characters, masked). The agent wrote it: it explains, it proves nothing.
    pub agent_reason: Option<String>,
    /// What the API server says the write would do: the same request sent with `dryRun=All`,
    /// compared with the live object, both masked. `null` for a request that changes no object
    /// (reads, subresources such as `token`, exec) and when the API server could not be asked.
    pub dry_run: Option<DryRun>,
    /// What the approver may widen an approval along (`{ approve: true, widen: {...} }`);
    /// `widen.never` says why it may only be approved exactly.
    pub widen: WidenAxes,
}

/// The API server's own account of a held write, asked before the approver is.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct DryRun {
    /// The dry run's HTTP status.
    pub status: u32,
    /// Why the API server would refuse the write (its `Status` message, masked); absent when
    /// it would accept it.
    pub rejected: Option<String>,
    /// Each difference from the live object (none for a create) to the result (none for a
    /// delete), as the masker shows them.
    pub changes: Vec<DryRunChange>,
    /// The same changes as lines to read: `~ data.k: v -> w`, `+ path: value`, `- path: value`,
    /// `~ path: changed (masked)`.
    pub diff: String,
}

/// One difference a held write makes, as the masker shows it.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct DryRunChange {
    /// Where: keys joined by `.`, list items as `[n]` (`data.k`, `spec.containers[0].image`).
    pub path: String,
    /// The value before; absent when the write adds the field.
    #[napi(ts_type = "any")]
    pub before: Option<Value>,
    /// The value after; absent when the write removes the field.
    #[napi(ts_type = "any")]
    pub after: Option<Value>,
    /// The value is masked on a side: what is shown says only that it changed.
    pub masked: bool,
}

impl From<&kubeleash_tower::DryRun> for DryRun {
    fn from(d: &kubeleash_tower::DryRun) -> Self {
        DryRun {
            status: u32::from(d.status),
            rejected: d.rejected.clone(),
            changes: d
                .changes
                .iter()
                .map(|c| DryRunChange {
                    path: c.path.clone(),
                    before: c.before.clone(),
                    after: c.after.clone(),
                    masked: c.masked,
                })
                .collect(),
            diff: d.diff.clone(),
        }
    }
}

impl From<&kubeleash_tower::ApprovalRequest> for ApprovalRequest {
    fn from(r: &kubeleash_tower::ApprovalRequest) -> Self {
        ApprovalRequest {
            id: r.id.clone(),
            user: r.identity.user.clone(),
            groups: r.identity.groups.clone(),
            method: r.method.clone(),
            target: r.target.clone(),
            attributes: Attributes::from(&r.attributes),
            kubectl: r.kubectl.clone(),
            body: r.body.clone(),
            rule: r.rule.clone(),
            reason: r.reason.clone(),
            agent_reason: r.agent_reason.clone(),
            dry_run: r.dry_run.as_ref().map(DryRun::from),
            widen: WidenAxes::from(&r.widen),
        }
    }
}

/// Where and how requests are recorded.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// The file records are appended to (JSON Lines); an existing hash-chained log is continued.
    pub path: String,
    /// `chained` (kubeleash's hash-chained records, the default) or `audit` (Kubernetes audit
    /// events).
    #[napi(ts_type = "'chained' | 'audit'")]
    pub format: Option<String>,
    /// Also record delivered (masked) response bodies, capped at this many bytes each.
    pub body_cap: Option<u32>,
}

type ApproverFn =
    ThreadsafeFunction<ApprovalRequest, Promise<Value>, ApprovalRequest, Status, false, true>;

/// What the agent (its 403) and the record are told when the approver throws, rejects or
/// cannot be called: its error may quote a credential (a chat webhook URL, a token), so the
/// error goes to the operator only (`onError`).
pub const APPROVER_FAILED: &str = "the approver failed; the request was not approved";

/// A failure only the operator may see the details of, handed to `onError`.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct OperatorReport {
    /// `approver` (the approver threw or rejected), `upstream` (the API server could not be
    /// reached or answered with a connection error) or `connect` (`connect`/`listen` failed).
    #[napi(ts_type = "'approver' | 'upstream' | 'connect'")]
    pub kind: String,
    /// The id the agent was given: the approval id for `approver`, a correlation id otherwise.
    pub id: String,
    /// What happened, in full: it may quote the kubeconfig, a credential plugin's command line
    /// or output, or the approver's error. Keep it out of the agent's reach.
    pub message: String,
}

type ReportFn = ThreadsafeFunction<OperatorReport, (), OperatorReport, Status, false, true>;

/// Where the details of failures go: the operator's `onError`, else standard error.
#[derive(Clone, Default)]
struct Operator(Option<Arc<ReportFn>>);

impl Operator {
    fn report(&self, kind: &str, id: &str, message: String) {
        let report = OperatorReport {
            kind: kind.to_string(),
            id: id.to_string(),
            message,
        };
        match &self.0 {
            // A throwing `onError` is dropped: it must not become something the agent sees.
            Some(f) => {
                f.call_with_return_value(
                    report,
                    ThreadsafeFunctionCallMode::NonBlocking,
                    |_, _| Ok(()),
                );
            }
            None => eprintln!(
                "kubeleash: {} failure {}: {}",
                report.kind, report.id, report.message
            ),
        }
    }
}

/// Options of `listen` (and of `connect`, which passes them on).
#[napi(object, object_to_js = false)]
#[derive(Default)]
pub struct ListenOptions {
    /// Path of the operator's kubeconfig; default: `$KUBECONFIG`, then `~/.kube/config`.
    pub kubeconfig: Option<String>,
    /// The operator's kubeconfig as YAML or JSON text, instead of a path.
    pub kubeconfig_text: Option<String>,
    /// The kubeconfig context to use; default: its current context.
    pub context: Option<String>,
    /// The agent's user name, as the policy's `subjects` match it.
    pub user: Option<String>,
    /// The agent's groups.
    pub groups: Option<Vec<String>>,
    /// Answers requests the policy holds for approval; none: they are denied.
    #[napi(ts_type = "(request: ApprovalRequest) => Promise<ApprovalAnswer>")]
    pub approver: Option<ApproverFn>,
    /// Record every request to this file (a path, or options).
    pub record: Option<Either<String, RecordOptions>>,
    /// `enforce` (the default) or `observe` (decide and record, but let everything through; `audit` is its former name).
    #[napi(ts_type = "'enforce' | 'observe' | 'audit'")]
    pub mode: Option<String>,
    /// How long a held request waits for the approver before it is denied; default 300. With
    /// `approvals: 'nonblocking'`, also how long an approval waits to be used and a refusal is
    /// repeated.
    pub approval_timeout_seconds: Option<f64>,
    /// `blocking` (the default): a held request stays open until the approver answers.
    /// `nonblocking`, for agents whose calls cannot wait for a person: a held request is answered
    /// at once with a 403 `Status` naming its approval (`details.uid`, a cause
    /// `ApprovalPending`, the message) and the headers `x-kubeleash-approval-id` and
    /// `retry-after`; the approver is asked in the background, once. The identical request sent
    /// again gets the same answer until the approver answers; then it goes through once if
    /// approved, or gets a 403 with the approver's reason if denied.
    ///
    /// ```js
    /// const connection = await listen(policy, { user: 'agent-1', approver, approvals: 'nonblocking', retryAfterSeconds: 5 })
    /// ```
    #[napi(ts_type = "'blocking' | 'nonblocking'")]
    pub approvals: Option<String>,
    /// With `approvals: 'nonblocking'`: what `retry-after` tells the agent, in seconds (whole
    /// seconds, rounded up); default 10.
    pub retry_after_seconds: Option<f64>,
    /// Gets the details of failures the agent is only given an id for (an approver's error, an
    /// upstream connection error, a kubeconfig or credential plugin failure). Default (the
    /// `index.js` wrapper): a process warning; without one, standard error.
    #[napi(ts_type = "(report: OperatorReport) => void")]
    pub on_error: Option<ReportFn>,
}

/// A running loopback listener. Requests to `url` with `Authorization: Bearer <token>` go
/// through the policy to the operator's cluster.
#[napi]
pub struct Connection {
    url: String,
    token: String,
    namespace: String,
    stop: watch::Sender<bool>,
    recorder: Option<Arc<JsonlRecorder>>,
}

#[napi]
impl Connection {
    /// `http://127.0.0.1:<port>`.
    #[napi(getter)]
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The per-connection bearer secret the listener requires. It is not the operator's
    /// credential and opens nothing but this listener.
    #[napi(getter)]
    pub fn token(&self) -> String {
        self.token.clone()
    }

    /// The default namespace of the operator's kubeconfig context.
    #[napi(getter)]
    pub fn namespace(&self) -> String {
        self.namespace.clone()
    }

    /// Stop listening, end open streams, and close the record (writing its closing record).
    #[napi]
    pub fn close(&self) {
        self.stop.send_replace(true);
        if let Some(r) = &self.recorder {
            r.close();
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// The approver: a JavaScript async function.
struct JsApprover(ApproverFn, Operator);

#[async_trait::async_trait]
impl Approver for JsApprover {
    async fn approve(&self, request: kubeleash_tower::ApprovalRequest) -> Answer {
        let answer = match self
            .0
            .call_async_catch(ApprovalRequest::from(&request))
            .await
        {
            Ok(promise) => promise.await,
            Err(e) => Err(e),
        };
        let failure = match answer.map(|v| parse_answer(&v)) {
            Ok(Ok(a)) => return a,
            Ok(Err(wrong)) => format!("it answered {wrong}"),
            Err(e) => e.reason,
        };
        self.1.report(
            "approver",
            &request.id,
            format!(
                "the approver failed on approval {} ({}): {failure}; the request was denied",
                request.id, request.kubectl
            ),
        );
        Answer::Deny {
            by: "kubeleash".into(),
            reason: APPROVER_FAILED.into(),
        }
    }
}

/// `true` / `'approve'` / `{ approve: true, by?, windowSeconds? }` approve;
/// `{ approve: true, by?, widen: { names?, fields?, uses?, seconds? } }` approves widened;
/// anything else denies (`false`, `'deny'`, `{ approve: false, by?, reason? }`, nothing). A
/// malformed `widen` is an error (the approver failed), whatever `approve` says.
fn parse_answer(v: &Value) -> Result<Answer, String> {
    let by = v
        .get("by")
        .and_then(Value::as_str)
        .unwrap_or("approver")
        .to_string();
    let approve = match v {
        Value::Bool(b) => *b,
        Value::String(s) => s == "approve",
        Value::Object(o) => o.get("approve").and_then(Value::as_bool).unwrap_or(false),
        _ => false,
    };
    if let Some(w) = v.get("widen").filter(|w| !w.is_null()) {
        let widening = widening(w)?;
        if v.get("windowSeconds").is_some_and(|s| !s.is_null()) {
            return Err(
                "both `windowSeconds` and `widen`: give the time once, as `widen.seconds`".into(),
            );
        }
        if approve {
            return Ok(Answer::Widen { by, widening });
        }
    }
    if approve {
        let window = v
            .get("windowSeconds")
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite() && *s > 0.0)
            // `from_secs_f64` would panic on a huge window; the layer cuts it to 24 h anyway.
            .map(|s| {
                Duration::try_from_secs_f64(s)
                    .unwrap_or(MAX_WINDOW)
                    .min(MAX_WINDOW)
            });
        Ok(Answer::Approve { by, window })
    } else {
        let reason = v
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("denied")
            .to_string();
        Ok(Answer::Deny { by, reason })
    }
}

type Out = UnsyncBoxBody<Bytes, BoxError>;

/// A Kubernetes `Status` failure, as the API server phrases errors.
fn status(code: u16, reason: &str, message: &str) -> Response<Out> {
    kubeleash_core::status::Status::failure(code, reason, message).response(|b| {
        Full::new(Bytes::from(b))
            .map_err(|never| match never {})
            .boxed_unsync()
    })
}

/// Compare without an early exit, so timing does not reveal how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct Upstream {
    client: kube::Client,
    expect_auth: String,
    /// The `Host` every request must name: the listener's own `127.0.0.1:<port>`.
    expect_host: String,
    operator: Operator,
}

/// Hop-by-hop headers belong to the connection to the listener, not to the request; the
/// framing headers are recomputed from the body that was decided (never the caller's).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "http2-settings",
];

/// Why a request is refused before it reaches the layer, if it is: a browser's (`Origin`), or
/// one addressed to another name (`Host`: a DNS-rebound page names its own host), or one
/// without the connection's secret.
fn gate(headers: &http::HeaderMap, up: &Upstream) -> Option<Response<Out>> {
    if headers.contains_key(ORIGIN) {
        return Some(status(
            403,
            "Forbidden",
            "kubeleash: this listener does not serve browsers (the request has an `Origin`)",
        ));
    }
    let hosts: Vec<&[u8]> = headers.get_all(HOST).iter().map(|v| v.as_bytes()).collect();
    if hosts.len() != 1 || !hosts.iter().all(|h| same(h, up.expect_host.as_bytes())) {
        return Some(status(
            403,
            "Forbidden",
            "kubeleash: this listener serves only requests addressed to it (`Host` must be its 127.0.0.1 address)",
        ));
    }
    let authorized = headers
        .get(AUTHORIZATION)
        .is_some_and(|v| same(v.as_bytes(), up.expect_auth.as_bytes()));
    if !authorized {
        return Some(status(
            401,
            "Unauthorized",
            "kubeleash: this listener serves only the client `connect` configured",
        ));
    }
    None
}

/// The headers `Connection` names as hop-by-hop, lowercased; `upgrade` among them means the
/// request asks to switch protocols.
fn connection_tokens(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

async fn handle(up: Arc<Upstream>, req: Request<Incoming>) -> Result<Response<Out>, Infallible> {
    if let Some(refusal) = gate(req.headers(), &up) {
        return Ok(refusal);
    }
    let (mut parts, body) = req.into_parts();
    // Only origin-form (`/path?query`) targets: an absolute-form one names a host the request is
    // not going to, and `*` or authority-form are not Kubernetes API requests.
    if parts.uri.scheme().is_some()
        || parts.uri.authority().is_some()
        || !parts.uri.path().starts_with('/')
    {
        return Ok(status(
            400,
            "BadRequest",
            "kubeleash: the request target must be a path (`/api/...`), not a URL with a scheme or host",
        ));
    }
    let named = connection_tokens(&parts.headers);
    if parts.headers.contains_key(UPGRADE) || named.iter().any(|t| t == "upgrade") {
        return Ok(status(
            501,
            "NotImplemented",
            "kubeleash: upgraded connections (exec, attach, port-forward) are not carried by the in-process connection; use the kubeleash proxy",
        ));
    }
    for h in &named {
        parts.headers.remove(h.as_str());
    }
    for h in HOP_BY_HOP {
        parts.headers.remove(h);
    }
    parts.headers.remove(HOST);
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            return Ok(status(
                413,
                "RequestEntityTooLarge",
                &format!(
                    "kubeleash: request body refused: {e} (the API server accepts at most 3 MiB)"
                ),
            ));
        }
    };
    let what = format!("{} {}", parts.method, parts.uri.path());
    // Where the upstream stack leaves its error's details (the layer answers the agent with a
    // Status naming a correlation id), for the operator's `onError`.
    let note = Note::default();
    parts.extensions.insert(note.clone());
    let req = Request::from_parts(parts, kubeleash_connect::Body::from(bytes));
    match up.client.send(req).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            for h in HOP_BY_HOP {
                parts.headers.remove(h);
            }
            let Some(detail) = note.take() else {
                let body = body.map_err(BoxError::from).boxed_unsync();
                return Ok(Response::from_parts(parts, body));
            };
            // The upstream failed and the layer answered with its Status (short, already
            // whole): the operator gets the details under the id the agent was given.
            match Limited::new(body, MAX_BODY).collect().await {
                Ok(c) => {
                    let whole = c.to_bytes();
                    let id = id_in(&whole).unwrap_or_else(correlation_id);
                    up.operator.report(
                        "upstream",
                        &id,
                        format!("request {id} ({what}) failed: {detail}"),
                    );
                    let body = Full::new(whole)
                        .map_err(|never| match never {})
                        .boxed_unsync();
                    Ok(Response::from_parts(parts, body))
                }
                Err(e) => Ok(upstream_failed(&up, &what, &*e)),
            }
        }
        // kube's error can name the operator's server, or carry what its credential machinery
        // printed: the operator gets it, the agent an id.
        Err(e) => Ok(upstream_failed(&up, &what, &e)),
    }
}

/// The crate's operator text without its leading `kubeleash: ` (the `onError` default, a process
/// warning, adds its own).
fn unprefixed(text: &str) -> String {
    text.strip_prefix("kubeleash: ").unwrap_or(text).to_string()
}

/// The answer when the upstream side fails outside the layer: the details to the operator's
/// `onError`, to the agent a fixed 502 naming the correlation id.
fn upstream_failed(
    up: &Upstream,
    what: &str,
    e: &(dyn std::error::Error + 'static),
) -> Response<Out> {
    let s = sanitize(what, e);
    up.operator
        .report("upstream", &s.id, unprefixed(&s.operator));
    status(502, "ServiceUnavailable", &s.agent)
}

async fn serve(listener: TcpListener, up: Arc<Upstream>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        let up = Arc::clone(&up);
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(Arc::clone(&up), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
}

fn random_secret() -> Result<String, String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| format!("cannot draw a random secret: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// What `listen` needs, moved off the main thread.
struct Plan {
    layer: KubeleashLayer,
    recorder: Option<Arc<JsonlRecorder>>,
    kubeconfig: Option<String>,
    kubeconfig_text: Option<String>,
    context: Option<String>,
    operator: Operator,
}

/// Why `listen` failed: a stable code and a message.
type Failure = (&'static str, String);

async fn start(plan: Plan) -> Result<Connection, Failure> {
    // A kubeconfig error can quote the file (a token in it) and a client error what a credential
    // plugin was run with and printed: the message names a correlation id, the operator's
    // `onError` gets the details under it.
    let operator = plan.operator.clone();
    let failed = |e: kubeleash_connect::ConnectError| {
        if let Some(detail) = e.operator_detail() {
            let id = id_in(detail.as_bytes()).unwrap_or_else(correlation_id);
            operator.report("connect", &id, unprefixed(detail));
        }
        ("kubeconfig", e.to_string())
    };
    let context = plan.context.as_deref();
    let upstream = match (plan.kubeconfig_text, plan.kubeconfig) {
        (Some(text), _) => kubeleash_connect::Upstream::from_kubeconfig_yaml(&text, context).await,
        (None, path) => {
            kubeleash_connect::Upstream::from_kubeconfig(path.as_deref().map(Path::new), context)
                .await
        }
    }
    .map_err(failed)?;
    let namespace = upstream.default_namespace().to_string();
    // Runs an exec plugin now, for the first credential.
    let client = upstream
        .client_builder()
        .map_err(failed)?
        .with_layer(&plan.layer)
        .build();
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| ("listen", format!("cannot listen on 127.0.0.1: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ("listen", format!("cannot read the listener's address: {e}")))?;
    let token = random_secret().map_err(|m| ("listen", m))?;
    let up = Arc::new(Upstream {
        client,
        expect_auth: format!("Bearer {token}"),
        expect_host: addr.to_string(),
        operator: plan.operator,
    });
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(serve(listener, up, stopped));
    Ok(Connection {
        url: format!("http://{addr}"),
        token,
        namespace,
        stop,
        recorder: plan.recorder,
    })
}

/// Start a loopback listener that sends every request through `policy` to the operator's
/// cluster. `connect` builds a `KubeConfig` for `@kubernetes/client-node` from it.
#[napi(ts_return_type = "Promise<Connection>")]
pub fn listen<'env>(
    env: &'env Env,
    policy: &Policy,
    options: Option<ListenOptions>,
) -> napi::Result<PromiseRaw<'env, Connection>> {
    let o = options.unwrap_or_default();
    let mode = match o.mode.as_deref() {
        None | Some("enforce") => Mode::Enforce,
        Some("observe" | "audit") => Mode::Audit,
        Some(other) => {
            return Err(errors::type_error(
                env,
                "invalid-mode",
                &format!(
                    "mode `{other}` is neither `enforce` nor `observe` (or `audit`, its former name)"
                ),
            ));
        }
    };
    let mut layer = KubeleashLayer::new(policy.inner.clone())
        .identity(Identity::new(
            o.user.unwrap_or_default(),
            o.groups.unwrap_or_default(),
        ))
        .mode(mode);
    if let Some(t) = o.approval_timeout_seconds {
        // Not `from_secs_f64`, which panics on a value too large for a `Duration`.
        let Some(timeout) = Duration::try_from_secs_f64(t).ok().filter(|d| !d.is_zero()) else {
            return Err(errors::type_error(
                env,
                "invalid-timeout",
                &format!(
                    "approvalTimeoutSeconds must be a positive number, not `{}`",
                    js_number(t)
                ),
            ));
        };
        layer = layer.approval_timeout(timeout);
    }
    layer = layer.approval_mode(approval_mode(
        env,
        o.approvals.as_deref(),
        o.retry_after_seconds,
    )?);
    let operator = Operator(o.on_error.map(Arc::new));
    if let Some(f) = o.approver {
        layer = layer.approver(JsApprover(f, operator.clone()));
    }
    let recorder = match o.record {
        None => None,
        Some(r) => {
            let r = match r {
                Either::A(path) => RecordOptions {
                    path,
                    format: None,
                    body_cap: None,
                },
                Either::B(r) => r,
            };
            let format = match r.format.as_deref() {
                None | Some("chained") => Format::Chained,
                Some("audit") => Format::Audit,
                Some(other) => {
                    return Err(errors::type_error(
                        env,
                        "invalid-record-format",
                        &format!("record format `{other}` is neither `chained` nor `audit`"),
                    ));
                }
            };
            let options = RecorderOptions {
                format,
                body_cap: r.body_cap.map(|c| c as usize),
                ..Default::default()
            };
            let rec = JsonlRecorder::open(&r.path, options).map_err(|e| {
                errors::plain(
                    env,
                    "record",
                    &format!(
                        "cannot open the record `{}`: {}",
                        r.path,
                        e.to_string().to_lowercase()
                    ),
                )
            })?;
            Some(Arc::new(rec))
        }
    };
    if let Some(r) = &recorder {
        // The layer and `close` share the recorder: `Recorder` is implemented for `Arc`.
        layer = layer.recorder(Arc::clone(r));
    }
    let plan = Plan {
        layer,
        recorder,
        kubeconfig: o.kubeconfig,
        kubeconfig_text: o.kubeconfig_text,
        context: o.context,
        operator,
    };
    env.spawn_future_with_callback(async move { Ok(start(plan).await) }, |env, r| match r {
        Ok(c) => Ok(c),
        Err((code, message)) => Err(errors::plain(env, code, &message)),
    })
}

/// What `retry-after` says in non-blocking mode when `retryAfterSeconds` is not given (as the
/// proxy's `--approvals-nonblocking`).
const DEFAULT_RETRY_AFTER: f64 = 10.0;

/// `approvals` and `retryAfterSeconds` as the layer's [`ApprovalMode`].
fn approval_mode(
    env: &Env,
    approvals: Option<&str>,
    retry_after: Option<f64>,
) -> napi::Result<ApprovalMode> {
    match approvals {
        None | Some("blocking") => match retry_after {
            None => Ok(ApprovalMode::Blocking),
            Some(_) => Err(errors::type_error(
                env,
                "invalid-retry-after",
                "retryAfterSeconds applies only to `approvals: 'nonblocking'`: drop it, or set `approvals: 'nonblocking'`",
            )),
        },
        Some("nonblocking") => {
            let s = retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
            // Not `from_secs_f64`, which panics on NaN, infinities and huge values.
            match Duration::try_from_secs_f64(s) {
                Ok(d) if !d.is_zero() => Ok(ApprovalMode::NonBlocking { retry_after: d }),
                _ => Err(errors::type_error(
                    env,
                    "invalid-retry-after",
                    &format!(
                        "retryAfterSeconds must be a positive number of seconds, not `{}`",
                        js_number(s)
                    ),
                )),
            }
        }
        Some(other) => Err(errors::type_error(
            env,
            "invalid-approvals",
            &format!("approvals `{other}` is neither `blocking` nor `nonblocking`"),
        )),
    }
}

/// A number as JavaScript would print it (near enough), to quote it back.
fn js_number(n: f64) -> String {
    if n.is_nan() {
        "NaN".into()
    } else if n.is_infinite() {
        if n > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if n.abs() >= 1e21 {
        format!("{n:e}")
    } else {
        n.to_string()
    }
}

/// One problem found in a record log.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct RecordProblem {
    /// 1-based line number.
    pub line: u32,
    /// What is wrong.
    pub message: String,
}

/// The result of checking a record log.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct RecordVerification {
    /// Whether every link of the chain holds.
    pub ok: bool,
    /// Every record, as written.
    #[napi(ts_type = "Array<Record<string, any>>")]
    pub records: Vec<Value>,
    /// Chain breaks, in order. Empty when intact.
    pub problems: Vec<RecordProblem>,
    /// Notes that are not breaks: a torn last line, no closing record.
    pub warnings: Vec<String>,
}

/// Check every link of a hash-chained record log (the text of a `record` file).
#[napi]
pub fn verify_record(log: String) -> RecordVerification {
    let Verification {
        records,
        problems,
        warnings,
        ..
    } = verify(&log);
    RecordVerification {
        ok: problems.is_empty(),
        records: records
            .iter()
            .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
            .collect(),
        problems: problems
            .into_iter()
            .map(|(line, message)| RecordProblem {
                line: u32::try_from(line).unwrap_or(u32::MAX),
                message,
            })
            .collect(),
        warnings,
    }
}
