//! `kubeleash mcp`: Kubernetes for agents as MCP tools, every call decided by the same engine as
//! the proxy. A tool call becomes the Kubernetes API requests kubectl would send for it
//! ([`calls`]), and those go through the kubeleash layer over the operator's credential
//! ([`engine`]): allowed, refused with the rule, or held for a person exactly as the kubectl
//! command would be, answers masked, everything recorded so that `kubeleash replay` prints the
//! kubectl commands. The tools listed are those the policy lets the identity use
//! ([`catalogue`]). No tool shows configuration, contexts or credentials: there is none to
//! show, the kubeconfig stays in the engine.
//!
//! Served over stdio (desktop agents start it as a subprocess) or, with `--listen`, streamable
//! HTTP on loopback behind the proxy's door ([`http_front`]).

mod args;
mod calls;
mod catalogue;
mod discovery;
mod engine;
mod handler;
mod held;
mod http_front;
mod tool_error;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use kubeleash_core::policy::Identity;
use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;

use crate::proxy::{
    APPROVAL_TIMEOUT, AgentToken, ModeArg, RETRY_AFTER, approval_mode, parse_approvals,
    write_private,
};
use crate::report::USAGE;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy file; reloaded on SIGHUP or when it changes (clients are told when the tool
    /// list changes).
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// The operator's kubeconfig (default: $KUBECONFIG, then ~/.kube/config). It stays in
    /// kubeleash: no tool shows it.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
    /// The agent's user name (default: agent).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// The agent's groups; repeat for several.
    #[arg(long = "group", value_name = "NAME")]
    groups: Vec<String>,
    /// With --listen: identify each HTTP request by the OIDC bearer token it carries, from
    /// this issuer, instead of --user/--group and a token kubeleash makes (tools are listed
    /// and calls decided for the identity each token proves).
    #[arg(long, value_name = "URL", requires_all = ["listen", "oidc_audience", "oidc_jwks"], conflicts_with_all = ["user", "groups", "agent_token_file"])]
    oidc_issuer: Option<String>,
    /// The audience the tokens must carry.
    #[arg(long, value_name = "AUD", requires = "oidc_issuer")]
    oidc_audience: Option<String>,
    /// The issuer's keys (a JWKS file).
    #[arg(long, value_name = "FILE", requires = "oidc_issuer")]
    oidc_jwks: Option<PathBuf>,
    /// The claim holding the user name.
    #[arg(long, value_name = "NAME", default_value = "sub")]
    user_claim: String,
    /// The claim holding the groups.
    #[arg(long, value_name = "NAME", default_value = "groups")]
    groups_claim: String,
    /// The namespace tools work in when a call names none (default: the kubeconfig context's).
    #[arg(long, value_name = "NAME")]
    namespace: Option<String>,
    /// Record every request to this file (hash-chained JSON Lines; `kubeleash replay`).
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// With --record: also record each answer as the agent received it (masked), capped at
    /// BYTES each.
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
    /// Who approves held requests: `socket` (`kubeleash approvals ...`) or `webhook=URL`.
    /// Without it, requests the policy holds are refused.
    #[arg(long, value_name = "HOW")]
    approvals: Option<String>,
    /// The approvals socket (with --approvals socket).
    #[arg(long, value_name = "PATH")]
    approvals_socket: Option<PathBuf>,
    /// How long a held call waits for an answer.
    #[arg(long, value_name = "SECONDS", default_value_t = APPROVAL_TIMEOUT)]
    approval_timeout: u64,
    /// Answer a held call at once with a pending-approval result naming its approval id,
    /// instead of waiting (with progress notifications); the same call made again does it
    /// once a person approves. SECONDS is the retry hint (default 10).
    #[arg(
        long,
        value_name = "SECONDS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = RETRY_AFTER,
        requires = "approvals"
    )]
    approvals_nonblocking: Option<u64>,
    /// Enforce the policy, or only observe (record what it would do, let everything through).
    #[arg(long, value_enum, default_value = "enforce")]
    mode: ModeArg,
    /// Serve streamable HTTP at http://ADDR/mcp (loopback only) instead of stdio; give
    /// --agent-token-file or --oidc-issuer, which say how the agent proves itself.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// With --listen: write the bearer token every HTTP request must carry here (0600), for
    /// the identity --user/--group name.
    #[arg(long, value_name = "FILE", requires = "listen")]
    agent_token_file: Option<PathBuf>,
}

pub fn run(a: Args) -> ExitCode {
    let approvals = match parse_approvals(a.approvals.as_deref(), a.approvals_socket.as_ref()) {
        Ok(crate::proxy::Approvals::Terminal) if a.listen.is_none() => {
            eprintln!(
                "error: --approvals terminal cannot ask on the terminal while MCP speaks over stdio; use --approvals socket or webhook=URL"
            );
            return ExitCode::from(USAGE);
        }
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(USAGE);
        }
    };
    let approval_mode = match approval_mode(a.approvals_nonblocking) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(USAGE);
        }
    };
    if let Some(ns) = &a.namespace
        && args::check_namespace(ns).is_err()
    {
        eprintln!("error: --namespace `{ns}` is not a namespace name");
        return ExitCode::from(USAGE);
    }
    if a.listen.is_some() && a.agent_token_file.is_none() && a.oidc_issuer.is_none() {
        eprintln!(
            "error: over HTTP the agent proves itself to kubeleash: give --agent-token-file FILE (kubeleash makes a token and writes it there) or --oidc-issuer (the agent's own OIDC token)"
        );
        return ExitCode::from(USAGE);
    }
    let door = match &a.oidc_issuer {
        Some(issuer) => match crate::proxy::Oidc::new(
            a.oidc_jwks.as_deref().unwrap_or(std::path::Path::new("")),
            issuer.clone(),
            a.oidc_audience.clone().unwrap_or_default(),
            a.user_claim.clone(),
            a.groups_claim.clone(),
        ) {
            Ok(o) => Some(std::sync::Arc::new(o)),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(USAGE);
            }
        },
        None => None,
    };
    let fixed = door.is_none().then(|| {
        Identity::new(
            a.user.clone().unwrap_or_else(|| "agent".into()),
            a.groups.clone(),
        )
    });
    let setup = engine::Setup {
        policy: a.policy.clone(),
        kubeconfig: a.kubeconfig.clone(),
        context: a.context.clone(),
        identity: fixed,
        record: a.record.clone(),
        record_bodies: a.record_bodies,
        signing_key: a.signing_key.clone(),
        record_session: a.record_session.clone(),
        approvals,
        approval_timeout: Duration::from_secs(a.approval_timeout),
        approval_mode,
        mode: a.mode.mode(),
        namespace: a.namespace.clone(),
    };
    let rt = match crate::report::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let served = rt.block_on(async move {
        let engine = engine::Engine::start(setup).await?;
        if let Some(k) = &a.signing_key {
            crate::signing_key::announce(k);
        }
        let server = handler::Server::new(engine);
        tokio::spawn(watch_policy(server.clone(), a.policy.clone()));
        match a.listen {
            Some(listen) => {
                let l = http_front::bind(listen).await?;
                let door = match (door, &a.agent_token_file) {
                    (Some(oidc), _) => http_front::Door::Oidc(oidc),
                    (None, Some(token_file)) => {
                        let token = AgentToken::generate()?;
                        write_private(token_file, token.secret()).map_err(|e| {
                            format!(
                                "cannot write the agent's token to `{}`: {e}",
                                token_file.display()
                            )
                        })?;
                        http_front::Door::Token(token)
                    }
                    (None, None) => {
                        return Err("--listen needs --agent-token-file or --oidc-issuer".into());
                    }
                };
                println!("listening on http://{}{}", l.addr, http_front::PATH);
                let stop = CancellationToken::new();
                let signalled = stop.clone();
                tokio::spawn(async move {
                    shutdown_signal().await;
                    signalled.cancel();
                });
                http_front::serve(l, server.clone(), door, stop).await;
                Ok::<_, String>(server)
            }
            None => {
                let running = server
                    .clone()
                    .serve(rmcp::transport::stdio())
                    .await
                    .map_err(|e| format!("the MCP session did not start: {e}"))?;
                tokio::select! {
                    _ = running.waiting() => {}
                    _ = shutdown_signal() => {}
                }
                Ok(server)
            }
        }
    });
    match served {
        Ok(server) => {
            // The record's closing entry, written off the runtime (it waits for the writer).
            server.engine().close();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(USAGE)
        }
    }
}

/// Reload the policy on SIGHUP or when its file changes, as the proxy does; one that does not
/// compile leaves the previous one in force.
async fn watch_policy(server: handler::Server, path: PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    let mtime = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = mtime(&path);
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let hung_up = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = hung_up => {}
            _ = tick.tick() => {
                let now = mtime(&path);
                if now == seen {
                    continue;
                }
                seen = now;
            }
        }
        match server.reload(&path).await {
            Ok(()) => eprintln!("kubeleash mcp: policy reloaded"),
            Err(e) => eprintln!("kubeleash mcp: {e}; the previous policy stays in force"),
        }
    }
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
