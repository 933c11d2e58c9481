//! A decoded protobuf message as the JSON the API server's Go types would write for it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use prost_reflect::{DynamicMessage, MapKey, ReflectMessage as _, Value as Pb};
use serde_json::{Map, Number, Value};

use super::go_time;
use super::schema::{JsonName, Schema, Shape};
use crate::body::strict_json;

/// The messages with a `MarshalJSON` of their own that [`Render::custom`] writes.
#[cfg(test)]
pub(super) const CUSTOM: &[&str] = &[
    TIME,
    MICRO_TIME,
    QUANTITY,
    INT_OR_STRING,
    RAW_EXTENSION,
    FIELDS_V1,
    UNKNOWN,
    CRD_JSON,
    PROPS_OR_ARRAY,
    PROPS_OR_BOOL,
    PROPS_OR_STRING_ARRAY,
];

const TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime";
const FIELDS_V1: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1";
const QUANTITY: &str = "k8s.io.apimachinery.pkg.api.resource.Quantity";
const INT_OR_STRING: &str = "k8s.io.apimachinery.pkg.util.intstr.IntOrString";
const RAW_EXTENSION: &str = "k8s.io.apimachinery.pkg.runtime.RawExtension";
const UNKNOWN: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";
const CRD_JSON: &str = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSON";
const PROPS_OR_ARRAY: &str =
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrArray";
const PROPS_OR_BOOL: &str =
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool";
const PROPS_OR_STRING_ARRAY: &str =
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrStringArray";

/// Why a message has no JSON form the API server would agree with.
pub(super) type Refusal = String;

/// Decodes an embedded `k8s\0` object at a nesting depth.
pub(super) type Embedded<'a> = &'a dyn Fn(&[u8], usize) -> Result<Value, Refusal>;

/// The most JSON values one body may decode to. Go writes every unset struct field as its zero
/// value, so two bytes of wire (an empty list item) can become hundreds of values; kubectl's
/// bodies decode to a few hundred, a 3 MiB JSON body to at most 1.5 million.
pub(super) const MAX_VALUES: usize = 200_000;

pub(super) struct Render<'a> {
    pub(super) schema: &'a Schema,
    /// Deepest nesting of JSON arrays and objects allowed (the JSON limit).
    pub(super) max_depth: usize,
    /// Decodes an embedded `k8s\0` object (a `RawExtension` holding protobuf).
    pub(super) embedded: Embedded<'a>,
    /// JSON values still allowed (see [`MAX_VALUES`]), shared with embedded objects.
    pub(super) budget: &'a std::cell::Cell<usize>,
}

impl Render<'_> {
    /// One more JSON value written, or the refusal once [`MAX_VALUES`] are.
    fn spend(&self) -> Result<(), Refusal> {
        let left = self.budget.get();
        if left == 0 {
            return Err(format!(
                "it decodes to more than {MAX_VALUES} JSON values (Go writes every unset field)"
            ));
        }
        self.budget.set(left - 1);
        Ok(())
    }

    /// `m` as JSON, at nesting `depth`.
    pub(super) fn message(&self, m: &DynamicMessage, depth: usize) -> Result<Value, Refusal> {
        self.spend()?;
        if depth >= self.max_depth {
            return Err(format!(
                "it nests deeper than {} levels",
                self.max_depth.saturating_sub(1)
            ));
        }
        let desc = m.descriptor();
        let name = desc.full_name();
        match self.schema.shape(name) {
            Some(Shape::Custom) => return self.custom(name, m, depth),
            Some(Shape::Array) => {
                return match m.get_field_by_name("items").as_deref() {
                    Some(list) => self.value(list, depth + 1),
                    None => Ok(Value::Array(Vec::new())),
                };
            }
            None => {}
        }
        let mut out = Map::new();
        let mut inlined = Vec::new();
        // Every field of the Go struct, set or not: Go writes an unset field as its zero value
        // unless `omitempty` leaves it out.
        let fields = match self.schema.go_fields(name) {
            Some(fields) => fields,
            // An empty Go struct (`StorageVersionSpec`) has no fields to list.
            None if desc.fields().len() == 0 => &[],
            None => return Err(format!("kubeleash does not know how Go writes `{name}`")),
        };
        for (field, go) in fields {
            let value = if m.has_field(field) {
                let v = m.get_field(field);
                if go.omitempty && !go.nillable && is_zero(&v) {
                    continue;
                }
                self.value(&v, depth + 1)?
            } else if go.nillable {
                if go.omitempty {
                    continue;
                }
                Value::Null
            } else if let Some(inner) = field.kind().as_message() {
                // A struct, never omitted: its zero value, written out.
                self.message(&DynamicMessage::new(inner.clone()), depth + 1)?
            } else if go.omitempty {
                continue;
            } else {
                self.value(&field.default_value(), depth + 1)?
            };
            match &go.json {
                JsonName::Inline => inlined.push((field.name().to_string(), value)),
                JsonName::Named(json) => {
                    out.insert(json.clone(), value);
                }
            }
        }
        // Go promotes an inline struct's fields; the outer struct's own field of the same name
        // wins (encoding/json's shallower-field rule).
        for (field, value) in inlined {
            match value {
                Value::Object(inner) => {
                    for (k, v) in inner {
                        out.entry(k).or_insert(v);
                    }
                }
                // A nil inline pointer adds nothing.
                Value::Null => {}
                _ => return Err(format!("`{name}.{field}` is inline but not an object")),
            }
        }
        Ok(Value::Object(out))
    }

    fn value(&self, v: &Pb, depth: usize) -> Result<Value, Refusal> {
        if !matches!(v, Pb::Message(_)) {
            self.spend()?;
        }
        Ok(match v {
            Pb::Bool(b) => Value::Bool(*b),
            Pb::I32(n) => (*n).into(),
            Pb::I64(n) => (*n).into(),
            Pb::U32(n) => (*n).into(),
            Pb::U64(n) => (*n).into(),
            Pb::F32(n) => float(f64::from(*n))?,
            Pb::F64(n) => float(*n)?,
            Pb::String(s) => Value::String(s.clone()),
            Pb::Bytes(b) => Value::String(STANDARD.encode(b)),
            Pb::EnumNumber(n) => (*n).into(),
            Pb::Message(m) => self.message(m, depth)?,
            Pb::List(items) => {
                if depth >= self.max_depth {
                    return Err(format!(
                        "it nests deeper than {} levels",
                        self.max_depth - 1
                    ));
                }
                Value::Array(
                    items
                        .iter()
                        .map(|i| self.value(i, depth + 1))
                        .collect::<Result<_, _>>()?,
                )
            }
            Pb::Map(entries) => {
                if depth >= self.max_depth {
                    return Err(format!(
                        "it nests deeper than {} levels",
                        self.max_depth - 1
                    ));
                }
                let mut out = Map::new();
                for (k, v) in entries {
                    out.insert(map_key(k), self.value(v, depth + 1)?);
                }
                Value::Object(out)
            }
        })
    }

    /// The hand-written JSON of a Go type with its own `MarshalJSON`.
    fn custom(&self, name: &str, m: &DynamicMessage, depth: usize) -> Result<Value, Refusal> {
        let int = |field: &str| match m.get_field_by_name(field).as_deref() {
            Some(Pb::I64(n)) => *n,
            Some(Pb::I32(n)) => i64::from(*n),
            _ => 0,
        };
        let has = |field: &str| {
            m.descriptor()
                .get_field_by_name(field)
                .is_some_and(|f| m.has_field(&f))
        };
        let bytes = |field: &str| match m.get_field_by_name(field).as_deref() {
            Some(Pb::Bytes(b)) => b.to_vec(),
            Some(Pb::String(s)) => s.as_bytes().to_vec(),
            _ => Vec::new(),
        };
        let child = |field: &str| -> Result<Option<Value>, Refusal> {
            match m.get_field_by_name(field).as_deref() {
                Some(v @ Pb::Message(_)) if has(field) => self.value(v, depth + 1).map(Some),
                _ => Ok(None),
            }
        };
        let out_of_range = || format!("a `{name}` is outside the range Go writes");
        match name {
            // `metav1.Time` keeps whole seconds (its `Unmarshal` drops the nanoseconds); an
            // empty message is Go's zero time.
            TIME | MICRO_TIME if m.fields().next().is_none() => Ok(Value::Null),
            TIME => go_time::rfc3339(int("seconds"), 0, false).ok_or_else(out_of_range),
            // Go keeps microseconds, cutting toward zero before it normalizes.
            MICRO_TIME => {
                let nanos = int("nanos");
                go_time::rfc3339(int("seconds"), nanos - nanos % 1000, true)
                    .ok_or_else(out_of_range)
            }
            // Go's zero Quantity is "0"; an empty string does not parse in Go.
            QUANTITY if !has("string") => Ok(Value::String("0".into())),
            QUANTITY => match String::from_utf8(bytes("string")) {
                Ok(q) if !q.is_empty() => Ok(Value::String(q)),
                _ => Err("a quantity is empty, which Go refuses".into()),
            },
            INT_OR_STRING => match int("type") {
                0 => Ok(int("intVal").into()),
                1 => Ok(Value::String(
                    String::from_utf8(bytes("strVal")).map_err(|_| out_of_range())?,
                )),
                t => Err(format!(
                    "an IntOrString has the type {t}, which is neither 0 nor 1"
                )),
            },
            // Go writes the raw bytes as they are: JSON, or an embedded protobuf object.
            RAW_EXTENSION | FIELDS_V1 | CRD_JSON => {
                let field = if name == FIELDS_V1 { "Raw" } else { "raw" };
                if !has(field) {
                    return Ok(Value::Null);
                }
                self.raw(&bytes(field), depth)
            }
            PROPS_OR_BOOL => match child("schema")? {
                Some(schema) => Ok(schema),
                None => Ok(Value::Bool(matches!(
                    m.get_field_by_name("allows").as_deref(),
                    Some(Pb::Bool(true))
                ))),
            },
            PROPS_OR_ARRAY => match m.get_field_by_name("jSONSchemas").as_deref() {
                Some(list @ Pb::List(items)) if !items.is_empty() => self.value(list, depth + 1),
                _ => Ok(child("schema")?.unwrap_or(Value::Null)),
            },
            PROPS_OR_STRING_ARRAY => match m.get_field_by_name("property").as_deref() {
                Some(list @ Pb::List(items)) if !items.is_empty() => self.value(list, depth + 1),
                _ => Ok(child("schema")?.unwrap_or(Value::Null)),
            },
            UNKNOWN => Err("it nests a `runtime.Unknown` envelope inside the object".to_string()),
            _ => Err(format!(
                "kubeleash has no JSON form for the message `{name}`"
            )),
        }
    }

    /// Raw bytes Go writes as they are: strict JSON, or an embedded protobuf object.
    fn raw(&self, raw: &[u8], depth: usize) -> Result<Value, Refusal> {
        if raw.starts_with(super::MAGIC) {
            return (self.embedded)(raw, depth + 1);
        }
        let limit = self.max_depth.saturating_sub(depth);
        strict_json::parse(raw, limit)
            .map_err(|e| format!("an embedded object is neither JSON nor protobuf: {e}"))
    }
}

/// Go's zero for `omitempty`: false, 0, an empty string, list, map or byte string.
fn is_zero(v: &Pb) -> bool {
    match v {
        Pb::Bool(b) => !b,
        Pb::I32(n) | Pb::EnumNumber(n) => *n == 0,
        Pb::I64(n) => *n == 0,
        Pb::U32(n) => *n == 0,
        Pb::U64(n) => *n == 0,
        Pb::F32(n) => *n == 0.0,
        Pb::F64(n) => *n == 0.0,
        Pb::String(s) => s.is_empty(),
        Pb::Bytes(b) => b.is_empty(),
        Pb::List(l) => l.is_empty(),
        Pb::Map(m) => m.is_empty(),
        Pb::Message(_) => false,
    }
}

fn float(n: f64) -> Result<Value, Refusal> {
    Number::from_f64(n)
        .map(Value::Number)
        .ok_or_else(|| "a number is not finite, which Go cannot write as JSON".to_string())
}

/// A map key as Go's `encoding/json` writes it: strings as they are, numbers in decimal.
fn map_key(k: &MapKey) -> String {
    match k {
        MapKey::String(s) => s.clone(),
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
    }
}
