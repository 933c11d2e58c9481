//! Non-blocking approvals, for agents whose HTTP clients give up on a request that waits: a held
//! request is answered at once (403, with the approval's id and `Retry-After`) while the
//! approver is asked in the background; the agent sends the identical request again, and it
//! goes through once a person has approved it.
//!
//! An approval here covers what one in blocking mode covers (see `approval`): the
//! [`RequestKey`] of the request shown, one forwarding of it (a window extends it, as in
//! blocking mode). What waits is kept per key: the question being asked, an approval not yet
//! used, or a refusal, each under its approval id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kubeleash_core::policy::Decision;
use serde_json::json;

use crate::approval::{Approval, RequestKey};
use crate::holds::Hold;

/// How a request the policy holds for approval waits for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApprovalMode {
    /// The request stays open until the approver answers or the approval timeout passes (the
    /// default).
    #[default]
    Blocking,
    /// The request is answered at once with `403 Forbidden`, a `Status` whose message and
    /// `details` (`uid`, `causes`) carry the approval id, the headers `X-Kubeleash-Approval-Id`
    /// and `Retry-After: retry_after`; the approver is asked in the background (the same
    /// prompt, dry run included). The identical request sent again (same identity, method,
    /// target with its query, content type, impersonation and body bytes) gets the same answer
    /// while nobody has answered; once approved it is forwarded, once (an approval's window
    /// extends it as in blocking mode), and an approval unused within the approval timeout
    /// expires; once denied, it gets a 403 with the approver's reason for the approval timeout.
    /// The hold limits count a request from the moment it is held until its approval is used
    /// or expires, or it is denied.
    NonBlocking {
        /// What `Retry-After` tells the agent (whole seconds, at least 1).
        retry_after: Duration,
    },
}

/// The header that names a held request's approval.
pub(crate) const APPROVAL_ID_HEADER: &str = "x-kubeleash-approval-id";

/// How many refusals are remembered at once, per hold the limits allow in all: past it the
/// oldest is forgotten (the identical request is then held again).
const REFUSALS_PER_HOLD: usize = 4;

/// What is known of each held request, by key.
#[derive(Debug, Default, Clone)]
pub(crate) struct Waiting {
    inner: Arc<Mutex<HashMap<RequestKey, Entry>>>,
}

#[derive(Debug)]
struct Entry {
    id: String,
    /// The policy generation the approver was asked under.
    generation: u64,
    state: State,
    /// Counted against the hold limits while asked and while an approval waits to be used.
    counted: Option<Hold>,
    /// When an answer stops counting (set once there is one).
    until: Option<Instant>,
}

#[derive(Debug, Clone)]
enum State {
    Asking,
    Approved(Approval),
    Refused(Refused),
}

/// A refusal to repeat to the identical request: the decision told, who refused and why.
#[derive(Debug, Clone)]
pub(crate) struct Refused {
    pub decision: Decision,
    pub by: Option<String>,
    pub reason: Option<String>,
}

/// What the layer knows of a request that needs approval.
pub(crate) enum Found<E> {
    /// Nothing: it is held now, under this new id.
    Reserved(String),
    /// Held, the approver not answered yet.
    Asking(String),
    /// Approved: forward it, this once. The approval is used up.
    Approved {
        id: String,
        approval: Approval,
        generation: u64,
    },
    /// Refused by the approver (or because it approved itself).
    Refused(String, Refused),
    /// It could not be held (`reserve` said why).
    NotHeld(E),
}

impl Waiting {
    /// What is known of `key`; when nothing is, `reserve` counts it against the hold limits
    /// and gives it an id, and it is held under that id from now on (asked under `generation`).
    pub(crate) fn find_or_reserve<E>(
        &self,
        key: RequestKey,
        generation: u64,
        reserve: impl FnOnce() -> Result<(Hold, String), E>,
    ) -> Found<E> {
        let mut w = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if w.get(&key)
            .is_some_and(|e| e.until.is_some_and(|u| u <= now))
        {
            w.remove(&key);
        }
        if let Some(e) = w.get(&key) {
            match &e.state {
                State::Asking => return Found::Asking(e.id.clone()),
                State::Refused(r) => return Found::Refused(e.id.clone(), r.clone()),
                State::Approved(_) => {}
            }
            if let Some(Entry {
                id,
                generation,
                state: State::Approved(approval),
                ..
            }) = w.remove(&key)
            {
                return Found::Approved {
                    id,
                    approval,
                    generation,
                };
            }
        }
        match reserve() {
            Ok((counted, id)) => {
                w.insert(
                    key,
                    Entry {
                        id: id.clone(),
                        generation,
                        state: State::Asking,
                        counted: Some(counted),
                        until: None,
                    },
                );
                Found::Reserved(id)
            }
            Err(e) => Found::NotHeld(e),
        }
    }

    /// The approver approved `id`: the identical request may go through once until `until`.
    pub(crate) fn approved(&self, key: RequestKey, id: &str, approval: Approval, until: Instant) {
        self.answer(key, id, State::Approved(approval), until);
    }

    /// `id` was refused: the identical request is told so until `until`. It no longer counts
    /// against the hold limits.
    pub(crate) fn refused(
        &self,
        key: RequestKey,
        id: &str,
        refused: Refused,
        until: Instant,
        most: usize,
    ) {
        let mut w = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept: Vec<(Instant, RequestKey)> = w
            .iter()
            .filter(|(k, e)| **k != key && matches!(e.state, State::Refused(_)))
            .map(|(k, e)| (e.until.unwrap_or(until), *k))
            .collect();
        let cap = most.saturating_mul(REFUSALS_PER_HOLD).max(1);
        if kept.len() >= cap {
            kept.sort_unstable_by_key(|(u, _)| *u);
            for (_, k) in kept.iter().take(kept.len() + 1 - cap) {
                w.remove(k);
            }
        }
        if let Some(e) = w.get_mut(&key).filter(|e| e.id == id) {
            e.state = State::Refused(refused);
            e.counted = None;
            e.until = Some(until);
        }
    }

    fn answer(&self, key: RequestKey, id: &str, state: State, until: Instant) {
        let mut w = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = w.get_mut(&key).filter(|e| e.id == id) {
            e.state = state;
            e.until = Some(until);
        }
    }

    /// Forget `id` (not held after all, its question timed out, or its answer expired);
    /// whether an approval not used was forgotten.
    pub(crate) fn forget(&self, key: RequestKey, id: &str) -> bool {
        let mut w = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if w.get(&key).is_some_and(|e| e.id == id) {
            return w
                .remove(&key)
                .is_some_and(|e| matches!(e.state, State::Approved(_)));
        }
        false
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The `Status` a held request is answered with: 403 `Forbidden` (kubectl shows "Error from
/// server (Forbidden): MESSAGE"; client-go and kube-rs do not retry a 403 on their own), the
/// approval id in `details.uid` and in a cause, and `retryAfterSeconds` while it waits.
pub(crate) fn status_body(message: &str, id: &str, waiting: bool, retry_after: u64) -> Bytes {
    let cause = if waiting {
        json!({
            "reason": "ApprovalPending",
            "message": format!("kubeleash approval {id} waits for a person; send the identical request again to learn the answer"),
            "field": "kubeleash.dev/approval-id",
        })
    } else {
        json!({
            "reason": "ApprovalRefused",
            "message": format!("kubeleash approval {id} was refused"),
            "field": "kubeleash.dev/approval-id",
        })
    };
    let mut details = json!({"uid": id, "causes": [cause]});
    if waiting {
        details["retryAfterSeconds"] = json!(retry_after);
    }
    Bytes::from(
        kubeleash_core::status::Status::failure(403, "Forbidden", message)
            .details(details)
            .to_json(),
    )
}

/// `retry_after` as `Retry-After` says it: whole seconds, at least 1.
pub(crate) fn retry_seconds(retry_after: Duration) -> u64 {
    retry_after
        .as_secs()
        .saturating_add(u64::from(retry_after.subsec_nanos() > 0))
        .max(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

    use super::*;
    use crate::holds::Holds;
    use crate::layer::HoldLimits;
    use http::HeaderMap;
    use kubeleash_core::policy::{Effect, Identity};

    fn key(body: &str) -> RequestKey {
        RequestKey::new(
            &Identity::new("agent", ["g"]),
            "POST",
            "/api/v1/namespaces/dev/secrets",
            &HeaderMap::new(),
            body.as_bytes(),
        )
    }

    const LIMITS: HoldLimits = HoldLimits {
        per_identity: 2,
        total: 2,
    };

    fn refusal() -> Refused {
        Refused {
            decision: Decision {
                effect: Effect::Approve,
                rule: None,
                reason: "no".into(),
            },
            by: Some("alice".into()),
            reason: Some("no".into()),
        }
    }

    fn bob() -> Approval {
        Approval {
            by: "bob".into(),
            widening: Default::default(),
            waited: Duration::ZERO,
        }
    }

    #[test]
    fn a_key_is_held_once_and_its_approval_used_once() {
        let holds = Holds::default();
        let w = Waiting::default();
        let reserve = || {
            holds
                .try_hold("agent", LIMITS)
                .map(|h| (h, "id1".to_string()))
        };
        assert!(
            matches!(w.find_or_reserve(key("a"), 1, reserve), Found::Reserved(id) if id == "id1")
        );
        let again = || -> Result<(Hold, String), ()> { panic!("reserved twice") };
        assert!(matches!(w.find_or_reserve(key("a"), 1, again), Found::Asking(id) if id == "id1"));
        let far = Instant::now() + Duration::from_secs(60);
        w.approved(key("a"), "other", bob(), far);
        assert!(
            matches!(w.find_or_reserve(key("a"), 1, again), Found::Asking(_)),
            "another id answers nothing"
        );
        w.approved(key("a"), "id1", bob(), far);
        assert!(matches!(
            w.find_or_reserve(key("a"), 2, again),
            Found::Approved { id, approval, generation: 1 } if id == "id1" && approval.by == "bob"
        ));
        // Used: the hold no longer counts, and the next identical request is held anew.
        let reserve = || {
            holds
                .try_hold("agent", LIMITS)
                .map(|h| (h, "id2".to_string()))
        };
        assert!(
            matches!(w.find_or_reserve(key("a"), 2, reserve), Found::Reserved(id) if id == "id2")
        );
        let reserve = || {
            holds
                .try_hold("agent", LIMITS)
                .map(|h| (h, "id3".to_string()))
        };
        assert!(matches!(
            w.find_or_reserve(key("b"), 2, reserve),
            Found::Reserved(_)
        ));
        let reserve = || {
            holds
                .try_hold("agent", LIMITS)
                .map(|h| (h, "id4".to_string()))
        };
        assert!(
            matches!(w.find_or_reserve(key("c"), 2, reserve), Found::NotHeld(_)),
            "the limits apply"
        );
        // A refusal stops counting, and is repeated.
        w.refused(key("b"), "id3", refusal(), far, 2);
        assert!(
            matches!(w.find_or_reserve(key("b"), 2, again), Found::Refused(id, _) if id == "id3")
        );
        let reserve = || {
            holds
                .try_hold("agent", LIMITS)
                .map(|h| (h, "id5".to_string()))
        };
        assert!(matches!(
            w.find_or_reserve(key("c"), 2, reserve),
            Found::Reserved(_)
        ));
    }

    #[test]
    fn answers_expire_and_refusals_are_bounded() {
        let holds = Holds::default();
        let w = Waiting::default();
        let limits = HoldLimits {
            per_identity: 100,
            total: 100,
        };
        let past = Instant::now();
        let reserve = |id: &str| {
            let id = id.to_string();
            let holds = holds.clone();
            move || holds.try_hold("agent", limits).map(|h| (h, id))
        };
        assert!(matches!(
            w.find_or_reserve(key("a"), 1, reserve("a1")),
            Found::Reserved(_)
        ));
        w.approved(key("a"), "a1", bob(), past);
        assert!(
            matches!(w.find_or_reserve(key("a"), 1, reserve("a2")), Found::Reserved(id) if id == "a2"),
            "an expired approval is not used"
        );
        assert!(!w.forget(key("a"), "a2"), "a question is not an approval");
        let far = Instant::now() + Duration::from_secs(60);
        for i in 0..10 {
            let k = key(&format!("r{i}"));
            assert!(matches!(
                w.find_or_reserve(k, 1, reserve("r")),
                Found::Reserved(_)
            ));
            w.refused(k, "r", refusal(), far + Duration::from_secs(i), 1);
        }
        assert_eq!(
            w.len(),
            REFUSALS_PER_HOLD,
            "the oldest refusals are forgotten"
        );
    }

    #[test]
    fn the_status_names_the_approval() {
        let v: serde_json::Value =
            serde_json::from_slice(&status_body("kubeleash: held", "abc", true, 10)).unwrap();
        assert_eq!(v["code"], 403);
        assert_eq!(v["reason"], "Forbidden");
        assert_eq!(v["details"]["uid"], "abc");
        assert_eq!(v["details"]["retryAfterSeconds"], 10);
        assert_eq!(v["details"]["causes"][0]["reason"], "ApprovalPending");
        assert_eq!(retry_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(retry_seconds(Duration::ZERO), 1);
    }
}
