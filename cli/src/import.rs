//! `kubeleash import-rbac`: start a policy from the RBAC roles a team already has.

use std::path::PathBuf;
use std::process::ExitCode;

use kubeleash_core::policy::rbac::{ImportOptions, import};

use crate::report::{USAGE, lower};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// YAML files holding Roles, ClusterRoles or Lists of them.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// A user the imported rules apply to; repeat for several.
    #[arg(long = "user", value_name = "NAME")]
    users: Vec<String>,
    /// A group the imported rules apply to; repeat for several.
    #[arg(long = "group", value_name = "NAME")]
    groups: Vec<String>,
    /// The generated policy's name.
    #[arg(long, default_value = "imported-rbac")]
    name: String,
}

pub fn run(a: Args) -> ExitCode {
    let mut yaml = String::new();
    for f in &a.files {
        match std::fs::read_to_string(f) {
            Ok(t) => {
                yaml.push_str("---\n");
                yaml.push_str(&t);
                yaml.push('\n');
            }
            Err(e) => {
                eprintln!(
                    "error: cannot read `{}`: {}",
                    f.display(),
                    lower(&e.to_string())
                );
                return ExitCode::from(USAGE);
            }
        }
    }
    let opts = ImportOptions {
        policy_name: a.name,
        users: a.users,
        groups: a.groups,
    };
    match import(&yaml, &opts) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(USAGE)
        }
    }
}
