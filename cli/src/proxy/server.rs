//! The proxy server: hyper on loopback in front (HTTPS with a certificate made at start, see
//! [`super::tls`], or plain HTTP with `--plain-http`), the kubeleash layer in the middle,
//! kube-rs's client stack (TLS, the operator's credential, refresh) behind. Connections are
//! capped, slow clients cut at deadlines ([`Limits`]; the TLS handshake is within the header
//! deadline), and upgraded connections kept on a list each reload decides again ([`Tunnels`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HOST, TRANSFER_ENCODING, UPGRADE};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use kubeleash_connect::Upstream;
use kubeleash_core::body::MAX_BODY_BYTES as MAX_BODY;
use kubeleash_core::policy::{Decision, Effect, Identity, Policy};
use kubeleash_tower::{
    ApprovalMode, BodyBudget, BoundedReadError, BoxError, BudgetShare, JsonlRecorder,
    KubeleashLayer, Mode, PolicyHandle, RecorderOptions,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::access::{Access, AgentToken};
use super::agent_config::{AgentAuth, render, write_private};
use super::limits::{BusyLog, Limits, MAX_BUFFERED, busy_response};
use super::oidc::Oidc;
use super::tls::{self, ServingTls};
use super::tokenreview::{Rejected, TokenReview};
use super::tunnels::{Admitted, Tunnels};
use super::upstream_error;
use crate::approvals::{SocketApprover, TerminalApprover, WebhookApprover};

/// Who the agent is.
#[derive(Debug, Clone)]
pub enum IdentityConfig {
    /// One local agent, named by flags.
    Fixed(Identity),
    /// Agents identified as workloads: ServiceAccount tokens bound to `audience`, reviewed by
    /// the API server.
    TokenReview { audience: String },
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
    /// Kept in the cluster as `approvals.kubeleash.dev` objects in this namespace, shared by
    /// every replica (see `approvals::KubernetesApprovals`).
    Kubernetes(String),
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
    /// Also record each delivered (masked) response body, capped at this many bytes.
    pub record_bodies: Option<usize>,
    /// Sign the record with this key (made there when missing).
    pub signing_key: Option<PathBuf>,
    /// The record's session (a replica's name); default: from the start time.
    pub record_session: Option<String>,
    pub identity: IdentityConfig,
    pub approvals: Approvals,
    pub approval_timeout: Duration,
    pub mode: Mode,
    /// A plain-HTTP upstream with no credential instead of a kubeconfig (the sandbox, in the
    /// demo and tests).
    pub upstream: Option<String>,
    /// Where to write the agent's kubeconfig (0600): the proxy's URL and, with a fixed
    /// identity, the proxy's bearer token.
    pub agent_kubeconfig: Option<PathBuf>,
    /// Where to write the proxy's token alone (0600), for `kubeleash kubeconfig
    /// --proxy-token-file`.
    pub agent_token_file: Option<PathBuf>,
    /// The namespace the agent's kubeconfig works in.
    pub agent_namespace: String,
    /// Serve plain HTTP instead of HTTPS (for clients that cannot do TLS).
    pub plain_http: bool,
    /// Where to write the CA certificate (PEM) that vouches for this proxy's HTTPS.
    pub agent_ca_file: Option<PathBuf>,
    /// Serve this certificate chain and key (PEM files) instead of making a CA at start.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// DNS names agents reach the proxy by (a Service's), accepted in `Host`.
    pub serve_names: Vec<String>,
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
    /// The bearer token agents must present (fixed identity only).
    token: Option<AgentToken>,
    /// The connection and tunnel tasks, to cut streams (watches, followed logs, exec) still
    /// open after the grace period: dropping their bodies writes their records before the
    /// recorder closes.
    open_tasks: OpenTasks,
    /// The upgraded connections, decided again on every reload.
    tunnels: Arc<Tunnels>,
    limits: Limits,
    /// The CA that vouches for this proxy's HTTPS (PEM); none with plain HTTP.
    ca_pem: Option<String>,
    /// The operator's certificate files (--tls-cert-file, --tls-key-file), read again when
    /// they change.
    cert_files: Option<Arc<tls::CertFiles>>,
}

type OpenTasks = Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>;

/// Keep `task` with the others, so shutdown can cut it; forget the ones that finished.
fn track(tasks: &OpenTasks, task: tokio::task::AbortHandle) {
    let mut open = tasks.lock().unwrap_or_else(|p| p.into_inner());
    open.retain(|t| !t.is_finished());
    open.push(task);
}

/// The identity the proxy verified before reading the body (OIDC), handed to the layer in the
/// request's extensions so the token is not verified twice. Only the proxy puts it there: an
/// extension is not something a client can send.
#[derive(Clone)]
struct Verified(Identity);

/// What every request on every connection shares.
struct Front {
    client: kube::Client,
    access: Arc<Access>,
    /// The agent's identity when it comes from flags.
    fixed: Option<Identity>,
    /// Who proves each request's identity, when identities come from bearer tokens.
    verifier: Option<Verifier>,
    policy: PolicyHandle,
    tunnels: Arc<Tunnels>,
    limits: Limits,
    /// Bytes of request bodies being read, over all connections ([`MAX_BUFFERED`]).
    body_budget: BodyBudget,
    /// Held by every connection and tunnel (see [`RunningProxy::connections`]).
    connections: Arc<()>,
    open_tasks: OpenTasks,
}

type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Who proves a request's identity from its bearer token.
#[derive(Clone)]
enum Verifier {
    Oidc(Arc<Oidc>),
    TokenReview(Arc<TokenReview>),
}

impl Verifier {
    async fn identity(&self, parts: &http::request::Parts) -> Result<Identity, Rejected> {
        match self {
            Verifier::Oidc(o) => o.identity(parts).map_err(|why| Rejected::Token(why, None)),
            Verifier::TokenReview(t) => t.identity(parts).await,
        }
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<ProxyBody> {
    kubeleash_core::status::Status::failure(code.as_u16(), reason, message).response(|b| {
        Full::new(Bytes::from(b))
            .map_err(|e| match e {})
            .boxed_unsync()
    })
}

pub(crate) fn load_policy(path: &PathBuf) -> Result<Policy, String> {
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

/// Start the proxy with the default [`Limits`]: compile the policy, connect the upstream,
/// listen.
pub async fn start(cfg: ProxyConfig) -> Result<RunningProxy, String> {
    start_with(cfg, Limits::default(), ApprovalMode::Blocking).await
}

/// Start the proxy with the given limits, held requests waiting as `approval_mode` says
/// (`--approvals-nonblocking`).
pub async fn start_with(
    cfg: ProxyConfig,
    limits: Limits,
    approval_mode: ApprovalMode,
) -> Result<RunningProxy, String> {
    if limits.max_connections == 0 {
        return Err("--max-connections must be at least 1".into());
    }
    // Off loopback, anyone on the network can connect: each request must then prove its own
    // identity (a token the API server or an OIDC issuer vouches for), over a certificate the
    // agents already trust (the same for every replica and restart).
    let per_request = matches!(
        cfg.identity,
        IdentityConfig::Oidc { .. } | IdentityConfig::TokenReview { .. }
    );
    let may_serve_network = per_request && cfg.tls_files.is_some() && !cfg.plain_http;
    for name in &cfg.serve_names {
        super::access::dns_name(name)?;
    }
    if !cfg.listen.ip().is_loopback() && !may_serve_network {
        return Err(format!(
            "--listen `{}` is not a loopback address: kubeleash proxy listens off loopback only when every request proves its identity (--tokenreview-audience or --oidc-issuer) over a certificate its agents trust (--tls-cert-file and --tls-key-file)",
            cfg.listen
        ));
    }
    let policy = load_policy(&cfg.policy)?;
    let mut layer = KubeleashLayer::new(policy)
        .mode(cfg.mode)
        .approval_timeout(cfg.approval_timeout)
        .approval_mode(approval_mode);
    let (fixed, verifier) = match &cfg.identity {
        IdentityConfig::Fixed(id) => {
            layer = layer.identity(id.clone());
            (Some(id.clone()), None)
        }
        IdentityConfig::Oidc {
            issuer,
            audience,
            jwks,
            user_claim,
            groups_claim,
        } => {
            let oidc = Arc::new(Oidc::new(
                jwks,
                issuer.clone(),
                audience.clone(),
                user_claim.clone(),
                groups_claim.clone(),
            )?);
            let verifier = Arc::clone(&oidc);
            // The proxy verifies the token before it reads the body and hands the identity
            // over; a request that comes without one is verified here.
            layer = layer.identity_from(move |parts| match parts.extensions.get::<Verified>() {
                Some(Verified(id)) => Ok(id.clone()),
                None => verifier.identity(parts),
            });
            (None, Some(Verifier::Oidc(oidc)))
        }
        IdentityConfig::TokenReview { .. } => {
            // Reviewed (asynchronously) before the layer sees the request; one that comes
            // without a verified identity is refused.
            layer = layer.identity_from(|parts| match parts.extensions.get::<Verified>() {
                Some(Verified(id)) => Ok(id.clone()),
                None => Err("the request carries no verified identity".into()),
            });
            (None, None)
        }
    };
    let recorder = open_recorder(
        cfg.record.as_deref(),
        cfg.record_bodies,
        cfg.signing_key.as_deref(),
        cfg.record_session.clone(),
    )?;
    if let Some(r) = &recorder {
        layer = layer.recorder(Arc::clone(r));
    }
    let (chosen, socket) = approver(&cfg.approvals)?;
    if let Some(a) = chosen {
        layer = layer.approver(a);
    }
    let upstream = connect(
        cfg.upstream.as_deref(),
        cfg.kubeconfig.as_deref(),
        cfg.context.as_deref(),
    )
    .await?;
    if let Approvals::Kubernetes(namespace) = &cfg.approvals {
        // The proxy's own requests, with the operator's credential, not through the layer.
        let kept = crate::approvals::KubernetesApprovals::start(
            upstream.client_builder().map_err(connect_failed)?.build(),
            namespace,
            &replica_name(cfg.record_session.as_deref()),
            cfg.approval_timeout,
            layer.policy_handle(),
        );
        eprintln!(
            "kubeleash: approvals and grants kept in namespace {namespace} \
             (`kubeleash approvals --kubernetes list`, or kubectl get approvals.kubeleash.dev)"
        );
        // The approvals namespace holds what decides for agents (approvals, grants,
        // heartbeats, in the chart the policy too), written with the same credential the
        // agents' requests go out with: none of their requests reaches it.
        layer = layer
            .approver(kept.clone())
            .grant_store(kept)
            .reserve_namespace(namespace.clone());
    }
    let verifier = match &cfg.identity {
        // The proxy's own request, with the operator's credential, not through the layer.
        IdentityConfig::TokenReview { audience } => {
            Some(Verifier::TokenReview(Arc::new(TokenReview::new(
                upstream.client_builder().map_err(connect_failed)?.build(),
                audience.clone(),
            ))))
        }
        _ => verifier,
    };
    let policy_handle = layer.policy_handle();
    let client = upstream
        .client_builder()
        .map_err(connect_failed)?
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
    let tls = if cfg.plain_http {
        None
    } else {
        Some(match &cfg.tls_files {
            Some((cert, key)) => tls::from_files(cert, key)?,
            None => tls::generate(addr)?,
        })
    };
    // With identity from flags, anyone who can reach the port would be the agent: the agent
    // proves itself with a token only the proxy and its kubeconfig know. With OIDC the bearer
    // is the agent's own token, which the layer verifies.
    let token = match cfg.identity {
        IdentityConfig::Fixed(_) => Some(AgentToken::generate()?),
        IdentityConfig::Oidc { .. } | IdentityConfig::TokenReview { .. } => None,
    };
    write_agent_files(&cfg, addr, token.as_ref(), tls.as_ref())?;
    let access = Arc::new(Access::serving(addr, token.clone(), &cfg.serve_names));
    let (stop, mut stopped) = watch::channel(false);
    let connections = Arc::new(());
    let open_tasks: OpenTasks = Arc::default();
    let tunnels = Arc::new(Tunnels::default());
    let front = Arc::new(Front {
        client,
        access,
        fixed,
        verifier,
        policy: policy_handle.clone(),
        tunnels: Arc::clone(&tunnels),
        limits,
        body_budget: BodyBudget::new(MAX_BUFFERED),
        connections: Arc::clone(&connections),
        open_tasks: Arc::clone(&open_tasks),
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Connections beyond the cap that are told so over TLS: the handshake costs the proxy a
    // little, so only this many at once; past that they are closed unanswered.
    let busy_slots = Arc::new(Semaphore::new(BUSY_ANSWERS));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    // The timer makes hyper close a connection whose headers do not arrive in time, idle
    // kept-alive ones included (slowloris).
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let acceptor = tls.as_ref().map(|t| t.acceptor.clone());
    let accept = tokio::spawn(async move {
        let mut busy = BusyLog::default();
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(_) => {
                        // Out of file descriptors (or another passing error): accept fails
                        // again at once, so wait a little instead of spinning.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopped.changed() => break,
            };
            // Masked responses go out in more than one write: without this the second waits
            // for the client's delayed ACK (about 40 ms).
            let _ = stream.set_nodelay(true);
            // One slot per connection, held by an upgraded one's tunnel too. Beyond the cap the
            // client gets a 503 it can read, and the connection closes without a byte of its
            // request being used. Over plain HTTP the answer is written at once (the socket's
            // send buffer is empty, so the write does not block); over HTTPS it needs the
            // handshake first, done in a task of its own, within the header deadline.
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                let answer = busy_response(limits.max_connections);
                match &acceptor {
                    None => {
                        let _ = stream.try_write(&answer);
                    }
                    Some(acceptor) => {
                        if let Ok(permit) = Arc::clone(&busy_slots).try_acquire_owned() {
                            let acceptor = acceptor.clone();
                            tokio::spawn(async move {
                                let _permit = permit;
                                let handshake = tokio::time::timeout(
                                    limits.header_timeout.min(BUSY_HANDSHAKE),
                                    acceptor.accept(stream),
                                );
                                if let Ok(Ok(tls)) = handshake.await {
                                    answer_and_close(tls, &answer).await;
                                }
                            });
                        }
                    }
                }
                if let Some(line) = busy.turned_away(limits.max_connections) {
                    eprintln!("{line}");
                }
                continue;
            };
            let (token, stop) = (Arc::clone(&front.connections), stopped.clone());
            let (front_c, acceptor, http1) = (Arc::clone(&front), acceptor.clone(), http1.clone());
            let task = tokio::spawn(async move {
                let (_token, slot) = (token, Arc::new(slot));
                match acceptor {
                    None => {
                        serve_connection(&http1, TokioIo::new(stream), front_c, slot, stop).await
                    }
                    Some(acceptor) => {
                        let Some(tls) =
                            handshake(&acceptor, stream, limits.header_timeout, stop.clone()).await
                        else {
                            return;
                        };
                        serve_connection(&http1, TokioIo::new(tls), front_c, slot, stop).await;
                    }
                }
            });
            track(&front.open_tasks, task.abort_handle());
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
        token,
        open_tasks,
        tunnels,
        limits,
        cert_files: tls.as_ref().and_then(|t| t.files.clone()),
        ca_pem: tls.map(|t| t.ca_pem),
    })
}

/// The record file, opened for appending (each delivered body kept up to `bodies` bytes).
/// With a signing key (made there when missing, `crate::signing_key`), the chain is signed.
pub(crate) fn open_recorder(
    path: Option<&std::path::Path>,
    bodies: Option<usize>,
    signing_key: Option<&std::path::Path>,
    session: Option<String>,
) -> Result<Option<Arc<JsonlRecorder>>, String> {
    let Some(path) = path else {
        return Ok(None);
    };
    let signer = signing_key
        .map(|k| crate::signing_key::load_or_create(k, path))
        .transpose()?;
    JsonlRecorder::open(
        path,
        RecorderOptions {
            body_cap: bodies,
            signer,
            session,
            ..RecorderOptions::default()
        },
    )
    .map(|r| Some(Arc::new(r)))
    .map_err(|e| {
        format!(
            "cannot open record file `{}`: {}",
            path.display(),
            e.to_string().to_lowercase()
        )
    })
}

/// The approver `approvals` names (none: held requests are denied), and the approvals socket
/// when that is the one.
pub(crate) type Chosen = (
    Option<Arc<dyn kubeleash_tower::Approver>>,
    Option<Arc<SocketApprover>>,
);

/// Start the approver `approvals` names.
pub(crate) fn approver(approvals: &Approvals) -> Result<Chosen, String> {
    Ok(match approvals {
        Approvals::None => (None, None),
        Approvals::Socket(path) => {
            let s = Arc::new(SocketApprover::bind(path).map_err(|e| {
                format!("cannot open the approvals socket `{}`: {e}", path.display())
            })?);
            eprintln!(
                "kubeleash: approvals socket at {} (`kubeleash approvals list`)",
                s.path().display()
            );
            (Some(s.clone()), Some(s))
        }
        Approvals::Terminal => (
            Some(Arc::new(
                TerminalApprover::new().map_err(|e| e.to_string())?,
            )),
            None,
        ),
        Approvals::Webhook(url) => (
            Some(Arc::new(
                WebhookApprover::new(url).map_err(|e| e.to_string())?,
            )),
            None,
        ),
        Approvals::Custom(a) => (Some(Arc::clone(a)), None),
        // Made once the upstream is connected (it needs the operator's client).
        Approvals::Kubernetes(_) => (None, None),
    })
}

/// This replica's name in the approvals it holds: `--record-session` when given (the chart sets
/// it to the pod's name), else the host name, else a random one.
fn replica_name(session: Option<&str>) -> String {
    session
        .map(str::to_string)
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| {
            let mut b = [0u8; 4];
            let _ = getrandom::fill(&mut b);
            format!("kubeleash-{:08x}", u32::from_be_bytes(b))
        })
}

/// One way to connect (kubeleash-connect): the same upstream stack as the bindings. A
/// plain-HTTP `url` with no credential (the sandbox) when given; else the kubeconfig, and in a
/// pod with none given or found, the pod's service account. Its errors say what to fix in the
/// kubeconfig; what only the operator may see (a plugin's output) goes to standard error.
pub(crate) async fn connect(
    url: Option<&str>,
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> Result<Upstream, String> {
    let upstream = match url {
        Some(url) => Upstream::from_url(url),
        None => match Upstream::from_kubeconfig(kubeconfig, context).await {
            Err(_)
                if kubeconfig.is_none()
                    && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() =>
            {
                Upstream::in_cluster()
            }
            other => other,
        },
    };
    upstream.map_err(connect_failed)
}

/// A connection error as the agent may read it; the operator's details to standard error.
pub(crate) fn connect_failed(e: kubeleash_connect::ConnectError) -> String {
    if let Some(detail) = e.operator_detail() {
        eprintln!("kubeleash: {detail}");
    }
    e.to_string()
}

/// How many connections beyond the cap may be in their TLS handshake at once, to be told 503.
const BUSY_ANSWERS: usize = 32;
/// The longest the handshake of a connection beyond the cap may take.
const BUSY_HANDSHAKE: Duration = Duration::from_secs(5);

/// The first byte of a TLS handshake record: anything else on an HTTPS port is a client speaking
/// another protocol, most likely plain HTTP from an `http://` URL.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The TLS handshake of a new connection, within the header deadline (a client that connects
/// and sends nothing, or dribbles its hello, holds a slot no longer than one that dribbles its
/// headers). A client that speaks plain HTTP to the HTTPS port is told so in plain HTTP.
async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    within: Duration,
    mut stop: watch::Receiver<bool>,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let accept = async {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(1) if first[0] != TLS_HANDSHAKE_RECORD => {
                answer_and_close(stream, &plain_http_refusal()).await;
                None
            }
            Ok(1) => acceptor.accept(stream).await.ok(),
            _ => None,
        }
    };
    tokio::select! {
        r = tokio::time::timeout(within, accept) => r.ok().flatten(),
        _ = stop.changed() => None,
    }
}

/// The answer to a plain-HTTP request on the HTTPS port.
fn plain_http_refusal() -> Vec<u8> {
    let body = kubeleash_connect::status_body(
        400,
        "BadRequest",
        "kubeleash: this proxy serves HTTPS: use https:// and the CA in the kubeconfig it wrote (--agent-kubeconfig), or start it with --plain-http for clients that cannot do TLS",
    );
    let mut out = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Write `answer`, close the writing side, and read (and drop) what the client still sends for
/// a moment: closing a socket with unread bytes resets it, and the reset can reach the client
/// before it read the answer.
async fn answer_and_close<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, answer: &[u8]) {
    let done = async {
        if s.write_all(answer).await.is_err() || s.shutdown().await.is_err() {
            return;
        }
        let mut sink = [0u8; 4096];
        while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), done).await;
}

/// Serve the requests of one connection (HTTP/1.1, upgrades too) until it closes; when the
/// proxy stops, finish the request in flight and take no new one.
async fn serve_connection<I>(
    http1: &hyper::server::conn::http1::Builder,
    io: I,
    front: Arc<Front>,
    slot: Arc<OwnedSemaphorePermit>,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |req| forward(Arc::clone(&front), Arc::clone(&slot), req));
    let conn = http1.serve_connection(io, service).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            // Finish the request in flight, take no new one on this connection.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// The agent's kubeconfig, token file and CA file, if asked for.
fn write_agent_files(
    cfg: &ProxyConfig,
    addr: SocketAddr,
    token: Option<&AgentToken>,
    tls: Option<&ServingTls>,
) -> Result<(), String> {
    let url = base_url(addr, tls.is_some());
    let ca = tls.map(|t| t.ca_pem.as_str());
    if let Some(path) = &cfg.agent_ca_file {
        let Some(ca) = ca else {
            return Err(
                "--agent-ca-file is for a proxy that serves HTTPS; with --plain-http there is no CA"
                    .into(),
            );
        };
        // Public (a certificate); written privately all the same, like the other agent files.
        write_private(path, ca)?;
    }
    if let Some(path) = &cfg.agent_kubeconfig {
        let auth = token.map_or(AgentAuth::None, |t| AgentAuth::ProxyToken(t.secret()));
        write_private(path, &render(&url, &cfg.agent_namespace, ca, auth))?;
    }
    if let Some(path) = &cfg.agent_token_file {
        let Some(t) = token else {
            return Err(
                "--agent-token-file is for a proxy with --user/--group; with --oidc-issuer or --tokenreview-audience the agent presents its own token"
                    .into(),
            );
        };
        write_private(path, t.secret())?;
    }
    Ok(())
}

/// The proxy's URL on `addr`.
fn base_url(addr: SocketAddr, https: bool) -> String {
    format!("{}://{addr}", if https { "https" } else { "http" })
}

/// One request: the door checked on its headers (Host, Origin, the proxy's token, an OIDC
/// token), then its body buffered (the API server takes at most 3 MiB, within the body
/// deadline), sent through the layer and the upstream client; the response streams back.
/// Upgrades (exec, attach, port-forward) that the policy allowed are joined end to end, and
/// kept on the list a reload decides again.
async fn forward(
    front: Arc<Front>,
    slot: Arc<OwnedSemaphorePermit>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (mut parts, body) = req.into_parts();
    if let Err(r) = front.access.admit(&mut parts) {
        front.access.log_refusal(&r, parts.method.as_str());
        let code = StatusCode::from_u16(r.code).unwrap_or(StatusCode::FORBIDDEN);
        // A caller turned away at the door gives its connection slot back at once: otherwise
        // anyone could hold every slot with requests the door refuses.
        let mut refused = status(code, r.reason, &r.message);
        refused.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        return Ok(refused);
    }
    // Who is asking, before a byte of the body is read: a caller without a valid token makes
    // the proxy buffer nothing.
    let verified = match &front.verifier {
        None => None,
        Some(verifier) => match verifier.identity(&parts).await {
            Ok(id) => {
                parts.extensions.insert(Verified(id.clone()));
                Some(id)
            }
            Err(Rejected::Token(why, detail)) => {
                let logged = detail.map_or(String::new(), |d| {
                    let id = kubeleash_connect::correlation_id();
                    eprintln!(
                        "kubeleash proxy: [correlation id {id}] refused a token: {}",
                        d.escape_debug()
                    );
                    format!("; the operator's log has the reason under id {id}")
                });
                let mut refused = status(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    &format!(
                        "kubeleash: the request carries no identity kubeleash can verify: {why}{logged}"
                    ),
                );
                // Each new token costs a review: a caller sending bad ones pays a new
                // connection's handshake for the next.
                refused.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
                return Ok(refused);
            }
            Err(Rejected::Review(detail)) => {
                // The operator's side failed (its credential, the network): the agent learns
                // nothing of it but an id to quote; the operator gets the details.
                let id = kubeleash_connect::correlation_id();
                eprintln!(
                    "kubeleash proxy: [correlation id {id}] cannot check an agent's token: {detail}"
                );
                return Ok(status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    &format!(
                        "kubeleash could not check the request's token with the API server; the operator's log has the details under id {id}"
                    ),
                ));
            }
        },
    };
    let wants_upgrade = parts.headers.contains_key(UPGRADE);
    let server_upgrade = if wants_upgrade {
        let mut r = Request::from_parts(parts, ());
        let on = hyper::upgrade::on(&mut r);
        parts = r.into_parts().0;
        Some(on)
    } else {
        None
    };
    // Its share of the body budget is held until the response's head is back.
    let (bytes, _budget) = match read_body(&front, body).await {
        Ok(read) => read,
        Err(refused) => return Ok(refused),
    };
    // The upstream connection sets its own Host and framing.
    parts.headers.remove(HOST);
    parts.headers.remove(TRANSFER_ENCODING);
    let (method, path) = (parts.method.clone(), parts.uri.to_string());
    // A tunnel is decided again on reload: keep what the layer decides it on.
    let admitted = server_upgrade.is_some().then(|| Admitted {
        identity: verified.or_else(|| front.fixed.clone()).unwrap_or_default(),
        method: method.as_str().to_string(),
        target: parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string(),
        headers: parts.headers.clone(),
        body: bytes.clone(),
        approved: false,
    });
    let note = kubeleash_connect::Note::default();
    parts.extensions.insert(note.clone());
    let upstream = Request::from_parts(parts, kube::client::Body::from(bytes));
    match front.client.send(upstream).await {
        Ok(resp) if note.is_set() => {
            // The connection stack under the layer failed: the layer answered the agent with a
            // fixed Status and an id; the details go to the operator's log under that id.
            let detail = note.take().unwrap_or_default();
            let (mut rparts, body) = resp.into_parts();
            rparts.headers.remove(http::header::CONTENT_LENGTH);
            let bytes = Limited::new(body, 64 * 1024)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let id = kubeleash_connect::id_in(&bytes).unwrap_or_else(|| "unknown".into());
            eprintln!(
                "{}",
                upstream_error::log_text(&id, method.as_str(), &path, &detail)
            );
            Ok(Response::from_parts(
                rparts,
                Full::new(bytes).map_err(|e| match e {}).boxed_unsync(),
            ))
        }
        Ok(mut resp) => {
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                && let (Some(server_upgrade), Some(mut admitted)) = (server_upgrade, admitted)
            {
                admitted.approved = resp
                    .extensions()
                    .get::<Decision>()
                    .is_some_and(|d| d.effect == Effect::Approve);
                if let Err(d) = open_tunnel(&front, slot, admitted, server_upgrade, &mut resp) {
                    // Decided again under a policy reloaded since the layer let it through.
                    eprintln!(
                        "kubeleash proxy: refused to open a tunnel for {method} {}: the policy was reloaded and {}",
                        serde_json::Value::from(path.as_str()),
                        d.reason
                    );
                    return Ok(status(
                        StatusCode::FORBIDDEN,
                        "Forbidden",
                        &format!(
                            "kubeleash: the policy was reloaded and no longer allows this: {}",
                            d.reason
                        ),
                    ));
                }
            }
            Ok(resp.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()))
        }
        Err(e) => {
            // The error is made of the operator's kubeconfig and credential machinery: it goes
            // to the operator's log only; the agent gets a fixed message and the id to quote.
            let id = kubeleash_connect::correlation_id();
            eprintln!(
                "{}",
                upstream_error::log_line(&id, method.as_str(), &path, &e)
            );
            Ok(status(
                StatusCode::BAD_GATEWAY,
                "ServiceUnavailable",
                &kubeleash_connect::agent_message(&id),
            ))
        }
    }
}

/// Read a request body within the body deadline, at most the API server's 3 MiB, its bytes
/// taken from the proxy's body budget as they arrive (see [`MAX_BUFFERED`]).
async fn read_body(
    front: &Front,
    body: Incoming,
) -> Result<(Bytes, BudgetShare), Response<ProxyBody>> {
    match tokio::time::timeout(
        front.limits.body_timeout,
        front.body_budget.read(body, MAX_BODY),
    )
    .await
    {
        Ok(Ok(read)) => Ok(read),
        Ok(Err(e)) => {
            let (code, reason) = match e {
                BoundedReadError::TooLarge { .. } => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge")
                }
                BoundedReadError::OverBudget { .. } => {
                    (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests")
                }
                BoundedReadError::Body(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            };
            Err(status(code, reason, &format!("kubeleash: {e}")))
        }
        Err(_) => Err(status(
            StatusCode::REQUEST_TIMEOUT,
            "Timeout",
            &format!(
                "kubeleash: the request body did not arrive within {} s; send it at once",
                front.limits.body_timeout.as_secs_f64()
            ),
        )),
    }
}

/// Join the agent's connection to the API server's once both have switched, as a task kept
/// with the connections (shutdown cuts it after the grace period) and on the tunnel list (a
/// reload that no longer allows it cuts it). It holds the connection's slot while it runs.
fn open_tunnel<B>(
    front: &Arc<Front>,
    slot: Arc<OwnedSemaphorePermit>,
    admitted: Admitted,
    server_upgrade: hyper::upgrade::OnUpgrade,
    resp: &mut Response<B>,
) -> Result<(), Decision> {
    let mut ticket = front.tunnels.register(admitted, || front.policy.get())?;
    let client_upgrade = hyper::upgrade::on(resp);
    let token = Arc::clone(&front.connections);
    let task = tokio::spawn(async move {
        let (_token, _slot) = (token, slot);
        let joined = async {
            if let (Ok(a), Ok(b)) = (server_upgrade.await, client_upgrade.await) {
                let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
                let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
            }
        };
        tokio::select! {
            _ = joined => {}
            // Dropping both ends closes both connections.
            _ = ticket.cut.wait_for(|cut| *cut) => {}
        }
    });
    track(&front.open_tasks, task.abort_handle());
    Ok(())
}

impl RunningProxy {
    /// The URL agents use: `https://ADDR`, or `http://ADDR` with plain HTTP.
    pub fn url(&self) -> String {
        base_url(self.addr, self.ca_pem.is_some())
    }

    /// The CA that vouches for this proxy's HTTPS (PEM); none with plain HTTP.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The bearer token agents must present (with a fixed identity; none with OIDC).
    pub fn agent_token(&self) -> Option<&str> {
        self.token.as_ref().map(AgentToken::secret)
    }

    /// A kubeconfig for the agent: this proxy's URL, the CA that vouches for it, and its token;
    /// no cluster credential.
    pub fn agent_kubeconfig(&self, namespace: &str) -> String {
        let auth = match self.agent_token() {
            Some(t) => AgentAuth::ProxyToken(t),
            None => AgentAuth::None,
        };
        render(&self.url(), namespace, self.ca_pem(), auth)
    }

    /// Compile the policy file again; on success it is in force for new requests, on failure the
    /// old one stays and the error says why.
    ///
    /// Open tunnels (exec, attach, port-forward, proxy) are decided again under the new policy,
    /// and those it no longer lets through are cut; each cut is logged to stderr.
    pub fn reload(&self) -> Result<(), String> {
        let p = load_policy(&self.policy_path)?;
        self.policy.set(p);
        for cut in self.tunnels.reloaded(&self.policy.get()) {
            eprintln!(
                "kubeleash proxy: the reloaded policy no longer allows an open tunnel; cut {cut}"
            );
        }
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
        let mtime = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut seen: Option<SystemTime> = mtime(&self.policy_path);
        // The certificate's files as they were: a renewal (a kubelet swapping a Secret's
        // files) is served to new connections within a second.
        let certs = |files: &Option<Arc<tls::CertFiles>>| {
            files.as_ref().map(|f| {
                f.paths()
                    .map(|p| (mtime(p), std::fs::read(p).ok().map(|b| b.len())))
            })
        };
        let mut certs_seen = certs(&self.cert_files);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    self.report_reload();
                    self.reload_certificate();
                }
                _ = tick.tick() => {
                    let now = mtime(&self.policy_path);
                    if now != seen {
                        seen = now;
                        self.report_reload();
                    }
                    let now = certs(&self.cert_files);
                    if now != certs_seen {
                        certs_seen = now;
                        self.reload_certificate();
                    }
                }
            }
        }
        eprintln!("kubeleash proxy: shutting down");
        let grace = self.limits.shutdown_grace;
        self.shutdown(grace).await;
    }

    /// Serve the certificate files as they are now to new connections; a pair that does not
    /// load (a renewal half written) leaves the one in service, and is tried again when the
    /// files change again.
    fn reload_certificate(&self) {
        let Some(files) = &self.cert_files else {
            return;
        };
        match files.reload() {
            Ok(()) => eprintln!("kubeleash proxy: serving certificate reloaded"),
            Err(e) => eprintln!(
                "kubeleash proxy: {e}; the certificate in service stays until the files load"
            ),
        }
    }

    fn report_reload(&self) {
        match self.reload() {
            Ok(()) => eprintln!("kubeleash proxy: policy reloaded"),
            Err(e) => eprintln!("kubeleash proxy: {e}; the previous policy stays in force"),
        }
    }
}
