//! Agents identified as workloads: the bearer token an agent presents is a Kubernetes
//! ServiceAccount token (projected, bound to an audience), and the API server says whose it is
//! (a `TokenReview`, sent with the operator's credential, which needs `create` on
//! `tokenreviews`, which the chart's ClusterRole grants and nothing more). The identity is the API server's
//! answer: `system:serviceaccount:NS:NAME` and its groups (`system:serviceaccounts`,
//! `system:serviceaccounts:NS`, `system:authenticated`), so a policy's `subjects` name service
//! accounts and namespaces as RBAC does.
//!
//! A token must be bound to the proxy's audience (`kubectl create token SA --audience AUD`, or a
//! projected volume with that audience): a token for the API server itself, or for anything
//! else, is refused, so a token the agent holds for another purpose is not one kubeleash
//! accepts, and one made for kubeleash is not one the API server accepts.
//!
//! Answers are kept for [`KEPT`] (refusals for [`KEPT_REFUSED`]), keyed by the token's SHA-256,
//! so a busy agent does not send a review per request; a deleted service account's token is
//! refused at the latest that long after. The token itself is never kept, logged or recorded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kubeleash_core::policy::Identity;
use sha2::{Digest, Sha256};

/// How long the API server's acceptance of a token is trusted.
pub(crate) const KEPT: Duration = Duration::from_secs(10);
/// How long a refusal is remembered (so a client retrying a bad token costs one review).
pub(crate) const KEPT_REFUSED: Duration = Duration::from_secs(2);
/// At most this many answers are kept; past it the expired go, then the refusals, then all.
const MAX_KEPT: usize = 10_000;
/// The longest token reviewed (a projected ServiceAccount token is about 1 KiB): a longer one
/// is refused without asking the API server.
const MAX_TOKEN: usize = 16 * 1024;
/// Reviews in flight at once: anyone who can reach the proxy can present tokens, and each new
/// one is a request to the API server on the proxy's own credential, so they queue here.
const MAX_REVIEWS: usize = 16;
/// A review the API server has not answered by then fails (the agent gets a 503).
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a token gave no identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// The agent's token is not good: what the agent is told (401), and the API server's own
    /// reason, for the operator's log only.
    Token(String, Option<String>),
    /// The review itself failed (the operator's credential, the network): the agent gets a
    /// fixed message, the operator the details.
    Review(String),
}

/// An answer kept: when the API server gave it, and the identity or why not.
type Kept = (Instant, Result<Identity, String>);

/// The reviewer of one proxy.
pub(crate) struct TokenReview {
    client: kube::Client,
    audience: String,
    in_flight: tokio::sync::Semaphore,
    /// By the token's SHA-256.
    kept: Mutex<HashMap<[u8; 32], Kept>>,
}

impl TokenReview {
    /// Review tokens for `audience` with `client` (the operator's credential, without the
    /// layer: this is the proxy's own request, not the agent's).
    pub(crate) fn new(client: kube::Client, audience: String) -> Self {
        TokenReview {
            client,
            audience,
            in_flight: tokio::sync::Semaphore::new(MAX_REVIEWS),
            kept: Mutex::new(HashMap::new()),
        }
    }

    /// The identity the request's bearer token proves.
    pub(crate) async fn identity(
        &self,
        parts: &http::request::Parts,
    ) -> Result<Identity, Rejected> {
        let token = bearer(parts).map_err(|e| Rejected::Token(e.into(), None))?;
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(kept) = self.kept(&key) {
            return kept.map_err(|why| Rejected::Token(why, None));
        }
        match self.review(token).await? {
            Ok(id) => {
                self.keep(key, Ok(id.clone()));
                Ok(id)
            }
            Err((why, detail)) => {
                self.keep(key, Err(why.clone()));
                Err(Rejected::Token(why, detail))
            }
        }
    }

    fn kept(&self, key: &[u8; 32]) -> Option<Result<Identity, String>> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let (at, answer) = kept.get(key)?;
        let ttl = if answer.is_ok() { KEPT } else { KEPT_REFUSED };
        (at.elapsed() < ttl).then(|| answer.clone())
    }

    fn keep(&self, key: [u8; 32], answer: Result<Identity, String>) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= MAX_KEPT {
            kept.retain(|_, (at, a)| at.elapsed() < if a.is_ok() { KEPT } else { KEPT_REFUSED });
        }
        if kept.len() >= MAX_KEPT {
            // Random tokens fill it with refusals: those go before an agent's good answer.
            kept.retain(|_, (_, a)| a.is_ok());
        }
        if kept.len() >= MAX_KEPT {
            kept.clear();
        }
        kept.insert(key, (Instant::now(), answer));
    }

    /// Ask the API server. `Ok(Err((why, its reason)))`: it answered that the token is not
    /// good.
    async fn review(&self, token: &str) -> Result<Result<Identity, Refused>, Rejected> {
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [self.audience]},
        });
        let request = http::Request::post("/apis/authentication.k8s.io/v1/tokenreviews")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body).unwrap_or_default())
            .map_err(|e| Rejected::Review(e.to_string()))?;
        let _turn = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| Rejected::Review("the reviewer is closed".into()))?;
        let answer: serde_json::Value =
            tokio::time::timeout(REVIEW_TIMEOUT, self.client.request(request))
                .await
                .map_err(|_| Rejected::Review("the TokenReview timed out".into()))?
                .map_err(|e| Rejected::Review(format!("the TokenReview failed: {e}")))?;
        Ok(judge(&answer, &self.audience))
    }
}

/// Why a token is not good: for the agent, and the API server's reason for the operator.
type Refused = (String, Option<String>);

/// The identity in a TokenReview's answer, or why the token is not good.
fn judge(answer: &serde_json::Value, audience: &str) -> Result<Identity, Refused> {
    let status = &answer["status"];
    if status["authenticated"] != serde_json::Value::Bool(true) {
        // The API server's reason joins every authenticator's errors (which may name webhooks
        // or issuers): it goes to the operator's log, not to whoever sent the token.
        let why = status["error"].as_str().unwrap_or("it did not say why");
        return Err((
            format!(
                "the API server does not accept the token for audience {audience:?} (it expired, is bound to another audience, is of a deleted service account, or is no ServiceAccount token)"
            ),
            Some(why.chars().take(1000).collect()),
        ));
    }
    // The API server lists the audiences (of those asked) the token is good for.
    let audiences = status["audiences"].as_array();
    if !audiences.is_some_and(|a| a.iter().any(|x| x.as_str() == Some(audience))) {
        return Err((
            format!("the token is not bound to the audience {audience:?}"),
            None,
        ));
    }
    let user = status["user"]["username"].as_str().unwrap_or_default();
    // Workloads only: another authenticator of the API server's that takes this audience
    // (an OIDC issuer, a webhook) names people and machines that are not service accounts.
    if !user.starts_with("system:serviceaccount:") {
        return Err((
            "the token is not a ServiceAccount's".into(),
            Some(format!("the API server names its holder {user:?}")),
        ));
    }
    let groups: Vec<&str> = status["user"]["groups"]
        .as_array()
        .map(|g| g.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    Ok(Identity::new(user, groups))
}

/// The token in `Authorization: Bearer TOKEN` (one header, scheme case-insensitive).
fn bearer(parts: &http::request::Parts) -> Result<&str, &'static str> {
    let mut all = parts.headers.get_all(http::header::AUTHORIZATION).iter();
    let header = match (all.next(), all.next()) {
        (Some(h), None) => h,
        (None, _) => return Err("no bearer token (Authorization header)"),
        (Some(_), Some(_)) => return Err("more than one Authorization header"),
    };
    let header = header
        .to_str()
        .map_err(|_| "the Authorization header is not text")?;
    let (scheme, token) = header
        .split_once(' ')
        .ok_or("the Authorization header is not a bearer token")?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err("the Authorization header is not a bearer token");
    }
    // RFC 6750's token characters only: the API server reads a bearer token up to its first
    // space, so `TOKEN anything` would be a new cache key (and a new review) for the same
    // token; and a bound on its length, so a huge header is not sent on.
    let token68 = |c: u8| c.is_ascii_alphanumeric() || b"-._~+/=".contains(&c);
    if token.len() > MAX_TOKEN || !token.bytes().all(token68) {
        return Err("the bearer token is not a token (RFC 6750's characters, at most 16 KiB)");
    }
    Ok(token)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_an_authenticated_answer_for_this_audience_with_a_user_is_an_identity() {
        let good = json!({"status": {"authenticated": true, "audiences": ["kubeleash"],
            "user": {"username": "system:serviceaccount:agents:a1",
                     "groups": ["system:serviceaccounts", "system:serviceaccounts:agents", "system:authenticated"]}}});
        let id = judge(&good, "kubeleash").unwrap();
        let mut person = good.clone();
        person["status"]["user"]["username"] = json!("alice@example.com");
        assert!(
            judge(&person, "kubeleash")
                .unwrap_err()
                .0
                .contains("not a ServiceAccount's")
        );
        assert_eq!(id.user, "system:serviceaccount:agents:a1");
        assert!(
            id.groups
                .iter()
                .any(|g| g == "system:serviceaccounts:agents")
        );
        let mut other = good.clone();
        other["status"]["audiences"] = json!(["https://kubernetes.default.svc"]);
        assert!(
            judge(&other, "kubeleash")
                .unwrap_err()
                .0
                .contains("not bound to the audience")
        );
        let mut none = good.clone();
        none["status"].as_object_mut().unwrap().remove("audiences");
        assert!(judge(&none, "kubeleash").is_err());
        let refused = json!({"status": {"authenticated": false, "error": "token has expired"}});
        let (agent, operator) = judge(&refused, "kubeleash").unwrap_err();
        assert!(
            !agent.contains("token has expired") && operator.unwrap().contains("token has expired")
        );
        let nobody =
            json!({"status": {"authenticated": true, "audiences": ["kubeleash"], "user": {}}});
        assert!(judge(&nobody, "kubeleash").is_err());
        assert!(judge(&json!("not a review"), "kubeleash").is_err());
    }

    #[test]
    fn the_bearer_token_is_read_strictly() {
        let parts = |values: &[&str]| {
            let mut b = http::Request::get("/");
            for v in values {
                b = b.header(http::header::AUTHORIZATION, *v);
            }
            b.body(()).unwrap().into_parts().0
        };
        assert_eq!(bearer(&parts(&["Bearer abc"])), Ok("abc"));
        assert_eq!(bearer(&parts(&["bearer  abc "])), Ok("abc"));
        assert!(bearer(&parts(&[])).is_err());
        assert!(bearer(&parts(&["Basic abc"])).is_err());
        assert!(bearer(&parts(&["Bearer "])).is_err());
        assert!(bearer(&parts(&["Bearer a", "Bearer b"])).is_err());
        // What the API server would read as the same token, and a huge one: refused here.
        assert!(bearer(&parts(&["Bearer abc 1"])).is_err());
        assert!(bearer(&parts(&["Bearer abc\t1"])).is_err());
        assert!(bearer(&parts(&[&format!("Bearer {}", "a".repeat(MAX_TOKEN + 1))])).is_err());
        assert_eq!(
            bearer(&parts(&["Bearer eyJ.a-b_c.d+/="])),
            Ok("eyJ.a-b_c.d+/=")
        );
    }
}
