//! Holding a request for approval, in the data path: its body read and shown as the API server
//! will read it; covered by a grant an approval left, or asked about (blocking: once for
//! identical requests, see `coalesce`; non-blocking: answered at once, asked in the background,
//! see `nonblocking`), counted against the hold limits (see `holds`); once approved, decided
//! again under a policy reloaded meanwhile, the approval (and any grant it leaves) recorded
//! before the request goes on.

use kubeleash_core::record::{Outcome, RecordKind};
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Request, Response};
use http_body::Body;
use kubeleash_core::kubectl;
use kubeleash_core::policy::grant::{Axes, Grant, Widening};
use kubeleash_core::policy::{Decision, Identity, Policy};
use kubeleash_core::request::Request as Classified;
use tower::Service;

use super::{
    Answer, Approval, ApprovalRequest, Approver, MAX_SHOWN_BODY, Query, RequestKey, new_id,
};
use crate::body::{BoxError, KubeleashBody};
use crate::bounded::BudgetShare;
use crate::coalesce::{Lead, Role};
use crate::holds::{Full, Hold};
use crate::layer::Shared;
use crate::nonblocking::{ApprovalMode, Found, Refused};
use crate::service::admit::{Admitted, RequestBody, undecodable};
use crate::service::decide::{DRY_RUN_TIMEOUT, Decided, Recheck, deny, recheck};
use crate::service::forward::masked_body;
use crate::service::respond::{Ctx, Resolution, recorded_body, refused};

/// Hold a request the policy sends for approval, enforce mode. `Ok` with the resolution to
/// forward it under (`decided` then holds the policy and decision in force); every other
/// outcome is the answer to give.
pub(crate) async fn for_approval<S, ReqB, ResB>(
    ctx: &Ctx<'_>,
    inner: &Arc<tokio::sync::Mutex<S>>,
    headers: &http::HeaderMap,
    admitted: &Admitted,
    body: &mut RequestBody<ReqB>,
    decided: &mut Decided,
) -> Result<Resolution, Response<KubeleashBody<ResB>>>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send,
    ReqB: Body<Data = Bytes> + From<Bytes> + Send + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let request = &admitted.request;
    // An approval covers the exact bytes that go out, so they are read first.
    body.read(ctx, request).await?;
    // A person approves only what they can read as the API server will: a body
    // kubeleash cannot decode strictly is refused before it is held.
    if let Some((code, reason, why)) = undecodable(request, admitted.connect, body.bytes()) {
        let d = deny(why);
        return Err(ctx
            .refuse(Some(request), None, code, reason, d, refused())
            .await);
    }
    let bytes = body.bytes();
    let key = RequestKey::new(
        &ctx.identity,
        &ctx.method,
        &ctx.target,
        headers,
        bytes.unwrap_or_default(),
    );
    let query = grant_query(ctx, headers, request, bytes);
    let (covered, lead) = covered_or_lead(ctx, request, &query, bytes, decided, key).await?;
    if let Some(covered) = covered {
        return Ok(Resolution {
            outcome: Outcome::Approved,
            id: Some(covered.id),
            by: Some(covered.by),
            reason: Some("covered by the grant this approval left".into()),
            coalesced: true,
            ..Resolution::default()
        });
    }
    let ((id, approval, shown), asked_under) = match approval_mode(ctx.shared) {
        Some((retry_after, approver)) => {
            hold_nonblocking(
                ctx,
                inner,
                request,
                headers,
                &decided.policy,
                decided.generation,
                body.bytes.as_ref(),
                &decided.decision,
                decided.dry.take(),
                key,
                approver,
                retry_after,
                &mut body.budget,
            )
            .await?
        }
        None => {
            let approved = hold(
                ctx,
                inner,
                request,
                headers,
                &decided.policy,
                body.bytes(),
                &decided.decision,
                decided.dry.take(),
                lead.as_ref(),
            )
            .await?;
            (approved, decided.generation)
        }
    };
    let bytes = body.bytes();
    if let Recheck::Denied(again) = recheck(ctx, request, bytes, decided, asked_under) {
        let d = Decision {
            reason: format!(
                "{} approved {id}, but the policy was reloaded while the request was held and now denies it: {}",
                approval.by, again.reason
            ),
            ..again
        };
        let r = Resolution {
            outcome: Outcome::Refused,
            id: Some(id),
            by: Some(approval.by),
            reason: Some("the reloaded policy denies it".into()),
            waited: Some(approval.waited),
            ..Resolution::default()
        };
        return Err(ctx
            .refuse(Some(request), shown.as_deref(), 403, "Forbidden", d, r)
            .await);
    }
    let (grant, widen_note) = widened_grant(&decided.policy, request, bytes, &approval.widening);
    let by = approval.by;
    let resolution = Resolution {
        outcome: Outcome::Approved,
        grant: grant.as_ref().map(|g| g.rule(&ctx.identity.user, &id, &by)),
        id: Some(id),
        by: Some(by),
        reason: widen_note,
        waited: Some(approval.waited),
        coalesced: false,
    };
    record_approval(
        ctx,
        request,
        shown.as_deref(),
        &decided.decision,
        &resolution,
    )
    .await?;
    if let Some(g) = grant {
        let query = grant_query(ctx, headers, request, bytes);
        let (id, by) = (
            resolution.id.as_deref().unwrap_or_default(),
            resolution.by.as_deref().unwrap_or_default(),
        );
        match &ctx.shared.grant_store {
            // Kept after the approval is recorded; a grant the store refuses is not kept, so
            // what it would have covered is held again (this request still goes: it was
            // approved itself).
            Some(store) => {
                let kept = super::kept::kept(&query, &g, &decided.policy.digest(), id, by);
                let _ = store.keep(kept).await;
            }
            None => ctx.shared.grants.add(&query, g, decided.generation, id, by),
        }
    }
    // Identical requests that waited look again: at the grant just left, or to be
    // asked themselves.
    drop(lead);
    Ok(resolution)
}

/// What a grant is matched against: the request as it reaches the API server.
fn grant_query<'a>(
    ctx: &'a Ctx<'_>,
    headers: &'a http::HeaderMap,
    request: &'a Classified,
    bytes: Option<&'a [u8]>,
) -> Query<'a> {
    Query {
        identity: &ctx.identity,
        method: &ctx.method,
        headers,
        request,
        body: bytes.unwrap_or_default(),
    }
}

/// A grant an approval left that covers the request, or else (blocking mode, with an
/// approver) the lead of the identical requests held at once. Blocking mode: an identical
/// request already waiting for a person is not asked about again; this one waits for that
/// answer (see `coalesce`).
async fn covered_or_lead<B>(
    ctx: &Ctx<'_>,
    request: &Classified,
    query: &Query<'_>,
    bytes: Option<&[u8]>,
    decided: &Decided,
    key: RequestKey,
) -> Result<(Option<super::Covered>, Option<Lead>), Response<KubeleashBody<B>>> {
    let shared = ctx.shared;
    let coalescing = shared.approval_mode == ApprovalMode::Blocking && shared.approver.is_some();
    loop {
        let covered = match &shared.grant_store {
            Some(store) => super::kept::covers(&**store, query, &decided.policy.digest()).await,
            None => shared.grants.covers(query, decided.generation),
        };
        if let Some(c) = covered {
            return Ok((Some(c), None));
        }
        if !coalescing {
            return Ok((None, None));
        }
        match shared.asking.lead_or_wait(key) {
            Role::Lead(l) => return Ok((None, Some(l))),
            Role::Wait(rx) => {
                if let Some(refusal) =
                    wait_for_identical(ctx, request, &decided.policy, bytes, &decided.decision, rx)
                        .await
                {
                    return Err(refusal);
                }
            }
        }
    }
}

/// Non-blocking mode's retry interval and approver; `None` for blocking mode (or no approver).
fn approval_mode(shared: &Shared) -> Option<(std::time::Duration, Arc<dyn Approver>)> {
    match (shared.approval_mode, &shared.approver) {
        (ApprovalMode::NonBlocking { retry_after }, Some(a)) => Some((retry_after, Arc::clone(a))),
        _ => None,
    }
}

/// What the approval leaves behind: nothing for an exact one; for a widened one a grant,
/// unless the floor or the request's shape says no (then the record says why, and this one
/// request still goes).
fn widened_grant(
    policy: &Policy,
    request: &Classified,
    bytes: Option<&[u8]>,
    widening: &Widening,
) -> (Option<Grant>, Option<String>) {
    if widening.is_exact() {
        (None, None)
    } else if let Some(never) = policy.never_widen(&request.attributes) {
        (
            None,
            Some(format!("approved exactly, not widened: {never}")),
        )
    } else {
        match Grant::new(request, bytes.unwrap_or_default(), widening) {
            Ok(g) => (Some(g), None),
            Err(e) => (None, Some(format!("approved exactly, not widened: {e}"))),
        }
    }
}

/// The approval is on disk before the request goes out; one that cannot be recorded is not
/// sent (503).
async fn record_approval<B>(
    ctx: &Ctx<'_>,
    request: &Classified,
    shown: Option<&str>,
    decision: &Decision,
    resolution: &Resolution,
) -> Result<(), Response<KubeleashBody<B>>> {
    if !ctx.recording() {
        return Ok(());
    }
    let mut rec = ctx.record_for(Some(request), shown, decision, resolution);
    rec.kind = RecordKind::Approval;
    let r = ctx.shared.recorder.record_durable(rec).await;
    ctx.recorded(&r);
    if r.is_err() {
        let d = deny("the approval could not be recorded, so the request was not sent".into());
        return Err(ctx
            .refuse(
                Some(request),
                shown,
                503,
                "ServiceUnavailable",
                d,
                refused(),
            )
            .await);
    }
    Ok(())
}

/// An approval: its id, the approval, and the body as recorded.
type Approved = (String, Approval, Option<String>);

/// A held request's body as the approver is shown it and as the record keeps it (only when
/// recording), both masked and whole (`prompt` refuses one too long to show).
fn held_bodies(
    ctx: &Ctx<'_>,
    policy: &Policy,
    request: &Classified,
    bytes: Option<&[u8]>,
) -> (Option<String>, Option<String>) {
    let masked = bytes
        .filter(|b| !b.is_empty())
        .map(|b| masked_body(policy, request, b));
    let kept = masked.clone().filter(|_| ctx.recording());
    (masked, kept)
}

/// Why a request could not be held.
pub(crate) enum NotHeld {
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
    widen: Axes,
) -> Result<ApprovalRequest, Response<KubeleashBody<B>>> {
    let shared = ctx.shared;
    // An approval covers exactly the bytes the approver saw: a body too long to show whole is
    // refused, never cut (a harmless page of padding ahead of a privileged pod spec).
    if let Some(len) = shown
        .as_ref()
        .map(String::len)
        .filter(|l| *l > MAX_SHOWN_BODY)
    {
        let d = deny(format!(
            "{}; approval was needed, but the (masked) body is {len} bytes, more than an approver \
             is shown whole ({MAX_SHOWN_BODY}), so it was not held or sent: send a smaller change \
             (one object, or a patch of only what changes), or ask for a rule that decides it \
             without a person",
            decision.reason
        ));
        return Err(ctx
            .refuse(Some(request), recorded, 403, "Forbidden", d, refused())
            .await);
    }
    if ctx.recording() {
        let held = Resolution {
            outcome: Outcome::Held,
            id: Some(id.to_string()),
            by: None,
            reason: None,
            ..Resolution::default()
        };
        let mut rec = ctx.record_for(Some(request), recorded, decision, &held);
        rec.kind = RecordKind::Held;
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
fn widen_axes(policy: &Policy, request: &Classified, body: &[u8]) -> Axes {
    let never = policy.never_widen(&request.attributes);
    kubeleash_core::policy::grant::axes(request, body, never)
}

/// What came of asking a person.
enum Asked {
    Approved(Approval),
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
    policy: &Policy,
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
            if super::same_user(a.by(), &ctx.identity.user) =>
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
                    outcome: Outcome::Refused,
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
                    outcome: Outcome::Refused,
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
                outcome: Outcome::Expired,
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
    policy: &Policy,
    bytes: Option<&[u8]>,
    decision: &Decision,
    dry: Option<(u16, serde_json::Value)>,
    lead: Option<&Lead>,
) -> Result<Approved, Response<KubeleashBody<B>>>
where
    S: Service<Request<ReqB>, Response = Response<B>>,
    ReqB: Body<Data = Bytes> + From<Bytes>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let shared = ctx.shared;
    // The approver is shown the whole body (at most MAX_SHOWN_BODY; `prompt` refuses longer).
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
    if let Some(on_hold) = &ctx.on_hold {
        on_hold.tell(&id);
    }
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
    policy: &Policy,
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
            outcome: Outcome::Held,
            reason: Some("waits for the answer to an identical request held before it".into()),
            coalesced: true,
            ..Resolution::default()
        };
        let recorded = recorded_body(ctx, policy, request, bytes);
        let mut rec = ctx.record_for(Some(request), recorded.as_deref(), decision, &r);
        rec.kind = RecordKind::Held;
        let written = shared.recorder.record(rec);
        ctx.recorded(&written);
    }
    let (decision, resolution) =
        match tokio::time::timeout(shared.approval_timeout, crate::coalesce::wait(rx)).await {
            Ok(None) => return None,
            Ok(Some(r)) => (
                r.decision,
                Resolution {
                    outcome: if r.expired {
                        Outcome::Expired
                    } else {
                        Outcome::Refused
                    },
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
                    outcome: Outcome::Expired,
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
    policy: &Policy,
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
        outcome: Outcome::Refused,
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
                outcome: Outcome::Refused,
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
    policy: Policy,
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
            // Non-blocking: the agent learnt the id from the answer it got at once.
            on_hold: None,
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
                        outcome: Outcome::Expired,
                        id: Some(id.clone()),
                        by: Some(by),
                        reason: Some(format!(
                            "approved, but the identical request was not sent again within {}s",
                            shared.approval_timeout.as_secs()
                        )),
                        ..Resolution::default()
                    };
                    let mut rec = ctx.record_for(Some(&request), kept.as_deref(), &decision, &r);
                    rec.kind = RecordKind::Expired;
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
