//! The keyword prefilter: which parts of a text are worth running the regexes on.
//!
//! Three steps, all ASCII case-insensitive:
//!
//! 1. A sampled 4-gram bitmap. At every even offset of the text the 4 bytes there are
//!    case-folded (`| 0x20`), hashed, and tested in a 32 KiB bitmap that holds, for every
//!    keyword, its 4-grams at two consecutive offsets. Whatever the parity of a keyword's
//!    position, one of those two grams sits at an even offset, so testing every other position
//!    misses nothing. The two offsets are chosen where the keyword is rare in ordinary text
//!    (`client-key-data` is held as `ey-d`/`y-da`, not `clie`/`lien`, which every `client` in
//!    a log would trip). Where a keyword is too short, a gram's missing byte comes from a byte
//!    class the keyword declares (the byte after `ghp_` is alphanumeric, the byte before `hf_`
//!    is not a word byte); every regex relying on the keyword implies that class. The loop
//!    reads 8 bytes at a time and keeps no state from one position to the next, so it runs at
//!    several GB/s, where an automaton stepping through every byte (Aho-Corasick's DFA over
//!    these keywords, case-insensitive, which rules out its SIMD prefilter) runs at 0.7.
//! 2. Where the bitmap says maybe, a second bitmap with another hash, then an exact table of
//!    the grams gives the candidate keywords, compared in full.
//! 3. Each keyword's guard (a cheap check of the bytes after it: an assignment follows, a
//!    space and a token follow, 36 alphanumerics follow, ...) drops the common words that are
//!    not followed by anything secret.

use super::DetectorError;

/// log2 of the number of bits in each gram bitmap: 2^18 bits = 32 KiB. The first bitmap is
/// tested at every sampled offset; the second, with another hash, only where the first says
/// maybe, so that hash collisions (about 1% per gram with ~2,000 grams) rarely reach the
/// automaton.
const BITS: u32 = 18;
const WORDS: usize = 1 << (BITS - 6);
const FOLD32: u32 = 0x2020_2020;
const FOLD64: u64 = 0x2020_2020_2020_2020;

/// A set of bytes, for the bytes next to a short keyword and for guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// `[A-Za-z0-9]`
    Alnum,
    /// `[A-Za-z]`
    Alpha,
    /// `[0-9]`
    Digit,
    /// `[0-9A-Fa-f]`
    Hex,
    /// `[A-Za-z0-9+/]`
    B64,
    /// `[A-Za-z0-9_-]`
    B64Url,
    /// `[A-Z2-7]`, the alphabet of AWS key ids.
    Upper32,
    /// Not `[A-Za-z0-9_]`: what `\b` before a word byte requires.
    NonWord,
    /// Not `[A-Za-z]`.
    NotAlpha,
    /// `[A-Za-z0-9+.-]`, URL scheme bytes.
    Scheme,
    /// What may follow `://` in a URL with a user: a user byte or `:`.
    UserInfo,
    /// What may follow a key before its value: `\ " ' space tab : = >`.
    AssignStart,
    /// `.` or `-`.
    DotDash,
    /// `[A-Za-z0-9._~+/-]`, the token68 of an HTTP `Authorization` header.
    Token68,
}

impl Class {
    pub(crate) fn has(self, b: u8) -> bool {
        match self {
            Class::Alnum => b.is_ascii_alphanumeric(),
            Class::Alpha => b.is_ascii_alphabetic(),
            Class::Digit => b.is_ascii_digit(),
            Class::Hex => b.is_ascii_hexdigit(),
            Class::B64 => b.is_ascii_alphanumeric() || b == b'+' || b == b'/',
            Class::B64Url => b.is_ascii_alphanumeric() || b == b'_' || b == b'-',
            Class::Upper32 => b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b),
            Class::NonWord => !(b.is_ascii_alphanumeric() || b == b'_'),
            Class::NotAlpha => !b.is_ascii_alphabetic(),
            Class::Scheme => b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-'),
            Class::UserInfo => {
                !(b.is_ascii_whitespace()
                    || matches!(
                        b,
                        b'/' | b'"' | b'\'' | b'<' | b'>' | b'\\' | b'?' | b'#' | b'@'
                    ))
            }
            Class::AssignStart => {
                matches!(b, b'\\' | b'"' | b'\'' | b' ' | b'\t' | b':' | b'=' | b'>')
            }
            Class::DotDash => b == b'.' || b == b'-',
            Class::Token68 => {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'+' | b'/' | b'-')
            }
        }
    }
}

/// What must follow a keyword for its region to be worth a regex search. Every guard is implied
/// by every pattern the keyword serves (checked by the positive samples in the tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guard {
    /// Nothing.
    None,
    /// An assignment: optional `\`, optional closing quote, spaces or tabs, then `:`, `=` or
    /// `>` (`password=`, `"password": `, `<password>`); or a tab then a value
    /// (`password<TAB>x`); or spaces then `is` or `was` (`the password is x`).
    Assign,
    /// A space or a tab (`Bearer tok`, `--password value`; `=` too, for `--password=value`).
    Space,
    /// The user-info of a URL with a password: before the first `@`, a `:`, with no space,
    /// quote, `/`, `<`, `>` or `\` on the way.
    Url,
    /// At least this many bytes of the class.
    Tail(Class, u16),
    /// Spaces or tabs (at least one), then at least this many bytes of the class
    /// (`Bearer <token>`, not `Bearer realm=`).
    SpaceThen(Class, u16),
}

impl Guard {
    fn check(self, text: &[u8], end: usize) -> bool {
        let rest = text.get(end..).unwrap_or_default();
        match self {
            Guard::None => true,
            Guard::Assign => {
                let mut j = 0;
                if rest.get(j) == Some(&b'\\') {
                    j += 1;
                }
                if matches!(rest.get(j), Some(b'"' | b'\'')) {
                    j += 1;
                }
                let gap = j;
                while matches!(rest.get(j), Some(b' ' | b'\t')) {
                    j += 1;
                }
                if matches!(rest.get(j), Some(b':' | b'=' | b'>')) {
                    return true;
                }
                // Tab-separated (`password<TAB>value`) and prose (`password is value`).
                let word = rest.get(j..).unwrap_or_default();
                let prose = [&b"is"[..], b"was"].iter().any(|w| {
                    word.len() > w.len()
                        && word[..w.len()].eq_ignore_ascii_case(w)
                        && matches!(word[w.len()], b' ' | b'\t' | b':')
                });
                (rest.get(gap) == Some(&b'\t')
                    && word.first().is_some_and(|b| !b.is_ascii_whitespace()))
                    || (j > gap && prose)
            }
            Guard::Space => matches!(rest.first(), Some(b' ' | b'\t' | b'=')),
            Guard::Url => {
                let mut colon = false;
                for &c in rest.iter().take(600) {
                    match c {
                        b'@' => return colon,
                        b':' => colon = true,
                        b'/' | b'"' | b'\'' | b'<' | b'>' | b'\\' => return false,
                        c if c.is_ascii_whitespace() => return false,
                        _ => {}
                    }
                }
                false
            }
            Guard::Tail(class, n) => tail(rest, class, n),
            Guard::SpaceThen(class, n) => {
                let spaces = rest
                    .iter()
                    .take_while(|&&b| b == b' ' || b == b'\t')
                    .count();
                spaces > 0 && tail(&rest[spaces..], class, n)
            }
        }
    }
}

fn tail(rest: &[u8], class: Class, n: u16) -> bool {
    let n = usize::from(n);
    rest.len() >= n && rest[..n].iter().all(|&b| class.has(b))
}

/// A keyword: a literal (matched ASCII case-insensitively) whose presence any match of the
/// detector's patterns implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kw {
    /// Lowercase literal, at least 3 bytes.
    pub(crate) lit: &'static str,
    /// Class of the byte before the literal (3-byte literals need it, or `next`).
    pub(crate) prev: Option<Class>,
    /// Class of the byte after the literal (3- and 4-byte literals need it).
    pub(crate) next: Option<Class>,
    /// What must follow.
    pub(crate) guard: Guard,
    /// How far before the keyword a match may start; the region searched starts at the line
    /// start or this many bytes before the keyword, whichever is later.
    pub(crate) back: u16,
    /// Offset of the first of the two grams the bitmap holds (-1 starts at the `prev` byte);
    /// `None` for the default (0, or -1 for 3-byte literals and 4-byte ones without `next`).
    /// Chosen where the keyword is rare in ordinary text: `client-key-data` is found by
    /// `y-da`, not by `clie`, which every `client` in a log would trip.
    pub(crate) at: Option<i8>,
}

/// A keyword with the defaults: no classes, no guard, 64 bytes back.
pub(crate) const fn kw(lit: &'static str) -> Kw {
    Kw {
        lit,
        prev: None,
        next: None,
        guard: Guard::None,
        back: 64,
        at: None,
    }
}

impl Kw {
    pub(crate) const fn prev(mut self, c: Class) -> Kw {
        self.prev = Some(c);
        self
    }
    pub(crate) const fn next(mut self, c: Class) -> Kw {
        self.next = Some(c);
        self
    }
    pub(crate) const fn guard(mut self, g: Guard) -> Kw {
        self.guard = g;
        self
    }
    /// Guard and next class in one: at least `n` bytes of `c` follow.
    pub(crate) const fn tail(mut self, c: Class, n: u16) -> Kw {
        self.guard = Guard::Tail(c, n);
        if self.next.is_none() {
            self.next = Some(c);
        }
        self
    }
    pub(crate) const fn back(mut self, n: u16) -> Kw {
        self.back = n;
        self
    }
    pub(crate) const fn at(mut self, offset: i8) -> Kw {
        self.at = Some(offset);
        self
    }
}

/// A keyword found in a text, after its guard.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hit {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) back: usize,
}

/// One keyword gram in the exact table: the folded gram, its keyword, and its offset in the
/// keyword (-1 when it starts at the byte before).
#[derive(Debug, Clone, Copy)]
struct Entry {
    gram: u32,
    kw: u16,
    off: i8,
}

const EMPTY: Entry = Entry {
    gram: 0,
    kw: u16::MAX,
    off: 0,
};

/// The compiled prefilter.
#[derive(Clone)]
pub(crate) struct Prefilter {
    bits: Box<[u64; WORDS]>,
    bits2: Box<[u64; WORDS]>,
    /// Open addressing, linear probing, `EMPTY` ends a chain; a power of two at least twice the
    /// number of grams.
    table: Vec<Entry>,
    table_shift: u32,
    kws: Vec<Kw>,
}

impl std::fmt::Debug for Prefilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefilter")
            .field("keywords", &self.kws.len())
            .field("bitmap_fill", &self.fill())
            .finish()
    }
}

#[inline(always)]
fn slot(gram: u32) -> usize {
    (gram.wrapping_mul(0x9E37_79B1) >> (32 - BITS)) as usize
}

#[inline(always)]
fn slot2(gram: u32) -> usize {
    ((gram ^ (gram >> 15)).wrapping_mul(0x85EB_CA77) >> (32 - BITS)) as usize
}

fn fold_set(class: Class) -> Vec<u8> {
    let mut seen = [false; 256];
    let mut out = Vec::new();
    for b in 0..=255u8 {
        let f = b | 0x20;
        if class.has(b) && !seen[usize::from(f)] {
            seen[usize::from(f)] = true;
            out.push(f);
        }
    }
    out
}

impl Prefilter {
    /// Keywords with the same literal are merged: classes united, the weaker guard kept, the
    /// longest reach back kept.
    pub(crate) fn new(keywords: &[Kw]) -> Result<Prefilter, DetectorError> {
        let mut kws: Vec<Kw> = Vec::new();
        for k in keywords {
            let lit_ok = (3..=64).contains(&k.lit.len())
                && k.lit
                    .bytes()
                    .all(|b| b.is_ascii() && !b.is_ascii_uppercase());
            if !lit_ok {
                return Err(DetectorError::Build(format!(
                    "keyword `{}` must be lowercase ASCII of 3 to 64 bytes",
                    k.lit
                )));
            }
            match kws.iter_mut().find(|o| o.lit == k.lit) {
                None => kws.push(*k),
                Some(o) => {
                    o.prev = merge_class(o.prev, k.prev);
                    o.next = merge_class(o.next, k.next);
                    if o.guard != k.guard {
                        o.guard = Guard::None;
                    }
                    o.back = o.back.max(k.back);
                    o.at = o.at.or(k.at);
                }
            }
        }
        if kws.len() >= usize::from(u16::MAX) {
            return Err(DetectorError::Build("too many keywords".into()));
        }
        let mut bits: Box<[u64; WORDS]> = Box::new([0; WORDS]);
        let mut bits2: Box<[u64; WORDS]> = Box::new([0; WORDS]);
        let mut entries = Vec::new();
        for (i, k) in kws.iter().enumerate() {
            for (gram, off) in grams(k)? {
                let s = slot(gram);
                bits[s >> 6] |= 1 << (s & 63);
                let s = slot2(gram);
                bits2[s >> 6] |= 1 << (s & 63);
                let kw = u16::try_from(i)
                    .map_err(|_| DetectorError::Build("too many keywords".into()))?;
                entries.push(Entry { gram, kw, off });
            }
        }
        let size = (entries.len() * 2).next_power_of_two().max(16);
        let table_shift = 32 - size.trailing_zeros();
        let mut table = vec![EMPTY; size];
        for e in entries {
            let mut at = table_index(e.gram, table_shift);
            while table[at].kw != u16::MAX {
                at = (at + 1) & (size - 1);
            }
            table[at] = e;
        }
        Ok(Prefilter {
            bits,
            bits2,
            table,
            table_shift,
            kws,
        })
    }

    /// The keywords (merged), in hit order, with the neighbour classes their grams use: a
    /// keyword is found only where its neighbours are in these classes.
    #[cfg(test)]
    pub(crate) fn keywords(&self) -> Vec<(&'static str, Option<Class>, Option<Class>)> {
        self.kws
            .iter()
            .map(|k| {
                let first = first_offset(k);
                let prev = if first == -1 { k.prev } else { None };
                let next = if first + 4 == k.lit.len() as isize {
                    k.next
                } else {
                    None
                };
                (k.lit, prev, next)
            })
            .collect()
    }

    /// Number of keywords.
    pub(crate) fn len(&self) -> usize {
        self.kws.len()
    }

    /// Keyword literals, in the order hits report them.
    pub(crate) fn literal(&self, k: usize) -> &'static str {
        self.kws.get(k).map_or("", |k| k.lit)
    }

    /// Share of the bitmap's bits that are set (the filter's false-positive rate on random text).
    pub(crate) fn fill(&self) -> f64 {
        let ones: u32 = self.bits.iter().map(|w| w.count_ones()).sum();
        f64::from(ones) / f64::from(1u32 << BITS)
    }

    #[inline(always)]
    fn test(&self, gram: u32) -> bool {
        let s = slot(gram);
        (self.bits[s >> 6] >> (s & 63)) & 1 != 0
    }

    #[inline(always)]
    fn test2(&self, gram: u32) -> bool {
        let s = slot2(gram);
        (self.bits2[s >> 6] >> (s & 63)) & 1 != 0
    }

    /// Call `hit(keyword, hit, guarded)` for every keyword in `text`, with whether its guard
    /// holds. Hits come in order of the sampled gram that found them, not strictly by start.
    #[inline]
    pub(crate) fn scan(&self, text: &[u8], hit: &mut impl FnMut(usize, Hit, bool)) {
        if self.kws.is_empty() {
            return;
        }
        let mut i = 0;
        while let Some(c) = text.get(i..).and_then(|t| t.first_chunk::<10>()) {
            let [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9] = *c;
            let w = u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]) | FOLD64;
            let w2 = u32::from_le_bytes([a6, a7, a8, a9]) | FOLD32;
            let grams = [w as u32, (w >> 16) as u32, (w >> 32) as u32, w2];
            let maybe = self.test(grams[0])
                | self.test(grams[1])
                | self.test(grams[2])
                | self.test(grams[3]);
            if maybe {
                self.chunk(text, i, grams, hit);
            }
            i += 8;
        }
        while let Some(&[b0, b1, b2, b3]) = text.get(i..).and_then(|t| t.first_chunk::<4>()) {
            let gram = u32::from_le_bytes([b0, b1, b2, b3]) | FOLD32;
            if self.test(gram) && self.test2(gram) {
                self.verify(text, i, gram, hit);
            }
            i += 2;
        }
    }

    /// A chunk the first bitmap flagged: the second bitmap, then the exact table.
    #[inline(never)]
    fn chunk(
        &self,
        text: &[u8],
        i: usize,
        grams: [u32; 4],
        hit: &mut impl FnMut(usize, Hit, bool),
    ) {
        for (k, &g) in grams.iter().enumerate() {
            if self.test(g) && self.test2(g) {
                self.verify(text, i + 2 * k, g, hit);
            }
        }
    }

    /// The keywords whose gram `gram` sits at `at` in `text`, compared in full.
    #[inline(never)]
    fn verify(&self, text: &[u8], at: usize, gram: u32, hit: &mut impl FnMut(usize, Hit, bool)) {
        let mask = self.table.len() - 1;
        let mut t = table_index(gram, self.table_shift);
        while let Some(e) = self.table.get(t).filter(|e| e.kw != u16::MAX) {
            t = (t + 1) & mask;
            if e.gram != gram {
                continue;
            }
            let Some(kw) = self.kws.get(usize::from(e.kw)) else {
                continue;
            };
            let Some(start) = at.checked_add_signed(-isize::from(e.off)) else {
                continue;
            };
            let end = start + kw.lit.len();
            let Some(found) = text.get(start..end) else {
                continue;
            };
            if found.eq_ignore_ascii_case(kw.lit.as_bytes()) {
                let ok = kw.guard.check(text, end);
                hit(
                    usize::from(e.kw),
                    Hit {
                        start,
                        end,
                        back: usize::from(kw.back),
                    },
                    ok,
                );
            }
        }
    }
}

#[inline(always)]
fn table_index(gram: u32, shift: u32) -> usize {
    (gram.wrapping_mul(0x2545_F491) >> shift) as usize
}

fn merge_class(a: Option<Class>, b: Option<Class>) -> Option<Class> {
    match (a, b) {
        (Some(x), Some(y)) if x == y => Some(x),
        // Different classes for one literal: the byte may be anything. Only reachable if two
        // detectors share a short literal with different neighbours; `grams` then refuses it.
        (Some(_), Some(_)) => None,
        (x, None) | (None, x) => x,
    }
}

/// Offset of the first of a keyword's two grams.
fn first_offset(k: &Kw) -> isize {
    let len = k.lit.len() as isize;
    match k.at {
        Some(o) => isize::from(o),
        None if len >= 5 || (len == 4 && k.next.is_some()) => 0,
        None => -1,
    }
}

/// The folded 4-grams of a keyword, each with its offset in the keyword.
fn grams(k: &Kw) -> Result<Vec<(u32, i8)>, DetectorError> {
    let lit: Vec<u8> = k.lit.bytes().map(|b| b | 0x20).collect();
    let len = lit.len() as isize;
    // Grams may start from -1 (with a class for the byte before) to len-4 (len-3 with a class
    // for the byte after).
    let lo: isize = if k.prev.is_some() { -1 } else { 0 };
    let hi: isize = len - 4 + isize::from(k.next.is_some());
    let first = first_offset(k);
    if first < lo || first + 1 > hi {
        return Err(DetectorError::Build(format!(
            "keyword `{}`: grams at {first} and {} need more bytes or a class for its neighbours",
            k.lit,
            first + 1
        )));
    }
    let offsets = [first, first + 1];
    let prev = k.prev.map(fold_set).unwrap_or_default();
    let next = k.next.map(fold_set).unwrap_or_default();
    let mut out = Vec::new();
    for o in offsets {
        let mut sets: Vec<Vec<u8>> = Vec::with_capacity(4);
        for j in 0..4 {
            let pos = o + j;
            let set = if pos == -1 {
                prev.clone()
            } else if pos == len {
                next.clone()
            } else if let Some(&b) = usize::try_from(pos).ok().and_then(|p| lit.get(p)) {
                vec![b]
            } else {
                Vec::new()
            };
            if set.is_empty() {
                return Err(DetectorError::Build(format!(
                    "keyword `{}`: no bytes for gram position {pos}",
                    k.lit
                )));
            }
            sets.push(set);
        }
        for &x0 in &sets[0] {
            for &x1 in &sets[1] {
                for &x2 in &sets[2] {
                    for &x3 in &sets[3] {
                        out.push((u32::from_le_bytes([x0, x1, x2, x3]), o as i8));
                    }
                }
            }
        }
    }
    Ok(out)
}
