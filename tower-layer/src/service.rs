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

use kubeleash_core::record::{RecordBody, RecordedDecision, RecordedRequest, RecordedResponse};

use crate::approval::{Answer, ApprovalRequest, approval_id};
use crate::body::{BoxError, Completion, KubeleashBody};
use crate::headers::{force_json, strip_client_credentials};
use crate::layer::{IdentitySource, Mode, Shared};
use crate::record::now;
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
        Kubeleash {
            inner: Arc::clone(&self.inner),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> Kubeleash<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Kubeleash {
            inner: Arc::new(tokio::sync::Mutex::new(inner)),
            shared,
        }
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
        ResponseFuture {
            inner: Box::pin(handle(shared, inner, req)),
        }
    }
}

fn refusal<B>(
    code: u16,
    reason: &str,
    message: &str,
    decision: Option<Decision>,
) -> Response<KubeleashBody<B>> {
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
    started: std::time::Instant,
    time: String,
}

/// How a held request was resolved, as a record says it.
struct Resolution {
    outcome: &'static str,
    id: Option<String>,
    by: Option<String>,
    reason: Option<String>,
}

impl Ctx<'_> {
    fn recording(&self) -> bool {
        self.shared.recorder.enabled()
    }

    fn record_for(
        &self,
        req: Option<&Classified>,
        body: Option<&str>,
        decision: &Decision,
        r: &Resolution,
    ) -> RecordBody {
        RecordBody {
            time: self.time.clone(),
            kind: "request".into(),
            identity: self.identity.clone(),
            request: RecordedRequest {
                method: self.method.clone(),
                target: self.target.clone(),
                attributes: req.map(|r| r.attributes.clone()),
                content_type: req.and_then(|r| r.facts.content_type.clone()),
                dry_run: req.is_some_and(|r| r.facts.dry_run),
                field_manager: req.and_then(|r| r.facts.field_manager.clone()),
                upgrade: req
                    .and_then(|r| r.facts.upgrade)
                    .map(|u| format!("{u:?}").to_lowercase()),
                body: body.map(str::to_string),
            },
            decision: RecordedDecision {
                effect: decision.effect.as_str().into(),
                rule: decision.rule.as_deref().map(str::to_string),
                reason: decision.reason.clone(),
                outcome: r.outcome.into(),
                approval_id: r.id.clone(),
                approver: r.by.clone(),
                approver_reason: r.reason.clone(),
            },
            response: None,
        }
    }

    /// Refuse, after the record of the refusal is on disk.
    async fn refuse<B>(
        &self,
        req: Option<&Classified>,
        body: Option<&str>,
        code: u16,
        reason: &str,
        decision: Decision,
        resolution: Resolution,
    ) -> Response<KubeleashBody<B>> {
        let message = format!("kubeleash: {}", decision.reason);
        if self.recording() {
            let mut rec = self.record_for(req, body, &decision, &resolution);
            rec.response = Some(RecordedResponse {
                status: code,
                bytes: status::body(code, reason, &message).len() as u64,
                duration_ms: self.started.elapsed().as_millis() as u64,
                stream: "refused".into(),
                body: None,
                error: None,
            });
            // Nothing to do on failure but refuse anyway: the request is refused either way.
            let _ = self.shared.recorder.record_durable(rec).await;
        }
        refusal(code, reason, &message, Some(decision))
    }
}

fn refused() -> Resolution {
    Resolution {
        outcome: "refused",
        id: None,
        by: None,
        reason: None,
    }
}

/// Read a request body, bounded; a larger one is refused (and recorded) with 413.
async fn read_body<ReqB, B>(
    ctx: &Ctx<'_>,
    request: &Classified,
    body: ReqB,
    max: usize,
) -> Result<Bytes, Response<KubeleashBody<B>>>
where
    ReqB: Body<Data = Bytes>,
    ReqB::Error: Into<BoxError>,
{
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            let d = deny(format!(
                "request body refused: {e} (the API server accepts at most 3 MiB)"
            ));
            Err(ctx
                .refuse(
                    Some(request),
                    None,
                    413,
                    "RequestEntityTooLarge",
                    d,
                    refused(),
                )
                .await)
        }
    }
}

fn deny(reason: String) -> Decision {
    Decision {
        effect: Effect::Deny,
        rule: None,
        reason,
    }
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
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let identity = match &shared.identity {
        IdentitySource::Fixed(id) => Ok(id.clone()),
        IdentitySource::Extract(f) => f(&parts),
    };
    let identity = match identity {
        Ok(id) => id,
        Err(why) => {
            return Ok(refusal(
                401,
                "Unauthorized",
                &format!("kubeleash: the request carries no identity kubeleash can verify: {why}"),
                None,
            ));
        }
    };
    let ctx = Ctx {
        shared: &shared,
        identity,
        method,
        target,
        started: std::time::Instant::now(),
        time: now(),
    };
    if !shared.recorder.admits() {
        return Ok(refusal(
            503,
            "ServiceUnavailable",
            "kubeleash: the recording queue is full; try again shortly",
            None,
        ));
    }
    let request = match classify::classify(&ctx.method, &ctx.target, &parts.headers) {
        Ok(r) => r,
        Err(e) => {
            let d = deny(e.to_string());
            return Ok(ctx
                .refuse(None, None, 400, "BadRequest", d, refused())
                .await);
        }
    };
    let policy = shared.policy.get();
    let policy = &policy;

    // The body is read only when a rule, or an approval, needs it.
    let mut bytes: Option<Bytes> = None;
    let mut body = Some(body);
    // A recorder records every write's body (masked), so it reads those too.
    let writes = matches!(ctx.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
        && request.facts.upgrade.is_none();
    if (policy.needs_body(&ctx.identity, &request) || ctx.recording() && writes)
        && let Some(b) = body.take()
    {
        match read_body(&ctx, &request, b, shared.max_body).await {
            Ok(b) => bytes = Some(b),
            Err(refusal) => return Ok(refusal),
        }
    }
    let recorded_body = || {
        bytes
            .as_deref()
            .filter(|b| !b.is_empty() && ctx.recording())
            .map(|b| masked_body(policy, b))
    };
    let decision = policy.decide(
        &ctx.identity,
        &request,
        bytes.as_deref().filter(|b| !b.is_empty()),
    );
    let mut resolution = Resolution {
        outcome: "forwarded",
        id: None,
        by: None,
        reason: None,
    };
    match (shared.mode, decision.effect) {
        (Mode::Audit, Effect::Allow) | (Mode::Enforce, Effect::Allow) => {}
        (Mode::Audit, _) => resolution.outcome = "audited",
        (Mode::Enforce, Effect::Deny) => {
            let body = recorded_body();
            return Ok(ctx
                .refuse(
                    Some(&request),
                    body.as_deref(),
                    403,
                    "Forbidden",
                    decision,
                    refused(),
                )
                .await);
        }
        (Mode::Enforce, Effect::Approve) => {
            if shared.grants.covers(&ctx.identity, &request.attributes) {
                resolution = Resolution {
                    outcome: "approved",
                    id: None,
                    by: Some("a time-windowed grant".into()),
                    reason: None,
                };
            } else {
                let Some(approver) = shared.approver.clone() else {
                    let d = Decision {
                        reason: format!(
                            "{}; approval was needed and no approver is configured",
                            decision.reason
                        ),
                        ..decision
                    };
                    let body = recorded_body();
                    return Ok(ctx
                        .refuse(
                            Some(&request),
                            body.as_deref(),
                            403,
                            "Forbidden",
                            d,
                            refused(),
                        )
                        .await);
                };
                if bytes.is_none()
                    && let Some(b) = body.take()
                {
                    match read_body(&ctx, &request, b, shared.max_body).await {
                        Ok(b) => bytes = Some(b),
                        Err(refusal) => return Ok(refusal),
                    }
                }
                let id = approval_id(
                    &ctx.identity,
                    &request.attributes,
                    &ctx.target,
                    bytes.as_deref(),
                );
                let shown = bytes
                    .as_deref()
                    .filter(|b| !b.is_empty())
                    .map(|b| masked_body(policy, b));
                if ctx.recording() {
                    let held = Resolution {
                        outcome: "held",
                        id: Some(id.clone()),
                        by: None,
                        reason: None,
                    };
                    let mut rec =
                        ctx.record_for(Some(&request), shown.as_deref(), &decision, &held);
                    rec.kind = "held".into();
                    let _ = shared.recorder.record(rec);
                }
                let ask = ApprovalRequest {
                    id: id.clone(),
                    identity: ctx.identity.clone(),
                    method: ctx.method.clone(),
                    target: ctx.target.clone(),
                    attributes: request.attributes.clone(),
                    kubectl: kubectl::command(&request),
                    body: shown.clone(),
                    rule: decision.rule.as_deref().map(str::to_string),
                    reason: decision.reason.clone(),
                };
                match tokio::time::timeout(shared.approval_timeout, approver.approve(ask)).await {
                    Ok(Answer::Approve { by, window }) => {
                        if let Some(w) = window {
                            shared.grants.add(&ctx.identity, &request.attributes, w);
                        }
                        resolution = Resolution {
                            outcome: "approved",
                            id: Some(id),
                            by: Some(by),
                            reason: None,
                        };
                        if ctx.recording() {
                            // The approval is on disk before the request goes out.
                            let mut rec = ctx.record_for(
                                Some(&request),
                                shown.as_deref(),
                                &decision,
                                &resolution,
                            );
                            rec.kind = "approval".into();
                            if let Err(e) = shared.recorder.record_durable(rec).await {
                                let d = deny(format!(
                                    "the approval could not be recorded, so the request was not sent: {e}"
                                ));
                                return Ok(ctx
                                    .refuse(
                                        Some(&request),
                                        shown.as_deref(),
                                        503,
                                        "ServiceUnavailable",
                                        d,
                                        refused(),
                                    )
                                    .await);
                            }
                        }
                    }
                    Ok(Answer::Deny { by, reason }) => {
                        let d = Decision {
                            reason: format!(
                                "{}; {by} denied approval {id}: {reason}",
                                decision.reason
                            ),
                            ..decision
                        };
                        let r = Resolution {
                            outcome: "refused",
                            id: Some(id),
                            by: Some(by),
                            reason: Some(reason),
                        };
                        return Ok(ctx
                            .refuse(Some(&request), shown.as_deref(), 403, "Forbidden", d, r)
                            .await);
                    }
                    Err(_) => {
                        let d = Decision {
                            reason: format!(
                                "{}; nobody answered approval {id} within {}s",
                                decision.reason,
                                shared.approval_timeout.as_secs()
                            ),
                            ..decision
                        };
                        let r = Resolution {
                            outcome: "refused",
                            id: Some(id),
                            by: None,
                            reason: Some("timed out".into()),
                        };
                        return Ok(ctx
                            .refuse(Some(&request), shown.as_deref(), 403, "Forbidden", d, r)
                            .await);
                    }
                }
            }
        }
    }

    // Only the layer's credential leaves; impersonation only if the policy allowed it by name.
    let impersonation_allowed =
        decision.effect == Effect::Allow && request.facts.impersonation.is_some();
    strip_client_credentials(&mut parts.headers, impersonation_allowed);
    match shared.credential.header() {
        Ok(Some(v)) => {
            parts.headers.insert(AUTHORIZATION, v);
        }
        Ok(None) => {}
        Err(e) => {
            let d = deny(format!("kubeleash cannot use its credential: {e}"));
            return Ok(ctx
                .refuse(Some(&request), None, 500, "InternalError", d, refused())
                .await);
        }
    }
    let upgrade = request.facts.upgrade.is_some();
    if !upgrade {
        force_json(&mut parts.headers);
    }
    let bytes_for_record = bytes.clone();
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
    let recorded = ctx.recording().then(|| {
        let body = bytes_for_record
            .as_deref()
            .filter(|b| !b.is_empty())
            .map(|b| masked_body(policy, b));
        ctx.record_for(Some(&request), body.as_deref(), &decision, &resolution)
    });
    let resp = call.await?;
    let (mut rparts, rbody) = resp.into_parts();
    let status = rparts.status.as_u16();
    let completion = |stream: &'static str| {
        recorded
            .map(|r| Completion::new(Arc::clone(&shared.recorder), r, status, ctx.started, stream))
    };
    rparts.extensions.insert(decision);
    if upgrade || rparts.status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Response::from_parts(
            rparts,
            KubeleashBody::passthrough(rbody).completing(completion("passthrough")),
        ));
    }
    let header = |name| {
        rparts
            .headers
            .get(name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let (ct, ce) = (header(CONTENT_TYPE), header(CONTENT_ENCODING));
    let masker = policy.masker(&request, ct.as_deref(), ce.as_deref());
    rparts.headers.remove(CONTENT_LENGTH);
    rparts.headers.remove(CONTENT_ENCODING);
    let body = match masker {
        Ok(m) => KubeleashBody::masked(rbody, m).completing(completion("masked")),
        Err(e) => KubeleashBody::refused(e).completing(completion("refused")),
    };
    Ok(Response::from_parts(rparts, body))
}

/// A request body as an approver sees it: masked with the response rules, as text.
fn masked_body(policy: &kubeleash_core::policy::Policy, body: &[u8]) -> String {
    let mut m = Masker::with(Arc::clone(policy.mask_set()), Framing::Json);
    let mut out = Vec::new();
    match m
        .feed_into(body, &mut out)
        .and_then(|()| m.finish_into(&mut out))
    {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => "[body not shown: it is not JSON kubeleash can mask]".to_string(),
    }
}
