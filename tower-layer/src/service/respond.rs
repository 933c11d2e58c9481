//! Answering a request the layer does not forward: a refusal as the API server phrases errors (a
//! Kubernetes `Status`), after its record is written; a held request's answer in non-blocking
//! mode; the fixed answer when the upstream side fails. And the request's context, which every
//! record is written from.

use kubeleash_core::record::{Outcome, RecordKind, Stream};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Response, StatusCode};
use kubeleash_core::policy::{Decision, Denial, Identity, Policy};
use kubeleash_core::record::{RecordBody, RecordedDecision, RecordedRequest, RecordedResponse};
use kubeleash_core::request::Request as Classified;
use kubeleash_core::status::Status;

use super::decide::{Decided, deny};
use super::forward::masked_body;
use crate::approval::random_hex;
use crate::body::KubeleashBody;
use crate::layer::Shared;
use crate::record::{RecordError, rfc3339_at};
use crate::scrub::scrub;
use crate::status;

pub(crate) fn refusal<B>(
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

pub(crate) struct Ctx<'a> {
    pub(crate) shared: &'a Arc<Shared>,
    pub(crate) identity: Identity,
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) started: std::time::Instant,
    /// When the request arrived; formatted only when a record is written.
    pub(crate) time: std::time::SystemTime,
    /// The agent's own reason (`X-Kubeleash-Reason`), masked: recorded and shown to approvers.
    pub(crate) agent_reason: Option<String>,
    /// Who to tell the approval id when the request is held (the request's extension).
    pub(crate) on_hold: Option<crate::approval::OnHold>,
}

/// How a held request was resolved, as a record says it.
#[derive(Clone, Default)]
pub(crate) struct Resolution {
    pub(crate) outcome: Outcome,
    pub(crate) id: Option<String>,
    pub(crate) by: Option<String>,
    pub(crate) reason: Option<String>,
    /// How long the request waited for the person's answer (on the answer's record).
    pub(crate) waited: Option<std::time::Duration>,
    /// Resolved by an answer or grant given before, without asking again.
    pub(crate) coalesced: bool,
    /// The grant an approval left, as a policy fragment.
    pub(crate) grant: Option<serde_json::Value>,
}

impl Ctx<'_> {
    pub(crate) fn recording(&self) -> bool {
        self.shared.recorder.enabled()
    }

    pub(crate) fn record_for(
        &self,
        req: Option<&Classified>,
        body: Option<&str>,
        decision: &Decision,
        r: &Resolution,
    ) -> RecordBody {
        RecordBody {
            time: rfc3339_at(self.time),
            kind: RecordKind::Request,
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
                outcome: r.outcome,
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
            checkpoint: None,
        }
    }

    /// Note whether a record was written: a failure makes the layer refuse every request
    /// until a record is written again.
    pub(crate) fn recorded(&self, r: &Result<(), RecordError>) {
        self.shared
            .record_failed
            .store(r.is_err(), Ordering::Release);
    }

    /// Refuse, after the record of the refusal is on disk.
    pub(crate) fn refuse<'a, B: 'a>(
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
    pub(crate) fn refuse_noting<'a, B: 'a>(
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

    /// Refuse a request the policy denies, explained ([`Denial`]): the rule, whether a person
    /// could approve it, and the nearest request the policy allows, in the message's last
    /// sentence and as `details.causes`.
    pub(crate) fn refuse_explained<'a, B: 'a>(
        &'a self,
        req: &'a Classified,
        body: Option<&'a str>,
        decision: Decision,
        denial: Denial,
    ) -> Refusal<'a, B> {
        Box::pin(async move {
            let mut message = format!("kubeleash: {}", decision.reason);
            if let Some(hint) = &denial.hint {
                message.push_str("; ");
                message.push_str(hint);
            }
            let s = Status::failure(403, "Forbidden", &message)
                .details(denial.details(&req.attributes));
            let bytes = s.to_json();
            self.record_refusal(
                Some(req),
                body,
                403,
                bytes.len(),
                &decision,
                &refused(),
                None,
            )
            .await;
            let mut r = s.response(|b| KubeleashBody::full(Bytes::from(b)));
            r.extensions_mut().insert(decision);
            r
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
            stream: Stream::Refused,
            body: None,
            error: detail.map(|d| scrub(self.shared.policy.get().mask_set(), &d)),
        });
        // Refused either way; a refusal whose record is written shows the recorder works.
        let r = self.shared.recorder.record_durable(rec).await;
        self.recorded(&r);
    }

    /// Non-blocking mode: answer a held request at once with 403 and its approval id, after the
    /// record of the answer. `retry_after` while it waits for a person; `None` once refused.
    pub(crate) fn answer_held<'a, B: 'a>(
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
pub(crate) type Refusal<'a, B> =
    Pin<Box<dyn Future<Output = Response<KubeleashBody<B>>> + Send + 'a>>;

pub(crate) fn refused() -> Resolution {
    Resolution {
        outcome: Outcome::Refused,
        id: None,
        by: None,
        reason: None,
        ..Resolution::default()
    }
}

/// The answer to a request the policy denies (enforce mode): 403, its body recorded masked.
pub(crate) async fn denied<B>(
    ctx: &Ctx<'_>,
    request: &Classified,
    bytes: Option<&[u8]>,
    decided: Decided,
) -> Response<KubeleashBody<B>> {
    let body = recorded_body(ctx, &decided.policy, request, bytes);
    let denial =
        decided
            .policy
            .explain_denial(&ctx.identity, &request.attributes, &decided.decision);
    ctx.refuse_explained(request, body.as_deref(), decided.decision, denial)
        .await
}

/// The record's (and approver's) view of a request body: masked, when there is one.
pub(crate) fn recorded_body(
    ctx: &Ctx<'_>,
    policy: &Policy,
    request: &Classified,
    bytes: Option<&[u8]>,
) -> Option<String> {
    bytes
        .filter(|b| !b.is_empty() && ctx.recording())
        .map(|b| masked_body(policy, request, b))
}

/// The fixed answer when the upstream side fails: nothing of the error (which can carry the
/// operator's kubeconfig, a credential plugin's command line, environment or output) reaches
/// the client; the record keeps it, masked, under a correlation id the client is given.
pub(crate) async fn upstream_failed<B>(
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
