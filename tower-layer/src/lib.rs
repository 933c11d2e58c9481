//! A tower layer that holds a Kubernetes client to a kubeleash policy, in-process.
//!
//! Every request is classified as the API server would classify it and decided against the
//! policy: denied with a Kubernetes `Status` (403, the rule and the reason in the message),
//! held until an [`Approver`] answers, or forwarded with the client's own credentials removed
//! and the layer's set. Responses are masked as they stream. The decision rides in the
//! response extensions.
//!
//! With kube-rs, wrap the client's service, or add the layer with
//! `kube::client::ClientBuilder::with_layer` to keep kube's own stack (TLS, auth from the
//! kubeconfig) inside it; see `examples/kube_agent.rs`.
//!
//! What the layer promises, whatever the caller sends (each stated by a test in
//! `tests/hardening.rs`):
//!
//! - **Masked or not sent.** No response byte reaches the caller without going through the
//!   masker, except the bytes after a `101 Switching Protocols` answer to an exec, attach,
//!   port-forward or proxy request that the policy allowed (or a person approved). A request
//!   that asks to upgrade anywhere else (any `Upgrade` header, or `Connection: upgrade`) is
//!   refused with 400 before it leaves, and a 101 the server sends unasked is refused.
//!   Response headers are allowlisted (`Content-Type`, `Date`, `Audit-Id`, `Cache-Control`,
//!   `X-Kubernetes-PF-FlowSchema-UID`/`-PriorityLevel-UID`, `Retry-After`, `Warning`; and the
//!   handshake headers of an allowed 101), each checked against the shape it must have;
//!   `Warning` texts go through the detectors, and one that names a credential in prose is
//!   withheld. Everything else (`Set-Cookie`, `Location`, any `X-` header) and every trailer
//!   is dropped. A pod log's `limitBytes` is taken out of the request and applied to the
//!   masked output, so the agent cannot cut a credential short of what the detectors know.
//! - **Only a path leaves.** A target with a scheme or host is refused (400): the caller never
//!   chooses where the credential goes. Put the layer outside anything that makes targets
//!   absolute (kube's base-URI layer). The caller's `Host`, `Content-Length`,
//!   `Transfer-Encoding`, `Connection` and the headers it names, `Keep-Alive`,
//!   `Proxy-Connection`, `TE`, `Trailer` and `Upgrade` are dropped; a body the layer read goes
//!   out with its own length, so the bytes decided and recorded are the bytes sent. Request
//!   headers are allowlisted too: `Accept` (rewritten to JSON), `Content-Type`,
//!   `Kubectl-Command`, `Kubectl-Session`, `Impersonate-*` when allowed, and for an allowed
//!   protocol switch `Upgrade`, `Sec-WebSocket-Key`/`-Version`/`-Protocol` (bearer tokens
//!   removed)/`-Extensions` and `X-Stream-Protocol-Version`. `User-Agent` becomes
//!   `kubeleash/<version> agent/<user> (<the caller's>)`; everything else (`Audit-ID`,
//!   `X-Forwarded-For`, `Forwarded`, `X-Real-IP`, `Cookie`, ...) is dropped, so the caller
//!   cannot write the API server's audit trail.
//! - **An approver sees what is sent.** A request is held only if its body decodes strictly as
//!   the API server will read it (JSON without duplicate keys at any depth, or Kubernetes
//!   protobuf, decoded as the API server decodes it): YAML, CBOR and other types are refused
//!   with 415, duplicate keys, malformed JSON and protobuf kubeleash cannot place with 400, before
//!   an approver is asked. Exec, attach, port-forward and proxy bodies (which go to a pod or a
//!   backend) are shown, and recorded, by length, SHA-256 and content type.
//! - **An approval covers one request.** Each held request gets a random 128-bit id; an answer
//!   resolves it alone; a window ([`Answer::Approve`]) lets through only identical requests
//!   (method, whole target, content type, impersonation headers, body bytes) for at most
//!   [`MAX_WINDOW`]. An approver may widen an approval ([`Answer::Widen`]) only along the axes
//!   the prompt offers ([`ApprovalRequest::widen`]: a name glob, body fields within ranges,
//!   a number of uses, a time), never for what the policy's floor (`approvals.neverWiden`)
//!   names; the grant is recorded as a policy fragment before anything it covers is sent, and
//!   at most [`MAX_GRANTS`] are kept. An approved impersonating request goes out with the impersonation the
//!   approver was shown. At most 8 requests per identity and 64 in all wait at once
//!   ([`KubeleashLayer::max_held`]); more are refused with 429. In non-blocking mode
//!   ([`ApprovalMode::NonBlocking`]) the held request is answered at once with 403 and its
//!   approval id; the approval, once given, lets the identical request through once.
//! - **Recorded or not sent.** Once a record cannot be written, every request is refused with
//!   503 until a record is written again; recording never blocks the async runtime. A write
//!   (create, update, patch, delete, deletecollection) or a protocol switch is recorded
//!   durably (kind `forwarded`) before it is sent, and again when its response ends, so a
//!   process that dies in between still leaves a record of what it sent.
//! - **Decided under the policy in force once the body is in**: the policy snapshot is taken
//!   after a streamed body is read.
//! - **Reloads reach what is in flight** (see [`PolicyHandle`]).
//! - **The agent can ask.** Its own `SelfSubjectAccessReview` and `SelfSubjectRulesReview`
//!   (`kubectl auth can-i`, `--list`) are answered from the policy, narrowed by what the
//!   credential may do ([`kubeleash_core::access_review`]); a denial's `Status` names the rule,
//!   whether a person could approve it and the nearest request the policy allows, in words and
//!   as `details.causes` ([`kubeleash_core::policy::Denial`]).
//! - **Upstream errors stay with the operator.** The caller gets a fixed `Status` with a
//!   correlation id; the record keeps the error text, masked.
//!
//! What in-process isolation does not do: code in the same process can reach the credential's
//! memory or build its own client. For an agent you do not trust with the process, run the
//! kubeleash proxy and give the agent only a kubeconfig that points at it.
//!
//! # Untrusted input and limits
//!
//! The caller (the agent) writes every request and the upstream writes every response; both are
//! untrusted. Each bound below is enforced as the bytes arrive, and what is past it is refused
//! (with a Kubernetes `Status`), never passed on unjudged:
//!
//! | What | Bound | Set with |
//! |---|---|---|
//! | One request body | 3 MiB, the API server's own ([`kubeleash_core::body::MAX_BODY_BYTES`]); 413 | fixed |
//! | Request bodies in memory at once, held ones included | 64 MiB; 429 | [`KubeleashLayer::max_buffered`] |
//! | Requests waiting for approval | 8 per identity, 64 in all; 429 | [`KubeleashLayer::max_held`] |
//! | Time a request waits for an answer | 300 s, then denied | [`KubeleashLayer::approval_timeout`] |
//! | An approval window | [`MAX_WINDOW`] (24 h) | fixed |
//! | Body a person can be asked to approve (shown whole) | [`MAX_SHOWN_BODY`] (64 KiB); a longer one is refused, not held | fixed |
//! | Grants kept | [`MAX_GRANTS`] (256) | fixed |
//! | A dry run's or live object's answer read for an approver | 3 MiB | fixed |
//! | Response nesting and the largest value held to be judged | 256 levels, 8 MiB; the response ends there | the policy's `masks.limits` |
//! | Approval callbacks' clock skew | [`signature::CALLBACK_MAX_SKEW_SECS`] (300 s) | fixed |
//!
//! The limits on a request's target and body encoding are the core's (see
//! [`kubeleash_core`]'s "Untrusted input and limits").

mod approval;
mod body;
mod bounded;
mod coalesce;
mod credential;
mod dry_run;
mod headers;
mod holds;
mod layer;
mod log_limit;
mod nonblocking;
mod object_lock;
mod record;
mod scrub;
mod service;
pub mod signature;
mod status;

pub use approval::kept::{GrantStore, KeptGrant, identity_digest};
pub use approval::{
    Answer, ApprovalRequest, Approver, DryRun, MAX_GRANTS, MAX_SHOWN_BODY, MAX_WINDOW, OnHold,
    same_user,
};
pub use body::{BoxError, KubeleashBody};
pub use bounded::{BodyBudget, BoundedReadError, BudgetShare};
pub use credential::{Credential, CredentialError};
pub use kubeleash_core::policy::grant::{Axes, FieldRange, GrantForm, Widening};
pub use kubeleash_core::record::{RecordBody, RecordedDecision, RecordedRequest, RecordedResponse};
pub use layer::{KubeleashLayer, Mode, PolicyHandle};
pub use nonblocking::ApprovalMode;
pub use record::{
    Durable, Format, JsonlRecorder, NoRecorder, RecordError, Recorder, RecorderOptions, WhenFull,
    now,
};
pub use service::{Kubeleash, ResponseFuture};
