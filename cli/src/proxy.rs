//! `kubeleash proxy`: the gateway for agents that run kubectl. The agent gets a kubeconfig that
//! points here and holds no credential of the operator's, only the proxy's own token and the CA
//! the proxy made at start for its HTTPS; the proxy holds the operator's credential, enforces the
//! policy, holds privileged requests for a person, masks, and records.
//!
//! A reload reaches open exec, attach, port-forward and proxy streams too: each is decided
//! again and cut if the new policy no longer lets it through. What a client may cost is bounded
//! ([`limits::Limits`]): connections at once, time to send headers and body, and the door
//! (Host, Origin, the proxy's token or the OIDC token's signature) is checked before a byte of
//! the body is read.

pub(crate) mod access;
mod agent_config;
mod limits;
pub(crate) mod oidc;
mod server;
mod tls;
mod tokenreview;
mod tunnels;
mod upstream_error;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use kubeleash_core::policy::Identity;
use kubeleash_tower::{ApprovalMode, Mode};
use limits::Limits;

pub(crate) use access::{Access, AgentToken};
pub use agent_config::write_private;
pub(crate) use oidc::Oidc;
pub use server::{Approvals, IdentityConfig, ProxyConfig, start};
pub(crate) use server::{approver, connect, connect_failed, load_policy, open_recorder};

use crate::report::USAGE;

/// How long a held request waits for a person by default (`--approval-timeout`), in seconds.
pub(crate) const APPROVAL_TIMEOUT: u64 = 300;
/// The retry hint of `--approvals-nonblocking` given without a value, in seconds.
pub(crate) const RETRY_AFTER: &str = "10";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ModeArg {
    /// Deny what the policy denies, hold what it holds.
    Enforce,
    /// Decide and record what the policy would do, and let everything through (masking still
    /// applies): for rolling a policy out, and for `kubeleash learn` to write one from.
    #[value(alias = "audit")]
    Observe,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy file; reloaded on SIGHUP or when it changes (open exec, attach and
    /// port-forward streams it no longer allows are cut).
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// The operator's kubeconfig (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
    /// Where to listen: loopback, unless every request proves its own identity
    /// (--tokenreview-audience, --oidc-issuer) over a certificate agents trust
    /// (--tls-cert-file). The proxy serves HTTPS there, with a CA and certificate it makes at
    /// start (in memory; the agent's kubeconfig holds the CA) unless given one, or --plain-http.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8001")]
    listen: SocketAddr,
    /// Serve plain HTTP instead of HTTPS, for clients that cannot do TLS. The agent's token then
    /// crosses loopback in clear, and the agent's kubeconfig carries it in the server URL's path
    /// (kubectl sends no credential to a plain-HTTP server), where `kubectl get --raw` drops it.
    #[arg(long)]
    plain_http: bool,
    /// Serve this certificate chain (PEM, the serving certificate first, the CA agents trust
    /// last) instead of making a CA at start: what a proxy agents reach over the network
    /// serves (the same for every replica and restart). Needed to listen off loopback. Read
    /// again when the files change (a renewal) or on SIGHUP: new connections get the new
    /// certificate; a pair that does not load leaves the one in service.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key_file",
        conflicts_with = "plain_http"
    )]
    tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// A DNS name agents reach the proxy by (a Service's, e.g. kubeleash.ns.svc), accepted in
    /// `Host` besides the listen address; repeat for several.
    #[arg(long = "serve-name", value_name = "NAME")]
    serve_names: Vec<String>,
    /// Record every request to this file (hash-chained JSON Lines).
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// With --record: also record each response body as the agent received it (masked),
    /// capped at BYTES each (`kubeleash replay --html` shows them).
    #[arg(long, value_name = "BYTES", requires = "record")]
    record_bodies: Option<usize>,
    /// Sign the record with the Ed25519 key in FILE (PKCS#8 PEM), made there with mode 0600 when
    /// there is none, with its public half beside it (FILE with the extension `.pub`): a checkpoint
    /// signs every line before it, so `kubeleash replay --verify --key session.pub` finds any
    /// rewrite made without the key.
    #[arg(long, value_name = "FILE", requires = "record")]
    signing_key: Option<PathBuf>,
    /// The record's session, in every record it writes (with its seq, what a reader of
    /// several replicas' records tells them apart by): a replica's name, e.g. its pod's.
    /// Default: `s` and the start time in milliseconds.
    #[arg(long, value_name = "NAME", requires = "record")]
    record_session: Option<String>,
    /// The agent's user name (fixed identity).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// The agent's groups (fixed identity); repeat for several.
    #[arg(long = "group", value_name = "NAME")]
    groups: Vec<String>,
    /// Identify agents by OIDC bearer tokens from this issuer.
    #[arg(long, value_name = "URL", requires_all = ["oidc_audience", "oidc_jwks"])]
    oidc_issuer: Option<String>,
    /// Identify agents as Kubernetes workloads: the bearer token is a ServiceAccount token
    /// bound to this audience (`kubectl create token SA --audience AUD`, or a projected volume),
    /// and the API server says whose it is (a TokenReview with the operator's credential, which
    /// needs `create` on tokenreviews). The identity is
    /// `system:serviceaccount:NS:NAME` with its groups.
    #[arg(long, value_name = "AUD", conflicts_with_all = ["user", "groups", "oidc_issuer"])]
    tokenreview_audience: Option<String>,
    /// The audience the tokens must carry.
    #[arg(long, value_name = "AUD")]
    oidc_audience: Option<String>,
    /// The issuer's keys (a JWKS file).
    #[arg(long, value_name = "FILE")]
    oidc_jwks: Option<PathBuf>,
    /// The claim holding the user name.
    #[arg(long, value_name = "NAME", default_value = "sub")]
    user_claim: String,
    /// The claim holding the groups.
    #[arg(long, value_name = "NAME", default_value = "groups")]
    groups_claim: String,
    /// Who approves held requests: `socket` (`kubeleash approvals ...`), `terminal`,
    /// `webhook=URL` (the answer is the webhook's response), or `chat=URL` (a Slack message is
    /// posted to URL; the answer comes back as a signed callback, see --approvals-callback), or
    /// `kubernetes[=NAMESPACE]` (held requests, answers and grants are objects in the cluster,
    /// shared by every replica: `kubeleash approvals --kubernetes`, or kubectl; NAMESPACE
    /// defaults to the pod's own). Without it, requests the policy holds are denied.
    #[arg(long, value_name = "HOW")]
    approvals: Option<String>,
    /// With --approvals chat=URL: where to serve the signed answer callbacks, a loopback
    /// address (127.0.0.1:PORT; port 0 picks one). Its URL is printed to stderr at start. The
    /// shared secret comes from KUBELEASH_WEBHOOK_SECRET_FILE (or KUBELEASH_WEBHOOK_SECRET).
    #[arg(long, value_name = "ADDR")]
    approvals_callback: Option<SocketAddr>,
    /// The approvals socket (with --approvals socket).
    #[arg(long, value_name = "PATH")]
    approvals_socket: Option<PathBuf>,
    /// How long a held request waits for an answer.
    #[arg(long, value_name = "SECONDS", default_value_t = APPROVAL_TIMEOUT)]
    approval_timeout: u64,
    /// Answer a held request at once instead of keeping it open, for agents whose HTTP clients
    /// time out: 403 Forbidden naming its approval id (in the message, the Status details and
    /// the X-Kubeleash-Approval-Id header) with Retry-After: SECONDS (default 10). The approver
    /// is asked meanwhile; the identical request sent again gets the same answer until a person
    /// answers, then goes through once if approved (an approval unused within
    /// --approval-timeout expires), or is told the refusal and its reason.
    #[arg(
        long,
        value_name = "SECONDS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = RETRY_AFTER,
        requires = "approvals"
    )]
    approvals_nonblocking: Option<u64>,
    /// Enforce the policy, or only observe: record what it would do and let everything through
    /// (`audit` is the former name of `observe`).
    #[arg(long, value_enum, default_value = "enforce")]
    mode: ModeArg,
    /// Write the agent's kubeconfig here (0600): this proxy's URL and, with --user/--group,
    /// the token this proxy makes at start and requires. No cluster credential.
    #[arg(long, value_name = "FILE")]
    agent_kubeconfig: Option<PathBuf>,
    /// Write this proxy's token alone here (0600), for `kubeleash kubeconfig
    /// --proxy-token-file FILE`, or for clients that send it as `Authorization: Bearer`.
    #[arg(long, value_name = "FILE")]
    agent_token_file: Option<PathBuf>,
    /// Write the CA certificate that vouches for this proxy's HTTPS here (PEM; public), for
    /// `kubeleash kubeconfig --certificate-authority FILE` or any client that takes a CA file.
    /// The CA's private key is never written anywhere.
    #[arg(long, value_name = "FILE", conflicts_with = "plain_http")]
    agent_ca_file: Option<PathBuf>,
    /// The namespace the agent's kubeconfig works in.
    #[arg(long, value_name = "NAME", default_value = "default")]
    agent_namespace: String,
    /// Connections open at once (exec and port-forward streams included); more are answered
    /// 503 and closed.
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_connections: usize,
    /// Seconds a client has to send a request's headers (and the longest an idle kept-alive
    /// connection stays open).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    header_timeout: u64,
    /// Seconds a client has to send a request's body once its headers are in.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    body_timeout: u64,
    /// On SIGTERM, seconds that requests still running (watches, exec) may go on before they
    /// are cut.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    shutdown_grace: u64,
}

impl ModeArg {
    /// The layer's mode.
    pub(crate) fn mode(self) -> Mode {
        match self {
            ModeArg::Enforce => Mode::Enforce,
            ModeArg::Observe => Mode::Audit,
        }
    }
}

/// How held requests wait, from `--approvals-nonblocking[=SECONDS]`.
pub(crate) fn approval_mode(nonblocking: Option<u64>) -> Result<ApprovalMode, String> {
    match nonblocking {
        None => Ok(ApprovalMode::Blocking),
        Some(0) => Err("--approvals-nonblocking=SECONDS must be at least 1".into()),
        Some(n) => Ok(ApprovalMode::NonBlocking {
            retry_after: Duration::from_secs(n),
        }),
    }
}

/// Who approves, as the flags say; the chat channel is started in the runtime.
enum Chosen {
    Ready(Approvals),
    Chat { url: String, callback: SocketAddr },
}

fn approvals(a: &Args) -> Result<Chosen, String> {
    let chat = a.approvals.as_deref().and_then(|w| w.strip_prefix("chat="));
    match (chat, a.approvals_callback) {
        (Some(url), Some(callback)) => {
            return Ok(Chosen::Chat {
                url: url.to_string(),
                callback,
            });
        }
        (Some(_), None) => {
            return Err(
                "--approvals chat=URL needs --approvals-callback 127.0.0.1:PORT, where the \
                 signed answers come back"
                    .into(),
            );
        }
        (None, Some(_)) => {
            return Err(
                "--approvals-callback is for --approvals chat=URL; give that too, or drop it"
                    .into(),
            );
        }
        (None, None) => {}
    }
    approvals_ready(a).map(Chosen::Ready)
}

fn approvals_ready(a: &Args) -> Result<Approvals, String> {
    parse_approvals(a.approvals.as_deref(), a.approvals_socket.as_ref())
}

/// Who approves, from `--approvals HOW` (all but `chat=URL`, which needs a callback server) and
/// `--approvals-socket`.
pub(crate) fn parse_approvals(
    how: Option<&str>,
    socket: Option<&PathBuf>,
) -> Result<Approvals, String> {
    match how {
        None => Ok(Approvals::None),
        Some("socket") => Ok(Approvals::Socket(
            socket
                .cloned()
                .unwrap_or_else(crate::approvals::default_socket_path),
        )),
        Some("terminal") => Ok(Approvals::Terminal),
        Some(w) if w.starts_with("webhook=") => Ok(Approvals::Webhook(
            w.trim_start_matches("webhook=").to_string(),
        )),
        Some("kubernetes") => in_cluster_namespace().map(Approvals::Kubernetes).ok_or_else(|| {
            "--approvals kubernetes keeps approvals in the pod's own namespace, and this is not a \
             pod: name the namespace, e.g. --approvals kubernetes=kubeleash"
                .to_string()
        }),
        Some(k) if k.starts_with("kubernetes=") => {
            let ns = k.trim_start_matches("kubernetes=");
            if ns.is_empty()
                || ns.len() > 63
                || !ns.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            {
                return Err(format!(
                    "--approvals kubernetes=`{ns}` is not a namespace name (lowercase letters, digits and '-', at most 63)"
                ));
            }
            Ok(Approvals::Kubernetes(ns.to_string()))
        }
        Some(other) => Err(format!(
            "--approvals `{other}` is not socket, terminal, webhook=URL, chat=URL or kubernetes[=NAMESPACE]"
        )),
    }
}

/// The namespace of the pod this runs in (its service account's), if it is one.
fn in_cluster_namespace() -> Option<String> {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

pub fn run(a: Args) -> ExitCode {
    let identity = match (&a.oidc_issuer, &a.user) {
        _ if a.tokenreview_audience.is_some() => IdentityConfig::TokenReview {
            audience: a.tokenreview_audience.clone().unwrap_or_default(),
        },
        (Some(_), Some(_)) => {
            eprintln!(
                "error: give either --user/--group (one local agent) or --oidc-issuer (tokens), not both"
            );
            return ExitCode::from(USAGE);
        }
        (Some(issuer), None) => IdentityConfig::Oidc {
            issuer: issuer.clone(),
            audience: a.oidc_audience.clone().unwrap_or_default(),
            jwks: a.oidc_jwks.clone().unwrap_or_default(),
            user_claim: a.user_claim.clone(),
            groups_claim: a.groups_claim.clone(),
        },
        (None, user) => IdentityConfig::Fixed(Identity::new(
            user.clone().unwrap_or_else(|| "agent".into()),
            a.groups.clone(),
        )),
    };
    if matches!(identity, IdentityConfig::Fixed(_))
        && a.agent_kubeconfig.is_none()
        && a.agent_token_file.is_none()
    {
        eprintln!(
            "error: with --user/--group the proxy makes a bearer token at start and requires it of every request; say where the agent gets it: --agent-kubeconfig FILE (a kubeconfig for the agent) or --agent-token-file FILE (for `kubeleash kubeconfig --proxy-token-file FILE`)"
        );
        return ExitCode::from(USAGE);
    }
    // With the operator's certificate, agents already have its CA (the chart gives it to them).
    if !a.plain_http
        && a.tls_cert_file.is_none()
        && a.agent_kubeconfig.is_none()
        && a.agent_ca_file.is_none()
    {
        eprintln!(
            "error: the proxy serves HTTPS with a CA it makes at start, and the agent needs that CA to trust it; say where the agent gets it: --agent-kubeconfig FILE (a kubeconfig with the CA) or --agent-ca-file FILE (for `kubeleash kubeconfig --certificate-authority FILE`), or serve plain HTTP with --plain-http (for clients that cannot do TLS)"
        );
        return ExitCode::from(USAGE);
    }
    let approvals = match approvals(&a) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(USAGE);
        }
    };
    let mut config = ProxyConfig {
        policy: a.policy.clone(),
        kubeconfig: a.kubeconfig.clone(),
        context: a.context.clone(),
        listen: a.listen,
        record: a.record.clone(),
        record_bodies: a.record_bodies,
        signing_key: a.signing_key.clone(),
        record_session: a.record_session.clone(),
        identity,
        approvals: match &approvals {
            Chosen::Ready(x) => x.clone(),
            Chosen::Chat { .. } => Approvals::None,
        },
        approval_timeout: Duration::from_secs(a.approval_timeout),
        mode: a.mode.mode(),
        upstream: None,
        agent_kubeconfig: a.agent_kubeconfig.clone(),
        agent_token_file: a.agent_token_file.clone(),
        agent_namespace: a.agent_namespace.clone(),
        plain_http: a.plain_http,
        agent_ca_file: a.agent_ca_file.clone(),
        tls_files: a.tls_cert_file.clone().zip(a.tls_key_file.clone()),
        serve_names: a.serve_names.clone(),
    };
    let approval_mode = match approval_mode(a.approvals_nonblocking) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(USAGE);
        }
    };
    if a.max_connections == 0 || a.header_timeout == 0 || a.body_timeout == 0 {
        eprintln!(
            "error: --max-connections, --header-timeout and --body-timeout must be at least 1"
        );
        return ExitCode::from(USAGE);
    }
    let limits = Limits {
        max_connections: a.max_connections,
        header_timeout: Duration::from_secs(a.header_timeout),
        body_timeout: Duration::from_secs(a.body_timeout),
        shutdown_grace: Duration::from_secs(a.shutdown_grace),
    };
    let rt = match crate::report::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        if let Chosen::Chat { url, callback } = &approvals {
            match crate::approvals::ChatApprover::start(url, *callback).await {
                Ok(chat) => {
                    eprintln!(
                        "kubeleash proxy: approval callbacks at {} (signed POSTs; see `kubeleash proxy --help`)",
                        chat.callback_url()
                    );
                    config.approvals = Approvals::Custom(std::sync::Arc::new(chat));
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(USAGE);
                }
            }
        }
        let proxy = match server::start_with(config, limits, approval_mode).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(USAGE);
            }
        };
        println!("listening on {}", proxy.url());
        if let Some(k) = &a.signing_key {
            crate::signing_key::announce(k);
        }
        let ca = a
            .agent_ca_file
            .as_ref()
            .map(|f| format!(" --certificate-authority {}", f.display()))
            .unwrap_or_default();
        let oidc = a.oidc_issuer.is_some() || a.tokenreview_audience.is_some();
        let whose = if a.oidc_issuer.is_some() {
            "OIDC token"
        } else {
            "ServiceAccount token (for this audience)"
        };
        match (&a.agent_kubeconfig, &a.agent_token_file) {
            (Some(k), _) if oidc => eprintln!(
                "kubeleash proxy: the agent's kubeconfig is {} (this proxy's URL and CA; add the agent's {whose} as its user's tokenFile, or use `kubeleash kubeconfig --server {}{ca} --token-file FILE`)",
                k.display(),
                proxy.url()
            ),
            (Some(k), _) => eprintln!(
                "kubeleash proxy: the agent's kubeconfig is {} (it holds this proxy's token{}, valid until the proxy stops)",
                k.display(),
                if a.plain_http { "" } else { " and CA" }
            ),
            (None, Some(t)) => eprintln!(
                "kubeleash proxy: give the agent `kubeleash kubeconfig --server {}{ca} --proxy-token-file {}`",
                proxy.url(),
                t.display()
            ),
            (None, None) => eprintln!(
                "kubeleash proxy: give the agent `kubeleash kubeconfig --server {}{ca} --token-file FILE`, FILE holding its {whose}",
                proxy.url()
            ),
        }
        proxy.serve_until_signalled().await;
        ExitCode::SUCCESS
    })
}

#[derive(Debug, clap::Args)]
pub struct KubeconfigArgs {
    /// The proxy's URL.
    #[arg(long, value_name = "URL")]
    server: String,
    /// A file holding the agent's OIDC token, for a proxy that identifies agents by OIDC
    /// (`tokenFile`; client-go, so kubectl, sends it only to an https server, while kube-rs and
    /// the Python client send it over plain HTTP too).
    #[arg(long, value_name = "FILE", conflicts_with = "proxy_token_file")]
    token_file: Option<PathBuf>,
    /// The file the proxy wrote its token to (`kubeleash proxy --agent-token-file`). For an
    /// https server it is the user's token; for a plain-HTTP one (`--plain-http`) it goes into
    /// the server URL, where kubectl sends it even over plain HTTP.
    #[arg(long, value_name = "FILE")]
    proxy_token_file: Option<PathBuf>,
    /// The CA certificate (PEM) that vouches for the proxy's HTTPS: the file `kubeleash proxy
    /// --agent-ca-file` wrote. It goes into the kubeconfig as `certificate-authority-data`.
    #[arg(long, value_name = "FILE")]
    certificate_authority: Option<PathBuf>,
    /// The namespace the agent works in by default.
    #[arg(long, value_name = "NAME", default_value = "default")]
    namespace: String,
}

/// The text of the file at `path`, if one is given, when `valid` accepts it; otherwise the
/// error printed (`not_valid` says what is wrong with it) and the usage exit code.
fn read_checked(
    path: Option<&std::path::Path>,
    valid: impl Fn(&str) -> bool,
    not_valid: &str,
) -> Result<Option<String>, ExitCode> {
    let Some(f) = path else {
        return Ok(None);
    };
    match std::fs::read_to_string(f) {
        Ok(t) if valid(&t) => Ok(Some(t)),
        Ok(_) => {
            eprintln!("error: `{}` {not_valid}", f.display());
            Err(ExitCode::from(USAGE))
        }
        Err(e) => {
            eprintln!(
                "error: cannot read `{}`: {}",
                f.display(),
                e.to_string().to_lowercase()
            );
            Err(ExitCode::from(USAGE))
        }
    }
}

/// `kubeleash kubeconfig`: the agent's kubeconfig. It points at the proxy and holds no
/// credential of the operator's; the agent's bearer is read from `--token-file` (the proxy's
/// `--agent-token-file`, or the agent's OIDC token).
pub fn kubeconfig(a: KubeconfigArgs) -> ExitCode {
    let proxy_token = match read_checked(
        a.proxy_token_file.as_deref(),
        |t| is_proxy_token(t.trim()),
        "does not hold a kubeleash proxy token (kubeleash-, then 64 hex digits); pass the file `kubeleash proxy --agent-token-file` wrote",
    ) {
        Ok(t) => t.map(|t| t.trim().to_string()),
        Err(code) => return code,
    };
    let ca = match read_checked(
        a.certificate_authority.as_deref(),
        is_certificate_pem,
        "is not a PEM certificate (and only certificates, no private key); pass the file `kubeleash proxy --agent-ca-file` wrote",
    ) {
        Ok(pem) => pem,
        Err(code) => return code,
    };
    let auth = match (&a.token_file, &proxy_token) {
        (Some(f), _) => agent_config::AgentAuth::TokenFile(f),
        (None, Some(t)) => agent_config::AgentAuth::ProxyToken(t),
        (None, None) => agent_config::AgentAuth::None,
    };
    print!(
        "{}",
        agent_config::render(&a.server, &a.namespace, ca.as_deref(), auth)
    );
    ExitCode::SUCCESS
}

/// Whether `pem` holds one or more PEM certificates and nothing secret (a private key given by
/// mistake is refused, not copied into a kubeconfig).
fn is_certificate_pem(pem: &str) -> bool {
    pem.contains("-----BEGIN CERTIFICATE-----")
        && pem.contains("-----END CERTIFICATE-----")
        && !pem.contains("PRIVATE KEY")
}

/// What `kubeleash proxy` writes with `--agent-token-file`: `kubeleash-` and 64 hex digits.
fn is_proxy_token(t: &str) -> bool {
    t.strip_prefix("kubeleash-")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|c| c.is_ascii_hexdigit()))
}
