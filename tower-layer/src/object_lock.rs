//! One write at a time per object, for writes judged on the API server's dry run of them.
//!
//! A patch's effect depends on the stored object, and a dry run shows it for the object as it
//! is at that moment. A decision that the result allows, where the text alone would not, holds
//! only if the object does not change between the dry run and the write. The agent reaches the
//! cluster only through kubeleash, so holding this object's lock from before the dry run until
//! the write has its answer keeps the agent from changing the object in between. (Other
//! writers, controllers and people, are not the agent; two kubeleash instances in front of one
//! agent would not share the lock.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kubeleash_core::request::Attributes;

type Slot = Arc<tokio::sync::Mutex<()>>;

/// The locks of the objects being written, created on demand and dropped when unused.
#[derive(Debug, Default, Clone)]
pub(crate) struct ObjectLocks {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
}

/// The lock on one object, held until dropped.
pub(crate) struct Held {
    locks: ObjectLocks,
    key: String,
    slot: Slot,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl ObjectLocks {
    /// Wait for the object `a` names, then hold it.
    pub(crate) async fn lock(&self, a: &Attributes) -> Held {
        let key = format!("{}/{}/{}/{}", a.api_group, a.resource, a.namespace, a.name);
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(slots.entry(key.clone()).or_default())
        };
        let guard = Arc::clone(&slot).lock_owned().await;
        Held {
            locks: self.clone(),
            key,
            slot,
            _guard: guard,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut slots = self.locks.slots.lock().unwrap_or_else(|p| p.into_inner());
        // Ours and the map's: no one else waits for it.
        if Arc::strong_count(&self.slot) <= 3 {
            slots.remove(&self.key);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn object(name: &str) -> Attributes {
        Attributes {
            resource_request: true,
            api_group: "apps".into(),
            resource: "deployments".into(),
            namespace: "dev".into(),
            name: name.into(),
            ..Attributes::default()
        }
    }

    #[tokio::test]
    async fn one_writer_per_object_and_nothing_left_behind() {
        let locks = ObjectLocks::default();
        let first = locks.lock(&object("web")).await;
        // Another object is not held up.
        let other = locks.lock(&object("db")).await;
        drop(other);
        // The same object waits.
        let waiting = tokio::spawn({
            let locks = locks.clone();
            async move {
                let _second = locks.lock(&object("web")).await;
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        drop(first);
        waiting.await.unwrap();
        assert!(locks.slots.lock().unwrap().is_empty());
    }
}
