//! `Kubeleash<S>`: the service. In the data path, in order: admit (the recorder must be able to
//! record); refuse targets with a scheme or host and upgrades outside exec, attach,
//! port-forward and proxy; classify; read the body when a rule or an approval needs it (bounded
//! at the API server's 3 MiB, then handed on unchanged); take the policy snapshot once the body
//! is in; decide; deny, hold for approval (only a body that decodes strictly), or forward with
//! only allowlisted headers and the layer's credential, a write recorded before it leaves; mask
//! the response as it streams, its headers allowlisted and its trailers dropped, a pod log's
//! `limitBytes` applied after masking. Only the body of the 101 answer to an allowed protocol
//! switch is passed through unmasked.
//!
//! One stage a module, each handing the request on or answering it: `admit` (identity, the
//! recorder's admission, the target and header checks, the body read bounded), `decide` (the
//! policy in force once the body is in, a write's dry run, the recheck after a hold), the hold
//! for approval (`crate::approval::hold`), `forward` (headers, credential, the record before a
//! write leaves, the masked response) and `respond` (refusals as Kubernetes `Status`, after
//! their records).

pub(crate) mod admit;
pub(crate) mod decide;
pub(crate) mod forward;
pub(crate) mod respond;
pub(crate) mod review;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower::Service;

use crate::approval::hold;
use crate::body::{BoxError, KubeleashBody};
use crate::layer::Shared;
use admit::RequestBody;
use decide::Verdict;

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

/// A stage's outcome: what it hands on, or the answer it gave (`Err`: a refusal, recorded).
macro_rules! next {
    ($stage:expr) => {
        match $stage {
            Ok(next) => next,
            Err(answer) => return Ok(answer),
        }
    };
}

/// The data path, stage after stage.
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
    let (ctx, mut admitted) = next!(admit::admit(&shared, &parts).await);
    // The body is read only when a rule, or an approval, needs it.
    let mut body = RequestBody::new(body);
    // The agent's own access reviews are answered from the policy (boxed: off the hot path).
    if review::answers(&ctx, &admitted) {
        return Ok(Box::pin(review::answer(&ctx, &inner, &admitted, &mut body)).await);
    }
    let (mut decided, object_lock) =
        next!(decide::decide(&ctx, &inner, &parts.headers, &mut admitted, &mut body).await);
    let resolution = match decide::verdict(shared.mode, decided.decision.effect) {
        Verdict::Forward(resolution) => resolution,
        Verdict::Deny => {
            return Ok(respond::denied(&ctx, &admitted.request, body.bytes(), decided).await);
        }
        // Boxed: the approval path's state stays out of every request's future.
        Verdict::Hold => next!(
            Box::pin(hold::for_approval(
                &ctx,
                &inner,
                &parts.headers,
                &admitted,
                &mut body,
                &mut decided,
            ))
            .await
        ),
    };
    let answered =
        forward::forward(&ctx, inner, parts, &mut body, admitted, decided, resolution).await;
    // The write has its answer: the object may change again.
    drop(object_lock);
    Ok(answered)
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
