//! The guarded client's data path: the same `KubeleashLayer` Rust agents use, over the upstream
//! stack `kubeleash-connect` builds from the operator's kubeconfig (kube-rs: HTTPS, client
//! certificates, tokens, exec plugins and their refresh), on a Tokio runtime the binding owns. Python hands each request to [`Transport::send`]
//! and reads the masked response from a [`ResponseBody`]; the credential, the policy and the
//! record never leave Rust.
//!
//! Every wait happens with the GIL released, in short slices between which Python signals
//! (Ctrl-C) are checked, so a held approval or an idle watch can still be interrupted. A
//! response body is a std mutex taken only while the GIL is released, so two Python threads
//! reading one body cannot deadlock on the GIL.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use kubeleash_connect::{Body, DynBody, Note, Upstream, UpstreamService, chain, id_in};
use kubeleash_core::mask::MaskError as CoreMaskError;
use kubeleash_core::policy::Identity;
use kubeleash_core::record::verify;
use kubeleash_tower::{
    Answer as CoreAnswer, ApprovalMode, ApprovalRequest as CoreApprovalRequest, Approver, DryRun,
    JsonlRecorder, Kubeleash, KubeleashBody, KubeleashLayer, MAX_WINDOW, Mode, RecorderOptions,
    Widening,
};
use pyo3::exceptions::{PyConnectionError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use tower::{Layer, ServiceExt};

use crate::convert::{bytes_arg, headers_arg, repr_str, ser_to_py};
use crate::errors::{ConnectError, RequestError, header_error, mask_error};
use crate::framing;
use crate::operator_log::{correlation_id, report};
use crate::policy::Policy;
use crate::widen::{axes_to_py, widening};

/// How long one GIL-free wait lasts before Python signals are checked.
const SLICE: Duration = Duration::from_millis(100);

fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kubeleash")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| ConnectError::new_err(format!("cannot start kubeleash's async runtime: {e}")))
}

/// Run `fut` to completion with the GIL released, checking for Python signals between slices.
fn wait<F: Future + Send>(py: Python<'_>, mut fut: Pin<&mut F>) -> PyResult<F::Output>
where
    F::Output: Send,
{
    let rt = runtime()?;
    loop {
        let step =
            py.detach(|| rt.block_on(async { tokio::time::timeout(SLICE, fut.as_mut()).await }));
        match step {
            Ok(v) => return Ok(v),
            Err(_) => py.check_signals()?,
        }
    }
}

/// A `kubeleash-connect` failure: its message (which names a correlation id when there are
/// details) to Python, the details to the operator's log.
fn connect_failed(py: Python<'_>, e: &kubeleash_connect::ConnectError) -> PyErr {
    if let Some(detail) = e.operator_detail() {
        report(py, detail, None);
    }
    ConnectError::new_err(e.to_string())
}

/// An approver's answer: `Answer.approve(...)`, `Answer.widen(...)` or `Answer.deny(...)`.
#[pyclass(frozen, module = "kubeleash")]
pub struct Answer {
    approved: bool,
    by: String,
    reason: String,
    window: Option<f64>,
    widening: Option<Widening>,
}

#[pymethods]
impl Answer {
    /// Let the held request through; `window` (seconds) also lets through, for that long, later
    /// requests from the same identity that are identical to this one as they reach the API
    /// server (method, target with its query, content type, impersonation, body bytes). The
    /// layer cuts a window to 24 hours.
    #[staticmethod]
    #[pyo3(signature = (*, by = "approver".to_string(), window = None))]
    fn approve(by: String, window: Option<f64>) -> PyResult<Answer> {
        if let Some(w) = window.filter(|w| !w.is_finite() || *w <= 0.0) {
            return Err(PyValueError::new_err(format!(
                "window must be a positive number of seconds, not {w}"
            )));
        }
        Ok(Answer {
            approved: true,
            by,
            reason: String::new(),
            window,
            widening: None,
        })
    }

    /// Let the held request through and leave a grant widened along the axes the request
    /// offers (`request.widen`): `names`, a glob the object's name may match; `fields`, ranges
    /// (`{"path": "spec.replicas", "min": 1, "max": 5}`, `{"path": ..., "matches": GLOB}` or
    /// `"PATH=MIN..MAX"`); `uses`, how many more requests it lets through; `seconds`, how long
    /// it lasts (default 15 minutes, at most 24 hours). For example
    /// `Answer.widen(by="alice", names="web-*", uses=3)`.
    ///
    /// A malformed widening raises `ValueError`/`TypeError` here (the approver then fails, and
    /// the request is denied). One that does not fit the request is approved exactly, leaves no
    /// grant, and the record says why.
    #[staticmethod]
    #[pyo3(signature = (*, by = "approver".to_string(), names = None, fields = None, uses = None, seconds = None))]
    fn widen(
        by: String,
        names: Option<String>,
        fields: Option<&Bound<'_, PyAny>>,
        uses: Option<i64>,
        seconds: Option<i64>,
    ) -> PyResult<Answer> {
        Ok(Answer {
            approved: true,
            by,
            reason: String::new(),
            window: None,
            widening: Some(widening(names, fields, uses, seconds)?),
        })
    }

    /// Refuse the held request; the agent sees `reason` in its 403.
    #[staticmethod]
    #[pyo3(signature = (*, by = "approver".to_string(), reason = "denied".to_string()))]
    fn deny(by: String, reason: String) -> Answer {
        Answer {
            approved: false,
            by,
            reason,
            window: None,
            widening: None,
        }
    }

    /// Whether this answer approves.
    #[getter]
    fn approved(&self) -> bool {
        self.approved
    }

    /// Who answered.
    #[getter]
    fn by(&self) -> &str {
        &self.by
    }

    /// Why it was denied (empty for an approval).
    #[getter]
    fn reason(&self) -> &str {
        &self.reason
    }

    /// The grant window in seconds, if any.
    #[getter]
    fn window(&self) -> Option<f64> {
        self.window
    }

    /// The widening, as `{"names"?, "fields"?, "uses"?, "seconds"?}`, if any.
    #[getter]
    fn widening<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.widening.as_ref().map(|w| ser_to_py(py, w)).transpose()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let by = repr_str(py, Some(&self.by));
        if let Some(w) = &self.widening {
            let shown = serde_json::to_string(w).unwrap_or_default();
            return format!("Answer.widen(by={by}, widening={shown})");
        }
        match (self.approved, self.window) {
            (true, Some(w)) => format!("Answer.approve(by={by}, window={w})"),
            (true, None) => format!("Answer.approve(by={by})"),
            (false, _) => format!(
                "Answer.deny(by={by}, reason={})",
                repr_str(py, Some(&self.reason))
            ),
        }
    }
}

impl Answer {
    fn to_core(&self) -> CoreAnswer {
        if let Some(widening) = &self.widening {
            return CoreAnswer::Widen {
                by: self.by.clone(),
                widening: widening.clone(),
            };
        }
        if self.approved {
            CoreAnswer::Approve {
                by: self.by.clone(),
                // `from_secs_f64` would panic on a huge window; the layer cuts it to 24 h anyway.
                window: self.window.map(|w| {
                    Duration::try_from_secs_f64(w)
                        .unwrap_or(MAX_WINDOW)
                        .min(MAX_WINDOW)
                }),
            }
        } else {
            CoreAnswer::Deny {
                by: self.by.clone(),
                reason: self.reason.clone(),
            }
        }
    }
}

/// What an approver is shown: one held request, its body masked.
#[pyclass(frozen, module = "kubeleash")]
pub struct ApprovalRequest {
    inner: CoreApprovalRequest,
}

#[pymethods]
impl ApprovalRequest {
    /// The approval's id: random, new for every held request; an answer resolves this one
    /// request only.
    #[getter]
    fn id(&self) -> &str {
        &self.inner.id
    }

    /// Who sent it: `{"user": ..., "groups": [...]}`.
    #[getter]
    fn identity<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        ser_to_py(py, &self.inner.identity)
    }

    /// The HTTP method.
    #[getter]
    fn method(&self) -> &str {
        &self.inner.method
    }

    /// The request target as sent.
    #[getter]
    fn target(&self) -> &str {
        &self.inner.target
    }

    /// The authorization attributes, as `Decision.request` has them.
    #[getter]
    fn attributes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        ser_to_py(py, &self.inner.attributes)
    }

    /// The kubectl command the request amounts to.
    #[getter]
    fn kubectl(&self) -> &str {
        &self.inner.kubectl
    }

    /// The request body, masked with the same rules as responses; None without one.
    #[getter]
    fn body(&self) -> Option<&str> {
        self.inner.body.as_deref()
    }

    /// The request's `Content-Type` as sent (how the API server reads the body), if any.
    #[getter]
    fn content_type(&self) -> Option<&str> {
        self.inner.content_type.as_deref()
    }

    /// The identity the request impersonates if approved (`{"user", "groups", "uid", "extra",
    /// "frontProxy"}`), or None.
    #[getter]
    fn impersonation<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.inner
            .impersonation
            .as_ref()
            .map(|i| ser_to_py(py, i))
            .transpose()
    }

    /// The rule that asked for approval.
    #[getter]
    fn rule(&self) -> Option<&str> {
        self.inner.rule.as_deref()
    }

    /// The policy's reason.
    #[getter]
    fn reason(&self) -> &str {
        &self.inner.reason
    }

    /// The agent's own reason for the request (its `X-Kubeleash-Reason` header: printable, at
    /// most 500 characters, masked), or None. The agent wrote it: it explains, it proves nothing.
    #[getter]
    fn agent_reason(&self) -> Option<&str> {
        self.inner.agent_reason.as_deref()
    }

    /// What the API server says a held write would do (the same request sent with
    /// `dryRun=All`, compared with the live object, both masked): `{"status": int, "rejected":
    /// str | None, "changes": [{"path", "before"?, "after"?, "masked"}], "diff": str}`. None for
    /// a request that changes no object (reads, subresources such as `token`, exec) and when the
    /// API server could not be asked.
    #[getter]
    fn dry_run<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.inner
            .dry_run
            .as_ref()
            .map(|d| dry_run_to_py(py, d))
            .transpose()
    }

    /// What an approver may widen an approval along (`Answer.widen`): `{"never": str | None,
    /// "names": bool, "fields": [str], "uses_and_time": bool}`. `never` says why the request
    /// may only be approved exactly (the policy's floor, `approvals.neverWiden`: by default
    /// secrets, deletes, RBAC...); then nothing else is offered.
    #[getter]
    fn widen<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        axes_to_py(py, &self.inner.widen)
    }

    /// Everything above as a dict (keys without a value left out; `dry_run` and `widen` as
    /// their properties have them).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let dict = ser_to_py(py, &self.inner)?;
        if let Some(d) = &self.inner.dry_run {
            dict.set_item("dry_run", dry_run_to_py(py, d)?)?;
        }
        dict.set_item("widen", axes_to_py(py, &self.inner.widen)?)?;
        Ok(dict)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "ApprovalRequest(id={}, kubectl={}, rule={})",
            repr_str(py, Some(&self.inner.id)),
            repr_str(py, Some(&self.inner.kubectl)),
            repr_str(py, self.inner.rule.as_deref())
        )
    }
}

/// A dry run as a dict: its serde form, with `rejected` always there (None when the API server
/// would accept the write). A change's `before` (`after`) is left out when the field is added
/// (removed), so it stays apart from a JSON `null`.
fn dry_run_to_py<'py>(py: Python<'py>, d: &DryRun) -> PyResult<Bound<'py, PyAny>> {
    let dict = ser_to_py(py, d)?;
    if d.rejected.is_none() {
        dict.set_item("rejected", py.None())?;
    }
    Ok(dict)
}

/// A Python callable as the layer's approver. It runs on a blocking thread of the runtime, with
/// the GIL, while the thread that sent the request waits without it.
struct PyApprover {
    callable: Arc<Py<PyAny>>,
}

/// What the agent (its 403) and the record are told when the approver fails, whatever the
/// failure was: an approver's exception may quote a credential (a chat webhook URL, a token), so
/// its text goes to the operator's log only.
pub(crate) const APPROVER_FAILED: &str = "the approver failed; the request was not approved";

/// The approver's failure, for the operator's log; the agent gets [`APPROVER_FAILED`].
fn approver_failed(
    py: Python<'_>,
    id: &str,
    kubectl: &str,
    what: &str,
    error: Option<&PyErr>,
) -> CoreAnswer {
    report(
        py,
        &format!(
            "kubeleash: the approver failed on approval {id} ({kubectl}): {what}; the request was denied"
        ),
        error,
    );
    CoreAnswer::Deny {
        by: "kubeleash".into(),
        reason: APPROVER_FAILED.into(),
    }
}

fn ask(py: Python<'_>, callable: &Py<PyAny>, request: CoreApprovalRequest) -> CoreAnswer {
    let (id, kubectl) = (request.id.clone(), request.kubectl.clone());
    let result =
        Py::new(py, ApprovalRequest { inner: request }).and_then(|r| callable.call1(py, (r,)));
    let value = match result {
        Ok(v) => v.into_bound(py),
        Err(e) => return approver_failed(py, &id, &kubectl, "it raised an exception", Some(&e)),
    };
    if let Ok(a) = value.cast::<Answer>() {
        return a.get().to_core();
    }
    if value.is_none() {
        return approver_failed(
            py,
            &id,
            &kubectl,
            "it returned None, not an Answer or a bool",
            None,
        );
    }
    match value.extract::<bool>() {
        Ok(true) => CoreAnswer::Approve {
            by: "approver".into(),
            window: None,
        },
        Ok(false) => CoreAnswer::Deny {
            by: "approver".into(),
            reason: "denied".into(),
        },
        Err(_) => {
            let shown = value
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default();
            approver_failed(
                py,
                &id,
                &kubectl,
                &format!("it returned a {shown}, not an Answer or a bool"),
                None,
            )
        }
    }
}

#[async_trait::async_trait]
impl Approver for PyApprover {
    async fn approve(&self, request: CoreApprovalRequest) -> CoreAnswer {
        let callable = Arc::clone(&self.callable);
        let (id, kubectl) = (request.id.clone(), request.kubectl.clone());
        let answer =
            tokio::task::spawn_blocking(move || Python::attach(|py| ask(py, &callable, request)))
                .await;
        answer.unwrap_or_else(|e| {
            Python::attach(|py| {
                approver_failed(py, &id, &kubectl, &format!("it did not finish: {e}"), None)
            })
        })
    }
}

/// What `Transport.send` returns: status, reason, response headers, body.
type Sent = (u16, String, Vec<(String, String)>, ResponseBody);

/// The guarded data path behind `kubeleash.kubernetes.connect`: policy, identity, approver,
/// record and the operator's credential, all held here.
#[pyclass(frozen, module = "kubeleash")]
pub struct Transport {
    svc: Kubeleash<UpstreamService>,
    server: String,
    namespace: String,
    recorder: Option<Arc<JsonlRecorder>>,
    closed: AtomicBool,
}

#[pymethods]
impl Transport {
    #[new]
    #[pyo3(signature = (policy, *, user, groups = Vec::new(), kubeconfig = None, context = None, approver = None, record = None, mode = "enforce", approval_timeout = 300.0, approvals = "blocking", retry_after = None))]
    #[allow(
        clippy::too_many_arguments,
        reason = "mirrors the keyword arguments of kubeleash.kubernetes.connect"
    )]
    fn new(
        py: Python<'_>,
        policy: &Policy,
        user: String,
        groups: Vec<String>,
        kubeconfig: Option<PathBuf>,
        context: Option<String>,
        approver: Option<Py<PyAny>>,
        record: Option<PathBuf>,
        mode: &str,
        approval_timeout: f64,
        approvals: &str,
        retry_after: Option<f64>,
    ) -> PyResult<Transport> {
        let mode = match mode {
            "enforce" => Mode::Enforce,
            "observe" | "audit" => Mode::Audit,
            other => {
                return Err(PyValueError::new_err(format!(
                    "mode must be \"enforce\" or \"observe\" (or \"audit\", its former name), not {other:?}"
                )));
            }
        };
        // Not `from_secs_f64`, which panics on a value too large for a `Duration`.
        let Some(approval_timeout) = Duration::try_from_secs_f64(approval_timeout)
            .ok()
            .filter(|d| !d.is_zero())
        else {
            return Err(PyValueError::new_err(format!(
                "approval_timeout must be a positive number of seconds, not {approval_timeout:?}"
            )));
        };
        let approval_mode = approval_mode(approvals, retry_after)?;
        let rt = runtime()?;
        let read = std::pin::pin!(Upstream::from_kubeconfig(
            kubeconfig.as_deref(),
            context.as_deref()
        ));
        let upstream = wait(py, read)?.map_err(|e| connect_failed(py, &e))?;
        // Building the stack runs an exec plugin (for the first credential), and the client's
        // pool needs the runtime's context.
        let upstream_svc = py
            .detach(|| {
                let _guard = rt.enter();
                upstream.service()
            })
            .map_err(|e| connect_failed(py, &e))?;
        // The credential is the upstream stack's (kube-rs's): the layer's default, `inner`.
        let mut layer = KubeleashLayer::new(policy.inner.clone())
            .identity(Identity::new(user, groups))
            .mode(mode)
            .approval_timeout(approval_timeout)
            .approval_mode(approval_mode);
        if let Some(a) = approver.filter(|a| !a.is_none(py)) {
            layer = layer.approver(PyApprover {
                callable: Arc::new(a),
            });
        }
        let recorder = match record {
            Some(path) => {
                let opened = py.detach(|| JsonlRecorder::open(&path, RecorderOptions::default()));
                let r = opened.map_err(|e| {
                    ConnectError::new_err(format!(
                        "cannot open record `{}`: {}",
                        path.display(),
                        e.to_string().to_lowercase()
                    ))
                })?;
                Some(Arc::new(r))
            }
            None => None,
        };
        if let Some(r) = &recorder {
            layer = layer.recorder(Arc::clone(r));
        }
        Ok(Transport {
            svc: layer.layer(upstream_svc),
            server: upstream.server().to_string(),
            namespace: upstream.default_namespace().to_string(),
            recorder,
            closed: AtomicBool::new(false),
        })
    }

    /// The API server requests go to (from the kubeconfig).
    #[getter]
    fn server(&self) -> &str {
        &self.server
    }

    /// The kubeconfig context's namespace (`default` if it names none).
    #[getter]
    fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Send one request through the layer. Returns `(status, reason, headers, body)`.
    #[pyo3(signature = (method, target, headers = None, body = None, timeout = None, read_timeout = None))]
    #[allow(
        clippy::too_many_arguments,
        reason = "one request's parts and its two timeouts"
    )]
    fn send(
        &self,
        py: Python<'_>,
        method: &str,
        target: &str,
        headers: Option<&Bound<'_, PyAny>>,
        body: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
        read_timeout: Option<f64>,
    ) -> PyResult<Sent> {
        if self.closed.load(Ordering::Acquire) {
            return Err(ConnectError::new_err("this kubeleash client is closed"));
        }
        let method = http::Method::from_bytes(method.as_bytes())
            .map_err(|_| RequestError::new_err(format!("`{method}` is not an HTTP method")))?;
        let uri: http::Uri = target.parse().map_err(|_| {
            RequestError::new_err(format!("request target `{target}` is not a valid URL path"))
        })?;
        // Only a path goes out, to the kubeconfig's server: a target naming a scheme or a host
        // (or `*`) is refused rather than resolved against anything.
        if uri.scheme().is_some() || uri.authority().is_some() || !target.starts_with('/') {
            return Err(RequestError::new_err(format!(
                "request target `{target}` must be a path starting with `/`, without a scheme or host"
            )));
        }
        let mut headers = headers_arg(py, headers)?;
        framing::strip(&mut headers).map_err(|framing::Refused::Upgrade| {
            header_error(
                py,
                "kubeleash's in-process client does not carry upgraded connections (exec, attach, port-forward, or any `Upgrade` header); run `kubeleash proxy` for those".into(),
            )
        })?;
        let body = match body.filter(|b| !b.is_none()) {
            Some(b) => Bytes::from(bytes_arg(b, "body")?.into_owned()),
            None => Bytes::new(),
        };
        let shown = format!("{method} {}", uri.path());
        let mut req = http::Request::new(Body::from(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        // Where the upstream stack leaves its error's details, for the operator's log.
        let note = Note::default();
        req.extensions_mut().insert(note.clone());
        let timeout = seconds(timeout)?;
        let svc = self.svc.clone();
        let rt = runtime()?;
        let mut handle = rt.spawn(async move {
            let call = svc.oneshot(req);
            match timeout {
                Some(t) => tokio::time::timeout(t, call)
                    .await
                    .map_err(|_| None)?
                    .map_err(Some),
                None => call.await.map_err(Some),
            }
        });
        let joined = match wait(py, Pin::new(&mut handle)) {
            Ok(j) => j,
            Err(e) => {
                handle.abort();
                return Err(e);
            }
        };
        let resp = match joined {
            Ok(Ok(r)) => r,
            Ok(Err(Some(e))) => {
                // The upstream's error names the operator's server and may carry what its
                // credential machinery printed: the operator's log gets it, the agent an id.
                return Err(upstream_failed(
                    py,
                    &format!(
                        "cannot reach the API server at {}: {}",
                        self.server,
                        chain(&*e)
                    ),
                ));
            }
            Ok(Err(None)) => {
                return Err(PyTimeoutError::new_err(
                    "no response within the request's timeout (time held for approval counts)",
                ));
            }
            Err(e) => {
                return Err(upstream_failed(py, &format!("the request was lost: {e}")));
            }
        };
        let (parts, body) = resp.into_parts();
        let mut state = BodyState {
            body: Some(Box::pin(body)),
            leftover: Bytes::new(),
        };
        if let Some(detail) = note.take() {
            // The upstream failed and the layer answered with a Status naming a correlation id
            // (a short body, already whole): the operator's log gets the details under it.
            let whole = match state.body.take() {
                Some(b) => wait(py, std::pin::pin!(b.collect()))?
                    .map(|c| c.to_bytes())
                    .unwrap_or_default(),
                None => Bytes::new(),
            };
            let id = id_in(&whole).unwrap_or_else(correlation_id);
            report(
                py,
                &format!("kubeleash: request {id} ({shown}) failed: {detail}"),
                None,
            );
            state.leftover = whole;
        }
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let reason = parts
            .status
            .canonical_reason()
            .unwrap_or_default()
            .to_string();
        let body = ResponseBody {
            state: Mutex::new(state),
            read_timeout: seconds(read_timeout)?,
        };
        Ok((parts.status.as_u16(), reason, headers, body))
    }

    /// Stop sending, and close the record with its `end` line. Idempotent.
    fn close(&self, py: Python<'_>) {
        self.closed.store(true, Ordering::Release);
        if let Some(r) = &self.recorder {
            py.detach(|| r.close());
        }
    }

    /// Whether `close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn __repr__(&self) -> String {
        format!(
            "<kubeleash Transport to {}{}>",
            self.server,
            if self.closed() { ", closed" } else { "" }
        )
    }
}

/// What `Retry-After` says in non-blocking mode when `retry_after` is not given (as the proxy's
/// `--approvals-nonblocking`).
const DEFAULT_RETRY_AFTER: f64 = 10.0;

/// `approvals` and `retry_after` as the layer's [`ApprovalMode`]: `"blocking"` (the default) keeps
/// a held request open until it is answered; `"nonblocking"` answers it at once with a 403 naming
/// its approval and `Retry-After: retry_after` (default 10 seconds).
fn approval_mode(approvals: &str, retry_after: Option<f64>) -> PyResult<ApprovalMode> {
    match approvals {
        "blocking" => match retry_after {
            None => Ok(ApprovalMode::Blocking),
            Some(_) => Err(PyValueError::new_err(
                "retry_after applies only to approvals=\"nonblocking\": drop it, or set approvals=\"nonblocking\"",
            )),
        },
        "nonblocking" => {
            let s = retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
            // Not `from_secs_f64`, which panics on NaN, infinities and huge values.
            match Duration::try_from_secs_f64(s) {
                Ok(d) if !d.is_zero() => Ok(ApprovalMode::NonBlocking { retry_after: d }),
                _ => Err(PyValueError::new_err(format!(
                    "retry_after must be a positive number of seconds, not {s:?}"
                ))),
            }
        }
        other => Err(PyValueError::new_err(format!(
            "approvals must be \"blocking\" or \"nonblocking\", not {other:?}"
        ))),
    }
}

/// A failure between kubeleash and the API server: the details to the operator's log, and to
/// the agent a fixed message with the correlation id that finds them there.
fn upstream_failed(py: Python<'_>, details: &str) -> PyErr {
    let id = correlation_id();
    report(
        py,
        &format!("kubeleash: request {id} failed: {details}"),
        None,
    );
    PyConnectionError::new_err(format!(
        "kubeleash could not complete the request with the API server (correlation id {id}; the operator's log has the details)"
    ))
}

fn seconds(s: Option<f64>) -> PyResult<Option<Duration>> {
    match s {
        None => Ok(None),
        // Not `from_secs_f64`, which panics on a value too large for a `Duration`.
        Some(s) => match Duration::try_from_secs_f64(s) {
            Ok(d) if !d.is_zero() => Ok(Some(d)),
            _ => Err(PyValueError::new_err(format!(
                "a timeout must be a positive number of seconds, not {s}"
            ))),
        },
    }
}

struct BodyState {
    body: Option<Pin<Box<KubeleashBody<Box<DynBody>>>>>,
    leftover: Bytes,
}

enum Step {
    Data(Bytes),
    End,
    Pending,
    Failed(kubeleash_tower::BoxError),
}

/// A response body as it arrives, masked: a raw, read-only binary stream. `read(n)` returns as
/// soon as some bytes are there (at most `n`), so a watch yields each event as it happens.
#[pyclass(frozen, module = "kubeleash")]
pub struct ResponseBody {
    state: Mutex<BodyState>,
    read_timeout: Option<Duration>,
}

impl ResponseBody {
    /// Append at most `room` bytes of `piece` to `out`, keeping the rest for the next read.
    fn take(&self, out: &mut Vec<u8>, mut piece: Bytes, room: usize) {
        if piece.len() > room {
            let rest = piece.split_off(room);
            self.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .leftover = rest;
        }
        out.extend_from_slice(&piece);
    }

    /// The next piece of the body, `None` at its end.
    fn next_piece(&self, py: Python<'_>) -> PyResult<Option<Bytes>> {
        let rt = runtime()?;
        let started = Instant::now();
        loop {
            let step = py.detach(|| {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if !st.leftover.is_empty() {
                    return Step::Data(std::mem::take(&mut st.leftover));
                }
                let Some(body) = st.body.as_mut() else {
                    return Step::End;
                };
                match rt.block_on(async { tokio::time::timeout(SLICE, body.frame()).await }) {
                    Err(_) => Step::Pending,
                    Ok(None) => {
                        st.body = None;
                        Step::End
                    }
                    Ok(Some(Ok(frame))) => match frame.into_data() {
                        Ok(d) if !d.is_empty() => Step::Data(d),
                        _ => Step::Pending,
                    },
                    Ok(Some(Err(e))) => {
                        st.body = None;
                        Step::Failed(e)
                    }
                }
            });
            match step {
                Step::Data(d) => return Ok(Some(d)),
                Step::End => return Ok(None),
                Step::Failed(e) => {
                    return Err(match e.downcast_ref::<CoreMaskError>() {
                        Some(m) => mask_error(py, m, b""),
                        None => {
                            upstream_failed(py, &format!("the response broke off: {}", chain(&*e)))
                        }
                    });
                }
                Step::Pending => {
                    py.check_signals()?;
                    if self.read_timeout.is_some_and(|t| started.elapsed() >= t) {
                        return Err(PyTimeoutError::new_err(
                            "no response data within the read timeout",
                        ));
                    }
                }
            }
        }
    }
}

#[pymethods]
impl ResponseBody {
    /// Up to `size` bytes, waiting until the body has delivered that many or ended; everything
    /// to the end when `size` is negative or None; `b""` at the end.
    #[pyo3(signature = (size = -1))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let size = size.unwrap_or(-1);
        let want = if size < 0 {
            usize::MAX
        } else {
            size.unsigned_abs()
        };
        let mut all = Vec::new();
        while all.len() < want {
            let Some(d) = self.next_piece(py)? else { break };
            let room = want - all.len();
            self.take(&mut all, d, room);
        }
        Ok(PyBytes::new(py, &all))
    }

    /// Up to `size` bytes (any number when negative or None), as soon as some are there: a
    /// watch yields each event as it happens. `b""` at the end.
    #[pyo3(signature = (size = -1))]
    fn read1<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let size = size.unwrap_or(-1);
        let mut out = Vec::new();
        if size != 0
            && let Some(d) = self.next_piece(py)?
        {
            self.take(
                &mut out,
                d,
                if size < 0 {
                    usize::MAX
                } else {
                    size.unsigned_abs()
                },
            );
        }
        Ok(PyBytes::new(py, &out))
    }

    /// Stop reading: the connection is dropped.
    fn close(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.body = None;
        st.leftover = Bytes::new();
    }

    /// Whether the body is at its end or closed.
    #[getter]
    fn closed(&self) -> bool {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.body.is_none() && st.leftover.is_empty()
    }

    /// `closed`, by the name `http.client` uses.
    fn isclosed(&self) -> bool {
        self.closed()
    }

    fn readable(&self) -> bool {
        true
    }
}

/// Check a record: every line's hash, every link, every sequence number.
#[pyfunction]
pub fn verify_record<'py>(py: Python<'py>, log: &str) -> PyResult<Bound<'py, PyDict>> {
    let v = py.detach(|| verify(log));
    let d = PyDict::new(py);
    d.set_item("records", ser_to_py(py, &v.records)?)?;
    d.set_item("ok", v.problems.is_empty())?;
    d.set_item("problems", v.problems)?;
    d.set_item("warnings", v.warnings)?;
    Ok(d)
}
