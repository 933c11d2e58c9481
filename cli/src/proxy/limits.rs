//! What one client may cost the proxy: connections, and time to send a request.
//!
//! The door (Host, Origin, the proxy's token, an OIDC token's signature) is checked on the
//! headers alone, before a byte of the body is read, so a caller without a credential costs
//! at most one connection for at most the header deadline. These limits bound what the rest
//! (a slow or idle client, or many of them) can hold.

use std::time::Duration;

/// Limits on connections and on how long a client may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once (upgraded ones included); one more is answered 503 and
    /// closed.
    pub max_connections: usize,
    /// Time to send a request's headers, and the longest a kept-alive connection may sit idle.
    pub header_timeout: Duration,
    /// Time to send a request's body, once its headers are in.
    pub body_timeout: Duration,
    /// On SIGTERM, how long requests in flight (watches, tunnels) may go on before they are cut.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Request bodies the proxy holds in memory at once, over all connections, while it reads them
/// (each is at most the API server's 3 MiB): one more is answered 429 (retry shortly), so an
/// agent that opens every connection with a large body cannot make the proxy hold
/// `--max-connections` × 3 MiB. The layer behind keeps its own budget of the same size for
/// bodies it holds (held requests among them).
pub const MAX_BUFFERED: usize = 64 * 1024 * 1024;

/// The answer to a connection beyond [`Limits::max_connections`], written without reading the
/// request: a Kubernetes `Status` that tells the client to retry, then the connection closes.
pub fn busy_response(max: usize) -> Vec<u8> {
    let body = kubeleash_core::status::Status::failure(
        503,
        "ServiceUnavailable",
        &format!(
            "kubeleash: the proxy has {max} connections open, its limit (--max-connections); retry shortly"
        ),
    )
    .details(serde_json::json!({"retryAfterSeconds": 1}))
    .to_json();
    let body = String::from_utf8_lossy(&body);
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Says at most once a second that connections were turned away, with how many.
#[derive(Default)]
pub struct BusyLog {
    last: u64,
    unlogged: u64,
}

impl BusyLog {
    /// Note one connection turned away; the line to print, if one is due.
    pub fn turned_away(&mut self, max: usize) -> Option<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.unlogged += 1;
        if now == self.last {
            return None;
        }
        self.last = now;
        let n = std::mem::take(&mut self.unlogged);
        Some(format!(
            "kubeleash proxy: {n} connection(s) turned away with 503: {max} already open (--max-connections)"
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn the_busy_answer_is_one_well_framed_status() {
        let r = String::from_utf8(busy_response(7)).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], 503);
        assert!(v["message"].as_str().unwrap().contains("7 connections"));
    }

    #[test]
    fn turning_away_logs_once_a_second_with_a_count() {
        let mut log = BusyLog::default();
        assert!(log.turned_away(1).is_some());
        let quiet = (0..100).filter(|_| log.turned_away(1).is_some()).count();
        // At most one more line can fall due if the second changed during the loop.
        assert!(quiet <= 1, "{quiet} lines for 100 refusals");
    }
}
