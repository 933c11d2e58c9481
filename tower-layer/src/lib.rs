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
//! What in-process isolation does not do: code in the same process can reach the credential's
//! memory or build its own client. For an agent you do not trust with the process, run the
//! kubeleash proxy and give the agent only a kubeconfig that points at it.

mod approval;
mod body;
mod credential;
mod headers;
mod layer;
mod record;
mod service;
mod status;

pub use approval::{Answer, ApprovalRequest, Approver};
pub use body::{BoxError, KubeleashBody};
pub use credential::{Credential, CredentialError};
pub use kubeleash_core::record::{RecordBody, RecordedDecision, RecordedRequest, RecordedResponse};
pub use layer::{KubeleashLayer, Mode, PolicyHandle};
pub use record::{
    Durable, Format, JsonlRecorder, NoRecorder, RecordError, Recorder, RecorderOptions, WhenFull,
    now,
};
pub use service::{Kubeleash, ResponseFuture};
