//! An in-memory Kubernetes API server for tests, demos and benchmarks.
//!
//! kubeleash must be tested against clients nobody here wrote (kubectl, kube-rs, the official Python
//! and Node clients), and no real API server can be installed where it is built. The sandbox is a
//! stand-in faithful enough that those clients cannot tell: discovery as kubectl 1.3x asks for it,
//! get/list/watch/create/update/patch/delete with the API server's response shapes (Tables,
//! PartialObjectMetadata, watch framing, `Status` errors, gzip above 128 KiB), and a seed that looks
//! like a small real cluster, secrets included.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kubeleash_sandbox::Error> {
//! use kubeleash_sandbox::{Sandbox, Seed};
//! let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), Seed::Default).await?;
//! println!("kubectl --server {} get pods -A", sandbox.url());
//! sandbox.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! It speaks plain HTTP/1.1 on a loopback address only: it has no authentication, so it refuses to
//! listen anywhere else.
//!
//! Beyond the core verbs it copies what tests against a real kube-apiserver (`tests/cluster/`)
//! showed: server-side apply with per-manager `managedFields` and 409 conflicts (`force` takes
//! ownership), CustomResourceDefinitions that make their resources served until deleted, the
//! authorization.k8s.io reviews (every request is allowed: the sandbox has no authorization), and
//! OpenAPI v2/v3 schemas for `kubectl explain` and client-side apply.
//!
//! What it does not do, on purpose: no controllers (a Deployment's status mirrors its spec at once,
//! and no ReplicaSets or Pods are created for it), no admission, no RBAC enforcement, no protobuf
//! responses. Field ownership approximates the OpenAPI schema by field names (which lists are
//! keyed, which maps hold user keys), so `managedFields` of keyed lists may differ in detail from
//! the API server's.

mod catalog;
mod crd;
mod defaults;
mod fields;
mod ids;
mod json;
mod negotiate;
mod patch;
mod protobuf;
mod query;
mod reply;
mod routes;
mod selector;
mod server;
mod state;
mod status;
mod store;
mod table;
mod time;
mod validate;
mod watch;

mod seed;
mod ssa;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch as signal;
use tokio::task::JoinHandle;

pub use seed::Seed;

/// Why the sandbox could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The sandbox has no authentication, so it serves loopback addresses only.
    #[error("refusing to listen on `{0}`: the sandbox serves loopback addresses only")]
    NotLoopback(SocketAddr),
    /// The listening socket could not be bound.
    #[error("cannot listen on `{addr}`: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// How a sandbox is started.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// What the cluster holds at start.
    pub seed: Seed,
    /// Print one line per request on standard error (method, target, status, media types).
    pub log_requests: bool,
    /// How often a watch that asked for bookmarks gets one. The API server sends them about once a
    /// minute; tests shorten it to see one.
    pub bookmark_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: Seed::Default,
            log_requests: false,
            bookmark_interval: Duration::from_secs(60),
        }
    }
}

impl Options {
    /// Options with the given seed and the other defaults.
    pub fn new(seed: Seed) -> Self {
        Options {
            seed,
            ..Options::default()
        }
    }

    /// Print one line per request on standard error.
    pub fn log_requests(mut self, yes: bool) -> Self {
        self.log_requests = yes;
        self
    }

    /// Send watch bookmarks this often.
    pub fn bookmark_interval(mut self, every: Duration) -> Self {
        self.bookmark_interval = every;
        self
    }
}

impl FromStr for Seed {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(Seed::Default),
            "empty" => Ok(Seed::Empty),
            other => Err(format!(
                "unknown seed `{other}`: expected `default` or `empty`"
            )),
        }
    }
}

/// A running sandbox API server.
#[derive(Debug)]
pub struct Sandbox {
    addr: SocketAddr,
    stop: signal::Sender<bool>,
    /// Taken by `shutdown`; `None` afterwards.
    task: Option<JoinHandle<()>>,
}

impl Sandbox {
    /// Start serving on `addr` (port 0 picks a free port) with the given seed.
    pub async fn start(addr: SocketAddr, seed: Seed) -> Result<Sandbox, Error> {
        Sandbox::start_with(addr, Options::new(seed)).await
    }

    /// Start serving on `addr` with full options.
    pub async fn start_with(addr: SocketAddr, options: Options) -> Result<Sandbox, Error> {
        if !addr.ip().is_loopback() {
            return Err(Error::NotLoopback(addr));
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        let (stop, stopped) = signal::channel(false);
        let state = Arc::new(state::State::new(&options, stopped.clone()));
        let task = tokio::spawn(server::serve(listener, state, stopped));
        Ok(Sandbox {
            addr: bound,
            stop,
            task: Some(task),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL for a kubeconfig `server:` or a client, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop accepting, end every open connection and watch, and wait until the server is gone.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Sandbox {
    /// A sandbox dropped without `shutdown` (a failing test) still stops serving; it just does
    /// not wait for its connections to close.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
