//! Request header hygiene: no client-supplied credential or identity leaves the layer, framing
//! and hop-by-hop headers are the layer's own, upgrades are asked for only where the API server
//! switches protocols, and the server is asked for JSON it can mask.

use http::HeaderMap;
use http::header::{
    ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, HOST, HeaderName,
    HeaderValue, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
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

/// Remove every header that frames the message or concerns only this hop, so the inner client
/// frames the request from the bytes the layer hands it: `Host`, `Content-Length`,
/// `Transfer-Encoding`, `Connection` and every header it names, `Keep-Alive`,
/// `Proxy-Connection`, `TE`, `Trailer`, and `Upgrade`. With `upgrade`, the request is an allowed
/// protocol switch: `Upgrade` is kept and `Connection: Upgrade` set again.
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: bool) {
    // One pass over the (few) headers first: most requests carry none of these.
    let hop = |k: &HeaderName| {
        matches!(
            k.as_str(),
            "host"
                | "content-length"
                | "transfer-encoding"
                | "connection"
                | "te"
                | "trailer"
                | "keep-alive"
                | "proxy-connection"
                | "upgrade"
        )
    };
    if !upgrade && !h.keys().any(hop) {
        return;
    }
    let named: Vec<HeaderName> = h
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        .collect();
    for n in named {
        if !(upgrade && n == UPGRADE) {
            h.remove(n);
        }
    }
    for n in [
        HOST,
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        CONNECTION,
        TE,
        TRAILER,
    ] {
        h.remove(n);
    }
    h.remove("keep-alive");
    h.remove("proxy-connection");
    if upgrade {
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    } else {
        h.remove(UPGRADE);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn hop_by_hop_and_framing_headers_go() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("host", "evil.example"),
            ("content-length", "3"),
            ("transfer-encoding", "chunked"),
            ("connection", "keep-alive, X-Secret-Hop, upgrade"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("upgrade", "websocket"),
            ("content-type", "application/json"),
        ] {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        let mut plain = h.clone();
        strip_hop_by_hop(&mut plain, false);
        assert_eq!(plain.len(), 1, "{plain:?}");
        assert!(plain.contains_key("content-type"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(CONNECTION).unwrap(), "Upgrade");
        assert_eq!(h.len(), 3, "{h:?}");
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
