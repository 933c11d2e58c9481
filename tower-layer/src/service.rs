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

use crate::approval::{
    Answer, ApprovalRequest, Approver, RequestKey, new_id, random_hex, shown_body,
};
use crate::body::{BoxError, Completion, KubeleashBody, Reload};
use crate::bounded::{BoundedReadError, BudgetShare};
use crate::coalesce::Role;
use crate::headers::{
    allow_request_headers, allow_response_headers, asks_upgrade, force_json, is_connect,
};
use crate::holds::{Full, Hold};
use crate::layer::{IdentitySource, Mode, Shared};
use crate::nonblocking::{ApprovalMode, Found, Refused};
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
    shared: &'a Arc<Shared>,
    identity: Identity,
    method: String,
    target: String,
    started: std::time::Instant,
    /// When the request arrived; formatted only when a record is written.
    time: std::time::SystemTime,
    /// The agent's own reason (`X-Kubeleash-Reason`), masked: recorded and shown to approvers.
    agent_reason: Option<String>,
}

/// How a held request was resolved, as a record says it.
#[derive(Clone, Default)]
struct Resolution {
    outcome: &'static str,
    id: Option<String>,
    by: Option<String>,
    reason: Option<String>,
    /// How long the request waited for the person's answer (on the answer's record).
    waited: Option<std::time::Duration>,
    /// Resolved by an answer or grant given before, without asking again.
    coalesced: bool,
    /// The grant an approval left, as a policy fragment.
    grant: Option<serde_json::Value>,
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
                agent_reason: self.agent_reason.clone(),
            },
            decision: RecordedDecision {
                effect: decision.effect.as_str().into(),
                rule: decision.rule.as_deref().map(str::to_string),
                reason: decision.reason.clone(),
                outcome: r.outcome.into(),
                approval_id: r.id.clone(),
                approver: r.by.clone(),
                approver_reason: r.reason.clone(),
                waited_ms: r
                    .waited
                    .map(|w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX)),
                coalesced: r.coalesced,
                grant: r.grant.clone(),
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
            let bytes = status::body(code, reason, &message).len();
            self.record_refusal(req, body, code, bytes, &decision, &resolution, detail)
                .await;
            refusal(code, reason, &message, Some(decision))
        })
    }

    /// Write the record of a refusal (`bytes` long), durably.
    #[allow(
        clippy::too_many_arguments,
        reason = "one private helper of the refusals"
    )]
    async fn record_refusal(
        &self,
        req: Option<&Classified>,
        body: Option<&str>,
        code: u16,
        bytes: usize,
        decision: &Decision,
        resolution: &Resolution,
        detail: Option<String>,
    ) {
        if !self.recording() {
            return;
        }
        let mut rec = self.record_for(req, body, decision, resolution);
        rec.response = Some(RecordedResponse {
            status: code,
            bytes: bytes as u64,
            duration_ms: self.started.elapsed().as_millis() as u64,
            stream: "refused".into(),
            body: None,
            error: detail.map(|d| scrub(self.shared.policy.get().mask_set(), &d)),
        });
        // Refused either way; a refusal whose record is written shows the recorder works.
        let r = self.shared.recorder.record_durable(rec).await;
        self.recorded(&r);
    }

    /// Non-blocking mode: answer a held request at once with 403 and its approval id, after the
    /// record of the answer. `retry_after` while it waits for a person; `None` once refused.
    fn answer_held<'a, B: 'a>(
        &'a self,
        req: &'a Classified,
        body: Option<&'a str>,
        decision: Decision,
        resolution: Resolution,
        id: &'a str,
        retry_after: Option<std::time::Duration>,
    ) -> Refusal<'a, B> {
        Box::pin(async move {
            let seconds = retry_after.map(crate::nonblocking::retry_seconds);
            let message = match seconds {
                Some(n) => format!(
                    "kubeleash: {}; held for approval {id} and not sent: a person must approve \
                     it (`kubeleash approvals approve {id}`); send the identical request again \
                     (retry after {n}s): once approved, it goes through",
                    decision.reason
                ),
                None => format!("kubeleash: {}", decision.reason),
            };
            let bytes = crate::nonblocking::status_body(
                &message,
                id,
                seconds.is_some(),
                seconds.unwrap_or(0),
            );
            self.record_refusal(
                Some(req),
                body,
                403,
                bytes.len(),
                &decision,
                &resolution,
                None,
            )
            .await;
            let mut r = Response::new(KubeleashBody::full(bytes));
            *r.status_mut() = StatusCode::FORBIDDEN;
            let h = r.headers_mut();
            h.insert(
                CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            if let Ok(v) = http::HeaderValue::from_str(id) {
                h.insert(crate::nonblocking::APPROVAL_ID_HEADER, v);
            }
            if let Some(n) = seconds {
                h.insert(http::header::RETRY_AFTER, http::HeaderValue::from(n));
            }
            r.extensions_mut().insert(decision);
            r
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
        ..Resolution::default()
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
    let e = match shared
        .body_budget
        .read(body, kubeleash_core::body::MAX_BODY_BYTES)
        .await
    {
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
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
    ReqB: Body<Data = Bytes> + From<Bytes> + Send + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
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
        agent_reason: parts
            .headers
            .contains_key(REASON_HEADER)
            .then(|| agent_reason(&parts.headers, shared.policy.current().0.mask_set()))
            .flatten(),
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
    // An update or patch that a conditioned rule looks at is judged by what it does too: the
    // API server's dry run of it gives the object it would store (one round trip more, for
    // these writes only). Not when no rule matched at all: nothing on the result could allow it.
    let mut dry: Option<(u16, serde_json::Value)> = None;
    // Held from before the dry run until the write is answered when the result allows what the
    // text alone would not (see `object_lock`).
    let mut object_lock: Option<crate::object_lock::Held> = None;
    if policy.judges_on_result(&ctx.identity, &request)
        && !(decision.effect == Effect::Deny && decision.rule.is_none())
        && let Some(b) = bytes.as_deref()
    {
        let lock = shared.object_locks.lock(&request.attributes).await;
        let held = crate::dry_run::Held {
            request: &request,
            method: &ctx.method,
            target: &ctx.target,
            headers: &parts.headers,
            user: &ctx.identity.user,
            body: b,
        };
        dry = tokio::time::timeout(
            DRY_RUN_TIMEOUT,
            crate::dry_run::result(&inner, &shared.credential, &held),
        )
        .await
        .ok()
        .flatten();
        if let Some((200..=299, result)) = &dry {
            let on_result = policy.decide_on_result(
                &ctx.identity,
                &request,
                Some(b).filter(|b| !b.is_empty()),
                result,
            );
            let loosens = on_result.effect.strictness() < decision.effect.strictness();
            decision = on_result;
            if loosens && decision.effect == Effect::Allow {
                object_lock = Some(lock);
            }
        }
    }
    let mut resolution = Resolution {
        outcome: "forwarded",
        id: None,
        by: None,
        reason: None,
        ..Resolution::default()
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
            let query = crate::approval::Query {
                identity: &ctx.identity,
                method: &ctx.method,
                headers: &parts.headers,
                request: &request,
                body: bytes.as_deref().unwrap_or_default(),
            };
            // Blocking mode: an identical request already waiting for a person is not asked
            // about again; this one waits for that answer (see `coalesce`).
            let coalescing =
                shared.approval_mode == ApprovalMode::Blocking && shared.approver.is_some();
            let mut lead = None;
            let covered = loop {
                if let Some(c) = shared.grants.covers(&query, generation) {
                    break Some(c);
                }
                if !coalescing {
                    break None;
                }
                match shared.asking.lead_or_wait(key) {
                    Role::Lead(l) => {
                        lead = Some(l);
                        break None;
                    }
                    Role::Wait(rx) => {
                        if let Some(refusal) = Box::pin(wait_for_identical(
                            &ctx,
                            &request,
                            &policy,
                            bytes.as_deref(),
                            &decision,
                            rx,
                        ))
                        .await
                        {
                            return Ok(refusal);
                        }
                    }
                }
            };
            if let Some(covered) = covered {
                resolution = Resolution {
                    outcome: "approved",
                    id: Some(covered.id),
                    by: Some(covered.by),
                    reason: Some("covered by the grant this approval left".into()),
                    coalesced: true,
                    ..Resolution::default()
                };
            } else {
                let nonblocking = match (shared.approval_mode, &shared.approver) {
                    (ApprovalMode::NonBlocking { retry_after }, Some(a)) => {
                        Some((retry_after, Arc::clone(a)))
                    }
                    _ => None,
                };
                // Boxed: the approval path's state stays out of every request's future.
                let held = match nonblocking {
                    Some((retry_after, approver)) => {
                        Box::pin(hold_nonblocking(
                            &ctx,
                            &inner,
                            &request,
                            &parts.headers,
                            &policy,
                            generation,
                            bytes.as_ref(),
                            &decision,
                            dry.take(),
                            key,
                            approver,
                            retry_after,
                            &mut budget,
                        ))
                        .await
                    }
                    None => Box::pin(hold(
                        &ctx,
                        &inner,
                        &request,
                        &parts.headers,
                        &policy,
                        bytes.as_deref(),
                        &decision,
                        dry.take(),
                        lead.as_ref(),
                    ))
                    .await
                    .map(|approved| (approved, generation)),
                };
                let ((id, approval, shown), asked_under) = match held {
                    Ok(h) => h,
                    Err(refusal) => return Ok(refusal),
                };
                // The person approved under the policy of the moment they were asked; what
                // goes out must still pass the policy in force now.
                let (now_policy, now_generation) = shared.policy.current();
                if now_generation != asked_under {
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
                                "{} approved {id}, but the policy was reloaded while the request was held and now denies it: {}",
                                approval.by, again.reason
                            ),
                            ..again
                        };
                        let r = Resolution {
                            outcome: "refused",
                            id: Some(id),
                            by: Some(approval.by),
                            reason: Some("the reloaded policy denies it".into()),
                            waited: Some(approval.waited),
                            ..Resolution::default()
                        };
                        return Ok(ctx
                            .refuse(Some(&request), shown.as_deref(), 403, "Forbidden", d, r)
                            .await);
                    }
                }
                // What the approval leaves behind: nothing for an exact one; for a widened one
                // a grant, unless the floor or the request's shape says no (then the record says
                // why, and this one request still goes).
                let (grant, widen_note) = if approval.widening.is_exact() {
                    (None, None)
                } else if let Some(never) = policy.never_widen(&request.attributes) {
                    (
                        None,
                        Some(format!("approved exactly, not widened: {never}")),
                    )
                } else {
                    match kubeleash_core::policy::grant::Grant::new(
                        &request,
                        bytes.as_deref().unwrap_or_default(),
                        &approval.widening,
                    ) {
                        Ok(g) => (Some(g), None),
                        Err(e) => (None, Some(format!("approved exactly, not widened: {e}"))),
                    }
                };
                let by = approval.by;
                resolution = Resolution {
                    outcome: "approved",
                    grant: grant.as_ref().map(|g| g.rule(&ctx.identity.user, &id, &by)),
                    id: Some(id),
                    by: Some(by),
                    reason: widen_note,
                    waited: Some(approval.waited),
                    coalesced: false,
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
                if let Some(g) = grant {
                    let query = crate::approval::Query {
                        identity: &ctx.identity,
                        method: &ctx.method,
                        headers: &parts.headers,
                        request: &request,
                        body: bytes.as_deref().unwrap_or_default(),
                    };
                    shared.grants.add(
                        &query,
                        g,
                        generation,
                        resolution.id.as_deref().unwrap_or_default(),
                        resolution.by.as_deref().unwrap_or_default(),
                    );
                }
                // Identical requests that waited look again: at the grant just left, or to be
                // asked themselves.
                drop(lead);
            }
        }
    }
    let answered = forward(
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
    .await;
    // The write has its answer: the object may change again.
    drop(object_lock);
    answered
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
        | BodyError::Protobuf { .. }
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

/// How long a held write's dry run may take before the person is asked without it.
const DRY_RUN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The header an agent explains a request in, shown to the approver and recorded.
const REASON_HEADER: &str = "x-kubeleash-reason";

/// The agent's reason for a request (its `X-Kubeleash-Reason` header): printable, at most 500
/// characters, with what the detectors find masked. The agent wrote it; it proves nothing.
fn agent_reason(
    headers: &http::HeaderMap,
    masks: &Arc<kubeleash_core::mask::MaskSet>,
) -> Option<String> {
    let v = headers.get(REASON_HEADER)?;
    let text = String::from_utf8_lossy(v.as_bytes());
    let printable: String = kubeleash_core::display::printable(text.trim())
        .chars()
        .take(500)
        .collect();
    if printable.is_empty() {
        return None;
    }
    mask_text(masks, &printable)
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
        .map(|b| masked_body(policy, request, b))
}

/// An approval: its id, the approval, and the body as recorded.
type Approved = (String, crate::approval::Approval, Option<String>);

/// A held request's body as the approver is shown it (cut to `MAX_SHOWN_BODY`) and as the
/// record keeps it (whole, and only when recording), both masked.
fn held_bodies(
    ctx: &Ctx<'_>,
    policy: &kubeleash_core::policy::Policy,
    request: &Classified,
    bytes: Option<&[u8]>,
) -> (Option<String>, Option<String>) {
    let masked = bytes
        .filter(|b| !b.is_empty())
        .map(|b| masked_body(policy, request, b));
    let shown = masked.as_deref().map(shown_body);
    (shown, masked.filter(|_| ctx.recording()))
}

/// Why a request could not be held.
enum NotHeld {
    Full(Full),
    NoId,
}

/// A held request's place: counted against the hold limits, under a fresh random id.
fn reserve(shared: &Shared, who: &str) -> Result<(Hold, String), NotHeld> {
    let counted = shared
        .holds
        .try_hold(who, shared.hold_limits)
        .map_err(NotHeld::Full)?;
    let id = new_id().ok_or(NotHeld::NoId)?;
    Ok((counted, id))
}

/// The refusal of a request that could not be held.
async fn not_held<B>(
    ctx: &Ctx<'_>,
    request: &Classified,
    recorded: Option<&str>,
    decision: &Decision,
    why: NotHeld,
) -> Response<KubeleashBody<B>> {
    match why {
        NotHeld::Full(full) => {
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
            ctx.refuse(
                Some(request),
                recorded,
                429,
                "TooManyRequests",
                d,
                refused(),
            )
            .await
        }
        NotHeld::NoId => {
            let d = deny("kubeleash could not make an approval id (no randomness)".into());
            ctx.refuse(
                Some(request),
                recorded,
                503,
                "ServiceUnavailable",
                d,
                refused(),
            )
            .await
        }
    }
}

/// Record a request as held under `id`, and make the approver's prompt (its dry run is asked
/// with it).
#[allow(
    clippy::too_many_arguments,
    reason = "the approval half of the data path, with the state of the first"
)]
async fn prompt<B>(
    ctx: &Ctx<'_>,
    request: &Classified,
    headers: &http::HeaderMap,
    decision: &Decision,
    recorded: Option<&str>,
    shown: Option<String>,
    id: &str,
    widen: kubeleash_core::policy::grant::Axes,
) -> Result<ApprovalRequest, Response<KubeleashBody<B>>> {
    let shared = ctx.shared;
    if ctx.recording() {
        let held = Resolution {
            outcome: "held",
            id: Some(id.to_string()),
            by: None,
            reason: None,
            ..Resolution::default()
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
    Ok(ApprovalRequest {
        id: id.to_string(),
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
        agent_reason: ctx.agent_reason.clone(),
        dry_run: None,
        widen,
    })
}

/// The axes an approver may widen this request's approval along (none under the floor).
fn widen_axes(
    policy: &kubeleash_core::policy::Policy,
    request: &Classified,
    body: &[u8],
) -> kubeleash_core::policy::grant::Axes {
    let never = policy.never_widen(&request.attributes);
    kubeleash_core::policy::grant::axes(request, body, never)
}

/// What came of asking a person.
enum Asked {
    Approved(crate::approval::Approval),
    /// Refused: the decision and resolution to record and answer with; `timed_out` when
    /// nobody answered.
    Refused {
        decision: Decision,
        resolution: Resolution,
        timed_out: bool,
    },
}

/// Ask the approver about a held request: the API server's dry run first, then the person,
/// within the approval timeout. The approver is never the requester.
#[allow(
    clippy::too_many_arguments,
    reason = "the approval half of the data path, with the state of the first"
)]
async fn ask<S, ReqB, B>(
    ctx: &Ctx<'_>,
    inner: &Arc<tokio::sync::Mutex<S>>,
    request: &Classified,
    headers: &http::HeaderMap,
    policy: &kubeleash_core::policy::Policy,
    bytes: Option<&[u8]>,
    decision: &Decision,
    dry: Option<(u16, serde_json::Value)>,
    approver: &dyn Approver,
    mut ask: ApprovalRequest,
) -> Asked
where
    S: Service<Request<ReqB>, Response = Response<B>>,
    ReqB: Body<Data = Bytes> + From<Bytes>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let shared = ctx.shared;
    let id = ask.id.clone();
    // What the API server says the write would do, asked before a person is (bounded: a slow
    // or failing dry run leaves the prompt without one, and forwards nothing).
    let held = crate::dry_run::Held {
        request,
        method: &ctx.method,
        target: &ctx.target,
        headers,
        user: &ctx.identity.user,
        body: bytes.unwrap_or_default(),
    };
    ask.dry_run = tokio::time::timeout(
        DRY_RUN_TIMEOUT,
        crate::dry_run::ask(inner, &shared.credential, policy, &held, dry),
    )
    .await
    .ok()
    .flatten();
    let asked_at = std::time::Instant::now();
    let answer = tokio::time::timeout(shared.approval_timeout, approver.approve(ask)).await;
    let waited = asked_at.elapsed();
    match answer {
        // The approver is never the agent: an approval in the requester's own name, on any
        // channel, is refused.
        Ok(a @ (Answer::Approve { .. } | Answer::Widen { .. }))
            if crate::approval::same_user(a.by(), &ctx.identity.user) =>
        {
            Asked::Refused {
                decision: Decision {
                    reason: format!(
                        "{}; approval {id} came from the identity that made the request, and a \
                         request cannot approve itself",
                        decision.reason
                    ),
                    ..decision.clone()
                },
                resolution: Resolution {
                    outcome: "refused",
                    id: Some(id),
                    by: Some(a.by().to_string()),
                    reason: Some("self-approval".into()),
                    waited: Some(waited),
                    ..Resolution::default()
                },
                timed_out: false,
            }
        }
        Ok(a) => match a.approval(waited) {
            Ok(approval) => Asked::Approved(approval),
            Err((by, reason)) => Asked::Refused {
                decision: Decision {
                    reason: format!("{}; {by} denied approval {id}: {reason}", decision.reason),
                    ..decision.clone()
                },
                resolution: Resolution {
                    outcome: "refused",
                    id: Some(id),
                    by: Some(by),
                    reason: Some(reason),
                    waited: Some(waited),
                    ..Resolution::default()
                },
                timed_out: false,
            },
        },
        Err(_) => Asked::Refused {
            decision: Decision {
                reason: format!(
                    "{}; nobody answered approval {id} within {}s",
                    decision.reason,
                    shared.approval_timeout.as_secs()
                ),
                ..decision.clone()
            },
            resolution: Resolution {
                outcome: "expired",
                id: Some(id),
                by: None,
                reason: Some("timed out".into()),
                waited: Some(waited),
                ..Resolution::default()
            },
            timed_out: true,
        },
    }
}

/// Hold a request for an approver: counted against the hold limits, recorded as held, asked
/// under a fresh random id. `Ok((id, approval, recorded body))` when approved; every other
/// outcome is the refusal to send.
#[allow(
    clippy::too_many_arguments,
    reason = "the approval half of the data path, with the state of the first"
)]
async fn hold<S, ReqB, B>(
    ctx: &Ctx<'_>,
    inner: &Arc<tokio::sync::Mutex<S>>,
    request: &Classified,
    headers: &http::HeaderMap,
    policy: &kubeleash_core::policy::Policy,
    bytes: Option<&[u8]>,
    decision: &Decision,
    dry: Option<(u16, serde_json::Value)>,
    lead: Option<&crate::coalesce::Lead>,
) -> Result<Approved, Response<KubeleashBody<B>>>
where
    S: Service<Request<ReqB>, Response = Response<B>>,
    ReqB: Body<Data = Bytes> + From<Bytes>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let shared = ctx.shared;
    // The approver is shown at most MAX_SHOWN_BODY of the body; the record keeps it whole.
    let (shown, kept) = held_bodies(ctx, policy, request, bytes);
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
    let (_counted, id) = match reserve(shared, &ctx.identity.user) {
        Ok(r) => r,
        Err(why) => return Err(not_held(ctx, request, recorded, decision, why).await),
    };
    let axes = widen_axes(policy, request, bytes.unwrap_or_default());
    let ask_for = prompt(ctx, request, headers, decision, recorded, shown, &id, axes).await?;
    match ask(
        ctx, inner, request, headers, policy, bytes, decision, dry, &*approver, ask_for,
    )
    .await
    {
        Asked::Approved(approval) => Ok((id, approval, kept)),
        Asked::Refused {
            decision,
            resolution,
            timed_out,
        } => Err({
            if let Some(lead) = lead {
                lead.refused(crate::coalesce::Refusal {
                    id: id.clone(),
                    decision: decision.clone(),
                    by: resolution.by.clone(),
                    reason: resolution.reason.clone(),
                    expired: timed_out,
                });
            }
            ctx.refuse(
                Some(request),
                recorded,
                403,
                "Forbidden",
                decision,
                resolution,
            )
            .await
        }),
    }
}

/// A request identical to one waiting for a person waits for that answer, counted against the
/// hold limits: `Some(refusal)` to answer it with (the first was refused, nobody answered, or
/// it could not wait), `None` to look again (the first was approved or went away).
async fn wait_for_identical<B>(
    ctx: &Ctx<'_>,
    request: &Classified,
    policy: &kubeleash_core::policy::Policy,
    bytes: Option<&[u8]>,
    decision: &Decision,
    rx: tokio::sync::watch::Receiver<Option<crate::coalesce::Refusal>>,
) -> Option<Response<KubeleashBody<B>>> {
    let shared = ctx.shared;
    let _counted = match shared
        .holds
        .try_hold(&ctx.identity.user, shared.hold_limits)
    {
        Ok(h) => h,
        Err(full) => {
            let recorded = recorded_body(ctx, policy, request, bytes);
            return Some(
                not_held(
                    ctx,
                    request,
                    recorded.as_deref(),
                    decision,
                    NotHeld::Full(full),
                )
                .await,
            );
        }
    };
    if ctx.recording() {
        // The record shows it waiting, as it shows a prompted request held.
        let r = Resolution {
            outcome: "held",
            reason: Some("waits for the answer to an identical request held before it".into()),
            coalesced: true,
            ..Resolution::default()
        };
        let recorded = recorded_body(ctx, policy, request, bytes);
        let mut rec = ctx.record_for(Some(request), recorded.as_deref(), decision, &r);
        rec.kind = "held".into();
        let written = shared.recorder.record(rec);
        ctx.recorded(&written);
    }
    let (decision, resolution) =
        match tokio::time::timeout(shared.approval_timeout, crate::coalesce::wait(rx)).await {
            Ok(None) => return None,
            Ok(Some(r)) => (
                r.decision,
                Resolution {
                    outcome: if r.expired { "expired" } else { "refused" },
                    id: Some(r.id),
                    by: r.by,
                    reason: r.reason,
                    coalesced: true,
                    ..Resolution::default()
                },
            ),
            Err(_) => (
                Decision {
                    reason: format!(
                        "{}; an identical request was held first and nobody answered it within {}s",
                        decision.reason,
                        shared.approval_timeout.as_secs()
                    ),
                    ..decision.clone()
                },
                Resolution {
                    outcome: "expired",
                    reason: Some("timed out".into()),
                    coalesced: true,
                    ..Resolution::default()
                },
            ),
        };
    let recorded = recorded_body(ctx, policy, request, bytes);
    Some(
        ctx.refuse(
            Some(request),
            recorded.as_deref(),
            403,
            "Forbidden",
            decision,
            resolution,
        )
        .await,
    )
}

/// Non-blocking mode ([`ApprovalMode::NonBlocking`]): what is known of this exact request
/// answers it at once. An approval waiting for it is used up (`Ok`, with the policy generation
/// it was asked under); a request not held yet is held (counted, recorded, under a new id) and
/// its approver asked in the background; the rest is answered 403 with the approval's id.
#[allow(
    clippy::too_many_arguments,
    reason = "the approval half of the data path, with the state of the first"
)]
async fn hold_nonblocking<S, ReqB, B>(
    ctx: &Ctx<'_>,
    inner: &Arc<tokio::sync::Mutex<S>>,
    request: &Classified,
    headers: &http::HeaderMap,
    policy: &kubeleash_core::policy::Policy,
    generation: u64,
    bytes: Option<&Bytes>,
    decision: &Decision,
    dry: Option<(u16, serde_json::Value)>,
    key: RequestKey,
    approver: Arc<dyn Approver>,
    retry_after: std::time::Duration,
    budget: &mut BudgetShare,
) -> Result<(Approved, u64), Response<KubeleashBody<B>>>
where
    S: Service<Request<ReqB>, Response = Response<B>> + Send + 'static,
    S::Future: Send,
    ReqB: Body<Data = Bytes> + From<Bytes> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let shared = ctx.shared;
    let found = shared
        .waiting
        .find_or_reserve(key, generation, || reserve(shared, &ctx.identity.user));
    let pending = |id: &str| Resolution {
        outcome: "refused",
        id: Some(id.to_string()),
        by: None,
        reason: Some("approval pending; answered at once (non-blocking approvals)".into()),
        ..Resolution::default()
    };
    let id = match found {
        Found::Approved {
            id,
            approval,
            generation,
        } => {
            let recorded = recorded_body(ctx, policy, request, bytes.map(|b| &b[..]));
            return Ok(((id, approval, recorded), generation));
        }
        Found::Asking(id) => {
            let recorded = recorded_body(ctx, policy, request, bytes.map(|b| &b[..]));
            let r = Resolution {
                coalesced: true,
                ..pending(&id)
            };
            return Err(ctx
                .answer_held(
                    request,
                    recorded.as_deref(),
                    decision.clone(),
                    r,
                    &id,
                    Some(retry_after),
                )
                .await);
        }
        Found::Refused(id, was) => {
            let recorded = recorded_body(ctx, policy, request, bytes.map(|b| &b[..]));
            let r = Resolution {
                outcome: "refused",
                id: Some(id.clone()),
                by: was.by,
                reason: was.reason,
                coalesced: true,
                ..Resolution::default()
            };
            return Err(ctx
                .answer_held(request, recorded.as_deref(), was.decision, r, &id, None)
                .await);
        }
        Found::NotHeld(why) => {
            let recorded = recorded_body(ctx, policy, request, bytes.map(|b| &b[..]));
            return Err(not_held(ctx, request, recorded.as_deref(), decision, why).await);
        }
        Found::Reserved(id) => id,
    };
    let (shown, kept) = held_bodies(ctx, policy, request, bytes.map(|b| &b[..]));
    let axes = widen_axes(policy, request, bytes.map(|b| &b[..]).unwrap_or_default());
    let ask_for = match prompt(
        ctx,
        request,
        headers,
        decision,
        kept.as_deref(),
        shown,
        &id,
        axes,
    )
    .await
    {
        Ok(p) => p,
        Err(refusal) => {
            shared.waiting.forget(key, &id);
            return Err(refusal);
        }
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        shared.waiting.forget(key, &id);
        let d = deny(
            "kubeleash cannot ask for approval in the background outside a tokio runtime; \
             use blocking approvals there"
                .into(),
        );
        return Err(ctx
            .refuse(
                Some(request),
                kept.as_deref(),
                503,
                "ServiceUnavailable",
                d,
                refused(),
            )
            .await);
    };
    let answer = ctx.answer_held(
        request,
        kept.as_deref(),
        decision.clone(),
        pending(&id),
        &id,
        Some(retry_after),
    );
    // The question outlives this call: what it needs is its own, the body's share of the
    // buffer budget included (given back once the person has answered).
    let background = Background {
        shared: Arc::clone(shared),
        identity: ctx.identity.clone(),
        method: ctx.method.clone(),
        target: ctx.target.clone(),
        started: ctx.started,
        time: ctx.time,
        agent_reason: ctx.agent_reason.clone(),
        request: request.clone(),
        headers: headers.clone(),
        policy: policy.clone(),
        bytes: bytes.cloned(),
        decision: decision.clone(),
        dry,
        approver,
        ask: ask_for,
        key,
        kept: kept.clone(),
        budget: std::mem::take(budget),
    };
    runtime.spawn(background.run::<S, ReqB, B>(Arc::clone(inner)));
    Err(answer.await)
}

/// A held request's question, asked after the request was answered (non-blocking mode).
struct Background {
    shared: Arc<Shared>,
    identity: Identity,
    method: String,
    target: String,
    started: std::time::Instant,
    time: std::time::SystemTime,
    agent_reason: Option<String>,
    request: Classified,
    headers: http::HeaderMap,
    policy: kubeleash_core::policy::Policy,
    bytes: Option<Bytes>,
    decision: Decision,
    dry: Option<(u16, serde_json::Value)>,
    approver: Arc<dyn Approver>,
    ask: ApprovalRequest,
    key: RequestKey,
    kept: Option<String>,
    budget: BudgetShare,
}

impl Background {
    /// Ask; keep the answer for the identical request (for the approval timeout), and record a
    /// refusal as blocking mode does. Nobody answering forgets the request: sent again, it is
    /// held again.
    async fn run<S, ReqB, B>(self, inner: Arc<tokio::sync::Mutex<S>>)
    where
        S: Service<Request<ReqB>, Response = Response<B>>,
        ReqB: Body<Data = Bytes> + From<Bytes>,
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let Background {
            shared,
            identity,
            method,
            target,
            started,
            time,
            agent_reason,
            request,
            headers,
            policy,
            bytes,
            decision,
            dry,
            approver,
            ask: ask_for,
            key,
            kept,
            budget,
        } = self;
        let ctx = Ctx {
            shared: &shared,
            identity,
            method,
            target,
            started,
            time,
            agent_reason,
        };
        let id = ask_for.id.clone();
        let asked = ask::<S, ReqB, B>(
            &ctx,
            &inner,
            &request,
            &headers,
            &policy,
            bytes.as_deref(),
            &decision,
            dry,
            &*approver,
            ask_for,
        )
        .await;
        drop((bytes, budget));
        let now = std::time::Instant::now();
        let until = now
            .checked_add(shared.approval_timeout)
            .or_else(|| now.checked_add(crate::MAX_WINDOW))
            .unwrap_or(now);
        match asked {
            Asked::Approved(approval) => {
                let by = approval.by.clone();
                shared.waiting.approved(key, &id, approval, until);
                tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
                // An approval nobody came back for: the fatigue figures count it as expired.
                if shared.waiting.forget(key, &id) && ctx.recording() {
                    let r = Resolution {
                        outcome: "expired",
                        id: Some(id.clone()),
                        by: Some(by),
                        reason: Some(format!(
                            "approved, but the identical request was not sent again within {}s",
                            shared.approval_timeout.as_secs()
                        )),
                        ..Resolution::default()
                    };
                    let mut rec = ctx.record_for(Some(&request), kept.as_deref(), &decision, &r);
                    rec.kind = "expired".into();
                    let written = shared.recorder.record(rec);
                    ctx.recorded(&written);
                }
                return;
            }
            Asked::Refused {
                decision,
                resolution,
                timed_out,
            } => {
                let was = Refused {
                    decision: decision.clone(),
                    by: resolution.by.clone(),
                    reason: resolution.reason.clone(),
                };
                // Recorded when it is refused, as in blocking mode.
                let _told: Response<KubeleashBody<B>> = ctx
                    .refuse(
                        Some(&request),
                        kept.as_deref(),
                        403,
                        "Forbidden",
                        decision,
                        resolution,
                    )
                    .await;
                if timed_out {
                    shared.waiting.forget(key, &id);
                    return;
                }
                shared
                    .waiting
                    .refused(key, &id, was, until, shared.hold_limits.total);
            }
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
        shared.waiting.forget(key, &id);
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
    request: &Classified,
    body: &[u8],
) -> String {
    let content_type = request.facts.content_type.as_deref();
    // A protobuf body is shown as the JSON it decodes to: what the API server will act on.
    let protobuf = content_type.is_some_and(|ct| {
        ct.trim()
            .eq_ignore_ascii_case("application/vnd.kubernetes.protobuf")
    });
    let decoded = protobuf
        .then(|| {
            kubeleash_core::body::decode(request, body, &Default::default())
                .ok()
                .flatten()
                .and_then(|d| crate::dry_run::kind_first(&d.value))
        })
        .flatten();
    let json = decoded.as_deref().unwrap_or(body);
    let mut m = Masker::with(Arc::clone(policy.mask_set()), Framing::Json);
    let mut out = Vec::new();
    match m
        .feed_into(json, &mut out)
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

    #[test]
    fn look_alike_approvers_are_the_requester() {
        for by in [
            "agent-1",
            " AGENT-1 ",
            "agent\u{200b}-1",
            "\u{ff41}\u{ff47}\u{ff45}\u{ff4e}\u{ff54}-1",
            "agent_1",
            "Agent\t1",
        ] {
            assert!(crate::approval::same_user(by, "agent-1"), "{by:?}");
        }
        assert!(!crate::approval::same_user("alice", "agent-1"));
        assert!(!crate::approval::same_user("agent-12", "agent-1"));
        assert!(!crate::approval::same_user("", ""), "no user, nobody to be");
    }
}
