//! Request header hygiene: no client-supplied credential or identity leaves the layer, framing
//! and hop-by-hop headers are the layer's own, upgrades are asked for only where the API server
//! switches protocols, and the server is asked for JSON it can mask.

use http::HeaderMap;
use http::header::{ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONNECTION, HeaderValue, UPGRADE};
use kubeleash_core::request::Attributes;

/// Whether a request asks to switch protocols, read from the raw headers whatever their values:
/// any `Upgrade` header (empty, repeated, any token, bytes that are not text), or a
/// `Connection` header naming `upgrade` in any case.
pub(crate) fn asks_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(UPGRADE)
        || h.get_all(CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
        })
}

/// The subresources the API server answers with a protocol switch: exec, attach and
/// port-forward on pods, and the proxy subresources of pods, services and nodes.
pub(crate) fn is_connect(a: &Attributes) -> bool {
    a.resource_request
        && a.api_group.is_empty()
        && match a.subresource.as_str() {
            "exec" | "attach" | "portforward" => a.resource == "pods",
            "proxy" => matches!(a.resource.as_str(), "pods" | "services" | "nodes"),
            _ => false,
        }
}

const BEARER_PROTOCOL: &str = "base64url.bearer.authorization.k8s.io.";

/// Remove every credential and identity the client supplied: `Authorization`, `Impersonate-*`
/// (unless the policy allowed impersonation), front-proxy `X-Remote-*`, and bearer-token
/// WebSocket subprotocols.
pub(crate) fn strip_client_credentials(h: &mut HeaderMap, keep_impersonation: bool) {
    h.remove(AUTHORIZATION);
    let suspect = |n: &str| {
        n.starts_with("impersonate-") || n.starts_with("x-remote-") || n == "sec-websocket-protocol"
    };
    if !h.keys().any(|k| suspect(k.as_str())) {
        return;
    }
    let doomed: Vec<http::HeaderName> = h
        .keys()
        .filter(|k| {
            let n = k.as_str();
            (!keep_impersonation && n.starts_with("impersonate-")) || n.starts_with("x-remote-")
        })
        .cloned()
        .collect();
    for k in doomed {
        h.remove(k);
    }
    let protocols: Vec<HeaderValue> = h
        .get_all("sec-websocket-protocol")
        .iter()
        .cloned()
        .collect();
    if protocols.is_empty() {
        return;
    }
    h.remove("sec-websocket-protocol");
    for v in protocols {
        let Ok(text) = v.to_str() else { continue };
        let kept: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty() && !p.to_ascii_lowercase().starts_with(BEARER_PROTOCOL))
            .collect();
        if let Ok(v) = HeaderValue::from_str(&kept.join(", "))
            && !kept.is_empty()
        {
            h.append("sec-websocket-protocol", v);
        }
    }
}

/// Ask for JSON whatever the client asked for: protobuf, CBOR and YAML cannot be masked.
/// `as=`, `g=` and `v=` are kept, so Table and PartialObjectMetadata requests still get them.
pub(crate) fn force_json(h: &mut HeaderMap) {
    h.remove(ACCEPT_ENCODING);
    let mut accepts = h.get_all(ACCEPT).iter();
    if let (Some(only), None) = (accepts.next(), accepts.next())
        && only.as_bytes() == b"application/json"
    {
        return;
    }
    let accepts: Vec<String> = h
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    let mut clauses: Vec<String> = Vec::new();
    for a in accepts {
        for clause in a.split(',') {
            let mut parts = clause.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let params: Vec<&str> = parts
                .filter(|p| {
                    let k = p
                        .split('=')
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_ascii_lowercase();
                    matches!(k.as_str(), "as" | "g" | "v")
                })
                .collect();
            let json_like = matches!(
                media.as_str(),
                "application/json"
                    | "application/vnd.kubernetes.protobuf"
                    | "application/cbor"
                    | "application/yaml"
                    | "*/*"
                    | "application/*"
            );
            if !json_like {
                continue;
            }
            let mut c = String::from("application/json");
            for p in params {
                c.push(';');
                c.push_str(p);
            }
            if !clauses.contains(&c) {
                clauses.push(c);
            }
        }
    }
    if !clauses.iter().any(|c| c == "application/json") {
        clauses.push("application/json".into());
    }
    h.remove(ACCEPT);
    if let Ok(v) = HeaderValue::from_str(&clauses.join(", ")) {
        h.insert(ACCEPT, v);
    }
}

/// The request headers that may reach the API server, by name; every other header the caller
/// sent is dropped (it could forge the audit trail: `Audit-ID`, `X-Forwarded-For`, `Forwarded`,
/// `X-Real-IP`, or carry a credential: `Cookie`, `Proxy-Authorization`). Framing headers are the
/// inner client's, the credential the layer's.
fn request_header_allowed(n: &str, switch: bool, keep_impersonation: bool) -> bool {
    match n {
        "accept" | "content-type" | "kubectl-command" | "kubectl-session" => true,
        "sec-websocket-key"
        | "sec-websocket-version"
        | "sec-websocket-protocol"
        | "sec-websocket-extensions"
        | "x-stream-protocol-version"
        | "upgrade" => switch,
        _ => keep_impersonation && n.starts_with("impersonate-"),
    }
}

/// Replace the caller's request headers with the ones allowed to leave: see
/// [`request_header_allowed`]. `User-Agent` is the layer's, naming the identity and the caller's
/// own agent string (printable ASCII, at most 200 bytes); bearer-token WebSocket subprotocols
/// go; with `switch` (an allowed protocol switch) `Connection: Upgrade` is set again.
pub(crate) fn allow_request_headers(
    h: &mut HeaderMap,
    switch: bool,
    keep_impersonation: bool,
    user: &str,
) {
    // In place: most requests carry only allowed headers, and then nothing is allocated here
    // (`User-Agent` is replaced below).
    let mut doomed: Vec<http::HeaderName> = Vec::new();
    for k in h.keys() {
        if *k != http::header::USER_AGENT
            && !request_header_allowed(k.as_str(), switch, keep_impersonation)
        {
            doomed.push(k.clone());
        }
    }
    for k in doomed {
        h.remove(k);
    }
    if h.contains_key("sec-websocket-protocol") {
        strip_client_credentials(h, keep_impersonation);
    }
    let mut agent = String::with_capacity(64);
    agent.push_str(concat!("kubeleash/", env!("CARGO_PKG_VERSION"), " agent/"));
    push_printable(&mut agent, user.as_bytes(), 100);
    agent.push_str(" (");
    if let Some(ua) = h.get(http::header::USER_AGENT) {
        push_printable(&mut agent, ua.as_bytes(), 200);
    }
    agent.push(')');
    if let Ok(v) = HeaderValue::from_str(&agent) {
        h.insert(http::header::USER_AGENT, v);
    } else {
        h.remove(http::header::USER_AGENT);
    }
    if switch && h.contains_key(UPGRADE) {
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    }
}

/// Append `b` as printable ASCII, at most `max` bytes: anything else becomes `?`, and
/// parentheses and backslashes become `_` so a caller's text cannot close the comment it is
/// quoted in.
fn push_printable(out: &mut String, b: &[u8], max: usize) {
    out.extend(b.iter().take(max).map(|&c| match c {
        b'(' | b')' | b'\\' => '_',
        b' '..=b'~' => c as char,
        _ => '?',
    }));
}

/// Whether a response header value is shaped as its header must be: the upstream may be the
/// adversary, and a header is a channel the masker does not otherwise read.
fn response_value_ok(name: &str, v: &[u8]) -> bool {
    match name {
        // A media type and the parameters the API server sends.
        "content-type" => content_type_ok(v),
        "date" => all(v, 40, |c| {
            c.is_ascii_alphanumeric() || matches!(c, b' ' | b',' | b':')
        }),
        "audit-id" | "x-kubernetes-pf-flowschema-uid" | "x-kubernetes-pf-prioritylevel-uid" => {
            all(v, 64, |c| c.is_ascii_hexdigit() || c == b'-')
        }
        "cache-control" => all(v, 64, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'=' | b',' | b' ')
        }),
        "retry-after" => all(v, 10, |c| c.is_ascii_digit()),
        "x-stream-protocol-version" | "sec-websocket-protocol" => all(v, 128, |c| {
            c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b',' | b' ')
        }),
        "sec-websocket-accept" => all(v, 64, |c| {
            c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=')
        }),
        "upgrade" => all(v, 32, |c| {
            c.is_ascii_alphanumeric() || matches!(c, b'/' | b'.' | b'-')
        }),
        "connection" => v.eq_ignore_ascii_case(b"upgrade"),
        _ => false,
    }
}

/// Whether `v` is 1 to `max` bytes, each of them `ok`.
#[inline]
fn all(v: &[u8], max: usize, ok: impl Fn(u8) -> bool) -> bool {
    !v.is_empty() && v.len() <= max && v.iter().all(|&c| ok(c))
}

/// `type/subtype` and the parameters a Kubernetes response carries (`charset`, `as`, `g`,
/// `v`, `stream`), each short and made of token characters.
fn content_type_ok(v: &[u8]) -> bool {
    if v == b"application/json" {
        return true;
    }
    let Ok(text) = std::str::from_utf8(v) else {
        return false;
    };
    let token = |t: &str, max: usize| {
        !t.is_empty()
            && t.len() <= max
            && t.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+' | b'_'))
    };
    let mut parts = text.split(';');
    let media = parts.next().unwrap_or_default().trim();
    let Some((ty, sub)) = media.split_once('/') else {
        return false;
    };
    token(ty, 32)
        && token(sub, 64)
        && parts.all(|p| {
            let Some((k, val)) = p.trim().split_once('=') else {
                return false;
            };
            matches!(
                k.trim().to_ascii_lowercase().as_str(),
                "charset" | "as" | "g" | "v" | "stream"
            ) && token(val.trim(), 40)
        })
}

/// Words that say a credential follows. The detectors find credentials by shape; a warning
/// (an admission webhook's free text) can name one in prose they do not read
/// (`password hunter2 is weak`), so a warning that uses such a word is withheld whole.
const CREDENTIAL_WORDS: &[&str] = &[
    "passw",
    "passwd",
    "pwd",
    "secret",
    "token",
    "credential",
    "apikey",
    "api-key",
    "api_key",
    "private key",
    "bearer",
];

/// A (masked) warning, or a fixed one in its place when its text names a credential.
fn withhold_credential_talk(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    if CREDENTIAL_WORDS.iter().any(|w| lower.contains(w)) {
        "299 - \"[kubeleash withheld a warning that names a credential]\"".into()
    } else {
        text.to_string()
    }
}

/// Keep only the response headers a client needs, each shaped as it must be; `Warning`
/// values go through `mask` (the detectors, as text) and are kept only if it can mask them.
/// With `switch` (the 101 of an allowed protocol switch), the handshake's headers too.
/// Everything else (cookies, `Location`, any `X-` header, framing) is dropped.
pub(crate) fn allow_response_headers(
    h: &mut HeaderMap,
    switch: bool,
    mask: impl Fn(&str) -> Option<String>,
) {
    let allowed = |n: &str| match n {
        "content-type"
        | "date"
        | "audit-id"
        | "cache-control"
        | "x-kubernetes-pf-flowschema-uid"
        | "x-kubernetes-pf-prioritylevel-uid"
        | "retry-after"
        | "warning" => true,
        "upgrade"
        | "connection"
        | "sec-websocket-accept"
        | "sec-websocket-protocol"
        | "x-stream-protocol-version" => switch,
        _ => false,
    };
    // In place, in one pass over the values: an ordinary response keeps every header it has,
    // and nothing is allocated. A name with any value of the wrong shape goes whole.
    let mut doomed: Vec<http::HeaderName> = Vec::new();
    let mut warning = false;
    for (k, v) in h.iter() {
        let n = k.as_str();
        if n == "warning" {
            warning = true;
        } else {
            let keep = allowed(n) && response_value_ok(n, v.as_bytes());
            if !keep && !doomed.contains(k) {
                doomed.push(k.clone());
            }
        }
    }
    for k in doomed {
        h.remove(k);
    }
    if !warning {
        return;
    }
    let warnings: Vec<HeaderValue> = h.get_all(http::header::WARNING).iter().cloned().collect();
    h.remove(http::header::WARNING);
    for v in warnings {
        let masked = v
            .to_str()
            .ok()
            .and_then(&mask)
            .map(|m| withhold_credential_talk(&m))
            .and_then(|m| HeaderValue::from_str(&m).ok());
        if let Some(m) = masked {
            h.append(http::header::WARNING, m);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use http::header::HeaderName;

    #[test]
    fn response_values_have_their_shape() {
        for ok in [
            "application/json",
            "application/json;charset=utf-8",
            "application/json;as=Table;v=v1;g=meta.k8s.io",
            "text/plain; charset=utf-8",
        ] {
            assert!(content_type_ok(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "application/json;x=AKIAIOSFODNN7EXAMPLE",
            "application/json;charset=\"a b\"",
            "json",
            "",
        ] {
            assert!(!content_type_ok(bad.as_bytes()), "{bad}");
        }
        assert!(response_value_ok(
            "audit-id",
            b"5e0b7e4a-8f9a-4b8e-9d7e-0c1a2b3c4d5e"
        ));
        assert!(!response_value_ok("audit-id", b"hunter2"));
        assert!(response_value_ok("retry-after", b"1"));
        assert!(!response_value_ok("retry-after", b"1 token"));
        assert!(!response_value_ok("location", b"/"));
    }

    #[test]
    fn the_user_agent_is_the_layers_own() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static("kube-controller-manager/v1.30 (x) \\"),
        );
        h.insert("audit-id", HeaderValue::from_static("forged"));
        h.insert("kubectl-command", HeaderValue::from_static("kubectl get"));
        allow_request_headers(&mut h, false, false, "agent(1)");
        assert_eq!(
            h.get(http::header::USER_AGENT).unwrap(),
            &format!(
                "kubeleash/{} agent/agent_1_ (kube-controller-manager/v1.30 _x_ _)",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert!(h.get("audit-id").is_none());
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn any_upgrade_is_seen() {
        for (n, v) in [
            ("upgrade", &b""[..]),
            ("upgrade", b"x"),
            ("upgrade", b"\xff\xfe"),
            ("connection", b"Upgrade"),
            ("connection", b"keep-alive ,  UPGRADE "),
            ("connection", b"close,upgrade"),
        ] {
            let mut h = HeaderMap::new();
            h.insert(
                HeaderName::from_static(n),
                HeaderValue::from_bytes(v).unwrap(),
            );
            assert!(asks_upgrade(&h), "{n}: {v:?}");
        }
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, upgraded"));
        assert!(!asks_upgrade(&h));
    }

    #[test]
    fn accept_is_rewritten_to_json_keeping_transformations() {
        let mut h = HeaderMap::new();
        h.insert(
            ACCEPT,
            HeaderValue::from_static(
                "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json",
            ),
        );
        h.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        force_json(&mut h);
        assert_eq!(
            h.get(ACCEPT).and_then(|v| v.to_str().ok()),
            Some("application/json;as=Table;v=v1;g=meta.k8s.io, application/json")
        );
        assert!(h.get(ACCEPT_ENCODING).is_none());
    }

    #[test]
    fn client_credentials_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer agent"));
        h.insert("impersonate-user", HeaderValue::from_static("admin"));
        h.insert("x-remote-user", HeaderValue::from_static("admin"));
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(
                "base64url.bearer.authorization.k8s.io.dG9r, v5.channel.k8s.io",
            ),
        );
        strip_client_credentials(&mut h, false);
        assert!(h.get(AUTHORIZATION).is_none());
        assert!(h.get("impersonate-user").is_none());
        assert!(h.get("x-remote-user").is_none());
        assert_eq!(
            h.get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some("v5.channel.k8s.io")
        );
    }
}
