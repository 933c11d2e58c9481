//! `kubeleash proxy`: the gateway for agents that run kubectl. The agent gets a kubeconfig that
//! points here and holds no credential; the proxy holds the operator's, enforces the policy,
//! holds privileged requests for a person, masks, and records.

mod oidc;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use kubeleash_core::policy::Identity;
use kubeleash_tower::Mode;

pub use server::{Approvals, IdentityConfig, ProxyConfig, start};

use crate::report::USAGE;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ModeArg {
    Enforce,
    Audit,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy file; reloaded on SIGHUP or when it changes.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// The operator's kubeconfig (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
    /// Where to listen; loopback only.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8001")]
    listen: SocketAddr,
    /// Record every request to this file (hash-chained JSON Lines).
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// The agent's user name (fixed identity).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// The agent's groups (fixed identity); repeat for several.
    #[arg(long = "group", value_name = "NAME")]
    groups: Vec<String>,
    /// Identify agents by OIDC bearer tokens from this issuer.
    #[arg(long, value_name = "URL", requires_all = ["oidc_audience", "oidc_jwks"])]
    oidc_issuer: Option<String>,
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
    /// Who approves held requests: `socket` (`kubeleash approvals ...`), `terminal`, or
    /// `webhook=URL`. Without it, requests the policy holds are denied.
    #[arg(long, value_name = "HOW")]
    approvals: Option<String>,
    /// The approvals socket (with --approvals socket).
    #[arg(long, value_name = "PATH")]
    approvals_socket: Option<PathBuf>,
    /// How long a held request waits for an answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    approval_timeout: u64,
    /// Enforce the policy, or only record what it would do.
    #[arg(long, value_enum, default_value = "enforce")]
    mode: ModeArg,
}

fn approvals(a: &Args) -> Result<Approvals, String> {
    match a.approvals.as_deref() {
        None => Ok(Approvals::None),
        Some("socket") => Ok(Approvals::Socket(
            a.approvals_socket
                .clone()
                .unwrap_or_else(crate::approvals::default_socket_path),
        )),
        Some("terminal") => Ok(Approvals::Terminal),
        Some(w) if w.starts_with("webhook=") => Ok(Approvals::Webhook(
            w.trim_start_matches("webhook=").to_string(),
        )),
        Some(other) => Err(format!(
            "--approvals `{other}` is not socket, terminal or webhook=URL"
        )),
    }
}

pub fn run(a: Args) -> ExitCode {
    let identity = match (&a.oidc_issuer, &a.user) {
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
    let approvals = match approvals(&a) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(USAGE);
        }
    };
    let config = ProxyConfig {
        policy: a.policy.clone(),
        kubeconfig: a.kubeconfig.clone(),
        context: a.context.clone(),
        listen: a.listen,
        record: a.record.clone(),
        identity,
        approvals,
        approval_timeout: Duration::from_secs(a.approval_timeout),
        mode: if a.mode == ModeArg::Audit {
            Mode::Audit
        } else {
            Mode::Enforce
        },
        upstream: None,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let proxy = match start(config).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(USAGE);
            }
        };
        println!("listening on {}", proxy.url());
        eprintln!(
            "kubeleash proxy: give the agent `kubeleash kubeconfig --server {}`",
            proxy.url()
        );
        proxy.serve_until_signalled().await;
        ExitCode::SUCCESS
    })
}

#[derive(Debug, clap::Args)]
pub struct KubeconfigArgs {
    /// The proxy's URL.
    #[arg(long, value_name = "URL")]
    server: String,
    /// A file holding the agent's own token (for a proxy that identifies agents by OIDC).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The namespace the agent works in by default.
    #[arg(long, value_name = "NAME", default_value = "default")]
    namespace: String,
}

/// `kubeleash kubeconfig`: the agent's kubeconfig. It points at the proxy and holds no
/// credential of the operator's.
pub fn kubeconfig(a: KubeconfigArgs) -> ExitCode {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let user = match &a.token_file {
        Some(f) => format!("  user:\n    tokenFile: {}\n", q(&f.display().to_string())),
        None => "  user: {}\n".to_string(),
    };
    print!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kubeleash\n  cluster:\n    server: {}\ncontexts:\n- name: kubeleash\n  context:\n    cluster: kubeleash\n    user: agent\n    namespace: {}\ncurrent-context: kubeleash\nusers:\n- name: agent\n{user}",
        q(&a.server),
        q(&a.namespace)
    );
    ExitCode::SUCCESS
}
