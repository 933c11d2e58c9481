//! Shared by the sandbox's integration tests: start a sandbox, talk to it over raw HTTP, build a
//! kube-rs client, run kubectl with a fresh HOME.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kubeleash_sandbox::{Options, Sandbox, Seed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub async fn start(seed: Seed) -> Sandbox {
    Sandbox::start("127.0.0.1:0".parse().unwrap(), seed)
        .await
        .expect("sandbox starts")
}

pub async fn start_with(options: Options) -> Sandbox {
    Sandbox::start_with("127.0.0.1:0".parse().unwrap(), options)
        .await
        .expect("sandbox starts")
}

pub fn kube_client(sandbox: &Sandbox) -> kube::Client {
    let config = kube::Config::new(sandbox.url().parse().unwrap());
    kube::Client::try_from(config).expect("kube client")
}

/// A raw HTTP/1.1 response.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(std::str::from_utf8(&body[..end]).unwrap().trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[end + 2 + size + 2..];
    }
}

/// Send one request with `Connection: close` and read the whole response.
pub async fn raw(
    sandbox: &Sandbox,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Raw {
    let mut stream = TcpStream::connect(sandbox.addr()).await.unwrap();
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        sandbox.addr(),
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .expect("response within 10s")
        .unwrap();
    parse(&buf)
}

fn parse(buf: &[u8]) -> Raw {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Raw {
        status,
        headers,
        body,
    }
}

/// Open a streaming GET and read until `done` says the text so far is enough (or 10 s pass).
pub async fn stream_until(
    sandbox: &Sandbox,
    target: &str,
    headers: &[(&str, &str)],
    done: impl Fn(&str) -> bool,
) -> String {
    let mut stream = TcpStream::connect(sandbox.addr()).await.unwrap();
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: x\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    // A failure bound under load, never a measurement.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("timed out; got: {}", String::from_utf8_lossy(&buf)))
            .unwrap();
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if n == 0 || done(&text) {
            return text;
        }
    }
}

/// kubectl, or `None` (with the reason printed) when this machine has none.
pub fn kubectl_path() -> Option<PathBuf> {
    let candidates = ["/usr/bin/kubectl", "/usr/local/bin/kubectl"];
    if let Some(p) = candidates.iter().map(Path::new).find(|p| p.exists()) {
        return Some(p.to_path_buf());
    }
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok()
    {
        return Some(PathBuf::from("kubectl"));
    }
    eprintln!(
        "SKIPPED: kubectl is not installed (looked in /usr/bin, /usr/local/bin and PATH); \
         install it (e.g. Debian's kubernetes-client) to run the kubectl tests"
    );
    None
}

static HOMES: AtomicUsize = AtomicUsize::new(0);

/// kubectl pointed at one sandbox, with its own HOME so no discovery cache is shared.
pub struct Kubectl {
    bin: PathBuf,
    server: String,
    home: PathBuf,
}

impl Kubectl {
    pub fn new(bin: PathBuf, sandbox: &Sandbox) -> Kubectl {
        let home = std::env::temp_dir().join(format!(
            "kubeleash-sandbox-kubectl-{}-{}",
            std::process::id(),
            HOMES.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        Kubectl {
            bin,
            server: sandbox.url(),
            home,
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("HOME", &self.home)
            .env_remove("KUBECONFIG")
            .arg("--server")
            .arg(&self.server)
            .args(args);
        c
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("kubectl runs")
    }

    /// Run and return stdout; panics with stderr when kubectl fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run and return stderr; panics when kubectl succeeds.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(!out.status.success(), "kubectl {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn home(&self) -> &Path {
        &self.home
    }
}

impl Drop for Kubectl {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home);
    }
}
