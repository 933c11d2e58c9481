//! Decoding standard base64 (what Go writes for `[]byte`, as in a ConfigMap's `binaryData`), so
//! the detectors can read what it holds.

/// The bytes `text` encodes, or `None` when it is not standard base64 (padding optional).
/// The output is at most three quarters of the input: bounded by what the masker holds.
pub(crate) fn decode(text: &[u8]) -> Option<Vec<u8>> {
    let body = text
        .strip_suffix(b"==")
        .or_else(|| text.strip_suffix(b"="))
        .unwrap_or(text);
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 3);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &c in body {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // One base64 digit alone encodes no whole byte.
    (bits < 6).then_some(out)
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
