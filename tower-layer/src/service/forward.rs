//! Forwarding a decided request: only allowlisted headers and the layer's credential leave, a
//! write recorded before it is sent; the response masked as it streams, its headers allowlisted.

use kubeleash_core::record::{Outcome, RecordKind, Stream};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body::Body;
use kubeleash_core::mask::{Framing, MaskError, Masker};
use kubeleash_core::policy::{Decision, Effect, Policy};
use kubeleash_core::record::RecordBody;
use kubeleash_core::request::Request as Classified;
use tower::{Service, ServiceExt};

use super::admit::{Admitted, RequestBody};
use super::decide::{Decided, deny};
use super::respond::{Ctx, Resolution, recorded_body, refused, upstream_failed};
use crate::body::{BoxError, Completion, KubeleashBody, Reload};
use crate::headers::{allow_request_headers, allow_response_headers, force_json};
use crate::status;

/// Send a decided request on and mask its response. The body's bytes (or the body unread) are
/// taken from `body`; its share of the buffer budget stays with the caller.
pub(crate) async fn forward<S, ReqB, ResB>(
    ctx: &Ctx<'_>,
    inner: Arc<tokio::sync::Mutex<S>>,
    mut parts: Parts,
    body: &mut RequestBody<ReqB>,
    admitted: Admitted,
    decided: Decided,
    resolution: Resolution,
) -> Response<KubeleashBody<ResB>>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: std::fmt::Debug,
    ReqB: Body<Data = Bytes> + From<Bytes>,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    let Admitted {
        request,
        asks_switch,
        connect,
        log_limit,
    } = admitted;
    // Allowed by the policy, or approved by a person (or their window); audit mode forwards
    // the rest, but without the powers a rule must grant by name.
    let allowed =
        decided.decision.effect == Effect::Allow || resolution.outcome == Outcome::Approved;
    let switch = asks_switch && connect;
    if switch && !allowed {
        let d = Decision {
            reason: format!(
                "{}; a protocol switch (exec, attach, port-forward, proxy) is not masked, so \
                 kubeleash passes one only when the policy allows it, audit mode or not",
                decided.decision.reason
            ),
            ..decided.decision
        };
        return ctx
            .refuse(Some(&request), None, 403, "Forbidden", d, refused())
            .await;
    }
    let limit = match outbound(ctx, &mut parts, &request, allowed, switch, log_limit).await {
        Ok(limit) => limit,
        Err(refusal) => return refusal,
    };
    let bytes = body.bytes.take();
    if let Some(b) = &bytes
        && (!b.is_empty() || matches!(ctx.method.as_str(), "POST" | "PUT" | "PATCH"))
    {
        parts
            .headers
            .insert(CONTENT_LENGTH, http::HeaderValue::from(b.len()));
    }
    let bytes_for_record = bytes.clone();
    let body = match (bytes, body.unread.take()) {
        (Some(b), _) => ReqB::from(b),
        (None, Some(b)) => b,
        (None, None) => ReqB::from(Bytes::new()),
    };
    // Boxed: it waits across the upstream call in every request's future.
    let recorded = ctx.recording().then(|| {
        let body = recorded_body(ctx, &decided.policy, &request, bytes_for_record.as_deref());
        Box::new(ctx.record_for(
            Some(&request),
            body.as_deref(),
            &decided.decision,
            &resolution,
        ))
    });
    // A write (or a protocol switch) is on disk before it leaves: if the process dies before
    // the response ends, the record still says it was sent. Reads keep the one record written
    // when they complete.
    if let Some(rec) = &recorded
        && (switch || mutating(&request.attributes.verb))
        && let Err(refusal) = Box::pin(record_forwarded(ctx, &request, rec)).await
    {
        return refusal;
    }
    let resp = match upstream(ctx, &inner, &request, Request::from_parts(parts, body)).await {
        Ok(resp) => resp,
        Err(refusal) => return refusal,
    };
    masked(ctx, resp, recorded, &request, decided, switch, limit).await
}

/// The request's headers as they leave, and its target without a pod log's `limitBytes`
/// (`Ok` with the limit, applied to the masked output).
async fn outbound<B>(
    ctx: &Ctx<'_>,
    parts: &mut Parts,
    request: &Classified,
    allowed: bool,
    switch: bool,
    log_limit: Option<(String, u64)>,
) -> Result<Option<u64>, Response<KubeleashBody<B>>> {
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
    match ctx.shared.credential.header() {
        Ok(Some(v)) => {
            parts.headers.insert(AUTHORIZATION, v);
        }
        Ok(None) => {}
        Err(e) => {
            return Err(upstream_failed(
                ctx,
                request,
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
    let Some((target, n)) = log_limit else {
        return Ok(None);
    };
    match target.parse::<http::Uri>() {
        Ok(uri) => {
            parts.uri = uri;
            Ok(Some(n))
        }
        Err(e) => {
            let d = deny(format!(
                "the log target could not be rebuilt without limitBytes: {e}"
            ));
            Err(ctx
                .refuse(Some(request), None, 400, "BadRequest", d, refused())
                .await)
        }
    }
}

/// The inner service's answer: awaited ready under its lock, called, and the lock let go
/// before the answer is awaited; a failure is answered as [`upstream_failed`].
async fn upstream<S, ReqB, ResB>(
    ctx: &Ctx<'_>,
    inner: &tokio::sync::Mutex<S>,
    request: &Classified,
    out: Request<ReqB>,
) -> Result<Response<ResB>, Response<KubeleashBody<ResB>>>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: std::fmt::Debug,
{
    let call = {
        let mut guard = inner.lock().await;
        match guard.ready().await {
            Ok(svc) => svc.call(out),
            Err(e) => {
                return Err(upstream_failed(
                    ctx,
                    request,
                    "kubeleash could not reach the API server",
                    format!("{e:?}"),
                )
                .await);
            }
        }
    };
    match call.await {
        Ok(r) => Ok(r),
        Err(e) => Err(upstream_failed(
            ctx,
            request,
            "kubeleash could not get an answer from the API server",
            format!("{e:?}"),
        )
        .await),
    }
}

/// The response as the caller gets it: masked as it streams (a pod log cut after masking) or
/// passed through after an allowed protocol switch, its headers allowlisted, its record
/// completed when it ends.
async fn masked<ResB>(
    ctx: &Ctx<'_>,
    resp: Response<ResB>,
    recorded: Option<Box<RecordBody>>,
    request: &Classified,
    decided: Decided,
    switch: bool,
    limit: Option<u64>,
) -> Response<KubeleashBody<ResB>>
where
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    let shared = ctx.shared;
    let Decided {
        policy,
        generation,
        decision,
        ..
    } = decided;
    let (mut rparts, rbody) = resp.into_parts();
    let status = rparts.status.as_u16();
    let completion = |stream: Stream| {
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
            return Response::from_parts(
                rparts,
                KubeleashBody::passthrough(rbody).completing(completion(Stream::Passthrough)),
            );
        }
        drop(rbody);
        let d = deny(format!(
            "the API server switched protocols for {} {}, which did not ask to; kubeleash \
             does not pass a connection it cannot mask",
            ctx.method, ctx.target
        ));
        return ctx
            .refuse(Some(request), None, 502, "InternalError", d, refused())
            .await;
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
    let masker = response_masker(&policy, request, ct.as_deref(), ce.as_deref());
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
                Stream::MaskedLimited
            } else {
                Stream::Masked
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
                .completing(completion(Stream::Refused))
        }
    };
    Response::from_parts(rparts, body)
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
    before.kind = RecordKind::Forwarded;
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
    policy: &Policy,
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
pub(crate) fn mask_text(masks: &Arc<kubeleash_core::mask::MaskSet>, text: &str) -> Option<String> {
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
pub(crate) fn masked_body(policy: &Policy, request: &Classified, body: &[u8]) -> String {
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
