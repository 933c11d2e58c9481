//! The recorder hook: one event per request. Recording proper (hash-chained JSON Lines, audit
//! events) is the recording work's; until a recorder is set, nothing is written.

use kubeleash_core::policy::{Decision, Identity};
use kubeleash_core::request::Attributes;

/// How a held request was resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Approval {
    /// A person approved it.
    Approved {
        /// The approval id.
        id: String,
        /// Who.
        by: String,
    },
    /// A time-windowed grant from an earlier approval covered it.
    Granted,
    /// A person denied it.
    Denied {
        /// The approval id.
        id: String,
        /// Who.
        by: String,
        /// Why.
        reason: String,
    },
    /// Nobody answered in time.
    TimedOut {
        /// The approval id.
        id: String,
    },
}

/// What happened to one request.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Event {
    /// Who sent it.
    pub identity: Identity,
    /// HTTP method.
    pub method: String,
    /// Request target as sent.
    pub target: String,
    /// Attributes, when the target was canonical.
    pub attributes: Option<Attributes>,
    /// The policy's decision.
    pub decision: Decision,
    /// What the layer did: `forwarded`, `refused`, or `audited` (audit mode forwards a refusal).
    pub outcome: &'static str,
    /// How a held request was resolved.
    pub approval: Option<Approval>,
    /// The response status, when a response was produced.
    pub status: Option<u16>,
}

/// Receives one event per request.
pub trait Recorder: Send + Sync {
    /// Record one request. Called on the request path: keep it quick (queue, don't write).
    fn record(&self, event: &Event);

    /// Whether this recorder records anything; when not, no event is built.
    fn enabled(&self) -> bool {
        true
    }
}

/// Records nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRecorder;

impl Recorder for NoRecorder {
    fn record(&self, _event: &Event) {}

    fn enabled(&self) -> bool {
        false
    }
}
