//! Held requests posted to a chat service as a message a person can read and answer with a
//! button; the answer comes back later as a signed callback to an HTTP endpoint kubeleash
//! serves on loopback (`kubeleash proxy --approvals chat=URL --approvals-callback ADDR`).
//!
//! The message, POSTed as JSON to an `http://` URL (a Slack incoming webhook, or a relay in
//! front of one), is a Slack message: `text` (the notification fallback) and `blocks` (a header,
//! the kubectl command, who asks, the rule and reasons, the API server's dry run or the masked
//! body, and approve/deny buttons whose `value`s are `approve:<id>` and `deny:<id>`), plus the
//! layer's `ApprovalRequest` as it is (body masked) under `kubeleash`, for other receivers. It
//! carries `X-Kubeleash-Signature` over `kubeleash-approval-request\n` and the body, as the
//! webhook does. Everything the agent chose is escaped: it cannot mention a channel, make a
//! link, or end the code block it is shown in.
//!
//! The message shows what the approval may be widened along (the request's `widen` axes: a
//! name glob, field ranges, uses, time), or that the policy lets it be approved only exactly;
//! the buttons approve or deny exactly. A widening is only ever an explicit choice the receiver
//! sends back.
//!
//! Whoever receives the button press (a chat bot, a relay) answers by POSTing to the callback
//! URL `{"id": "…", "approve": true|false, "by": "<approver>", "reason": "…", "forSeconds": N}`,
//! optionally with `"widen": {"names": "web-*", "fields": [{"path": "spec.replicas", "min": 1,
//! "max": 5} | {"path": "…", "matches": "glob"}], "uses": N, "seconds": N}` (inside the signed
//! body, like everything else), signed as [`kubeleash_tower::signature`] says (timestamp and HMAC-SHA256 with the shared
//! secret, `KUBELEASH_WEBHOOK_SECRET_FILE` or `KUBELEASH_WEBHOOK_SECRET`, which the chat channel
//! requires). A callback is refused, and the request stays held, when its signature is missing
//! or wrong, its timestamp is more than 300 s off, it was seen before, its id is not held, its
//! `by` is empty (401), its `by` is the held request's own user (403: the agent never approves
//! itself), its window is longer than a day or its widening is malformed or along an axis the
//! request does not offer (400), or its body is over 64 KiB (413). The answer's `by` is the
//! approver the layer records.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use kubeleash_tower::signature::{
    CallbackRefusal, CallbackReplays, SIGNATURE_HEADER, TIMESTAMP_HEADER, check_callback,
    sign_request,
};
use kubeleash_tower::{Answer, ApprovalRequest, Approver};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, oneshot};

use super::webhook::{MIN_SECRET, SECRET_ENV, SECRET_FILE_ENV, chain, secret_from_env, widened};
use super::{
    Fit, MAX_WINDOW, Shown, Widening, clean_name, clean_reason, describe_widening, escape, fit,
    format_duration, one_line, pretty_json, same_user,
};

/// The largest callback body read.
pub const MAX_CALLBACK: usize = 64 * 1024;
/// The path callbacks are POSTed to.
pub const CALLBACK_PATH: &str = "/callback";
/// Callbacks remembered at once against replays (each for at most ten minutes).
const REPLAY_CAPACITY: usize = 16 * 1024;
/// Callback connections served at once; more are closed.
const MAX_CONNECTIONS: usize = 64;
/// Time a callback has to send its headers, and then its body.
const CALLBACK_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the chat service has to take a message.
const POST_TIMEOUT: Duration = Duration::from_secs(30);

// Slack's limits on what a block may hold, in characters.
const SECTION_TEXT: usize = 3000;
const FIELD_TEXT: usize = 2000;
/// What a code block may show of a body or diff, leaving room for its label and note.
const CODE_TEXT: usize = 2600;

/// A held request waiting for its callback.
struct Waiting {
    /// The held request: its user is never its approver, and a widening must fit it.
    request: ApprovalRequest,
    answer: oneshot::Sender<Answer>,
}

type Held = Arc<Mutex<HashMap<String, Waiting>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the callback endpoint shares with the approver.
struct Callbacks {
    secret: Arc<[u8]>,
    held: Held,
    replays: Mutex<CallbackReplays>,
}

/// Posts each held request to a chat service and waits for its signed callback (see the
/// module documentation). The callback endpoint runs until this is dropped.
pub struct ChatApprover {
    uri: Uri,
    client: Client<HttpConnector, Full<Bytes>>,
    secret: Arc<[u8]>,
    held: Held,
    callback_url: String,
    server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ChatApprover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may carry a token.
        f.debug_struct("ChatApprover")
            .field("callback_url", &self.callback_url)
            .finish_non_exhaustive()
    }
}

impl Drop for ChatApprover {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A callback's body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Callback {
    id: String,
    approve: bool,
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

impl ChatApprover {
    /// Post to the chat service at `url` (`http://` only), serve callbacks on `callback` (a
    /// loopback address; port 0 picks one), with the shared secret from
    /// `KUBELEASH_WEBHOOK_SECRET_FILE` or `KUBELEASH_WEBHOOK_SECRET`, which is required.
    /// Must be called within a Tokio runtime.
    pub async fn start(url: &str, callback: SocketAddr) -> io::Result<ChatApprover> {
        let Some(secret) = secret_from_env()? else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the chat approval channel needs a shared secret to check callbacks: set \
                     {SECRET_FILE_ENV} to a file holding at least {MIN_SECRET} random bytes \
                     (for example from `openssl rand -hex 32`), or {SECRET_ENV}"
                ),
            ));
        };
        ChatApprover::start_with_secret(url, callback, secret).await
    }

    /// [`ChatApprover::start`] with the shared secret given (at least 16 bytes).
    pub async fn start_with_secret(
        url: &str,
        callback: SocketAddr,
        secret: Vec<u8>,
    ) -> io::Result<ChatApprover> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        if secret.len() < MIN_SECRET {
            return Err(invalid(format!(
                "the chat approval channel's shared secret is {} bytes; use at least \
                 {MIN_SECRET} random bytes (for example `openssl rand -hex 32`)",
                secret.len()
            )));
        }
        if !callback.ip().is_loopback() {
            return Err(invalid(format!(
                "--approvals-callback {callback} is not a loopback address; listen on \
                 127.0.0.1:PORT and put a relay in front for a chat service elsewhere"
            )));
        }
        let uri: Uri = url
            .parse()
            .map_err(|e| invalid(format!("the chat URL is not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(invalid(
                    "https chat URLs are not supported yet; use an http:// URL (a local relay \
                     can forward to https)"
                        .into(),
                ));
            }
            _ => return Err(invalid("the chat URL must start with http://".into())),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("the chat URL has no host".into()));
        }
        let listener = tokio::net::TcpListener::bind(callback).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen for approval callbacks on {callback}: {e}"),
            )
        })?;
        let addr = listener.local_addr()?;
        let secret: Arc<[u8]> = Arc::from(secret);
        let held: Held = Arc::default();
        let callbacks = Arc::new(Callbacks {
            secret: Arc::clone(&secret),
            held: Arc::clone(&held),
            replays: Mutex::new(CallbackReplays::new(REPLAY_CAPACITY)),
        });
        let server = tokio::spawn(serve(listener, callbacks));
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        connector.set_nodelay(true);
        Ok(ChatApprover {
            uri,
            client: Client::builder(TokioExecutor::new()).build(connector),
            secret,
            held,
            callback_url: format!("http://{addr}{CALLBACK_PATH}"),
            server,
        })
    }

    /// Where callbacks are answered: `http://ADDR/callback`.
    pub fn callback_url(&self) -> &str {
        &self.callback_url
    }

    /// How many requests wait for a callback.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        lock(&self.held).len()
    }

    async fn post(&self, request: &ApprovalRequest) -> Result<(), (String, String)> {
        let body = serde_json::to_vec(&message(request)).map_err(|e| {
            (
                "the approval message could not be encoded".to_string(),
                e.to_string(),
            )
        })?;
        let post = Request::post(self.uri.clone())
            .header(SIGNATURE_HEADER, sign_request(&self.secret, &body))
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("kubeleash/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| {
                (
                    "the chat message could not be built".to_string(),
                    e.to_string(),
                )
            })?;
        let send = async {
            let response = self.client.request(post).await.map_err(|e| {
                (
                    "the chat approval channel could not be reached".to_string(),
                    chain(&e),
                )
            })?;
            let status = response.status();
            // What the service says is not an answer (Slack says `ok`): read a little, drop it.
            let _ = Limited::new(response.into_body(), 4096).collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err((
                    format!("the chat approval channel answered {status}"),
                    format!("status {status}"),
                ))
            }
        };
        tokio::time::timeout(POST_TIMEOUT, send)
            .await
            .unwrap_or_else(|_| {
                Err((
                    "the chat approval channel did not take the message in time".to_string(),
                    format!("no answer within {}s", POST_TIMEOUT.as_secs()),
                ))
            })
    }
}

/// Removes a held request from the callback registry when its wait ends, however it ends (an
/// answer, an error, or the layer's timeout dropping the wait).
struct Release {
    held: Held,
    id: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        lock(&self.held).remove(&self.id);
    }
}

fn refused(reason: impl Into<String>) -> Answer {
    Answer::Deny {
        by: "kubeleash".into(),
        reason: reason.into(),
    }
}

#[async_trait::async_trait]
impl Approver for ChatApprover {
    async fn approve(&self, request: ApprovalRequest) -> Answer {
        let id = request.id.clone();
        let (tx, mut rx) = oneshot::channel();
        {
            let mut held = lock(&self.held);
            if held.contains_key(&id) {
                return refused("the approval id is already held");
            }
            held.insert(
                id.clone(),
                Waiting {
                    request: request.clone(),
                    answer: tx,
                },
            );
        }
        let _release = Release {
            held: Arc::clone(&self.held),
            id: id.clone(),
        };
        if let Err((reason, detail)) = self.post(&request).await {
            // A receiver quick enough may have answered before the service's reply failed.
            if let Ok(answer) = rx.try_recv() {
                return answer;
            }
            eprintln!("kubeleash: approval {id}: {reason}: {detail}; denied");
            return refused(reason);
        }
        eprintln!(
            "kubeleash: approval {id} posted to the chat channel; waiting for a signed callback"
        );
        match rx.await {
            Ok(answer) => answer,
            Err(_) => refused("the chat approval channel's answer was lost"),
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, callbacks: Arc<Callbacks>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, most likely: wait instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        let callbacks = Arc::clone(&callbacks);
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let callbacks = Arc::clone(&callbacks);
                async move { Ok::<_, std::convert::Infallible>(handle(&callbacks, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(CALLBACK_READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn refuse(status: StatusCode, error: &str) -> Response<Full<Bytes>> {
    eprintln!("kubeleash: an approval callback was refused ({status}): {error}");
    reply(status, &json!({"ok": false, "error": error}))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn handle(callbacks: &Callbacks, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() != CALLBACK_PATH {
        return refuse(
            StatusCode::NOT_FOUND,
            "not found; approval callbacks go to /callback",
        );
    }
    if req.method() != Method::POST {
        return refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "approval callbacks are POSTed",
        );
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the callback's body is over 64 KiB; send only the answer",
        )
    };
    let signature = header(SIGNATURE_HEADER);
    let timestamp = header(TIMESTAMP_HEADER);
    let read = Limited::new(req.into_body(), MAX_CALLBACK).collect();
    let body = match tokio::time::timeout(CALLBACK_READ_TIMEOUT, read).await {
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                "the callback's body did not arrive in time",
            );
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(_)) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "the callback's body could not be read",
            );
        }
        Ok(Ok(b)) => b.to_bytes(),
    };
    let now = now();
    // Nothing of the body is believed before its signature is checked.
    let verified = match check_callback(
        &callbacks.secret,
        timestamp.as_deref(),
        signature.as_deref(),
        &body,
        now,
    ) {
        Ok(v) => v,
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, &e.to_string()),
    };
    let answer: Callback = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!(
                    "the callback was not understood ({e}); send {{\"id\": \"<approval id>\", \
                     \"approve\": true|false, \"by\": \"<approver>\", \"reason\": \"...\", \
                     \"forSeconds\": N, \"widen\": {{\"names\": \"...\", \"fields\": [...], \
                     \"uses\": N, \"seconds\": N}}}}"
                ),
            );
        }
    };
    if let Err(e) = lock(&callbacks.replays).admit(&verified, &answer.id, now) {
        let status = if e == CallbackRefusal::TooMany {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::UNAUTHORIZED
        };
        return refuse(status, &e.to_string());
    }
    let id = one_line(&clean_name(&answer.id));
    let by = clean_name(answer.by.as_deref().unwrap_or_default());
    if by.is_empty() {
        return refuse(
            StatusCode::UNAUTHORIZED,
            &format!("the callback for approval {id} does not say who answered (`by`)"),
        );
    }
    let window = answer
        .for_seconds
        .filter(|s| *s > 0)
        .map(Duration::from_secs);
    let mut held = lock(&callbacks.held);
    let Some(waiting) = held.get(&answer.id) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            &format!("no request is held for approval {id}"),
        );
    };
    if is_self(
        &by,
        answer.by.as_deref().unwrap_or_default(),
        &waiting.request.identity.user,
    ) {
        return refuse(
            StatusCode::FORBIDDEN,
            &format!(
                "approval {id} was answered by `{}`, the user whose request it is; another \
                 person must answer it",
                one_line(&by)
            ),
        );
    }
    if answer.approve
        && let Some(w) = window
        && w > MAX_WINDOW
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!(
                "forSeconds {} is longer than {}; allow such requests in the policy instead",
                w.as_secs(),
                format_duration(MAX_WINDOW)
            ),
        );
    }
    // A widening must be one the request offers; refused, the request stays held.
    let mut said = String::new();
    let widening = match answer
        .widen
        .filter(|_| answer.approve)
        .and_then(|w| widened(Some(w), window))
    {
        None => None,
        Some(Err(e)) => return refuse(StatusCode::BAD_REQUEST, &format!("approval {id}: {e}")),
        Some(Ok(w)) => match fit(&waiting.request, &w) {
            Err(e) => {
                return refuse(StatusCode::BAD_REQUEST, &format!("approval {id}: {e}"));
            }
            Ok(Fit::Exactly(why)) => {
                said = format!(" exactly, once; not widened: {}", one_line(&why));
                Some(w)
            }
            Ok(Fit::Widened) => {
                said = format!(", widened: {}", describe_widening(&w));
                Some(w)
            }
        },
    };
    let Some(waiting) = held.remove(&answer.id) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            &format!("no request is held for approval {id}"),
        );
    };
    drop(held);
    let decision = if let Some(widening) = widening {
        Answer::Widen {
            by: by.clone(),
            widening,
        }
    } else if answer.approve {
        Answer::Approve {
            by: by.clone(),
            window,
        }
    } else {
        Answer::Deny {
            by: by.clone(),
            reason: answer
                .reason
                .as_deref()
                .map(clean_reason)
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "denied in the chat approval channel".into()),
        }
    };
    if waiting.answer.send(decision).is_err() {
        return refuse(
            StatusCode::UNAUTHORIZED,
            &format!("approval {id} is no longer held (it timed out)"),
        );
    }
    let verb = if answer.approve { "approved" } else { "denied" };
    eprintln!(
        "kubeleash: approval {id} {verb}{said} by {} (chat callback)",
        one_line(&by)
    );
    reply(
        StatusCode::OK,
        &json!({"ok": true, "id": answer.id, "answer": verb}),
    )
}

/// Whether the approver named `by` (cleaned; `raw` as sent) is the user whose request it is,
/// as the layer compares them ([`same_user`]): refused here, the request stays held for
/// someone else.
fn is_self(by: &str, raw: &str, user: &str) -> bool {
    same_user(by, user) || same_user(raw, user)
}

/// Text for Slack's mrkdwn: the characters Slack reads as markup (`&`, `<`, `>`: mentions,
/// links) written as entities, and backticks, which would end a code span, as `ˋ`.
fn mrkdwn_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '`' => out.push('\u{2cb}'),
            c => out.push(c),
        }
    }
    out
}

/// Agent text on one line, terminal-safe (core's `printable`) and mrkdwn-safe.
fn inline(text: &str) -> String {
    mrkdwn_escape(&one_line(text))
}

/// At most `max` characters of escaped text, with `…` when cut; never inside an entity.
fn clip(text: &str, max: usize) -> (String, bool) {
    if text.chars().count() <= max {
        return (text.to_string(), false);
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    if let Some(amp) = cut.rfind('&')
        && !cut[amp..].contains(';')
    {
        cut.truncate(amp);
    }
    cut.push('…');
    (cut, true)
}

/// A code block of agent text (lines kept, each escaped), cut to fit a section.
fn code_block(text: &str, whole_in: &str) -> String {
    let (shown, cut) = clip(&mrkdwn_escape(&escape(text, true)), CODE_TEXT);
    let mut out = format!("```\n{shown}\n```");
    if cut {
        out.push_str(&format!("\n_(cut to fit the message; {whole_in})_"));
    }
    out
}

fn section(text: String) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&text, SECTION_TEXT).0}})
}

fn field(label: &str, value: String) -> Value {
    json!({"type": "mrkdwn", "text": clip(&format!("*{label}*\n{value}"), FIELD_TEXT).0})
}

/// What the approval may be widened along, as text: the buttons approve exactly, and a
/// widening arrives only as an explicit `widen` in the signed callback.
fn widen_text(r: &ApprovalRequest) -> String {
    let axes = Shown::from(r).widen;
    if let Some(never) = &axes.never {
        return format!(
            "*Approve exactly only:* {}",
            clip(&inline(never), FIELD_TEXT).0
        );
    }
    if axes.exact_only() {
        return "*Approve exactly only:* this request offers nothing to widen".into();
    }
    let mut offered = Vec::new();
    if axes.names {
        offered.push("• any *name* matching a glob".to_string());
    }
    if !axes.fields.is_empty() {
        // Whole code spans only, as many as fit: a span cut in two would run on.
        let mut fields = String::new();
        let mut shown = 0;
        for f in &axes.fields {
            let span = format!("`{}`", clip(&inline(f), 200).0);
            if fields.len() + span.len() > FIELD_TEXT {
                break;
            }
            if shown > 0 {
                fields.push_str(", ");
            }
            fields.push_str(&span);
            shown += 1;
        }
        if shown < axes.fields.len() {
            fields.push_str(&format!(
                " and {} more (see `kubeleash.widen.fields`)",
                axes.fields.len() - shown
            ));
        }
        offered.push(format!(
            "• *fields* within a range or matching a glob: {fields}"
        ));
    }
    if axes.uses_and_time {
        offered.push("• a number of *uses* and a *time*".into());
    }
    format!(
        "*Can be widened* (only by an explicit answer with `widen`; the buttons approve exactly)\n{}",
        offered.join("\n")
    )
}

/// The Slack message for a held request (see the module documentation).
pub(crate) fn message(r: &ApprovalRequest) -> Value {
    let id = inline(&r.id);
    let user = clip(&inline(&r.identity.user), 200).0;
    let kubectl = one_line(&r.kubectl);
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": "Approval needed (kubeleash)", "emoji": false}}),
        section(format!(
            "*{user}* asks to run\n{}",
            code_block(&kubectl, "see `kubeleash.kubectl`")
        )),
    ];
    let groups = if r.identity.groups.is_empty() {
        "(none)".to_string()
    } else {
        inline(&r.identity.groups.join(", "))
    };
    let mut fields = vec![
        field("User", user.clone()),
        field("Groups", groups),
        field(
            "Request",
            format!("{} {}", inline(&r.method), inline(&r.target)),
        ),
        field(
            "Rule",
            r.rule
                .as_deref()
                .map_or_else(|| "(none)".to_string(), inline),
        ),
    ];
    if let Some(i) = &r.impersonation {
        let who = super::impersonated(i.user.as_deref(), &i.groups, i.uid.as_deref(), &i.extra);
        fields.push(field("IMPERSONATING", inline(&who)));
    }
    if let Some(ct) = &r.content_type {
        fields.push(field("Content type", inline(ct)));
    }
    blocks.push(json!({"type": "section", "fields": fields}));
    blocks.push(section(format!(
        "*Why it is held (policy)*\n{}",
        inline(&r.reason)
    )));
    blocks.push(section(widen_text(r)));
    if let Some(why) = r.agent_reason.as_deref().filter(|w| !w.is_empty()) {
        blocks.push(section(format!(
            "*The agent's reason* (its own words; they prove nothing)\n>{}",
            inline(why)
        )));
    }
    let body = |blocks: &mut Vec<Value>| match r.body.as_deref().filter(|b| !b.is_empty()) {
        Some(body) => blocks.push(section(format!(
            "*Body* (secrets masked)\n{}",
            code_block(&pretty_json(body), "see `kubeleash.body`")
        ))),
        None => blocks.push(section("*Body:* none".into())),
    };
    match &r.dry_run {
        // The API server's own account of what would change, when it has one; the body
        // otherwise.
        Some(dry) => {
            if let Some(why) = &dry.rejected {
                blocks.push(section(format!(
                    ":warning: *The API server would reject this request* (dry run, status {}): {}",
                    dry.status,
                    inline(why)
                )));
            }
            if dry.diff.trim().is_empty() {
                if dry.rejected.is_none() {
                    blocks.push(section(
                        "*Dry run:* the API server would accept it and change nothing".into(),
                    ));
                }
                body(&mut blocks);
            } else {
                blocks.push(section(format!(
                    "*What it would change* (API server dry run; secrets masked)\n{}",
                    code_block(&dry.diff, "see `kubeleash.dry_run.diff`")
                )));
            }
        }
        None => body(&mut blocks),
    }
    blocks.push(json!({
        "type": "actions",
        "block_id": "kubeleash_approval",
        "elements": [
            {
                "type": "button",
                "action_id": "kubeleash_approve",
                "style": "primary",
                "text": {"type": "plain_text", "text": "Approve", "emoji": false},
                "value": format!("approve:{}", r.id),
                "confirm": {
                    "title": {"type": "plain_text", "text": "Approve this request?"},
                    "text": {"type": "mrkdwn", "text": clip(&format!("`{}`", mrkdwn_escape(&kubectl)), 300).0},
                    "confirm": {"type": "plain_text", "text": "Approve"},
                    "deny": {"type": "plain_text", "text": "Cancel"}
                }
            },
            {
                "type": "button",
                "action_id": "kubeleash_deny",
                "style": "danger",
                "text": {"type": "plain_text", "text": "Deny", "emoji": false},
                "value": format!("deny:{}", r.id)
            }
        ]
    }));
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": format!("approval `{id}`: unanswered, it is denied when the proxy's approval timeout passes")}]
    }));
    let text = clip(
        &format!(
            "kubeleash: approval needed: {user} asks to run {} (approval {id})",
            inline(&r.kubectl)
        ),
        SECTION_TEXT,
    )
    .0;
    json!({
        "text": text,
        "blocks": blocks,
        "kubeleash": r,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

    use super::*;
    use kubeleash_core::policy::Identity;
    use kubeleash_core::request::Attributes;
    use kubeleash_tower::DryRun;
    use kubeleash_tower::signature::sign_callback;

    const SECRET: &[u8] = b"0123456789abcdef-chat-secret";

    fn held(id: &str) -> ApprovalRequest {
        ApprovalRequest {
            id: id.into(),
            identity: Identity::new("agent-1", ["ai-agents"]),
            method: "POST".into(),
            target: "/api/v1/namespaces/dev/configmaps?fieldManager=kubectl-create".into(),
            attributes: Attributes::default(),
            kubectl: "kubectl create configmap app -n dev".into(),
            body: Some(r#"{"kind":"ConfigMap","data":{"k":"v"}}"#.into()),
            content_type: Some("application/json".into()),
            impersonation: None,
            rule: Some("configmaps-need-a-human".into()),
            reason: "configmaps change what runs".into(),
            agent_reason: None,
            dry_run: None,
            widen: Default::default(),
        }
    }

    fn texts(m: &Value) -> String {
        m["blocks"].to_string()
    }

    #[test]
    fn the_message_is_a_slack_message_with_the_request_under_kubeleash() {
        let m = message(&held("0123456789abcdef0123456789abcdef"));
        assert!(
            m["text"]
                .as_str()
                .unwrap()
                .contains("kubectl create configmap app -n dev")
        );
        let blocks = m["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert!(blocks.iter().all(|b| b["type"].is_string()));
        let actions = blocks.iter().find(|b| b["type"] == "actions").unwrap();
        let values: Vec<&str> = actions["elements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["value"].as_str().unwrap())
            .collect();
        assert_eq!(
            values,
            [
                "approve:0123456789abcdef0123456789abcdef",
                "deny:0123456789abcdef0123456789abcdef"
            ]
        );
        assert_eq!(m["kubeleash"]["id"], "0123456789abcdef0123456789abcdef");
        assert_eq!(
            m["kubeleash"]["kubectl"],
            "kubectl create configmap app -n dev"
        );
        let t = texts(&m);
        assert!(t.contains("configmaps-need-a-human"), "{t}");
        assert!(t.contains("configmaps change what runs"), "{t}");
        assert!(t.contains("*Body* (secrets masked)"), "{t}");
        assert!(!t.contains("agent's reason"), "{t}");
        // Slack's limits on every text.
        for b in blocks {
            if let Some(s) = b["text"]["text"].as_str() {
                assert!(s.chars().count() <= SECTION_TEXT);
            }
        }
    }

    #[test]
    fn the_dry_run_is_shown_instead_of_the_body() {
        let mut r = held("aa");
        r.agent_reason = Some("the app needs its config".into());
        r.dry_run = Some(DryRun {
            status: 201,
            rejected: None,
            changes: Vec::new(),
            diff: "+ data.k: \"v\"".into(),
        });
        let t = texts(&message(&r));
        assert!(t.contains("What it would change"), "{t}");
        assert!(t.contains("```\\n+ data.k: \\\"v\\\"\\n```"), "{t}");
        assert!(!t.contains("*Body*"), "{t}");
        assert!(t.contains("the app needs its config"), "{t}");
        r.dry_run = Some(DryRun {
            status: 422,
            rejected: Some("ConfigMap \"app\" is invalid: data: Too long".into()),
            changes: Vec::new(),
            diff: String::new(),
        });
        let t = texts(&message(&r));
        assert!(t.contains("would reject this request"), "{t}");
        assert!(t.contains("status 422"), "{t}");
        assert!(t.contains("data: Too long"), "{t}");
        assert!(
            t.contains("*Body* (secrets masked)"),
            "no diff: the body is shown: {t}"
        );
    }

    #[test]
    fn agent_text_cannot_mention_link_or_break_out() {
        let mut r = held("bb");
        r.kubectl = "kubectl get <!channel> <https://evil.example|docs> ```x".into();
        r.agent_reason = Some("urgent\n*Rule* approved-by-ops \u{202e}".into());
        r.body = Some(format!("{{\"a\":\"```<@U123>{}\"}}", "x".repeat(10_000)));
        let m = message(&r);
        let t = texts(&m);
        for bad in ["<!channel>", "<https://", "<@U123>", "```x", "\u{202e}"] {
            assert!(!t.contains(bad), "{bad} in {t}");
        }
        assert!(!m["text"].as_str().unwrap().contains("<!channel>"));
        assert!(t.contains("&lt;!channel&gt;"), "{t}");
        assert!(t.contains("cut to fit the message"), "{t}");
        for b in m["blocks"].as_array().unwrap() {
            if let Some(s) = b["text"]["text"].as_str() {
                assert!(s.chars().count() <= SECTION_TEXT, "{}", s.len());
                // Code fences come in pairs: nothing the agent wrote closes one.
                assert_eq!(s.matches("```").count() % 2, 0, "{s}");
            }
        }
    }

    #[test]
    fn the_message_shows_what_may_be_widened_and_the_buttons_approve_exactly() {
        let r = crate::approvals::tests::held_scale(None);
        let m = message(&r);
        let t = texts(&m);
        assert!(t.contains("*Can be widened*"), "{t}");
        assert!(t.contains("`spec.replicas`"), "{t}");
        assert!(t.contains("a number of *uses* and a *time*"), "{t}");
        assert_eq!(m["kubeleash"]["widen"]["fields"], json!(["spec.replicas"]));
        let floored = crate::approvals::tests::held_scale(Some("the policy never widens <!here>"));
        let t = texts(&message(&floored));
        assert!(
            t.contains("*Approve exactly only:* the policy never widens &lt;!here&gt;"),
            "{t}"
        );
        assert!(!t.contains("Can be widened"), "{t}");
        // Many fields: whole code spans only, the rest counted.
        let mut many = crate::approvals::tests::held_scale(None);
        many.widen.fields = (0..64)
            .map(|i| format!("data.k{i}{}", "x".repeat(60)))
            .collect();
        let t = texts(&message(&many));
        assert!(t.contains("more (see `kubeleash.widen.fields`)"), "{t}");
        for b in message(&many)["blocks"].as_array().unwrap() {
            if let Some(s) = b["text"]["text"].as_str() {
                assert!(s.chars().count() <= SECTION_TEXT);
                assert_eq!(s.matches('`').count() % 2, 0, "{s}");
            }
        }
    }

    #[test]
    fn clip_never_cuts_an_entity() {
        let (s, cut) = clip("ab&amp;cd", 5);
        assert!(cut);
        assert_eq!(s, "ab…");
        assert_eq!(clip("abc", 3), ("abc".to_string(), false));
    }

    #[test]
    fn the_agent_is_never_its_own_approver() {
        assert!(is_self("agent-1", "agent-1", "agent-1"));
        assert!(is_self("Agent-1", " Agent-1 ", "agent-1"));
        assert!(is_self("agent-1", "agent-1\u{1b}", "agent-1"));
        assert!(is_self("agent_1", "agent_1", "agent-1"));
        assert!(!is_self("alice", "alice", "agent-1"));
    }

    /// A chat service that takes every message and keeps it.
    async fn chat_service() -> (String, Arc<Mutex<Vec<Value>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let kept = Arc::clone(&kept);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let kept = Arc::clone(&kept);
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            kept.lock()
                                .unwrap()
                                .push(serde_json::from_slice::<Value>(&body).unwrap());
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (url, seen)
    }

    async fn call_back(url: &str, body: &str, ts: u64, secret: &[u8]) -> u16 {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let req = Request::post(url)
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, sign_callback(secret, ts, body.as_bytes()))
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        client.request(req).await.unwrap().status().as_u16()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_signed_callback_answers_and_the_rest_are_refused() {
        let (url, seen) = chat_service().await;
        let chat = Arc::new(
            ChatApprover::start_with_secret(&url, "127.0.0.1:0".parse().unwrap(), SECRET.to_vec())
                .await
                .unwrap(),
        );
        let cb = chat.callback_url().to_string();
        assert!(
            cb.starts_with("http://127.0.0.1:") && cb.ends_with("/callback"),
            "{cb}"
        );
        let id = "0123456789abcdef0123456789abcdef";
        let waiting = tokio::spawn({
            let chat = Arc::clone(&chat);
            async move { chat.approve(held(id)).await }
        });
        while seen.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(seen.lock().unwrap()[0]["kubeleash"]["id"], id);
        let now = now();
        let answer = |by: &str, approve: bool| {
            format!(r#"{{"id":"{id}","approve":{approve},"by":"{by}","forSeconds":60}}"#)
        };
        let good = answer("alice", true);
        assert_eq!(
            call_back(&cb, &good, now, b"not-the-secret-at-all").await,
            401
        );
        assert_eq!(call_back(&cb, &good, now - 301, SECRET).await, 401);
        assert_eq!(
            call_back(&cb, &answer("agent-1", true), now, SECRET).await,
            403
        );
        assert_eq!(
            call_back(&cb, &answer("", true), now + 1, SECRET).await,
            401
        );
        let other = good.replace(id, "ffffffffffffffffffffffffffffffff");
        assert_eq!(call_back(&cb, &other, now, SECRET).await, 401);
        let long = good.replace("60", "90000");
        assert_eq!(call_back(&cb, &long, now + 2, SECRET).await, 400);
        let big = format!(r#"{{"id":"{id}","pad":"{}"}}"#, "x".repeat(MAX_CALLBACK));
        assert_eq!(call_back(&cb, &big, now, SECRET).await, 413);
        assert_eq!(chat.held(), 1, "still held");
        assert!(!waiting.is_finished());
        assert_eq!(call_back(&cb, &good, now + 3, SECRET).await, 200);
        assert_eq!(
            waiting.await.unwrap(),
            Answer::Approve {
                by: "alice".into(),
                window: Some(Duration::from_secs(60)),
            }
        );
        assert_eq!(
            call_back(&cb, &good, now + 3, SECRET).await,
            401,
            "a replay"
        );
        assert_eq!(chat.held(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_chat_denies_and_releases_the_id() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let chat = ChatApprover::start_with_secret(
            &format!("http://127.0.0.1:{port}/hook"),
            "127.0.0.1:0".parse().unwrap(),
            SECRET.to_vec(),
        )
        .await
        .unwrap();
        match chat.approve(held("cc")).await {
            Answer::Deny { by, reason } => {
                assert_eq!(by, "kubeleash");
                assert!(reason.contains("could not be reached"), "{reason}");
                assert!(!reason.contains(&port.to_string()), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(chat.held(), 0);
    }

    #[tokio::test]
    async fn start_refuses_what_cannot_be_safe() {
        let local = "127.0.0.1:0".parse().unwrap();
        let err = |r: io::Result<ChatApprover>| r.unwrap_err().to_string();
        assert!(
            err(
                ChatApprover::start_with_secret("http://127.0.0.1:9/", local, b"short".to_vec())
                    .await
            )
            .contains("at least 16")
        );
        assert!(
            err(ChatApprover::start_with_secret(
                "http://127.0.0.1:9/",
                "0.0.0.0:0".parse().unwrap(),
                SECRET.to_vec()
            )
            .await)
            .contains("loopback")
        );
        assert!(
            err(ChatApprover::start_with_secret(
                "https://hooks.slack.com/x",
                local,
                SECRET.to_vec()
            )
            .await)
            .contains("https")
        );
        assert!(
            err(ChatApprover::start_with_secret("ftp://x/", local, SECRET.to_vec()).await)
                .contains("http://")
        );
    }
}
