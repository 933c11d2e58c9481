//! When the proxy cannot get an answer from the API server, the agent learns that and no more.
//!
//! The error text is the operator's: it is made from the kubeconfig and the credential machinery
//! (an exec plugin's command line, environment, arguments and stderr; a token file's path; the
//! server's address and certificate problems). So the agent gets a fixed Kubernetes Status with
//! a correlation id, and the operator's log (stderr) gets the details under the same id, with
//! what the secret detectors recognise masked and control characters escaped.
//!
//! The fixed message, the ids, the masking and the [`kubeleash_connect::Note`] through which
//! the connection stack under the layer hands its error text to the proxy are
//! `kubeleash-connect`'s, shared with the bindings; this module writes the proxy's log lines.

use std::error::Error;

use kubeleash_connect::{chain, escape, mask};

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
        let m = kubeleash_connect::agent_message("0123456789abcdef");
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
}
