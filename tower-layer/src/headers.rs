//! Request header hygiene: no client-supplied credential or identity leaves the layer, and the
//! server is asked for JSON it can mask.

use http::HeaderMap;
use http::header::{ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, HeaderValue};

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
    use super::*;

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
