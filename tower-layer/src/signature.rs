//! Signatures for approvals that travel over a network: a remote approver (a webhook, a chat
//! bot) and kubeleash share a secret, and each side signs what it sends with HMAC-SHA256, so
//! that whoever can reach the approver's URL, or answer in its place, can neither approve nor
//! learn to forge an approval.
//!
//! What is signed, as `sha256=<lowercase hex>` in [`SIGNATURE_HEADER`]:
//!
//! - a request: HMAC-SHA256(secret, `kubeleash-approval-request\n` ‖ the exact body bytes sent);
//! - an answer: HMAC-SHA256(secret, `kubeleash-approval-answer\n` ‖ the exact body bytes of the
//!   answer), where the answer must carry the `id` of the request it answers.
//!
//! - a callback: an answer that comes back later, POSTed to kubeleash by the approver (the
//!   chat channel, `kubeleash proxy --approvals chat=URL`): HMAC-SHA256(secret,
//!   `kubeleash-approval-callback\n` ‖ timestamp ‖ `\n` ‖ the exact body bytes), where the
//!   timestamp is the callback's [`TIMESTAMP_HEADER`] exactly as sent: the time of signing in
//!   decimal Unix seconds.
//!
//! The three prefixes keep a signed request from passing for a signed answer or callback.
//! Verification is in constant time.
//!
//! A callback is believed only if ([`check_callback`], then [`CallbackReplays::admit`]):
//!
//! - it carries both headers, and the signature is right for its timestamp and body;
//! - its timestamp is within [`CALLBACK_MAX_SKEW_SECS`] (300 s) of kubeleash's clock;
//! - neither its signature nor its (`id`, timestamp) pair was seen before: so one signed answer
//!   is used once, and every callback needs a timestamp of its own. The set of those seen is
//!   kept until their timestamps are too old to be accepted anyway, and is bounded: when it is
//!   full, callbacks are refused until entries expire.
//!
//! Its body is JSON: `{"id": "<the approval id>", "approve": true|false, "by": "<who
//! answered>", "reason": "…", "forSeconds": 900}`. A callback in Python:
//!
//! ```python
//! import hmac, json, time, urllib.request
//! body = json.dumps({"id": approval_id, "approve": True, "by": "alice@example.com"}).encode()
//! ts = str(int(time.time()))
//! sig = "sha256=" + hmac.new(secret, b"kubeleash-approval-callback\n" + ts.encode() + b"\n" + body,
//!                            "sha256").hexdigest()
//! urllib.request.urlopen(urllib.request.Request(callback_url, data=body, method="POST",
//!     headers={"Content-Type": "application/json", "X-Kubeleash-Timestamp": ts,
//!              "X-Kubeleash-Signature": sig}))
//! ```
//!
//! and the same signatures of requests and answers:
//! `"sha256=" + hmac.new(secret, b"kubeleash-approval-request\n" + body, "sha256").hexdigest()`
//! (what kubeleash sends), `b"kubeleash-approval-answer\n"` for an answer in an HTTP response.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The HTTP header that carries a signature, both ways.
pub const SIGNATURE_HEADER: &str = "x-kubeleash-signature";

/// The HTTP header that carries a callback's time of signing, in decimal Unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-kubeleash-timestamp";

/// How far a callback's timestamp may be from kubeleash's clock, either way, in seconds.
pub const CALLBACK_MAX_SKEW_SECS: u64 = 300;

const REQUEST: &[u8] = b"kubeleash-approval-request\n";
const ANSWER: &[u8] = b"kubeleash-approval-answer\n";
const CALLBACK: &[u8] = b"kubeleash-approval-callback\n";

fn mac(secret: &[u8], context: &[u8], message: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut m = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    m.update(context);
    m.update(message);
    m
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(7 + bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn sign(secret: &[u8], context: &[u8], message: &[u8]) -> String {
    format!(
        "sha256={}",
        hex(&mac(secret, context, message).finalize().into_bytes())
    )
}

fn verify(secret: &[u8], context: &[u8], message: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Some(bytes) = unhex(hex_sig) else {
        return false;
    };
    mac(secret, context, message).verify_slice(&bytes).is_ok()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The signature of an approval request body, as sent in [`SIGNATURE_HEADER`].
pub fn sign_request(secret: &[u8], body: &[u8]) -> String {
    sign(secret, REQUEST, body)
}

/// Whether `signature` is the signature of the approval request `body` (constant time).
pub fn verify_request(secret: &[u8], body: &[u8], signature: &str) -> bool {
    verify(secret, REQUEST, body, signature)
}

/// The signature of an approval answer body, as an approver sends it in [`SIGNATURE_HEADER`].
pub fn sign_answer(secret: &[u8], body: &[u8]) -> String {
    sign(secret, ANSWER, body)
}

/// Whether `signature` is the signature of the answer `body` (constant time).
pub fn verify_answer(secret: &[u8], body: &[u8], signature: &str) -> bool {
    verify(secret, ANSWER, body, signature)
}

/// The signature of a callback `body` signed at `timestamp` (Unix seconds), as an approver
/// sends it in [`SIGNATURE_HEADER`] next to `timestamp` in [`TIMESTAMP_HEADER`].
pub fn sign_callback(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    sign(
        secret,
        CALLBACK,
        &callback_message(&timestamp.to_string(), body),
    )
}

/// Whether `signature` is the signature of the callback `body` with the [`TIMESTAMP_HEADER`]
/// `timestamp` exactly as received (constant time). It says nothing of the timestamp's age or
/// of replays: see [`check_callback`] and [`CallbackReplays`].
pub fn verify_callback(secret: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    verify(
        secret,
        CALLBACK,
        &callback_message(timestamp, body),
        signature,
    )
}

fn callback_message(timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(timestamp.len() + 1 + body.len());
    m.extend_from_slice(timestamp.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m
}

/// Why a callback is not believed. Every one of them leaves the request it names held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackRefusal {
    /// No [`SIGNATURE_HEADER`].
    MissingSignature,
    /// No [`TIMESTAMP_HEADER`].
    MissingTimestamp,
    /// A timestamp that is not decimal Unix seconds.
    BadTimestamp,
    /// A signature that is not the secret's for this timestamp and body.
    BadSignature,
    /// A timestamp more than [`CALLBACK_MAX_SKEW_SECS`] from now.
    Stale,
    /// The same signature, or the same id and timestamp, seen before.
    Replayed,
    /// Too many callbacks seen within the timestamp window to remember one more.
    TooMany,
}

impl std::fmt::Display for CallbackRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CallbackRefusal::MissingSignature => {
                "the callback has no X-Kubeleash-Signature header; sign it (sha256=<hex>)"
            }
            CallbackRefusal::MissingTimestamp => {
                "the callback has no X-Kubeleash-Timestamp header; send the Unix seconds it was signed at"
            }
            CallbackRefusal::BadTimestamp => {
                "the callback's X-Kubeleash-Timestamp is not decimal Unix seconds"
            }
            CallbackRefusal::BadSignature => {
                "the callback's signature does not match its timestamp and body under the shared secret"
            }
            CallbackRefusal::Stale => {
                "the callback's timestamp is more than 300 seconds from kubeleash's clock; sign it anew"
            }
            CallbackRefusal::Replayed => {
                "the callback was seen before (same signature, or same id and timestamp); sign a new one"
            }
            CallbackRefusal::TooMany => {
                "too many callbacks within the last 300 seconds; try again later"
            }
        })
    }
}

impl std::error::Error for CallbackRefusal {}

/// A callback whose signature and timestamp are good: what [`CallbackReplays::admit`] needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedCallback {
    /// When it was signed, in Unix seconds.
    pub timestamp: u64,
    tag: [u8; 32],
}

/// Check a callback's headers (`None` when absent) against its exact `body` at `now` (Unix
/// seconds): the signature first, in constant time, then the timestamp's age. Replays are
/// [`CallbackReplays`]'s to catch.
pub fn check_callback(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: u64,
) -> Result<VerifiedCallback, CallbackRefusal> {
    let signature = signature.ok_or(CallbackRefusal::MissingSignature)?;
    let text = timestamp.ok_or(CallbackRefusal::MissingTimestamp)?;
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CallbackRefusal::BadTimestamp);
    }
    let ts: u64 = text.parse().map_err(|_| CallbackRefusal::BadTimestamp)?;
    let Some(given) = signature.trim().strip_prefix("sha256=").and_then(unhex) else {
        return Err(CallbackRefusal::BadSignature);
    };
    let m = mac(secret, CALLBACK, &callback_message(text, body));
    let mut tag = [0u8; 32];
    tag.copy_from_slice(&m.clone().finalize().into_bytes());
    if m.verify_slice(&given).is_err() {
        return Err(CallbackRefusal::BadSignature);
    }
    if now.abs_diff(ts) > CALLBACK_MAX_SKEW_SECS {
        return Err(CallbackRefusal::Stale);
    }
    Ok(VerifiedCallback { timestamp: ts, tag })
}

/// The callbacks seen while their timestamps can still be accepted: a callback is admitted
/// once. At most `capacity` are remembered; past that, callbacks are refused
/// ([`CallbackRefusal::TooMany`]) until old ones expire, rather than forgetting one (which
/// would let it be replayed).
#[derive(Debug)]
pub struct CallbackReplays {
    capacity: usize,
    /// Signature tags, with the Unix second after which they can no longer be accepted.
    tags: HashMap<[u8; 32], u64>,
    /// (id, timestamp) pairs, likewise.
    ids: HashMap<(String, u64), u64>,
}

impl CallbackReplays {
    /// An empty set that remembers at most `capacity` callbacks at once.
    pub fn new(capacity: usize) -> CallbackReplays {
        CallbackReplays {
            capacity,
            tags: HashMap::new(),
            ids: HashMap::new(),
        }
    }

    /// How many callbacks are remembered.
    pub fn len(&self) -> usize {
        self.tags.len().max(self.ids.len())
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admit the verified callback for approval `id` at `now` (Unix seconds), once: a second
    /// callback with its signature, or with its id and timestamp, is refused.
    pub fn admit(
        &mut self,
        callback: &VerifiedCallback,
        id: &str,
        now: u64,
    ) -> Result<(), CallbackRefusal> {
        self.tags.retain(|_, until| *until >= now);
        self.ids.retain(|_, until| *until >= now);
        let key = (id.to_string(), callback.timestamp);
        if self.tags.contains_key(&callback.tag) || self.ids.contains_key(&key) {
            return Err(CallbackRefusal::Replayed);
        }
        if self.len() >= self.capacity {
            return Err(CallbackRefusal::TooMany);
        }
        let until = callback.timestamp.saturating_add(CALLBACK_MAX_SKEW_SECS);
        self.tags.insert(callback.tag, until);
        self.ids.insert(key, until);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_known_vector() {
        // printf 'kubeleash-approval-answer\n{}' | openssl dgst -sha256 -hmac k
        let s = sign_answer(b"k", b"{}");
        assert_eq!(
            s,
            "sha256=8fe0b3b7c84ce5b3f377b8da48cebdf5fbe5d47b66de832a6463a197e4c2aa2f"
        );
        assert!(verify_answer(b"k", b"{}", &s));
        assert!(verify_answer(
            b"k",
            b"{}",
            &s.to_uppercase().replace("SHA256=", "sha256=")
        ));
    }

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn a_known_callback_vector() {
        // printf 'kubeleash-approval-callback\n1700000000\n{"id":"a"}' | openssl dgst -sha256 -hmac k
        let body = br#"{"id":"a"}"#;
        let s = sign_callback(b"k", NOW, body);
        assert_eq!(
            s,
            "sha256=b4ffba571c5a11cf5bb9041b79fbb2d449896f3ff0e2b4a73c111603e57984cd"
        );
        assert!(verify_callback(b"k", "1700000000", body, &s));
        assert!(!verify_callback(b"k", "1700000001", body, &s));
        assert!(
            !verify_answer(b"k", body, &s),
            "a callback is not an answer"
        );
        assert!(!verify_callback(
            b"k",
            "1700000000",
            body,
            &sign_answer(b"k", body)
        ));
    }

    #[test]
    fn callbacks_are_checked_signature_first_then_age() {
        let body = br#"{"id":"a","approve":true,"by":"alice"}"#;
        let ts = NOW.to_string();
        let good = sign_callback(b"k", NOW, body);
        let check =
            |t: Option<&str>, s: Option<&str>, now: u64| check_callback(b"k", t, s, body, now);
        assert_eq!(
            check(Some(&ts), Some(&good), NOW).map(|v| v.timestamp),
            Ok(NOW)
        );
        assert_eq!(
            check(Some(&ts), None, NOW),
            Err(CallbackRefusal::MissingSignature)
        );
        assert_eq!(
            check(None, Some(&good), NOW),
            Err(CallbackRefusal::MissingTimestamp)
        );
        for bad in [
            "",
            "-1",
            "+1700000000",
            "1700000000.0",
            " 1700000000",
            "99999999999999999999",
        ] {
            assert_eq!(
                check(Some(bad), Some(&good), NOW),
                Err(CallbackRefusal::BadTimestamp),
                "{bad:?}"
            );
        }
        let forged = sign_callback(b"another key", NOW, body);
        assert_eq!(
            check(Some(&ts), Some(&forged), NOW),
            Err(CallbackRefusal::BadSignature)
        );
        assert_eq!(
            check(Some(&ts), Some("sha256=00"), NOW),
            Err(CallbackRefusal::BadSignature)
        );
        // The same second written another way is another message: its signature does not fit.
        assert_eq!(
            check(Some("01700000000"), Some(&good), NOW),
            Err(CallbackRefusal::BadSignature)
        );
        // Five minutes either way, and not a second more.
        assert!(check(Some(&ts), Some(&good), NOW + 300).is_ok());
        assert!(check(Some(&ts), Some(&good), NOW - 300).is_ok());
        assert_eq!(
            check(Some(&ts), Some(&good), NOW + 301),
            Err(CallbackRefusal::Stale)
        );
        assert_eq!(
            check(Some(&ts), Some(&good), NOW - 301),
            Err(CallbackRefusal::Stale)
        );
        // A forgery is told it is forged, however old its timestamp.
        assert_eq!(
            check(Some("1"), Some(&forged), NOW),
            Err(CallbackRefusal::BadSignature)
        );
    }

    #[test]
    fn a_callback_is_admitted_once_and_the_set_is_bounded() {
        let verified = |secret: &[u8], ts: u64, body: &[u8]| {
            check_callback(
                secret,
                Some(&ts.to_string()),
                Some(&sign_callback(secret, ts, body)),
                body,
                ts,
            )
            .unwrap()
        };
        let mut seen = CallbackReplays::new(2);
        let a = verified(b"k", NOW, b"a");
        assert_eq!(seen.admit(&a, "id-1", NOW), Ok(()));
        assert_eq!(seen.admit(&a, "id-1", NOW), Err(CallbackRefusal::Replayed));
        assert_eq!(
            seen.admit(&a, "id-2", NOW),
            Err(CallbackRefusal::Replayed),
            "same signature"
        );
        // Another body for the same id in the same second: refused too.
        let b = verified(b"k", NOW, b"b");
        assert_eq!(seen.admit(&b, "id-1", NOW), Err(CallbackRefusal::Replayed));
        assert_eq!(seen.admit(&b, "id-2", NOW), Ok(()));
        let c = verified(b"k", NOW + 1, b"c");
        assert_eq!(
            seen.admit(&c, "id-3", NOW + 1),
            Err(CallbackRefusal::TooMany)
        );
        assert_eq!(seen.len(), 2);
        // Once the first two are too old to be accepted anyway, they are forgotten.
        assert_eq!(seen.admit(&c, "id-3", NOW + 301), Ok(()));
        assert_eq!(seen.len(), 1);
    }

    proptest! {
        /// A signature verifies only for its own secret, direction and exact bytes.
        #[test]
        fn only_the_signed_bytes_verify(
            secret in proptest::collection::vec(any::<u8>(), 1..64),
            body in proptest::collection::vec(any::<u8>(), 0..128),
            flip in 0usize..1024,
        ) {
            let s = sign_answer(&secret, &body);
            prop_assert!(verify_answer(&secret, &body, &s));
            prop_assert!(!verify_request(&secret, &body, &s), "an answer is not a request");
            prop_assert!(!verify_answer(&secret, &body, &sign_request(&secret, &body)));
            let mut other = body.clone();
            if other.is_empty() { other.push(0) } else { let i = flip % other.len(); other[i] ^= 1 }
            prop_assert!(!verify_answer(&secret, &other, &s));
            let mut key = secret.clone();
            let i = flip % key.len();
            key[i] ^= 0x80;
            prop_assert!(!verify_answer(&key, &body, &s));
            prop_assert!(!verify_answer(&secret, &body, ""));
            prop_assert!(!verify_answer(&secret, &body, &s[..s.len() - 2]));
        }
    }
}
