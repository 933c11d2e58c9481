//! `kubeleash lint FILE...`: what in a policy compiles but is likely a mistake (risky grants,
//! rules a deny makes dead, rules that can never match), one finding per line as
//! `FILE:LINE:COLUMN: warning[CODE]: message`, with the suggested fix below. Exit 0 when nothing
//! is found, 1 with findings, 2 when a policy does not compile.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::report::load_policy;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the findings as JSON, one object per line.
    #[arg(long)]
    json: bool,
    /// Policy files (YAML or JSON).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

pub fn run(a: Args) -> ExitCode {
    let mut found = 0usize;
    for path in &a.files {
        let policy = match load_policy(path) {
            Ok(p) => p,
            Err(code) => return code,
        };
        for f in policy.lint() {
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
