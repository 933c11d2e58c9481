//! Text as a reader sees it, for the detectors: honest programs write secrets in encodings the
//! detectors' patterns do not read (keys coloured with ANSI escapes, JSON-escaped base64 and JWT
//! dots, `password%3D...` in URL-encoded strings).
//!
//! [`find`] runs the detectors over the text as it is and, when it holds an escape, a `%` or an
//! ESC byte, over a normalized copy too: CSI and OSC terminal sequences removed, JSON escapes
//! (`\/`, `\"`, `\\`, `\n`, `\uXXXX` with surrogate pairs) and percent-encoding (`%XX`)
//! decoded, then terminal sequences the decoding revealed (`\u001b[31m`) removed. Every
//! normalized byte remembers the range of original bytes it came from, so a span found in the
//! copy masks the whole original encoded form of the secret; bytes outside spans are never
//! touched. One layer of each encoding is decoded.

use super::detect::{Detectors, Span};

/// Normalized text and, per byte, the original range `[start, end)` it came from.
struct Normalized {
    text: Vec<u8>,
    from: Vec<(usize, usize)>,
}

const ESC: u8 = 0x1b;

fn hex(b: u8) -> Option<u32> {
    char::from(b).to_digit(16)
}

/// The length of a terminal escape sequence starting at `t[0] == ESC`: CSI (`ESC [` params
/// final), OSC (`ESC ]` ... BEL or `ESC \`), or a two-byte escape.
fn escape_len(t: &[u8]) -> usize {
    match t.get(1) {
        Some(b'[') => {
            let mut j = 2;
            while t.get(j).is_some_and(|b| (0x20..=0x3f).contains(b)) && j < 64 {
                j += 1;
            }
            if t.get(j).is_some_and(|b| (0x40..=0x7e).contains(b)) {
                j + 1
            } else {
                j
            }
        }
        Some(b']') => {
            let mut j = 2;
            while j < t.len() && j < 512 {
                if t[j] == 0x07 {
                    return j + 1;
                }
                if t[j] == ESC && t.get(j + 1) == Some(&b'\\') {
                    return j + 2;
                }
                j += 1;
            }
            j
        }
        Some(_) => 2,
        None => 1,
    }
}

/// `\uXXXX` at `t[0] == '\\'`: the code unit.
fn unit(t: &[u8]) -> Option<u32> {
    if t.get(1) != Some(&b'u') || t.len() < 6 {
        return None;
    }
    t[2..6]
        .iter()
        .try_fold(0u32, |acc, &b| Some(acc * 16 + hex(b)?))
}

/// One pass: strip terminal sequences, and (with `decode`) decode JSON escapes and `%XX`.
/// Returns the text and, per byte, its range in `t`.
fn pass(t: &[u8], decode: bool) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut text = Vec::with_capacity(t.len());
    let mut from = Vec::with_capacity(t.len());
    let mut i = 0;
    while i < t.len() {
        let c = t[i];
        if c == ESC {
            i += escape_len(&t[i..]);
            continue;
        }
        if decode && c == b'\\' {
            if let Some(u) = unit(&t[i..]) {
                let (cp, used) = match (u, unit(&t[i + 6..])) {
                    (0xD800..=0xDBFF, Some(lo @ 0xDC00..=0xDFFF)) => {
                        (0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00), 12)
                    }
                    _ => (u, 6),
                };
                if let Some(ch) = char::from_u32(cp) {
                    let mut buf = [0u8; 4];
                    for &b in ch.encode_utf8(&mut buf).as_bytes() {
                        text.push(b);
                        from.push((i, i + used));
                    }
                    i += used;
                    continue;
                }
            }
            let decoded = match t.get(i + 1) {
                Some(&e @ (b'/' | b'\\' | b'"' | b'\'')) => Some(e),
                Some(b'n') => Some(b'\n'),
                Some(b't') => Some(b'\t'),
                Some(b'r') => Some(b'\r'),
                Some(b'b') => Some(0x08),
                Some(b'f') => Some(0x0c),
                _ => None,
            };
            if let Some(d) = decoded {
                text.push(d);
                from.push((i, i + 2));
                i += 2;
                continue;
            }
        }
        if decode
            && c == b'%'
            && let (Some(h), Some(l)) = (
                t.get(i + 1).copied().and_then(hex),
                t.get(i + 2).copied().and_then(hex),
            )
        {
            // Two hex digits make one byte.
            text.push(((h << 4) | l) as u8);
            from.push((i, i + 3));
            i += 3;
            continue;
        }
        text.push(c);
        from.push((i, i + 1));
        i += 1;
    }
    (text, from)
}

fn normalize(t: &[u8]) -> Normalized {
    let (text, from) = pass(t, true);
    if memchr::memchr(ESC, &text).is_none() {
        return Normalized { text, from };
    }
    // Decoding revealed terminal sequences (`\u001b[1m`): strip them, composing the ranges.
    let (text2, from2) = pass(&text, false);
    let from = from2
        .iter()
        .map(|&(s, e)| {
            let start = from.get(s).map_or(0, |r| r.0);
            let end = e
                .checked_sub(1)
                .and_then(|l| from.get(l))
                .map_or(start, |r| r.1);
            (start, end)
        })
        .collect();
    Normalized { text: text2, from }
}

/// Whether `text` holds anything [`normalize`] would change.
fn needs(text: &[u8]) -> bool {
    memchr::memchr3(ESC, b'\\', b'%', text).is_some()
}

/// Append the spans to mask in `text` (sorted, non-overlapping): what the detectors find in it
/// as it is, and in its normalized form, mapped back to the original bytes.
///
/// `maybe_encoded` false says the caller knows `text` has no escape, `%` or ESC.
pub(crate) fn find(detectors: &Detectors, text: &[u8], maybe_encoded: bool, out: &mut Vec<Span>) {
    let base = out.len();
    detectors.find(text, out);
    if !maybe_encoded || !needs(text) {
        return;
    }
    let n = normalize(text);
    if n.text.len() == text.len() && n.text == text {
        return;
    }
    let mut found = Vec::new();
    detectors.find(&n.text, &mut found);
    if found.is_empty() {
        return;
    }
    for s in found {
        let (Some(first), Some(last)) = (
            n.from.get(s.start),
            s.end.checked_sub(1).and_then(|l| n.from.get(l)),
        ) else {
            continue;
        };
        if first.0 < last.1 {
            out.push(Span {
                start: first.0,
                end: last.1,
                detector: s.detector,
            });
        }
    }
    let tail = &mut out[base..];
    tail.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut w = base;
    for r in base..out.len() {
        let s = out[r];
        if w > base && s.start < out[w - 1].end {
            out[w - 1].end = out[w - 1].end.max(s.end);
        } else {
            out[w] = s;
            w += 1;
        }
    }
    out.truncate(w);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> (String, Vec<(usize, usize)>) {
        let n = normalize(s.as_bytes());
        (String::from_utf8_lossy(&n.text).into_owned(), n.from)
    }

    #[test]
    fn strips_terminal_sequences() {
        assert_eq!(norm("\x1b[36mpassword\x1b[0m=x").0, "password=x");
        assert_eq!(norm("\x1b]0;title\x07ok").0, "ok");
    }

    #[test]
    fn decodes_json_escapes_and_percent() {
        let (t, from) = norm(r"a\/b\u002Bc%3Dd");
        assert_eq!(t, "a/b+c=d");
        assert_eq!(from[1], (1, 3));
        assert_eq!(from[3], (4, 10));
        assert_eq!(from[5], (11, 14));
        assert_eq!(norm(r"\ud83d\ude00").0, "\u{1F600}");
        assert_eq!(norm(r"\u001b[31mpassword\u001b[0m=x").0, "password=x");
        // Not an escape: left as it is.
        assert_eq!(norm(r"100% \q %zz").0, r"100% \q %zz");
    }
}
