//! Just enough Kubernetes protobuf to read what kubectl's typed `create` commands send
//! (`kubectl create secret|configmap|namespace|serviceaccount|token`): client-go's typed clients
//! write protobuf bodies, and the sandbox answers in JSON, which they accept. Field numbers are
//! those of `k8s.io/api/*/generated.proto`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

/// The four bytes every Kubernetes protobuf body starts with.
const MAGIC: &[u8] = b"k8s\0";

#[derive(Debug)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first()?;
            self.buf = rest;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(out);
            }
        }
        None
    }

    /// The next (field number, value), `None` at the end, `Some(Err)` on malformed input.
    fn next(&mut self) -> Option<Result<(u64, Field<'a>), String>> {
        if self.buf.is_empty() {
            return None;
        }
        let bad = || Some(Err("malformed protobuf".to_owned()));
        let Some(tag) = self.varint() else {
            return bad();
        };
        let field = match tag & 7 {
            0 => match self.varint() {
                Some(v) => Field::Varint(v),
                None => return bad(),
            },
            2 => {
                let Some(len) = self.varint().and_then(|l| usize::try_from(l).ok()) else {
                    return bad();
                };
                if len > self.buf.len() {
                    return bad();
                }
                let (b, rest) = self.buf.split_at(len);
                self.buf = rest;
                Field::Bytes(b)
            }
            1 if self.buf.len() >= 8 => {
                self.buf = &self.buf[8..];
                Field::Varint(0)
            }
            5 if self.buf.len() >= 4 => {
                self.buf = &self.buf[4..];
                Field::Varint(0)
            }
            _ => return bad(),
        };
        Some(Ok((tag >> 3, field)))
    }
}

fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let mut r = Reader { buf };
    let mut out = Vec::new();
    while let Some(f) = r.next() {
        out.push(f?);
    }
    Ok(out)
}

fn string(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A `map<string, string>` entry (or `map<string, bytes>` with `bytes_b64`).
fn map_entry(b: &[u8], bytes_b64: bool) -> Result<(String, Value), String> {
    let (mut k, mut v) = (String::new(), Value::String(String::new()));
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => k = string(x),
            (2, Field::Bytes(x)) if bytes_b64 => v = json!(STANDARD.encode(x)),
            (2, Field::Bytes(x)) => v = json!(string(x)),
            _ => {}
        }
    }
    Ok((k, v))
}

fn insert_entry(
    m: &mut Map<String, Value>,
    key: &str,
    b: &[u8],
    bytes_b64: bool,
) -> Result<(), String> {
    let (k, v) = map_entry(b, bytes_b64)?;
    let slot = m.entry(key.to_owned()).or_insert_with(|| json!({}));
    if let Some(inner) = slot.as_object_mut() {
        inner.insert(k, v);
    }
    Ok(())
}

fn push(m: &mut Map<String, Value>, key: &str, v: Value) {
    let slot = m.entry(key.to_owned()).or_insert_with(|| json!([]));
    if let Some(list) = slot.as_array_mut() {
        list.push(v);
    }
}

fn set_str(m: &mut Map<String, Value>, key: &str, b: &[u8]) {
    if !b.is_empty() {
        m.insert(key.to_owned(), json!(string(b)));
    }
}

fn object_meta(b: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => set_str(&mut m, "name", x),
            (2, Field::Bytes(x)) => set_str(&mut m, "generateName", x),
            (3, Field::Bytes(x)) => set_str(&mut m, "namespace", x),
            (6, Field::Bytes(x)) => set_str(&mut m, "resourceVersion", x),
            (11, Field::Bytes(x)) => insert_entry(&mut m, "labels", x, false)?,
            (12, Field::Bytes(x)) => insert_entry(&mut m, "annotations", x, false)?,
            (14, Field::Bytes(x)) => push(&mut m, "finalizers", json!(string(x))),
            _ => {}
        }
    }
    Ok(Value::Object(m))
}

fn local_ref(b: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    for (n, f) in fields(b)? {
        if let (1, Field::Bytes(x)) = (n, f) {
            set_str(&mut m, "name", x);
        }
    }
    Ok(Value::Object(m))
}

fn object_ref(b: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => set_str(&mut m, "kind", x),
            (2, Field::Bytes(x)) => set_str(&mut m, "namespace", x),
            (3, Field::Bytes(x)) => set_str(&mut m, "name", x),
            (4, Field::Bytes(x)) => set_str(&mut m, "uid", x),
            (5, Field::Bytes(x)) => set_str(&mut m, "apiVersion", x),
            _ => {}
        }
    }
    Ok(Value::Object(m))
}

fn token_request_spec(b: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => push(&mut m, "audiences", json!(string(x))),
            (3, Field::Bytes(x)) => {
                let mut r = Map::new();
                for (n, f) in fields(x)? {
                    match (n, f) {
                        (1, Field::Bytes(y)) => set_str(&mut r, "kind", y),
                        (2, Field::Bytes(y)) => set_str(&mut r, "apiVersion", y),
                        (3, Field::Bytes(y)) => set_str(&mut r, "name", y),
                        (4, Field::Bytes(y)) => set_str(&mut r, "uid", y),
                        _ => {}
                    }
                }
                m.insert("boundObjectRef".to_owned(), Value::Object(r));
            }
            (4, Field::Varint(v)) => {
                m.insert("expirationSeconds".to_owned(), json!(v));
            }
            _ => {}
        }
    }
    Ok(Value::Object(m))
}

/// The kind's message as JSON, for the kinds kubectl creates with typed clients.
fn message(kind: &str, b: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    for (n, f) in fields(b)? {
        match (kind, n, f) {
            (_, 1, Field::Bytes(x)) => {
                m.insert("metadata".to_owned(), object_meta(x)?);
            }
            ("Secret", 2, Field::Bytes(x)) => insert_entry(&mut m, "data", x, true)?,
            ("Secret", 3, Field::Bytes(x)) => set_str(&mut m, "type", x),
            ("Secret", 4, Field::Bytes(x)) => insert_entry(&mut m, "stringData", x, false)?,
            ("Secret", 5, Field::Varint(v)) | ("ConfigMap", 4, Field::Varint(v)) => {
                m.insert("immutable".to_owned(), json!(v != 0));
            }
            ("ConfigMap", 2, Field::Bytes(x)) => insert_entry(&mut m, "data", x, false)?,
            ("ConfigMap", 3, Field::Bytes(x)) => insert_entry(&mut m, "binaryData", x, true)?,
            ("ServiceAccount", 2, Field::Bytes(x)) => push(&mut m, "secrets", object_ref(x)?),
            ("ServiceAccount", 3, Field::Bytes(x)) => {
                push(&mut m, "imagePullSecrets", local_ref(x)?);
            }
            ("ServiceAccount", 4, Field::Varint(v)) => {
                m.insert("automountServiceAccountToken".to_owned(), json!(v != 0));
            }
            ("Namespace", 2, Field::Bytes(x)) => {
                let mut spec = Map::new();
                for (n, f) in fields(x)? {
                    if let (1, Field::Bytes(y)) = (n, f) {
                        push(&mut spec, "finalizers", json!(string(y)));
                    }
                }
                m.insert("spec".to_owned(), Value::Object(spec));
            }
            ("TokenRequest", 2, Field::Bytes(x)) => {
                m.insert("spec".to_owned(), token_request_spec(x)?);
            }
            _ => {}
        }
    }
    Ok(Value::Object(m))
}

/// The kinds this module decodes.
pub const DECODED_KINDS: &[&str] = &[
    "Secret",
    "ConfigMap",
    "Namespace",
    "ServiceAccount",
    "TokenRequest",
];

/// Decode a protobuf body (magic, `runtime.Unknown` envelope, then the kind's message) into the
/// JSON object it stands for. `Err` holds a message for the client.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body.strip_prefix(MAGIC).ok_or_else(|| {
        "provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]"
            .to_owned()
    })?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(rest)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (n, f) in fields(tm)? {
                    match (n, f) {
                        (1, Field::Bytes(x)) => api_version = string(x),
                        (2, Field::Bytes(x)) => kind = string(x),
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(x)) => raw = x,
            _ => {}
        }
    }
    if !DECODED_KINDS.contains(&kind.as_str()) {
        return Err(format!(
            "the kubeleash sandbox decodes protobuf bodies only for {}; send {kind} as application/json",
            DECODED_KINDS.join(", ")
        ));
    }
    let mut object = message(&kind, raw)?;
    if let Some(m) = object.as_object_mut() {
        m.insert("apiVersion".to_owned(), json!(api_version));
        m.insert("kind".to_owned(), json!(kind));
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_create_secret_generic() {
        // `kubectl create secret generic foo --from-literal=a=b`, as captured from kubectl 1.33.
        let body = b"k8s\x00\n\x0c\n\x02v1\x12\x06Secret\x12\x1f\n\x13\n\x03foo\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12\x06\n\x01a\x12\x01b\x1a\x00\x1a\x00\"\x00";
        assert_eq!(
            decode(body),
            Ok(
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "foo"}, "data": {"a": "Yg=="}})
            )
        );
    }

    #[test]
    fn kubectl_create_token() {
        let body = b"k8s\x00\n(\n\x18authentication.k8s.io/v1\x12\x0cTokenRequest\x12\x1a\n\x10\n\x00\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12\x00\x1a\x04\n\x00\x12\x00\x1a\x00\"\x00";
        assert_eq!(
            decode(body),
            Ok(
                json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "metadata": {}, "spec": {}})
            )
        );
        assert!(decode(b"{}").is_err());
    }
}
