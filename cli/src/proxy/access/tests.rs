//! The door: only requests that name the proxy's address, come from no browser and carry the
//! proxy's token get in; the token never goes further.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use proptest::prelude::*;

use super::{Access, AgentToken};

fn parts(host: Option<&str>, extra: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder().uri("/api/v1/namespaces/dev/pods");
    if let Some(h) = host {
        b = b.header("host", h);
    }
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn v4() -> (Access, AgentToken) {
    let t = AgentToken::generate().unwrap();
    (
        Access::new("127.0.0.1:8001".parse().unwrap(), Some(t.clone())),
        t,
    )
}

fn bearer(t: &AgentToken) -> String {
    format!("Bearer {}", t.secret())
}

#[test]
fn the_listen_address_with_the_token_gets_in_and_the_token_goes_no_further() {
    let (a, t) = v4();
    for host in ["127.0.0.1:8001", "localhost:8001", "LOCALHOST:8001"] {
        let mut p = parts(Some(host), &[("authorization", &bearer(&t))]);
        assert_eq!(a.admit(&mut p), Ok(()), "{host}");
        assert!(p.headers.get("authorization").is_none());
    }
    let mut p = parts(
        Some("127.0.0.1:8001"),
        &[("authorization", &format!("bearer  {} ", t.secret()))],
    );
    assert_eq!(a.admit(&mut p), Ok(()));
    let six = Access::new("[::1]:9000".parse().unwrap(), None);
    for host in ["[::1]:9000", "localhost:9000"] {
        assert_eq!(six.admit(&mut parts(Some(host), &[])), Ok(()), "{host}");
    }
    assert_eq!(
        six.admit(&mut parts(Some("127.0.0.1:9000"), &[]))
            .unwrap_err()
            .code,
        403
    );
}

#[test]
fn other_hosts_are_refused() {
    let (a, t) = v4();
    let auth = bearer(&t);
    for host in [
        "evil.example:8001",
        "evil.example",
        "127.0.0.1",
        "127.0.0.1:8002",
        "127.0.0.1:8001.evil.example",
        "localhost",
        "localhost.:8001",
        "127.0.0.2:8001",
        "[::1]:8001",
        "0.0.0.0:8001",
        "127.1:8001",
        "2130706433:8001",
        "127.0.0.1:08001",
        " 127.0.0.1:8001",
        "user@127.0.0.1:8001",
        "",
    ] {
        let r = a.admit(&mut parts(Some(host), &[("authorization", &auth)]));
        let r = r.expect_err(host);
        assert_eq!((r.code, r.reason), (403, "Forbidden"), "{host}: {r:?}");
        assert!(r.message.contains("not this proxy's address"), "{r:?}");
    }
    let r = a
        .admit(&mut parts(None, &[("authorization", &auth)]))
        .unwrap_err();
    assert_eq!(r.code, 400);
    let r = a
        .admit(&mut parts(
            Some("127.0.0.1:8001"),
            &[("host", "evil.example:8001"), ("authorization", &auth)],
        ))
        .unwrap_err();
    assert_eq!(r.code, 400, "two Host headers: {r:?}");
}

#[test]
fn absolute_targets_are_refused() {
    let (a, t) = v4();
    for uri in [
        "http://127.0.0.1:8001/api/v1/pods",
        "http://evil.example/api",
        "https://kubernetes.default.svc/api",
    ] {
        let mut p = http::Request::builder()
            .uri(uri)
            .header("host", "127.0.0.1:8001")
            .header("authorization", bearer(&t))
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert_eq!(a.admit(&mut p).unwrap_err().code, 400, "{uri}");
    }
}

#[test]
fn browsers_are_refused() {
    let (a, t) = v4();
    let auth = bearer(&t);
    for (h, v) in [
        ("origin", "https://evil.example"),
        ("origin", "null"),
        ("origin", "http://127.0.0.1:8001"),
        ("origin", ""),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-dest", "document"),
        ("sec-fetch-dest", "empty"),
        ("Sec-Fetch-User", "?1"),
    ] {
        let r = a
            .admit(&mut parts(
                Some("127.0.0.1:8001"),
                &[(h, v), ("authorization", &auth)],
            ))
            .unwrap_err();
        assert_eq!((r.code, r.reason), (403, "Forbidden"), "{h}: {v}");
        assert!(r.message.contains("browser"), "{r:?}");
    }
}

#[test]
fn node_fetch_is_not_a_browser() {
    // undici adds `sec-fetch-mode: cors` to every request; nothing else a browser sends.
    let (a, t) = v4();
    let mut p = parts(
        Some("127.0.0.1:8001"),
        &[("sec-fetch-mode", "cors"), ("authorization", &bearer(&t))],
    );
    assert_eq!(a.admit(&mut p), Ok(()));
}

#[test]
fn a_missing_or_wrong_token_is_refused_and_never_echoed() {
    let (a, t) = v4();
    let other = AgentToken::generate().unwrap();
    let s = t.secret();
    let mut flipped = s.as_bytes().to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let flipped = String::from_utf8(flipped).unwrap();
    let cases = [
        None,
        Some(String::new()),
        Some("Bearer".to_string()),
        Some("Bearer ".to_string()),
        Some(format!("Basic {s}")),
        Some(s.to_string()),
        Some(format!("Bearer {}", other.secret())),
        Some(format!("Bearer {flipped}")),
        Some(format!("Bearer {}", &s[..s.len() - 1])),
        Some(format!("Bearer {s}x")),
        Some(format!("Bearer {s} {s}")),
    ];
    for c in cases {
        let extra: Vec<(&str, &str)> = c.iter().map(|v| ("authorization", v.as_str())).collect();
        let r = a
            .admit(&mut parts(Some("127.0.0.1:8001"), &extra))
            .unwrap_err();
        assert_eq!((r.code, r.reason), (401, "Unauthorized"), "{c:?}");
        assert!(!r.message.contains(s) && !r.message.contains(other.secret()));
    }
    // Two Authorization headers, one of them right: refused.
    let r = a
        .admit(&mut parts(
            Some("127.0.0.1:8001"),
            &[
                ("authorization", "Bearer x"),
                ("authorization", &bearer(&t)),
            ],
        ))
        .unwrap_err();
    assert_eq!(r.code, 401);
}

#[test]
fn tokens_are_fresh_and_long() {
    let a = AgentToken::generate().unwrap();
    let b = AgentToken::generate().unwrap();
    assert_ne!(a.secret(), b.secret());
    let hex = a.secret().strip_prefix("kubeleash-").unwrap();
    assert_eq!(hex.len(), 64, "256 bits");
    assert!(hex.bytes().all(|c| c.is_ascii_hexdigit()));
    assert!(!format!("{a:?}").contains(hex));
}

proptest! {
    /// Any Host other than the proxy's own names is refused, whatever else the request has.
    #[test]
    fn any_other_host_is_refused(host in "[ -~]{0,40}", port in 1u16..) {
        let (a, t) = v4();
        let h = format!("{host}:{port}");
        prop_assume!(http::HeaderValue::from_str(&h).is_ok());
        let lower = h.to_ascii_lowercase();
        let own = lower == "127.0.0.1:8001" || lower == "localhost:8001";
        let r = a.admit(&mut parts(Some(&h), &[("authorization", &bearer(&t))]));
        prop_assert_eq!(r.is_ok(), own, "{:?}", r);
    }

    /// Any Origin or Sec-Fetch-Site/-Dest/-User value is refused, even with the right Host and token.
    #[test]
    fn any_browser_header_is_refused(
        which in 0usize..super::BROWSER_HEADERS.len(),
        value in "[ -~]{0,40}",
    ) {
        let (a, t) = v4();
        prop_assume!(http::HeaderValue::from_str(&value).is_ok());
        let r = a.admit(&mut parts(
            Some("localhost:8001"),
            &[(super::BROWSER_HEADERS[which], &value), ("authorization", &bearer(&t))],
        ));
        prop_assert_eq!(r.map_err(|e| e.code), Err(403));
    }

    /// Only the exact token gets in.
    #[test]
    fn only_the_exact_token_matches(guess in proptest::collection::vec(any::<u8>(), 0..80)) {
        let t = AgentToken::generate().unwrap();
        prop_assert_eq!(t.matches(&guess), guess == t.secret().as_bytes());
        prop_assert!(t.matches(t.secret().as_bytes()));
    }
}

fn at(path: &str) -> http::request::Parts {
    http::Request::builder()
        .uri(path)
        .header("host", "127.0.0.1:8001")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

#[test]
fn the_token_as_the_first_path_segment_gets_in_and_is_taken_off() {
    let (a, t) = v4();
    let s = t.secret();
    for (sent, forwarded) in [
        (format!("/{s}/api/v1/pods?watch=1"), "/api/v1/pods?watch=1"),
        (format!("/{s}/api"), "/api"),
        (format!("/{s}"), "/"),
        (format!("/{s}/"), "/"),
        (format!("/{s}?x=1"), "/?x=1"),
    ] {
        let mut p = at(&sent);
        assert_eq!(a.admit(&mut p), Ok(()), "{sent}");
        assert_eq!(p.uri.to_string(), forwarded);
        assert!(!p.uri.to_string().contains(s));
    }
    // With the header too, the path still loses it: it is never decided, recorded or sent.
    let mut p = at(&format!("/{s}/api"));
    p.headers
        .insert("authorization", bearer(&t).parse().unwrap());
    assert_eq!(a.admit(&mut p), Ok(()));
    assert_eq!(p.uri.to_string(), "/api");
    for sent in [
        format!("/api/{s}/v1"),
        format!("/{s}x/api"),
        format!("/x{s}/api"),
        format!("//{s}/api"),
        format!("/{}/api", s.to_uppercase()),
        format!("/{}/api", &s[1..]),
        "/api/v1/pods".to_string(),
        "/".to_string(),
    ] {
        let r = a.admit(&mut at(&sent)).unwrap_err();
        assert_eq!(r.code, 401, "{sent}");
        assert!(!r.message.contains(s));
    }
}

#[test]
fn the_token_sent_twice_is_refused_never_passed_on() {
    let (a, t) = v4();
    let s = t.secret();
    for sent in [
        format!("/{s}/{s}/api"),
        format!("/{s}/api/v1/namespaces/{s}/pods"),
        format!("/{s}/api?x={s}"),
    ] {
        let r = a.admit(&mut at(&sent)).unwrap_err();
        assert_eq!(r.code, 400, "{sent}");
        assert!(!r.message.contains(s));
    }
}

proptest! {
    /// A path whose first segment is not the token is refused, whatever follows.
    #[test]
    fn any_other_first_segment_is_refused(seg in "[A-Za-z0-9._~!$&'()*+,;=:@%-]{0,80}", rest in "(/[a-z0-9]{1,8}){0,3}") {
        let (a, t) = v4();
        let path = format!("/{seg}{rest}");
        prop_assume!(http::Uri::try_from(path.as_str()).is_ok());
        let r = a.admit(&mut at(&path));
        prop_assert_eq!(r.is_ok(), seg == t.secret());
    }

    /// The token with any one byte changed, cut or extended is refused.
    #[test]
    fn a_near_miss_of_the_token_is_refused(at_byte in 0usize..74, to in "[A-Za-z0-9._~!$&'()*+,;=:@%-]", cut in any::<bool>()) {
        let (a, t) = v4();
        let mut seg = t.secret().to_string();
        if cut {
            seg.truncate(at_byte);
        } else {
            seg.replace_range(at_byte..=at_byte, &to);
        }
        prop_assume!(seg != t.secret());
        let r = a.admit(&mut at(&format!("/{seg}/api")));
        prop_assert_eq!(r.map_err(|e| e.code), Err(401));
    }
}

#[test]
fn a_services_names_get_in_with_any_port_and_nothing_like_them_does() {
    let a = Access::serving(
        "127.0.0.1:8443".parse().unwrap(),
        None,
        &[
            "kl.ns.svc".to_string(),
            "KL.ns.svc.cluster.local.".to_string(),
        ],
    );
    for host in [
        "kl.ns.svc",
        "kl.ns.svc:443",
        "KL.NS.SVC:8443",
        "kl.ns.svc.",
        "kl.ns.svc.cluster.local",
        "kl.ns.svc.cluster.local.:443",
        "127.0.0.1:8443",
    ] {
        assert_eq!(a.admit(&mut parts(Some(host), &[])), Ok(()), "{host}");
    }
    for host in [
        "evil.kl.ns.svc",
        "kl.ns.svc.evil",
        "kl.ns.svc:",
        "kl.ns.svc:44x",
        ":443",
        "",
        "kl.ns",
        "127.0.0.1:443",
    ] {
        assert_eq!(
            a.admit(&mut parts(Some(host), &[])).map_err(|r| r.code),
            Err(403),
            "{host}"
        );
    }
    for bad in [
        "",
        ".",
        "*.ns.svc",
        "kl.ns.svc:443",
        "kl..svc",
        "-kl.svc",
        "kl ns",
    ] {
        assert!(super::dns_name(bad).is_err(), "{bad:?}");
    }
    for good in ["kl", "kl.ns.svc", "kl.ns.svc.cluster.local."] {
        assert!(super::dns_name(good).is_ok(), "{good:?}");
    }
}
