//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), decoded to the
//! JSON the API server's own types would write for them, so that policy conditions, mask-marker
//! checks and approvers see what kubectl's typed `create` commands and client-go really send.
//!
//! The wire format is read by `prost-reflect` against the descriptors of Kubernetes'
//! `generated.proto` files; the JSON names, inline fields and kinds come from the Go types
//! (`tools/k8s-descriptors/generate.sh` makes both from one release). Wherever Go's reading could
//! differ from this one (an unknown kind, an envelope with a content encoding, malformed bytes,
//! invalid UTF-8 in a string, a number Go would not write) the body is refused, never guessed.

mod go_time;
mod render;
mod schema;
mod wire;

use std::cell::Cell;

use prost_reflect::{DynamicMessage, Value as Pb};
use serde_json::Value;

use super::BodyError;
use render::Render;

/// The four bytes every Kubernetes protobuf body starts with.
pub(super) const MAGIC: &[u8] = b"k8s\0";

/// The envelope around every object: `runtime.Unknown`.
const UNKNOWN: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";

/// Decode a protobuf body to its JSON object, `apiVersion` and `kind` included, nesting no
/// deeper than `max_depth` (the JSON limit).
pub(super) fn decode(body: &[u8], max_depth: usize) -> Result<Value, BodyError> {
    let bounds = Bounds {
        max_depth,
        fields: Cell::new(0),
        values: Cell::new(render::MAX_VALUES),
    };
    envelope(body, &bounds, 0).map_err(|reason| BodyError::Protobuf { reason })
}

/// What one body may cost, shared by the objects embedded in it.
struct Bounds {
    max_depth: usize,
    /// Wire fields read so far (at most [`wire::MAX_FIELDS`]).
    fields: Cell<usize>,
    /// JSON values still allowed (see [`render::MAX_VALUES`]).
    values: Cell<usize>,
}

fn envelope(body: &[u8], bounds: &Bounds, depth: usize) -> Result<Value, String> {
    let max_depth = bounds.max_depth;
    let schema = schema::get().map_err(str::to_string)?;
    let Some(rest) = body.strip_prefix(MAGIC) else {
        return Err("it does not start with the protobuf magic `k8s\\0`".to_string());
    };
    let unknown = schema
        .message(UNKNOWN)
        .ok_or_else(|| "the bundled descriptors have no `runtime.Unknown`".to_string())?;
    let env = DynamicMessage::decode(unknown, rest)
        .map_err(|e| format!("its envelope is not valid protobuf ({e})"))?;
    let text = |m: &DynamicMessage, f: &str| match m.get_field_by_name(f).as_deref() {
        Some(Pb::String(s)) => s.clone(),
        _ => String::new(),
    };
    let (api_version, kind) = match env.get_field_by_name("typeMeta").as_deref() {
        Some(Pb::Message(t)) => (text(t, "apiVersion"), text(t, "kind")),
        _ => (String::new(), String::new()),
    };
    if api_version.is_empty() || kind.is_empty() {
        return Err("its envelope names no apiVersion and kind".to_string());
    }
    let encoding = text(&env, "contentEncoding");
    if !encoding.is_empty() {
        return Err(format!(
            "its envelope has the content encoding \"{}\"",
            shown(&encoding)
        ));
    }
    let content_type = text(&env, "contentType");
    if !(content_type.is_empty() || content_type == "application/vnd.kubernetes.protobuf") {
        return Err(format!(
            "its envelope has the content type \"{}\"",
            shown(&content_type)
        ));
    }
    let Some(desc) = schema.kind(&api_version, &kind) else {
        return Err(format!(
            "kubeleash knows no protobuf message for apiVersion \"{}\" kind \"{}\" (custom \
             resources are JSON only)",
            shown(&api_version),
            shown(&kind)
        ));
    };
    let raw = match env.get_field_by_name("raw").as_deref() {
        Some(Pb::Bytes(b)) => b.clone(),
        _ => Default::default(),
    };
    let mut fields = bounds.fields.get();
    wire::scan(desc, &raw, depth, max_depth, &mut fields)?;
    bounds.fields.set(fields);
    let object = DynamicMessage::decode(desc.clone(), raw)
        .map_err(|e| format!("its {} is not valid protobuf ({e})", shown(&kind)))?;
    let embedded = |b: &[u8], d: usize| envelope(b, bounds, d);
    let render = Render {
        schema,
        max_depth,
        embedded: &embedded,
        budget: &bounds.values,
    };
    let Value::Object(fields) = render.message(&object, depth)? else {
        return Err(format!("its {} is not an object", shown(&kind)));
    };
    let mut out = serde_json::Map::new();
    out.insert("apiVersion".into(), api_version.into());
    out.insert("kind".into(), kind.into());
    out.extend(fields);
    Ok(Value::Object(out))
}

/// Body text for a message: printable, and short.
fn shown(s: &str) -> String {
    crate::display::printable(s).chars().take(100).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn test_bounds() -> Bounds {
        Bounds {
            max_depth: 128,
            fields: Cell::new(0),
            values: Cell::new(render::MAX_VALUES),
        }
    }

    /// The schema loads, every message Go writes by hand has a renderer, and that renderer
    /// reads fields the message really has.
    #[test]
    fn the_schema_and_the_renderers_agree() {
        let schema = schema::get().unwrap();
        let mut custom: Vec<&str> = schema.custom().collect();
        custom.sort_unstable();
        let mut rendered = render::CUSTOM.to_vec();
        rendered.sort_unstable();
        assert_eq!(custom, rendered);
        for (name, fields) in [
            (
                "k8s.io.apimachinery.pkg.apis.meta.v1.Time",
                &["seconds"][..],
            ),
            (
                "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime",
                &["seconds", "nanos"],
            ),
            ("k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1", &["Raw"]),
            ("k8s.io.apimachinery.pkg.api.resource.Quantity", &["string"]),
            (
                "k8s.io.apimachinery.pkg.util.intstr.IntOrString",
                &["type", "intVal", "strVal"],
            ),
            ("k8s.io.apimachinery.pkg.runtime.RawExtension", &["raw"]),
            (
                UNKNOWN,
                &["typeMeta", "raw", "contentEncoding", "contentType"],
            ),
            (
                "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSON",
                &["raw"],
            ),
            (
                "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool",
                &["allows", "schema"],
            ),
            (
                "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrArray",
                &["schema", "jSONSchemas"],
            ),
            (
                "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrStringArray",
                &["schema", "property"],
            ),
        ] {
            let m = schema.message(name).unwrap();
            for f in fields {
                assert!(m.get_field_by_name(f).is_some(), "{name}.{f}");
            }
        }
    }

    /// Every kind decodes from an empty object to the JSON of Go's zero value: every field of
    /// every message the kinds reach is known to the table.
    #[test]
    fn every_kind_has_a_json_form() {
        let schema = schema::get().unwrap();
        let mut n = 0;
        for (api_version, kind, desc) in schema.all_kinds() {
            let bounds = test_bounds();
            let render = Render {
                schema,
                max_depth: 128,
                embedded: &|b: &[u8], d: usize| envelope(b, &bounds, d),
                budget: &bounds.values,
            };
            let got = render.message(&DynamicMessage::new(desc.clone()), 0);
            assert!(got.is_ok(), "{api_version} {kind}: {got:?}");
            n += 1;
        }
        assert!(n > 500, "only {n} kinds");
    }

    #[test]
    fn nesting_is_bounded() {
        // A CustomResourceDefinition's schema nests JSONSchemaProps without limit.
        let schema = schema::get().unwrap();
        let props = schema
            .message("k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps")
            .unwrap();
        let mut m = DynamicMessage::new(props.clone());
        for _ in 0..200 {
            let mut outer = DynamicMessage::new(props.clone());
            let mut map = std::collections::HashMap::new();
            map.insert(prost_reflect::MapKey::String("a".into()), Pb::Message(m));
            outer.set_field_by_name("properties", Pb::Map(map));
            m = outer;
        }
        let bounds = test_bounds();
        let render = Render {
            schema,
            max_depth: 128,
            embedded: &|b: &[u8], d: usize| envelope(b, &bounds, d),
            budget: &bounds.values,
        };
        let err = render.message(&m, 0).unwrap_err();
        assert!(err.contains("deeper than 127"), "{err}");
    }
}
