//! `Kubeleash<S>`: the service. In the data path, in order: admit (the recorder must be able to
//! record); refuse targets with a scheme or host and upgrades outside exec, attach,
//! port-forward and proxy; classify; read the body when a rule or an approval needs it (bounded
//! at the API server's 3 MiB, then handed on unchanged); take the policy snapshot once the body
//! is in; decide; deny, hold for approval (only a body that decodes strictly), or forward with
//! only allowlisted headers and the layer's credential, a write recorded before it leaves; mask
//! the response as it streams, its headers allowlisted and its trailers dropped, a pod log's
//! `limitBytes` applied after masking. Only the body of the 101 answer to an allowed protocol
//! switch is passed through unmasked.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body::Body;
use kubeleash_core::kubectl;
use kubeleash_core::mask::{Framing, MaskError, Masker};
use kubeleash_core::policy::{Decision, Effect, Identity};
use kubeleash_core::request::{self as classify, Request as Classified};
use tower::{Service, ServiceExt};

use kubeleash_core::record::{RecordBody, RecordedDecision, RecordedRequest, RecordedResponse};

use crate::approval::{Answer, ApprovalRequest, RequestKey, new_id, random_hex, shown_body};
use crate::body::{BoxError, Completion, KubeleashBody, Reload};
use crate::bounded::{BoundedReadError, BudgetShare};
use crate::headers::{
    allow_request_headers, allow_response_headers, asks_upgrade, force_json, is_connect,
};
use crate::holds::Full;
use crate::layer::{IdentitySource, Mode, Shared};
use crate::record::{RecordError, rfc3339_at};
use crate::scrub::scrub;
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
    S::Error: std::fmt::Debug + Send + 'static,
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
    /// When the request arrived; formatted only when a record is written.
    time: std::time::SystemTime,
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
            time: rfc3339_at(self.time),
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

    /// Note whether a record was written: a failure makes the layer refuse every request
    /// until a record is written again.
    fn recorded(&self, r: &Result<(), RecordError>) {
        self.shared
            .record_failed
            .store(r.is_err(), Ordering::Release);
    }

    /// Refuse, after the record of the refusal is on disk.
    fn refuse<'a, B: 'a>(
        &'a self,
        req: Option<&'a Classified>,
        body: Option<&'a str>,
        code: u16,
        reason: &'a str,
        decision: Decision,
        resolution: Resolution,
    ) -> Refusal<'a, B> {
        self.refuse_noting(req, body, code, reason, decision, resolution, None)
    }

    /// Refuse; `detail` goes to the record only (masked), never to the client. Boxed: refusals
    /// are off the hot path, and their state would otherwise grow every request's future.
    #[allow(
        clippy::too_many_arguments,
        reason = "one private call site per refusal kind"
    )]
    fn refuse_noting<'a, B: 'a>(
        &'a self,
        req: Option<&'a Classified>,
        body: Option<&'a str>,
        code: u16,
        reason: &'a str,
        decision: Decision,
        resolution: Resolution,
        detail: Option<String>,
    ) -> Refusal<'a, B> {
        Box::pin(async move {
            let message = format!("kubeleash: {}", decision.reason);
            if self.recording() {
                let mut rec = self.record_for(req, body, &decision, &resolution);
                rec.response = Some(RecordedResponse {
                    status: code,
                    bytes: status::body(code, reason, &message).len() as u64,
                    duration_ms: self.started.elapsed().as_millis() as u64,
                    stream: "refused".into(),
                    body: None,
                    error: detail.map(|d| scrub(self.shared.policy.get().mask_set(), &d)),
                });
                // Refused either way; a refusal whose record is written shows the recorder
                // works.
                let r = self.shared.recorder.record_durable(rec).await;
                self.recorded(&r);
            }
            refusal(code, reason, &message, Some(decision))
        })
    }
}

/// A refusal on its way: its record is written first.
type Refusal<'a, B> = Pin<Box<dyn Future<Output = Response<KubeleashBody<B>>> + Send + 'a>>;

fn refused() -> Resolution {
    Resolution {
        outcome: "refused",
        id: None,
        by: None,
        reason: None,
    }
}

/// Read a request body, bounded ([`crate::BodyBudget`]); a refusal is recorded: 413 for a body
/// past the limit, 429 past the layer's buffer budget (its share is held in `budget` until the
/// request is answered), 400 for one that cannot be read.
async fn read_body<ReqB, B>(
    ctx: &Ctx<'_>,
    request: &Classified,
    body: ReqB,
    shared: &Shared,
    budget: &mut BudgetShare,
) -> Result<Bytes, Response<KubeleashBody<B>>>
where
    ReqB: Body<Data = Bytes>,
    ReqB::Error: Into<BoxError>,
{
    let e = match shared.body_budget.read(body, shared.max_body).await {
        Ok((bytes, share)) => {
            *budget = share;
            return Ok(bytes);
        }
        Err(e) => e,
    };
    let (code, reason) = match e {
        BoundedReadError::TooLarge { .. } => (413, "RequestEntityTooLarge"),
        BoundedReadError::OverBudget { .. } => (429, "TooManyRequests"),
        BoundedReadError::Body(_) => (400, "BadRequest"),
    };
    Err(ctx
        .refuse(
            Some(request),
            None,
            code,
            reason,
            deny(e.to_string()),
            refused(),
        )
        .await)
}

fn deny(reason: String) -> Decision {
    Decision {
        effect: Effect::Deny,
        rule: None,
        reason,
    }
}

/// The fixed answer when the upstream side fails: nothing of the error (which can carry the
/// operator's kubeconfig, a credential plugin's command line, environment or output) reaches
/// the client; the record keeps it, masked, under a correlation id the client is given.
async fn upstream_failed<B>(
    ctx: &Ctx<'_>,
    request: &Classified,
    what: &str,
    detail: String,
) -> Response<KubeleashBody<B>> {
    let cid = random_hex(8).unwrap_or_else(|| "none".into());
    let d = deny(format!(
        "{what} (correlation id {cid}); the operator's record has the details"
    ));
    ctx.refuse_noting(
        Some(request),
        None,
        502,
        "ServiceUnavailable",
        d,
        refused(),
        Some(format!("correlation id {cid}: {detail}")),
    )
    .await
}

/// Whether a hold answered with approval may go on under the policy in force now.
enum Recheck {
    Go,
    Denied(Decision),
}

#[allow(
    clippy::too_many_lines,
    reason = "the data path in order, one step after the other"
)]
async fn handle<S, ReqB, ResB>(
    shared: Arc<Shared>,
    inner: Arc<tokio::sync::Mutex<S>>,
    req: Request<ReqB>,
) -> Result<Response<KubeleashBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: std::fmt::Debug,
    ReqB: Body<Data = Bytes> + From<Bytes>,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str().to_string();
    // A target with a scheme or host (absolute-form, authority-form) would choose where the
    // operator's credential goes: it is refused, and recorded as sent.
    let absolute = parts.uri.scheme().is_some() || parts.uri.authority().is_some();
    let target = if absolute {
        parts.uri.to_string()
    } else {
        parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string()
    };
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
        time: std::time::SystemTime::now(),
    };

    // Nothing goes out unrecorded: after a failed write every request is refused until a
    // record (this refusal's) is written again.
    if shared.record_failed.load(Ordering::Acquire) {
        let d = deny(
            "kubeleash cannot record requests right now, so it forwards none; \
             the operator must make the record writable again (disk space, permissions)"
                .into(),
        );
        return Ok(ctx
            .refuse(None, None, 503, "ServiceUnavailable", d, refused())
            .await);
    }
    if !shared.recorder.admits()
        && let Err(e) = shared.recorder.admit().await
    {
        let message = match e {
            RecordError::Full => "kubeleash: the recording queue is full; try again shortly",
            RecordError::Write(_) => {
                shared.record_failed.store(true, Ordering::Release);
                "kubeleash: kubeleash cannot record requests right now, so it forwards none; \
                 the operator must make the record writable again (disk space, permissions)"
            }
        };
        return Ok(refusal(503, "ServiceUnavailable", message, None));
    }

    if absolute {
        let d = deny(format!(
            "the request target `{}` names a scheme or host; kubeleash forwards only a path \
             (and query) to the API server it was configured with",
            ctx.target
        ));
        return Ok(ctx
            .refuse(None, None, 400, "BadRequest", d, refused())
            .await);
    }
    let mut request = match classify::classify(&ctx.method, &ctx.target, &parts.headers) {
        Ok(r) => r,
        Err(e) => {
            let d = deny(e.to_string());
            return Ok(ctx
                .refuse(None, None, 400, "BadRequest", d, refused())
                .await);
        }
    };
    // Any sign of an upgrade, read from the raw headers: a switched connection is not masked,
    // so only the subresources the API server switches for may ask for one.
    let asks_switch = asks_upgrade(&parts.headers);
    let connect = is_connect(&request.attributes);
    if asks_switch && !connect {
        let d = deny(format!(
            "{} {} asks to switch protocols (an Upgrade header, or Connection: upgrade); \
             kubeleash allows that only for exec, attach, portforward and proxy subresources, \
             since a switched connection cannot be masked",
            ctx.method, ctx.target
        ));
        return Ok(ctx
            .refuse(Some(&request), None, 400, "BadRequest", d, refused())
            .await);
    }
    // A pod log is cut after masking, never by the API server (see `log_limit`).
    let a = &request.attributes;
    let log_limit = if a.resource_request && a.resource == "pods" && a.subresource == "log" {
        match crate::log_limit::take(&ctx.target) {
            Ok(l) => l,
            Err(why) => {
                let d = deny(why);
                return Ok(ctx
                    .refuse(Some(&request), None, 400, "BadRequest", d, refused())
                    .await);
            }
        }
    } else {
        None
    };
    // The body is read only when a rule, or an approval, needs it.
    let mut bytes: Option<Bytes> = None;
    let mut body = Some(body);
    // The body's share of the buffer budget, given back when this call answers.
    let mut budget = BudgetShare::default();
    // A recorder records every write's body (masked), so it reads those too.
    let writes = matches!(ctx.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE") && !asks_switch;
    // The policy is the one in force once the body is in: a slow body is not decided under a
    // policy revoked while it streamed (the snapshot is taken again after reading it).
    let (mut policy, mut generation) = loop {
        let (policy, generation) = shared.policy.current();
        if (policy.needs_body(&ctx.identity, &request) || ctx.recording() && writes)
            && let Some(b) = body.take()
        {
            match read_body(&ctx, &request, b, &shared, &mut budget).await {
                Ok(b) => bytes = Some(b),
                Err(refusal) => return Ok(refusal),
            }
            continue;
        }
        break (policy, generation);
    };
    // A DELETE's body options replace its query's, as the API server reads them: the record,
    // the approval prompt and the kubectl line follow the body (`decide` refuses the same
    // requests this does).
    if let Err(e) = request.with_body_facts(bytes.as_deref()) {
        let d = deny(format!("request body refused: {e}"));
        return Ok(ctx
            .refuse(Some(&request), None, 400, "BadRequest", d, refused())
            .await);
    }
    let mut decision = policy.decide(
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
            let body = recorded_body(&ctx, &policy, &request, bytes.as_deref());
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
            // An approval covers the exact bytes that go out, so they are read first.
            if bytes.is_none()
                && let Some(b) = body.take()
            {
                match read_body(&ctx, &request, b, &shared, &mut budget).await {
                    Ok(b) => bytes = Some(b),
                    Err(refusal) => return Ok(refusal),
                }
            }
            // A person approves only what they can read as the API server will: a body
            // kubeleash cannot decode strictly is refused before it is held.
            if let Some((code, reason, why)) = undecodable(&request, connect, bytes.as_deref()) {
                let d = deny(why);
                return Ok(ctx
                    .refuse(Some(&request), None, code, reason, d, refused())
                    .await);
            }
            let key = RequestKey::new(
                &ctx.identity,
                &ctx.method,
                &ctx.target,
                &parts.headers,
                bytes.as_deref().unwrap_or_default(),
            );
            if shared.grants.covers(&key, generation) {
                resolution = Resolution {
                    outcome: "approved",
                    id: None,
                    by: Some("a time-windowed grant".into()),
                    reason: None,
                };
            } else {
                // Boxed: the approval path's state stays out of every request's future.
                let held = Box::pin(hold(
                    &ctx,
                    &request,
                    &parts.headers,
                    &policy,
                    bytes.as_deref(),
                    &decision,
                ))
                .await;
                let (id, by, window, shown) = match held {
                    Ok(h) => h,
                    Err(refusal) => return Ok(refusal),
                };
                // The person approved under the policy of the moment they were asked; what
                // goes out must still pass the policy in force now.
                let (now_policy, now_generation) = shared.policy.current();
                if now_generation != generation {
                    let again = now_policy.decide(
                        &ctx.identity,
                        &request,
                        bytes.as_deref().filter(|b| !b.is_empty()),
                    );
                    let recheck = if again.effect == Effect::Deny {
                        Recheck::Denied(again)
                    } else {
                        decision = again;
                        Recheck::Go
                    };
                    policy = now_policy;
                    generation = now_generation;
                    if let Recheck::Denied(again) = recheck {
                        let d = Decision {
                            reason: format!(
                                "{by} approved {id}, but the policy was reloaded while the request was held and now denies it: {}",
                                again.reason
                            ),
                            ..again
                        };
                        let r = Resolution {
                            outcome: "refused",
                            id: Some(id),
                            by: Some(by),
                            reason: Some("the reloaded policy denies it".into()),
                        };
                        return Ok(ctx
                            .refuse(Some(&request), shown.as_deref(), 403, "Forbidden", d, r)
                            .await);
                    }
                }
                if let Some(w) = window {
                    shared.grants.add(key, w, generation);
                }
                resolution = Resolution {
                    outcome: "approved",
                    id: Some(id),
                    by: Some(by),
                    reason: None,
                };
                if ctx.recording() {
                    // The approval is on disk before the request goes out.
                    let mut rec =
                        ctx.record_for(Some(&request), shown.as_deref(), &decision, &resolution);
                    rec.kind = "approval".into();
                    let r = shared.recorder.record_durable(rec).await;
                    ctx.recorded(&r);
                    if r.is_err() {
                        let d = deny(
                            "the approval could not be recorded, so the request was not sent"
                                .into(),
                        );
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
        }
    }
    forward(
        &ctx,
        inner,
        parts,
        body,
        bytes,
        request,
        policy,
        generation,
        decision,
        resolution,
        asks_switch,
        connect,
        log_limit,
    )
    .await
}

/// Why a body cannot be shown to an approver as the API server will read it: `(status, reason,
/// message)`. Bodies of exec, attach, port-forward and proxy requests go to a pod or a
/// backend, not to the API server's decoder: they are shown by length and digest instead.
fn undecodable(
    request: &Classified,
    connect: bool,
    bytes: Option<&[u8]>,
) -> Option<(u16, &'static str, String)> {
    use kubeleash_core::body::{self, BodyError, BodyLimits};
    let b = bytes.filter(|b| !b.is_empty())?;
    if connect {
        return None;
    }
    let e = body::decode(request, b, &BodyLimits::default()).err()?;
    let (code, reason) = match e {
        BodyError::UnsupportedContentType { .. }
        | BodyError::UnsupportedPatchType { .. }
        | BodyError::Yaml
        | BodyError::Protobuf
        | BodyError::Cbor { .. }
        | BodyError::ContentEncoding(_)
        | BodyError::ApplyNotJson { .. } => (415, "UnsupportedMediaType"),
        BodyError::TooLarge { .. } => (413, "RequestEntityTooLarge"),
        _ => (400, "BadRequest"),
    };
    Some((
        code,
        reason,
        format!(
            "this request needs approval, and a person can approve only a body kubeleash decodes \
             exactly as the API server will (strict JSON), so it was not held: {e}"
        ),
    ))
}

/// The record's (and approver's) view of a request body: masked, when there is one.
fn recorded_body(
    ctx: &Ctx<'_>,
    policy: &kubeleash_core::policy::Policy,
    request: &Classified,
    bytes: Option<&[u8]>,
) -> Option<String> {
    bytes
        .filter(|b| !b.is_empty() && ctx.recording())
        .map(|b| masked_body(policy, b, request.facts.content_type.as_deref()))
}

/// An approval: its id, who gave it, its window, and the body as recorded.
type Approved = (String, String, Option<std::time::Duration>, Option<String>);

/// Hold a request for an approver: counted against the hold limits, recorded as held, asked
/// under a fresh random id. `Ok((id, by, window, recorded body))` when approved; every other
/// outcome is the refusal to send.
async fn hold<B>(
    ctx: &Ctx<'_>,
    request: &Classified,
    headers: &http::HeaderMap,
    policy: &kubeleash_core::policy::Policy,
    bytes: Option<&[u8]>,
    decision: &Decision,
) -> Result<Approved, Response<KubeleashBody<B>>> {
    let shared = ctx.shared;
    let masked = bytes
        .filter(|b| !b.is_empty())
        .map(|b| masked_body(policy, b, request.facts.content_type.as_deref()));
    // The approver is shown at most MAX_SHOWN_BODY of it; the record keeps it whole.
    let shown = masked.as_deref().map(shown_body);
    let kept = masked.filter(|_| ctx.recording());
    let recorded = kept.as_deref();
    let Some(approver) = shared.approver.clone() else {
        let d = Decision {
            reason: format!(
                "{}; approval was needed and no approver is configured",
                decision.reason
            ),
            ..decision.clone()
        };
        return Err(ctx
            .refuse(Some(request), recorded, 403, "Forbidden", d, refused())
            .await);
    };
    let _counted = match shared
        .holds
        .try_hold(&ctx.identity.user, shared.hold_limits)
    {
        Ok(h) => h,
        Err(full) => {
            let why = match full {
                Full::Identity(n) => format!("{n} requests from this identity already wait"),
                Full::Total(n) => format!("{n} requests already wait"),
            };
            let d = Decision {
                reason: format!(
                    "{}; it was not held for approval: {why}; retry once they are answered",
                    decision.reason
                ),
                ..decision.clone()
            };
            return Err(ctx
                .refuse(
                    Some(request),
                    recorded,
                    429,
                    "TooManyRequests",
                    d,
                    refused(),
                )
                .await);
        }
    };
    let Some(id) = new_id() else {
        let d = deny("kubeleash could not make an approval id (no randomness)".into());
        return Err(ctx
            .refuse(
                Some(request),
                recorded,
                503,
                "ServiceUnavailable",
                d,
                refused(),
            )
            .await);
    };
    if ctx.recording() {
        let held = Resolution {
            outcome: "held",
            id: Some(id.clone()),
            by: None,
            reason: None,
        };
        let mut rec = ctx.record_for(Some(request), recorded, decision, &held);
        rec.kind = "held".into();
        let r = shared.recorder.record(rec);
        ctx.recorded(&r);
        if r.is_err() {
            let d = deny("the request could not be recorded, so it was not held".into());
            return Err(ctx
                .refuse(
                    Some(request),
                    recorded,
                    503,
                    "ServiceUnavailable",
                    d,
                    refused(),
                )
                .await);
        }
    }
    let ask = ApprovalRequest {
        id: id.clone(),
        identity: ctx.identity.clone(),
        method: ctx.method.clone(),
        target: ctx.target.clone(),
        attributes: request.attributes.clone(),
        kubectl: kubectl::command(request),
        body: shown,
        content_type: headers
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        impersonation: request.facts.impersonation.clone(),
        rule: decision.rule.as_deref().map(str::to_string),
        reason: decision.reason.clone(),
    };
    match tokio::time::timeout(shared.approval_timeout, approver.approve(ask)).await {
        Ok(Answer::Approve { by, window }) => Ok((id, by, window, kept)),
        Ok(Answer::Deny { by, reason }) => {
            let d = Decision {
                reason: format!("{}; {by} denied approval {id}: {reason}", decision.reason),
                ..decision.clone()
            };
            let r = Resolution {
                outcome: "refused",
                id: Some(id),
                by: Some(by),
                reason: Some(reason),
            };
            Err(ctx
                .refuse(Some(request), recorded, 403, "Forbidden", d, r)
                .await)
        }
        Err(_) => {
            let d = Decision {
                reason: format!(
                    "{}; nobody answered approval {id} within {}s",
                    decision.reason,
                    shared.approval_timeout.as_secs()
                ),
                ..decision.clone()
            };
            let r = Resolution {
                outcome: "refused",
                id: Some(id),
                by: None,
                reason: Some("timed out".into()),
            };
            Err(ctx
                .refuse(Some(request), recorded, 403, "Forbidden", d, r)
                .await)
        }
    }
}

/// Send a decided request on and mask its response.
#[allow(
    clippy::too_many_arguments,
    clippy::too_many_lines,
    reason = "the second half of the data path, with the state of the first"
)]
async fn forward<S, ReqB, ResB>(
    ctx: &Ctx<'_>,
    inner: Arc<tokio::sync::Mutex<S>>,
    mut parts: http::request::Parts,
    body: Option<ReqB>,
    bytes: Option<Bytes>,
    request: Classified,
    policy: kubeleash_core::policy::Policy,
    generation: u64,
    decision: Decision,
    resolution: Resolution,
    asks_switch: bool,
    connect: bool,
    log_limit: Option<(String, u64)>,
) -> Result<Response<KubeleashBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: std::fmt::Debug,
    ReqB: Body<Data = Bytes> + From<Bytes>,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    let shared = ctx.shared;
    // Allowed by the policy, or approved by a person (or their window); audit mode forwards
    // the rest, but without the powers a rule must grant by name.
    let allowed = decision.effect == Effect::Allow || resolution.outcome == "approved";
    let switch = asks_switch && connect;
    if switch && !allowed {
        let d = Decision {
            reason: format!(
                "{}; a protocol switch (exec, attach, port-forward, proxy) is not masked, so \
                 kubeleash passes one only when the policy allows it, audit mode or not",
                decision.reason
            ),
            ..decision
        };
        return Ok(ctx
            .refuse(Some(&request), None, 403, "Forbidden", d, refused())
            .await);
    }
    // Only the layer's credential leaves; impersonation only if the policy allowed it (by name)
    // or a person approved this very request, impersonation headers included.
    let keep_impersonation = allowed && request.facts.impersonation.is_some();
    // Only allowlisted headers leave (the rest could forge the audit trail or carry a
    // credential); the inner client frames the request from the bytes it is handed, never
    // from the caller's headers: what was decided and recorded is what is sent.
    allow_request_headers(
        &mut parts.headers,
        switch,
        keep_impersonation,
        &ctx.identity.user,
    );
    match shared.credential.header() {
        Ok(Some(v)) => {
            parts.headers.insert(AUTHORIZATION, v);
        }
        Ok(None) => {}
        Err(e) => {
            return Ok(upstream_failed(
                ctx,
                &request,
                "kubeleash cannot use its credential",
                e.to_string(),
            )
            .await);
        }
    }
    if !switch {
        force_json(&mut parts.headers);
    }
    // The log is asked for whole; the agent's limit is applied to the masked output.
    let limit = match log_limit {
        Some((target, n)) => match target.parse::<http::Uri>() {
            Ok(uri) => {
                parts.uri = uri;
                Some(n)
            }
            Err(e) => {
                let d = deny(format!(
                    "the log target could not be rebuilt without limitBytes: {e}"
                ));
                return Ok(ctx
                    .refuse(Some(&request), None, 400, "BadRequest", d, refused())
                    .await);
            }
        },
        None => None,
    };
    if let Some(b) = &bytes
        && (!b.is_empty() || matches!(ctx.method.as_str(), "POST" | "PUT" | "PATCH"))
    {
        parts
            .headers
            .insert(CONTENT_LENGTH, http::HeaderValue::from(b.len()));
    }
    let bytes_for_record = bytes.clone();
    let body = match (bytes, body) {
        (Some(b), _) => ReqB::from(b),
        (None, Some(b)) => b,
        (None, None) => ReqB::from(Bytes::new()),
    };
    // Boxed: it waits across the upstream call in every request's future.
    let recorded = ctx.recording().then(|| {
        let body = recorded_body(ctx, &policy, &request, bytes_for_record.as_deref());
        Box::new(ctx.record_for(Some(&request), body.as_deref(), &decision, &resolution))
    });
    // A write (or a protocol switch) is on disk before it leaves: if the process dies before
    // the response ends, the record still says it was sent. Reads keep the one record written
    // when they complete.
    if let Some(rec) = &recorded
        && (switch || mutating(&request.attributes.verb))
        && let Err(refusal) = Box::pin(record_forwarded(ctx, &request, rec)).await
    {
        return Ok(refusal);
    }
    let call = {
        let mut guard = inner.lock().await;
        match guard.ready().await {
            Ok(svc) => svc.call(Request::from_parts(parts, body)),
            Err(e) => {
                return Ok(upstream_failed(
                    ctx,
                    &request,
                    "kubeleash could not reach the API server",
                    format!("{e:?}"),
                )
                .await);
            }
        }
    };
    let resp = match call.await {
        Ok(r) => r,
        Err(e) => {
            return Ok(upstream_failed(
                ctx,
                &request,
                "kubeleash could not get an answer from the API server",
                format!("{e:?}"),
            )
            .await);
        }
    };
    let (mut rparts, rbody) = resp.into_parts();
    let status = rparts.status.as_u16();
    let completion = |stream: &'static str| {
        recorded.map(|r| {
            Completion::new(
                Arc::clone(&shared.recorder),
                Arc::clone(&shared.record_failed),
                Arc::clone(policy.mask_set()),
                r,
                status,
                ctx.started,
                stream,
            )
        })
    };
    // No response byte reaches the client unmasked, headers included: only allowlisted
    // headers of the shape they must have go on, `Warning` texts masked.
    let masks = Arc::clone(policy.mask_set());
    allow_response_headers(
        &mut rparts.headers,
        switch && rparts.status == StatusCode::SWITCHING_PROTOCOLS,
        |text| mask_text(&masks, text),
    );
    if rparts.status == StatusCode::SWITCHING_PROTOCOLS {
        if switch {
            // The one unmasked path: a protocol switch the policy allowed, on a subresource
            // that switches. Its decision, record and kubectl line are kept like any other.
            rparts.extensions.insert(decision);
            return Ok(Response::from_parts(
                rparts,
                KubeleashBody::passthrough(rbody).completing(completion("passthrough")),
            ));
        }
        drop(rbody);
        let d = deny(format!(
            "the API server switched protocols for {} {}, which did not ask to; kubeleash \
             does not pass a connection it cannot mask",
            ctx.method, ctx.target
        ));
        return Ok(ctx
            .refuse(Some(&request), None, 502, "InternalError", d, refused())
            .await);
    }
    rparts.extensions.insert(decision);
    let header = |name| {
        rparts
            .headers
            .get(name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let (ct, ce) = (header(CONTENT_TYPE), header(CONTENT_ENCODING));
    let masker = response_masker(&policy, &request, ct.as_deref(), ce.as_deref());
    rparts.headers.remove(CONTENT_LENGTH);
    rparts.headers.remove(CONTENT_ENCODING);
    let body = match masker {
        Ok(m) => {
            // Streams that stay open end at a policy reload; the client reconnects under the
            // new policy and its masks.
            let reload = matches!(m.framing(), Framing::WatchEvents | Framing::Text)
                .then(|| Reload::new(Arc::clone(shared.policy.generation()), generation));
            // The record keeps the target the agent sent (with its limitBytes) and says the
            // limit was applied after masking.
            let stream = if limit.is_some() {
                "masked, limitBytes applied after masking"
            } else {
                "masked"
            };
            KubeleashBody::masked(rbody, m, reload)
                .limited(limit)
                .completing(completion(stream))
        }
        Err(e) => {
            // Nothing of it has left yet: the client gets a Status in its place, not a
            // connection cut short.
            drop(rbody);
            let message = format!(
                "kubeleash: the API server's response cannot be masked, so it was not passed on: {e}"
            );
            rparts.status = StatusCode::BAD_GATEWAY;
            rparts.headers.clear();
            rparts.headers.insert(
                CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            KubeleashBody::full(status::body(502, "InternalError", &message))
                .completing(completion("refused"))
        }
    };
    Ok(Response::from_parts(rparts, body))
}

/// The verbs that change the cluster.
fn mutating(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

/// Write, and wait for, the record that a write is being sent (kind `forwarded`); the
/// completion record follows when its response ends. If it cannot be written, the write is
/// not sent.
async fn record_forwarded<B>(
    ctx: &Ctx<'_>,
    request: &Classified,
    rec: &RecordBody,
) -> Result<(), Response<KubeleashBody<B>>> {
    let mut before = rec.clone();
    before.kind = "forwarded".into();
    let r = ctx.shared.recorder.record_durable(before).await;
    ctx.recorded(&r);
    if r.is_err() {
        let d = deny("the request could not be recorded, so it was not sent".into());
        return Err(ctx
            .refuse(Some(request), None, 503, "ServiceUnavailable", d, refused())
            .await);
    }
    Ok(())
}

/// The masker for a response. The answer to exec, attach or port-forward that did not switch
/// protocols (an error `Status`) is masked as the JSON it is; everything else as core frames it.
fn response_masker(
    policy: &kubeleash_core::policy::Policy,
    request: &Classified,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> Result<Masker, MaskError> {
    let a = &request.attributes;
    let streaming_subresource =
        a.resource_request && matches!(a.subresource.as_str(), "exec" | "attach" | "portforward");
    let json = content_type.is_some_and(|c| {
        c.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case("application/json")
    });
    if streaming_subresource && json && content_encoding.is_none_or(|e| e.trim().is_empty()) {
        return Ok(Masker::with(Arc::clone(policy.mask_set()), Framing::Json));
    }
    policy.masker(request, content_type, content_encoding)
}

/// A header text with every secret the detectors find masked; `None` if it cannot be masked.
fn mask_text(masks: &Arc<kubeleash_core::mask::MaskSet>, text: &str) -> Option<String> {
    let mut m = Masker::with(Arc::clone(masks), Framing::Text);
    let mut out = Vec::with_capacity(text.len() + 16);
    // Lines are what the text detectors judge: end the one line a header value is.
    let mut input = String::with_capacity(text.len() + 1);
    input.push_str(text);
    input.push('\n');
    m.feed_into(input.as_bytes(), &mut out)
        .and_then(|()| m.finish_into(&mut out))
        .ok()?;
    String::from_utf8(out)
        .ok()
        .map(|t| t.trim_end_matches('\n').to_string())
}

/// A request body as an approver sees it: masked with the response rules, as text.
fn masked_body(
    policy: &kubeleash_core::policy::Policy,
    body: &[u8],
    content_type: Option<&str>,
) -> String {
    let mut m = Masker::with(Arc::clone(policy.mask_set()), Framing::Json);
    let mut out = Vec::new();
    match m
        .feed_into(body, &mut out)
        .and_then(|()| m.finish_into(&mut out))
    {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        // What it was, without its bytes: enough to match it against another copy.
        Err(_) => {
            use sha2::{Digest, Sha256};
            let digest: String = Sha256::digest(body)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let ct: String = content_type
                .unwrap_or("none")
                .chars()
                .take(100)
                .map(|c| {
                    if c.is_ascii_graphic() || c == ' ' {
                        c
                    } else {
                        '?'
                    }
                })
                .collect();
            format!(
                "[body not shown: it is not JSON kubeleash can mask; {} bytes, sha256 {digest}, \
                 content type {ct}]",
                body.len()
            )
        }
    }
}

#[cfg(test)]
mod size {
    /// Every request's future is one allocation, copied whole when it is boxed: its size is part
    /// of the layer's per-request cost (the refusal and approval paths are boxed to keep it so).
    #[test]
    fn a_requests_future_stays_small() {
        use bytes::Bytes;
        use http_body_util::Full;
        let layer = crate::KubeleashLayer::new(
            kubeleash_core::policy::Policy::from_yaml(
                "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules: []\n",
            )
            .unwrap_or_else(|_| unreachable!()),
        );
        let svc = tower::service_fn(|_r: http::Request<Full<Bytes>>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
        });
        let mut k = tower::Layer::layer(&layer, svc);
        let f = tower::Service::call(&mut k, http::Request::new(Full::new(Bytes::new())));
        let size = std::mem::size_of_val(&*f.inner);
        assert!(size < 8 * 1024, "a request's future is {size} bytes");
    }
}
