//! `kubeleash ship FILE --audit-webhook URL` (or `--otlp URL`): a record shipped to the
//! pipelines people already run, at least once: as the Kubernetes audit webhook sends it
//! (batched `audit.k8s.io/v1` `EventList`s POSTed to a URL, what Falco and Fluent Bit read),
//! or as OpenTelemetry logs over HTTP (OTLP/HTTP with JSON, `POST .../v1/logs`), each record a
//! log record whose body is the record's line, as written (so its hash still checks).
//!
//! The record file is the spool: the shipper reads it from a cursor (the byte offset after the
//! last line a receiver acknowledged, kept in `--cursor FILE`, written atomically after each
//! 2xx), so a receiver that is down, slow or restarted loses nothing, and neither does a
//! shipper that restarts. A batch sent whose acknowledgement was lost is sent again: a reader
//! drops duplicates by `auditID` (`SESSION-SEQ`, unique in a log). Only whole lines are read
//! (a line being written is left for the next round); checkpoints ship too, with their
//! signature, as annotations of an event of their own, so a copy elsewhere holds what a
//! verifier needs.

use std::io::{BufRead as _, Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http::header::CONTENT_TYPE;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kubeleash_core::display::printable;
use kubeleash_core::record::{Record, RecordKind, audit_event};

use crate::report::{USAGE, lower};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The record file (a proxy's or `kubeleash mcp`'s --record).
    file: PathBuf,
    /// POST batches of audit events (`audit.k8s.io/v1` EventList) to this https:// (or
    /// http://) URL.
    #[arg(
        long,
        value_name = "URL",
        required_unless_present = "otlp",
        conflicts_with = "otlp"
    )]
    audit_webhook: Option<String>,
    /// POST batches of OpenTelemetry logs (OTLP/HTTP, JSON) to this https:// (or http://) URL,
    /// the collector's logs endpoint (e.g. https://collector:4318/v1/logs).
    #[arg(long, value_name = "URL")]
    otlp: Option<String>,
    /// With an https:// URL: trust only this CA (PEM) for the receiver's certificate, as a
    /// receiver inside the cluster with its own CA needs [default: the system's roots].
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Send `Authorization: Bearer` with the token in this file, read again for each batch (a
    /// projected ServiceAccount token rotates); over https://, or http:// to loopback only.
    #[arg(long, value_name = "FILE")]
    bearer_token_file: Option<PathBuf>,
    /// Where to keep how far the receiver has acknowledged (default: FILE with `.cursor`).
    #[arg(long, value_name = "FILE")]
    cursor: Option<PathBuf>,
    /// Events per batch at most.
    #[arg(long, value_name = "N", default_value_t = 200)]
    batch: usize,
    /// Keep following the file as the recorder writes it (until SIGTERM or SIGINT); without
    /// it, stop once everything written so far is acknowledged.
    #[arg(long)]
    follow: bool,
}

/// How long a failed POST waits before it is tried again, at most.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a follower looks for new lines.
const POLL: Duration = Duration::from_millis(200);
/// The longest line read into one batch (a record with a body is at most a few MiB).
const MAX_LINE: usize = 64 * 1024 * 1024;

/// What a batch is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Audit,
    Otlp,
}

pub fn run(a: Args) -> ExitCode {
    let (flag, url, format) = match (&a.audit_webhook, &a.otlp) {
        (Some(u), _) => ("--audit-webhook", u, Format::Audit),
        (None, Some(u)) => ("--otlp", u, Format::Otlp),
        (None, None) => {
            eprintln!("error: say where to ship: --audit-webhook URL or --otlp URL");
            return ExitCode::from(USAGE);
        }
    };
    let uri: Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => {
            eprintln!(
                "error: {flag} `{}` is not a URL: {}",
                printable(url),
                lower(&e.to_string())
            );
            return ExitCode::from(USAGE);
        }
    };
    let https = uri.scheme_str() == Some("https");
    if !(https || uri.scheme_str() == Some("http")) || uri.host().is_none_or(str::is_empty) {
        eprintln!(
            "error: {flag} `{}` must be an https:// or http:// URL with a host",
            printable(url)
        );
        return ExitCode::from(USAGE);
    }
    if a.ca_file.is_some() && !https {
        eprintln!("error: --ca-file is for an https:// receiver; {flag} is http://");
        return ExitCode::from(USAGE);
    }
    let loopback = uri
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .is_some_and(|h| {
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
    if a.bearer_token_file.is_some() && !https && !loopback {
        eprintln!(
            "error: --bearer-token-file sends a credential: {flag} must be https:// (or http:// to loopback)"
        );
        return ExitCode::from(USAGE);
    }
    let client = match client(a.ca_file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(USAGE);
        }
    };
    if a.batch == 0 {
        eprintln!("error: --batch must be at least 1");
        return ExitCode::from(USAGE);
    }
    let cursor = a
        .cursor
        .clone()
        .unwrap_or_else(|| a.file.with_extension("cursor"));
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {}", lower(&e.to_string()));
            return ExitCode::from(1);
        }
    };
    match rt.block_on(ship(&a, &client, &uri, format, &cursor)) {
        Ok(n) => {
            eprintln!("kubeleash ship: {n} events acknowledged");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

type Shipper = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The client batches go out with: https with the system's roots, or only the CA in `ca_file`;
/// http too.
fn client(ca_file: Option<&Path>) -> Result<Shipper, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let tls = match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                format!(
                    "cannot read --ca-file `{}`: {}",
                    path.display(),
                    lower(&e.to_string())
                )
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&pem) {
                let c = c.map_err(|_| {
                    format!("--ca-file `{}` is not PEM certificates", path.display())
                })?;
                roots.add(c).map_err(|e| {
                    format!("--ca-file `{}`: {}", path.display(), lower(&e.to_string()))
                })?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "--ca-file `{}` holds no certificate",
                    path.display()
                ));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

async fn ship(
    a: &Args,
    client: &Shipper,
    uri: &Uri,
    format: Format,
    cursor: &Path,
) -> Result<u64, String> {
    let (mut offset, mut last) = read_cursor(cursor)?;
    let mut shipped = 0u64;
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        let (events, next, first_prev, last_hash) = read_batch(&a.file, offset, a.batch, format)?;
        // The chain says whether the file is still the one shipped from: the first record
        // after the cursor follows the last one shipped. A file replaced by a longer one is
        // not shipped on from the old offset.
        if let (Some(was), Some(prev)) = (&last, &first_prev)
            && was != prev
        {
            return Err(format!(
                "`{}` was replaced: the record at the cursor does not follow the last one shipped (hash {was}); keep the file as evidence, and move the cursor away to ship the new one from the start",
                a.file.display()
            ));
        }
        if events.is_empty() {
            if !a.follow {
                return Ok(shipped);
            }
            tokio::select! {
                () = &mut stop => return Ok(shipped),
                () = tokio::time::sleep(POLL) => continue,
            }
        }
        let body = match format {
            Format::Audit => serde_json::json!({
                "kind": "EventList",
                "apiVersion": "audit.k8s.io/v1",
                "metadata": {},
                "items": events,
            }),
            Format::Otlp => serde_json::json!({"resourceLogs": [{
                "resource": {"attributes": [
                    {"key": "service.name", "value": {"stringValue": "kubeleash"}},
                ]},
                "scopeLogs": [{"scope": {"name": "kubeleash.record"}, "logRecords": events}],
            }]}),
        }
        .to_string();
        let mut backoff = Duration::from_millis(100);
        loop {
            match post(client, uri, &body, a.bearer_token_file.as_deref()).await {
                Ok(()) => break,
                Err(why) => {
                    // Not the URL: it may carry a token.
                    eprintln!(
                        "kubeleash ship: the receiver did not take {} events ({why}); trying again in {} ms",
                        events.len(),
                        backoff.as_millis()
                    );
                    tokio::select! {
                        () = &mut stop => return Ok(shipped),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if last_hash.is_some() {
            last = last_hash;
        }
        write_cursor(cursor, next, last.as_deref())?;
        offset = next;
        shipped += events.len() as u64;
    }
}

async fn post(
    client: &Shipper,
    uri: &Uri,
    body: &str,
    token_file: Option<&Path>,
) -> Result<(), String> {
    let mut request = http::Request::post(uri.clone()).header(CONTENT_TYPE, "application/json");
    if let Some(path) = token_file {
        // Read for each batch: a projected token rotates. Never the token in an error.
        let token = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read --bearer-token-file `{}`: {}",
                path.display(),
                lower(&e.to_string())
            )
        })?;
        let value = http::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| format!("--bearer-token-file `{}` is not a token", path.display()))?;
        request = request.header(http::header::AUTHORIZATION, value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .map_err(|_| "no answer within 30 s".to_string())?
        .map_err(|e| lower(&e.to_string()))?;
    let status = response.status();
    // Read (and drop) the answer, so the connection can be used again.
    let _ = response.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// What a batch read from the file holds: its events, the offset after its last line, the
/// first record's `prev` and the last record's hash.
type Batch = (Vec<serde_json::Value>, u64, Option<String>, Option<String>);

/// The events of up to `max` whole lines of `file` from `offset`, and the offset after the
/// last of them.
fn read_batch(file: &Path, offset: u64, max: usize, format: Format) -> Result<Batch, String> {
    let fail = |e: std::io::Error| {
        format!(
            "cannot read `{}`: {}",
            file.display(),
            lower(&e.to_string())
        )
    };
    let mut f = std::fs::File::open(file).map_err(fail)?;
    let len = f.metadata().map_err(fail)?.len();
    if len < offset {
        return Err(format!(
            "`{}` is shorter than what was already shipped from it ({len} < {offset} bytes): it was cut or replaced; move the cursor away to ship it again from the start",
            file.display()
        ));
    }
    f.seek(SeekFrom::Start(offset)).map_err(fail)?;
    let mut reader = std::io::BufReader::new(f);
    let mut events = Vec::new();
    let (mut first_prev, mut last_hash) = (None, None);
    let mut at = offset;
    let mut line = Vec::new();
    while events.len() < max {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .map_err(fail)?;
        if n == 0 || line.last() != Some(&b'\n') {
            if n as u64 >= MAX_LINE as u64 {
                return Err(format!(
                    "`{}` has a line longer than {} MiB at byte {at}: not a record",
                    file.display(),
                    MAX_LINE >> 20
                ));
            }
            // The end, or a line still being written: the next round.
            break;
        }
        at += n as u64;
        if let Ok(r) = serde_json::from_slice::<Record>(&line) {
            if first_prev.is_none() {
                first_prev = Some(r.prev.clone());
            }
            last_hash = Some(r.hash.clone());
            events.push(match format {
                Format::Audit => event(&r),
                Format::Otlp => log_record(&r, &line),
            });
        }
    }
    Ok((events, at, first_prev, last_hash))
}

/// A record as an audit event; a checkpoint as one carrying its signature.
fn event(r: &Record) -> serde_json::Value {
    let mut e = audit_event(r);
    if r.body.kind == RecordKind::Checkpoint
        && let Some(c) = &r.body.checkpoint
    {
        e["annotations"]["kubeleash.dev/checkpoint"] = serde_json::to_value(c).unwrap_or_default();
        e["annotations"]["kubeleash.dev/checkpoint-prev"] = r.prev.clone().into();
    }
    e["annotations"]["kubeleash.dev/record-hash"] = r.hash.clone().into();
    e
}

/// A record as an OTLP log record: its line as the body, who and what as attributes.
fn log_record(r: &Record, line: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(line)).into_owned();
    let nanos =
        time::OffsetDateTime::parse(&r.body.time, &time::format_description::well_known::Rfc3339)
            .map(|t| t.unix_timestamp_nanos().to_string())
            .unwrap_or_else(|_| "0".into());
    let attr = |k: &str, v: serde_json::Value| serde_json::json!({"key": k, "value": v});
    let s = |v: &str| serde_json::json!({"stringValue": v});
    let refused = r.body.decision.outcome == kubeleash_core::record::Outcome::Refused;
    serde_json::json!({
        "timeUnixNano": nanos,
        "severityNumber": if refused { 13 } else { 9 },
        "severityText": if refused { "WARN" } else { "INFO" },
        "body": s(&text),
        "attributes": [
            attr("kubeleash.record.session", s(&r.session)),
            attr("kubeleash.record.seq", serde_json::json!({"intValue": r.seq.to_string()})),
            attr("kubeleash.record.kind", s(r.body.kind.as_str())),
            attr("kubeleash.record.hash", s(&r.hash)),
            attr("k8s.audit.id", s(&format!("{}-{}", r.session, r.seq))),
            attr("user.name", s(&r.body.identity.user)),
            attr("kubeleash.decision.outcome", s(r.body.decision.outcome.as_str())),
        ],
    })
}

/// The cursor: the byte offset shipped up to, and the hash of the last record shipped (a
/// cursor written before it was kept holds the offset alone).
fn read_cursor(cursor: &Path) -> Result<(u64, Option<String>), String> {
    match std::fs::read_to_string(cursor) {
        Ok(t) => {
            let mut words = t.split_whitespace();
            let offset = words.next().and_then(|w| w.parse().ok()).ok_or_else(|| {
                format!(
                    "the cursor `{}` does not hold a byte offset: remove it to ship from the start",
                    cursor.display()
                )
            })?;
            Ok((offset, words.next().map(str::to_string)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((0, None)),
        Err(e) => Err(format!(
            "cannot read the cursor `{}`: {}",
            cursor.display(),
            lower(&e.to_string())
        )),
    }
}

/// Write the cursor so that a crash leaves the old one or the new one, never half of either.
fn write_cursor(cursor: &Path, offset: u64, last: Option<&str>) -> Result<(), String> {
    let fail = |e: std::io::Error| {
        format!(
            "cannot write the cursor `{}`: {}",
            cursor.display(),
            lower(&e.to_string())
        )
    };
    let tmp = cursor.with_extension("cursor-tmp");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp).map_err(fail)?;
        let text = match last {
            Some(hash) => format!("{offset} {hash}\n"),
            None => offset.to_string(),
        };
        f.write_all(text.as_bytes()).map_err(fail)?;
        f.sync_all().map_err(fail)?;
    }
    std::fs::rename(&tmp, cursor).map_err(fail)
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
