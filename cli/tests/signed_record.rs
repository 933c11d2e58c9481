//! `kubeleash proxy --record FILE --signing-key KEY` and `kubeleash replay --verify --key
//! KEY.pub`: a record a third party can verify. The invariant: whoever can write the record but
//! does not hold the key cannot change, add, remove or reorder what it says and still have it
//! verify; and the key is kept like a credential.
//!
//! The end-to-end scenario runs kubectl through the proxy in front of the real kube-apiserver
//! (`tests/cluster/start.sh`); the key-handling cases need no server traffic and use the
//! sandbox.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/process.rs"]
mod process;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use process::{Guard, serve};

const BIN: &str = env!("CARGO_BIN_EXE_kubeleash");
const POLICY: &str = include_str!("../../examples/agent-policy.yaml");

fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kubeleash-signed-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `kubeleash ARGS`: exit code, stdout, stderr.
fn kubeleash(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kubeleash proxy` as agent-1 (group ai-agents) with the record and key given, in front of
/// `operator`'s cluster.
fn proxy(home: &Path, operator: &Path, record: &Path, key: &Path) -> Guard {
    let policy = home.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let agent = home.join("agent.kubeconfig");
    let (guard, url) = serve(
        &[
            "proxy",
            "--policy",
            p(&policy),
            "--kubeconfig",
            p(operator),
            "--listen",
            "127.0.0.1:0",
            "--record",
            p(record),
            "--signing-key",
            p(key),
            "--user",
            "agent-1",
            "--group",
            "ai-agents",
            "--agent-kubeconfig",
            p(&agent),
            "--agent-namespace",
            "dev",
        ],
        Some(&home.join("proxy.stderr")),
    );
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    guard
}

/// kubectl as the agent: success, stdout and stderr.
fn kubectl(home: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .arg("--request-timeout=30s")
        .args(args)
        .env("KUBECONFIG", home.join("agent.kubeconfig"))
        .env("HOME", home)
        .env("KUBECACHEDIR", home.join("kube-cache"))
        .stdin(Stdio::null())
        .output()
        .expect("kubectl runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `replay --verify` of `log` (written to `home/name`) with `keys`: exit code and stderr.
fn verify(home: &Path, name: &str, log: &str, keys: &[&Path]) -> (i32, String) {
    let file = home.join(name);
    std::fs::write(&file, log).unwrap();
    let mut args = vec!["replay", "--verify"];
    for k in keys {
        args.extend(["--key", p(k)]);
    }
    args.push(p(&file));
    let (code, _, err) = kubeleash(&args);
    (code, err)
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The issue's own example, on the real server: a denied `delete namespace prod` rewritten as
/// allowed by another rule, every hash after it recomputed, verified clean by the chain of
/// hashes alone and caught by the signature; so are a cut, a record taken out, two swapped,
/// a wrong key; a restart with a new key is a rotation recorded in the chain.
#[test]
fn a_rewrite_without_the_key_never_verifies_on_the_real_server() {
    process::require_kubectl();
    let c = cluster::cluster();
    let home = fresh_dir("real");
    let keys = fresh_dir("real-keys");
    let record = home.join("session.jsonl");
    let key = keys.join("session.key");
    let public = keys.join("session.pub");

    let mut guard = proxy(&home, &c.operator_cert_kubeconfig(), &record, &key);
    // The key was made on first use, kept like a credential, its public half beside it.
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    // openssl reads the key and derives the same public key.
    let derived = Command::new("openssl")
        .args(["pkey", "-in", p(&key), "-pubout"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&derived.stdout),
        std::fs::read_to_string(&public).unwrap()
    );

    let (ok, out) = kubectl(&home, &["get", "pods", "-n", "dev"]);
    assert!(ok, "{out}");
    // A record waits about a second for its checkpoint, though nothing else is written (the
    // bound is generous: a loaded CI machine may be slow to wake the writer).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let so_far = std::fs::read_to_string(&record).unwrap();
        if so_far
            .lines()
            .last()
            .is_some_and(|l| l.contains("\"kind\":\"checkpoint\""))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint after the reads:\n{so_far}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (ok, out) = kubectl(&home, &["delete", "namespace", "prod", "--wait=false"]);
    assert!(!ok && out.contains("protect-production"), "{out}");
    guard.stop();

    let log = std::fs::read_to_string(&record).unwrap();
    // Nothing of the private key is in the record or the proxy's output.
    let secret: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let stderr = std::fs::read_to_string(home.join("proxy.stderr")).unwrap();
    for (what, text) in [("record", &log), ("stderr", &stderr)] {
        assert!(
            !text.contains(&secret[..24]),
            "the private key is in the {what}"
        );
    }
    let (code, err) = verify(&home, "as-written.jsonl", &log, &[&public]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("chain intact, signed by key"), "{err}");

    // The forgery: the refusal reads as an allowed delete by another rule.
    let denied = log
        .lines()
        .find(|l| l.contains("\"protect-production\""))
        .unwrap();
    assert!(denied.contains("\"outcome\":\"refused\""), "{denied}");
    let forged_line = denied
        .replace("\"effect\":\"deny\"", "\"effect\":\"allow\"")
        .replace(
            "\"rule\":\"protect-production\"",
            "\"rule\":\"ops-cleanup\"",
        )
        .replace("\"outcome\":\"refused\"", "\"outcome\":\"forwarded\"")
        .replace("\"status\":403", "\"status\":200");
    let forged = kubeleash_core::record::rehash(&log.replacen(denied, &forged_line, 1));
    let (code, err) = verify(&home, "forged.jsonl", &forged, &[]);
    assert_eq!(code, 0, "the chain of hashes alone cannot tell: {err}");
    assert!(err.contains("the record is signed"), "{err}");
    let (code, err) = verify(&home, "forged.jsonl", &forged, &[&public]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("signature does not verify"), "{err}");
    let (_, shown, _) = kubeleash(&["replay", p(&home.join("forged.jsonl"))]);
    assert!(
        shown.contains("allowed by rule ops-cleanup"),
        "the forgery reads as intended: {shown}"
    );

    let lines: Vec<&str> = log.lines().collect();
    let joined = |v: &[&str]| v.iter().map(|l| format!("{l}\n")).collect::<String>();
    // A record taken out, and two swapped, hashes recomputed.
    let mut removed = lines.clone();
    removed.remove(1);
    let (code, err) = verify(
        &home,
        "removed.jsonl",
        &kubeleash_core::record::rehash(&joined(&removed)),
        &[&public],
    );
    assert_eq!(code, 1, "{err}");
    let mut swapped = lines.clone();
    swapped.swap(0, 1);
    let (code, err) = verify(
        &home,
        "swapped.jsonl",
        &kubeleash_core::record::rehash(&joined(&swapped)),
        &[&public],
    );
    assert_eq!(code, 1, "{err}");
    // Cut before the closing checkpoint, and before the closing record.
    let (code, err) = verify(
        &home,
        "cut1.jsonl",
        &joined(&lines[..lines.len() - 1]),
        &[&public],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("come after the last signature"), "{err}");
    let (code, err) = verify(
        &home,
        "cut2.jsonl",
        &joined(&lines[..lines.len() - 2]),
        &[&public],
    );
    assert_eq!(code, 1, "{err}");

    // Another key: not the signer.
    let other = keys.join("other.key");
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", p(&other)]);
    openssl(&[
        "pkey",
        "-in",
        p(&other),
        "-pubout",
        "-out",
        p(&keys.join("other.pub")),
    ]);
    let (code, err) = verify(&home, "as-written.jsonl", &log, &[&keys.join("other.pub")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not one of the keys given"), "{err}");

    // Rotation: the proxy restarts on the same record with a key openssl made.
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut guard = proxy(&home, &c.operator_cert_kubeconfig(), &record, &other);
    let (ok, out) = kubectl(&home, &["get", "pods", "-n", "dev"]);
    assert!(ok, "{out}");
    guard.stop();
    let log = std::fs::read_to_string(&record).unwrap();
    let (code, err) = verify(
        &home,
        "rotated.jsonl",
        &log,
        &[&public, &keys.join("other.pub")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("the signing key was rotated at record"),
        "{err}"
    );
    // The old key alone does not vouch for what the new one signed, nor the other way round.
    for k in [&public, &keys.join("other.pub")] {
        let (code, err) = verify(&home, "rotated.jsonl", &log, &[k]);
        assert_eq!(code, 1, "{err}");
    }

    // Cut back to the checkpoint in the middle of the first session (the delete after it
    // gone), and the proxy restarted on it: the restart says the session before it stopped
    // without a signed close, and verifying fails unless that is accepted knowingly.
    let lines: Vec<&str> = log.lines().collect();
    let first_checkpoint = lines
        .iter()
        .position(|l| l.contains("\"kind\":\"checkpoint\""))
        .unwrap();
    assert!(
        lines[first_checkpoint + 1..]
            .iter()
            .any(|l| l.contains("protect-production"))
    );
    std::fs::write(&record, joined(&lines[..=first_checkpoint])).unwrap();
    let mut guard = proxy(&home, &c.operator_cert_kubeconfig(), &record, &other);
    guard.stop();
    let cut = std::fs::read_to_string(&record).unwrap();
    assert!(!cut.contains("protect-production"));
    let both = [public.as_path(), keys.join("other.pub").as_path()].map(Path::to_path_buf);
    let (code, err) = verify(&home, "cut-resumed.jsonl", &cut, &[&both[0], &both[1]]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("stopped without a signed close"), "{err}");
    assert!(err.contains("--allow-resumed accepts this"), "{err}");
    let file = home.join("cut-resumed.jsonl");
    let (code, _, err) = kubeleash(&[
        "replay",
        "--verify",
        "--allow-resumed",
        "--key",
        p(&both[0]),
        "--key",
        p(&both[1]),
        p(&file),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: the recorder before record")
            && err.contains("(accepted: --allow-resumed)"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&home);
    let _ = std::fs::remove_dir_all(&keys);
}

/// Start the proxy on the sandbox with `key` and send one request through it (so the record
/// holds a record before its close).
fn start_ok(home: &Path, operator: &Path, record: &Path, key: &Path) -> Guard {
    let guard = proxy(home, operator, record, key);
    let (ok, out) = kubectl(home, &["get", "pods", "-n", "dev"]);
    assert!(ok, "{out}");
    guard
}

/// The key is refused, with what to do and nothing of its content, when others can read it,
/// when it is not a key, or when the public key beside it is another's.
#[test]
fn a_key_others_can_read_or_that_is_no_key_is_refused() {
    process::require_kubectl();
    let home = fresh_dir("refused");
    let _sandbox = process::sandbox_for_operator(&home);
    let operator = home.join("operator.kubeconfig");
    let record = home.join("session.jsonl");
    let policy = home.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let start = |key: &Path| {
        let out = Command::new(BIN)
            .args([
                "proxy",
                "--policy",
                p(&policy),
                "--kubeconfig",
                p(&operator),
                "--listen",
                "127.0.0.1:0",
                "--record",
                p(&record),
                "--signing-key",
                p(key),
                "--user",
                "agent-1",
                "--agent-kubeconfig",
                p(&home.join("agent.kubeconfig")),
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    use std::os::unix::fs::PermissionsExt as _;

    let open = home.join("open.key");
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", p(&open)]);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let pem = std::fs::read_to_string(&open).unwrap();
    let secret: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let (code, err) = start(&open);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!(
            "the signing key `{}` can be read or written by others (mode 644): `chmod 600",
            open.display()
        )),
        "{err}"
    );
    assert!(!err.contains(&secret[..24]), "{err}");

    let garbage = home.join("garbage.key");
    std::fs::write(&garbage, "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXRoYXQtaXMtbm90LWEta2V5\n-----END PRIVATE KEY-----\n").unwrap();
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, err) = start(&garbage);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!(
            "the signing key `{}` is not an Ed25519 private key",
            garbage.display()
        )),
        "{err}"
    );
    assert!(
        !err.contains("c2VjcmV0"),
        "the file's content is not echoed: {err}"
    );

    // A public key beside it that is another key's: refused, not overwritten.
    let mine = home.join("mine.key");
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", p(&mine)]);
    std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o600)).unwrap();
    openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        p(&home.join("theirs.key")),
    ]);
    openssl(&[
        "pkey",
        "-in",
        p(&home.join("theirs.key")),
        "-pubout",
        "-out",
        p(&home.join("mine.pub")),
    ]);
    let before = std::fs::read_to_string(home.join("mine.pub")).unwrap();
    let (code, err) = start(&mine);
    assert_ne!(code, 0);
    assert!(
        err.contains("holds another key than the signing key"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(home.join("mine.pub")).unwrap(),
        before
    );

    // The key's own name with `.pub`: it would be overwritten by its public half.
    let (code, err) = start(&home.join("session.pub"));
    assert_ne!(code, 0);
    assert!(
        err.contains("would be overwritten by its own public key"),
        "{err}"
    );

    // The record and the key the same file: the record would hold the key.
    let key = home.join("k.key");
    let out = Command::new(BIN)
        .args([
            "proxy",
            "--policy",
            p(&policy),
            "--kubeconfig",
            p(&operator),
            "--listen",
            "127.0.0.1:0",
            "--record",
            p(&key),
            "--signing-key",
            p(&key),
            "--user",
            "agent-1",
            "--agent-kubeconfig",
            p(&home.join("agent.kubeconfig")),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("are the same file"),
        "{err}"
    );

    // A record edited while no proxy ran (a denial turned into an allowed delete, hashes
    // recomputed): the proxy will not sign on top of it, and leaves it as it is.
    let signed = home.join("signed.key");
    let mut guard = start_ok(&home, &operator, &record, &signed);
    guard.stop();
    let log = std::fs::read_to_string(&record).unwrap();
    let first = log.lines().next().unwrap().to_string();
    let edited = first.replacen("\"method\":\"", "\"method\":\"X", 1);
    assert_ne!(edited, first, "{first}");
    let forged = kubeleash_core::record::rehash(&log.replacen(&first, &edited, 1));
    std::fs::write(&record, &forged).unwrap();
    let (code, err) = start(&signed);
    assert_ne!(code, 0);
    assert!(
        err.contains("the record does not verify")
            && err.contains("will not sign on top of it: move it away"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&record).unwrap(), forged);

    // `replay --key` with something that is not a public key.
    let (code, _, err) = kubeleash(&["replay", "--verify", "--key", p(&mine), p(&record)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not an Ed25519 public key"), "{err}");
    let _ = std::fs::remove_dir_all(&home);
}
