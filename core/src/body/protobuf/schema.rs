//! What the decoder knows about Kubernetes' protobuf messages: the descriptors of the
//! `generated.proto` files, and, from the Go types, which message each apiVersion and kind is
//! and where JSON names a field differently. Both files are generated from one Kubernetes
//! release by `tools/k8s-descriptors/generate.sh`.

use std::collections::HashMap;
use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, FieldDescriptor, MessageDescriptor};

const DESCRIPTORS: &[u8] = include_bytes!("kubernetes.binpb");
const NAMES: &str = include_str!("kubernetes.names");

/// How JSON names a proto field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum JsonName {
    /// Under this name, which can differ from the proto file's (`uID` is `uid`).
    Named(String),
    /// Not at all: the field's own fields are the parent's (`json:",inline"`).
    Inline,
}

/// How Go's `encoding/json` writes a field of a Kubernetes type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct GoField {
    pub(super) json: JsonName,
    /// `omitempty`: left out when false, 0, "", empty or nil (a struct never is).
    pub(super) omitempty: bool,
    /// A pointer, slice or map, which Go leaves nil (written `null`) when protobuf omits it.
    pub(super) nillable: bool,
}

/// Messages whose JSON is not an object of their fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// The message of a named Go slice type: its one `items` field, as an array.
    Array,
    /// A Go type with a `MarshalJSON` of its own, rendered by hand (`Time`, `Quantity`...).
    Custom,
}

pub(super) struct Schema {
    pool: DescriptorPool,
    /// apiVersion, then kind, to the message an object of that kind is.
    kinds: HashMap<String, HashMap<String, MessageDescriptor>>,
    /// Each message of a Go type to every one of its fields, in field-number order, with how
    /// Go writes it. A message whose fields the table does not cover is absent.
    fields: HashMap<String, Vec<(FieldDescriptor, GoField)>>,
    shapes: HashMap<String, Shape>,
}

static SCHEMA: LazyLock<Result<Schema, String>> = LazyLock::new(Schema::load);

/// The schema, or why it did not load (a build defect the tests catch, never input-dependent).
pub(super) fn get() -> Result<&'static Schema, &'static str> {
    SCHEMA.as_ref().map_err(String::as_str)
}

impl Schema {
    fn load() -> Result<Schema, String> {
        let pool = DescriptorPool::decode(DESCRIPTORS)
            .map_err(|e| format!("the bundled Kubernetes descriptors do not load: {e}"))?;
        let message = |name: &str| {
            pool.get_message_by_name(name)
                .ok_or_else(|| format!("the bundled descriptors have no message `{name}`"))
        };
        let mut schema = Schema {
            pool: pool.clone(),
            kinds: HashMap::new(),
            fields: HashMap::new(),
            shapes: HashMap::new(),
        };
        let mut current: Option<MessageDescriptor> = None;
        for line in NAMES.lines().filter(|l| !l.starts_with('#')) {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["kind", api_version, kind, name] => {
                    let m = message(name)?;
                    schema
                        .kinds
                        .entry((*api_version).to_string())
                        .or_default()
                        .insert((*kind).to_string(), m);
                }
                ["message", msg] => current = Some(message(msg)?),
                ["f", field, json, flags] => {
                    let Some(m) = &current else {
                        return Err(format!("kubernetes.names: `{line}` follows no message"));
                    };
                    let Some(fd) = m.get_field_by_name(field) else {
                        return Err(format!("`{}` has no field `{field}`", m.full_name()));
                    };
                    let json = match *json {
                        "-inline" => JsonName::Inline,
                        "=" => JsonName::Named((*field).to_string()),
                        other => JsonName::Named(other.to_string()),
                    };
                    let go = GoField {
                        json,
                        omitempty: flags.contains('o'),
                        nillable: flags.contains('n'),
                    };
                    schema
                        .fields
                        .entry(m.full_name().to_string())
                        .or_default()
                        .push((fd, go));
                }
                // go-to-protobuf wraps a named slice in a message only when it is nullable
                // (`ExtraValue`, `Verbs`); others (`ValidationRules`) are plain repeated fields.
                ["array", msg] => {
                    let Some(m) = pool.get_message_by_name(msg) else {
                        continue;
                    };
                    let items = m.get_field_by_name("items");
                    if m.fields().len() != 1 || !items.is_some_and(|f| f.is_list()) {
                        return Err(format!("`{msg}` is not one repeated `items` field"));
                    }
                    schema.shapes.insert((*msg).to_string(), Shape::Array);
                }
                ["custom", msg] => {
                    message(msg)?;
                    schema.shapes.insert((*msg).to_string(), Shape::Custom);
                }
                _ => return Err(format!("kubernetes.names: cannot read the line `{line}`")),
            }
        }
        let pool_fields = |name: &str| pool.get_message_by_name(name).map(|m| m.fields().len());
        schema.fields.retain(|name, fields| {
            fields.sort_by_key(|(f, _)| f.number());
            pool_fields(name) == Some(fields.len())
        });
        Ok(schema)
    }

    /// The message named `name` (a full name).
    pub(super) fn message(&self, name: &str) -> Option<MessageDescriptor> {
        self.pool.get_message_by_name(name)
    }

    /// The message an object of `api_version` and `kind` is, if Kubernetes defines one.
    pub(super) fn kind(&self, api_version: &str, kind: &str) -> Option<&MessageDescriptor> {
        self.kinds.get(api_version)?.get(kind)
    }

    /// Every field of `message` and how Go writes it, if the message is one of Kubernetes' Go
    /// types and the table covers all its fields.
    pub(super) fn go_fields(&self, message: &str) -> Option<&[(FieldDescriptor, GoField)]> {
        self.fields.get(message).map(Vec::as_slice)
    }

    pub(super) fn shape(&self, message: &str) -> Option<Shape> {
        self.shapes.get(message).copied()
    }

    /// Every message rendered by hand, for the test that each has a renderer.
    #[cfg(test)]
    pub(super) fn custom(&self) -> impl Iterator<Item = &str> {
        self.shapes
            .iter()
            .filter(|(_, s)| **s == Shape::Custom)
            .map(|(m, _)| m.as_str())
    }

    #[cfg(test)]
    pub(super) fn all_kinds(&self) -> impl Iterator<Item = (&str, &str, &MessageDescriptor)> {
        self.kinds
            .iter()
            .flat_map(|(v, ks)| ks.iter().map(move |(k, m)| (v.as_str(), k.as_str(), m)))
    }
}
