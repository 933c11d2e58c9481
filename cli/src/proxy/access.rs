//! Who may talk to the proxy at all, decided before the policy sees a request.
//!
//! The proxy listens on loopback, but loopback is not the agent alone: any local user can
//! connect, and a web page can reach it through the browser (DNS rebinding: `evil.example`
//! resolved to 127.0.0.1 sends requests with `Host: evil.example:PORT`, and a page can post to
//! `http://127.0.0.1:PORT` with its `Origin`). So a request must name the listen address in
//! `Host` (as `kubectl proxy --accept-hosts` checks), carry no browser header (`Origin`,
//! `Sec-Fetch-Site` and the like), use an origin-form target, and, when the identity comes
//! from flags, carry the proxy's own token (from the agent kubeconfig it wrote): as the first
//! segment of the path (the kubeconfig's server URL ends with it, because kubectl sends no
//! credential over plain HTTP) or as `Authorization: Bearer`. With OIDC the bearer is the
//! agent's token, which the layer verifies.

use std::net::SocketAddr;

use http::header::{AUTHORIZATION, HOST, ORIGIN};
use http::request::Parts;

/// A request refused at the door: the HTTP status, the Kubernetes `reason`, and a message for
/// the agent that quotes nothing secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

fn refuse(code: u16, reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason,
        message: message.into(),
    }
}

/// The checks for one running proxy.
pub struct Access {
    /// The `Host` values that name this proxy, lowercase.
    hosts: Vec<String>,
    /// DNS names that name it with any port (a Service's: agents connect to its port, which
    /// the Service maps to the listen port), lowercase, without a trailing dot.
    names: Vec<String>,
    /// The bearer token the agent must present, when the identity comes from flags.
    token: Option<AgentToken>,
    /// The second (since the epoch) of the last refusal logged: at most one line a second, so
    /// a page that knocks in a loop cannot flood the operator's log.
    last_logged: std::sync::atomic::AtomicU64,
    /// Refusals not logged since the last line.
    unlogged: std::sync::atomic::AtomicU64,
}

/// Headers only browsers send: a request carrying one comes from a web page, not from kubectl
/// or an SDK. Not `Sec-Fetch-Mode`: Node's `fetch` (undici) sends it too, and every browser
/// that sends it also sends `Sec-Fetch-Site`.
const BROWSER_HEADERS: &[&str] = &[
    "origin",
    "sec-fetch-site",
    "sec-fetch-dest",
    "sec-fetch-user",
    "sec-fetch-storage-access",
];

impl Access {
    /// Checks for a proxy listening on `addr`; `token` is required of every request when given.
    pub fn new(addr: SocketAddr, token: Option<AgentToken>) -> Access {
        Self::serving(addr, token, &[])
    }

    /// The same, for a proxy also reached by DNS `names` (a Service's, in a cluster): `Host`
    /// may be any of them, with any port or none (validated with [`dns_name`]).
    pub fn serving(addr: SocketAddr, token: Option<AgentToken>, names: &[String]) -> Access {
        Access {
            hosts: host_names(addr),
            names: names
                .iter()
                .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            token,
            last_logged: std::sync::atomic::AtomicU64::new(0),
            unlogged: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Tell the operator (stderr) that a request was refused at the door, at most once a
    /// second, with how many were refused in between.
    pub fn log_refusal(&self, r: &Refusal, method: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = self.last_logged.load(Relaxed);
        if now == last
            || self
                .last_logged
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_err()
        {
            self.unlogged.fetch_add(1, Relaxed);
            return;
        }
        let more = self.unlogged.swap(0, Relaxed);
        let more = if more > 0 {
            format!(" ({more} more refused since the last line)")
        } else {
            String::new()
        };
        eprintln!(
            "kubeleash proxy: refused a {} request ({} {}): {}{more}",
            quote(method.as_bytes()),
            r.code,
            r.reason,
            r.message
        );
    }

    /// Let the request in, or say why not. The proxy's own token, once checked, is removed so
    /// that it reaches neither the policy, the record, nor the API server.
    pub fn admit(&self, parts: &mut Parts) -> Result<(), Refusal> {
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            return Err(refuse(
                400,
                "BadRequest",
                "kubeleash: the request target must be a path (origin-form, `/api/...`), not an absolute URL",
            ));
        }
        let mut hosts = parts.headers.get_all(HOST).iter();
        let host = match (hosts.next(), hosts.next()) {
            (Some(h), None) => h,
            (None, _) => {
                return Err(refuse(
                    400,
                    "BadRequest",
                    "kubeleash: the request has no Host header",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(refuse(
                    400,
                    "BadRequest",
                    "kubeleash: the request has more than one Host header",
                ));
            }
        };
        let known = host
            .to_str()
            .ok()
            .map(str::to_ascii_lowercase)
            .is_some_and(|h| self.hosts.contains(&h) || self.names_host(&h));
        if !known {
            return Err(refuse(
                403,
                "Forbidden",
                format!(
                    "kubeleash: Host {} is not this proxy's address (use {}); requests through other names are refused against DNS rebinding",
                    quote(host.as_bytes()),
                    self.hosts
                        .first()
                        .map(String::as_str)
                        .unwrap_or("the listen address")
                ),
            ));
        }
        if let Some(name) = BROWSER_HEADERS
            .iter()
            .find(|n| parts.headers.contains_key(**n))
        {
            return Err(refuse(
                403,
                "Forbidden",
                format!(
                    "kubeleash: requests from web browsers are refused (the request has a `{}` header); agents use kubectl or a Kubernetes client",
                    if *name == ORIGIN.as_str() {
                        "Origin"
                    } else {
                        name
                    }
                ),
            ));
        }
        if let Some(token) = &self.token {
            let mut given = parts.headers.get_all(AUTHORIZATION).iter();
            let by_header = match (given.next(), given.next()) {
                (Some(v), None) => bearer(v.as_bytes()).is_some_and(|t| token.matches(t)),
                _ => false,
            };
            // Taken off the path even when the header also carries it, so it is never decided,
            // recorded or forwarded.
            let by_path = strip_token_prefix(parts, token)?;
            if !by_header && !by_path {
                return Err(refuse(
                    401,
                    "Unauthorized",
                    "kubeleash: this proxy needs its token: use the kubeconfig the proxy wrote for the agent (--agent-kubeconfig), or the token in --agent-token-file",
                ));
            }
            parts.headers.remove(AUTHORIZATION);
        }
        Ok(())
    }
}

impl Access {
    /// Whether `host` (lowercase) is one of the DNS names, with any port.
    fn names_host(&self, host: &str) -> bool {
        let name = match host.rsplit_once(':') {
            Some((n, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => host,
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        !name.is_empty() && self.names.iter().any(|n| n == name)
    }
}

/// A `--serve-name` as given, if it is a DNS name (letters, digits, `-` and dots between
/// labels; a trailing dot allowed); otherwise what is wrong with it.
pub fn dns_name(name: &str) -> Result<(), String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if bare.is_empty() || bare.len() > 253 || !bare.split('.').all(label_ok) {
        return Err(format!(
            "--serve-name {} is not a DNS name (letters, digits and `-` in dot-separated labels, no port or wildcard)",
            quote(name.as_bytes())
        ));
    }
    Ok(())
}

/// If the path starts with the segment `/TOKEN`, take it off (leaving at least `/`) and say
/// so. kubectl sends no credential over plain HTTP (client-go reads a kubeconfig's user only
/// for an `https` server), so the agent's kubeconfig carries the token as the server URL's
/// path, which every client puts in front of each request's path.
fn strip_token_prefix(parts: &mut Parts, token: &AgentToken) -> Result<bool, Refusal> {
    let Some(pq) = parts.uri.path_and_query() else {
        return Ok(false);
    };
    let path = pq.path();
    let Some(rest) = path.strip_prefix('/') else {
        return Ok(false);
    };
    let (first, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if !token.matches(first.as_bytes()) {
        return Ok(false);
    }
    // The token anywhere else in the target (`/TOKEN/TOKEN/...`, a query value) would be
    // decided, recorded and echoed in a refusal: no honest client sends it twice.
    if pq.as_str()[1 + first.len()..].contains(token.secret()) {
        return Err(refuse(
            400,
            "BadRequest",
            "kubeleash: the request target carries the proxy's token more than once; send it \
             only as the first path segment, as the agent kubeconfig does",
        ));
    }
    let tail = if tail.is_empty() { "/" } else { tail };
    let new = match pq.query() {
        Some(q) => format!("{tail}?{q}"),
        None => tail.to_string(),
    };
    parts.uri = http::Uri::try_from(new).map_err(|_| {
        refuse(
            400,
            "BadRequest",
            "kubeleash: the request target is not a valid path",
        )
    })?;
    Ok(true)
}

/// The token in `Bearer TOKEN` (scheme case-insensitive, as RFC 7235 says).
fn bearer(v: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = (v.get(..7)?, v.get(7..)?);
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

/// A request byte string as it can be shown: JSON-quoted, so control characters are escaped.
fn quote(b: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(b).chars().take(200).collect();
    serde_json::Value::from(s).to_string()
}

/// The names a client may put in `Host` for a proxy on `addr`: the address itself, and
/// `localhost` for the loopback address of its family.
fn host_names(addr: SocketAddr) -> Vec<String> {
    let port = addr.port();
    let mut out = vec![addr.to_string()];
    let ip = addr.ip();
    let is_default_loopback = match ip {
        std::net::IpAddr::V4(v4) => v4 == std::net::Ipv4Addr::LOCALHOST,
        std::net::IpAddr::V6(v6) => v6 == std::net::Ipv6Addr::LOCALHOST,
    };
    if is_default_loopback {
        out.push(format!("localhost:{port}"));
    }
    out
}

/// The proxy's bearer token for the agent: 256 random bits, compared in constant time.
#[derive(Clone)]
pub struct AgentToken(String);

impl std::fmt::Debug for AgentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentToken([hidden])")
    }
}

impl AgentToken {
    /// A fresh token from the operating system's random source.
    pub fn generate() -> Result<AgentToken, String> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| format!("cannot make the agent's token: no randomness ({e})"))?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(AgentToken(format!("kubeleash-{hex}")))
    }

    /// The token's text, for the agent's kubeconfig.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this token, in time that does not depend on where they differ.
    pub fn matches(&self, given: &[u8]) -> bool {
        let want = self.0.as_bytes();
        if given.len() != want.len() {
            // The length is public (it is the same for every proxy).
            return false;
        }
        let diff = want
            .iter()
            .zip(given)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

#[cfg(test)]
mod tests;
