//! The proxy server: hyper on loopback in front, the kubeleash layer in the middle, kube-rs's
//! client stack (TLS, the operator's credential, refresh) behind.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kube::client::ClientBuilder;
use kubeleash_core::policy::{Identity, Policy};
use kubeleash_tower::{
    BoxError, JsonlRecorder, KubeleashLayer, Mode, PolicyHandle, RecorderOptions,
};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::oidc::Oidc;
use crate::approvals::{SocketApprover, TerminalApprover, WebhookApprover};

/// Who the agent is.
#[derive(Debug, Clone)]
pub enum IdentityConfig {
    /// One local agent, named by flags.
    Fixed(Identity),
    /// Agents identified by verified OIDC bearer tokens.
    Oidc {
        issuer: String,
        audience: String,
        jwks: PathBuf,
        user_claim: String,
        groups_claim: String,
    },
}

/// Who approves held requests.
#[derive(Clone)]
pub enum Approvals {
    /// Nobody: held requests are denied.
    None,
    /// Operators, over a Unix socket (`kubeleash approvals ...`).
    Socket(PathBuf),
    /// A prompt on the proxy's terminal.
    Terminal,
    /// An HTTP webhook.
    Webhook(String),
    /// An approver of the embedding program's own (the demo's).
    Custom(Arc<dyn kubeleash_tower::Approver>),
}

/// Everything `kubeleash proxy` is told.
#[derive(Clone)]
pub struct ProxyConfig {
    pub policy: PathBuf,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub listen: SocketAddr,
    pub record: Option<PathBuf>,
    pub identity: IdentityConfig,
    pub approvals: Approvals,
    pub approval_timeout: Duration,
    pub mode: Mode,
    /// A plain-HTTP upstream with no credential instead of a kubeconfig (the sandbox, in the
    /// demo and tests).
    pub upstream: Option<String>,
}

/// A running proxy.
pub struct RunningProxy {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
    policy_path: PathBuf,
    policy: PolicyHandle,
    recorder: Option<Arc<JsonlRecorder>>,
    socket: Option<Arc<SocketApprover>>,
    /// Every open connection holds a clone; none left but this one means all have finished.
    connections: Arc<()>,
    /// The connection tasks, to cut streams (watches, followed logs) still open after the grace
    /// period: dropping their bodies writes their records before the recorder closes.
    open_tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

fn status(code: StatusCode, reason: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    let mut r = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = code;
    r.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn load_policy(path: &PathBuf) -> Result<Policy, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read policy `{}`: {}",
            path.display(),
            e.to_string().to_lowercase()
        )
    })?;
    Policy::from_yaml(&text).map_err(|e| {
        let all: Vec<String> = e.errors().iter().map(|e| e.to_string()).collect();
        format!(
            "policy `{}` does not compile: {}",
            path.display(),
            all.join("; ")
        )
    })
}

/// Start the proxy: compile the policy, connect the upstream, listen.
pub async fn start(cfg: ProxyConfig) -> Result<RunningProxy, String> {
    if !cfg.listen.ip().is_loopback() {
        return Err(format!(
            "--listen `{}` is not a loopback address; kubeleash proxy listens on loopback only",
            cfg.listen
        ));
    }
    let policy = load_policy(&cfg.policy)?;
    let mut layer = KubeleashLayer::new(policy)
        .mode(cfg.mode)
        .approval_timeout(cfg.approval_timeout);
    layer = match &cfg.identity {
        IdentityConfig::Fixed(id) => layer.identity(id.clone()),
        IdentityConfig::Oidc {
            issuer,
            audience,
            jwks,
            user_claim,
            groups_claim,
        } => {
            let oidc = Oidc::new(
                jwks,
                issuer.clone(),
                audience.clone(),
                user_claim.clone(),
                groups_claim.clone(),
            )?;
            layer.identity_from(move |parts| oidc.identity(parts))
        }
    };
    let recorder = match &cfg.record {
        Some(path) => Some(Arc::new(
            JsonlRecorder::open(path, RecorderOptions::default()).map_err(|e| {
                format!(
                    "cannot open record file `{}`: {}",
                    path.display(),
                    e.to_string().to_lowercase()
                )
            })?,
        )),
        None => None,
    };
    if let Some(r) = &recorder {
        layer = layer.recorder(Arc::clone(r));
    }
    let mut socket = None;
    layer = match &cfg.approvals {
        Approvals::None => layer,
        Approvals::Socket(path) => {
            let s = Arc::new(SocketApprover::bind(path).map_err(|e| {
                format!("cannot open the approvals socket `{}`: {e}", path.display())
            })?);
            eprintln!(
                "kubeleash proxy: approvals socket at {} (`kubeleash approvals list`)",
                s.path().display()
            );
            socket = Some(Arc::clone(&s));
            layer.approver(s)
        }
        Approvals::Terminal => layer.approver(TerminalApprover::new().map_err(|e| e.to_string())?),
        Approvals::Webhook(url) => {
            layer.approver(WebhookApprover::new(url).map_err(|e| e.to_string())?)
        }
        Approvals::Custom(a) => layer.approver(Arc::clone(a)),
    };
    let config = match (&cfg.upstream, &cfg.kubeconfig) {
        (Some(url), _) => kube::Config::new(
            url.parse()
                .map_err(|e| format!("upstream `{url}` is not a URL: {e}"))?,
        ),
        (None, Some(path)) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("cannot read kubeconfig `{}`: {e}", path.display()))?;
            let opts = kube::config::KubeConfigOptions {
                context: cfg.context.clone(),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| format!("kubeconfig `{}` cannot be used: {e}", path.display()))?
        }
        (None, None) => kube::Config::infer()
            .await
            .map_err(|e| format!("no kubeconfig found ({e}); pass --kubeconfig"))?,
    };
    let policy_handle = layer.policy_handle();
    let client = ClientBuilder::try_from(config)
        .map_err(|e| format!("cannot build the upstream client: {e}"))?
        .with_layer(&layer)
        .build();
    let listener = TcpListener::bind(cfg.listen).await.map_err(|e| {
        format!(
            "cannot listen on {}: {}",
            cfg.listen,
            e.to_string().to_lowercase()
        )
    })?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop, mut stopped) = watch::channel(false);
    let connections = Arc::new(());
    let conns = Arc::clone(&connections);
    let open_tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
    let tasks = Arc::clone(&open_tasks);
    let accept = tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                _ = stopped.changed() => break,
            };
            // Masked responses go out in more than one write: without this the second waits
            // for the client's delayed ACK (about 40 ms).
            let _ = stream.set_nodelay(true);
            let client = client.clone();
            let service = hyper::service::service_fn(move |req| forward(client.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let (token, mut stop) = (Arc::clone(&conns), stopped.clone());
            let task = tokio::spawn(async move {
                let _token = token;
                let mut conn = std::pin::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = stop.changed() => {
                        // Finish the request in flight, take no new one on this connection.
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
            let mut open = tasks.lock().unwrap_or_else(|p| p.into_inner());
            open.retain(|t: &tokio::task::AbortHandle| !t.is_finished());
            open.push(task.abort_handle());
        }
    });
    Ok(RunningProxy {
        addr,
        stop,
        accept,
        policy_path: cfg.policy,
        policy: policy_handle,
        recorder,
        socket,
        connections,
        open_tasks,
    })
}

/// One request: buffered (the API server takes at most 3 MiB), sent through the layer and the
/// upstream client; the response streams back. Upgrades (exec, attach, port-forward) that the
/// policy allowed are joined end to end.
async fn forward(
    client: kube::Client,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let wants_upgrade = parts.headers.contains_key(UPGRADE);
    let server_upgrade = if wants_upgrade {
        let mut r = Request::from_parts(parts, ());
        let on = hyper::upgrade::on(&mut r);
        parts = r.into_parts().0;
        Some(on)
    } else {
        None
    };
    let bytes = match Limited::new(body, 3 * 1024 * 1024).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            return Ok(status(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &format!(
                    "kubeleash: request body refused: {e} (the API server accepts at most 3 MiB)"
                ),
            ));
        }
    };
    // The upstream connection sets its own Host and framing.
    parts.headers.remove(HOST);
    parts.headers.remove(TRANSFER_ENCODING);
    let upstream = Request::from_parts(parts, kube::client::Body::from(bytes));
    match client.send(upstream).await {
        Ok(mut resp) => {
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                && let Some(server_upgrade) = server_upgrade
            {
                {
                    let client_upgrade = hyper::upgrade::on(&mut resp);
                    tokio::spawn(async move {
                        if let (Ok(a), Ok(b)) = (server_upgrade.await, client_upgrade.await) {
                            let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
                            let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                        }
                    });
                }
            }
            Ok(resp.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()))
        }
        Err(e) => Ok(status(
            StatusCode::BAD_GATEWAY,
            "ServiceUnavailable",
            &format!("kubeleash could not reach the API server: {e}"),
        )),
    }
}

impl RunningProxy {
    /// The URL agents use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Compile the policy file again; on success it is in force for new requests, on failure the
    /// old one stays and the error says why.
    pub fn reload(&self) -> Result<(), String> {
        let p = load_policy(&self.policy_path)?;
        self.policy.set(p);
        Ok(())
    }

    /// Stop accepting, deny held approvals, let in-flight requests finish (up to `grace`),
    /// and flush the record.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let _ = self.accept.await;
        if let Some(s) = &self.socket {
            // Denies what is held, refuses what comes later, removes the socket file.
            s.close("the kubeleash proxy is shutting down");
        }
        let deadline = tokio::time::Instant::now() + grace;
        while Arc::strong_count(&self.connections) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for t in self
            .open_tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
        let cut = tokio::time::Instant::now() + Duration::from_secs(1);
        while Arc::strong_count(&self.connections) > 1 && tokio::time::Instant::now() < cut {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Some(r) = &self.recorder {
            r.close();
        }
    }

    /// Serve until SIGTERM or SIGINT (then shut down gracefully); reload the policy on SIGHUP
    /// and when its file changes.
    pub async fn serve_until_signalled(self) {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            eprintln!("kubeleash proxy: cannot listen for signals; stop it with kill -9");
            std::future::pending::<()>().await;
            return;
        };
        let mtime = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut seen: Option<SystemTime> = mtime(&self.policy_path);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => self.report_reload(),
                _ = tick.tick() => {
                    let now = mtime(&self.policy_path);
                    if now != seen {
                        seen = now;
                        self.report_reload();
                    }
                }
            }
        }
        eprintln!("kubeleash proxy: shutting down");
        self.shutdown(Duration::from_secs(10)).await;
    }

    fn report_reload(&self) {
        match self.reload() {
            Ok(()) => eprintln!("kubeleash proxy: policy reloaded"),
            Err(e) => eprintln!("kubeleash proxy: {e}; the previous policy stays in force"),
        }
    }
}
