//! Decoding standard base64 (what Go writes for `[]byte`, as in a ConfigMap's `binaryData`), so
//! the detectors can read what it holds.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Go's encoding: the standard alphabet; padding optional (some writers drop it), and bits left
/// over in the last digit ignored (what matters is what a detector can read, not canonical form).
const STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The bytes `text` encodes, or `None` when it is not standard base64 (padding optional).
/// The output is at most three quarters of the input: bounded by what the masker holds.
pub(crate) fn decode(text: &[u8]) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_standard_base64() {
        assert_eq!(decode(b"aHVudGVyMg==").as_deref(), Some(&b"hunter2"[..]));
        assert_eq!(decode(b"aHVudGVyMg").as_deref(), Some(&b"hunter2"[..]));
        assert_eq!(decode(b"YWI=").as_deref(), Some(&b"ab"[..]));
        assert_eq!(decode(b"").as_deref(), Some(&b""[..]));
        assert_eq!(decode(b"a"), None);
        assert_eq!(decode(b"a b"), None);
        assert_eq!(decode(b"a-_b"), None);
    }
}
