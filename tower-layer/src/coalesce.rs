//! Identical held requests asked once (blocking mode): while a request waits for a person, an
//! identical one (same [`RequestKey`]) does not prompt again; it waits for the first one's
//! answer. A refusal answers it too; an approval covers only what the person approved (the
//! first request, and whatever grant they left), so after an approval the waiting request is
//! checked against the grants and, if none covers it, asked on its own.
//!
//! A waiting request counts against the hold limits like a prompted one, so waiting cannot be
//! used to keep more bodies in memory than holding could.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kubeleash_core::policy::Decision;
use tokio::sync::watch;

use crate::approval::RequestKey;

/// A refusal, as the requests that waited on it are told.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub id: String,
    pub decision: Decision,
    pub by: Option<String>,
    pub reason: Option<String>,
    pub expired: bool,
}

type Slot = watch::Sender<Option<Refusal>>;

/// The requests being asked about, by key.
#[derive(Debug, Default, Clone)]
pub(crate) struct Asking {
    inner: Arc<Mutex<HashMap<RequestKey, (u64, Slot)>>>,
    next: Arc<AtomicU64>,
}

/// This request asks; the identical ones that come meanwhile wait on it. Dropping it without
/// [`Lead::refused`] (approved, or the caller went away) wakes them to look again.
#[derive(Debug)]
pub(crate) struct Lead {
    asking: Asking,
    key: RequestKey,
    serial: u64,
    slot: Slot,
}

pub(crate) enum Role {
    Lead(Lead),
    Wait(watch::Receiver<Option<Refusal>>),
}

impl Asking {
    pub(crate) fn lead_or_wait(&self, key: RequestKey) -> Role {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, slot)) = m.get(&key) {
            return Role::Wait(slot.subscribe());
        }
        let serial = self.next.fetch_add(1, Ordering::Relaxed);
        let (slot, _) = watch::channel(None);
        m.insert(key, (serial, slot.clone()));
        Role::Lead(Lead {
            asking: self.clone(),
            key,
            serial,
            slot,
        })
    }
}

impl Lead {
    /// The person refused (or nobody answered): the waiting requests are refused with it.
    pub(crate) fn refused(&self, refusal: Refusal) {
        self.slot.send_replace(Some(refusal));
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        let mut m = self.asking.inner.lock().unwrap_or_else(|p| p.into_inner());
        if m.get(&self.key).is_some_and(|(s, _)| *s == self.serial) {
            m.remove(&self.key);
        }
    }
}

/// What a waiting request learns: the refusal, or `None` when it should look again (the first
/// was approved, or went away).
pub(crate) async fn wait(mut rx: watch::Receiver<Option<Refusal>>) -> Option<Refusal> {
    loop {
        if let Some(r) = rx.borrow_and_update().clone() {
            return Some(r);
        }
        // Every sender gone (the lead dropped, its slot removed): look again.
        if rx.changed().await.is_err() {
            return rx.borrow().clone();
        }
    }
}
