//! Watch: newline-delimited JSON events streamed as changes are committed.
//!
//! Semantics follow the API server's watch cache: no `resourceVersion` (or `0`) starts with
//! every current object as ADDED; a resourceVersion resumes after it, or fails with an ERROR
//! event carrying 410 Expired when it is older than the history kept; `sendInitialEvents=true`
//! replays the current state and then a BOOKMARK annotated `k8s.io/initial-events-end`;
//! `allowWatchBookmarks` adds periodic BOOKMARKs; a modification that moves an object out of
//! (into) the selector is sent as DELETED (ADDED). A Table watch carries column definitions on
//! its first event only.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::catalog::ResourceDef;
use crate::json;
use crate::negotiate::Output;
use crate::reply::Reply;
use crate::routes::read::Filter;
use crate::routes::{Ctx, Target};
use crate::status::{ApiError, FieldError};
use crate::store::{Event, EventType};
use crate::table::{self, Include};

/// The API server picks a watch timeout between its minimum request timeout (30 min) and twice
/// that when the client sets none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How one watch writes its events.
struct Encoder {
    def: &'static ResourceDef,
    output: Output,
    include: Include,
    headers_sent: bool,
}

impl Encoder {
    fn object(&mut self, object: &Value) -> Value {
        let converted = crate::routes::read::at_version(self.def, object);
        let object = converted.as_ref().unwrap_or(object);
        match self.output {
            Output::Table(v) => {
                let mut meta = Map::new();
                if let Some(rv) = object.pointer("/metadata/resourceVersion") {
                    meta.insert("resourceVersion".to_owned(), rv.clone());
                }
                let first = !self.headers_sent;
                self.headers_sent = true;
                table::table(
                    self.def,
                    std::slice::from_ref(object),
                    self.include,
                    first,
                    meta,
                    v,
                )
            }
            Output::Metadata { version, .. } => table::partial(object, version),
            Output::Json | Output::Yaml => object.clone(),
        }
    }

    fn event(&mut self, kind: &str, object: &Value) -> Bytes {
        let object = self.object(object);
        let mut line = format!("{{\"type\":\"{kind}\",\"object\":").into_bytes();
        line.extend(json::ordered(&object));
        line.extend_from_slice(b"}\n");
        Bytes::from(line)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = match self.output {
            Output::Metadata { version, .. } => json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": format!("meta.k8s.io/{version}"),
                "metadata": meta,
            }),
            Output::Table(v) => json!({
                "kind": "Table",
                "apiVersion": format!("meta.k8s.io/{v}"),
                "metadata": meta,
                "columnDefinitions": null,
                "rows": [],
            }),
            Output::Json | Output::Yaml => json!({
                "kind": self.def.kind,
                "apiVersion": self.def.api_version(),
                "metadata": meta,
            }),
        };
        let mut line = b"{\"type\":\"BOOKMARK\",\"object\":".to_vec();
        line.extend(json::ordered(&object));
        line.extend_from_slice(b"}\n");
        Bytes::from(line)
    }

    fn error(&self, e: &ApiError) -> Bytes {
        let mut line = b"{\"type\":\"ERROR\",\"object\":".to_vec();
        line.extend(json::to_vec(&e.to_status()));
        line.extend_from_slice(b"}\n");
        Bytes::from(line)
    }
}

/// Which objects a watch sees.
struct Scope {
    resource: usize,
    namespace: Option<String>,
    filter: Filter,
}

impl Scope {
    fn in_scope(&self, e: &Event) -> bool {
        e.resource == self.resource && self.namespace.as_deref().is_none_or(|ns| ns == e.namespace)
    }

    /// The event this watcher sees for a committed change, if any.
    fn translate(&self, e: &Event) -> Option<EventType> {
        if !self.in_scope(e) {
            return None;
        }
        let now = self.filter.matches(&e.object);
        match (e.kind, &e.previous) {
            (EventType::Modified, Some(prev)) => match (self.filter.matches(prev), now) {
                (true, true) => Some(EventType::Modified),
                (false, true) => Some(EventType::Added),
                (true, false) => Some(EventType::Deleted),
                (false, false) => None,
            },
            (kind, _) => now.then_some(kind),
        }
    }
}

fn invalid_options(errors: Vec<FieldError>) -> ApiError {
    ApiError::invalid_kind("ListOptions", "meta.k8s.io", "", errors)
}

pub fn start(
    ctx: &Ctx<'_>,
    t: &Target,
    filter: Filter,
    output: Output,
    include: Include,
) -> Result<Reply, ApiError> {
    let q = &ctx.query;
    let send_initial = q
        .get("sendInitialEvents")
        .map(|_| q.flag("sendInitialEvents"));
    let bookmarks = q.flag("allowWatchBookmarks");
    if send_initial.is_some() {
        let mut errors = Vec::new();
        if q.get("resourceVersionMatch") != Some("NotOlderThan") {
            errors.push(FieldError::forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if send_initial == Some(true) && !bookmarks {
            errors.push(FieldError::forbidden(
                "allowWatchBookmarks",
                "sendInitialEvents requires setting allowWatchBookmarks to true",
            ));
        }
        if !errors.is_empty() {
            return Err(invalid_options(errors));
        }
    }
    let from = match q.non_empty("resourceVersion") {
        None | Some("0") => None,
        Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
            invalid_options(vec![FieldError::invalid(
                "resourceVersion",
                json!(rv),
                "must be a valid resource version",
            )])
        })?),
    };
    let timeout = q
        .int("timeoutSeconds")
        .map_err(ApiError::bad_request)?
        .filter(|s| *s > 0)
        .map_or(DEFAULT_TIMEOUT, |s| Duration::from_secs(s as u64));
    let scope = Scope {
        resource: t.index,
        namespace: t.namespace.clone(),
        filter,
    };
    let mut encoder = Encoder {
        def: t.def,
        output,
        include,
        headers_sent: false,
    };

    // Snapshot and subscription under one lock: nothing committed falls between them.
    let mut first: Vec<Bytes> = Vec::new();
    let (rx, snapshot_rv) = {
        let store = ctx.state.store.lock();
        let rv = store.rv();
        let replay_state = send_initial == Some(true) || from.is_none();
        if replay_state {
            for (_, o) in store.list(t.index, t.namespace.as_deref()) {
                if scope.filter.matches(o) {
                    first.push(encoder.event("ADDED", o));
                }
            }
            if send_initial == Some(true) {
                first.push(encoder.bookmark(rv, true));
            }
        } else if let Some(from) = from {
            if from < store.oldest_resumable() {
                let e = ApiError::expired(format!(
                    "too old resource version: {from} ({})",
                    store.oldest_resumable()
                ));
                first.push(encoder.error(&e));
                let (tx, rx) = mpsc::channel(1);
                let _ = tx.try_send(first.concat().into());
                return Ok(Reply::stream(output.content_type(), rx));
            }
            for e in store.since(from) {
                if let Some(kind) = scope.translate(&e) {
                    first.push(encoder.event(kind.as_str(), &e.object));
                }
            }
        }
        (store.subscribe(), rv)
    };

    let (tx, out) = mpsc::channel(64);
    let state = ctx.state.clone();
    let interval = bookmarks.then_some(state.bookmark_interval);
    tokio::spawn(run(
        state,
        tx,
        rx,
        first,
        scope,
        encoder,
        timeout,
        interval,
        snapshot_rv,
    ));
    Ok(Reply::stream(output.content_type(), out))
}

#[allow(clippy::too_many_arguments)]
async fn run(
    state: Arc<crate::state::State>,
    tx: mpsc::Sender<Bytes>,
    mut rx: broadcast::Receiver<Arc<Event>>,
    first: Vec<Bytes>,
    scope: Scope,
    mut encoder: Encoder,
    timeout: Duration,
    bookmark_every: Option<Duration>,
    mut last_rv: u64,
) {
    for chunk in first {
        if tx.send(chunk).await.is_err() {
            return;
        }
    }
    let mut stop = state.stop.clone();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(bookmark_every.unwrap_or(Duration::from_secs(3600)));
    ticker.tick().await;
    loop {
        let chunk = tokio::select! {
            _ = &mut deadline => return,
            _ = crate::state::stopped(&mut stop) => return,
            _ = tx.closed() => return,
            _ = ticker.tick(), if bookmark_every.is_some() => encoder.bookmark(last_rv, false),
            received = rx.recv() => match received {
                Ok(e) => {
                    last_rv = last_rv.max(e.rv);
                    match scope.translate(&e) {
                        Some(kind) => encoder.event(kind.as_str(), &e.object),
                        None => continue,
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow to keep up: end with 410 as the API server does, so the client
                    // relists.
                    let e = ApiError::expired("watch fell too far behind; relist and watch again");
                    let _ = tx.send(encoder.error(&e)).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if tx.send(chunk).await.is_err() {
            return;
        }
    }
}
