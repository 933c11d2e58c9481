//! Signatures for approvals that travel over a network: a remote approver (a webhook, a chat
//! bot) and kubeleash share a secret, and each side signs what it sends with HMAC-SHA256, so
//! that whoever can reach the approver's URL, or answer in its place, can neither approve nor
//! learn to forge an approval.
//!
//! What is signed, as `sha256=<lowercase hex>`:
//!
//! - a request: HMAC-SHA256(secret, `kubeleash-approval-request\n` ‖ the exact body bytes sent);
//! - an answer: HMAC-SHA256(secret, `kubeleash-approval-answer\n` ‖ the exact body bytes of the
//!   answer), where the answer must carry the `id` of the request it answers.
//!
//! The two prefixes keep a signed request from passing for a signed answer. Verification is in
//! constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The HTTP header that carries a signature, both ways.
pub const SIGNATURE_HEADER: &str = "x-kubeleash-signature";

const REQUEST: &[u8] = b"kubeleash-approval-request\n";
const ANSWER: &[u8] = b"kubeleash-approval-answer\n";

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

#[cfg(test)]
mod tests {
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
