//! Held requests POSTed as JSON to a webhook, which answers.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, USER_AGENT};
use http::{Request, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kubeleash_tower::{Answer, ApprovalRequest, Approver};
use serde::Deserialize;

use super::{MAX_WINDOW, clean_name, clean_reason, format_duration};

/// The largest answer read from a webhook.
const MAX_ANSWER: usize = 64 * 1024;

/// POSTs each held request (the layer's `ApprovalRequest` as JSON, body masked) to an
/// `http://` URL and reads the answer:
/// `{"approve": true|false, "by": "…", "reason": "…", "forSeconds": 900}` (`approve` required;
/// an `id`, if present, must be the request's). Any error, a non-2xx status or an answer not
/// understood denies. The agent is told why in general terms, never the URL (it may carry a
/// token); the details go to standard error.
#[derive(Clone)]
pub struct WebhookApprover {
    uri: Uri,
    client: Client<HttpConnector, Full<Bytes>>,
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
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    for_seconds: Option<u64>,
}

impl WebhookApprover {
    /// A webhook at an `http://` URL (`https://` is not supported yet).
    pub fn new(url: &str) -> io::Result<WebhookApprover> {
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
        Ok(WebhookApprover { uri, client })
    }

    async fn ask(&self, request: &ApprovalRequest) -> Result<Answer, (String, String)> {
        let body = serde_json::to_vec(request).map_err(|e| {
            (
                "the approval request could not be encoded".to_string(),
                e.to_string(),
            )
        })?;
        let post = Request::post(self.uri.clone())
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
        let a: WebhookAnswer = serde_json::from_slice(&bytes).map_err(|e| {
            (
                "the approval webhook's answer was not understood".to_string(),
                format!("{e} (expected {{\"approve\": true|false, \"by\": ..., \"reason\": ..., \"forSeconds\": ...}})"),
            )
        })?;
        if let Some(id) = &a.id
            && *id != request.id
        {
            return Err((
                "the approval webhook answered for another request".to_string(),
                format!("answer for id {id:?}, asked {}", request.id),
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

/// An error with its causes, which is where hyper-util keeps the useful part.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
