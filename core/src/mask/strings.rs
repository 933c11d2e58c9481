//! JSON string escapes, decoded the way Go's encoding/json decodes them, and encoded back.

/// Decode the raw bytes between a JSON string's quotes. Invalid escapes are an error; a lone
/// surrogate becomes U+FFFD, as in Go.
pub(crate) fn unescape(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    if !raw.contains(&b'\\') {
        return Ok(raw.to_vec());
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        // The bytes up to the next escape are copied as they are, in one go.
        let rest = raw.get(i..).unwrap_or_default();
        let plain = memchr::memchr(b'\\', rest).unwrap_or(rest.len());
        out.extend_from_slice(&rest[..plain]);
        i += plain;
        if i >= raw.len() {
            break;
        }
        let e = *raw
            .get(i + 1)
            .ok_or("a string ends in the middle of an escape")?;
        i += 2;
        let simple = match e {
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            b'/' => Some(b'/'),
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'u' => None,
            _ => return Err("a string has an invalid escape"),
        };
        if let Some(s) = simple {
            out.push(s);
            continue;
        }
        let hi = hex4(raw.get(i..i + 4))?;
        i += 4;
        let ch = if (0xD800..0xDC00).contains(&hi) {
            let lo = match (raw.get(i), raw.get(i + 1)) {
                (Some(b'\\'), Some(b'u')) => hex4(raw.get(i + 2..i + 6)).ok(),
                _ => None,
            };
            match lo {
                Some(lo) if (0xDC00..0xE000).contains(&lo) => {
                    i += 6;
                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                }
                _ => None,
            }
        } else {
            char::from_u32(hi)
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.unwrap_or('\u{FFFD}').encode_utf8(&mut buf).as_bytes());
    }
    Ok(out)
}

fn hex4(b: Option<&[u8]>) -> Result<u32, &'static str> {
    let b = b.ok_or("a string has a short \\u escape")?;
    let mut v = 0u32;
    for &c in b {
        let d = (c as char)
            .to_digit(16)
            .ok_or("a string has an invalid \\u escape")?;
        v = v * 16 + d;
    }
    Ok(v)
}

/// Append `s` as a JSON string (with quotes). Only what JSON requires is escaped; other bytes,
/// UTF-8 included, pass through.
pub(crate) fn escape_into(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &c in s {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            c if c < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 15)]);
            }
            c => out.push(c),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() -> Result<(), &'static str> {
        assert_eq!(
            unescape(br#"a\"b\\c\/\n\u0041\u00e9\ud83d\ude00"#)?,
            "a\"b\\c/\nAé😀".as_bytes()
        );
        assert_eq!(unescape(br"\ud800x")?, "\u{FFFD}x".as_bytes());
        assert!(unescape(br"\x").is_err());
        assert!(unescape(br"\u12").is_err());
        let mut out = Vec::new();
        escape_into("a\"\\\n\u{1}é".as_bytes(), &mut out);
        assert_eq!(out, "\"a\\\"\\\\\\n\\u0001é\"".as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod props {
    use super::*;

    proptest::proptest! {
        /// Decoding agrees with serde_json on every string it writes (escaped quotes,
        /// backslashes, controls, any Unicode), and on the same text with every character
        /// written as a `\u` escape, surrogate pairs included.
        #[test]
        fn decodes_as_serde_json_does(text in ".{0,40}") {
            let Ok(json) = serde_json::to_string(&text) else { return Ok(()) };
            let raw = json.as_bytes().get(1..json.len() - 1).unwrap_or_default();
            proptest::prop_assert_eq!(unescape(raw), Ok(text.as_bytes().to_vec()));
            let mut all = String::new();
            for unit in text.encode_utf16() {
                all.push_str(&format!("\\u{unit:04x}"));
            }
            proptest::prop_assert_eq!(unescape(all.as_bytes()), Ok(text.as_bytes().to_vec()));
        }
    }
}
