//! `kubeleash`: the gateway that holds AI agents to least privilege on the Kubernetes API
//! (`proxy`: decide each request, hold it for a person's approval, mask secrets in responses,
//! record a hash-chained log), and the tools around it: `demo`, `eval`, `test`, `mask`,
//! `replay`, `approvals`, `kubeconfig`, `import-rbac`, `sandbox`, `completion`.

mod approvals;
mod demo;
mod eval;
mod explain;
mod import;
mod learn;
mod lint;
mod mask;
mod mcp;
mod paint;
mod proxy;
mod replay;
mod report;
mod sandbox;
mod ship;
mod signing_key;
mod test;
mod whatif;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// See `mimalloc` in Cargo.toml for why.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What `--version` prints: the release and the commit it was built from (see build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("KUBELEASH_COMMIT"),
    ")"
);

/// Hold an AI agent to least privilege on every request it sends to Kubernetes.
///
/// Run `kubeleash proxy` between an agent and the API server: each request is decided against
/// a policy (allow, deny, or hold for a person's approval), secrets are masked in responses as
/// they stream, and everything is recorded in a log `kubeleash replay` reads back.
#[derive(Debug, Parser)]
#[command(name = "kubeleash", version = VERSION, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// See kubeleash work: a sandbox cluster, the proxy, and an agent session through it.
    Demo(demo::Args),
    /// Decide one request against a policy and print the decision as JSON.
    Eval(eval::Args),
    /// Show every rule of a policy against one request: which matched, why the others did not.
    Explain(explain::Args),
    /// Run the `tests:` of one or more policies.
    Test(test::Args),
    /// Find what in a policy is likely a mistake: risky grants, dead rules, rules that never match.
    Lint(lint::Args),
    /// Show every recorded request a new policy would decide differently (exit 1 if any).
    Whatif(whatif::Args),
    /// Write the smallest policy that would have let through what was recorded, with its tests.
    Learn(learn::Args),
    /// Mask a response body (standard input) as kubeleash would deliver it for a request.
    Mask(mask::Args),
    /// The gateway for agents that run kubectl: enforce, hold for approval, mask, record.
    Proxy(Box<proxy::Args>),
    /// Kubernetes for agents as MCP tools (stdio or streamable HTTP), each call decided,
    /// masked and recorded like the proxy's requests.
    Mcp(Box<mcp::Args>),
    /// Print a kubeconfig for the agent: it points at the proxy and holds no cluster credential.
    Kubeconfig(proxy::KubeconfigArgs),
    /// Answer the requests a running proxy holds for approval: list, approve, deny.
    Approvals(approvals::Args),
    /// Print a recorded session as the kubectl commands it amounts to, and check its chain.
    Replay(replay::Args),
    /// Ship a record to an audit pipeline (the Kubernetes audit webhook's batched EventLists),
    /// at least once, from a cursor kept beside it.
    Ship(ship::Args),
    /// Turn RBAC Roles and ClusterRoles into a kubeleash policy of allow rules.
    ImportRbac(import::Args),
    /// Run an in-memory Kubernetes API server for tests and demos (plain HTTP, loopback only).
    Sandbox(sandbox::Args),
    /// Print a shell completion script: `source <(kubeleash completion bash)`.
    Completion(CompletionArgs),
}

#[derive(Debug, clap::Args)]
struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Explain(a) => explain::run(a),
        Command::Test(a) => test::run(a),
        Command::Lint(a) => lint::run(a),
        Command::Whatif(a) => whatif::run(a),
        Command::Learn(a) => learn::run(a),
        Command::ImportRbac(a) => import::run(a),
        Command::Sandbox(a) => sandbox::run(a),
        Command::Mask(a) => mask::run(a),
        Command::Replay(a) => replay::run(a),
        Command::Ship(a) => ship::run(a),
        Command::Proxy(a) => proxy::run(*a),
        Command::Mcp(a) => mcp::run(*a),
        Command::Kubeconfig(a) => proxy::kubeconfig(a),
        Command::Approvals(a) => approvals::run(a),
        Command::Completion(a) => {
            let mut cmd = Cli::command();
            clap_complete::generate(a.shell, &mut cmd, "kubeleash", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}
