//! What a person meets first: `--version` names the commit, `--help` says what the tool is,
//! completion scripts that a real shell loads and completes with, and colour only on a
//! terminal (none when piped or with `NO_COLOR`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_kubeleash");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run kubeleash")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let o = run(&["--version"]);
    assert!(o.status.success());
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo())
        .output()
        .expect("git: the tests run from a checkout");
    assert!(head.status.success(), "git rev-parse failed");
    let head = String::from_utf8(head.stdout).unwrap().trim().to_string();
    assert_eq!(
        stdout(&o).trim(),
        format!("kubeleash {} (commit {head})", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_says_what_the_tool_is() {
    let o = run(&["--help"]);
    let help = stdout(&o);
    assert!(help.contains("least privilege"), "{help}");
    assert!(help.contains("proxy"), "{help}");
    assert!(help.contains("completion"), "{help}");
    assert!(!help.contains("evaluate and test policies"), "{help}");
}

/// Load the bash script into a real bash and ask it to complete `words`.
fn bash_completes(words: &str) -> Vec<String> {
    let script = stdout(&run(&["completion", "bash"]));
    let dir = tempfile_dir();
    let path = dir.join("kubeleash.bash");
    std::fs::write(&path, script).unwrap();
    let words: Vec<&str> = words.split(' ').collect();
    let line = format!(
        "source {}; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{}'; COMP_POINT=${{#COMP_LINE}}; _kubeleash kubeleash '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        path.display(),
        words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" "),
        words.len() - 1,
        words.join(" "),
        words.last().unwrap(),
        words.get(words.len().saturating_sub(2)).unwrap(),
    );
    let o = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &line])
        .output()
        .expect("bash: the completion test needs a real bash");
    assert!(
        o.status.success(),
        "bash failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    stdout(&o).lines().map(str::to_string).collect()
}

fn tempfile_dir() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("kubeleash-completion-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn bash_completes_subcommands_and_their_flags() {
    let subs = bash_completes("kubeleash re");
    assert_eq!(subs, ["replay"], "completing `re`");
    let all = bash_completes("kubeleash ");
    for s in [
        "proxy",
        "demo",
        "eval",
        "test",
        "mask",
        "replay",
        "approvals",
        "completion",
    ] {
        assert!(all.iter().any(|c| c == s), "{s} missing from {all:?}");
    }
    let shells = bash_completes("kubeleash completion ");
    for s in ["bash", "zsh", "fish"] {
        assert!(shells.iter().any(|c| c == s), "{s} missing from {shells:?}");
    }
}

#[test]
fn zsh_and_fish_scripts_are_for_kubeleash() {
    let zsh = stdout(&run(&["completion", "zsh"]));
    assert!(zsh.starts_with("#compdef kubeleash"), "{zsh}");
    let fish = stdout(&run(&["completion", "fish"]));
    assert!(fish.contains("complete -c kubeleash"), "{fish}");
    assert!(fish.contains("replay"), "{fish}");
    let bad = run(&["completion", "tcsh"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("tcsh"));
}

/// Run `kubeleash test` on the example policies under a pseudo-terminal (util-linux `script`),
/// with `env` set, and return what the terminal received.
fn on_a_terminal(env: &[(&str, &str)]) -> String {
    let cmd = format!(
        "{BIN} test {}",
        repo().join("examples/agents.yaml").display()
    );
    let mut c = Command::new("script");
    c.args(["-qec", &cmd, "/dev/null"])
        .env("TERM", "xterm-256color");
    c.env_remove("NO_COLOR");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c
        .output()
        .expect("script (util-linux): the colour test needs a pseudo-terminal");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    stdout(&o)
}

#[test]
fn colour_on_a_terminal_only() {
    let tty = on_a_terminal(&[]);
    assert!(
        tty.contains("\x1b[32mok\x1b[0m"),
        "no colour on a terminal: {tty:?}"
    );
    let no_color = on_a_terminal(&[("NO_COLOR", "1")]);
    assert!(
        !no_color.contains('\x1b'),
        "colour despite NO_COLOR: {no_color:?}"
    );
    assert!(no_color.contains("ok "), "{no_color}");
    let piped = Command::new(BIN)
        .args([
            "test",
            repo().join("examples/agents.yaml").to_str().unwrap(),
        ])
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color")
        .output()
        .unwrap();
    assert!(piped.status.success());
    let piped = stdout(&piped);
    assert!(!piped.contains('\x1b'), "colour in a pipe: {piped:?}");
    assert!(piped.contains("policy tests:"), "{piped}");
}
