//! Identity from the agent's OIDC bearer token: signature checked against a JWKS file, then
//! issuer, audience and expiry; the user and groups come from its claims.

use std::path::Path;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
use kubeleash_core::policy::Identity;

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
        let keys: JwkSet = serde_json::from_str(&text)
            .map_err(|e| format!("JWKS file `{}` is not a JWK set: {e}", jwks.display()))?;
        if keys.keys.is_empty() {
            return Err(format!("JWKS file `{}` holds no keys", jwks.display()));
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
        let h = decode_header(token).map_err(|e| format!("the token is not a JWT: {e}"))?;
        let jwk = match &h.kid {
            Some(kid) => self
                .keys
                .find(kid)
                .ok_or_else(|| format!("no key `{kid}` in the issuer's JWKS"))?,
            None if self.keys.keys.len() == 1 => &self.keys.keys[0],
            None => return Err("the token names no key (kid) and the JWKS holds several".into()),
        };
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|e| format!("the issuer's key cannot be used: {e}"))?;
        let mut v = Validation::new(h.alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = decode::<serde_json::Value>(token, &key, &v)
            .map_err(|e| format!("the token is not valid: {e}"))?;
        let claims = data.claims;
        let user = claims
            .get(&self.user_claim)
            .and_then(|u| u.as_str())
            .ok_or_else(|| format!("the token has no `{}` claim", self.user_claim))?
            .to_string();
        let groups = match claims.get(&self.groups_claim) {
            None => Vec::new(),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect(),
            Some(serde_json::Value::String(g)) => vec![g.clone()],
            Some(_) => {
                return Err(format!(
                    "the token's `{}` claim is not a list of names",
                    self.groups_claim
                ));
            }
        };
        Ok(Identity::new(user, groups))
    }
}
