//! Certificates for tests, made with openssl as an operator's CA would: a CA, and serving
//! certificates under it.
//!
//! Use it with `#[path = "support/certs.rs"] mod certs;`.

#![allow(dead_code, reason = "each test binary uses a part")]

use std::path::{Path, PathBuf};
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA in `dir` (`ca.crt`, `ca.key`): its certificate's path.
pub fn ca(dir: &Path, name: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            &format!("/CN={name}"),
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    dir.join("ca.crt")
}

/// A new key and serving certificate for `san` (`DNS:name` or `IP:127.0.0.1`) under the CA
/// [`ca`] made in `dir` (files named after `tag`): the chain (PEM, the leaf then the CA) and the
/// key (PEM).
pub fn leaf(dir: &Path, san: &str, tag: &str) -> (String, String) {
    let (key, csr, crt, ext) = (
        format!("{tag}.new.key"),
        format!("{tag}.csr"),
        format!("{tag}.leaf.crt"),
        format!("{tag}.ext"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={tag}"),
        ],
    );
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName={san}\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
    let chain = format!(
        "{}{}",
        std::fs::read_to_string(dir.join(&crt)).unwrap(),
        std::fs::read_to_string(dir.join("ca.crt")).unwrap()
    );
    (chain, std::fs::read_to_string(dir.join(&key)).unwrap())
}
