//! What every request handler can reach: the store, the CRD registry, ids, and the shutdown
//! signal. Its own module so the routes and the HTTP side (`server`) both depend on it, not on
//! each other.

use std::time::Duration;

use tokio::sync::watch;

use crate::Options;
use crate::ids::Ids;
use crate::seed;
use crate::store::Store;

/// Everything a request handler can reach.
#[derive(Debug)]
pub struct State {
    pub store: Store,
    /// The resources CustomResourceDefinitions add.
    pub crds: crate::crd::Registry,
    pub ids: Ids,
    pub log_requests: bool,
    pub bookmark_interval: Duration,
    /// Becomes true when the sandbox shuts down; watches and log streams end on it.
    pub stop: watch::Receiver<bool>,
}

impl State {
    pub fn new(options: &Options, stop: watch::Receiver<bool>) -> Self {
        let ids = Ids::new(crate::time::now_nanos() as u64);
        let store = Store::new();
        seed::load(options.seed, &store, &ids);
        State {
            store,
            crds: crate::crd::Registry::default(),
            ids,
            log_requests: options.log_requests,
            bookmark_interval: options.bookmark_interval,
            stop,
        }
    }
}

/// Resolves once the sandbox is shutting down (at once if it already is).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, inside: holding it across an await would
    // make the caller's future not `Send`.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}
