//! `kubeleash sandbox`: run the in-memory Kubernetes API server until SIGINT or SIGTERM.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use kubeleash_sandbox::{Options, Sandbox, Seed};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on: loopback only, plain HTTP; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// What the cluster starts with: `default` (a small cluster with secrets, pods and logs)
    /// or `empty` (only the `default` namespace).
    #[arg(long, default_value = "default")]
    seed: Seed,
    /// Print one line per request on standard error.
    #[arg(long)]
    log_requests: bool,
}

pub fn run(args: Args) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kubeleash sandbox: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        let options = Options::new(args.seed).log_requests(args.log_requests);
        let sandbox = match Sandbox::start_with(args.listen, options).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("kubeleash sandbox: {e}");
                return ExitCode::from(2);
            }
        };
        // The first line of standard output is the contract scripts read the URL from.
        println!("listening on {}", sandbox.url());
        let _ = std::io::stdout().flush();
        eprintln!(
            "try: kubectl --server {} get pods -A   (Ctrl-C stops the sandbox)",
            sandbox.url()
        );
        wait_for_signal().await;
        sandbox.shutdown().await;
        ExitCode::SUCCESS
    })
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
