//! `kubeleash mask`: mask a response body exactly as kubeleash would deliver the response to
//! a request, streaming standard input to standard output.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use kubeleash_core::request::classify;

use crate::eval::parse_headers;
use crate::report::{USAGE, load_policy, lower};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy file whose masks apply.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// A request header, as `Name: value`; repeat for several.
    #[arg(long = "header", value_name = "'Name: value'")]
    headers: Vec<String>,
    /// The response's Content-Type (default: application/json, or text/plain for pod logs).
    #[arg(long, value_name = "TYPE")]
    content_type: Option<String>,
    /// The response's Content-Encoding (gzip is decoded).
    #[arg(long, value_name = "ENCODING")]
    content_encoding: Option<String>,
    /// The request's HTTP method.
    method: String,
    /// The request target as sent (it decides the framing: watch, log, object).
    target: String,
}

pub fn run(a: Args) -> ExitCode {
    let policy = match load_policy(&a.policy) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let headers = match parse_headers(&a.headers) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(USAGE);
        }
    };
    let request = match classify(&a.method, &a.target, &headers) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(USAGE);
        }
    };
    // None: the framing code picks what the API server sends (text for a pod log, JSON else).
    let content_type = a.content_type.filter(|c| !c.is_empty());
    let mut masker = match policy.masker(
        &request,
        content_type.as_deref(),
        a.content_encoding.as_deref(),
    ) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: refused: {e}");
            return ExitCode::from(1);
        }
    };
    let (mut stdin, mut stdout) = (std::io::stdin().lock(), std::io::stdout().lock());
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(buf.len() + 1024);
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!(
                    "error: cannot read standard input: {}",
                    lower(&e.to_string())
                );
                return ExitCode::from(1);
            }
        };
        out.clear();
        let r = masker.feed_into(&buf[..n], &mut out);
        if stdout.write_all(&out).is_err() {
            return ExitCode::from(1);
        }
        if let Err(e) = r {
            let _ = stdout.flush();
            eprintln!("error: refused: {e}");
            return ExitCode::from(1);
        }
    }
    out.clear();
    let r = masker.finish_into(&mut out);
    let wrote = stdout.write_all(&out).and_then(|()| stdout.flush());
    match (r, wrote) {
        (Err(e), _) => {
            eprintln!("error: refused: {e}");
            ExitCode::from(1)
        }
        (Ok(()), Err(_)) => ExitCode::from(1),
        (Ok(()), Ok(())) => ExitCode::SUCCESS,
    }
}
