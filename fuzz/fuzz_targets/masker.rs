//! Fuzz the streaming response masker: any bytes, any framing, any chunking.
//!
//! Input layout (so that corpus files make good seeds: two bytes, then a response body):
//! - byte 0: bits 0-1 the framing (0 JSON, 1 watch events, 2 and 3 log text); bit 2 the corpus
//!   policy with custom rules instead of the built-in masks; bit 3 the body is a gzip stream;
//!   bit 4 the masker knows the request (a list of `databases` in `db.example.com`, so a
//!   Table's cells are judged against the policy's Database rule);
//! - byte 1: seeds the chunk sizes (1 byte up to 128);
//! - the rest: the response body.
//!
//! Checks: no panic; the output and the error do not depend on the chunking; and when the body
//! is valid JSON without duplicate keys, no string value of `data` or `stringData` of a Secret (a
//! document, a list item, a Table row's object, a watch event's object, any object in a root
//! array or a Status's `details`) comes out, nor (with the built-in masks) a ConfigMap `data`
//! value under a credential-named key, nor (with the custom policy) a Table cell that is not in
//! the name column, if that value appears nowhere else in the body. Log text goes
//! through normalization (terminal escapes, JSON escapes, percent-encoding) on the way.
#![no_main]

use std::sync::{Arc, LazyLock};

use kubeleash_core::mask::{Framing, MaskSet, Masker, credname};
use kubeleash_core::policy::Policy;
use kubeleash_core::request::classify;
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

static BUILTIN: LazyLock<Arc<MaskSet>> =
    LazyLock::new(|| Arc::new(MaskSet::builtin().expect("built-in masks compile")));

static CUSTOM: LazyLock<Policy> = LazyLock::new(|| {
    Policy::from_yaml(include_str!(
        "../../tests/testdata/mask/policies/custom-rules.yaml"
    ))
    .expect("custom-rules.yaml compiles")
});

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    out: Vec<u8>,
    error: Option<&'static str>,
}

fn masker(framing: Framing, custom: bool, gzip: bool, request: bool) -> Masker {
    let set = if custom {
        Arc::clone(CUSTOM.mask_set())
    } else {
        Arc::clone(&BUILTIN)
    };
    if request && !gzip {
        let target = match framing {
            Framing::Json => "/apis/db.example.com/v1/namespaces/dev/databases",
            Framing::WatchEvents => "/apis/db.example.com/v1/namespaces/dev/databases?watch=1",
            Framing::Text => "/api/v1/namespaces/dev/pods/p/log",
            // `text/plain` that is not a log: masked as the JSON or text it holds.
            Framing::PlainText => "/apis/db.example.com/v1/namespaces/dev/databases",
        };
        let ct = if matches!(framing, Framing::Text | Framing::PlainText) {
            "text/plain"
        } else {
            "application/json"
        };
        let req = classify("GET", target, &http::HeaderMap::new()).expect("a canonical target");
        return Masker::new(set, &req, Some(ct), None).expect("JSON and logs can be masked");
    }
    if !gzip {
        return Masker::with(set, framing);
    }
    let (target, content_type) = match framing {
        Framing::Json => ("/api/v1/namespaces/dev/secrets", "application/json"),
        Framing::WatchEvents => ("/api/v1/namespaces/dev/secrets?watch=1", "application/json"),
        Framing::Text => ("/api/v1/namespaces/dev/pods/p/log", "text/plain"),
        Framing::PlainText => ("/api/v1/namespaces/dev/secrets", "text/plain"),
    };
    let req = classify("GET", target, &http::HeaderMap::new()).expect("a canonical target");
    Masker::new(set, &req, Some(content_type), Some("gzip")).expect("gzip JSON can be masked")
}

fn run<'a>(mut m: Masker, pieces: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut out = Vec::new();
    for p in pieces {
        if let Err(e) = m.feed_into(p, &mut out) {
            return Outcome {
                out,
                error: Some(e.code()),
            };
        }
    }
    let error = m.finish_into(&mut out).err().map(|e| e.code());
    Outcome { out, error }
}

fn chunks(body: &[u8], seed: u8) -> Vec<&[u8]> {
    let max = 1usize << (seed & 7);
    let mut state = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut at = 0;
    let mut out = Vec::new();
    while at < body.len() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let n = 1 + (state % max as u64) as usize;
        let end = (at + n).min(body.len());
        out.push(&body[at..end]);
        at = end;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [flags, seed, body @ ..] = data else {
        return;
    };
    let framing = match flags & 3 {
        0 => Framing::Json,
        1 => Framing::WatchEvents,
        2 => Framing::Text,
        _ => Framing::PlainText,
    };
    let (custom, gzip, request) = (flags & 4 != 0, flags & 8 != 0, flags & 16 != 0);

    let whole = run(masker(framing, custom, gzip, request), [body]);
    let chunked = run(masker(framing, custom, gzip, request), chunks(body, *seed));
    assert_eq!(
        chunked,
        whole,
        "chunked output differs from whole; body: {:?}",
        String::from_utf8_lossy(body)
    );

    if gzip || framing == Framing::Text {
        return;
    }
    for secret in secret_values(body, framing, custom) {
        assert!(
            !whole
                .out
                .windows(secret.len())
                .any(|w| w == secret.as_bytes()),
            "secret data value {secret:?} came out: {:?}",
            String::from_utf8_lossy(&whole.out)
        );
    }
});

/// The string values of Secret `data`/`stringData` in the body that a correct masker must hide
/// and that can be searched for without false alarms.
fn secret_values(body: &[u8], framing: Framing, custom: bool) -> Vec<String> {
    let docs: Vec<Value> = match framing {
        // Text that opens with `{` or `[` is masked as JSON; JSON that opens otherwise (a
        // string, a number) holds no object.
        Framing::Json | Framing::PlainText => match serde_json::from_slice::<NoDup>(body) {
            Ok(NoDup(v)) => vec![v],
            Err(_) => return Vec::new(),
        },
        _ => {
            let mut docs = Vec::new();
            for d in serde_json::Deserializer::from_slice(body).into_iter::<NoDup>() {
                match d {
                    Ok(NoDup(v)) => docs.push(v),
                    Err(_) => return Vec::new(),
                }
            }
            docs
        }
    };
    let mut found = Vec::new();
    let mut all = Vec::new();
    for d in &docs {
        all_strings(d, &mut all);
        let doc = match framing {
            Framing::Json | Framing::PlainText => Some(d),
            _ => d.get("object").filter(|_| d.is_object()),
        };
        let Some(doc) = doc else { continue };
        if let Value::Array(elems) = doc {
            // A root array: every object in it is one of unknown kind.
            elems.iter().for_each(|e| loose(e, &mut found));
        } else {
            anchor(doc, None, custom, &mut found);
        }
        if custom {
            table_cells(doc, &mut found);
        }
    }
    found.retain(|v| {
        v.len() >= 8
            // Raw and decoded are the same bytes, and it cannot be part of a replacement.
            && !v.bytes().any(|c| c < 0x20 || matches!(c, b'"' | b'\\' | b'[' | b']'))
            && !v.contains("masked")
            && !"W21hc2tlZF0=".contains(v.as_str())
            && !v.starts_with("W2htYWM6")
            // It appears once in the body, and in no other string or key.
            && body.windows(v.len()).filter(|w| *w == v.as_bytes()).count() == 1
            && all.iter().filter(|s| s.contains(v.as_str())).count() == 1
    });
    found
}

/// Objects the masker cannot place: each is treated as it would be as a Secret, and so is every
/// object below it.
fn loose(v: &Value, found: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for field in ["data", "stringData"] {
                if let Some(Value::Object(d)) = m.get(field) {
                    found.extend(d.values().filter_map(Value::as_str).map(str::to_string));
                }
            }
            m.values().for_each(|x| loose(x, found));
        }
        Value::Array(a) => a.iter().for_each(|x| loose(x, found)),
        _ => {}
    }
}

/// With a policy mask rule that may apply to the rows (the request is not known, or is for the
/// rule's group), every cell but the name column's is masked.
fn table_cells(v: &Value, found: &mut Vec<String>) {
    if v.get("kind").and_then(Value::as_str) != Some("Table") {
        return;
    }
    let name_col = v
        .get("columnDefinitions")
        .and_then(Value::as_array)
        .and_then(|defs| {
            defs.iter()
                .position(|d| d.get("format").and_then(Value::as_str) == Some("name"))
        });
    // Without column definitions a watch carries the last Table's: do not guess.
    if v.get("columnDefinitions")
        .and_then(Value::as_array)
        .is_none()
    {
        return;
    }
    for row in v
        .get("rows")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for (i, cell) in row
            .get("cells")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if Some(i) != name_col
                && let Some(s) = cell.as_str()
            {
                found.push(s.to_string());
            }
        }
    }
}

/// A Kubernetes object as the masker anchors it: its kind is its own or its list's.
fn anchor(v: &Value, inherited: Option<&str>, custom: bool, found: &mut Vec<String>) {
    let Value::Object(m) = v else { return };
    let own = m.get("kind").and_then(Value::as_str);
    let is_secret = matches!(
        (own, inherited),
        (Some("Secret"), None | Some("Secret")) | (None, Some("Secret"))
    );
    if is_secret {
        for field in ["data", "stringData"] {
            if let Some(Value::Object(d)) = m.get(field) {
                found.extend(d.values().filter_map(Value::as_str).map(str::to_string));
            }
        }
    }
    // `credential-keys` (on with the built-in masks): a ConfigMap's data under a
    // credential-named key.
    let is_config_map = matches!(
        (own, inherited),
        (Some("ConfigMap"), None | Some("ConfigMap")) | (None, Some("ConfigMap"))
    );
    if is_config_map
        && !custom
        && let Some(Value::Object(d)) = m.get("data")
    {
        found.extend(
            d.iter()
                .filter(|(k, _)| credname::is_credential_key(k))
                .filter_map(|(_, v)| v.as_str())
                .map(str::to_string),
        );
    }
    if let Some(Value::Array(items)) = m.get("items") {
        let item_kind = own
            .and_then(|k| k.strip_suffix("List"))
            .filter(|k| !k.is_empty());
        for i in items {
            anchor(i, item_kind, custom, found);
        }
    }
    if own == Some("Status")
        && let Some(details) = m.get("details")
    {
        loose(details, found);
    }
    if let Some(Value::Array(rows)) = m.get("rows") {
        for r in rows {
            if let (Some(o), true) = (r.get("object"), r.is_object()) {
                anchor(o, None, custom, found);
            }
        }
    }
}

fn all_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| all_strings(x, out)),
        Value::Object(m) => {
            for (k, x) in m {
                out.push(k.clone());
                all_strings(x, out);
            }
        }
        _ => {}
    }
}

/// A JSON value that refuses duplicate keys (the masker and serde_json would disagree on them).
struct NoDup(Value);

impl<'de> Deserialize<'de> for NoDup {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDupVisitor).map(NoDup)
    }
}

struct NoDupVisitor;

impl<'de> Visitor<'de> for NoDupVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::from(n))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::from(n))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_string()))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        let mut v = Vec::new();
        while let Some(NoDup(x)) = a.next_element()? {
            v.push(x);
        }
        Ok(Value::Array(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        let mut m = serde_json::Map::new();
        while let Some(k) = a.next_key::<String>()? {
            if m.contains_key(&k) {
                return Err(A::Error::custom("duplicate key"));
            }
            let NoDup(v) = a.next_value()?;
            m.insert(k, v);
        }
        Ok(Value::Object(m))
    }
}
