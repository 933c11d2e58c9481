//! What the agent and the operator are told when the connection upstream fails.
//!
//! The text of an upstream error is the operator's: it is made from the kubeconfig and the
//! credential machinery (an exec plugin's command line, environment and output; a token file's
//! path; the server's address and certificate problems). The agent gets a fixed message with a
//! correlation id ([`Sanitized::agent`]); the operator's log gets the details under the same id
//! ([`Sanitized::operator`]), with what the kubeconfig holds as secrets removed, what the secret
//! detectors recognise masked, and control characters escaped.

use std::error::Error;
use std::sync::{Arc, Mutex, OnceLock};

use kubeleash_core::mask::detect::{Detectors, MASK_ALL, Span, catalog};

/// A failure, told twice: a fixed message for the agent, the details for the operator's log.
#[derive(Clone, PartialEq, Eq)]
pub struct Sanitized {
    /// The correlation id both messages name.
    pub id: String,
    /// For the agent: names the id and nothing of the operator's.
    pub agent: String,
    /// For the operator's log only: the error and its causes, scrubbed, masked and on one line.
    pub operator: String,
}

impl std::fmt::Debug for Sanitized {
    /// The agent's message only: a `Debug` string can end up anywhere.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sanitized")
            .field("id", &self.id)
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

/// The agent's message for the failure with correlation id `id`.
pub fn agent_message(id: &str) -> String {
    format!(
        "kubeleash could not get an answer from the API server (the upstream connection failed); \
         ask the operator to look in kubeleash's log for correlation id {id}"
    )
}

/// Tell `e` (which happened while doing `what`, e.g. `GET /api/v1/pods`) to the agent and to the
/// operator. An [`crate::UpstreamError`] in the chain already names its cluster and has its
/// secrets removed; any other error is masked and escaped here.
///
/// ```
/// let e = std::io::Error::other("exec plugin said password=hunter2hunter2");
/// let s = kubeleash_connect::sanitize("GET /api/v1/pods", &e);
/// assert!(s.agent.contains(&s.id) && !s.agent.contains("hunter2"));
/// assert!(s.operator.contains(&s.id) && !s.operator.contains("hunter2hunter2"));
/// ```
pub fn sanitize(what: &str, e: &(dyn Error + 'static)) -> Sanitized {
    let id = correlation_id();
    let detail = match find_upstream(e) {
        Some(u) => u.to_string(),
        None => escape(&mask(&chain(e))),
    };
    Sanitized {
        agent: agent_message(&id),
        operator: format!(
            "kubeleash: upstream error [correlation id {id}] on {}: {detail}",
            escape(&what.chars().take(300).collect::<String>())
        ),
        id,
    }
}

fn find_upstream<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a crate::UpstreamError> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(u) = c.downcast_ref::<crate::UpstreamError>() {
            return Some(u);
        }
        cur = c.source();
    }
    None
}

/// The error and each of its causes, each said once (kube and hyper repeat their cause in their
/// own message).
pub fn chain(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// A fresh correlation id: 64 random bits in hex (a counter would tell the agent how busy
/// kubeleash is; the time is the fallback if there is no randomness). It grants nothing.
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

/// The correlation id in a Status message kubeleash wrote (`... correlation id ID ...`).
pub fn id_in(message: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(message).ok()?;
    let at = text.find("correlation id ")? + "correlation id ".len();
    let id: String = text[at..]
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    (!id.is_empty()).then_some(id)
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
        start = start.max(at);
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

/// A slot a request carries (in its extensions) through the kubeleash layer to the upstream
/// service below it: when the upstream fails, [`crate::UpstreamService`] leaves the operator's
/// text there, for the front door to log under the correlation id the layer gave the agent
/// (find it in the layer's Status with [`id_in`]).
#[derive(Clone, Default)]
pub struct Note(Arc<Mutex<Option<String>>>);

impl Note {
    /// Whether the upstream failed and left its text here.
    pub fn is_set(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// The operator's text left in the slot, if the upstream failed.
    pub fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    pub(crate) fn set(&self, text: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
    }
}

impl std::fmt::Debug for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_set() {
            "Note(set)"
        } else {
            "Note(empty)"
        })
    }
}

/// The secrets a kubeconfig holds (tokens, passwords, an exec plugin's arguments and
/// environment values, auth-provider settings), removed from any text before it is logged.
#[derive(Default)]
pub(crate) struct Scrub(Vec<String>);

impl Scrub {
    pub(crate) fn new(mut secrets: Vec<String>) -> Self {
        // Short values (`-v`, `1`) would cut ordinary words; longest first, so a secret that
        // contains another is removed whole.
        secrets.retain(|s| s.trim().len() >= 6);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Scrub(secrets)
    }

    /// `text` without the kubeconfig's secrets, masked and escaped.
    pub(crate) fn clean(&self, text: &str) -> String {
        let mut t = text.to_string();
        for s in &self.0 {
            t = t.replace(s.as_str(), "[hidden]");
        }
        escape(&mask(&t))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn ids_differ_and_are_found_again() {
        let a = correlation_id();
        assert_eq!(a.len(), 16);
        assert_ne!(a, correlation_id());
        assert_eq!(id_in(agent_message(&a).as_bytes()), Some(a));
    }

    #[test]
    fn scrub_removes_the_kubeconfig_secrets_and_escapes() {
        let s = Scrub::new(vec!["env-secret-value-1".into(), "ab".into()]);
        let t = s.clean("run X=env-secret-value-1 ab failed\n\x1b[2J");
        assert!(
            !t.contains("env-secret-value-1") && t.contains("[hidden]"),
            "{t}"
        );
        assert!(t.contains(" ab "), "{t}");
        assert!(!t.contains('\n') && !t.contains('\x1b'), "{t}");
    }

    #[test]
    fn masking_keeps_text_around_multibyte_characters() {
        let m = mask("é password=s3cr3t-v4lue-é-long ü");
        assert!(!m.contains("s3cr3t-v4lue"), "{m}");
        assert!(m.starts_with("é "), "{m}");
    }
}
