//! Facts read from request headers: impersonation and WebSocket bearer tokens
//! (`docs/kubernetes-semantics.md`, "Impersonation and credential headers"), upgrades ("Streams and
//! upgrades"), the body's media type, encoding and patch type.
//!
//! Every header read here must be visible ASCII (what `HeaderValue::to_str` accepts: printable
//! ASCII, space and tab); anything else is refused rather than decoded one way or another. The
//! single-valued ones (`Content-Type`, `Content-Encoding`, `Upgrade`) must not repeat: Go reads
//! the first, and another hop could read the last.

use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, SEC_WEBSOCKET_PROTOCOL, UPGRADE};

use super::{Facts, Impersonation, NonCanonical, PatchType, Upgrade};

/// The prefix of a WebSocket subprotocol that carries a bearer token.
const BEARER_PROTOCOL_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

/// Fill in the facts that come from headers; the query-based ones are left untouched.
pub(super) fn read_headers(
    facts: &mut Facts,
    method: &str,
    headers: &HeaderMap,
) -> Result<(), NonCanonical> {
    let content_type = single_header(headers, &CONTENT_TYPE)?;
    facts.content_type = content_type.and_then(media_type);
    if method == "PATCH" {
        facts.patch_type = content_type.and_then(patch_type);
    }
    facts.content_encoding = single_header(headers, &CONTENT_ENCODING)?.and_then(content_encoding);
    facts.upgrade = single_header(headers, &UPGRADE)?.map(upgrade_kind);
    facts.websocket_bearer_token = websocket_bearer_token(headers)?;
    facts.impersonation = impersonation(headers)?;
    Ok(())
}

/// The value of a header that must appear at most once, as visible ASCII.
fn single_header<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h str>, NonCanonical> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(NonCanonical::DuplicateHeader {
            name: name.as_str().into(),
        });
    }
    visible_ascii(name, value).map(Some)
}

fn visible_ascii<'h>(
    name: &HeaderName,
    value: &'h http::HeaderValue,
) -> Result<&'h str, NonCanonical> {
    value.to_str().map_err(|_| NonCanonical::BadHeader {
        name: name.as_str().into(),
    })
}

/// `Impersonate-*` and front-proxy `X-Remote-*` headers; `Some` when any is present, even one
/// the API server would ignore (`Impersonate-Foo`), since a gateway must strip them all.
/// Header names are lowercase in `http`, so the prefix checks are case-insensitive.
fn impersonation(headers: &HeaderMap) -> Result<Option<Impersonation>, NonCanonical> {
    let mut found: Option<Impersonation> = None;
    for (name, value) in headers {
        if let Some(kind) = name.as_str().strip_prefix("impersonate-") {
            let value = visible_ascii(name, value)?;
            add_impersonation(found.get_or_insert_default(), kind, value);
        } else if is_front_proxy_header(name.as_str()) {
            visible_ascii(name, value)?;
            found.get_or_insert_default().front_proxy = true;
        }
    }
    Ok(found)
}

/// Record one `Impersonate-<kind>` header.
fn add_impersonation(imp: &mut Impersonation, kind: &str, value: &str) {
    match kind {
        // Go's `Header.Get` reads the first `Impersonate-User` and `Impersonate-Uid`.
        "user" => _ = imp.user.get_or_insert_with(|| value.into()),
        "uid" => _ = imp.uid.get_or_insert_with(|| value.into()),
        "group" => imp.groups.push(value.into()),
        _ => {
            if let Some(key) = kind.strip_prefix("extra-")
                && !imp.extra.iter().any(|k| k == key)
            {
                imp.extra.push(key.into());
            }
        }
    }
}

/// The default front-proxy identity headers (`--requestheader-*-headers`).
fn is_front_proxy_header(lower: &str) -> bool {
    lower == "x-remote-user" || lower == "x-remote-group" || lower.starts_with("x-remote-extra-")
}

/// The kind of upgrade an `Upgrade` header asks for. A token list with `websocket` anywhere is
/// a WebSocket (wider than Go, which wants the whole value to be `websocket` and a `Connection:
/// upgrade` besides, so that the stricter
/// `create` reading of exec covers more requests); `SPDY/...` is SPDY; anything else is other.
fn upgrade_kind(value: &str) -> Upgrade {
    let tokens = || value.split(',').map(str::trim);
    if tokens().any(|t| t.eq_ignore_ascii_case("websocket")) {
        Upgrade::WebSocket
    } else if tokens().any(|t| starts_with_ignore_case(t, "spdy/")) {
        Upgrade::Spdy
    } else {
        Upgrade::Other
    }
}

/// Whether any entry of any `Sec-WebSocket-Protocol` header carries a bearer token. Go matches
/// the prefix case-sensitively; matching it in any case flags a superset.
fn websocket_bearer_token(headers: &HeaderMap) -> Result<bool, NonCanonical> {
    let mut found = false;
    for value in headers.get_all(SEC_WEBSOCKET_PROTOCOL) {
        let value = visible_ascii(&SEC_WEBSOCKET_PROTOCOL, value)?;
        found |= value
            .split(',')
            .any(|p| starts_with_ignore_case(p.trim(), BEARER_PROTOCOL_PREFIX));
    }
    Ok(found)
}

/// The media type of a `Content-Type`: lowercased, parameters and whitespace stripped. An empty
/// header is no content type (the API server then assumes JSON, as for a missing one); a value
/// with an empty media type (`;charset=utf-8`) stays `Some("")`, which no decoder accepts.
fn media_type(value: &str) -> Option<String> {
    if value.trim().is_empty() {
        return None;
    }
    let media = value.split(';').next().unwrap_or_default();
    Some(media.trim().to_ascii_lowercase())
}

/// `Content-Encoding`, unless absent, empty or `identity`.
fn content_encoding(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty() && !value.eq_ignore_ascii_case("identity")).then(|| value.into())
}

/// The patch type, as the API server's patch handler reads it: `Content-Type` cut at the first
/// `;`, then compared exactly and case-sensitively (Go does not trim; we do, which only matters
/// for values the API server answers with 415).
fn patch_type(content_type: &str) -> Option<PatchType> {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    Some(match media {
        "application/json-patch+json" => PatchType::Json,
        "application/merge-patch+json" => PatchType::Merge,
        "application/strategic-merge-patch+json" => PatchType::StrategicMerge,
        "application/apply-patch+yaml" => PatchType::Apply,
        "application/apply-patch+cbor" => PatchType::ApplyCbor,
        _ => return None,
    })
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            map.append(name, HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    fn facts(method: &str, pairs: &[(&str, &[u8])]) -> Result<Facts, &'static str> {
        let mut facts = Facts::default();
        read_headers(&mut facts, method, &headers(pairs)).map_err(|e| e.code())?;
        Ok(facts)
    }

    #[test]
    fn no_headers_no_facts() {
        assert_eq!(facts("GET", &[]), Ok(Facts::default()));
    }

    #[test]
    fn impersonation_headers() {
        let got = facts(
            "GET",
            &[
                ("Impersonate-User", b"alice"),
                ("impersonate-group", b"system:masters"),
                ("IMPERSONATE-GROUP", b"devs"),
                ("Impersonate-Uid", b"1234"),
                ("Impersonate-Extra-Scopes", b"view"),
                ("Impersonate-Extra-scopes", b"edit"),
                ("Impersonate-Extra-Reason", b"x"),
            ],
        )
        .unwrap();
        let imp = got.impersonation.unwrap();
        assert_eq!(imp.user.as_deref(), Some("alice"));
        assert_eq!(imp.groups, ["system:masters", "devs"]);
        assert_eq!(imp.uid.as_deref(), Some("1234"));
        assert_eq!(imp.extra, ["scopes", "reason"]);
        assert!(!imp.front_proxy);
    }

    #[test]
    fn unknown_impersonate_header_and_front_proxy_headers_count() {
        let got = facts("GET", &[("Impersonate-Foo", b"x")]).unwrap();
        assert_eq!(got.impersonation, Some(Impersonation::default()));
        for name in ["X-Remote-User", "x-remote-group", "X-Remote-Extra-Scopes"] {
            let got = facts("GET", &[(name, b"x")]).unwrap();
            assert!(got.impersonation.unwrap().front_proxy, "{name}");
        }
        assert_eq!(
            facts("GET", &[("X-Remote-Other", b"x")])
                .unwrap()
                .impersonation,
            None
        );
    }

    #[test]
    fn upgrades() {
        let up = |v: &[u8]| facts("GET", &[("Upgrade", v)]).unwrap().upgrade;
        assert_eq!(up(b"websocket"), Some(Upgrade::WebSocket));
        assert_eq!(up(b"WebSocket"), Some(Upgrade::WebSocket));
        assert_eq!(up(b"h2c, websocket"), Some(Upgrade::WebSocket));
        assert_eq!(up(b"SPDY/3.1"), Some(Upgrade::Spdy));
        assert_eq!(up(b"h2c"), Some(Upgrade::Other));
        assert_eq!(facts("GET", &[]).unwrap().upgrade, None);
    }

    #[test]
    fn websocket_bearer_token_in_any_entry_of_any_header() {
        let token = |pairs: &[(&str, &[u8])]| facts("GET", pairs).unwrap().websocket_bearer_token;
        assert!(token(&[(
            "Sec-WebSocket-Protocol",
            b"v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.dG9rZW4"
        )]));
        assert!(token(&[
            ("Sec-WebSocket-Protocol", b"v5.channel.k8s.io"),
            (
                "Sec-WebSocket-Protocol",
                b"Base64Url.Bearer.Authorization.K8s.Io.eA"
            ),
        ]));
        assert!(!token(&[("Sec-WebSocket-Protocol", b"v5.channel.k8s.io")]));
    }

    #[test]
    fn content_type_encoding_and_patch_type() {
        let got = facts(
            "PATCH",
            &[
                (
                    "Content-Type",
                    b"Application/Merge-Patch+JSON; charset=utf-8",
                ),
                ("Content-Encoding", b"gzip"),
            ],
        )
        .unwrap();
        assert_eq!(
            got.content_type.as_deref(),
            Some("application/merge-patch+json")
        );
        assert_eq!(got.content_encoding.as_deref(), Some("gzip"));
        // The patch handler compares case-sensitively.
        assert_eq!(got.patch_type, None);

        let patch = |ct: &[u8]| facts("PATCH", &[("Content-Type", ct)]).unwrap().patch_type;
        assert_eq!(patch(b"application/json-patch+json"), Some(PatchType::Json));
        assert_eq!(
            patch(b"application/merge-patch+json; charset=utf-8"),
            Some(PatchType::Merge)
        );
        assert_eq!(
            patch(b"application/strategic-merge-patch+json"),
            Some(PatchType::StrategicMerge)
        );
        assert_eq!(
            patch(b"application/apply-patch+yaml"),
            Some(PatchType::Apply)
        );
        assert_eq!(
            patch(b"application/apply-patch+cbor"),
            Some(PatchType::ApplyCbor)
        );
        assert_eq!(patch(b"application/json"), None);

        let post = facts("POST", &[("Content-Type", b"application/merge-patch+json")]).unwrap();
        assert_eq!(post.patch_type, None);
        let identity = facts("POST", &[("Content-Encoding", b"identity")]).unwrap();
        assert_eq!(identity.content_encoding, None);
        let empty = facts("POST", &[("Content-Type", b"")]).unwrap();
        assert_eq!(empty.content_type, None);
        let params_only = facts("POST", &[("Content-Type", b";charset=utf-8")]).unwrap();
        assert_eq!(params_only.content_type.as_deref(), Some(""));
    }

    #[test]
    fn refuses_bad_and_duplicate_headers() {
        assert_eq!(
            facts("GET", &[("Impersonate-User", "é".as_bytes())]),
            Err("bad-header")
        );
        assert_eq!(
            facts("GET", &[("X-Remote-User", b"\x80")]),
            Err("bad-header")
        );
        assert_eq!(
            facts("GET", &[("Sec-WebSocket-Protocol", b"\xff")]),
            Err("bad-header")
        );
        assert_eq!(
            facts("GET", &[("Content-Encoding", b"gzip\xa0")]),
            Err("bad-header")
        );
        assert_eq!(
            facts("GET", &[("Content-Type", b"a/b"), ("Content-Type", b"c/d")]),
            Err("duplicate-header")
        );
        assert_eq!(
            facts("GET", &[("Upgrade", b"websocket"), ("Upgrade", b"h2c")]),
            Err("duplicate-header")
        );
        // Headers kubeleash does not read may hold anything `http` accepts.
        assert!(facts("GET", &[("User-Agent", "kubectl/é".as_bytes())]).is_ok());
    }
}
