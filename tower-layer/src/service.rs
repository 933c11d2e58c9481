//! `Kubeleash<S>`: the service. In the data path, in order: classify; read the body when a rule
//! needs it (bounded at the API server's 3 MiB, then handed on unchanged); decide; deny, hold
//! for approval, or forward with the client's credentials replaced; mask the response as it
//! streams.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use kubeleash_core::kubectl;
use kubeleash_core::mask::{Framing, Masker};
use kubeleash_core::policy::{Decision, Effect, Identity};
use kubeleash_core::request::{self as classify, Request as Classified};
use tower::{Service, ServiceExt};

use crate::approval::{Answer, ApprovalRequest, approval_id};
use crate::body::{BoxError, KubeleashBody};
use crate::headers::{force_json, strip_client_credentials};
use crate::layer::{IdentitySource, Mode, Shared};
use crate::record::{Approval, Event};
use crate::status;

/// The service [`crate::KubeleashLayer`] wraps around an inner service.
///
/// The inner service needs no `Clone` (kube-rs's own stack is a `BoxService`): it sits behind an
/// async mutex held only while a call is dispatched (ready, then call), never while a response
/// is awaited, so requests still run concurrently.
pub struct Kubeleash<S> {
    inner: Arc<tokio::sync::Mutex<S>>,
    shared: Arc<Shared>,
}

impl<S> Clone for Kubeleash<S> {
    fn clone(&self) -> Self {
        Kubeleash { inner: Arc::clone(&self.inner), shared: Arc::clone(&self.shared) }
    }
}

impl<S> Kubeleash<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Kubeleash { inner: Arc::new(tokio::sync::Mutex::new(inner)), shared }
    }
}

/// The future of a [`Kubeleash`] call.
pub struct ResponseFuture<T, E> {
    inner: Pin<Box<dyn Future<Output = Result<T, E>> + Send>>,
}

impl<T, E> Future for ResponseFuture<T, E> {
    type Output = Result<T, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Kubeleash<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Body<Data = Bytes> + From<Bytes> + Send + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<KubeleashBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness of the inner service is awaited when a request is actually forwarded
        // (denied and held requests never need it).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        let shared = Arc::clone(&self.shared);
        ResponseFuture { inner: Box::pin(handle(shared, inner, req)) }
    }
}

fn refusal<B>(code: u16, reason: &str, message: &str, decision: Option<Decision>) -> Response<KubeleashBody<B>> {
    let mut r = status::response(code, reason, message, KubeleashBody::full);
    if let Some(d) = decision {
        r.extensions_mut().insert(d);
    }
    r
}

struct Ctx<'a> {
    shared: &'a Shared,
    identity: Identity,
    method: String,
    target: String,
}

impl Ctx<'_> {
    fn record(&self, attrs: Option<&Classified>, decision: &Decision, outcome: &'static str, approval: Option<Approval>, status: Option<u16>) {
        if !self.shared.recorder.enabled() {
            return;
        }
        self.shared.recorder.record(&Event {
            identity: self.identity.clone(),
            method: self.method.clone(),
            target: self.target.clone(),
            attributes: attrs.map(|r| r.attributes.clone()),
            decision: decision.clone(),
            outcome,
            approval,
            status,
        });
    }

    fn refuse<B>(&self, req: Option<&Classified>, code: u16, reason: &str, decision: Decision, approval: Option<Approval>) -> Response<KubeleashBody<B>> {
        let message = format!("kubeleash: {}", decision.reason);
        self.record(req, &decision, "refused", approval, Some(code));
        refusal(code, reason, &message, Some(decision))
    }
}

fn deny(reason: String) -> Decision {
    Decision { effect: Effect::Deny, rule: None, reason }
}

async fn handle<S, ReqB, ResB>(
    shared: Arc<Shared>,
    inner: Arc<tokio::sync::Mutex<S>>,
    req: Request<ReqB>,
) -> Result<Response<KubeleashBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: Body<Data = Bytes> + From<Bytes>,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    let (mut parts, body) = req.into_parts();
    let method = parts.method.as_str().to_string();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let identity = match &shared.identity {
        IdentitySource::Fixed(id) => Some(id.clone()),
        IdentitySource::Extract(f) => f(&parts),
    };
    let Some(identity) = identity else {
        return Ok(refusal(401, "Unauthorized", "kubeleash: the request carries no identity kubeleash can verify", None));
    };
    let ctx = Ctx { shared: &shared, identity, method, target };
    let request = match classify::classify(&ctx.method, &ctx.target, &parts.headers) {
        Ok(r) => r,
        Err(e) => {
            let d = deny(e.to_string());
            return Ok(ctx.refuse(None, 400, "BadRequest", d, None));
        }
    };
    let policy = &shared.policy;

    // The body is read only when a rule, or an approval, needs it.
    let mut bytes: Option<Bytes> = None;
    let mut body = Some(body);
    let max_body = shared.max_body;
    let read = |body: ReqB| async move {
        match Limited::new(body, max_body).collect().await {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) => Err(e.to_string()),
        }
    };
    if policy.needs_body(&ctx.identity, &request)
        && let Some(b) = body.take()
    {
        match read(b).await {
            Ok(b) => bytes = Some(b),
            Err(e) => return Ok(ctx.refuse(Some(&request), 413, "RequestEntityTooLarge", deny(format!("request body refused: {e} (the API server accepts at most 3 MiB)")), None)),
        }
    }
    let decision = policy.decide(&ctx.identity, &request, bytes.as_deref().filter(|b| !b.is_empty()));
    let mut approval = None;
    let mut outcome = "forwarded";
    match (shared.mode, decision.effect) {
        (Mode::Audit, Effect::Allow) | (Mode::Enforce, Effect::Allow) => {}
        (Mode::Audit, _) => outcome = "audited",
        (Mode::Enforce, Effect::Deny) => return Ok(ctx.refuse(Some(&request), 403, "Forbidden", decision, None)),
        (Mode::Enforce, Effect::Approve) => {
            if shared.grants.covers(&ctx.identity, &request.attributes) {
                approval = Some(Approval::Granted);
            } else {
                let Some(approver) = shared.approver.clone() else {
                    let d = Decision { reason: format!("{}; approval was needed and no approver is configured", decision.reason), ..decision };
                    return Ok(ctx.refuse(Some(&request), 403, "Forbidden", d, None));
                };
                if bytes.is_none()
                    && let Some(b) = body.take()
                {
                    match read(b).await {
                        Ok(b) => bytes = Some(b),
                        Err(e) => return Ok(ctx.refuse(Some(&request), 413, "RequestEntityTooLarge", deny(format!("request body refused: {e}")), None)),
                    }
                }
                let id = approval_id(&ctx.identity, &request.attributes, bytes.as_deref());
                let ask = ApprovalRequest {
                    id: id.clone(),
                    identity: ctx.identity.clone(),
                    method: ctx.method.clone(),
                    target: ctx.target.clone(),
                    attributes: request.attributes.clone(),
                    kubectl: kubectl::command(&request),
                    body: bytes.as_deref().filter(|b| !b.is_empty()).map(|b| masked_body(&shared, b)),
                    rule: decision.rule.as_deref().map(str::to_string),
                    reason: decision.reason.clone(),
                };
                match tokio::time::timeout(shared.approval_timeout, approver.approve(ask)).await {
                    Ok(Answer::Approve { by, window }) => {
                        if let Some(w) = window {
                            shared.grants.add(&ctx.identity, &request.attributes, w);
                        }
                        approval = Some(Approval::Approved { id, by });
                    }
                    Ok(Answer::Deny { by, reason }) => {
                        let d = Decision { reason: format!("{}; {by} denied approval {id}: {reason}", decision.reason), ..decision };
                        let a = Approval::Denied { id, by, reason };
                        return Ok(ctx.refuse(Some(&request), 403, "Forbidden", d, Some(a)));
                    }
                    Err(_) => {
                        let d = Decision {
                            reason: format!("{}; nobody answered approval {id} within {}s", decision.reason, shared.approval_timeout.as_secs()),
                            ..decision
                        };
                        return Ok(ctx.refuse(Some(&request), 403, "Forbidden", d, Some(Approval::TimedOut { id })));
                    }
                }
            }
        }
    }

    // Only the layer's credential leaves; impersonation only if the policy allowed it by name.
    let impersonation_allowed = decision.effect == Effect::Allow && request.facts.impersonation.is_some();
    strip_client_credentials(&mut parts.headers, impersonation_allowed);
    match shared.credential.header() {
        Ok(Some(v)) => {
            parts.headers.insert(AUTHORIZATION, v);
        }
        Ok(None) => {}
        Err(e) => {
            let d = deny(format!("kubeleash cannot use its credential: {e}"));
            return Ok(ctx.refuse(Some(&request), 500, "InternalError", d, approval));
        }
    }
    let upgrade = request.facts.upgrade.is_some();
    if !upgrade {
        force_json(&mut parts.headers);
    }
    let body = match (bytes, body) {
        (Some(b), _) => ReqB::from(b),
        (None, Some(b)) => b,
        (None, None) => ReqB::from(Bytes::new()),
    };
    let call = {
        let mut guard = inner.lock().await;
        guard.ready().await?;
        guard.call(Request::from_parts(parts, body))
    };
    let resp = call.await?;
    let (mut rparts, rbody) = resp.into_parts();
    ctx.record(Some(&request), &decision, outcome, approval, Some(rparts.status.as_u16()));
    rparts.extensions.insert(decision);
    if upgrade || rparts.status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Response::from_parts(rparts, KubeleashBody::passthrough(rbody)));
    }
    let header = |name| rparts.headers.get(name).and_then(|v: &http::HeaderValue| v.to_str().ok()).map(str::to_string);
    let (ct, ce) = (header(CONTENT_TYPE), header(CONTENT_ENCODING));
    let masker = shared.policy.masker(&request, ct.as_deref(), ce.as_deref());
    rparts.headers.remove(CONTENT_LENGTH);
    rparts.headers.remove(CONTENT_ENCODING);
    let body = match masker {
        Ok(m) => KubeleashBody::masked(rbody, m),
        Err(e) => KubeleashBody::refused(e),
    };
    Ok(Response::from_parts(rparts, body))
}

/// A request body as an approver sees it: masked with the response rules, as text.
fn masked_body(shared: &Shared, body: &[u8]) -> String {
    let mut m = Masker::with(Arc::clone(shared.policy.mask_set()), Framing::Json);
    let mut out = Vec::new();
    match m.feed_into(body, &mut out).and_then(|()| m.finish_into(&mut out)) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => "[body not shown: it is not JSON kubeleash can mask]".to_string(),
    }
}
