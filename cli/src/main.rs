//! `kubeleash`: evaluate a request against a policy, run a policy's tests, import RBAC roles.

mod approvals;
mod demo;
mod eval;
mod import;
mod mask;
mod proxy;
mod replay;
mod report;
mod sandbox;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// See `mimalloc` in Cargo.toml for why.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hold an AI agent to least privilege on every request it sends to Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "kubeleash", version, about)]
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
    /// Run the `tests:` of one or more policies.
    Test(test::Args),
    /// Mask a response body (standard input) as kubeleash would deliver it for a request.
    Mask(mask::Args),
    /// The gateway for agents that run kubectl: enforce, hold for approval, mask, record.
    Proxy(Box<proxy::Args>),
    /// Print a kubeconfig for the agent: it points at the proxy and holds no cluster credential.
    Kubeconfig(proxy::KubeconfigArgs),
    /// Answer the requests a running proxy holds for approval: list, approve, deny.
    Approvals(approvals::Args),
    /// Print a recorded session as the kubectl commands it amounts to, and check its chain.
    Replay(replay::Args),
    /// Turn RBAC Roles and ClusterRoles into a kubeleash policy of allow rules.
    ImportRbac(import::Args),
    /// Run an in-memory Kubernetes API server for tests and demos (plain HTTP, loopback only).
    Sandbox(sandbox::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Test(a) => test::run(a),
        Command::ImportRbac(a) => import::run(a),
        Command::Sandbox(a) => sandbox::run(a),
        Command::Mask(a) => mask::run(a),
        Command::Replay(a) => replay::run(a),
        Command::Proxy(a) => proxy::run(*a),
        Command::Kubeconfig(a) => proxy::kubeconfig(a),
        Command::Approvals(a) => approvals::run(a),
    }
}
