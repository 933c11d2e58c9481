//! `kubeleash lint FILE...`: what in a policy compiles but is likely a mistake (risky grants,
//! rules a deny makes dead, rules that can never match), one finding per line as
//! `FILE:LINE:COLUMN: warning[CODE]: message`, with the suggested fix below. Exit 0 when nothing
//! is found, 1 with findings, 2 when a policy does not compile or the cluster cannot be read.
//!
//! With `--kubeconfig`, the rules are also checked against the resources that cluster serves
//! (its discovery, read with that kubeconfig's credential): a resource no group serves is a
//! typo or a CRD that is not installed.

use std::path::PathBuf;
use std::process::ExitCode;

use std::collections::BTreeSet;

use crate::report::{USAGE, load_policy};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the findings as JSON, one object per line.
    #[arg(long)]
    json: bool,
    /// Also check the rules' resources against what this cluster serves (its discovery).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long, value_name = "NAME", requires = "kubeconfig")]
    context: Option<String>,
    /// Policy files (YAML or JSON).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

pub fn run(a: Args) -> ExitCode {
    let served = match &a.kubeconfig {
        Some(path) => match served(path, a.context.as_deref()) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(USAGE);
            }
        },
        None => None,
    };
    let mut found = 0usize;
    for path in &a.files {
        let policy = match load_policy(path) {
            Ok(p) => p,
            Err(code) => return code,
        };
        let findings = match &served {
            Some(s) => policy.lint_served(s),
            None => policy.lint(),
        };
        for f in findings {
            found += 1;
            if a.json {
                let mut v = serde_json::to_value(&f).unwrap_or_default();
                v["file"] = serde_json::json!(path.display().to_string());
                println!("{v}");
                continue;
            }
            let at =
                f.at.map(|l| format!(":{}:{}", l.line, l.column))
                    .unwrap_or_default();
            println!(
                "{}{at}: warning[{}]: {}\n  fix: {}",
                path.display(),
                f.code,
                f.message,
                f.fix
            );
        }
    }
    if found == 0 {
        if !a.json {
            println!(
                "no findings in {} {}",
                a.files.len(),
                if a.files.len() == 1 {
                    "policy"
                } else {
                    "policies"
                }
            );
        }
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Every `(apiGroup, resource)` the cluster serves, subresources as `pods/log`, in every
/// version of every group.
fn served(
    path: &std::path::Path,
    context: Option<&str>,
) -> Result<BTreeSet<(String, String)>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async {
        let upstream = kubeleash_connect::Upstream::from_kubeconfig(Some(path), context)
            .await
            .map_err(|e| e.to_string())?;
        let client = upstream
            .client_builder()
            .map_err(|e| e.to_string())?
            .build();
        let discovery = kube::discovery::Discovery::new(client)
            .run()
            .await
            .map_err(|e| {
                format!(
                    "cannot read the discovery of the cluster in `{}`: {}",
                    path.display(),
                    e.to_string().to_lowercase()
                )
            })?;
        let mut out = BTreeSet::new();
        for group in discovery.groups() {
            for version in group.versions() {
                for (ar, caps) in group.versioned_resources(version) {
                    out.insert((ar.group.clone(), ar.plural.clone()));
                    for (sub, _) in &caps.subresources {
                        out.insert((ar.group.clone(), format!("{}/{}", ar.plural, sub.plural)));
                    }
                }
            }
        }
        Ok(out)
    })
}
