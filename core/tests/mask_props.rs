//! Properties of the streaming masker:
//!
//! - the output does not depend on how the input is split into chunks, down to one byte, for
//!   Kubernetes-like JSON (objects, lists, Tables, watch streams, with escapes and unicode) and
//!   for arbitrary bytes (same outcome, same bytes emitted before an error);
//! - a response with nothing to mask comes out byte for byte as it went in;
//! - masked output parses as JSON (each watch event too) and differs from the input only in
//!   masked values;
//! - truncated or corrupted Secret documents never emit a value a correct parser would place in
//!   the Secret's `data`, and a truncated response never emits a secret it cut off;
//! - after an error, the masker returns the same error and no bytes, whatever it is fed.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::{Arc, LazyLock};

use kubeleash_core::mask::{Framing, MaskError, MaskSet, Masker};
use kubeleash_core::policy::Policy;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Running the masker

static BUILTIN: LazyLock<Arc<MaskSet>> =
    LazyLock::new(|| Arc::new(MaskSet::builtin().expect("built-in masks compile")));

/// The corpus policy with custom rules: filters, `..`, bracketed keys, hmac.
static CUSTOM: LazyLock<Arc<MaskSet>> = LazyLock::new(|| {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/testdata/mask/policies/custom-rules.yaml"
    );
    let text = std::fs::read_to_string(path).expect("custom-rules.yaml");
    Arc::clone(
        Policy::from_yaml(&text)
            .expect("custom-rules.yaml compiles")
            .mask_set(),
    )
});

fn set(custom: bool) -> Arc<MaskSet> {
    Arc::clone(if custom { &CUSTOM } else { &BUILTIN })
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    out: Vec<u8>,
    error: Option<MaskError>,
}

fn mask_pieces<'a>(
    set: Arc<MaskSet>,
    framing: Framing,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> Outcome {
    let mut m = Masker::with(set, framing);
    let mut out = Vec::new();
    for p in pieces {
        if let Err(e) = m.feed_into(p, &mut out) {
            return Outcome {
                out,
                error: Some(e),
            };
        }
    }
    let error = m.finish_into(&mut out).err();
    Outcome { out, error }
}

fn mask(set: Arc<MaskSet>, framing: Framing, input: &[u8]) -> Outcome {
    mask_pieces(set, framing, [input])
}

/// Split `input` at the given points (in any order, duplicates allowed).
fn split<'a>(input: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
    at.push(0);
    at.push(input.len());
    at.sort_unstable();
    at.windows(2).map(|w| &input[w[0]..w[1]]).collect()
}

fn code(o: &Outcome) -> Option<&'static str> {
    o.error.as_ref().map(MaskError::code)
}

// ---------------------------------------------------------------------------------------------
// Generated Kubernetes-like JSON, written byte for byte (escapes chosen, not normalised)

/// A JSON value whose strings are kept in their raw, escaped form.
#[derive(Debug, Clone)]
enum J {
    Obj(Vec<(String, J)>),
    Arr(Vec<J>),
    /// The bytes between the quotes.
    Str(String),
    /// A number, `true`, `false` or `null`.
    Lit(String),
}

fn s(raw: &str) -> J {
    J::Str(raw.to_string())
}

fn obj(members: Vec<(&str, J)>) -> J {
    J::Obj(
        members
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

impl J {
    fn write(&self, pretty: bool, out: &mut String) {
        let sep = if pretty { " " } else { "" };
        match self {
            J::Obj(m) => {
                out.push('{');
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(sep);
                    out.push('"');
                    out.push_str(k);
                    out.push_str("\":");
                    out.push_str(sep);
                    v.write(pretty, out);
                }
                out.push_str(sep);
                out.push('}');
            }
            J::Arr(a) => {
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                        out.push_str(sep);
                    }
                    v.write(pretty, out);
                }
                out.push(']');
            }
            J::Str(raw) => {
                out.push('"');
                out.push_str(raw);
                out.push('"');
            }
            J::Lit(l) => out.push_str(l),
        }
    }

    fn text(&self, pretty: bool) -> String {
        let mut out = String::new();
        self.write(pretty, &mut out);
        out
    }
}

/// `text` as the raw contents of a JSON string (what the last-applied annotation holds).
fn escape(text: &str) -> String {
    let quoted = serde_json::to_string(text).unwrap();
    quoted[1..quoted.len() - 1].to_string()
}

/// String contents that no mask or detector touches: a small alphabet, JSON escapes of every
/// kind, and non-ASCII text raw and escaped.
fn safe_raw() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-z0-9 ._-]{1,6}",
        1 => prop::sample::select(vec![
            "\\n", "\\t", "\\r", "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\u003c", "\\u003e", "\\u0026",
            "\\u00e9", "\\u2028", "\\ud83d\\ude00", "é", "日本語", "😀", "\\u0000", "\\uFFFD",
        ])
        .prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..4).prop_map(|p| p.concat())
}

/// Member names that are no rule's path step (every one starts with `x`).
fn safe_key() -> impl Strategy<Value = String> {
    prop_oneof![
        "x[a-zA-Z0-9]{0,6}",
        "x[a-z]{0,3}".prop_map(|k| format!("{k}\\u00e9")),
        "x[a-z]{0,3}".prop_map(|k| format!("{k}.example.com/a-b")),
    ]
    // A key the credential-name rule names (`xpw`, `xKey`) is masked by `credential-keys`
    // wherever a ConfigMap or an object of unknown kind holds it: not a safe key.
    .prop_filter("a credential-looking key", |k| {
        !kubeleash_core::mask::credname::is_credential_key(k)
    })
}

fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("true".to_string()),
        Just("false".to_string()),
        Just("null".to_string()),
        "-?(0|[1-9][0-9]{0,12})(\\.[0-9]{1,4})?([eE][+-]?[0-9]{1,2})?",
    ]
}

/// Arbitrary nested JSON with safe strings and keys.
fn safe_value() -> impl Strategy<Value = J> {
    let leaf = prop_oneof![safe_raw().prop_map(J::Str), literal().prop_map(J::Lit)];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(J::Arr),
            prop::collection::vec((safe_key(), inner), 0..5).prop_map(J::Obj),
        ]
    })
}

fn safe_map() -> impl Strategy<Value = J> {
    prop::collection::vec((safe_key(), safe_raw().prop_map(J::Str)), 0..4).prop_map(J::Obj)
}

const SAFE_KINDS: &[(&str, &str)] = &[
    ("ConfigMap", "v1"),
    ("Service", "v1"),
    ("Namespace", "v1"),
    ("Widget", "example.com/v1"),
    ("Event", "events.k8s.io/v1"),
];

/// An object of a kind with nothing to mask; `kind` is left out when a list gives it.
fn safe_object(with_kind: bool) -> impl Strategy<Value = J> {
    (
        prop::sample::select(SAFE_KINDS),
        safe_raw(),
        safe_map(),
        safe_map(),
        safe_value(),
        safe_map(),
        prop::option::of(safe_value()),
    )
        .prop_map(
            move |((kind, api), name, labels, annotations, spec, data, applied)| {
                let mut annotations = annotations;
                if let (Some(applied), J::Obj(a)) = (applied, &mut annotations) {
                    // What client-side apply stores, with the kind first so it is known in time.
                    let inner = obj(vec![
                        ("kind", s(kind)),
                        ("apiVersion", s(api)),
                        ("spec", applied),
                    ]);
                    a.push((
                        "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                        J::Str(escape(&(inner.text(false) + "\n"))),
                    ));
                }
                let mut m = Vec::new();
                if with_kind {
                    m.push(("kind", s(kind)));
                    m.push(("apiVersion", s(api)));
                }
                m.push((
                    "metadata",
                    obj(vec![
                        ("name", J::Str(name)),
                        ("namespace", s("dev")),
                        ("resourceVersion", s("42")),
                        ("labels", labels),
                        ("annotations", annotations),
                    ]),
                ));
                m.push(("spec", spec));
                if kind == "ConfigMap" {
                    m.push(("data", data));
                }
                obj(m)
            },
        )
}

/// A response with nothing to mask, and how it is framed.
fn safe_response() -> impl Strategy<Value = (String, Framing)> {
    prop_oneof![
        (safe_object(true), any::<bool>())
            .prop_map(|(o, pretty)| (o.text(pretty) + "\n", Framing::Json)),
        (
            prop::sample::select(SAFE_KINDS),
            prop::collection::vec(safe_object(false), 0..4)
        )
            .prop_map(|((kind, api), items)| {
                let list = obj(vec![
                    ("kind", s(&format!("{kind}List"))),
                    ("apiVersion", s(api)),
                    ("metadata", obj(vec![("resourceVersion", s("7"))])),
                    ("items", J::Arr(items)),
                ]);
                (list.text(false) + "\n", Framing::Json)
            }),
        prop::collection::vec(
            (
                prop::sample::select(vec!["ADDED", "MODIFIED", "DELETED"]),
                safe_object(true)
            ),
            0..4
        )
        .prop_map(|events| {
            let text: String = events
                .into_iter()
                .map(|(t, o)| obj(vec![("type", s(t)), ("object", o)]).text(false) + "\n")
                .collect();
            (text, Framing::WatchEvents)
        }),
        prop::collection::vec((safe_raw(), safe_object(true)), 0..3).prop_map(|rows| {
            let rows = rows
                .into_iter()
                .map(|(cell, o)| {
                    let J::Obj(m) = o else { unreachable!() };
                    let metadata = m.into_iter().find(|(k, _)| k == "metadata").map(|(_, v)| v);
                    obj(vec![
                        ("cells", J::Arr(vec![J::Str(cell), J::Lit("3".into())])),
                        (
                            "object",
                            obj(vec![
                                ("kind", s("PartialObjectMetadata")),
                                ("apiVersion", s("meta.k8s.io/v1")),
                                ("metadata", metadata.unwrap_or(J::Lit("null".into()))),
                            ]),
                        ),
                    ])
                })
                .collect();
            let table = obj(vec![
                ("kind", s("Table")),
                ("apiVersion", s("meta.k8s.io/v1")),
                ("metadata", obj(vec![("resourceVersion", s("9"))])),
                (
                    "columnDefinitions",
                    J::Arr(vec![obj(vec![("name", s("Name")), ("type", s("string"))])]),
                ),
                ("rows", J::Arr(rows)),
            ]);
            (table.text(false) + "\n", Framing::Json)
        }),
    ]
}

/// A secret value: distinctive, at least 12 bytes, base64 alphabet.
fn secret_value() -> impl Strategy<Value = String> {
    "[A-Za-z0-9+/]{12,40}"
}

fn env_entry() -> impl Strategy<Value = J> {
    (
        prop::sample::select(vec![
            "DB_PASSWORD",
            "API_TOKEN",
            "aws_secret_access_key",
            "MODE",
            "LOG_LEVEL",
            "Author",
        ]),
        prop_oneof![secret_value(), safe_raw()],
        any::<bool>(),
    )
        .prop_map(|(name, value, value_first)| {
            if value_first {
                obj(vec![("value", J::Str(value)), ("name", s(name))])
            } else {
                obj(vec![("name", s(name)), ("value", J::Str(value))])
            }
        })
}

fn pod_spec() -> impl Strategy<Value = J> {
    prop::collection::vec(prop::collection::vec(env_entry(), 0..4), 1..3).prop_map(|cs| {
        let containers = cs
            .into_iter()
            .enumerate()
            .map(|(i, env)| {
                obj(vec![
                    ("name", s(&format!("c{i}"))),
                    ("image", s("registry.example.com/app:1")),
                    ("env", J::Arr(env)),
                ])
            })
            .collect();
        obj(vec![("containers", J::Arr(containers))])
    })
}

/// An object that has things to mask (or might), in Go's field order or, with `sorted`, in
/// the sorted order kubectl and the last-applied annotation use.
fn secretish_object(with_kind: bool) -> impl Strategy<Value = J> {
    let secret = (
        prop::collection::btree_map("[a-z.-]{1,8}", secret_value(), 0..4),
        any::<bool>(),
        prop::option::of(prop::collection::btree_map(
            "[a-z]{1,8}",
            secret_value(),
            1..3,
        )),
    )
        .prop_map(move |(data, sorted, string_data)| {
            let data = J::Obj(data.into_iter().map(|(k, v)| (k, J::Str(v))).collect());
            let mut annotations = Vec::new();
            if let Some(sd) = string_data {
                let sd = J::Obj(sd.into_iter().map(|(k, v)| (k, J::Str(v))).collect());
                let applied = obj(vec![
                    ("apiVersion", s("v1")),
                    ("data", data.clone()),
                    ("kind", s("Secret")),
                    ("metadata", obj(vec![("name", s("x"))])),
                    ("stringData", sd),
                ]);
                annotations.push((
                    "kubectl.kubernetes.io/last-applied-configuration",
                    J::Str(escape(&(applied.text(false) + "\n"))),
                ));
            }
            let metadata = obj(vec![("name", s("db")), ("annotations", obj(annotations))]);
            let mut m = Vec::new();
            if sorted {
                m.push(("apiVersion", s("v1")));
                m.push(("data", data));
                if with_kind {
                    m.push(("kind", s("Secret")));
                }
                m.push(("metadata", metadata));
                m.push(("type", s("Opaque")));
            } else {
                if with_kind {
                    m.push(("kind", s("Secret")));
                    m.push(("apiVersion", s("v1")));
                }
                m.push(("metadata", metadata));
                m.push(("data", data));
                m.push(("type", s("Opaque")));
            }
            obj(m)
        });
    let pod = (pod_spec(), any::<bool>()).prop_map(move |(spec, template)| {
        let mut m = Vec::new();
        if with_kind {
            m.push(("kind", s(if template { "Deployment" } else { "Pod" })));
            m.push(("apiVersion", s(if template { "apps/v1" } else { "v1" })));
        }
        m.push(("metadata", obj(vec![("name", s("p"))])));
        if template {
            m.push((
                "spec",
                obj(vec![
                    ("replicas", J::Lit("2".into())),
                    ("template", obj(vec![("spec", spec)])),
                ]),
            ));
        } else {
            m.push(("spec", spec));
        }
        obj(m)
    });
    let token = secret_value().prop_map(move |t| {
        let mut m = Vec::new();
        if with_kind {
            m.push(("kind", s("TokenRequest")));
            m.push(("apiVersion", s("authentication.k8s.io/v1")));
        }
        m.push(("metadata", obj(vec![("name", s("sa"))])));
        m.push((
            "status",
            obj(vec![
                ("token", J::Str(t)),
                ("expirationTimestamp", s("2024-05-02T10:00:00Z")),
            ]),
        ));
        obj(m)
    });
    let database =
        (secret_value(), secret_value(), safe_value()).prop_map(move |(pw, key, extra)| {
            let mut m = Vec::new();
            if with_kind {
                m.push(("kind", s("Database")));
                m.push(("apiVersion", s("db.example.com/v1")));
            }
            m.push((
                "spec",
                obj(vec![
                    ("password", J::Str(pw)),
                    (
                        "users",
                        J::Arr(vec![
                            obj(vec![("name", s("admin")), ("key", J::Str(key))]),
                            obj(vec![("name", s("reader")), ("key", s("r"))]),
                        ]),
                    ),
                    ("extra", extra),
                ]),
            ));
            obj(m)
        });
    prop_oneof![
        3 => secret,
        2 => pod,
        1 => token,
        1 => database,
        1 => safe_object(with_kind),
    ]
}

/// A response that may hold secrets, and how it is framed.
fn secretish_response() -> impl Strategy<Value = (String, Framing)> {
    prop_oneof![
        (secretish_object(true), any::<bool>())
            .prop_map(|(o, pretty)| (o.text(pretty) + "\n", Framing::Json)),
        (
            prop::sample::select(vec!["SecretList", "PodList", "List", "DeploymentList"]),
            prop::collection::vec(secretish_object(false), 0..4),
        )
            .prop_map(|(kind, items)| {
                let list = obj(vec![
                    ("kind", s(kind)),
                    ("apiVersion", s("v1")),
                    ("metadata", obj(vec![("resourceVersion", s("7"))])),
                    ("items", J::Arr(items)),
                ]);
                (list.text(false) + "\n", Framing::Json)
            }),
        prop::collection::vec(
            (
                prop::sample::select(vec!["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]),
                secretish_object(true)
            ),
            0..4
        )
        .prop_map(|events| {
            let text: String = events
                .into_iter()
                .map(|(t, o)| obj(vec![("type", s(t)), ("object", o)]).text(false) + "\n")
                .collect();
            (text, Framing::WatchEvents)
        }),
        prop::collection::vec(secretish_object(true), 0..3).prop_map(|objects| {
            let rows = objects
                .into_iter()
                .map(|o| {
                    obj(vec![
                        ("cells", J::Arr(vec![s("x"), J::Lit("1".into())])),
                        ("object", o),
                    ])
                })
                .collect();
            let table = obj(vec![
                ("kind", s("Table")),
                ("apiVersion", s("meta.k8s.io/v1")),
                ("metadata", obj(vec![])),
                ("columnDefinitions", J::Arr(vec![])),
                ("rows", J::Arr(rows)),
            ]);
            (table.text(false) + "\n", Framing::Json)
        }),
    ]
}

// ---------------------------------------------------------------------------------------------
// Checking outputs

fn parse(framing: Framing, out: &[u8]) -> Result<Vec<Value>, String> {
    match framing {
        Framing::WatchEvents => out
            .split(|&c| c == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .map(|l| serde_json::from_slice(l).map_err(|e| e.to_string()))
            .collect(),
        _ => serde_json::from_slice(out)
            .map(|v| vec![v])
            .map_err(|e| e.to_string()),
    }
}

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
        || s.starts_with("W2htYWM6")
}

/// Same shape and keys; a changed leaf is a replacement; last-applied compared inside.
fn only_masked_changed(a: &Value, b: &Value, path: &str) -> Result<(), String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            if x.keys().ne(y.keys()) {
                return Err(format!("{path}: keys differ"));
            }
            for (k, va) in x {
                let p = format!("{path}.{k}");
                match (k.as_str(), va, &y[k]) {
                    (
                        "kubectl.kubernetes.io/last-applied-configuration",
                        Value::String(sa),
                        Value::String(sb),
                    ) if sa != sb && sb != "[masked]" => {
                        let ia: Value =
                            serde_json::from_str(sa).map_err(|e| format!("{p}: input: {e}"))?;
                        let ib: Value =
                            serde_json::from_str(sb).map_err(|e| format!("{p}: output: {e}"))?;
                        only_masked_changed(&ia, &ib, &p)?;
                    }
                    (_, va, vb) => only_masked_changed(va, vb, &p)?,
                }
            }
            Ok(())
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                only_masked_changed(va, vb, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (x, y) if x == y => Ok(()),
        (Value::String(_), Value::String(r)) if is_replacement(r) => Ok(()),
        (Value::Number(_), Value::Number(n)) if n.as_u64() == Some(0) => Ok(()),
        (x, y) => Err(format!("{path}: {x} became {y}")),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// An oracle for corrupted Secret documents

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(Vec<u8>),
    Index,
}

/// A strict JSON reader that follows one (possibly broken) document to its first error and
/// collects the raw bytes of every string a correct masker must hide: anything under `data` or
/// `stringData` of the top-level object while that object's kind is `Secret` or not yet seen.
/// A string cut off by the end or by an error counts with the bytes it has.
struct Oracle<'a> {
    b: &'a [u8],
    i: usize,
    kind: Option<Vec<u8>>,
    must_hide: Vec<Vec<u8>>,
}

impl Oracle<'_> {
    fn run(b: &[u8]) -> Vec<Vec<u8>> {
        let mut o = Oracle {
            b,
            i: 0,
            kind: None,
            must_hide: Vec::new(),
        };
        o.ws();
        let _ = o.value(&mut Vec::new());
        o.must_hide
    }

    fn ws(&mut self) {
        while self
            .b
            .get(self.i)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.i += 1;
        }
    }

    fn hidden(&self, path: &[Seg]) -> bool {
        let secret = self.kind.as_deref().is_none_or(|k| k == b"Secret");
        secret
            && path.len() >= 2
            && matches!(&path[0], Seg::Key(k) if k == b"data" || k == b"stringData")
    }

    /// A string's raw contents; `Err` with what was read when it is broken or cut off.
    fn string(&mut self) -> Result<Vec<u8>, Vec<u8>> {
        self.i += 1;
        let start = self.i;
        loop {
            let Some(&c) = self.b.get(self.i) else {
                return Err(self.b[start..].to_vec());
            };
            match c {
                b'"' => {
                    let raw = self.b[start..self.i].to_vec();
                    self.i += 1;
                    return if std::str::from_utf8(&raw).is_ok() {
                        Ok(raw)
                    } else {
                        Err(raw)
                    };
                }
                b'\\' => {
                    let ok = match self.b.get(self.i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => 2,
                        Some(b'u')
                            if self
                                .b
                                .get(self.i + 2..self.i + 6)
                                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                        {
                            6
                        }
                        _ => 0,
                    };
                    if ok == 0 {
                        return Err(self.b[start..self.i].to_vec());
                    }
                    self.i += ok;
                }
                c if c < 0x20 => return Err(self.b[start..self.i].to_vec()),
                _ => self.i += 1,
            }
        }
    }

    fn value(&mut self, path: &mut Vec<Seg>) -> Result<(), ()> {
        match self.b.get(self.i) {
            Some(b'"') => {
                let hide = self.hidden(path);
                let r = self.string();
                if hide {
                    self.must_hide.push(r.clone().unwrap_or_else(|raw| raw));
                }
                r.map(|_| ()).map_err(|_| ())
            }
            Some(b'{') => {
                self.i += 1;
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    if self.b.get(self.i) != Some(&b'"') {
                        return Err(());
                    }
                    let key = self.string().map_err(|_| ())?;
                    self.ws();
                    if self.b.get(self.i) != Some(&b':') {
                        return Err(());
                    }
                    self.i += 1;
                    self.ws();
                    let decoded: Option<String> =
                        serde_json::from_slice(&[b"\"", &key[..], b"\""].concat()).ok();
                    let key = decoded.map_or(key, String::into_bytes);
                    if path.is_empty() && key == b"kind" && self.b.get(self.i) == Some(&b'"') {
                        let start = self.i;
                        self.string().map_err(|_| ())?;
                        self.kind = serde_json::from_slice::<String>(&self.b[start..self.i])
                            .ok()
                            .map(String::into_bytes);
                    } else {
                        path.push(Seg::Key(key));
                        let r = self.value(path);
                        path.pop();
                        r?;
                    }
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(()),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    path.push(Seg::Index);
                    let r = self.value(path);
                    path.pop();
                    r?;
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(()),
                    }
                }
            }
            Some(_) => {
                let start = self.i;
                while self
                    .b
                    .get(self.i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || b"+-.".contains(c))
                {
                    self.i += 1;
                }
                let lit = &self.b[start..self.i];
                let ok = matches!(lit, b"true" | b"false" | b"null")
                    || std::str::from_utf8(lit)
                        .ok()
                        .and_then(|l| serde_json::from_str::<serde_json::Number>(l).ok())
                        .is_some();
                if ok { Ok(()) } else { Err(()) }
            }
            None => Err(()),
        }
    }
}

/// A Secret document, in Go's order or sorted, and its data values.
fn secret_document() -> impl Strategy<Value = (String, Vec<String>)> {
    (
        prop::collection::btree_map("[a-z.-]{1,8}", secret_value(), 1..4),
        any::<bool>(),
        safe_raw(),
    )
        .prop_map(|(data, sorted, name)| {
            let values: Vec<String> = data.values().cloned().collect();
            let d = J::Obj(data.into_iter().map(|(k, v)| (k, J::Str(v))).collect());
            let meta = obj(vec![("name", J::Str(name)), ("namespace", s("dev"))]);
            let doc = if sorted {
                obj(vec![
                    ("apiVersion", s("v1")),
                    ("data", d),
                    ("kind", s("Secret")),
                    ("metadata", meta),
                    ("type", s("Opaque")),
                ])
            } else {
                obj(vec![
                    ("kind", s("Secret")),
                    ("apiVersion", s("v1")),
                    ("metadata", meta),
                    ("data", d),
                    ("type", s("Opaque")),
                ])
            };
            (doc.text(false) + "\n", values)
        })
}

// ---------------------------------------------------------------------------------------------
// Properties

/// `cases` per property (CI), or `PROPTEST_CASES` for a longer search by hand.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn chunking_does_not_change_kubernetes_json(
        (text, framing) in prop_oneof![secretish_response(), safe_response()],
        cuts in prop::collection::vec(any::<Index>(), 0..24),
        custom in any::<bool>(),
    ) {
        let input = text.as_bytes();
        let whole = mask(set(custom), framing, input);
        prop_assert_eq!(&whole.error, &None, "{}", text);
        let pieces = split(input, &cuts);
        let chunked = mask_pieces(set(custom), framing, pieces.iter().copied());
        prop_assert_eq!(&chunked, &whole);
        let bytewise = mask_pieces(set(custom), framing, input.chunks(1));
        prop_assert_eq!(&bytewise, &whole);
    }

    #[test]
    fn chunking_does_not_change_the_outcome_for_any_bytes(
        input in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            // JSON-ish bytes reach deeper into the state machine.
            prop::collection::vec(prop::sample::select(b"{}[]:,\"\\ nu01e-.tfx\n".to_vec()), 0..200),
            // A valid response with bytes overwritten.
            (secretish_response(), prop::collection::vec((any::<Index>(), any::<u8>()), 1..4)).prop_map(|((t, _), flips)| {
                let mut b = t.into_bytes();
                let n = b.len();
                for (at, v) in flips { if n > 0 { b[at.index(n)] = v; } }
                b
            }),
        ],
        framing in prop::sample::select(vec![Framing::Json, Framing::WatchEvents, Framing::Text]),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
    ) {
        let whole = mask(set(false), framing, &input);
        let chunked = mask_pieces(set(false), framing, split(&input, &cuts));
        let bytewise = mask_pieces(set(false), framing, input.chunks(1));
        for other in [&chunked, &bytewise] {
            prop_assert_eq!(code(other), code(&whole));
            prop_assert_eq!(&other.out, &whole.out, "emitted bytes differ");
        }
    }

    #[test]
    fn nothing_to_mask_means_identical_bytes(
        (text, framing) in safe_response(),
        cuts in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let mut m = Masker::with(set(false), framing);
        let mut out = Vec::new();
        for p in split(text.as_bytes(), &cuts) {
            m.feed_into(p, &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        m.finish_into(&mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(!m.masked_anything(), "masked something in {}", text);
        prop_assert_eq!(String::from_utf8_lossy(&out), text.as_str());
    }

    #[test]
    fn masked_output_parses_and_only_masked_values_change(
        (text, framing) in secretish_response(),
        custom in any::<bool>(),
    ) {
        let got = mask(set(custom), framing, text.as_bytes());
        prop_assert_eq!(&got.error, &None);
        let input = parse(framing, text.as_bytes()).map_err(TestCaseError::fail)?;
        let output = parse(framing, &got.out)
            .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&got.out))))?;
        prop_assert_eq!(input.len(), output.len());
        for (a, b) in input.iter().zip(&output) {
            only_masked_changed(a, b, "$").map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn corrupted_secret_documents_never_emit_secret_data(
        (text, values) in secret_document(),
        truncate in prop::option::of(any::<Index>()),
        flips in prop::collection::vec((any::<Index>(), any::<u8>()), 0..4),
        cuts in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let mut doc = text.into_bytes();
        let n = doc.len();
        for (at, v) in &flips {
            doc[at.index(n)] = *v;
        }
        if let Some(t) = truncate {
            doc.truncate(t.index(n + 1));
        }
        let must_hide = Oracle::run(&doc);
        let got = mask_pieces(set(false), Framing::Json, split(&doc, &cuts));
        for v in must_hide.iter().filter(|v| v.len() >= 8) {
            prop_assert!(!find(&got.out, v), "emitted {:?} from {:?}", String::from_utf8_lossy(v), String::from_utf8_lossy(&doc));
        }
        // Without flips the oracle must see every data value (else it is too lenient).
        if flips.is_empty() && truncate.is_none() {
            prop_assert_eq!(must_hide.len(), values.len());
            prop_assert!(got.error.is_none());
        }
    }

    #[test]
    fn truncated_responses_never_emit_a_secret(
        (text, framing) in secretish_response(),
        cut in any::<Index>(),
        custom in any::<bool>(),
    ) {
        // Every string value of the full response that a mask replaced: none of it (not even
        // the part before the cut) may come out of a truncated response.
        let whole = mask(set(custom), framing, text.as_bytes());
        let input = parse(framing, text.as_bytes()).map_err(TestCaseError::fail)?;
        let output = parse(framing, &whole.out).map_err(TestCaseError::fail)?;
        let mut hidden = Vec::new();
        for (a, b) in input.iter().zip(&output) {
            masked_strings(a, b, &mut hidden);
        }
        let bytes = text.as_bytes();
        let at = cut.index(bytes.len() + 1);
        let got = mask(set(custom), framing, &bytes[..at]);
        // A value may sit in two places, masked in one and rightly shown in the other (a
        // Secret-shaped item of a PodList, and the Secret in its last-applied annotation): only
        // what the whole response never shows counts.
        let hidden: Vec<&String> =
            hidden.iter().filter(|h| h.len() >= 12 && !find(&whole.out, &h.as_bytes()[..8])).collect();
        for h in hidden {
            let probe = &h.as_bytes()[..8];
            prop_assert!(!find(&got.out, probe), "truncated at {} emitted part of {:?}", at, h);
        }
    }

    #[test]
    fn after_an_error_nothing_more_comes_out(
        input in prop::collection::vec(any::<u8>(), 1..100),
        more in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..5),
        framing in prop::sample::select(vec![Framing::Json, Framing::WatchEvents]),
    ) {
        let mut m = Masker::with(set(false), framing);
        let mut out = Vec::new();
        let first = match m.feed_into(&input, &mut out) {
            Err(e) => e,
            Ok(()) => match m.finish_into(&mut out) {
                Err(e) => e,
                Ok(()) => return Ok(()),
            },
        };
        let emitted = out.len();
        for chunk in &more {
            prop_assert_eq!(m.feed_into(chunk, &mut out), Err(first.clone()));
            prop_assert_eq!(m.feed(chunk), Err(first.clone()));
        }
        prop_assert_eq!(m.finish_into(&mut out), Err(first.clone()));
        prop_assert_eq!(m.finish(), Err(first.clone()));
        prop_assert_eq!(out.len(), emitted, "bytes came out after the error");
    }

    #[test]
    fn gzip_gives_the_same_output_as_plain(
        (text, framing) in secretish_response(),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let target = if framing == Framing::WatchEvents {
            "/api/v1/namespaces/dev/secrets?watch=1"
        } else {
            "/api/v1/namespaces/dev/secrets"
        };
        let req = kubeleash_core::request::classify("GET", target, &http::HeaderMap::new()).unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(text.as_bytes()).unwrap();
        let gz = enc.finish().unwrap();
        let mut m = Masker::new(set(false), &req, Some("application/json"), Some("gzip")).unwrap();
        let mut out = Vec::new();
        for p in split(&gz, &cuts) {
            m.feed_into(p, &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        m.finish_into(&mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // The same request, not compressed (the request matters: a response to a request for
        // Secrets is judged as Secrets too).
        let mut plain = Masker::new(set(false), &req, Some("application/json"), None).unwrap();
        let mut want = plain.feed(text.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        plain.finish_into(&mut want).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(out, want);
    }
}

/// The input strings whose output counterpart is a mask's replacement.
fn masked_strings(a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                let Some(vb) = y.get(k) else { continue };
                if let (Value::String(sa), Value::String(sb)) = (va, vb)
                    && k == "kubectl.kubernetes.io/last-applied-configuration"
                    && sa != sb
                {
                    if let (Ok(ia), Ok(ib)) = (serde_json::from_str(sa), serde_json::from_str(sb)) {
                        masked_strings(&ia, &ib, out);
                    }
                    continue;
                }
                masked_strings(va, vb, out);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for (va, vb) in x.iter().zip(y) {
                masked_strings(va, vb, out);
            }
        }
        // Whole replacements only: a detector keeps the text around what it found.
        (Value::String(sa), Value::String(sb))
            if sa != sb && is_replacement(sb) && !sb.contains("[masked:") =>
        {
            out.push(sa.clone())
        }
        _ => {}
    }
}

#[test]
fn the_oracle_sees_what_it_should() {
    let doc = br#"{"kind":"Secret","metadata":{"name":"x","data":{"k":"not-secret-in-metadata"}},"data":{"a":"c2VjcmV0LXZhbHVl","b":{"c":"bmVzdGVkLXNlY3JldA=="}},"type":"Opaque"}"#;
    let hide = Oracle::run(doc);
    assert_eq!(
        hide,
        vec![
            b"c2VjcmV0LXZhbHVl".to_vec(),
            b"bmVzdGVkLXNlY3JldA==".to_vec()
        ]
    );
    // A ConfigMap's data is not the Secret's.
    assert!(Oracle::run(br#"{"kind":"ConfigMap","data":{"a":"plain-value-here"}}"#).is_empty());
    // Kind not seen yet: every rule applies.
    assert_eq!(
        Oracle::run(br#"{"data":{"a":"c2VjcmV0LXZhbHVl"},"kind":"ConfigMap"}"#).len(),
        1
    );
    // Cut off inside a value: what was read counts.
    assert_eq!(
        Oracle::run(br#"{"kind":"Secret","data":{"a":"c2VjcmV0"#),
        vec![b"c2VjcmV0".to_vec()]
    );
    // Stops at the first error.
    assert!(Oracle::run(br#"{"kind":"Secret",x"data":{"a":"c2VjcmV0LXZhbHVl"}}"#).is_empty());
}
