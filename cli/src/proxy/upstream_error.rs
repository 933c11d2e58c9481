//! When the proxy cannot get an answer from the API server, the agent learns that and no more.
//!
//! The error text is the operator's: it is made from the kubeconfig and the credential machinery
//! (an exec plugin's command line, environment, arguments and stderr; a token file's path; the
//! server's address and certificate problems). So the agent gets a fixed Kubernetes Status with
//! a correlation id, and the operator's log (stderr) gets the details under the same id, with
//! what the secret detectors recognise masked and control characters escaped.
//!
//! Errors of the stack under the kubeleash layer reach the layer, which answers the agent (and
//! notes them, scrubbed, in the record); [`NoteErrors`] hands their text to the proxy, which
//! logs it under the layer's id. Errors of kube-rs's client around the layer are the proxy's to
//! answer: [`agent_message`] and [`log_line`].

use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use kubeleash_core::mask::detect::{Detectors, MASK_ALL, Span, catalog};

/// A slot a request carries (in its extensions) through the kubeleash layer to the connection
/// stack below it: when the stack fails, [`NoteErrors`] leaves the error's text there for the
/// proxy to log under the correlation id the layer gave the agent.
#[derive(Clone, Default)]
pub struct Note(Arc<Mutex<Option<String>>>);

impl Note {
    /// Whether the stack failed and left its error here.
    pub fn is_set(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// The error text left in the slot, if the stack failed.
    pub fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// A tower layer for just below the kubeleash layer: errors from the stack under it (kube-rs's
/// credential machinery and connection) are written into the request's [`Note`], then passed
/// on unchanged (the kubeleash layer answers the agent with a fixed Status).
#[derive(Clone, Copy)]
pub struct NoteErrors;

impl<S> tower::Layer<S> for NoteErrors {
    type Service = NoteErrorsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        NoteErrorsService(inner)
    }
}

/// The service [`NoteErrors`] makes.
pub struct NoteErrorsService<S>(S);

impl<S, B> tower::Service<http::Request<B>> for NoteErrorsService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Error: Into<Box<dyn Error + Send + Sync>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = Box<dyn Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let note = req.extensions().get::<Note>().cloned();
        let call = self.0.call(req);
        Box::pin(async move {
            call.await.map_err(|e| {
                let e: Box<dyn Error + Send + Sync> = e.into();
                if let Some(n) = note {
                    *n.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(chain(&*e));
                }
                e
            })
        })
    }
}

/// The error and each of its causes, each said once.
fn chain(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        // kube and hyper repeat their cause in their own message.
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// The correlation id in a Status message the layer wrote (`... correlation id ID ...`).
pub fn id_in(message: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(message).ok()?;
    let at = text.find("correlation id ")? + "correlation id ".len();
    let id: String = text[at..]
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    (!id.is_empty()).then_some(id)
}

/// What the agent is told: the status code, and a message that names nothing of the operator's.
pub fn agent_message(id: &str) -> String {
    format!(
        "kubeleash could not get an answer from the API server (the upstream connection failed); \
         ask the operator to look in the proxy's log for correlation id {id}"
    )
}

/// A fresh correlation id: 64 random bits in hex (a counter would tell the agent how busy the
/// proxy is; time is enough to fall back on if there is no randomness).
pub fn correlation_id() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = (t as u64).to_be_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The operator's log line for an upstream failure: the error and each of its causes, masked
/// and escaped.
pub fn log_line(id: &str, method: &str, path: &str, e: &(dyn Error + 'static)) -> String {
    log_text(id, method, path, &chain(e))
}

/// The operator's log line for an upstream failure described by `text`.
pub fn log_text(id: &str, method: &str, path: &str, text: &str) -> String {
    format!(
        "kubeleash proxy: upstream error [correlation id {id}] on {} {}: {}",
        escape(method),
        escape(&path.chars().take(300).collect::<String>()),
        escape(&mask(text))
    )
}

/// `text` with every span the secret detectors find replaced by `[masked:DETECTOR]`.
pub fn mask(text: &str) -> String {
    static DETECTORS: OnceLock<Detectors> = OnceLock::new();
    let d = DETECTORS.get_or_init(Detectors::default);
    let mut spans: Vec<Span> = Vec::new();
    d.find(text.as_bytes(), &mut spans);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for s in spans {
        // Spans are byte offsets; widen to character boundaries so the cut never splits one.
        let mut start = s.start.min(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = s.end.min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        if start < at {
            start = at;
        }
        out.push_str(text.get(at..start).unwrap_or_default());
        let name = if s.detector == MASK_ALL {
            "all"
        } else {
            catalog()
                .get(usize::from(s.detector))
                .map(|i| i.name)
                .unwrap_or("secret")
        };
        out.push_str(&format!("[masked:{name}]"));
        at = end.max(at);
    }
    out.push_str(text.get(at..).unwrap_or_default());
    out
}

/// Control characters (terminal escapes included) shown as `\u{..}`, so a log line is one line
/// and cannot drive the operator's terminal.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[derive(Debug)]
    struct E(String, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    #[test]
    fn the_agent_message_is_fixed_and_the_log_has_the_masked_details() {
        let m = agent_message("0123456789abcdef");
        assert!(m.contains("0123456789abcdef") && m.contains("operator"));
        let e = E(
            "auth exec command failed".into(),
            Some(Box::new(E(
                "stderr: refresh_token=\"9f8e7d6c5b4a39281706f5e4d3c2b1a0\" password=hunter2hunter2 \x1b[31mred\n".into(),
                None,
            ))),
        );
        let line = log_line("abc", "GET", "/api/v1/pods\x1b[2J", &e);
        assert!(line.contains("[correlation id abc]"), "{line}");
        assert!(line.contains("auth exec command failed"), "{line}");
        assert!(!line.contains("hunter2hunter2"), "{line}");
        assert!(!line.contains("9f8e7d6c5b4a39281706f5e4d3c2b1a0"), "{line}");
        assert!(!line.contains('\x1b') && !line.contains('\n'), "{line}");
    }

    #[test]
    fn ids_differ() {
        let a = correlation_id();
        assert_eq!(a.len(), 16);
        assert_ne!(a, correlation_id());
    }

    #[test]
    fn masking_keeps_text_around_multibyte_characters() {
        let t = "é password=s3cr3t-v4lue-é-long ü";
        let m = mask(t);
        assert!(!m.contains("s3cr3t-v4lue"), "{m}");
        assert!(
            m.starts_with("é ") && m.ends_with(" ü") || m.contains("ü"),
            "{m}"
        );
    }
}
