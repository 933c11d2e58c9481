//! Content negotiation: which representation the client asked for in `Accept`, and what a request
//! body's `Content-Type` says it is. Mirrors `pkg/endpoints/handlers/negotiation`.

use crate::status::ApiError;

/// The representation of a resource response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    Yaml,
    /// `as=Table`, with the `meta.k8s.io` version asked for (`v1` or `v1beta1`).
    Table(&'static str),
    /// `as=PartialObjectMetadata` or `as=PartialObjectMetadataList`.
    Metadata {
        version: &'static str,
        list: bool,
    },
}

impl Output {
    /// The response `Content-Type`. Transformations keep their parameters, as the API server does.
    pub fn content_type(self) -> String {
        match self {
            Output::Json => "application/json".to_owned(),
            Output::Yaml => "application/yaml".to_owned(),
            Output::Table(v) => format!("application/json;as=Table;v={v};g=meta.k8s.io"),
            Output::Metadata { version, list } => format!(
                "application/json;as=PartialObjectMetadata{};v={version};g=meta.k8s.io",
                if list { "List" } else { "" }
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MediaRange {
    pub kind: String,
    pub params: Vec<(String, String)>,
    q: f32,
}

impl MediaRange {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The clauses of an `Accept` header, highest quality first (stable for equal quality).
pub fn parse_accept(header: Option<&str>) -> Vec<MediaRange> {
    let mut out = Vec::new();
    for clause in header.unwrap_or("").split(',') {
        let mut parts = clause.split(';');
        let kind = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        if kind.is_empty() {
            continue;
        }
        let mut params = Vec::new();
        let mut q = 1.0;
        for p in parts {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
            if k == "q" {
                q = v.parse().unwrap_or(0.0);
            } else if !k.is_empty() {
                params.push((k, v));
            }
        }
        out.push(MediaRange { kind, params, q });
    }
    out.sort_by(|a, b| b.q.total_cmp(&a.q));
    out
}

fn meta_version(v: Option<&str>) -> Option<&'static str> {
    match v {
        Some("v1") => Some("v1"),
        Some("v1beta1") => Some("v1beta1"),
        _ => None,
    }
}

/// The representation for a get (`list == false`) or list/watch response.
pub fn resource_output(accept: Option<&str>, list: bool, watch: bool) -> Result<Output, ApiError> {
    let clauses = parse_accept(accept);
    if clauses.is_empty() {
        return Ok(Output::Json);
    }
    for c in &clauses {
        let json_like = matches!(
            c.kind.as_str(),
            "application/json" | "*/*" | "application/*"
        );
        let yaml = c.kind == "application/yaml" && !watch;
        if !json_like && !yaml {
            // Protobuf, CBOR and anything else: the sandbox writes none of them, and the
            // clients that ask for them list JSON after.
            continue;
        }
        let as_ = c.param("as");
        if as_.is_none() {
            return Ok(if yaml { Output::Yaml } else { Output::Json });
        }
        if c.param("g") != Some("meta.k8s.io") || yaml {
            continue;
        }
        let Some(version) = meta_version(c.param("v")) else {
            continue;
        };
        match as_ {
            Some("Table") => return Ok(Output::Table(version)),
            Some("PartialObjectMetadata") if !list => {
                return Ok(Output::Metadata {
                    version,
                    list: false,
                });
            }
            Some("PartialObjectMetadataList") if list => {
                return Ok(Output::Metadata {
                    version,
                    list: true,
                });
            }
            Some("PartialObjectMetadata") | Some("PartialObjectMetadataList") => {
                let (asked, got) = if list {
                    ("PartialObjectMetadata", "a list")
                } else {
                    ("PartialObjectMetadataList", "not a list")
                };
                return Err(ApiError::not_acceptable(format!(
                    "you requested {asked}, but the requested object is {got}"
                )));
            }
            _ => continue,
        }
    }
    Err(ApiError::not_acceptable(
        "only the following media types are accepted: application/json, application/yaml",
    ))
}

/// What a create or update body is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Yaml,
    Protobuf,
}

fn media_type(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// The format of a create/update body; an empty `Content-Type` means JSON.
pub fn body_format(content_type: Option<&str>) -> Result<BodyFormat, ApiError> {
    match media_type(content_type).to_ascii_lowercase().as_str() {
        "" | "application/json" => Ok(BodyFormat::Json),
        "application/yaml" => Ok(BodyFormat::Yaml),
        "application/vnd.kubernetes.protobuf" => Ok(BodyFormat::Protobuf),
        _ => Err(ApiError::unsupported_media_type(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf",
        )),
    }
}

/// The four patch types the API server accepts for built-in kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

/// The patch type; compared case-sensitively after cutting parameters, as `handlers/patch.go` does.
pub fn patch_type(content_type: Option<&str>) -> Result<PatchType, ApiError> {
    match media_type(content_type).as_str() {
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
        "application/apply-patch+yaml" => Ok(PatchType::Apply),
        _ => Err(ApiError::unsupported_media_type(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json",
        )),
    }
}

/// Whether `Accept-Encoding` holds a token that is exactly `gzip` (`responsewriters/compression.go`
/// compares the trimmed token, so `gzip;q=1` does not count).
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    accept_encoding
        .unwrap_or("")
        .split(',')
        .any(|t| t.trim() == "gzip")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_table_accept() {
        let a = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(
            resource_output(Some(a), true, false).ok(),
            Some(Output::Table("v1"))
        );
        let p = "application/vnd.kubernetes.protobuf,application/json";
        assert_eq!(
            resource_output(Some(p), false, false).ok(),
            Some(Output::Json)
        );
        assert!(
            resource_output(Some("application/vnd.kubernetes.protobuf"), false, false).is_err()
        );
        let m = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
        assert_eq!(
            resource_output(Some(m), true, false).ok(),
            Some(Output::Metadata {
                version: "v1",
                list: true
            })
        );
        assert!(accepts_gzip(Some("deflate, gzip")));
        assert!(!accepts_gzip(Some("gzip;q=1.0")));
    }
}
