//! Load generator for `benches/proxy/run.sh`: the same request mix, from the same client, against
//! several endpoints in front of the same API server (the sandbox directly, `kubeleash proxy`,
//! `kubectl proxy`), interleaved in rounds so that the machine's noise falls on all of them alike.
//!
//! ```text
//! proxy_load --target direct=http://127.0.0.1:A --target kubeleash=https://127.0.0.1:B ...
//!            [--connections 32] [--seconds 4] [--rounds 3] [--sequential 2000] [--path PATH]...
//!            [--bearer-file NAME=FILE]... [--ca-file NAME=FILE]...
//! ```
//!
//! `--bearer-file` gives the bearer token an endpoint requires (`kubeleash proxy` with a fixed
//! identity requires the token it writes with `--agent-token-file`). An `https://` endpoint is
//! reached over TLS (rustls, ring) trusting only the CA in its `--ca-file` (`kubeleash proxy`
//! writes the CA it makes at start with `--agent-ca-file`); each connection does one handshake and
//! is then kept alive, as kubectl's are.
//!
//! The mix, in turn on every connection: GET one pod, list the pods of `dev`, GET the secret
//! `dev/db-credentials` (masked through kubeleash); `--path` (repeatable) replaces the mix, to
//! look at one kind of request. Two measurements per endpoint:
//!
//! - throughput: `--connections` keep-alive connections in a closed loop for `--seconds`, per
//!   round: requests per second, and p50/p99 latency under that load;
//! - latency: one connection, one request at a time, `--sequential` requests per round: p50 and
//!   p99 with nothing queued, which is what "added latency" compares.
//!
//! Every response must be 200 with a body; the first endpoint is the baseline for added
//! latency, the one named `kubectl-proxy` (if any) for the throughput ratio. Exits 1 if any
//! request failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark driver: failing loudly is the point"
)]

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

struct Target {
    name: String,
    authority: String,
    https: bool,
    /// The server's process, whose CPU time is counted per request under load.
    pid: Option<u32>,
}

struct Options {
    targets: Vec<Target>,
    connections: usize,
    seconds: f64,
    rounds: usize,
    sequential: usize,
    /// Paths to request instead of the mix.
    paths: Vec<String>,
}

fn usage() -> ! {
    eprintln!(
        "usage: proxy_load --target NAME=http[s]://127.0.0.1:PORT... [--connections N] [--seconds S] [--rounds R] [--sequential N] [--path PATH]... [--bearer-file NAME=FILE]... [--ca-file NAME=FILE]... [--pid NAME=PID]..."
    );
    std::process::exit(2)
}

fn options() -> Options {
    let mut o = Options {
        targets: Vec::new(),
        connections: 32,
        seconds: 4.0,
        rounds: 3,
        sequential: 2000,
        paths: Vec::new(),
    };
    let mut bearers: HashMap<String, String> = HashMap::new();
    let mut cas: HashMap<String, String> = HashMap::new();
    let mut pids: HashMap<String, u32> = HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--target" => {
                let v = value();
                let Some((name, url)) = v.split_once('=') else {
                    usage()
                };
                let (authority, https) = match url.strip_prefix("https://") {
                    Some(a) => (a, true),
                    None => (
                        url.strip_prefix("http://").unwrap_or_else(|| usage()),
                        false,
                    ),
                };
                o.targets.push(Target {
                    name: name.to_string(),
                    authority: authority.trim_end_matches('/').to_string(),
                    https,
                    pid: None,
                });
            }
            "--connections" => o.connections = value().parse().unwrap_or_else(|_| usage()),
            "--seconds" => o.seconds = value().parse().unwrap_or_else(|_| usage()),
            "--rounds" => o.rounds = value().parse().unwrap_or_else(|_| usage()),
            "--sequential" => o.sequential = value().parse().unwrap_or_else(|_| usage()),
            "--path" => o.paths.push(value()),
            "--bearer-file" => {
                let v = value();
                let Some((name, file)) = v.split_once('=') else {
                    usage()
                };
                let Ok(token) = std::fs::read_to_string(file) else {
                    eprintln!("proxy_load: cannot read the bearer file {file}");
                    usage()
                };
                bearers.insert(name.to_string(), token.trim().to_string());
            }
            "--pid" => {
                let v = value();
                let Some((name, pid)) = v.split_once('=') else {
                    usage()
                };
                pids.insert(name.to_string(), pid.parse().unwrap_or_else(|_| usage()));
            }
            "--ca-file" => {
                let v = value();
                let Some((name, file)) = v.split_once('=') else {
                    usage()
                };
                let Ok(pem) = std::fs::read_to_string(file) else {
                    eprintln!("proxy_load: cannot read the CA file {file}");
                    usage()
                };
                cas.insert(name.to_string(), pem);
            }
            _ => usage(),
        }
    }
    let by_authority = o
        .targets
        .iter()
        .filter_map(|t| Some((t.authority.clone(), bearers.get(&t.name)?.clone())))
        .collect();
    let _ = BEARERS.set(by_authority);
    let mut tls = HashMap::new();
    for t in o.targets.iter().filter(|t| t.https) {
        let Some(pem) = cas.get(&t.name) else {
            eprintln!(
                "proxy_load: {} is https: give its CA with --ca-file {}=FILE",
                t.name, t.name
            );
            usage()
        };
        tls.insert(t.authority.clone(), tls_connector(pem));
    }
    let _ = TLS.set(tls);
    for t in &mut o.targets {
        t.pid = pids.get(&t.name).copied();
    }
    if o.targets.is_empty() || o.connections == 0 || o.rounds == 0 {
        usage()
    }
    o
}

type Sender = SendRequest<Empty<Bytes>>;

/// The bearer token each endpoint (by authority) requires, if any.
static BEARERS: OnceLock<HashMap<String, String>> = OnceLock::new();

/// The TLS client of each https endpoint (by authority).
static TLS: OnceLock<HashMap<String, TlsConnector>> = OnceLock::new();

/// A TLS client that trusts the CA in `pem` alone, HTTP/1.1 by ALPN.
fn tls_connector(pem: &str) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(std::sync::Arc::new(config))
}

/// A GET of `path` on `authority`, with the endpoint's bearer token if it needs one.
fn get(authority: &str, path: &str) -> http::Request<Empty<Bytes>> {
    let mut b = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json");
    if let Some(t) = BEARERS.get().and_then(|m| m.get(authority)) {
        b = b.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Empty::new()).unwrap()
}

async fn connect(authority: &str) -> Sender {
    let stream = TcpStream::connect(authority).await.unwrap();
    stream.set_nodelay(true).unwrap();
    if let Some(tls) = TLS.get().and_then(|m| m.get(authority)) {
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        let name = ServerName::try_from(host.to_string()).unwrap();
        let stream = tls.connect(name, stream).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        return sender;
    }
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

/// One request; its latency, or why it failed.
async fn once(s: &mut Sender, authority: &str, path: &str) -> Result<Duration, String> {
    let req = get(authority, path);
    let t = Instant::now();
    s.ready().await.map_err(|e| e.to_string())?;
    let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let took = t.elapsed();
    if status != 200 || body.is_empty() {
        return Err(format!(
            "GET {path}: {status} {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    Ok(took)
}

/// User and system CPU time of a process, from `/proc/PID/stat` (Linux).
fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Ticks of USER_HZ, which Linux fixes at 100 for user space.
    Some(Duration::from_millis(ticks * 10))
}

#[derive(Default)]
struct Sample {
    latencies: Vec<Duration>,
    errors: Vec<String>,
    elapsed: Duration,
}

impl Sample {
    fn add(&mut self, other: Sample) {
        self.latencies.extend(other.latencies);
        self.errors.extend(other.errors);
        self.elapsed += other.elapsed;
    }

    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn quantile(&mut self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[i]
    }
}

/// `connections` closed-loop connections for `seconds`.
async fn closed_loop(target: &Target, mix: &[String], connections: usize, seconds: f64) -> Sample {
    let mut senders = Vec::new();
    for _ in 0..connections {
        senders.push(connect(&target.authority).await);
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for (c, mut s) in senders.into_iter().enumerate() {
        let authority = target.authority.clone();
        let mix = mix.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut out = Sample::default();
            let mut i = c;
            while Instant::now() < deadline {
                match once(&mut s, &authority, &mix[i % mix.len()]).await {
                    Ok(d) => out.latencies.push(d),
                    Err(e) => {
                        out.errors.push(e);
                        s = connect(&authority).await;
                    }
                }
                i += 1;
            }
            out
        }));
    }
    let mut all = Sample::default();
    for t in tasks {
        all.add(t.await.unwrap());
    }
    all.elapsed = start.elapsed();
    all
}

/// One connection, one request at a time: all of them, and by path.
async fn sequential(target: &Target, mix: &[String], n: usize) -> (Sample, Vec<Sample>) {
    let mut s = connect(&target.authority).await;
    let mut out = Sample::default();
    let mut by_path: Vec<Sample> = mix.iter().map(|_| Sample::default()).collect();
    let start = Instant::now();
    for i in 0..n {
        match once(&mut s, &target.authority, &mix[i % mix.len()]).await {
            Ok(d) => {
                out.latencies.push(d);
                by_path[i % mix.len()].latencies.push(d);
            }
            Err(e) => {
                out.errors.push(e);
                s = connect(&target.authority).await;
            }
        }
    }
    out.elapsed = start.elapsed();
    (out, by_path)
}

fn us(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn signed_us(a: Duration, b: Duration) -> String {
    let d = (a.as_secs_f64() - b.as_secs_f64()) * 1e6;
    format!("{d:+.0} µs")
}

async fn run(o: Options) -> i32 {
    // A pod to get, found through the first endpoint.
    let first = &o.targets[0];
    let mut s = connect(&first.authority).await;
    let req = get(&first.authority, "/api/v1/namespaces/dev/pods");
    let body = s
        .send_request(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let pods: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let pod = pods["items"][0]["metadata"]["name"]
        .as_str()
        .expect("a pod in dev")
        .to_string();
    let secret = "/api/v1/namespaces/dev/secrets/db-credentials";
    let mix = if o.paths.is_empty() {
        vec![
            format!("/api/v1/namespaces/dev/pods/{pod}"),
            "/api/v1/namespaces/dev/pods".to_string(),
            secret.to_string(),
        ]
    } else {
        o.paths.clone()
    };
    for t in &o.targets {
        let mut s = connect(&t.authority).await;
        let req = get(&t.authority, secret);
        let body = s
            .send_request(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        let masked = body.windows(12).any(|w| w == b"W21hc2tlZF0=");
        eprintln!(
            "{}: the secret comes back {}",
            t.name,
            if masked { "masked" } else { "in clear" }
        );
    }
    eprintln!(
        "mix: {}; {} connections x {} s and {} sequential requests, per endpoint per round, {} rounds",
        mix.join(", "),
        o.connections,
        o.seconds,
        o.sequential,
        o.rounds
    );

    let n = o.targets.len();
    let mut load: Vec<Sample> = (0..n).map(|_| Sample::default()).collect();
    let mut seq: Vec<Sample> = (0..n).map(|_| Sample::default()).collect();
    // CPU time of each server process (where its pid is given) under load, and the requests
    // it served meanwhile: what a request costs in CPU, which contention moves far less than
    // it moves throughput.
    let mut cpu: Vec<Duration> = vec![Duration::ZERO; n];
    let mut served: Vec<usize> = vec![0; n];
    let mut seq_by_path: Vec<Vec<Sample>> = (0..n)
        .map(|_| mix.iter().map(|_| Sample::default()).collect())
        .collect();
    // Warm-up: connections, caches, the kubectl dispatcher's first exec.
    for t in &o.targets {
        let _ = closed_loop(t, &mix, o.connections, 0.5).await;
    }
    for round in 0..o.rounds {
        // Rotate the order so that no endpoint always runs first or last.
        for k in 0..n {
            let i = (k + round) % n;
            let before = cpu_time(o.targets[i].pid);
            let s = closed_loop(&o.targets[i], &mix, o.connections, o.seconds).await;
            if let (Some(b), Some(a)) = (before, cpu_time(o.targets[i].pid)) {
                cpu[i] += a.saturating_sub(b);
                served[i] += s.latencies.len();
            }
            eprintln!(
                "round {}: {:<14} {:>8.0} req/s",
                round + 1,
                o.targets[i].name,
                s.rps()
            );
            load[i].add(s);
        }
        for k in 0..n {
            let i = (k + round) % n;
            let (all, by_path) = sequential(&o.targets[i], &mix, o.sequential).await;
            seq[i].add(all);
            for (acc, s) in seq_by_path[i].iter_mut().zip(by_path) {
                acc.add(s);
            }
        }
    }

    let baseline = 0;
    let kubectl = o.targets.iter().position(|t| t.name == "kubectl-proxy");
    let rps: Vec<f64> = load.iter().map(Sample::rps).collect();
    let seq_p50: Vec<Duration> = seq.iter_mut().map(|s| s.quantile(0.5)).collect();
    let seq_p99: Vec<Duration> = seq.iter_mut().map(|s| s.quantile(0.99)).collect();
    println!();
    println!(
        "| endpoint | req/s ({} conns) | vs kubectl proxy | p50 | p99 | 1 conn p50 | 1 conn p99 | p50 added (1 conn) |",
        o.connections
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut errors = 0;
    for i in 0..n {
        let vs = kubectl
            .map(|k| format!("{:.2}x", rps[i] / rps[k]))
            .unwrap_or_else(|| "-".into());
        let added = if i == baseline {
            "baseline".to_string()
        } else {
            signed_us(seq_p50[i], seq_p50[baseline])
        };
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            o.targets[i].name,
            rps[i],
            vs,
            us(load[i].quantile(0.5)),
            us(load[i].quantile(0.99)),
            us(seq_p50[i]),
            us(seq_p99[i]),
            added
        );
        for e in load[i].errors.iter().chain(&seq[i].errors).take(3) {
            eprintln!("{}: {e}", o.targets[i].name);
        }
        errors += load[i].errors.len() + seq[i].errors.len();
    }
    let measured: Vec<usize> = (0..n).filter(|&i| served[i] > 0).collect();
    if !measured.is_empty() {
        println!();
        println!(
            "Server CPU time per request under load ({} connections)",
            o.connections
        );
        println!();
        println!("| endpoint | requests | CPU | CPU per request |");
        println!("|---|---:|---:|---:|");
        for i in measured {
            println!(
                "| {} | {} | {:.2} s | {:.1} µs |",
                o.targets[i].name,
                served[i],
                cpu[i].as_secs_f64(),
                cpu[i].as_secs_f64() * 1e6 / served[i] as f64
            );
        }
    }
    println!();
    println!(
        "One connection, one request at a time, by request: p50 (p50 added over the baseline)"
    );
    println!();
    print!("| request |");
    for t in &o.targets {
        print!(" {} |", t.name);
    }
    println!();
    println!("|---|{}", "---:|".repeat(n));
    for (p, path) in mix.iter().enumerate() {
        let base = seq_by_path[baseline][p].quantile(0.5);
        print!("| `GET {path}` |");
        for (i, by_path) in seq_by_path.iter_mut().enumerate() {
            let p50 = by_path[p].quantile(0.5);
            if i == baseline {
                print!(" {} |", us(p50));
            } else {
                print!(" {} ({}) |", us(p50), signed_us(p50, base));
            }
        }
        println!();
    }
    if errors > 0 {
        eprintln!("{errors} requests failed");
        return 1;
    }
    0
}

fn main() {
    let o = options();
    // One thread: the client should take as little of the machine as it can.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    std::process::exit(rt.block_on(run(o)));
}
