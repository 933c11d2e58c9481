//! `kubeleash ship FILE --audit-webhook URL`: at least once. A receiver that is down at the
//! start, refuses batches, and is stopped and started again while the recorder keeps writing,
//! and a shipper killed outright and started again: every record arrives as an `audit.k8s.io/v1`
//! event (duplicates allowed, told apart by `auditID`), in order, checkpoints with their
//! signatures, and the cursor ends at the end of the file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "support/certs.rs"]
mod certs;
#[path = "support/receiver.rs"]
mod receiver;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kubeleash_core::record::{Chain, Opening, RecordBody, RecordKind, Signer};
use receiver::{Receiver, events, shipper};

/// Append `n` records (and every 50th a checkpoint) to `file` through `chain`.
fn append(file: &Path, chain: &mut Chain, signer: &Signer, n: usize) {
    let mut out = Vec::new();
    for i in 0..n {
        chain.seal_into(
            &RecordBody {
                time: "2026-12-06T00:00:00Z".into(),
                kind: RecordKind::Request,
                request: kubeleash_core::record::RecordedRequest {
                    method: "GET".into(),
                    target: format!("/api/v1/namespaces/dev/pods/p{i}"),
                    ..Default::default()
                },
                ..Default::default()
            },
            &mut out,
        );
        out.push(b'\n');
        if i % 50 == 49 {
            chain.checkpoint(
                signer,
                "2026-12-06T00:00:00Z",
                &Opening::default(),
                &mut out,
            );
            out.push(b'\n');
        }
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(file)
        .unwrap()
        .write_all(&out)
        .unwrap();
}

#[test]
fn every_record_arrives_though_the_receiver_and_the_shipper_go_down() {
    let dir = std::env::temp_dir().join(format!("kubeleash-ship-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("session.jsonl");
    let signer = Signer::generate().unwrap();
    let mut chain = Chain::new("replica-a");
    append(&file, &mut chain, &signer, 300);

    let receiver = Receiver::new();
    // Down at the start: the shipper waits and tries again.
    let mut ship = shipper(&file, receiver.port, true);
    std::thread::sleep(Duration::from_millis(800));
    receiver.start(3);
    // The recorder keeps writing; the receiver goes down and comes back.
    append(&file, &mut chain, &signer, 200);
    std::thread::sleep(Duration::from_millis(500));
    receiver.stop();
    append(&file, &mut chain, &signer, 200);
    std::thread::sleep(Duration::from_millis(500));
    receiver.start(3);
    // The shipper killed outright, and started again: it goes on from its cursor.
    std::thread::sleep(Duration::from_millis(300));
    ship.kill().unwrap();
    ship.wait().unwrap();
    append(&file, &mut chain, &signer, 100);
    let mut ship = shipper(&file, receiver.port, true);
    let total = 800 + 800 / 50;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ids: std::collections::BTreeSet<String> = events(&receiver)
            .iter()
            .map(|e| e["auditID"].as_str().unwrap().to_string())
            .collect();
        if ids.len() == total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {total} arrived",
            ids.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &ship.id().to_string()])
        .status();
    assert!(ship.wait().unwrap().success());
    receiver.stop();

    let got = events(&receiver);
    // Every record, as `SESSION-SEQ`, and in order once duplicates are dropped.
    let mut seen = std::collections::BTreeSet::new();
    let order: Vec<u64> = got
        .iter()
        .filter_map(|e| {
            let id = e["auditID"].as_str().unwrap().to_string();
            seen.insert(id.clone())
                .then(|| id.rsplit('-').next().unwrap().parse().unwrap())
        })
        .collect();
    assert_eq!(order, (0..total as u64).collect::<Vec<_>>());
    // Checkpoints carry their signature.
    let checkpoints = got
        .iter()
        .filter(|e| e["annotations"]["kubeleash.dev/checkpoint"]["signature"].is_string())
        .count();
    assert!(checkpoints >= 16, "{checkpoints}");
    // The cursor is at the end of the file; a second shipper sends nothing more.
    let cursor: u64 = std::fs::read_to_string(dir.join("session.cursor"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(cursor, std::fs::metadata(&file).unwrap().len());
    let out = Command::new(env!("CARGO_BIN_EXE_kubeleash"))
        .args([
            "ship",
            file.to_str().unwrap(),
            "--audit-webhook",
            "http://127.0.0.1:9/x",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 events acknowledged"));
    // A file cut below the cursor is refused, not shipped again silently.
    std::fs::write(&file, "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kubeleash"))
        .args([
            "ship",
            file.to_str().unwrap(),
            "--audit-webhook",
            "http://127.0.0.1:9/x",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("was cut or replaced"));
    // Replaced by a longer log (another chain, signed by the same key): the record at the
    // cursor does not follow the last one shipped, so nothing of it is shipped as a sequel.
    let mut other = Chain::new("replica-a");
    append(&file, &mut other, &signer, 1200);
    let out = Command::new(env!("CARGO_BIN_EXE_kubeleash"))
        .args([
            "ship",
            file.to_str().unwrap(),
            "--audit-webhook",
            "http://127.0.0.1:9/x",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("was replaced: the record at the cursor does not follow"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// OTLP logs over HTTP: each record a log record whose body is its line exactly as written (so
/// the chain still checks from what the collector keeps), through refused batches.
#[test]
fn otlp_log_records_carry_each_line_as_written() {
    let dir = std::env::temp_dir().join(format!("kubeleash-ship-otlp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("session.jsonl");
    let signer = Signer::generate().unwrap();
    let mut chain = Chain::new("replica-b");
    append(&file, &mut chain, &signer, 120);
    let receiver = Receiver::new();
    receiver.start(2);
    let out = Command::new(env!("CARGO_BIN_EXE_kubeleash"))
        .args([
            "ship",
            file.to_str().unwrap(),
            "--otlp",
            &format!("http://127.0.0.1:{}/v1/logs", receiver.port),
            "--batch",
            "25",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    receiver.stop();
    let mut lines = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for body in receiver.got.lock().unwrap().iter() {
        let logs = &body["resourceLogs"][0];
        assert_eq!(
            logs["resource"]["attributes"][0]["value"]["stringValue"],
            "kubeleash"
        );
        for r in logs["scopeLogs"][0]["logRecords"].as_array().unwrap() {
            let id = r["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == "k8s.audit.id")
                .unwrap()["value"]["stringValue"]
                .as_str()
                .unwrap()
                .to_string();
            assert_ne!(r["timeUnixNano"], "0");
            if seen.insert(id) {
                lines.push(r["body"]["stringValue"].as_str().unwrap().to_string());
            }
        }
    }
    let shipped: String = lines.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(shipped, std::fs::read_to_string(&file).unwrap());
    let pubkey = kubeleash_core::record::PublicKey::from_pem(&signer.public_pem()).unwrap();
    let v = kubeleash_core::record::verify_signed(&shipped, &[pubkey]);
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A CA and a certificate for 127.0.0.1 under it, in `dir`: (ca.crt, leaf.crt, leaf.key).
fn receiver_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca = certs::ca(dir, "receiver-ca");
    let (chain, key) = certs::leaf(dir, "IP:127.0.0.1", "receiver");
    std::fs::write(dir.join("leaf.crt"), chain).unwrap();
    std::fs::write(dir.join("leaf.key"), key).unwrap();
    (ca, dir.join("leaf.crt"), dir.join("leaf.key"))
}

/// What an https receiver took: each request's Authorization header and body.
type Taken = std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>;

/// An https audit receiver on loopback (rustls), one request per connection.
fn https_receiver(cert: &Path, key: &Path) -> (u16, Taken) {
    use rustls::pki_types::pem::PemObject as _;
    use std::io::{BufRead as _, Read as _};
    let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let taken: Taken = Taken::default();
    let keep = taken.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { continue };
            let (config, keep) = (config.clone(), keep.clone());
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = std::io::BufReader::new(rustls::StreamOwned::new(conn, s));
                let mut line = String::new();
                if tls.read_line(&mut line).is_err() {
                    return; // a client that did not trust the certificate
                }
                let (mut length, mut auth) = (0usize, String::new());
                loop {
                    let mut h = String::new();
                    tls.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    let lower = h.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if lower.starts_with("authorization:") {
                        auth = h["authorization:".len()..].trim().to_string();
                    }
                }
                let mut body = vec![0u8; length];
                tls.read_exact(&mut body).unwrap();
                keep.lock()
                    .unwrap()
                    .push((auth, serde_json::from_slice(&body).unwrap()));
                let s = tls.get_mut();
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                let _ = s.flush();
                s.conn.send_close_notify();
                let _ = s.flush();
            });
        }
    });
    (port, taken)
}

/// An https receiver with a private CA, and a bearer token read from a file: every record
/// arrives with the token; without the CA the shipper does not trust the receiver and sends
/// nothing; a token is never sent in clear off loopback.
#[test]
fn https_receivers_with_a_private_ca_and_a_bearer_token() {
    let dir = std::env::temp_dir().join(format!("kubeleash-ship-https-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = receiver_certificate(&dir);
    let (port, taken) = https_receiver(&cert, &key);
    let file = dir.join("session.jsonl");
    let signer = Signer::generate().unwrap();
    let mut chain = Chain::new("replica-a");
    append(&file, &mut chain, &signer, 120);
    let token = dir.join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let url = format!("https://127.0.0.1:{port}/audit");
    let bin = env!("CARGO_BIN_EXE_kubeleash");

    // Without the receiver's CA: not trusted, nothing sent (killed while it retries).
    let mut untrusted = Command::new(bin)
        .args([
            "ship",
            file.to_str().unwrap(),
            "--audit-webhook",
            &url,
            "--cursor",
        ])
        .arg(dir.join("untrusted.cursor"))
        .args(["--bearer-token-file", token.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    untrusted.kill().unwrap();
    let out = untrusted.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did not take"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    assert!(
        taken.lock().unwrap().is_empty(),
        "nothing reaches an untrusted receiver"
    );

    // With it: every record, each batch with the token.
    let out = Command::new(bin)
        .args([
            "ship",
            file.to_str().unwrap(),
            "--audit-webhook",
            &url,
            "--batch",
            "50",
        ])
        .args([
            "--ca-file",
            ca.to_str().unwrap(),
            "--bearer-token-file",
            token.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = taken.lock().unwrap().clone();
    assert!(
        got.iter().all(|(auth, _)| auth == "Bearer s3cret-token"),
        "{got:?}"
    );
    let ids: std::collections::BTreeSet<String> = got
        .iter()
        .flat_map(|(_, b)| b["items"].as_array().unwrap().clone())
        .map(|e| e["auditID"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 120 + 120 / 50, "{ids:?}");

    // A credential in clear off loopback, a CA for http, a scheme it does not speak: refused.
    for (url, extra, why) in [
        (
            "http://receiver.example/audit",
            "--bearer-token-file",
            "must be https://",
        ),
        (
            "http://127.0.0.1:9/audit",
            "--ca-file",
            "is for an https:// receiver",
        ),
        (
            "ftp://127.0.0.1/x",
            "--batch",
            "must be an https:// or http:// URL",
        ),
    ] {
        let value = if extra == "--batch" {
            "5"
        } else if extra == "--ca-file" {
            ca.to_str().unwrap()
        } else {
            token.to_str().unwrap()
        };
        let out = Command::new(bin)
            .args([
                "ship",
                file.to_str().unwrap(),
                "--audit-webhook",
                url,
                extra,
                value,
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {err}");
        assert!(err.contains(why), "{url}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
