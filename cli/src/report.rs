//! Reading policies and reporting their errors the same way in every command.

use std::path::Path;
use std::process::ExitCode;

use kubeleash_core::policy::{Policy, PolicyErrors};

/// Exit code for bad usage and for policies that do not compile.
pub const USAGE: u8 = 2;

/// Read and compile a policy file, printing every error (`FILE:LINE:COL: ...`) on failure.
pub fn load_policy(path: &Path) -> Result<Policy, ExitCode> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!(
            "error: cannot read policy `{}`: {}",
            path.display(),
            lower(&e.to_string())
        );
        ExitCode::from(USAGE)
    })?;
    Policy::from_yaml(&text).map_err(|errs| {
        print_errors(path, &errs);
        ExitCode::from(USAGE)
    })
}

/// Print a policy's compile errors, one per line, with help indented below.
pub fn print_errors(path: &Path, errs: &PolicyErrors) {
    for e in errs.errors() {
        let at = e
            .location()
            .map(|l| format!(":{}:{}", l.line, l.column))
            .unwrap_or_default();
        eprintln!(
            "{}{at}: error[{}]: {}",
            path.display(),
            e.code(),
            e.message()
        );
        if let Some(help) = e.help_text() {
            eprintln!("  help: {help}");
        }
    }
    let n = errs.errors().len();
    eprintln!(
        "policy `{}` does not compile: {n} error{}",
        path.display(),
        if n == 1 { "" } else { "s" }
    );
}

/// OS error texts start with a capital; our messages do not.
pub fn lower(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The async runtime a command runs in, or the error printed and the exit code to return.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::from(1)
        })
}
