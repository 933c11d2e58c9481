//! Admitting a request: who sent it (or 401), whether the recorder can record it (or 503), a
//! target that is only a path, classified, asking to switch protocols only where the API server
//! switches, a pod log's `limitBytes` taken out; and its body, read bounded when something
//! needs it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::Response;
use http::request::Parts;
use http_body::Body;
use kubeleash_core::request::{self as classify, Request as Classified};

use super::decide::deny;
use super::forward::mask_text;
use super::respond::{Ctx, refusal, refused};
use crate::body::{BoxError, KubeleashBody};
use crate::bounded::{BoundedReadError, BudgetShare};
use crate::headers::{asks_upgrade, is_connect};
use crate::layer::{IdentitySource, Shared};
use crate::record::RecordError;

/// A request let in: classified, and what its checks found out about it.
pub(crate) struct Admitted {
    pub(crate) request: Classified,
    /// It asks to switch protocols (any sign of an upgrade in its headers).
    pub(crate) asks_switch: bool,
    /// It is an exec, attach, port-forward or proxy request.
    pub(crate) connect: bool,
    /// A pod log's target without its `limitBytes`, and the limit, applied after masking.
    pub(crate) log_limit: Option<(String, u64)>,
}

/// Let a request in, or answer it: its context (identity, target, the agent's reason), the
/// recorder's admission, then the checks on its target and headers.
pub(crate) async fn admit<'a, B>(
    shared: &'a Arc<Shared>,
    parts: &Parts,
) -> Result<(Ctx<'a>, Admitted), Response<KubeleashBody<B>>> {
    let ctx = match context(shared, parts) {
        Ok(ctx) => ctx,
        Err(why) => {
            return Err(refusal(
                401,
                "Unauthorized",
                &format!("kubeleash: the request carries no identity kubeleash can verify: {why}"),
                None,
            ));
        }
    };
    recorder_admits(&ctx).await?;
    let admitted = check(&ctx, parts).await?;
    Ok((ctx, admitted))
}

/// A target with a scheme or host (absolute-form, authority-form) would choose where the
/// operator's credential goes: it is refused, and recorded as sent.
fn names_host(uri: &http::Uri) -> bool {
    uri.scheme().is_some() || uri.authority().is_some()
}

/// Who sent the request, and what; `Err` says why the request carries no identity the layer
/// can verify (it is refused with 401, and not recorded).
fn context<'a>(shared: &'a Arc<Shared>, parts: &Parts) -> Result<Ctx<'a>, String> {
    let method = parts.method.as_str().to_string();
    let target = if names_host(&parts.uri) {
        parts.uri.to_string()
    } else {
        parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string()
    };
    let identity = match &shared.identity {
        IdentitySource::Fixed(id) => id.clone(),
        IdentitySource::Extract(f) => f(parts)?,
    };
    Ok(Ctx {
        shared,
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
        on_hold: parts.extensions.get::<crate::approval::OnHold>().cloned(),
    })
}

/// Nothing goes out unrecorded: after a failed write every request is refused until a record
/// (this refusal's) is written again; a full recording queue refuses (503) too.
async fn recorder_admits<B>(ctx: &Ctx<'_>) -> Result<(), Response<KubeleashBody<B>>> {
    let shared = ctx.shared;
    if shared.record_failed.load(Ordering::Acquire) {
        let d = deny(
            "kubeleash cannot record requests right now, so it forwards none; \
             the operator must make the record writable again (disk space, permissions)"
                .into(),
        );
        return Err(ctx
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
        return Err(refusal(503, "ServiceUnavailable", message, None));
    }
    Ok(())
}

/// The checks on a request's target and headers (400, recorded): only a path, a target the
/// classifier reads, an upgrade only where the API server switches, a pod log's limit that can
/// be taken out.
async fn check<B>(ctx: &Ctx<'_>, parts: &Parts) -> Result<Admitted, Response<KubeleashBody<B>>> {
    if names_host(&parts.uri) {
        let d = deny(format!(
            "the request target `{}` names a scheme or host; kubeleash forwards only a path \
             (and query) to the API server it was configured with",
            ctx.target
        ));
        return Err(ctx
            .refuse(None, None, 400, "BadRequest", d, refused())
            .await);
    }
    let request = match classify::classify(&ctx.method, &ctx.target, &parts.headers) {
        Ok(r) => r,
        Err(e) => {
            let d = deny(e.to_string());
            return Err(ctx
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
        return Err(ctx
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
                return Err(ctx
                    .refuse(Some(&request), None, 400, "BadRequest", d, refused())
                    .await);
            }
        }
    } else {
        None
    };
    Ok(Admitted {
        request,
        asks_switch,
        connect,
        log_limit,
    })
}

/// A request's body: read only when a rule, an approval or the record needs it.
pub(crate) struct RequestBody<ReqB> {
    /// The bytes, once read (bounded): decided, recorded and sent as they are.
    pub(crate) bytes: Option<Bytes>,
    /// The body as it came, until it is read.
    pub(crate) unread: Option<ReqB>,
    /// The body's share of the buffer budget, given back when this call answers.
    pub(crate) budget: BudgetShare,
}

impl<ReqB> RequestBody<ReqB>
where
    ReqB: Body<Data = Bytes>,
    ReqB::Error: Into<BoxError>,
{
    pub(crate) fn new(body: ReqB) -> Self {
        RequestBody {
            bytes: None,
            unread: Some(body),
            budget: BudgetShare::default(),
        }
    }

    /// The bytes read, if the body was read.
    pub(crate) fn bytes(&self) -> Option<&[u8]> {
        self.bytes.as_deref()
    }

    /// Read the body, unless it was read already; a refusal is recorded (see [`read_body`]).
    pub(crate) async fn read<B>(
        &mut self,
        ctx: &Ctx<'_>,
        request: &Classified,
    ) -> Result<(), Response<KubeleashBody<B>>> {
        if let Some(b) = self.unread.take() {
            self.bytes = Some(read_body(ctx, request, b, ctx.shared, &mut self.budget).await?);
        }
        Ok(())
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

/// Why a body cannot be shown to an approver as the API server will read it: `(status, reason,
/// message)`. Bodies of exec, attach, port-forward and proxy requests go to a pod or a
/// backend, not to the API server's decoder: they are shown by length and digest instead.
pub(crate) fn undecodable(
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
