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

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubeleash_core::record::{Chain, Opening, RecordBody, RecordKind, Signer};

/// A receiver on a fixed loopback port: it can be stopped and started again, and refuses every
/// `refuse_every`-th batch with a 503.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<serde_json::Value>>>,
    running: Arc<AtomicBool>,
    handled: Arc<AtomicUsize>,
}

impl Receiver {
    fn new() -> Receiver {
        // A free port, released at once: the receiver is down until started.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Receiver {
            port,
            got: Arc::default(),
            running: Arc::default(),
            handled: Arc::default(),
        }
    }

    fn start(&self, refuse_every: usize) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        self.running.store(true, Ordering::SeqCst);
        let (got, running, handled) =
            (self.got.clone(), self.running.clone(), self.handled.clone());
        std::thread::spawn(move || {
            while running.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        serve(s, &got, &running, &handled, refuse_every);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
    }

    fn stop(&self) {
        self.running.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One connection's requests, until it closes or the receiver stops.
fn serve(
    s: TcpStream,
    got: &Mutex<Vec<serde_json::Value>>,
    running: &AtomicBool,
    handled: &AtomicUsize,
    refuse_every: usize,
) {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut s = s;
    while running.load(Ordering::SeqCst) {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(_) => continue,
        }
        if !line.starts_with("POST ") {
            continue;
        }
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).is_err() {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; length];
        reader.set_mut_timeout();
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let n = handled.fetch_add(1, Ordering::SeqCst) + 1;
        if refuse_every > 0 && n.is_multiple_of(refuse_every) {
            let _ = s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
            continue;
        }
        got.lock()
            .unwrap()
            .push(serde_json::from_slice(&body).unwrap());
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    }
}

trait Untimed {
    fn set_mut_timeout(&mut self);
}
impl Untimed for BufReader<TcpStream> {
    /// The body follows its headers at once: wait for it.
    fn set_mut_timeout(&mut self) {
        self.get_ref()
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
    }
}

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

/// The audit events the receiver took, in the order it took them.
fn events(receiver: &Receiver) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for list in receiver.got.lock().unwrap().iter() {
        assert_eq!(list["kind"], "EventList");
        assert_eq!(list["apiVersion"], "audit.k8s.io/v1");
        out.extend(list["items"].as_array().unwrap().iter().cloned());
    }
    out
}

fn shipper(file: &Path, port: u16, follow: bool) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kubeleash"));
    c.args([
        "ship",
        file.to_str().unwrap(),
        "--audit-webhook",
        &format!("http://127.0.0.1:{port}/audit"),
        "--batch",
        "40",
    ]);
    if follow {
        c.arg("--follow");
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
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
