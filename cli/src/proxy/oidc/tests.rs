//! The OIDC verifier against tokens an attacker can mint: each must be refused for the reason
//! the API server's authenticator refuses it, and a good token must pass.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use super::{Oidc, b64url};

const ISS: &str = "https://issuer.example";
const AUD: &str = "kubeleash";
const NOW: f64 = 1_800_000_000.0;

const RSA_A: &str = include_str!("../testdata/rsa_a.pem");
const RSA_A_PUB: &str = include_str!("../testdata/rsa_a.pub.pem");
const RSA_B: &str = include_str!("../testdata/rsa_b.pem");
const EC: &str = include_str!("../testdata/ec.pem");
const PUBLIC: &str = include_str!("../testdata/public.json");

fn public(name: &str, field: &str) -> String {
    let v: Value = serde_json::from_str(PUBLIC).unwrap();
    v[name][field].as_str().unwrap().to_string()
}

fn rsa_jwk(name: &str, kid: &str, alg: Option<&str>) -> Value {
    let mut k = json!({"kty": "RSA", "kid": kid, "n": public(name, "n"), "e": public(name, "e")});
    if let Some(a) = alg {
        k["alg"] = json!(a);
    }
    k
}

fn ec_jwk(kid: &str) -> Value {
    json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": public("ec", "x"), "y": public("ec", "y")})
}

fn verifier(keys: Vec<Value>) -> Oidc {
    Oidc::from_jwks_text(
        &json!({ "keys": keys }).to_string(),
        ISS.into(),
        AUD.into(),
        "sub".into(),
        "groups".into(),
    )
    .unwrap()
}

fn enc(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..=c.len() {
            s.push(char::from(T[((n >> (18 - 6 * k)) & 63) as usize]));
        }
    }
    s
}

/// A token with this exact header text, these claims, signed by `key` with `alg`.
fn raw(header: &str, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let msg = format!(
        "{}.{}",
        enc(header.as_bytes()),
        enc(claims.to_string().as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), key, alg).unwrap();
    format!("{msg}.{sig}")
}

fn rsa(pem: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "agent-7", "groups": ["ai-agents"], "exp": NOW + 600.0, "iat": NOW - 5.0})
}

fn with(mut c: Value, k: &str, v: Value) -> Value {
    if v.is_null() {
        c.as_object_mut().unwrap().remove(k);
    } else {
        c[k] = v;
    }
    c
}

fn rs256(claims: &Value) -> String {
    raw(
        r#"{"alg":"RS256","kid":"a","typ":"JWT"}"#,
        claims,
        &rsa(RSA_A),
        Algorithm::RS256,
    )
}

fn refused(o: &Oidc, token: &str, want: &str) {
    match o.verify(token, NOW) {
        Ok(id) => panic!("accepted as {id:?}, expected a refusal ({want}): {token}"),
        Err(e) => assert!(e.contains(want), "refused for `{e}`, expected `{want}`"),
    }
}

#[test]
fn a_good_token_gives_its_identity() {
    let o = verifier(vec![rsa_jwk("rsa_a", "a", Some("RS256"))]);
    let id = o.verify(&rs256(&claims()), NOW).unwrap();
    assert_eq!(id.user, "agent-7");
    assert_eq!(id.groups, vec!["ai-agents".to_string()]);
    // Audience as a list holding ours, as go-oidc accepts it.
    let c = with(claims(), "aud", json!(["other", AUD]));
    assert_eq!(o.verify(&rs256(&c), NOW).unwrap().user, "agent-7");
    // nbf inside the 5-minute leeway, and floating-point times, are fine.
    let c = with(claims(), "nbf", json!(NOW + 240.5));
    assert!(o.verify(&rs256(&c), NOW).is_ok());
    // EC keys too.
    let o = verifier(vec![ec_jwk("e")]);
    let t = raw(
        r#"{"alg":"ES256","kid":"e"}"#,
        &claims(),
        &EncodingKey::from_ec_pem(EC.as_bytes()).unwrap(),
        Algorithm::ES256,
    );
    assert!(o.verify(&t, NOW).is_ok());
}

#[test]
fn claims_the_api_server_refuses_are_refused() {
    let o = verifier(vec![rsa_jwk("rsa_a", "a", None)]);
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "future nbf",
            with(claims(), "nbf", json!(NOW + 301.0)),
            "not valid yet",
        ),
        (
            "far-future nbf",
            with(claims(), "nbf", json!(NOW + 1e9)),
            "not valid yet",
        ),
        ("nbf not a number", with(claims(), "nbf", json!("0")), "nbf"),
        (
            "future iat",
            with(claims(), "iat", json!(NOW + 3600.0)),
            "issued in the future",
        ),
        (
            "iat not a number",
            with(claims(), "iat", json!(true)),
            "iat",
        ),
        ("no exp", with(claims(), "exp", Value::Null), "exp"),
        (
            "exp a string",
            with(claims(), "exp", json!("99999999999")),
            "exp",
        ),
        (
            "expired",
            with(claims(), "exp", json!(NOW - 1.0)),
            "expired",
        ),
        (
            "expired long ago",
            with(claims(), "exp", json!(1)),
            "expired",
        ),
        ("exp negative", with(claims(), "exp", json!(-1)), "exp"),
        ("no aud", with(claims(), "aud", Value::Null), "aud"),
        (
            "wrong aud",
            with(claims(), "aud", json!("other")),
            "udience",
        ),
        (
            "aud list without ours",
            with(claims(), "aud", json!(["a", "b"])),
            "udience",
        ),
        (
            "empty aud list",
            with(claims(), "aud", json!([])),
            "udience",
        ),
        ("no iss", with(claims(), "iss", Value::Null), "iss"),
        (
            "wrong iss",
            with(claims(), "iss", json!("https://evil.example")),
            "issuer",
        ),
        ("iss list", with(claims(), "iss", json!([ISS])), "issuer"),
        (
            "iss with a slash",
            with(claims(), "iss", json!(format!("{ISS}/"))),
            "issuer",
        ),
        ("no user", with(claims(), "sub", Value::Null), "sub"),
        ("empty user", with(claims(), "sub", json!("")), "sub"),
        ("user not a string", with(claims(), "sub", json!(7)), "sub"),
        (
            "groups with a number",
            with(claims(), "groups", json!(["a", 1])),
            "groups",
        ),
        (
            "groups an object",
            with(claims(), "groups", json!({"a": 1})),
            "groups",
        ),
    ];
    for (what, c, want) in cases {
        match o.verify(&rs256(&c), NOW) {
            Ok(id) => panic!("{what}: accepted as {id:?}"),
            Err(e) => assert!(
                e.contains(want),
                "{what}: refused for `{e}`, expected `{want}`"
            ),
        }
    }
}

#[test]
fn a_claim_named_twice_is_refused() {
    let o = verifier(vec![rsa_jwk("rsa_a", "a", None)]);
    let k = rsa(RSA_A);
    let body = format!(
        r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"nobody","sub":"system:admin","exp":{}}}"#,
        NOW + 600.0
    );
    let msg = format!(
        "{}.{}",
        enc(br#"{"alg":"RS256","kid":"a"}"#),
        enc(body.as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &k, Algorithm::RS256).unwrap();
    let t = format!("{msg}.{sig}");
    match o.verify(&t, NOW) {
        Ok(id) => panic!("accepted as {id:?}"),
        Err(e) => assert!(e.contains("twice") || e.contains("duplicate"), "{e}"),
    }
}

#[test]
fn headers_the_api_server_refuses_are_refused() {
    let o = verifier(vec![rsa_jwk("rsa_a", "a", None)]);
    let k = rsa(RSA_A);
    let c = claims();
    let sign = |h: &str| raw(h, &c, &k, Algorithm::RS256);
    refused(
        &o,
        &sign(r#"{"alg":"RS256","kid":"a","crit":["exp"],"exp":1}"#),
        "crit",
    );
    refused(&o, &sign(r#"{"alg":"RS256","kid":"a","crit":[]}"#), "crit");
    refused(
        &o,
        &sign(r#"{"alg":"RS256","kid":"a","crit":"b64","b64":false}"#),
        "crit",
    );
    refused(
        &o,
        &sign(r#"{"alg":"RS256","kid":"a","alg":"RS256"}"#),
        "twice",
    );
    refused(&o, &sign(r#"{"alg":"RS256","kid":"a","kid":"b"}"#), "twice");
    refused(&o, &sign(r#"{"kid":"a"}"#), "no algorithm");
    refused(&o, &sign(r#"{"alg":"rs256","kid":"a"}"#), "not accepted");
    refused(&o, &sign(r#"{"alg":"RS256","kid":7}"#), "kid");
    refused(&o, &sign(r#"["RS256"]"#), "JSON object");
    refused(&o, &sign(r#"{"alg":"RS256","kid":"nope"}"#), "no key");
    // alg none, with and without a signature.
    let none = format!(
        "{}.{}.",
        enc(br#"{"alg":"none","kid":"a"}"#),
        enc(c.to_string().as_bytes())
    );
    refused(&o, &none, "not accepted");
    refused(&o, &format!("{none}AAAA"), "not accepted");
    for alg in ["None", "NONE", "HS256", "HS384", "HS512", "ES512", ""] {
        let h = format!(r#"{{"alg":"{alg}","kid":"a"}}"#);
        refused(&o, &sign(&h), "not accepted");
    }
    // Not three parts, or not base64url.
    refused(&o, "a.b", "three");
    refused(&o, "a.b.c.d", "three");
    refused(&o, "garbage", "three");
    let t = sign(r#"{"alg":"RS256","kid":"a"}"#);
    let padded = t.replacen('.', "=.", 1);
    refused(&o, &padded, "base64url");
}

#[test]
fn the_key_decides_which_algorithm_it_verifies() {
    let c = claims();
    // Key confusion: HS256 with the RSA public key (its PEM, or its modulus) as the secret.
    let o = verifier(vec![rsa_jwk("rsa_a", "a", None)]);
    for secret in [
        RSA_A_PUB.as_bytes().to_vec(),
        public("rsa_a", "n").into_bytes(),
    ] {
        let t = raw(
            r#"{"alg":"HS256","kid":"a"}"#,
            &c,
            &EncodingKey::from_secret(&secret),
            Algorithm::HS256,
        );
        refused(&o, &t, "not accepted");
    }
    // The key says RS256; a valid PS256 signature by the same key is refused.
    let ps = raw(
        r#"{"alg":"PS256","kid":"a"}"#,
        &c,
        &rsa(RSA_A),
        Algorithm::PS256,
    );
    refused(
        &verifier(vec![rsa_jwk("rsa_a", "a", Some("RS256"))]),
        &ps,
        "is for RS256",
    );
    // Without an `alg` of its own the key verifies any RSA algorithm.
    assert!(
        verifier(vec![rsa_jwk("rsa_a", "a", None)])
            .verify(&ps, NOW)
            .is_ok()
    );
    // An RSA algorithm against an EC key, and the reverse.
    refused(&verifier(vec![ec_jwk("a")]), &rs256(&c), "cannot verify");
    // An encryption key, or a key not for verifying.
    let mut enc_key = rsa_jwk("rsa_a", "a", None);
    enc_key["use"] = json!("enc");
    refused(&verifier(vec![enc_key]), &rs256(&c), "not a signing key");
    let mut ops = rsa_jwk("rsa_a", "a", None);
    ops["key_ops"] = json!(["sign"]);
    refused(&verifier(vec![ops]), &rs256(&c), "not for verifying");
    // Signed by another key under the right kid.
    let forged = raw(
        r#"{"alg":"RS256","kid":"a"}"#,
        &c,
        &rsa(RSA_B),
        Algorithm::RS256,
    );
    refused(
        &verifier(vec![rsa_jwk("rsa_a", "a", None)]),
        &forged,
        "not valid",
    );
}

#[test]
fn without_a_kid_every_key_is_tried_and_only_a_real_signature_passes() {
    let o = verifier(vec![
        rsa_jwk("rsa_b", "b", None),
        ec_jwk("e"),
        rsa_jwk("rsa_a", "a", None),
    ]);
    let c = claims();
    let good = raw(r#"{"alg":"RS256"}"#, &c, &rsa(RSA_A), Algorithm::RS256);
    assert_eq!(o.verify(&good, NOW).unwrap().user, "agent-7");
    let by_b = raw(r#"{"alg":"RS256"}"#, &c, &rsa(RSA_B), Algorithm::RS256);
    // rsa_b is in the set: its signature is genuine.
    assert!(o.verify(&by_b, NOW).is_ok());
    let only_a = verifier(vec![rsa_jwk("rsa_a", "a", None), ec_jwk("e")]);
    refused(&only_a, &by_b, "not valid");
}

#[test]
fn a_jwks_with_a_symmetric_key_is_refused_at_start() {
    let r = Oidc::from_jwks_text(
        &json!({"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}).to_string(),
        ISS.into(),
        AUD.into(),
        "sub".into(),
        "groups".into(),
    );
    let e = r.err().unwrap();
    assert!(e.contains("symmetric"), "{e}");
    assert!(
        Oidc::from_jwks_text(
            "{\"keys\":[]}",
            ISS.into(),
            AUD.into(),
            "sub".into(),
            "groups".into()
        )
        .is_err()
    );
}

#[test]
fn email_must_be_verified_when_it_names_the_user() {
    let o = Oidc::from_jwks_text(
        &json!({ "keys": [rsa_jwk("rsa_a", "a", None)] }).to_string(),
        ISS.into(),
        AUD.into(),
        "email".into(),
        "groups".into(),
    )
    .unwrap();
    let c = with(claims(), "email", json!("a@example.com"));
    assert!(o.verify(&rs256(&c), NOW).is_ok());
    let c2 = with(c.clone(), "email_verified", json!(false));
    refused(&o, &rs256(&c2), "not verified");
    let c3 = with(c, "email_verified", json!("true"));
    refused(&o, &rs256(&c3), "not verified");
}

#[test]
fn base64url_is_strict() {
    assert_eq!(b64url("").unwrap(), b"");
    assert_eq!(b64url("YQ").unwrap(), b"a");
    assert_eq!(b64url("YWI").unwrap(), b"ab");
    assert_eq!(b64url("YWJj").unwrap(), b"abc");
    for bad in ["Y", "YQ==", "YR", "YWJ", "Y+E", "Y/E", "YW J", "YWJ\n"] {
        assert!(b64url(bad).is_none(), "{bad}");
    }
    // "YR" sets bits below the byte: a second spelling of "a" is refused.
    assert!(b64url("YR").is_none());
    // Round trip over every short byte string shape.
    for len in 0..40usize {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
        assert_eq!(b64url(&enc(&bytes)).unwrap(), bytes);
    }
}

#[test]
fn a_key_the_token_carries_is_never_used() {
    // The attacker signs with its own key and puts it (or where to fetch it) in the header.
    let o = verifier(vec![rsa_jwk("rsa_a", "a", None)]);
    let mine = rsa_jwk("rsa_b", "a", None);
    for header in [
        json!({"alg": "RS256", "kid": "a", "jwk": mine}),
        json!({"alg": "RS256", "jwk": mine}),
        json!({"alg": "RS256", "kid": "a", "jku": "https://evil.example/jwks"}),
        json!({"alg": "RS256", "kid": "a", "x5u": "https://evil.example/cert"}),
    ] {
        let t = raw(
            &header.to_string(),
            &claims(),
            &rsa(RSA_B),
            Algorithm::RS256,
        );
        refused(&o, &t, "not valid");
    }
}

proptest::proptest! {
    // RSA verification is slow without optimisation: fewer cases, each a full check.
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(40))]

    /// Any one character of a good token changed (or removed) makes it fail.
    #[test]
    fn a_good_token_changed_anywhere_is_refused(
        at in 0usize..2000,
        to in "[A-Za-z0-9_.=+/-]?",
    ) {
        let o = verifier(vec![rsa_jwk("rsa_a", "a", None)]);
        let good = rs256(&claims());
        let at = at % good.len();
        let mut bad = good.clone();
        bad.replace_range(at..=at, &to);
        proptest::prop_assume!(bad != good);
        proptest::prop_assert!(o.verify(&bad, NOW).is_err(), "accepted: {}", bad);
    }
}
