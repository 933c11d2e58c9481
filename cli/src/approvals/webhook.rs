//! Held requests POSTed as JSON to a webhook, which answers.
//!
//! Whoever can answer the URL could approve, so answers are authenticated:
//!
//! - every answer must carry the exact `id` of the request it answers (an answer without one,
//!   or with another, denies);
//! - with a shared secret (`KUBELEASH_WEBHOOK_SECRET_FILE` naming a file that holds it, or
//!   `KUBELEASH_WEBHOOK_SECRET`; at least 16 bytes), each request carries
//!   `X-Kubeleash-Signature: sha256=<hex>`, the HMAC-SHA256 of `kubeleash-approval-request\n`
//!   followed by the exact body bytes, and an answer is believed only if it carries the same
//!   header over `kubeleash-approval-answer\n` followed by the exact bytes of its body (which
//!   holds the `id`, the decision, the window and any widening), checked in constant time; see
//!   [`kubeleash_tower::signature`]. A webhook in Python answers with
//!   `"sha256=" + hmac.new(secret, b"kubeleash-approval-answer\n" + body, "sha256").hexdigest()`.
//!
//! Only `http://` URLs are supported (the rustls client in Cargo.lock is not a dependency of
//! this crate): run the webhook on the loopback interface or behind a local TLS relay, and use a
//! secret whenever the path to it is not trusted.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, USER_AGENT};
use http::{Request, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kubeleash_tower::signature::{SIGNATURE_HEADER, sign_request, verify_answer};
use kubeleash_tower::{Answer, ApprovalRequest, Approver};
use serde::Deserialize;

use super::{Fit, MAX_WINDOW, Widening, clean_name, clean_reason, fit, format_duration};

/// The largest answer read from a webhook.
const MAX_ANSWER: usize = 64 * 1024;

/// The environment variable naming a file that holds the webhook's shared secret.
pub const SECRET_FILE_ENV: &str = "KUBELEASH_WEBHOOK_SECRET_FILE";
/// The environment variable holding the webhook's shared secret (the file is preferred: the
/// environment of a process is readable by more than its owner on some systems).
pub const SECRET_ENV: &str = "KUBELEASH_WEBHOOK_SECRET";
/// The shortest shared secret accepted (the chat channel's too).
pub(crate) const MIN_SECRET: usize = 16;

/// POSTs each held request (the layer's `ApprovalRequest` as JSON, body masked, with `widen`:
/// the axes its approval may be widened along) to an `http://` URL and reads the answer:
/// `{"id": "…", "approve": true|false, "by": "…", "reason": "…", "forSeconds": 900}` (`id` and
/// `approve` required; `id` must be the request's). An approval may be widened along the
/// offered axes with `"widen": {"names": "web-*", "fields": [{"path": "spec.replicas", "min": 1,
/// "max": 5}, {"path": "spec.template.spec.containers[0].image", "matches": "registry.example/*"}],
/// "uses": 3, "seconds": 1800}` (`forSeconds` stands for `seconds` when that is left out).
/// With a shared secret, requests and answers are signed (see the module documentation). Any
/// error, a non-2xx status, a missing or wrong `id` or signature, an answer not understood, or a
/// widening along an axis not offered denies. The agent is told why in general terms, never the
/// URL (it may carry a token); the details go to standard error.
#[derive(Clone)]
pub struct WebhookApprover {
    uri: Uri,
    client: Client<HttpConnector, Full<Bytes>>,
    secret: Option<std::sync::Arc<[u8]>>,
}

impl std::fmt::Debug for WebhookApprover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may carry a token.
        f.debug_struct("WebhookApprover").finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookAnswer {
    approve: bool,
    id: String,
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    for_seconds: Option<u64>,
    /// How far the approval reaches besides the one request.
    #[serde(default)]
    widen: Option<Widening>,
}

impl WebhookApprover {
    /// A webhook at an `http://` URL (`https://` is not supported yet), with the shared
    /// secret from [`SECRET_FILE_ENV`] or [`SECRET_ENV`] if either is set.
    pub fn new(url: &str) -> io::Result<WebhookApprover> {
        let secret = secret_from_env()?;
        if secret.is_none() {
            eprintln!(
                "kubeleash: the approval webhook has no shared secret, so anyone who can \
                 answer its URL with a request's id can approve it; set {SECRET_FILE_ENV} \
                 (or {SECRET_ENV}) to sign requests and require signed answers"
            );
        }
        WebhookApprover::with_secret(url, secret)
    }

    /// A webhook at an `http://` URL; with `secret`, requests are signed and only answers
    /// signed with it are believed. A secret shorter than 16 bytes is refused.
    pub fn with_secret(url: &str, secret: Option<Vec<u8>>) -> io::Result<WebhookApprover> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        if let Some(s) = &secret
            && s.len() < MIN_SECRET
        {
            return Err(invalid(format!(
                "the approval webhook's shared secret is {} bytes; use at least {MIN_SECRET} \
                 random bytes (for example `openssl rand -hex 32`)",
                s.len()
            )));
        }
        let secret = secret.map(std::sync::Arc::from);
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        let uri: Uri = url
            .parse()
            .map_err(|e| invalid(format!("approval webhook URL is not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(invalid(
                    "https approval webhooks are not supported yet; use an http:// URL \
                     (a local relay can forward to https)"
                        .into(),
                ));
            }
            _ => {
                return Err(invalid(
                    "approval webhook URL must start with http://".into(),
                ));
            }
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("approval webhook URL has no host".into()));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(WebhookApprover {
            uri,
            client,
            secret,
        })
    }

    async fn ask(&self, request: &ApprovalRequest) -> Result<Answer, (String, String)> {
        let body = serde_json::to_vec(request).map_err(|e| {
            (
                "the approval request could not be encoded".to_string(),
                e.to_string(),
            )
        })?;
        let mut post = Request::post(self.uri.clone());
        if let Some(secret) = &self.secret {
            post = post.header(SIGNATURE_HEADER, sign_request(secret, &body));
        }
        let post = post
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("kubeleash/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| {
                (
                    "the approval webhook request could not be built".into(),
                    e.to_string(),
                )
            })?;
        let response = self.client.request(post).await.map_err(|e| {
            (
                "the approval webhook could not be reached".to_string(),
                chain(&e),
            )
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err((
                format!("the approval webhook answered {status}"),
                format!("status {status}"),
            ));
        }
        let signature = response
            .headers()
            .get(SIGNATURE_HEADER)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let bytes = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| {
                (
                    "the approval webhook's answer could not be read".to_string(),
                    e.to_string(),
                )
            })?
            .to_bytes();
        // The signature is checked before a byte of the answer is believed.
        if let Some(secret) = &self.secret
            && !signature
                .as_deref()
                .is_some_and(|s| verify_answer(secret, &bytes, s))
        {
            return Err((
                "the approval webhook's answer was not signed with the shared secret".to_string(),
                format!(
                    "{} header {}",
                    SIGNATURE_HEADER,
                    if signature.is_some() {
                        "does not match"
                    } else {
                        "missing"
                    }
                ),
            ));
        }
        let a: WebhookAnswer = serde_json::from_slice(&bytes).map_err(|e| {
            (
                "the approval webhook's answer was not understood".to_string(),
                format!("{e} (expected {{\"id\": \"<the request's id>\", \"approve\": true|false, \"by\": ..., \"reason\": ..., \"forSeconds\": ..., \"widen\": {{\"names\": ..., \"fields\": [...], \"uses\": ..., \"seconds\": ...}}}})"),
            )
        })?;
        // The answer names the one request it answers: a copy of another answer, or a blind
        // `{"approve": true}`, approves nothing.
        if a.id != request.id {
            return Err((
                "the approval webhook answered for another request".to_string(),
                format!(
                    "answer for id {:?}, asked {}",
                    clean_name(&a.id),
                    request.id
                ),
            ));
        }
        let by =
            a.by.as_deref()
                .map(clean_name)
                .filter(|b| !b.is_empty())
                .unwrap_or_else(|| "webhook".into());
        let window = a.for_seconds.filter(|s| *s > 0).map(Duration::from_secs);
        if a.approve
            && let Some(w) = window
            && w > MAX_WINDOW
        {
            return Err((
                format!(
                    "the approval webhook asked for a window longer than {}",
                    format_duration(MAX_WINDOW)
                ),
                format!("forSeconds {}", w.as_secs()),
            ));
        }
        if a.approve
            && let Some(widening) = widened(a.widen, window)
        {
            let widening = widening
                .map_err(|e| ("the approval webhook's widening was refused".to_string(), e))?;
            return match fit(request, &widening) {
                Ok(fitted) => {
                    if let Fit::Exactly(why) = fitted {
                        eprintln!(
                            "kubeleash: approval {}: approved exactly, not widened: {why}",
                            request.id
                        );
                    }
                    Ok(Answer::Widen { by, widening })
                }
                Err(e) => Err((
                    "the approval webhook widened the approval along what the request does not offer"
                        .to_string(),
                    e,
                )),
            };
        }
        Ok(if a.approve {
            Answer::Approve { by, window }
        } else {
            Answer::Deny {
                by,
                reason: a
                    .reason
                    .as_deref()
                    .map(clean_reason)
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| "denied by the approval webhook".into()),
            }
        })
    }
}

#[async_trait::async_trait]
impl Approver for WebhookApprover {
    async fn approve(&self, request: ApprovalRequest) -> Answer {
        match self.ask(&request).await {
            Ok(answer) => answer,
            Err((reason, detail)) => {
                eprintln!(
                    "kubeleash: approval {}: {reason}: {detail}; denied",
                    request.id
                );
                Answer::Deny {
                    by: "kubeleash".into(),
                    reason,
                }
            }
        }
    }
}

/// The widening an answer asks for, if it asks for any, with `window` (its `forSeconds`) as
/// its time when it gives none of its own; two different times are refused. For the chat
/// channel's callbacks too.
pub(crate) fn widened(
    widen: Option<Widening>,
    window: Option<Duration>,
) -> Option<Result<Widening, String>> {
    let mut w = widen.filter(|w| !w.is_exact())?;
    if let Some(window) = window {
        match w.seconds {
            Some(s) if s != window.as_secs() => {
                return Some(Err(format!(
                    "the time is given twice and differs (forSeconds {}, widen.seconds {s}); give it once",
                    window.as_secs()
                )));
            }
            _ => w.seconds = Some(window.as_secs()),
        }
    }
    Some(Ok(w))
}

/// The shared secret from [`SECRET_FILE_ENV`] (trailing whitespace removed) or [`SECRET_ENV`],
/// for the webhook and the chat channel; errors never carry it.
pub(crate) fn secret_from_env() -> io::Result<Option<Vec<u8>>> {
    if let Some(path) = std::env::var_os(SECRET_FILE_ENV).filter(|p| !p.is_empty()) {
        let mut s = std::fs::read(&path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot read the approval secret file {} named by {SECRET_FILE_ENV}: {e}",
                    std::path::Path::new(&path).display()
                ),
            )
        })?;
        while s.last().is_some_and(u8::is_ascii_whitespace) {
            s.pop();
        }
        return Ok(Some(s));
    }
    Ok(std::env::var_os(SECRET_ENV)
        .filter(|s| !s.is_empty())
        .map(|s| s.into_encoded_bytes()))
}

/// An error with its causes, which is where hyper-util keeps the useful part.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
