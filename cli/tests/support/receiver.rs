//! An audit webhook receiver on loopback that can be stopped and started again and refuses
//! batches on purpose, and `kubeleash ship` processes that feed it.
//!
//! Use it with `#[path = "support/receiver.rs"] mod receiver;`.

#![allow(dead_code, reason = "each test binary uses a part")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A receiver on a fixed loopback port: it can be stopped and started again, and refuses every
/// `refuse_every`-th batch with a 503.
pub struct Receiver {
    pub port: u16,
    pub got: Arc<Mutex<Vec<serde_json::Value>>>,
    running: Arc<AtomicBool>,
    handled: Arc<AtomicUsize>,
}

impl Receiver {
    pub fn new() -> Receiver {
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

    pub fn start(&self, refuse_every: usize) {
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
                        // A connection of its own per shipper: one keeps its connection open.
                        let (got, running, handled) =
                            (got.clone(), running.clone(), handled.clone());
                        std::thread::spawn(move || {
                            serve(s, &got, &running, &handled, refuse_every)
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
    }

    pub fn stop(&self) {
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

/// The audit events the receiver took, in the order it took them.
pub fn events(receiver: &Receiver) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for list in receiver.got.lock().unwrap().iter() {
        assert_eq!(list["kind"], "EventList");
        assert_eq!(list["apiVersion"], "audit.k8s.io/v1");
        out.extend(list["items"].as_array().unwrap().iter().cloned());
    }
    out
}

pub fn shipper(file: &Path, port: u16, follow: bool) -> Child {
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
