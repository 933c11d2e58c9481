//! Secret detectors over free text: private keys, cloud and SaaS tokens, JWTs, kubeconfig
//! credentials, generic `password=...` assignments.
//!
//! # How a text is searched
//!
//! gitleaks-style, in three steps, so that ordinary text costs little more than reading it:
//!
//! 1. **Keywords.** Every detector names literals that any match of it contains (`ghp_`,
//!    `private key-----`, `password`, `://`, ...), matched ASCII case-insensitively. A sampled
//!    4-gram bitmap finds the places where a keyword may be, an exact table of keyword grams
//!    confirms the keyword there, and a per-keyword guard checks the next bytes (`password`
//!    must be followed by an assignment, `ghp_` by 36 alphanumerics, `://` by
//!    `user:password@`). The private `prefilter` module has the details.
//! 2. **Regions.** Each surviving keyword opens a region: its line, but at most
//!    [`MAX_BACK`]-ish bytes before it (per keyword) and [`FORWARD`] bytes after it.
//! 3. **Regexes.** One regex-automata multi-pattern regex (every enabled detector) runs over the
//!    regions only, with the whole text as haystack so that `\b` and `^` see the real
//!    neighbours. Captures are resolved on the match only. Each match is checked
//!    (placeholders, base64 `user:password`, ...) and may grow (a PEM block runs to its END).
//!
//! Spans come out sorted by start and non-overlapping (overlaps are merged; a merged span keeps
//! the detector of its first part).
//!
//! # Generic assignments
//!
//! `password`, `passwd`, `passphrase`, `pwd`, `secret`, `api_key`/`apikey`/`api-key`,
//! `*_token`/`token`, `secret_key`/`private_key`/`signing_key`/... in `k=v`, `k: v`, `k := v`,
//! `k => v`, `"k": "v"`, `\"k\":\"v\"` (escaped JSON), `'k': 'v'`, `<k>v</k>` and env style
//! `K_PASSWORD=v`. Only the value is masked, so a reader still sees which setting it was. A
//! value is left alone when it has fewer than 4 non-space bytes or is an obvious placeholder:
//! see [`is_placeholder`]. An unquoted value ends at whitespace, a quote, `` ` ``, `,`, `;`,
//! `&`, `<`, `>` or `\` (an escaped `\\` continues it), and does not start with a bracket,
//! brace or parenthesis (`"f:password":{}` is structure, not a value).
//!
//! Tab-separated (`password<TAB>value`) and prose (`the password is value`, not `is
//! required`) forms are found too (`prose-credential`), as are command-line flags whose name
//! ends in a credential word (`--db-pass X`, Go-style `-password X`) and the short flags of
//! tools that take credentials (`curl -u user:pass`, `mysql -pPASS`, `redis-cli -a X`,
//! `docker login -p X`, `sshpass -p X`).
//!
//! The masker does not call [`Detectors::find`] on raw text alone: it also runs it over a
//! normalized copy (terminal escapes removed, JSON escapes and percent-encoding decoded) and
//! maps the spans back, so that `\u001b[36mpassword\u001b[0m=x`, `password%3Dx` and a JWT with
//! `\u002e` for its dots are masked whole in their original bytes.

mod defs;
mod prefilter;

use std::sync::Arc;

use regex_automata::meta::Regex;
use regex_automata::util::captures::Captures;
use regex_automata::util::pool::Pool;
use regex_automata::util::syntax;
use regex_automata::{Input, PatternID};
use thiserror::Error;

use defs::{ASSIGN, DEFS, Pat, Post, VALUE};
use prefilter::{Hit, Prefilter};

/// Where a detector found secret material in a text: `text[start..end]` is to be masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Start byte offset.
    pub start: usize,
    /// End byte offset (exclusive).
    pub end: usize,
    /// Index of the detector in [`catalog`]; [`MASK_ALL`] for the fail-closed fallback.
    pub detector: u16,
}

/// A detector's name and what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectorInfo {
    /// Stable name, used to turn it off in a policy.
    pub name: &'static str,
    /// What it finds, in words.
    pub description: &'static str,
}

/// Why a detector set could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DetectorError {
    /// A name in `disabled` is not in [`catalog`].
    #[error(
        "unknown detector `{name}`; detector names are listed by kubeleash_core::mask::detect::catalog()"
    )]
    Unknown {
        /// The name given.
        name: String,
    },
    /// The built-in patterns or keywords did not compile (a bug, caught by the tests).
    #[error("secret detectors failed to compile: {0}")]
    Build(String),
}

impl From<DetectorError> for String {
    fn from(e: DetectorError) -> String {
        e.to_string()
    }
}

/// The detector index of a span from a set that failed to build and masks everything.
pub const MASK_ALL: u16 = u16::MAX;

/// Bytes after a keyword that its region covers (further if the line ends sooner it stops
/// there). A match cut by this bound is extended over the token bytes that follow it.
pub const FORWARD: usize = 4096;

/// The longest reach back from a keyword to the start of a match any detector has (a JWT's
/// header before its `.eyJ`).
pub const MAX_BACK: usize = 2048;

const CATALOG: [DetectorInfo; DEFS.len()] = {
    let mut out = [DetectorInfo {
        name: "",
        description: "",
    }; DEFS.len()];
    let mut i = 0;
    while i < DEFS.len() {
        out[i] = DEFS[i].info;
        i += 1;
    }
    out
};

static CATALOG_STATIC: [DetectorInfo; DEFS.len()] = CATALOG;

/// Every built-in detector.
pub fn catalog() -> &'static [DetectorInfo] {
    &CATALOG_STATIC
}

/// A compiled set of detectors. Cheap to clone (shared); `Send + Sync`.
#[derive(Clone)]
pub struct Detectors {
    imp: Imp,
}

#[derive(Clone)]
enum Imp {
    Compiled(Arc<Inner>),
    /// Fail closed: what [`Detectors::default`] gives if the built-ins do not compile.
    MaskAll,
}

/// Makes the capture slots for one search of the detectors' regex.
type MakeCaptures =
    Box<dyn Fn() -> Captures + Send + Sync + std::panic::UnwindSafe + std::panic::RefUnwindSafe>;

struct Inner {
    pre: Prefilter,
    /// `None` when every detector is disabled.
    re: Option<Regex>,
    /// Capture slots, reused: a text with a keyword in it (every env entry named `*_PASSWORD`)
    /// would otherwise allocate and zero slots for every group of every pattern. regex-automata's
    /// own pool, the one its `Regex` keeps its caches in: cheap for the thread that made it,
    /// correct for any.
    caps: Option<Pool<Captures, MakeCaptures>>,
    /// Per regex pattern: detector index and post-processing.
    pats: Vec<(u16, Post)>,
    /// No match is shorter than this.
    min_len: usize,
    enabled: usize,
}

impl std::fmt::Debug for Detectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.imp {
            Imp::MaskAll => f.write_str("Detectors(mask-all)"),
            Imp::Compiled(i) => f
                .debug_struct("Detectors")
                .field("enabled", &i.enabled)
                .field("patterns", &i.pats.len())
                .field("prefilter", &i.pre)
                .finish(),
        }
    }
}

impl Default for Detectors {
    /// Every built-in detector. If they fail to compile (they cannot: the tests build them),
    /// the set masks every text whole rather than none.
    fn default() -> Detectors {
        Detectors::new(&[]).unwrap_or(Detectors { imp: Imp::MaskAll })
    }
}

impl Detectors {
    /// Every built-in detector except those named in `disabled`. Errs on an unknown name, and if
    /// the built-in patterns fail to compile. Takes a few milliseconds: build once and share.
    pub fn new(disabled: &[&str]) -> Result<Detectors, DetectorError> {
        build(DEFS, disabled)
    }

    /// Number of enabled detectors.
    pub fn enabled(&self) -> usize {
        match &self.imp {
            Imp::Compiled(i) => i.enabled,
            Imp::MaskAll => 0,
        }
    }

    /// Append the spans to mask in `text`, sorted by start, non-overlapping.
    ///
    /// `text` is any bytes (invalid UTF-8 included). Lines are the unit of most detectors; a
    /// PEM private key block runs from its BEGIN line to its END line, or to the end of `text`
    /// when END is not in it (a caller feeding lines must keep masking until END).
    pub fn find(&self, text: &[u8], out: &mut Vec<Span>) {
        let inner = match &self.imp {
            Imp::Compiled(i) => i,
            Imp::MaskAll => {
                if !text.is_empty() {
                    out.push(Span {
                        start: 0,
                        end: text.len(),
                        detector: MASK_ALL,
                    });
                }
                return;
            }
        };
        let Some(re) = &inner.re else { return };
        if text.len() < inner.min_len {
            return;
        }
        let mut regions: Vec<(usize, usize)> = Vec::new();
        inner.pre.scan(text, &mut |_, hit, guarded| {
            if guarded {
                regions.push(region(text, hit));
            }
        });
        if regions.is_empty() {
            return;
        }
        regions.sort_unstable();
        let base = out.len();
        let Some(pool) = &inner.caps else { return };
        let mut caps = pool.get();
        // Where a span grew past its match (a PEM block, a base64 run, a cut token), the text
        // it covers is not searched again: a text of many BEGIN lines and no END costs one
        // scan to its end, not one per line.
        let mut floor = 0;
        let mut cur: Option<(usize, usize)> = None;
        for r in regions {
            match &mut cur {
                Some(c) if r.0 <= c.1 => c.1 = c.1.max(r.1),
                _ => {
                    if let Some(c) = cur.replace(r) {
                        inner.search(re, &mut caps, text, c, &mut floor, out);
                    }
                }
            }
        }
        if let Some(c) = cur {
            inner.search(re, &mut caps, text, c, &mut floor, out);
        }
        normalize(out, base);
    }

    /// No match of any detector is shorter than this (`usize::MAX` when none is enabled).
    pub(crate) fn min_len(&self) -> usize {
        match &self.imp {
            Imp::Compiled(i) if i.re.is_some() => i.min_len,
            Imp::Compiled(_) => usize::MAX,
            Imp::MaskAll => 1,
        }
    }

    /// Whether `text` holds a keyword whose guard passes, that is whether [`Detectors::find`]
    /// would run any regex on it. A superset of "find returns spans". Costs about the same as a
    /// `find` that finds nothing; `find` already starts with exactly this check.
    pub fn might_contain(&self, text: &[u8]) -> bool {
        let inner = match &self.imp {
            Imp::Compiled(i) => i,
            Imp::MaskAll => return !text.is_empty(),
        };
        if inner.re.is_none() || text.len() < inner.min_len {
            return false;
        }
        let mut any = false;
        inner.pre.scan(text, &mut |_, _, guarded| any |= guarded);
        any
    }

    /// Keyword statistics for tuning the prefilter: for each keyword literal, how often it
    /// occurs in `text` and how often its guard passed. Not part of the stable API.
    #[doc(hidden)]
    pub fn keyword_stats(&self, text: &[u8]) -> Vec<(&'static str, usize, usize)> {
        let Imp::Compiled(inner) = &self.imp else {
            return Vec::new();
        };
        let mut counts = vec![(0usize, 0usize); inner.pre.len()];
        inner.pre.scan(text, &mut |k, _, guarded| {
            if let Some(c) = counts.get_mut(k) {
                c.0 += 1;
                c.1 += usize::from(guarded);
            }
        });
        counts
            .into_iter()
            .enumerate()
            .filter(|(_, c)| c.0 > 0)
            .map(|(k, c)| (inner.pre.literal(k), c.0, c.1))
            .collect()
    }

    /// Share of the keyword bitmap that is set: the prefilter's false-positive rate per sampled
    /// position on random text. Not part of the stable API.
    #[doc(hidden)]
    pub fn prefilter_fill(&self) -> f64 {
        match &self.imp {
            Imp::Compiled(i) => i.pre.fill(),
            Imp::MaskAll => 1.0,
        }
    }
}

/// The line around a keyword, bounded: at most `hit.back` bytes before it and [`FORWARD`]
/// bytes after it, including the line's `\n`.
fn region(text: &[u8], hit: Hit) -> (usize, usize) {
    let lo = hit.start.saturating_sub(hit.back);
    let start = memchr::memrchr(b'\n', &text[lo..hit.start]).map_or(lo, |p| lo + p + 1);
    let hi = hit.end.saturating_add(FORWARD).min(text.len());
    let end = memchr::memchr(b'\n', &text[hit.end..hi]).map_or(hi, |p| hit.end + p + 1);
    (start, end)
}

impl Inner {
    fn search(
        &self,
        re: &Regex,
        caps: &mut Captures,
        text: &[u8],
        (rs, re_end): (usize, usize),
        floor: &mut usize,
        out: &mut Vec<Span>,
    ) {
        let mut at = rs.max(*floor);
        while at < re_end {
            re.search_captures(&Input::new(text).span(at..re_end), caps);
            let Some(m) = caps.get_match() else { break };
            let mut next = m.end().max(at + 1);
            let Some(&(detector, post)) = self.pats.get(m.pattern().as_usize()) else {
                break;
            };
            let (mut s, mut e) = (m.start(), m.end());
            for g in 1..caps.group_len() {
                if let Some(sp) = caps.get_group(g) {
                    (s, e) = (sp.start, sp.end);
                    break;
                }
            }
            let keep = match post {
                Post::Plain => true,
                Post::Value { min, path_ok } => value_ok(&text[s..e], min, path_ok),
                Post::Basic => basic_ok(&text[s..e]),
                Post::Prose => value_ok(&text[s..e], 4, true) && !is_prose_word(&text[s..e]),
                Post::Word => !text[s..e].iter().all(u8::is_ascii_lowercase),
                Post::Pem => {
                    e = pem_end(text, e);
                    next = next.max(e);
                    true
                }
                Post::Base64Run => {
                    while s > 0 && is_b64(text[s - 1]) {
                        s -= 1;
                    }
                    while e < text.len() && is_b64(text[e]) {
                        e += 1;
                    }
                    next = next.max(e);
                    true
                }
            };
            if keep {
                // A match cut by a long line's bound goes on over the token that follows.
                if e == re_end && e < text.len() && text[e - 1] != b'\n' {
                    while e < text.len() && is_token(text[e]) {
                        e += 1;
                    }
                }
                if s < e {
                    out.push(Span {
                        start: s,
                        end: e,
                        detector,
                    });
                }
                if e > m.end() {
                    *floor = (*floor).max(e);
                    next = next.max(e);
                }
            }
            at = next;
        }
    }
}

fn is_b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
}

fn is_token(b: u8) -> bool {
    !(b.is_ascii_whitespace()
        || matches!(
            b,
            b'"' | b'\'' | b'`' | b'\\' | b',' | b';' | b'&' | b'<' | b'>'
        ))
}

/// End of a PEM block whose header ends at `from`: after the `-----` closing the first
/// `-----END` line, or the end of the text when there is no END.
fn pem_end(text: &[u8], from: usize) -> usize {
    let rest = &text[from..];
    let Some(p) = memchr::memmem::find(rest, b"-----END") else {
        return text.len();
    };
    let after = from + p + 8;
    let line = &text[after..text.len().min(after + 80)];
    memchr::memmem::find(line, b"-----").map_or(text.len(), |q| after + q + 5)
}

/// Sort `out[base..]` by start and merge overlapping spans in place.
fn normalize(out: &mut Vec<Span>, base: usize) {
    let tail = &mut out[base..];
    // Stable: of two spans with the same bounds, the one found first (the more specific
    // pattern, or the earlier start of the match) names the merged span.
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

fn value_ok(v: &[u8], min: u8, path_ok: bool) -> bool {
    let solid = v.iter().filter(|b| !b.is_ascii_whitespace()).count();
    if solid < usize::from(min) || is_placeholder(v) {
        return false;
    }
    path_ok || !matches!(v.first(), Some(b'/' | b'~'))
}

/// Words that go on a sentence about a credential rather than being one: `the password is
/// required`, `the token was rotated`.
const PROSE_WORDS: &[&str] = &[
    "not",
    "required",
    "invalid",
    "incorrect",
    "wrong",
    "missing",
    "expired",
    "empty",
    "set",
    "unset",
    "too",
    "being",
    "now",
    "still",
    "correct",
    "valid",
    "the",
    "stored",
    "hidden",
    "configured",
    "rotated",
    "changed",
    "updated",
    "reset",
    "needed",
    "ok",
    "fine",
    "blank",
    "present",
    "absent",
    "provided",
    "given",
    "used",
    "weak",
    "strong",
    "long",
    "short",
    "read",
    "loaded",
    "saved",
    "generated",
    "revoked",
    "accepted",
    "rejected",
    "denied",
    "unknown",
    "available",
    "unavailable",
    "mandatory",
    "optional",
    "disabled",
    "enabled",
    // Words that go on a sentence that starts with `password` (a line-start directive is
    // judged as prose).
    "must",
    "should",
    "will",
    "cannot",
    "could",
    "would",
    "does",
    "policy",
    "authentication",
    "requested",
    "request",
    "length",
    "hash",
    "hashes",
    "file",
    "change",
    "expires",
    "expiry",
    "manager",
    "field",
    "prompt",
    "protected",
    "mismatch",
    "matches",
    "match",
    "from",
    "with",
    "when",
    "into",
    "that",
    "this",
    "after",
    "before",
    "failed",
    "succeeded",
    "authenticated",
    // What API documentation says of a token (the OpenAPI descriptions kubectl explain shows:
    // "the token is bound to", "was intended for", "is older than").
    "bound",
    "older",
    "newer",
    "intended",
    "associated",
    "information",
    "valid",
    "invalid",
    "used",
    "issued",
    "stored",
    "missing",
    "expired",
    "present",
    "provided",
    "generated",
    "rotated",
    "signed",
];

fn is_prose_word(v: &[u8]) -> bool {
    let t = trim_bytes(v.trim_ascii(), b".,!?;:");
    PROSE_WORDS
        .iter()
        .any(|w| t.eq_ignore_ascii_case(w.as_bytes()))
}

/// Words that stand for "no value here" rather than a secret.
const PLACEHOLDER_WORDS: &[&str] = &[
    "null",
    "nil",
    "none",
    "true",
    "false",
    "undefined",
    "empty",
    "redacted",
    "masked",
    "hidden",
    "removed",
    "filtered",
    "omitted",
    "sanitized",
];

/// Whether an assigned value is an obvious placeholder, not a secret:
///
/// - a reference: `${VAR}`, `$(cmd)`, `$VAR` (upper case), `{{ template }}`, `%(name)s`,
///   `<redacted>`;
/// - one byte repeated (`****`, `xxxxxxxx`, `....`);
/// - after trimming `[]()<>*_-` around it, one of `null nil none true false undefined empty
///   redacted masked hidden removed filtered omitted sanitized` (any case), or
///   anything starting with `masked` (`[masked:generic-password]`, kubeleash's own marker).
pub fn is_placeholder(v: &[u8]) -> bool {
    let t = v.trim_ascii();
    let Some(&first) = t.first() else { return true };
    if t.starts_with(b"${") || t.starts_with(b"$(") || t.starts_with(b"{{") || t.starts_with(b"%(")
    {
        return true;
    }
    if first == b'$'
        && t.len() > 1
        && t[1..]
            .iter()
            .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return true;
    }
    if first == b'<' && t.last() == Some(&b'>') {
        return true;
    }
    if t.iter().all(|&b| b == first) {
        return true;
    }
    let core = trim_bytes(t, b"[]()<>*_-");
    if core.len() >= 6 && core[..6].eq_ignore_ascii_case(b"masked") {
        return true;
    }
    PLACEHOLDER_WORDS
        .iter()
        .any(|w| core.eq_ignore_ascii_case(w.as_bytes()))
}

fn trim_bytes<'a>(mut t: &'a [u8], set: &[u8]) -> &'a [u8] {
    while let [f, rest @ ..] = t {
        if set.contains(f) {
            t = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., l] = t {
        if set.contains(l) {
            t = rest;
        } else {
            break;
        }
    }
    t
}

/// Whether base64 text decodes to something holding a `:` (a `user:password`). Padding and
/// whatever follows it are ignored, and so is a last digit that encodes no whole byte.
fn basic_ok(v: &[u8]) -> bool {
    let body = v.split(|&c| c == b'=').next().unwrap_or_default();
    let whole = &body[..body.len() - usize::from(body.len() % 4 == 1)];
    super::b64::decode(whole).is_some_and(|d| d.contains(&b':'))
}

fn expand(p: &Pat) -> (String, Post) {
    match *p {
        Pat::Re(re, post) => (re.to_string(), post),
        Pat::Assign(key, post) => (format!("{key}{ASSIGN}{VALUE}"), post),
    }
}

fn build(defs: &[defs::Def], disabled: &[&str]) -> Result<Detectors, DetectorError> {
    for name in disabled {
        if !defs.iter().any(|d| d.info.name == *name) {
            return Err(DetectorError::Unknown {
                name: (*name).to_string(),
            });
        }
    }
    if defs.len() >= usize::from(MASK_ALL) {
        return Err(DetectorError::Build("too many detectors".into()));
    }
    let mut keywords = Vec::new();
    let mut patterns = Vec::new();
    let mut pats = Vec::new();
    let mut enabled = 0;
    for (i, def) in defs.iter().enumerate() {
        if disabled.contains(&def.info.name) {
            continue;
        }
        enabled += 1;
        let idx =
            u16::try_from(i).map_err(|_| DetectorError::Build("too many detectors".into()))?;
        keywords.extend_from_slice(def.keywords);
        for p in def.patterns {
            let (re, post) = expand(p);
            patterns.push(re);
            pats.push((idx, post));
        }
    }
    let pre = Prefilter::new(&keywords)?;
    let syn = syntax::Config::new().unicode(false).utf8(false);
    let mut min_len = usize::MAX;
    for p in &patterns {
        let hir = syntax::parse_with(p, &syn)
            .map_err(|e| DetectorError::Build(format!("pattern `{p}`: {e}")))?;
        min_len = min_len.min(hir.properties().minimum_len().unwrap_or(0));
    }
    let re = if patterns.is_empty() {
        None
    } else {
        Some(
            Regex::builder()
                .syntax(syn)
                .configure(
                    Regex::config()
                        .utf8_empty(false)
                        .nfa_size_limit(Some(64 << 20))
                        .hybrid_cache_capacity(16 << 20),
                )
                .build_many(&patterns)
                .map_err(|e| DetectorError::Build(e.to_string()))?,
        )
    };
    if pats.len() > PatternID::LIMIT {
        return Err(DetectorError::Build("too many patterns".into()));
    }
    let caps = re.clone().map(|re| {
        let make: MakeCaptures = Box::new(move || re.create_captures());
        Pool::new(make)
    });
    let inner = Inner {
        pre,
        re,
        caps,
        pats,
        min_len: min_len.max(1),
        enabled,
    };
    Ok(Detectors {
        imp: Imp::Compiled(Arc::new(inner)),
    })
}

#[cfg(test)]
#[allow(clippy::panic, reason = "tests")]
mod tests {
    use super::defs::{Def, Pat, Post};
    use super::prefilter::kw;
    use super::*;

    const BAD_RE: &[Def] = &[Def {
        info: DetectorInfo {
            name: "broken",
            description: "does not compile",
        },
        keywords: &[kw("broken")],
        patterns: &[Pat::Re("broken(", Post::Plain)],
    }];
    const BAD_KW: &[Def] = &[Def {
        info: DetectorInfo {
            name: "short",
            description: "keyword too short",
        },
        keywords: &[kw("ab")],
        patterns: &[Pat::Re("ab", Post::Plain)],
    }];
    const SHORT_NO_CLASS: &[Def] = &[Def {
        info: DetectorInfo {
            name: "short",
            description: "3-byte keyword without classes",
        },
        keywords: &[kw("abc")],
        patterns: &[Pat::Re("abc", Post::Plain)],
    }];

    #[test]
    fn broken_patterns_are_an_error_not_a_panic() {
        assert!(matches!(build(BAD_RE, &[]), Err(DetectorError::Build(_))));
        assert!(matches!(build(BAD_KW, &[]), Err(DetectorError::Build(_))));
        assert!(matches!(
            build(SHORT_NO_CLASS, &[]),
            Err(DetectorError::Build(_))
        ));
        // Disabling the broken one leaves an empty, working set.
        let Ok(d) = build(BAD_RE, &["broken"]) else {
            panic!("disabled broken def must build")
        };
        let mut out = Vec::new();
        d.find(b"broken( broken", &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn builtins_build_and_default_is_not_mask_all() {
        let d = Detectors::default();
        assert!(matches!(d.imp, Imp::Compiled(_)));
        assert_eq!(d.enabled(), catalog().len());
    }

    #[test]
    fn mask_all_fails_closed() {
        let d = Detectors { imp: Imp::MaskAll };
        let mut out = Vec::new();
        d.find(b"anything", &mut out);
        assert_eq!(
            out,
            vec![Span {
                start: 0,
                end: 8,
                detector: MASK_ALL
            }]
        );
    }

    /// The sampled gram filter finds exactly what Aho-Corasick finds (where the keyword's
    /// neighbours are in the classes its grams use), at every position and parity.
    #[test]
    fn prefilter_agrees_with_aho_corasick() {
        let Imp::Compiled(inner) = Detectors::default().imp else {
            panic!("builtins must build")
        };
        let kws = inner.pre.keywords();
        let Ok(ac) = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(kws.iter().map(|k| k.0))
        else {
            panic!("automaton")
        };
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let noise = b"aZ09 _-.:=\"'/\n\t@{}[]xX";
        for round in 0..20_000 {
            let mut text = Vec::new();
            let parts = (rand() % 12) as usize;
            for _ in 0..parts {
                if rand() % 2 == 0 {
                    let (lit, _, _) = kws[(rand() % kws.len() as u64) as usize];
                    let mut lit = lit.as_bytes().to_vec();
                    if rand() % 2 == 0 {
                        lit.make_ascii_uppercase();
                    }
                    text.extend_from_slice(&lit);
                } else {
                    for _ in 0..(rand() % 9) {
                        text.push(noise[(rand() % noise.len() as u64) as usize]);
                    }
                }
            }
            let all: Vec<(usize, usize, bool)> = ac
                .find_overlapping_iter(&text)
                .map(|m| {
                    let (_, prev, next) = kws[m.pattern().as_usize()];
                    let prev_ok = prev.is_none_or(|c| m.start() > 0 && c.has(text[m.start() - 1]));
                    let next_ok = next.is_none_or(|c| text.get(m.end()).is_some_and(|&b| c.has(b)));
                    (m.start(), m.pattern().as_usize(), prev_ok && next_ok)
                })
                .collect();
            let mut got = Vec::new();
            inner
                .pre
                .scan(&text, &mut |k, hit, _| got.push((hit.start, k)));
            let shown = String::from_utf8_lossy(&text);
            // Everything found is a real keyword, found once.
            for g in &got {
                assert!(
                    all.iter().any(|a| (a.0, a.1) == *g),
                    "round {round}: spurious {g:?} in {shown:?}"
                );
            }
            let unique: std::collections::HashSet<_> = got.iter().collect();
            assert_eq!(
                unique.len(),
                got.len(),
                "round {round}: duplicates in {shown:?}"
            );
            // Every keyword whose neighbours fit is found.
            for a in all.iter().filter(|a| a.2) {
                assert!(
                    got.contains(&(a.0, a.1)),
                    "round {round}: missed {a:?} in {shown:?}"
                );
            }
        }
    }

    #[test]
    fn basic_decoding() {
        assert!(basic_ok(b"dXNlcjpwYXNz")); // user:pass
        assert!(!basic_ok(b"aGVsbG8gd29ybGQ=")); // hello world
        assert!(!basic_ok(b"authentication"));
    }

    #[test]
    fn placeholders() {
        for p in [
            "${DB_PASSWORD}",
            "$(cat /run/x)",
            "$DB_PASS",
            "{{ .Values.pw }}",
            "<redacted>",
            "****",
            "xxxxxxxx",
            "null",
            "[REDACTED]",
            "__masked__",
            "[masked:generic-password]",
            "true",
        ] {
            assert!(is_placeholder(p.as_bytes()), "{p}");
        }
        for p in [
            "hunter22",
            "s3cr3t-Value",
            "changeme",
            "p@ssw0rd!",
            "$ecret1",
        ] {
            assert!(!is_placeholder(p.as_bytes()), "{p}");
        }
    }
}
