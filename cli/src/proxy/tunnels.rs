//! Upgraded connections (exec, attach, port-forward, proxy), kept with what the policy decided
//! so a reload can decide them again.
//!
//! After a `101 Switching Protocols` the proxy only copies bytes both ways: nothing in the
//! stream is decided again by the layer. A tunnel is a standing grant, so a reload must reach
//! it like it reaches held requests and watches: every open tunnel's request is decided again
//! under the new policy, and a tunnel the new policy no longer lets through is cut (both
//! connections closed). The same rule as the layer's for a switch applies, audit mode or not:
//! a tunnel stays open only if the policy allows it, or asks for an approval and a person
//! approved it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::HeaderMap;
use kubeleash_core::policy::{Decision, Effect, Identity, Policy};
use tokio::sync::watch;

/// The request that opened a tunnel, as the layer decided it.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// Who asked.
    pub identity: Identity,
    /// The method, as sent.
    pub method: String,
    /// The target (path and query, the proxy's token taken off), as the layer saw it.
    pub target: String,
    /// The headers, as the layer saw them (they carry the upgrade the classification reads).
    pub headers: HeaderMap,
    /// The request body (empty for most).
    pub body: Bytes,
    /// Whether a person approved it (the decision was `approve` and it went out): a reloaded
    /// policy that still asks for approval keeps it open, as it would let an approval made
    /// while the request was held through.
    pub approved: bool,
}

impl Admitted {
    /// Why `policy` no longer lets this tunnel through, or `None` if it still does.
    pub fn refused_by(&self, policy: &Policy) -> Option<Decision> {
        let body = Some(&self.body[..]).filter(|b| !b.is_empty());
        let e = policy.evaluate(
            &self.identity,
            &self.method,
            &self.target,
            &self.headers,
            body,
        );
        let keep = match e.decision.effect {
            Effect::Allow => true,
            Effect::Approve => self.approved,
            Effect::Deny => false,
        };
        (!keep).then_some(e.decision)
    }
}

struct Open {
    admitted: Admitted,
    cut: watch::Sender<bool>,
}

/// The open tunnels of one proxy.
#[derive(Default)]
pub struct Tunnels {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Open>>,
}

/// One registered tunnel: dropping it takes the tunnel off the list.
pub struct Ticket {
    tunnels: Arc<Tunnels>,
    id: u64,
    /// Becomes `true` when the tunnel must be cut.
    pub cut: watch::Receiver<bool>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.tunnels.lock().remove(&self.id);
    }
}

impl Tunnels {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Open>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a tunnel about to open, then decide it under `current` (the policy in force
    /// after registering): a reload that came between the layer's decision and now is not
    /// missed, since [`Tunnels::reloaded`] runs after the policy is replaced and sees every
    /// tunnel registered before it looks. `Err` carries the refusal of a tunnel that must not
    /// open.
    pub fn register(
        self: &Arc<Self>,
        admitted: Admitted,
        current: impl FnOnce() -> Policy,
    ) -> Result<Ticket, Decision> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(false);
        let refused = {
            self.lock().insert(
                id,
                Open {
                    admitted: admitted.clone(),
                    cut: tx,
                },
            );
            admitted.refused_by(&current())
        };
        let ticket = Ticket {
            tunnels: Arc::clone(self),
            id,
            cut: rx,
        };
        match refused {
            Some(d) => Err(d),
            None => Ok(ticket),
        }
    }

    /// Decide every open tunnel again under `policy` and cut those it no longer lets through;
    /// returns what was cut (method, target, user, and the new decision's reason).
    pub fn reloaded(&self, policy: &Policy) -> Vec<String> {
        let mut cut = Vec::new();
        for open in self.lock().values() {
            if let Some(d) = open.admitted.refused_by(policy) {
                let _ = open.cut.send(true);
                let a = &open.admitted;
                cut.push(format!(
                    "{} {} by {}: {}",
                    a.method,
                    quote(&a.target),
                    quote(&a.identity.user),
                    d.reason
                ));
            }
        }
        cut
    }

    /// How many tunnels are open.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

/// A string from the request as it can be printed: JSON-quoted, so control characters are
/// escaped.
fn quote(s: &str) -> String {
    serde_json::Value::from(s.chars().take(300).collect::<String>()).to_string()
}

#[cfg(test)]
mod tests;
