//! Finding the bytes the masker must stop at (a string's closing quote or an escape), a word at
//! a time.
//!
//! Strings in Kubernetes objects are short (names, timestamps, UIDs, label values): a vector
//! search's set-up costs more than reading them eight bytes at a time, so the first
//! [`SHORT`] bytes are read that way and only a longer string (a certificate, a Secret's
//! value, a log line) goes to memchr's vectorised search. No `unsafe`: the words are built
//! with `u64::from_le_bytes`.
//!
//! The word test is the classic "has a zero byte" trick on `word ^ pattern`: it can flag a
//! byte above a real match (a borrow runs upwards), never one below, so the lowest flagged
//! byte is always a real match and "any flag" means "some match". The tests check both paths
//! against a byte-at-a-time reading on every input proptest makes.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// How far the word-at-a-time reading goes before handing over to memchr.
const SHORT: usize = 64;

/// The bytes of `w` equal to `b`, flagged in their top bit (exact for the lowest; see above).
#[inline(always)]
fn eq_byte(w: u64, b: u8) -> u64 {
    let x = w ^ (LO * u64::from(b));
    x.wrapping_sub(LO) & !x & HI
}

#[inline(always)]
fn word(bytes: &[u8], at: usize) -> Option<u64> {
    bytes
        .get(at..)
        .and_then(|t| t.first_chunk::<8>())
        .map(|c| u64::from_le_bytes(*c))
}

/// Where the first `a` or `b` is in `bytes[from..]`, as an index into `bytes`. Inlined into
/// every caller (the masker's inner loops), with the long-string search out of line.
#[inline(always)]
pub(crate) fn find2(a: u8, b: u8, bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    let short_end = from.saturating_add(SHORT);
    while i < short_end {
        let Some(w) = word(bytes, i) else {
            let tail = bytes.get(i..)?;
            return tail.iter().position(|&c| c == a || c == b).map(|p| i + p);
        };
        let m = eq_byte(w, a) | eq_byte(w, b);
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    find2_long(a, b, bytes, i)
}

#[inline(never)]
fn find2_long(a: u8, b: u8, bytes: &[u8], i: usize) -> Option<usize> {
    memchr::memchr2(a, b, bytes.get(i..)?).map(|p| i + p)
}

/// Whether `bytes` holds an `a` or a `b`.
#[inline]
pub(crate) fn contains2(a: u8, b: u8, bytes: &[u8]) -> bool {
    find2(a, b, bytes, 0).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(a: u8, b: u8, bytes: &[u8], from: usize) -> Option<usize> {
        bytes
            .get(from..)?
            .iter()
            .position(|&c| c == a || c == b)
            .map(|p| from + p)
    }

    #[test]
    fn finds_at_every_offset_and_past_the_short_run() {
        for len in 0..200 {
            for at in 0..len {
                let mut v = vec![b'x'; len];
                v[at] = b'"';
                for from in [0, 1, 7, 8, 63, 64, 65] {
                    assert_eq!(
                        find2(b'"', b'\\', &v, from),
                        naive(b'"', b'\\', &v, from),
                        "len {len} at {at} from {from}"
                    );
                }
            }
        }
        // A borrow from a match must not hide or fake an earlier one.
        assert_eq!(find2(b'"', b'\\', b"\x21\x22abcdef", 0), Some(1));
        assert_eq!(find2(b'"', b'\\', b"\x23\x22\x5c\x5d", 0), Some(1));
        assert_eq!(find2(b'"', b'\\', b"abc", 5), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn agrees_with_a_byte_at_a_time_reading(
            bytes in proptest::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), Just(b'%'), Just(0x1bu8), any::<u8>()],
                0..300,
            ),
            from in 0usize..320,
            sparse in 0usize..4,
        ) {
            // Mostly ordinary bytes, sometimes dense with targets.
            let bytes: Vec<u8> = bytes
                .iter()
                .enumerate()
                .map(|(i, &c)| if sparse > 0 && i % (sparse * 37) != 0 { c | 0x40 } else { c })
                .collect();
            for (a, b) in [(b'"', b'\\'), (b'%', 0x1b)] {
                prop_assert_eq!(find2(a, b, &bytes, from), naive(a, b, &bytes, from));
                prop_assert_eq!(contains2(a, b, &bytes), naive(a, b, &bytes, 0).is_some());
            }
        }
    }
}
