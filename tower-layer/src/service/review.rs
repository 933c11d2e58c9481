//! The agent's own access reviews, answered by the layer ([`kubeleash_core::access_review`]):
//! `kubectl auth can-i` and `--list` tell the agent what kubeleash will do with its requests,
//! not what the layer's credential may do. An access review the policy allows (or holds for
//! approval) is narrowed by the API server's answer to the same question asked with the
//! credential: what the credential may not do, the agent may not either. Those answers are
//! cached briefly (a `can-i` loop costs the API server one review per question and window).
//!
//! Not in audit mode (everything goes through there, so the API server's answer about the
//! credential is the true one), and not for a review that impersonates someone (a question
//! about another identity, which the policy decides as any impersonation).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use kubeleash_core::access_review::{self, Answered};
use kubeleash_core::policy::{Decision, Effect};
use kubeleash_core::record::{Outcome, RecordedResponse, Stream};
use kubeleash_core::request::{Attributes, Request as Classified};
use serde_json::{Value, json};
use tower::Service;

use super::admit::{Admitted, RequestBody};
use super::decide::deny;
use super::forward::mask_text;
use super::respond::{Ctx, Resolution, recorded_body, refused};
use crate::body::{BoxError, KubeleashBody};
use crate::layer::Mode;

/// How long the API server's answer about the credential is reused.
const SERVER_ANSWER_TTL: Duration = Duration::from_secs(10);
/// At most this many answers are kept; past it the cache starts afresh.
const SERVER_ANSWERS_MAX: usize = 1024;

/// The API server's recent answers about the layer's credential, by the question's attributes.
#[derive(Default)]
pub(crate) struct ServerAnswers {
    answers: Mutex<HashMap<String, (Instant, Option<Value>)>>,
}

impl ServerAnswers {
    fn get(&self, key: &str) -> Option<Option<Value>> {
        let answers = self.answers.lock().ok()?;
        let (at, v) = answers.get(key)?;
        (at.elapsed() < SERVER_ANSWER_TTL).then(|| v.clone())
    }

    fn put(&self, key: String, v: Option<Value>) {
        if let Ok(mut answers) = self.answers.lock() {
            if answers.len() >= SERVER_ANSWERS_MAX {
                answers.clear();
            }
            answers.insert(key, (Instant::now(), v));
        }
    }
}

/// Whether the layer answers this request itself.
pub(crate) fn answers(ctx: &Ctx<'_>, admitted: &Admitted) -> bool {
    ctx.shared.mode == Mode::Enforce
        && admitted.request.facts.impersonation.is_none()
        && access_review::answers(&admitted.request.attributes).is_some()
}

/// Answer the agent's review from the policy in force, narrowed by the API server's answer
/// about the credential; recorded as answered by kubeleash.
pub(crate) async fn answer<S, ReqB, ResB>(
    ctx: &Ctx<'_>,
    inner: &Arc<tokio::sync::Mutex<S>>,
    admitted: &Admitted,
    body: &mut RequestBody<ReqB>,
) -> Response<KubeleashBody<ResB>>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: Body<Data = Bytes> + From<Bytes>,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    let request = &admitted.request;
    if let Err(refusal) = body.read(ctx, request).await {
        return refusal;
    }
    let policy = ctx.shared.policy.get();
    let bytes = body.bytes().unwrap_or_default();
    let mut answered = match access_review::answer(&policy, &ctx.identity, request, bytes) {
        Ok(a) => a,
        Err(status) => {
            let message = status_message(&status.to_json());
            let code = status.code();
            return ctx
                .refuse(
                    Some(request),
                    None,
                    code,
                    reason_of(code),
                    deny(message),
                    refused(),
                )
                .await;
        }
    };
    if answered.needs_server_check()
        && let Some((attributes, _)) = &answered.access
    {
        let server = server_answer(ctx, inner, attributes).await;
        answered.narrow_by_server(server.as_ref());
    }
    respond(ctx, request, body.bytes(), &answered).await
}

/// The API server's `status` for the same question asked with the layer's credential; `None`
/// when it cannot be had.
async fn server_answer<S, ReqB, ResB>(
    ctx: &Ctx<'_>,
    inner: &Arc<tokio::sync::Mutex<S>>,
    a: &Attributes,
) -> Option<Value>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: Body<Data = Bytes> + From<Bytes>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    // Built from the attributes kubeleash read, not the agent's bytes: nothing the agent
    // wrote beyond the question reaches the API server.
    let spec = if a.resource_request {
        json!({"resourceAttributes": {
            "namespace": a.namespace, "verb": a.verb, "group": a.api_group,
            "version": a.api_version, "resource": a.resource,
            "subresource": a.subresource, "name": a.name,
        }})
    } else {
        json!({"nonResourceAttributes": {"path": a.path, "verb": a.verb}})
    };
    let key = spec.to_string();
    if let Some(cached) = ctx.shared.server_answers.get(&key) {
        return cached;
    }
    let review = json!({
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "spec": spec,
    });
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let status = crate::dry_run::call(
        inner,
        &ctx.shared.credential,
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        headers,
        Bytes::from(review.to_string()),
    )
    .await
    .filter(|(code, _)| (200..300).contains(code))
    .and_then(|(_, v)| v.get("status").cloned());
    ctx.shared.server_answers.put(key, status.clone());
    status
}

/// `201 Created` with the answered review, after its record.
async fn respond<B>(
    ctx: &Ctx<'_>,
    request: &Classified,
    asked: Option<&[u8]>,
    answered: &Answered,
) -> Response<KubeleashBody<B>> {
    let bytes = serde_json::to_vec(&answered.object).unwrap_or_default();
    if ctx.recording() {
        let decision = Decision {
            effect: Effect::Allow,
            rule: None,
            reason: format!(
                "kubeleash answers the agent's own access reviews from the policy: {}",
                answered.summary()
            ),
        };
        let resolution = Resolution {
            outcome: Outcome::Answered,
            ..Resolution::default()
        };
        let asked = recorded_body(ctx, &ctx.shared.policy.get(), request, asked);
        let mut rec = ctx.record_for(Some(request), asked.as_deref(), &decision, &resolution);
        // The answer holds only the question as read and the policy's words; the detectors
        // still run over it, as over every text the record keeps.
        let body = String::from_utf8_lossy(&bytes).into_owned();
        let body = mask_text(ctx.shared.policy.get().mask_set(), &body).unwrap_or(body);
        rec.response = Some(RecordedResponse {
            status: 201,
            bytes: bytes.len() as u64,
            duration_ms: ctx.started.elapsed().as_millis() as u64,
            stream: Stream::Answered,
            body: ctx
                .shared
                .recorder
                .body_cap()
                .filter(|cap| body.len() <= *cap)
                .map(|_| body),
            error: None,
        });
        let r = ctx.shared.recorder.record_durable(rec).await;
        ctx.recorded(&r);
    }
    let mut r = Response::new(KubeleashBody::full(Bytes::from(bytes)));
    *r.status_mut() = StatusCode::CREATED;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn status_message(json: &[u8]) -> String {
    serde_json::from_slice::<Value>(json)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| "the access review is malformed".into())
}

fn reason_of(code: u16) -> &'static str {
    match code {
        422 => "Invalid",
        404 => "NotFound",
        _ => "BadRequest",
    }
}
