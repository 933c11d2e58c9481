//! Deciding a request against the policy in force once its body is in: the rule's effect, judged
//! again on the API server's dry run when a conditioned rule looks at what a write does; what
//! the effect does in the layer's mode; and the recheck of an approved request under a policy
//! reloaded while it was held.

use kubeleash_core::record::Outcome;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use kubeleash_core::policy::{Decision, Effect, Policy};
use kubeleash_core::request::Request as Classified;
use tower::Service;

use super::admit::{Admitted, RequestBody};
use super::respond::{Ctx, Resolution, refused};
use crate::body::{BoxError, KubeleashBody};
use crate::layer::Mode;

/// How long a held write's dry run may take before the person is asked without it.
pub(crate) const DRY_RUN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) fn deny(reason: String) -> Decision {
    Decision {
        effect: Effect::Deny,
        rule: None,
        reason,
    }
}

/// A request decided: under which policy, and what it said.
pub(crate) struct Decided {
    pub(crate) policy: Policy,
    /// The generation of `policy`, which streams and grants are tied to.
    pub(crate) generation: u64,
    pub(crate) decision: Decision,
    /// The API server's dry run of a write a conditioned rule judged by its result.
    pub(crate) dry: Option<(u16, serde_json::Value)>,
}

/// Decide a request: its body read when a rule or the record needs it, under the policy in
/// force once it is in. With the decision, the lock on the object a write changes, held when
/// the dry run's result allows what the text alone would not (see `object_lock`).
pub(crate) async fn decide<S, ReqB, ResB>(
    ctx: &Ctx<'_>,
    inner: &Arc<tokio::sync::Mutex<S>>,
    headers: &http::HeaderMap,
    admitted: &mut Admitted,
    body: &mut RequestBody<ReqB>,
) -> Result<(Decided, Option<crate::object_lock::Held>), Response<KubeleashBody<ResB>>>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: Body<Data = Bytes> + From<Bytes>,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    let (policy, generation) = in_force(ctx, admitted, body).await?;
    let request = &mut admitted.request;
    // A DELETE's body options replace its query's, as the API server reads them: the record,
    // the approval prompt and the kubectl line follow the body (`decide` refuses the same
    // requests this does).
    if let Err(e) = request.with_body_facts(body.bytes()) {
        let d = deny(format!("request body refused: {e}"));
        return Err(ctx
            .refuse(Some(request), None, 400, "BadRequest", d, refused())
            .await);
    }
    if let Some(reason) = out_of_reach(ctx, request) {
        // Before any rule, and in every mode: observe mode forwards what the policy denies,
        // but a request that reached kubeleash's own state would decide for agents.
        return Err(ctx
            .refuse(
                Some(request),
                None,
                403,
                "Forbidden",
                deny(reason),
                refused(),
            )
            .await);
    }
    let decision = policy.decide(
        &ctx.identity,
        request,
        body.bytes().filter(|b| !b.is_empty()),
    );
    let mut decided = Decided {
        policy,
        generation,
        decision,
        dry: None,
    };
    let object_lock = on_result(ctx, inner, headers, request, body.bytes(), &mut decided).await;
    Ok((decided, object_lock))
}

/// Why a request would reach kubeleash's own state: its objects and their definitions
/// ([`kubeleash_core::policy::out_of_reach`]), or the namespace it keeps them in
/// ([`KubeleashLayer::reserve_namespace`](crate::KubeleashLayer::reserve_namespace)).
fn out_of_reach(ctx: &Ctx<'_>, request: &Classified) -> Option<String> {
    let a = &request.attributes;
    if let Some(why) = kubeleash_core::policy::out_of_reach(a) {
        return Some(why.to_string());
    }
    let ns = ctx.shared.reserved_namespace.as_deref()?;
    (a.resource_request && a.namespace == ns).then(|| {
        format!(
            "namespace {ns} is where kubeleash keeps its own state (held approvals, grants, its \
             policy): no policy lets an agent's request reach it"
        )
    })
}

/// The policy in force once the body is in, and its generation; the body is read first when a
/// rule of it, or the recorder, needs it.
async fn in_force<ReqB, B>(
    ctx: &Ctx<'_>,
    admitted: &Admitted,
    body: &mut RequestBody<ReqB>,
) -> Result<(Policy, u64), Response<KubeleashBody<B>>>
where
    ReqB: Body<Data = Bytes>,
    ReqB::Error: Into<BoxError>,
{
    // A recorder records every write's body (masked), so it reads those too.
    let writes =
        matches!(ctx.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE") && !admitted.asks_switch;
    // The policy is the one in force once the body is in: a slow body is not decided under a
    // policy revoked while it streamed (the snapshot is taken again after reading it).
    loop {
        let (policy, generation) = ctx.shared.policy.current();
        if (policy.needs_body(&ctx.identity, &admitted.request) || ctx.recording() && writes)
            && body.unread.is_some()
        {
            body.read(ctx, &admitted.request).await?;
            continue;
        }
        return Ok((policy, generation));
    }
}

/// An update or patch that a conditioned rule looks at is judged by what it does too: the
/// API server's dry run of it gives the object it would store (one round trip more, for
/// these writes only). Not when no rule matched at all: nothing on the result could allow it.
/// The object's lock comes back held when the result allows what the text alone would not.
async fn on_result<S, ReqB, ResB>(
    ctx: &Ctx<'_>,
    inner: &Arc<tokio::sync::Mutex<S>>,
    headers: &http::HeaderMap,
    request: &Classified,
    bytes: Option<&[u8]>,
    decided: &mut Decided,
) -> Option<crate::object_lock::Held>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: Body<Data = Bytes> + From<Bytes>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    let shared = ctx.shared;
    let policy = &decided.policy;
    if !policy.judges_on_result(&ctx.identity, request)
        || (decided.decision.effect == Effect::Deny && decided.decision.rule.is_none())
    {
        return None;
    }
    let b = bytes?;
    // Held from before the dry run until the write is answered when the result allows what
    // the text alone would not (see `object_lock`).
    let lock = shared.object_locks.lock(&request.attributes).await;
    let held = crate::dry_run::Held {
        request,
        method: &ctx.method,
        target: &ctx.target,
        headers,
        user: &ctx.identity.user,
        body: b,
    };
    decided.dry = tokio::time::timeout(
        DRY_RUN_TIMEOUT,
        crate::dry_run::result(inner, &shared.credential, &held),
    )
    .await
    .ok()
    .flatten();
    let Some((200..=299, result)) = &decided.dry else {
        return None;
    };
    let on_result = policy.decide_on_result(
        &ctx.identity,
        request,
        Some(b).filter(|b| !b.is_empty()),
        result,
    );
    let loosens = on_result.effect.strictness() < decided.decision.effect.strictness();
    decided.decision = on_result;
    (loosens && decided.decision.effect == Effect::Allow).then_some(lock)
}

/// What a decision does with a request in the layer's mode.
pub(crate) enum Verdict {
    /// Forward it; the record says how it was resolved (`forwarded`, or `audited`).
    Forward(Resolution),
    /// Refuse it (403).
    Deny,
    /// Hold it for a person's approval.
    Hold,
}

/// What `effect` does in `mode`: audit mode forwards everything, saying what it would not.
pub(crate) fn verdict(mode: Mode, effect: Effect) -> Verdict {
    let forwarded = Resolution {
        outcome: Outcome::Forwarded,
        id: None,
        by: None,
        reason: None,
        ..Resolution::default()
    };
    match (mode, effect) {
        (Mode::Audit, Effect::Allow) | (Mode::Enforce, Effect::Allow) => {
            Verdict::Forward(forwarded)
        }
        (Mode::Audit, _) => Verdict::Forward(Resolution {
            outcome: Outcome::Audited,
            ..forwarded
        }),
        (Mode::Enforce, Effect::Deny) => Verdict::Deny,
        (Mode::Enforce, Effect::Approve) => Verdict::Hold,
    }
}

/// Whether a hold answered with approval may go on under the policy in force now.
pub(crate) enum Recheck {
    Go,
    Denied(Decision),
}

/// The person approved under the policy of the moment they were asked (`asked_under`); what
/// goes out must still pass the policy in force now. Under a policy reloaded since, the request
/// is decided again: `decided` takes the policy in force, and the new decision unless it denies.
pub(crate) fn recheck(
    ctx: &Ctx<'_>,
    request: &Classified,
    bytes: Option<&[u8]>,
    decided: &mut Decided,
    asked_under: u64,
) -> Recheck {
    let (now_policy, now_generation) = ctx.shared.policy.current();
    if now_generation == asked_under {
        return Recheck::Go;
    }
    let again = now_policy.decide(&ctx.identity, request, bytes.filter(|b| !b.is_empty()));
    let recheck = if again.effect == Effect::Deny {
        Recheck::Denied(again)
    } else {
        decided.decision = again;
        Recheck::Go
    };
    decided.policy = now_policy;
    decided.generation = now_generation;
    recheck
}
