//! Puts the commit the binary was built from into `kubeleash --version`.
//!
//! From `git` when the source is a checkout; from `KUBELEASH_COMMIT` when a packager sets it
//! (a source tarball has no history); otherwise "unknown", never a build failure.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=KUBELEASH_COMMIT");
    let commit = std::env::var("KUBELEASH_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    // A new commit or checkout moves HEAD or the reflog: build again to pick it up.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        for f in ["HEAD", "logs/HEAD"] {
            println!("cargo:rerun-if-changed={dir}/{f}");
        }
    }
    println!("cargo:rustc-env=KUBELEASH_COMMIT={commit}");
}
