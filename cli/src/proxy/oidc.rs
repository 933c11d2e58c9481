//! Identity from the agent's OIDC bearer token, checked as the API server's OIDC authenticator
//! (go-oidc, go-jose) checks it: the signature against a JWKS file with an asymmetric algorithm
//! the key allows, no `crit` header, the issuer exactly, the audience, `exp` (required, no
//! leeway), `nbf` (5 minutes of leeway, as go-oidc); the user and groups come from its claims.
//!
//! Stricter than the API server where it costs nobody anything: an `iat` more than 5 minutes
//! in the future is refused (a token from the future is forged or from a broken clock), and a
//! header with a duplicated name is refused (two readers could take different values).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use kubeleash_core::policy::Identity;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

/// Clock skew allowed on `nbf` (and `iat`), as go-oidc allows on `nbf`.
const LEEWAY_SECS: f64 = 300.0;

/// The algorithms go-oidc verifies (and so the API server's `--oidc-signing-algs` can name)
/// that jsonwebtoken implements. No HMAC: an issuer's keys are public, so a token "signed" with
/// one as an HMAC secret proves nothing (the key-confusion attack), and no `none`.
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// A verifier for one issuer.
pub struct Oidc {
    keys: JwkSet,
    issuer: String,
    audience: String,
    user_claim: String,
    groups_claim: String,
}

impl Oidc {
    /// Load the issuer's keys from a JWKS file.
    pub fn new(
        jwks: &Path,
        issuer: String,
        audience: String,
        user_claim: String,
        groups_claim: String,
    ) -> Result<Self, String> {
        let text = std::fs::read_to_string(jwks).map_err(|e| {
            format!(
                "cannot read JWKS file `{}`: {}",
                jwks.display(),
                e.to_string().to_lowercase()
            )
        })?;
        Self::from_jwks_text(&text, issuer, audience, user_claim, groups_claim)
            .map_err(|e| format!("JWKS file `{}` {e}", jwks.display()))
    }

    /// The verifier for a JWKS document; the error completes "JWKS file `F` ...".
    fn from_jwks_text(
        text: &str,
        issuer: String,
        audience: String,
        user_claim: String,
        groups_claim: String,
    ) -> Result<Self, String> {
        let keys: JwkSet =
            serde_json::from_str(text).map_err(|e| format!("is not a JWK set: {e}"))?;
        if keys.keys.is_empty() {
            return Err("holds no keys".into());
        }
        if let Some(k) = keys
            .keys
            .iter()
            .find(|k| matches!(k.algorithm, AlgorithmParameters::OctetKey(_)))
        {
            return Err(format!(
                "holds a symmetric (`oct`) key{}; an OIDC issuer publishes public keys, and \
                 tokens signed with a shared secret (HS256) are refused, as the API server \
                 refuses them: remove the key",
                kid_text(k)
            ));
        }
        Ok(Oidc {
            keys,
            issuer,
            audience,
            user_claim,
            groups_claim,
        })
    }

    /// The identity a request's bearer token proves, or why it proves none.
    pub fn identity(&self, parts: &http::request::Parts) -> Result<Identity, String> {
        let header = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .ok_or("no bearer token (Authorization header)")?;
        let header = header
            .to_str()
            .map_err(|_| "the Authorization header is not text")?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or("the Authorization header is not a bearer token")?
            .trim();
        self.verify(token, now())
    }

    /// Verify `token` at time `now` (seconds since the epoch).
    fn verify(&self, token: &str, now: f64) -> Result<Identity, String> {
        let header = JoseHeader::parse(token)?;
        let mut last = None;
        let mut tried = 0usize;
        for jwk in self.candidates(&header)? {
            tried += 1;
            match self.verify_with(token, header.alg, jwk) {
                Ok(()) => return self.identity_from(&claims(token)?, now),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            format!(
                "no key in the issuer's JWKS can verify a {:?} token ({tried} tried)",
                header.alg
            )
        }))
    }

    /// The keys that may verify the token: the one its `kid` names, or, without a `kid`,
    /// every key (as go-oidc tries them); each must allow the token's algorithm.
    fn candidates(&self, h: &JoseHeader) -> Result<Vec<&Jwk>, String> {
        let named: Vec<&Jwk> = match &h.kid {
            Some(kid) => {
                let k = self
                    .keys
                    .keys
                    .iter()
                    .filter(|k| k.common.key_id.as_deref() == Some(kid.as_str()))
                    .collect::<Vec<_>>();
                if k.is_empty() {
                    return Err(format!(
                        "no key {} in the issuer's JWKS",
                        serde_json::Value::from(kid.as_str())
                    ));
                }
                k
            }
            None => self.keys.keys.iter().collect(),
        };
        let mut why = None;
        let fit: Vec<&Jwk> = named
            .into_iter()
            .filter(|k| match key_allows(k, h.alg) {
                Ok(()) => true,
                Err(e) => {
                    why.get_or_insert(e);
                    false
                }
            })
            .collect();
        match (fit.is_empty(), why) {
            (true, Some(e)) => Err(e),
            _ => Ok(fit),
        }
    }

    /// Whether `jwk` signed `token` with `alg`, and the audience and `exp`'s presence.
    fn verify_with(&self, token: &str, alg: Algorithm, jwk: &Jwk) -> Result<(), String> {
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|e| format!("the issuer's key{} cannot be used: {e}", kid_text(jwk)))?;
        let mut v = Validation::new(alg);
        v.leeway = 0;
        // exp, nbf and iat against one clock, and iss exactly: checked below.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        decode::<serde_json::Value>(token, &key, &v)
            .map(|_| ())
            .map_err(|e| format!("the token is not valid: {e}"))
    }

    fn identity_from(&self, claims: &serde_json::Value, now: f64) -> Result<Identity, String> {
        match claims.get("iss") {
            Some(serde_json::Value::String(i)) if *i == self.issuer => {}
            _ => {
                return Err(
                    "the token is not valid: its issuer (iss) is not the one trusted".into(),
                );
            }
        }
        let time = |name: &str| -> Result<Option<f64>, String> {
            match claims.get(name) {
                None => Ok(None),
                Some(serde_json::Value::Number(n)) => Ok(n.as_f64()),
                Some(_) => Err(format!("the token's `{name}` claim is not a number")),
            }
        };
        match time("exp")? {
            None => return Err("the token has no expiry (exp)".into()),
            // As go-oidc: expired once `exp` is before now, with no leeway.
            Some(exp) if exp < now => {
                return Err(format!("the token has expired (exp {exp}, now {now:.0})"));
            }
            Some(_) => {}
        }
        if let Some(nbf) = time("nbf")?
            && nbf > now + LEEWAY_SECS
        {
            return Err(format!(
                "the token is not valid yet: not before {nbf} (now {now:.0})"
            ));
        }
        if let Some(iat) = time("iat")?
            && iat > now + LEEWAY_SECS
        {
            return Err(format!(
                "the token is not valid: issued in the future ({iat}, now {now:.0})"
            ));
        }
        if self.user_claim == "email"
            && claims
                .get("email_verified")
                .is_some_and(|v| v != &serde_json::Value::Bool(true))
        {
            return Err("the token's email is not verified (email_verified)".into());
        }
        let user = claims
            .get(&self.user_claim)
            .and_then(|u| u.as_str())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| format!("the token has no `{}` claim", self.user_claim))?
            .to_string();
        let not_names = || {
            format!(
                "the token's `{}` claim is not a list of names",
                self.groups_claim
            )
        };
        let groups = match claims.get(&self.groups_claim) {
            None => Vec::new(),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|g| g.as_str().map(str::to_string).ok_or_else(not_names))
                .collect::<Result<Vec<_>, _>>()?,
            Some(serde_json::Value::String(g)) => vec![g.clone()],
            Some(_) => return Err(not_names()),
        };
        Ok(Identity::new(user, groups))
    }
}

/// The claims of a token whose signature has been checked, read strictly: one JSON object with
/// no name twice (two readers could take different values of a duplicated `sub` or `aud`).
fn claims(token: &str) -> Result<serde_json::Value, String> {
    let payload = token
        .split('.')
        .nth(1)
        .and_then(b64url)
        .ok_or("the token's claims are not base64url")?;
    let fields: Unique = serde_json::from_slice(&payload)
        .map_err(|e| format!("the token's claims are not one JSON object: {e}"))?;
    Ok(serde_json::Value::Object(fields.0.into_iter().collect()))
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn kid_text(k: &Jwk) -> String {
    k.common
        .key_id
        .as_deref()
        .map(|k| format!(" {}", serde_json::Value::from(k)))
        .unwrap_or_default()
}

/// Whether `jwk` may verify a token signed with `alg`: a signing key (`use`, `key_ops`), whose
/// own `alg`, when it states one, is the token's, and whose type and curve fit the algorithm.
fn key_allows(jwk: &Jwk, alg: Algorithm) -> Result<(), String> {
    let kid = kid_text(jwk);
    if let Some(u) = &jwk.common.public_key_use
        && *u != PublicKeyUse::Signature
    {
        return Err(format!("the issuer's key{kid} is not a signing key (use)"));
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err(format!(
            "the issuer's key{kid} is not for verifying (key_ops)"
        ));
    }
    if let Some(ka) = jwk.common.key_algorithm
        && ka.to_string() != format!("{alg:?}")
    {
        return Err(format!(
            "the token is signed with {alg:?} but the issuer's key{kid} is for {ka}"
        ));
    }
    let fits = match (&jwk.algorithm, alg) {
        (
            AlgorithmParameters::RSA(_),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
        ) => true,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES384) => p.curve == EllipticCurve::P384,
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(format!(
            "the token is signed with {alg:?}, which the issuer's key{kid} cannot verify"
        ))
    }
}

/// The JOSE header, read strictly before any signature check: one JSON object with no name
/// twice, an algorithm from [`ALGORITHMS`], no `crit` (no extension is understood, and RFC 7515
/// says a header naming one that is not must be refused).
struct JoseHeader {
    alg: Algorithm,
    kid: Option<String>,
}

impl JoseHeader {
    fn parse(token: &str) -> Result<JoseHeader, String> {
        let mut segments = token.split('.');
        let (Some(head), Some(_), Some(_), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err("the token is not a JWT (three dot-separated parts)".into());
        };
        let bytes = b64url(head).ok_or("the token is not a JWT: its header is not base64url")?;
        let fields: Unique = serde_json::from_slice(&bytes).map_err(|e| {
            format!("the token is not a JWT: its header is not one JSON object: {e}")
        })?;
        let fields = fields.0;
        if fields.contains_key("crit") {
            return Err(
                "the token's header has `crit`: kubeleash understands no JWS extension, so it refuses the token (as the API server does)"
                    .into(),
            );
        }
        let alg = match fields.get("alg") {
            Some(serde_json::Value::String(a)) => a.as_str(),
            _ => return Err("the token's header names no algorithm (alg)".into()),
        };
        let alg = ALGORITHMS
            .iter()
            .copied()
            .find(|x| format!("{x:?}") == alg)
            .ok_or_else(|| {
                format!(
                    "the token is signed with {}, which is not accepted (accepted: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)",
                    serde_json::Value::from(alg)
                )
            })?;
        let kid = match fields.get("kid") {
            None => None,
            Some(serde_json::Value::String(k)) => Some(k.clone()),
            Some(_) => return Err("the token's key id (kid) is not a string".into()),
        };
        Ok(JoseHeader { alg, kid })
    }
}

/// A JSON object whose names are all different.
struct Unique(BTreeMap<String, serde_json::Value>);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Unique;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!("`{k}` appears twice")));
                    }
                    out.insert(k, v);
                }
                Ok(Unique(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Strict unpadded base64url (RFC 7515 §2): no padding, no other alphabet, no stray bits.
fn b64url(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    };
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = chunk.len() - 1;
        // Bits below the last whole byte must be zero, or two spellings decode alike.
        if keep < 3 && n & ((1 << (8 * (3 - keep))) - 1) != 0 {
            return None;
        }
        out.extend_from_slice(&bytes[..keep]);
    }
    Some(out)
}

#[cfg(test)]
mod tests;
