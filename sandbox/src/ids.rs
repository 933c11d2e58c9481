//! Identifiers the API server makes up: UIDs, `generateName` suffixes, IP addresses, tokens.
//! They only need to look real and not collide, so a splitmix64 generator is enough.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

#[derive(Debug)]
pub struct Ids {
    state: AtomicU64,
}

/// The alphabet of `generateName` suffixes (`k8s.io/apimachinery/pkg/util/rand`): no vowels, no
/// look-alike digits, so generated names spell no words.
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

impl Ids {
    pub fn new(seed: u64) -> Self {
        Ids {
            state: AtomicU64::new(seed),
        }
    }

    pub fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn bytes(&self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(n);
        out
    }

    /// A version 4 UUID.
    pub fn uid(&self) -> String {
        let mut b = self.bytes(16);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }

    /// A random suffix of `n` characters, as `generateName` and ReplicaSet pod names use.
    pub fn suffix(&self, n: usize) -> String {
        (0..n)
            .map(|_| {
                let i = (self.next_u64() % SUFFIX_ALPHABET.len() as u64) as usize;
                char::from(SUFFIX_ALPHABET[i])
            })
            .collect()
    }

    /// An address in the pod network `10.244.0.0/16`.
    pub fn pod_ip(&self) -> String {
        let n = self.next_u64();
        format!("10.244.{}.{}", (n >> 8) % 4, 2 + (n % 250))
    }

    /// An address in the service network `10.96.0.0/12`.
    pub fn cluster_ip(&self) -> String {
        let n = self.next_u64();
        format!("10.96.{}.{}", (n >> 8) % 256, 1 + (n % 254))
    }

    /// A JWT shaped like a service-account token signed with RS256: real header and claims,
    /// a random 256-byte signature. Nothing verifies it; it must look like the real thing to the
    /// masker.
    pub fn service_account_jwt(
        &self,
        namespace: &str,
        name: &str,
        sa_uid: &str,
        audiences: &[String],
        issued_at: i64,
        expires_at: i64,
    ) -> String {
        let kid = URL_SAFE_NO_PAD.encode(self.bytes(32));
        let header = serde_json::json!({"alg": "RS256", "kid": kid});
        let claims = serde_json::json!({
            "aud": audiences,
            "exp": expires_at,
            "iat": issued_at,
            "iss": "https://kubernetes.default.svc.cluster.local",
            "jti": self.uid(),
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": name, "uid": sa_uid},
            },
            "nbf": issued_at,
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
        });
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode(self.bytes(256))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_look_like_uuid_v4() {
        let ids = Ids::new(7);
        let u = ids.uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, ids.uid());
        assert!(ids.suffix(5).bytes().all(|c| SUFFIX_ALPHABET.contains(&c)));
    }
}
