//! The in-memory object store: objects by (resource, namespace, name), one resourceVersion
//! counter for all of them as etcd has, a bounded history for watches that resume from a
//! resourceVersion, and a broadcast of every change for watches that are open.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::Value;
use tokio::sync::broadcast;

/// (resource index in the catalog, namespace or "" at cluster scope, name). Ordered as etcd keys
/// are, so lists come out sorted by namespace, then name.
pub type Key = (usize, String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub resource: usize,
    pub namespace: String,
    /// The new state; for a deletion, the last state with the deletion's resourceVersion.
    pub object: Value,
    /// The state before a modification, so a filtered watch can tell an object that left its
    /// selector (sent as DELETED) from one that entered it (sent as ADDED).
    pub previous: Option<Value>,
}

/// How many past events a watch can resume from before it gets 410 Expired.
const HISTORY: usize = 10_000;
/// How far an open watch may fall behind before it is ended (the API server also drops slow
/// watchers).
const BROADCAST: usize = 4096;

#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
pub struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<Event>>,
    changes: broadcast::Sender<Arc<Event>>,
    /// Container logs by (namespace, pod, container).
    logs: HashMap<(String, String, String), String>,
}

impl Store {
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(BROADCAST);
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                changes,
                logs: HashMap::new(),
            }),
        }
    }

    /// Every read and write happens under this lock, so a read-modify-write is atomic. Nothing
    /// awaits while holding it. A panic while holding it cannot leave a half-written map (every
    /// mutation is one insert or remove), so a poisoned lock is still usable.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    /// The current resourceVersion (the last one committed).
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch can still resume from.
    pub fn oldest_resumable(&self) -> u64 {
        self.history.front().map_or(self.rv, |e| e.rv - 1)
    }

    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Objects of one resource, in one namespace or (None) in all, in key order.
    pub fn list(&self, resource: usize, namespace: Option<&str>) -> Vec<(&Key, &Value)> {
        let start = (resource, namespace.unwrap_or("").to_owned(), String::new());
        self.objects
            .range(start..)
            .take_while(|(k, _)| k.0 == resource && namespace.is_none_or(|ns| k.1 == ns))
            .collect()
    }

    /// Subscribe to changes after the current resourceVersion. Call it under the same lock as
    /// the snapshot it continues, so no change falls between them.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.changes.subscribe()
    }

    /// Committed events with a resourceVersion above `rv`, oldest first.
    pub fn since(&self, rv: u64) -> Vec<Arc<Event>> {
        self.history.iter().filter(|e| e.rv > rv).cloned().collect()
    }

    fn record(&mut self, event: Event) {
        let event = Arc::new(event);
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(event.clone());
        // No receiver is fine: nobody is watching.
        let _ = self.changes.send(event);
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Store `object` under `key` with a new resourceVersion, and announce it. Returns the stored
    /// object.
    pub fn put(&mut self, key: Key, mut object: Value) -> Value {
        let rv = self.next_rv();
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".to_owned(), Value::String(rv.to_string()));
        }
        let previous = self.objects.insert(key.clone(), object.clone());
        let kind = if previous.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(Event {
            rv,
            kind,
            resource: key.0,
            namespace: key.1,
            object: object.clone(),
            previous,
        });
        object
    }

    /// Remove the object under `key` and announce it. Returns its last state, carrying the
    /// deletion's resourceVersion as the API server's DELETED events do.
    pub fn remove(&mut self, key: &Key) -> Option<Value> {
        let mut object = self.objects.remove(key)?;
        let rv = self.next_rv();
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".to_owned(), Value::String(rv.to_string()));
        }
        self.record(Event {
            rv,
            kind: EventType::Deleted,
            resource: key.0,
            namespace: key.1.clone(),
            object: object.clone(),
            previous: None,
        });
        Some(object)
    }

    /// Start the watch history afresh at the current resourceVersion: what came before (the
    /// seed) is as old to a watcher as etcd's history before the API server started.
    pub fn forget_history(&mut self) {
        self.history.clear();
    }

    /// Keys of every object for which `pick` holds.
    pub fn keys_where(&self, pick: impl Fn(&Key) -> bool) -> Vec<Key> {
        self.objects.keys().filter(|k| pick(k)).cloned().collect()
    }

    pub fn set_log(&mut self, namespace: &str, pod: &str, container: &str, text: String) {
        self.logs.insert(
            (namespace.to_owned(), pod.to_owned(), container.to_owned()),
            text,
        );
    }

    pub fn log(&self, namespace: &str, pod: &str, container: &str) -> Option<&str> {
        self.logs
            .get(&(namespace.to_owned(), pod.to_owned(), container.to_owned()))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_scoped_and_ordered() {
        let store = Store::new();
        let mut s = store.lock();
        let obj = |n: &str| serde_json::json!({"metadata": {"name": n}});
        s.put((1, "b".into(), "x".into()), obj("x"));
        s.put((1, "a".into(), "y".into()), obj("y"));
        s.put((2, "a".into(), "z".into()), obj("z"));
        let names: Vec<&str> = s.list(1, None).iter().map(|(k, _)| k.2.as_str()).collect();
        assert_eq!(names, ["y", "x"]);
        assert_eq!(s.list(1, Some("b")).len(), 1);
        let gone = s.remove(&(1, "b".into(), "x".into()));
        assert_eq!(
            gone.and_then(|v| v.pointer("/metadata/resourceVersion").cloned()),
            Some("5".into())
        );
        assert_eq!(s.since(3).len(), 2);
    }
}
