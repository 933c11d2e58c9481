//! Runs the response-masking corpus (`tests/testdata/mask/cases.json`): realistic API server
//! responses, each masked through `Policy::masker` as kubeleash would deliver it, compared byte
//! for byte with a hand-checked expected output. Also checks, for every case, that no listed
//! secret survives in any form, that every JSON output parses (each watch line too), that only
//! masked values changed, and that the output does not depend on how the input was chunked.
//!
//! On a mismatch the actual output is written under `target/tmp/mask-corpus/` for review.
//!
//! Case fields beyond the obvious: `expectedError` (the `MaskError::code()` the masker must stop
//! with; `expected` then holds what was emitted before it), `needsDetectors` (the expectation
//! needs the secret detectors; skipped while the detector catalog is empty), `knownBug` (the
//! masker is known to get this case wrong; `expected` holds the correct output, and the test
//! fails once the masker gets it right so the mark is removed).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use kubeleash_core::mask::{MaskError, detect};
use kubeleash_core::policy::Policy;
use kubeleash_core::request::{Request, classify};
use serde::Deserialize;
use serde_json::Value;

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Case {
    id: String,
    policy: String,
    method: String,
    target: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    content_type: String,
    #[serde(default)]
    content_encoding: Option<String>,
    input: String,
    expected: String,
    secrets: Vec<String>,
    #[serde(default)]
    expected_error: Option<String>,
    #[serde(default)]
    needs_detectors: bool,
    #[serde(default)]
    known_bug: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
}

/// What one masking run produced: every byte emitted (up to an error, if any) and the error.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    out: Vec<u8>,
    error: Option<MaskError>,
    masked_anything: bool,
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/testdata/mask")
}

struct Loaded {
    case: Case,
    policy: Policy,
    request: Request,
    /// The body as it goes on the wire (gzipped when the case says so).
    body: Vec<u8>,
    /// The body before any content encoding.
    plain: Vec<u8>,
    expected: Vec<u8>,
}

impl Loaded {
    fn content_type(&self) -> Option<&str> {
        Some(self.case.content_type.as_str()).filter(|c| !c.is_empty())
    }

    fn framing_is_json(&self) -> bool {
        self.content_type()
            .is_some_and(|c| c.starts_with("application/json"))
    }

    fn is_watch(&self) -> bool {
        self.request.attributes.verb == "watch"
    }

    /// Mask `body` fed in the given pieces; keep whatever was emitted before an error.
    fn run<'a>(&self, pieces: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
        let mut m = match self.policy.masker(
            &self.request,
            self.content_type(),
            self.case.content_encoding.as_deref(),
        ) {
            Ok(m) => m,
            Err(e) => {
                return Outcome {
                    out: Vec::new(),
                    error: Some(e),
                    masked_anything: false,
                };
            }
        };
        let mut out = Vec::new();
        for p in pieces {
            if let Err(e) = m.feed_into(p, &mut out) {
                return Outcome {
                    out,
                    error: Some(e),
                    masked_anything: m.masked_anything(),
                };
            }
        }
        let error = m.finish_into(&mut out).err();
        Outcome {
            out,
            error,
            masked_anything: m.masked_anything(),
        }
    }

    fn run_whole(&self) -> Outcome {
        self.run([self.body.as_slice()])
    }

    /// Whether the expectation of this case can be checked with the detectors built now.
    fn checkable(&self) -> bool {
        !self.case.needs_detectors || !detect::catalog().is_empty()
    }
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

fn load() -> Result<Vec<Loaded>> {
    let dir = corpus_dir();
    let cases: Vec<Case> = serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json"))?)?;
    let mut policies: HashMap<String, Policy> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    let mut out = Vec::new();
    for case in cases {
        assert!(ids.insert(case.id.clone()), "duplicate case id {}", case.id);
        if !policies.contains_key(&case.policy) {
            let text = std::fs::read_to_string(dir.join("policies").join(&case.policy))?;
            let policy = Policy::from_yaml(&text).map_err(|e| format!("{}: {e}", case.policy))?;
            policies.insert(case.policy.clone(), policy);
        }
        let policy = policies[&case.policy].clone();
        let mut headers = http::HeaderMap::new();
        for (k, v) in &case.headers {
            headers.append(
                http::HeaderName::from_bytes(k.as_bytes())?,
                http::HeaderValue::from_str(v)?,
            );
        }
        let request = classify(&case.method, &case.target, &headers)
            .map_err(|e| format!("{}: {} {}: {e}", case.id, case.method, case.target))?;
        let plain = std::fs::read(dir.join(&case.input))?;
        let body = match case.content_encoding.as_deref() {
            Some("gzip") => gzip(&plain)?,
            _ => plain.clone(),
        };
        let expected = std::fs::read(dir.join(&case.expected))
            .map_err(|e| format!("{}: {}: {e}", case.id, case.expected))?;
        out.push(Loaded {
            case,
            policy,
            request,
            body,
            plain,
            expected,
        });
    }
    Ok(out)
}

/// Where the two differ first, with some context of each, for a person to read.
fn first_difference(expected: &[u8], actual: &[u8]) -> String {
    let at = expected
        .iter()
        .zip(actual)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(actual.len()));
    let line = expected[..at].iter().filter(|&&c| c == b'\n').count() + 1;
    let from = at.saturating_sub(80);
    let show = |b: &[u8]| {
        let end = (at + 80).min(b.len());
        let start = from.min(end);
        format!(
            "{}⟦{}⟧",
            String::from_utf8_lossy(&b[start..at.min(end)]),
            String::from_utf8_lossy(&b[at.min(end)..end])
        )
    };
    format!(
        "first difference at byte {at} (line {line}); expected {} bytes, got {}\n      expected: …{}…\n      actual:   …{}…",
        expected.len(),
        actual.len(),
        show(expected),
        show(actual)
    )
}

fn save_actual(l: &Loaded, out: &[u8]) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mask-corpus");
    let name = Path::new(&l.case.expected)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| l.case.id.clone());
    let path = dir.join(name);
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, out)) {
        Ok(()) => format!("actual output written to {}", path.display()),
        Err(e) => format!("could not write the actual output: {e}"),
    }
}

/// Compare one outcome with the case's expectation; `None` when it matches.
fn mismatch(l: &Loaded, got: &Outcome) -> Option<String> {
    let code = got.error.as_ref().map(MaskError::code);
    if code != l.case.expected_error.as_deref() {
        return Some(format!(
            "expected {}, got {}",
            l.case
                .expected_error
                .as_deref()
                .map_or("success".to_string(), |c| format!("error `{c}`")),
            got.error
                .as_ref()
                .map_or("success".to_string(), |e| format!(
                    "error `{}`: {e}",
                    e.code()
                ))
        ));
    }
    if got.out != l.expected {
        return Some(first_difference(&l.expected, &got.out));
    }
    None
}

#[test]
fn corpus_masks_as_expected() -> Result<()> {
    let cases = load()?;
    assert!(
        cases.len() >= 60,
        "the corpus shrank to {} cases",
        cases.len()
    );
    let mut failures = Vec::new();
    let mut known = Vec::new();
    let mut pending = Vec::new();
    for l in &cases {
        let got = l.run_whole();
        if !l.checkable() {
            pending.push(l.case.id.clone());
            continue;
        }
        let bad = mismatch(l, &got);
        match (&l.case.known_bug, bad) {
            (Some(bug), Some(why)) => known.push(format!("{}: {bug}\n    {why}", l.case.id)),
            (Some(bug), None) => failures.push(format!(
                "{}: marked knownBug ({bug}) but the masker now gets it right: remove the mark",
                l.case.id
            )),
            (None, Some(why)) => failures.push(format!(
                "{}: {} {}\n    {why}\n    {}",
                l.case.id,
                l.case.method,
                l.case.target,
                save_actual(l, &got.out)
            )),
            (None, None) => {}
        }
        // masked_anything says whether the output differs from the input.
        if l.case.content_encoding.is_none()
            && got.error.is_none()
            && l.case.known_bug.is_none()
            && got.masked_anything != (got.out != l.plain)
        {
            failures.push(format!(
                "{}: masked_anything() is {} but the output {} the input",
                l.case.id,
                got.masked_anything,
                if got.out == l.plain {
                    "equals"
                } else {
                    "differs from"
                }
            ));
        }
    }
    if !pending.is_empty() {
        eprintln!(
            "{} cases wait for the detectors (catalog empty): {}",
            pending.len(),
            pending.join(", ")
        );
    }
    for k in &known {
        eprintln!("known masker bug: {k}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    Ok(())
}

/// Standard base64 with padding.
fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for k in 0..4 {
            if k <= c.len() {
                s.push(char::from(T[((n >> (18 - 6 * k)) & 63) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// The body of a JSON string literal for `s`, as Go's encoding/json writes it (`<>&` and
/// U+2028/9 escaped) or minimally (`go == false`).
fn json_escaped(s: &str, go: bool) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    let inner = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or_default()
        .to_string();
    if go {
        inner
            .replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026")
            .replace('\u{2028}', "\\u2028")
            .replace('\u{2029}', "\\u2029")
    } else {
        inner
    }
}

/// Every form a secret can take in a response: plain, base64, JSON-escaped (minimal and Go
/// style), and escaped twice (inside the last-applied annotation).
fn forms(secret: &str) -> Vec<String> {
    let mut f = vec![secret.to_string(), base64(secret.as_bytes())];
    for go in [false, true] {
        let once = json_escaped(secret, go);
        f.push(json_escaped(&once, go));
        f.push(once);
    }
    f.sort();
    f.dedup();
    f
}

fn contains(hay: &[u8], needle: &str) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn no_secret_survives_in_any_form() -> Result<()> {
    let mut failures = Vec::new();
    let mut checked = 0;
    for l in load()? {
        if !l.checkable() || l.case.known_bug.is_some() {
            continue;
        }
        // Everything any run emits is checked: the expected output and the actual one.
        let got = l.run_whole();
        for s in &l.case.secrets {
            assert!(
                s.len() >= 6,
                "{}: secret {s:?} is too short to search for",
                l.case.id
            );
            let fs = forms(s);
            if !fs.iter().any(|f| contains(&l.plain, f)) {
                failures.push(format!(
                    "{}: secret {s:?} is not in the input in any form, so the check cannot fail",
                    l.case.id
                ));
            }
            for (what, out) in [("expected", &l.expected), ("actual", &got.out)] {
                if let Some(f) = fs.iter().find(|f| contains(out, f)) {
                    failures.push(format!(
                        "{}: secret {s:?} appears in the {what} output as {f:?}",
                        l.case.id
                    ));
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 120, "only {checked} secrets were checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// Parse a body as the client would: one document, or one watch event per line.
fn parse_all(l: &Loaded, out: &[u8]) -> std::result::Result<Vec<Value>, String> {
    if l.is_watch() {
        let mut events = Vec::new();
        for (n, line) in out.split(|&c| c == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let v: Value =
                serde_json::from_slice(line).map_err(|e| format!("line {}: {e}", n + 1))?;
            if !v.get("type").is_some_and(Value::is_string) || v.get("object").is_none() {
                return Err(format!("line {} is not a watch event", n + 1));
            }
            events.push(v);
        }
        Ok(events)
    } else {
        serde_json::from_slice(out)
            .map(|v| vec![v])
            .map_err(|e| e.to_string())
    }
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Whether `s` is what a mask puts in place of a value.
fn is_replacement(s: &str) -> bool {
    let hmac = |t: &str| {
        t.strip_prefix("[hmac:")
            .and_then(|r| r.strip_suffix(']'))
            .is_some_and(|h| h.len() == 24 && h.bytes().all(|c| c.is_ascii_hexdigit()))
    };
    s == "[masked]"
        // A command-line flag keeps its name: `--password=[masked]`, `-p[masked]`.
        || s.ends_with("[masked]")
        || s == "W21hc2tlZF0="
        || s.contains("[masked:")
        || hmac(s)
        || hmac(&String::from_utf8_lossy(
            &base64_decode(s).unwrap_or_default(),
        ))
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let s = s.trim_end_matches('=');
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = T.iter().position(|&t| t == c)?;
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Walk input and output together: same shape, same keys, and every changed leaf a mask's
/// replacement (or a masked number, now 0). The last-applied annotation is compared inside.
fn only_masked_values_changed(input: &Value, output: &Value, path: &str, errs: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(a), Value::Object(b)) => {
            if a.keys().ne(b.keys()) {
                errs.push(format!("{path}: keys differ"));
                return;
            }
            for (k, va) in a {
                let p = format!("{path}.{k}");
                match (k.as_str(), va, &b[k]) {
                    (LAST_APPLIED, Value::String(sa), Value::String(sb)) if sa != sb => {
                        match (serde_json::from_str(sa), serde_json::from_str(sb)) {
                            (Ok(ia), Ok(ib)) => only_masked_values_changed(&ia, &ib, &p, errs),
                            (_, Err(e)) if sb != "[masked]" => {
                                errs.push(format!("{p}: the annotation is not JSON any more: {e}"))
                            }
                            _ => {}
                        }
                    }
                    (_, va, vb) => only_masked_values_changed(va, vb, &p, errs),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                errs.push(format!("{path}: array length differs"));
                return;
            }
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                only_masked_values_changed(va, vb, &format!("{path}[{i}]"), errs);
            }
        }
        (a, b) if a == b => {}
        (Value::String(_), Value::String(s)) if is_replacement(s) => {}
        (Value::Number(_), Value::Number(n)) if n.as_u64() == Some(0) => {}
        (a, b) => errs.push(format!(
            "{path}: {a} became {b}, which is no mask's replacement"
        )),
    }
}

#[test]
fn json_outputs_parse_and_only_masked_values_change() -> Result<()> {
    let mut failures = Vec::new();
    for l in load()? {
        if !l.framing_is_json() || l.case.expected_error.is_some() {
            continue;
        }
        let input = parse_all(&l, &l.plain).map_err(|e| format!("{}: input: {e}", l.case.id))?;
        let mut outputs = vec![("expected", l.expected.clone())];
        if l.checkable() {
            outputs.push(("actual", l.run_whole().out));
        }
        for (what, out) in outputs {
            match parse_all(&l, &out) {
                Err(e) => {
                    failures.push(format!("{}: {what} output does not parse: {e}", l.case.id))
                }
                Ok(o) if o.len() != input.len() => failures.push(format!(
                    "{}: {what} output has {} documents, the input {}",
                    l.case.id,
                    o.len(),
                    input.len()
                )),
                Ok(o) => {
                    let mut errs = Vec::new();
                    for (a, b) in input.iter().zip(&o) {
                        only_masked_values_changed(a, b, "$", &mut errs);
                    }
                    failures.extend(
                        errs.into_iter()
                            .map(|e| format!("{}: {what}: {e}", l.case.id)),
                    );
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// A small deterministic generator for split points.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seed(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1
}

/// Split `body` at random points: runs of 1 byte up to a few KiB.
fn random_split(body: &[u8], rng: &mut XorShift) -> Vec<std::ops::Range<usize>> {
    let max = [2, 16, 300, 5000][rng.below(4)];
    let mut at = 0;
    let mut ranges = Vec::new();
    while at < body.len() {
        let n = 1 + rng.below(max);
        let end = (at + n).min(body.len());
        ranges.push(at..end);
        at = end;
    }
    ranges
}

#[test]
fn output_does_not_depend_on_chunking() -> Result<()> {
    let mut failures = Vec::new();
    for l in load()? {
        let whole = l.run_whole();
        let mut check = |how: String, got: Outcome| {
            let same_error = got.error.as_ref().map(MaskError::code)
                == whole.error.as_ref().map(MaskError::code);
            if got.out != whole.out || !same_error || got.masked_anything != whole.masked_anything {
                failures.push(format!(
                    "{}: fed {how}: error {:?} vs {:?} whole; {}",
                    l.case.id,
                    got.error.as_ref().map(MaskError::code),
                    whole.error.as_ref().map(MaskError::code),
                    first_difference(&whole.out, &got.out)
                ));
            }
        };
        for size in 1..=7 {
            check(format!("in {size}-byte chunks"), l.run(l.body.chunks(size)));
        }
        let mut rng = XorShift(seed(&l.case.id));
        for round in 0..12 {
            let ranges = random_split(&l.body, &mut rng);
            check(
                format!(
                    "split at random points (round {round}, {} pieces)",
                    ranges.len()
                ),
                l.run(ranges.iter().map(|r| &l.body[r.clone()])),
            );
        }
        // Empty chunks in between change nothing either.
        check(
            "with empty chunks between bytes".to_string(),
            l.run(l.body.chunks(3).flat_map(|c| [c, &[][..]])),
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[test]
fn expected_files_are_each_used_once() -> Result<()> {
    let cases = load()?;
    let dir = corpus_dir();
    let mut used: Vec<String> = cases
        .iter()
        .flat_map(|l| [l.case.input.clone(), l.case.expected.clone()])
        .collect();
    used.sort();
    let mut on_disk = Vec::new();
    for sub in ["inputs", "expected"] {
        for e in std::fs::read_dir(dir.join(sub))? {
            on_disk.push(format!("{sub}/{}", e?.file_name().to_string_lossy()));
        }
    }
    on_disk.sort();
    assert_eq!(used, on_disk, "cases.json and the files on disk disagree");
    Ok(())
}
