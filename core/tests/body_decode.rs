//! `body::decode` against the parser-differential hazards, content-type rules and patch kinds of
//! `docs/kubernetes-semantics.md`, "Request bodies and parser differentials".
//!
//! Requests are built by hand rather than classified, so these tests do not depend on the
//! classifier.

#![allow(clippy::expect_used)]

use kubeleash_core::body::{BodyError, BodyKind, BodyLimits, DecodedBody, decode};
use kubeleash_core::request::{Attributes, Facts, PatchType, Request};
use proptest::prelude::*;
use serde_json::json;

const JSON: Option<&str> = Some("application/json");
const APPLY_YAML: Option<&str> = Some("application/apply-patch+yaml");

fn request(verb: &str, content_type: Option<&str>, patch_type: Option<PatchType>) -> Request {
    let method = match verb {
        "create" => "POST",
        "update" => "PUT",
        "patch" => "PATCH",
        "delete" | "deletecollection" => "DELETE",
        _ => "GET",
    };
    Request {
        method: method.into(),
        target: "/api/v1/namespaces/dev/pods/web".into(),
        attributes: Attributes {
            resource_request: true,
            verb: verb.into(),
            api_version: "v1".into(),
            namespace: "dev".into(),
            resource: "pods".into(),
            name: "web".into(),
            ..Default::default()
        },
        facts: Facts {
            content_type: content_type.map(Into::into),
            patch_type,
            ..Default::default()
        },
    }
}

fn create(content_type: Option<&str>) -> Request {
    request("create", content_type, None)
}

fn patch(patch_type: PatchType) -> Request {
    let content_type = match patch_type {
        PatchType::Json => "application/json-patch+json",
        PatchType::Merge => "application/merge-patch+json",
        PatchType::StrategicMerge => "application/strategic-merge-patch+json",
        PatchType::Apply => "application/apply-patch+yaml",
        PatchType::ApplyCbor => "application/apply-patch+cbor",
        _ => "application/unknown",
    };
    request("patch", Some(content_type), Some(patch_type))
}

fn decode_default(request: &Request, body: &[u8]) -> Result<Option<DecodedBody>, BodyError> {
    decode(request, body, &BodyLimits::default())
}

/// The error code, or `ok` / `none`.
fn code(request: &Request, body: &[u8]) -> &'static str {
    match decode_default(request, body) {
        Ok(Some(_)) => "ok",
        Ok(None) => "none",
        Err(error) => error.code(),
    }
}

fn decoded(request: &Request, body: &[u8]) -> DecodedBody {
    decode_default(request, body)
        .expect("body decodes")
        .expect("body is not empty")
}

fn error(request: &Request, body: &[u8]) -> BodyError {
    decode_default(request, body).expect_err("body is refused")
}

// semantics "Request bodies and parser differentials": duplicate keys, escapes, UTF-8, trailing
// data.

#[test]
fn duplicate_top_level_key_is_refused() {
    let err = error(&create(JSON), br#"{"hostPID":false,"hostPID":true}"#);
    assert_eq!(err.code(), "duplicate-key");
    assert_eq!(
        err,
        BodyError::DuplicateKey {
            key: "hostPID".into(),
            path: "$".into()
        }
    );
}

#[test]
fn duplicate_key_message_says_what_to_do() {
    let err = error(
        &create(JSON),
        br#"{"spec":{"hostPID":false,"hostPID":true}}"#,
    );
    assert_eq!(
        err.to_string(),
        "request body repeats the key `hostPID` at `$.spec`; the API server keeps the last \
         value, so kubeleash refuses bodies with duplicate keys: send each key once"
    );
}

#[test]
fn duplicate_key_nested_in_containers_array_is_refused() {
    let body = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},
        "spec":{"containers":[
            {"name":"app","image":"nginx"},
            {"name":"side","securityContext":{"privileged":false,"privileged":true}}
        ]}}"#;
    let err = error(&create(JSON), body);
    assert_eq!(err.code(), "duplicate-key");
    assert_eq!(
        err,
        BodyError::DuplicateKey {
            key: "privileged".into(),
            path: "$.spec.containers[1].securityContext".into()
        }
    );
}

#[test]
fn duplicate_key_spelled_with_an_escape_is_refused() {
    let err = error(&create(JSON), br#"{"\u0068ostPID":1,"hostPID":2}"#);
    assert_eq!(err.code(), "duplicate-key");
    assert_eq!(
        err,
        BodyError::DuplicateKey {
            key: "hostPID".into(),
            path: "$".into()
        }
    );
}

#[test]
fn escaped_key_is_decoded() {
    let body = decoded(&create(JSON), br#"{"spec":{"\u0068ostPID":true}}"#);
    assert_eq!(body.value, json!({"spec": {"hostPID": true}}));
}

#[test]
fn keys_are_case_sensitive() {
    // The API server ignores `HostPID` (unknown field); kubeleash keeps it as written.
    let body = decoded(&create(JSON), br#"{"spec":{"HostPID":true}}"#);
    assert_eq!(body.value, json!({"spec": {"HostPID": true}}));
    assert_eq!(body.value["spec"].get("hostPID"), None);
}

#[test]
fn type_errors_are_left_to_the_api_server() {
    let body = decoded(&create(JSON), br#"{"spec":{"hostPID":"true"}}"#);
    assert_eq!(body.value["spec"]["hostPID"], json!("true"));
}

#[test]
fn invalid_utf8_is_refused() {
    let err = error(&create(JSON), b"{\"metadata\":{\"name\":\"a\xff\"}}");
    assert_eq!(err.code(), "invalid-utf8");
    assert_eq!(err, BodyError::InvalidUtf8 { offset: 22 });
}

#[test]
fn trailing_data_is_refused() {
    assert_eq!(
        code(&create(JSON), br#"{"hostPID":true} x"#),
        "trailing-data"
    );
    assert_eq!(
        code(&create(JSON), br#"{"hostPID":false}{"hostPID":true}"#),
        "trailing-data"
    );
    assert_eq!(code(&create(JSON), b"{}\n---\n{}"), "trailing-data");
    assert_eq!(code(&create(JSON), b"{} \r\n\t "), "ok");
}

#[test]
fn invalid_json_is_refused() {
    let err = error(&create(JSON), b"{\"a\":1,}");
    assert_eq!(err.code(), "invalid-json");
    assert!(
        matches!(err, BodyError::InvalidJson { line: 1, .. }),
        "{err:?}"
    );
    assert_eq!(code(&create(JSON), b"{'a':1}"), "invalid-json");
    assert_eq!(code(&create(JSON), br#"{"a":"\ud800"}"#), "invalid-json");
    assert_eq!(code(&create(JSON), b"\xef\xbb\xbf{}"), "invalid-json");
}

// semantics "Request bodies and parser differentials", semantics "Request bodies and parser
// differentials", semantics "Request bodies and parser differentials": YAML, protobuf, CBOR,
// unknown content types.

#[test]
fn yaml_with_yaml_1_1_boolean_is_refused() {
    let body = b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  hostPID: yes\n";
    let err = error(&create(Some("application/yaml")), body);
    assert_eq!(err.code(), "yaml-body");
    assert_eq!(err, BodyError::Yaml);
    assert!(
        err.to_string()
            .contains("send the body as JSON (`application/json`)")
    );
}

#[test]
fn yaml_with_merge_key_is_refused() {
    let body = b"base: &b {privileged: true}\nspec:\n  containers:\n  - name: a\n    securityContext: {<<: *b}\n";
    assert_eq!(code(&create(Some("application/yaml")), body), "yaml-body");
    assert_eq!(
        code(&request("update", Some("application/yaml"), None), body),
        "yaml-body"
    );
}

#[test]
fn multi_document_yaml_is_refused() {
    let body = b"---\nspec:\n  hostPID: true\n---\nspec:\n  hostPID: false\n";
    assert_eq!(code(&create(Some("application/yaml")), body), "yaml-body");
}

#[test]
fn yaml_delete_options_are_refused() {
    assert_eq!(
        code(
            &request("delete", Some("application/yaml"), None),
            b"kind: DeleteOptions\n"
        ),
        "yaml-body"
    );
}

#[test]
fn protobuf_is_refused() {
    let body = b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x03Pod\x12\x04\x0a\x02\x0a\x00";
    let err = error(&create(Some("application/vnd.kubernetes.protobuf")), body);
    assert_eq!(err.code(), "protobuf-body");
    assert!(err.to_string().contains("application/json"));
    // The same bytes claimed as JSON are not JSON.
    assert_eq!(code(&create(JSON), body), "invalid-json");
    assert_eq!(
        code(
            &request("delete", Some("application/vnd.kubernetes.protobuf"), None),
            body
        ),
        "protobuf-body"
    );
}

#[test]
fn cbor_is_refused() {
    // Self-described CBOR: tag 55799, then {"hostPID": true}.
    let body = b"\xd9\xd9\xf7\xa1\x67hostPID\xf5";
    let err = error(&create(Some("application/cbor")), body);
    assert_eq!(err.code(), "cbor-body");
    assert_eq!(
        err,
        BodyError::Cbor {
            content_type: "application/cbor".into()
        }
    );
    let err = error(&patch(PatchType::ApplyCbor), body);
    assert_eq!(err.code(), "cbor-body");
    assert_eq!(
        err,
        BodyError::Cbor {
            content_type: "application/apply-patch+cbor".into()
        }
    );
}

#[test]
fn unknown_content_type_is_refused() {
    let err = error(&create(Some("text/plain")), br#"{"spec":{}}"#);
    assert_eq!(err.code(), "unsupported-content-type");
    assert_eq!(
        err,
        BodyError::UnsupportedContentType {
            content_type: "text/plain".into(),
            verb: "create".into()
        }
    );
    assert!(err.to_string().contains("`text/plain`"), "{err}");
    // A patch type is not a create type.
    assert_eq!(
        code(&create(Some("application/merge-patch+json")), b"{}"),
        "unsupported-content-type"
    );
    assert_eq!(
        code(&request("update", Some("text/yaml"), None), b"{}"),
        "unsupported-content-type"
    );
}

#[test]
fn absent_content_type_means_json() {
    let body = decoded(&create(None), br#"{"kind":"Pod"}"#);
    assert_eq!(body.kind, BodyKind::Object);
    assert_eq!(body.value, json!({"kind": "Pod"}));
    assert_eq!(code(&create(None), br#"{"a":1,"a":2}"#), "duplicate-key");
}

#[test]
fn content_encoding_is_refused() {
    let mut req = create(JSON);
    req.facts.content_encoding = Some("gzip".into());
    let gzip =
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xab\xae\x05\x00\x43\xbf\xa6\xa3\x02\x00\x00\x00";
    let err = error(&req, gzip);
    assert_eq!(err.code(), "content-encoding");
    assert_eq!(err, BodyError::ContentEncoding("gzip".into()));
    // Even an unencoded body and an `identity` encoding: the API server never decodes.
    req.facts.content_encoding = Some("identity".into());
    assert_eq!(code(&req, b"{}"), "content-encoding");
}

// Empty bodies and limits.

#[test]
fn empty_body_is_none() {
    assert_eq!(decode_default(&create(JSON), b""), Ok(None));
    assert_eq!(decode_default(&create(None), b""), Ok(None));
    assert_eq!(
        decode_default(&request("delete", None, None), b""),
        Ok(None)
    );
    assert_eq!(decode_default(&patch(PatchType::Json), b""), Ok(None));
}

#[test]
fn whitespace_only_body_is_none() {
    assert_eq!(decode_default(&create(JSON), b" \t\r\n \n"), Ok(None));
    assert_eq!(decode_default(&patch(PatchType::Merge), b"\n"), Ok(None));
    // Not JSON whitespace.
    assert_eq!(code(&create(JSON), b"\x0c"), "invalid-json");
    assert_eq!(code(&create(JSON), "\u{a0}".as_bytes()), "invalid-json");
}

#[test]
fn empty_body_with_refused_content_type_is_still_refused() {
    assert_eq!(code(&create(Some("application/yaml")), b""), "yaml-body");
    assert_eq!(
        code(&create(Some("text/plain")), b""),
        "unsupported-content-type"
    );
}

#[test]
fn body_over_the_size_limit_is_refused() {
    let limits = BodyLimits {
        max_bytes: 16,
        ..BodyLimits::default()
    };
    let body = br#"{"a":"0123456789"}"#; // 18 bytes
    assert_eq!(
        decode(&create(JSON), body, &limits),
        Err(BodyError::TooLarge {
            limit: 16,
            actual: 18
        })
    );
    assert!(decode(&create(JSON), br#"{"a":"01234567"}"#, &limits).is_ok()); // exactly 16

    let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(3 * 1024 * 1024));
    assert_eq!(code(&create(JSON), big.as_bytes()), "body-too-large");
    // The size limit comes before everything else, even the content type.
    assert_eq!(
        code(&create(Some("application/yaml")), big.as_bytes()),
        "body-too-large"
    );
}

#[test]
fn deep_nesting_is_refused() {
    let arrays = format!(r#"{{"a":{}{}}}"#, "[".repeat(200), "]".repeat(200));
    let err = error(&create(JSON), arrays.as_bytes());
    assert_eq!(err.code(), "too-deep");
    assert_eq!(err, BodyError::TooDeep { limit: 127 });

    let objects = format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200));
    assert_eq!(code(&create(JSON), objects.as_bytes()), "too-deep");

    // Far deeper than any stack: refused by a linear scan, not by recursion.
    let huge = "[".repeat(1_000_000);
    assert_eq!(code(&create(JSON), huge.as_bytes()), "too-deep");
}

#[test]
fn depth_limit_is_configurable() {
    let limits = BodyLimits {
        max_depth: 3,
        ..BodyLimits::default()
    };
    assert!(decode(&create(JSON), br#"{"a":{"b":[]}}"#, &limits).is_ok());
    assert_eq!(
        decode(&create(JSON), br#"{"a":{"b":[[]]}}"#, &limits),
        Err(BodyError::TooDeep { limit: 3 })
    );
}

#[test]
fn nesting_up_to_serde_json_limit_is_accepted() {
    let body = format!(
        "{}{}",
        r#"{"a":"#.repeat(127),
        "}".repeat(127).replacen('}', "1}", 1)
    );
    let decoded = decoded(&create(JSON), body.as_bytes());
    assert_eq!(decoded.kind, BodyKind::Object);
}

// Kinds by verb.

#[test]
fn create_and_update_read_objects() {
    let pod =
        br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},"spec":{"hostPID":true}}"#;
    for verb in ["create", "update"] {
        let body = decoded(&request(verb, JSON, None), pod);
        assert_eq!(body.kind, BodyKind::Object);
        assert_eq!(body.value["spec"]["hostPID"], json!(true));
    }
    assert_eq!(code(&create(JSON), b"[]"), "not-an-object");
    assert_eq!(
        error(&create(JSON), b"\"pod\""),
        BodyError::NotAnObject {
            kind: BodyKind::Object,
            found: "string"
        }
    );
    assert_eq!(code(&create(JSON), b"null"), "not-an-object");
}

#[test]
fn delete_options_are_read() {
    let body =
        br#"{"kind":"DeleteOptions","apiVersion":"v1","dryRun":["All"],"gracePeriodSeconds":0}"#;
    for verb in ["delete", "deletecollection"] {
        let decoded = decoded(&request(verb, JSON, None), body);
        assert_eq!(decoded.kind, BodyKind::DeleteOptions);
        assert_eq!(decoded.value["dryRun"], json!(["All"]));
        assert_eq!(
            decoded_kind(&request(verb, None, None), body),
            Some(BodyKind::DeleteOptions)
        );
    }
    assert_eq!(
        code(
            &request("delete", JSON, None),
            br#"{"dryRun":["All"],"dryRun":[]}"#
        ),
        "duplicate-key"
    );
    assert_eq!(
        error(&request("delete", JSON, None), b"[]"),
        BodyError::NotAnObject {
            kind: BodyKind::DeleteOptions,
            found: "array"
        }
    );
    assert_eq!(
        code(&request("delete", Some("text/plain"), None), b"{}"),
        "unsupported-content-type"
    );
}

fn decoded_kind(request: &Request, body: &[u8]) -> Option<BodyKind> {
    decode_default(request, body).ok().flatten().map(|d| d.kind)
}

#[test]
fn json_patch_is_read() {
    let body = br#"[
        {"op":"add","path":"/spec/hostPID","value":true},
        {"op":"copy","from":"/spec/template/spec/containers/0/securityContext",
         "path":"/spec/template/spec/initContainers/0/securityContext"},
        {"op":"remove","path":"/metadata/labels/app.kubernetes.io~1name"},
        {"op":"test","path":"/metadata/name","value":"web"}
    ]"#;
    let decoded = decoded(&patch(PatchType::Json), body);
    assert_eq!(decoded.kind, BodyKind::JsonPatch);
    assert_eq!(decoded.value[0]["op"], json!("add"));
    assert_eq!(
        decode_default(&patch(PatchType::Json), b"[]").map(|d| d.map(|d| d.value)),
        Ok(Some(json!([])))
    );
}

#[test]
fn invalid_json_patch_is_refused() {
    let req = patch(PatchType::Json);
    for body in [
        &br#"{"op":"add","path":"/a","value":1}"#[..],
        br#"[{"path":"/a"}]"#,
        br#"[{"op":"add"}]"#,
        br#"[{"op":"frob","path":"/a"}]"#,
        br#"[{"op":"ADD","path":"/a"}]"#,
        br#"[{"op":["add"],"path":"/a"}]"#,
        br#"[{"op":"add","path":1}]"#,
        br#"[{"op":"add","path":"spec/hostPID","value":true}]"#,
        br#"[{"op":"remove","path":"/a~2"}]"#,
        br#"[{"op":"move","path":"/a"}]"#,
        br#"[{"op":"copy","path":"/a","from":"b"}]"#,
        br#"["add"]"#,
    ] {
        let err = error(&req, body);
        assert_eq!(
            err.code(),
            "invalid-json-patch",
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(
        code(&req, br#"[{"op":"add","op":"remove","path":"/a"}]"#),
        "duplicate-key"
    );
}

#[test]
fn json_patch_with_too_many_ops_is_refused() {
    let op = r#"{"op":"test","path":"/a","value":1}"#;
    let ops = |n: usize| format!("[{}]", vec![op; n].join(","));
    let limits = BodyLimits {
        max_json_patch_ops: 3,
        ..BodyLimits::default()
    };
    let req = patch(PatchType::Json);
    assert!(decode(&req, ops(3).as_bytes(), &limits).is_ok());
    assert_eq!(
        decode(&req, ops(4).as_bytes(), &limits),
        Err(BodyError::TooManyPatchOps {
            limit: 3,
            actual: 4
        })
    );
    assert!(decode_default(&req, ops(10_000).as_bytes()).is_ok());
    assert_eq!(code(&req, ops(10_001).as_bytes()), "too-many-patch-ops");
}

#[test]
fn merge_and_strategic_merge_patches_are_read() {
    let body = br#"{"spec":{"template":{"spec":{"containers":[{"name":"a","$patch":"replace"}],"$setElementOrder/containers":[{"name":"a"}]}}},"metadata":{"labels":{"x":null}}}"#;
    let merge = decoded(&patch(PatchType::Merge), body);
    assert_eq!(merge.kind, BodyKind::MergePatch);
    assert_eq!(merge.value["metadata"]["labels"]["x"], json!(null));
    let strategic = decoded(&patch(PatchType::StrategicMerge), body);
    assert_eq!(strategic.kind, BodyKind::StrategicMergePatch);
    assert_eq!(
        error(&patch(PatchType::Merge), b"[]"),
        BodyError::NotAnObject {
            kind: BodyKind::MergePatch,
            found: "array"
        }
    );
    assert_eq!(
        code(&patch(PatchType::StrategicMerge), b"1"),
        "not-an-object"
    );
    assert_eq!(
        code(
            &patch(PatchType::StrategicMerge),
            br#"{"spec":{"hostPID":false,"hostPID":true}}"#
        ),
        "duplicate-key"
    );
}

#[test]
fn apply_patch_json_is_read() {
    let body = br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"new-one"},"spec":{"template":{"spec":{"hostPID":true}}}}"#;
    let decoded = decoded(&patch(PatchType::Apply), body);
    assert_eq!(decoded.kind, BodyKind::ApplyPatch);
    assert_eq!(
        decoded.value["spec"]["template"]["spec"]["hostPID"],
        json!(true)
    );
    assert_eq!(
        code(&patch(PatchType::Apply), br#"{"a":1,"a":2}"#),
        "duplicate-key"
    );
}

#[test]
fn apply_patch_yaml_is_refused() {
    let req = patch(PatchType::Apply);
    let err = error(
        &req,
        b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  hostPID: yes\n",
    );
    assert_eq!(err.code(), "apply-not-json");
    assert!(
        err.to_string()
            .contains("kubeleash reads apply bodies as JSON only"),
        "{err}"
    );
    // Merge keys, several documents, YAML flow style that is not JSON.
    for body in [
        &b"base: &b {privileged: true}\nsc: {<<: *b}\n"[..],
        b"{\"spec\":{}}\n---\n{\"spec\":{\"hostPID\":true}}\n",
        b"---\n{\"spec\":{}}\n",
        b"{spec: {hostPID: true}}",
        b"{\"spec\":{\"hostPID\":yes}}",
        b"# comment\n{}",
    ] {
        assert_eq!(
            code(&req, body),
            "apply-not-json",
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(code(&req, b"\"apiVersion: v1\""), "not-an-object");
}

#[test]
fn apply_patch_with_raw_yaml_line_break_is_refused() {
    let req = patch(PatchType::Apply);
    let body = "{\"metadata\":{\"name\":\"a\u{2028}b\"}}";
    let err = error(&req, body.as_bytes());
    assert_eq!(err.code(), "apply-line-break");
    assert_eq!(
        err,
        BodyError::ApplyLineBreak {
            character: '\u{2028}',
            offset: 22
        }
    );
    assert_eq!(
        code(&req, "{\"a\":\"x \u{85} y\"}".as_bytes()),
        "apply-line-break"
    );
    assert_eq!(code(&req, br#"{"a":"x \u0085 y"}"#), "ok");
}

#[test]
fn patch_without_a_patch_type_is_refused() {
    let err = error(&request("patch", JSON, None), b"{}");
    assert_eq!(err.code(), "unsupported-patch-type");
    assert_eq!(
        err,
        BodyError::UnsupportedPatchType {
            content_type: Some("application/json".into())
        }
    );
    assert!(err.to_string().contains("`application/json`"), "{err}");
    let err = error(&request("patch", None, None), b"{}");
    assert_eq!(err.code(), "unsupported-patch-type");
    assert!(
        err.to_string()
            .starts_with("patch request has no content type"),
        "{err}"
    );
    // Mixed case is not a patch type to the API server (exact match), so the classifier
    // leaves `patch_type` empty.
    assert_eq!(
        code(
            &request("patch", Some("application/merge-patch+json"), None),
            b"{}"
        ),
        "unsupported-patch-type"
    );
    assert_eq!(
        code(&request("patch", Some("application/yaml"), None), b"a: 1"),
        "unsupported-patch-type"
    );
}

#[test]
fn every_error_message_is_lowercase_without_trailing_period() {
    let cases: Vec<(Request, Vec<u8>)> = vec![
        (create(JSON), br#"{"a":1,"a":2}"#.to_vec()),
        (create(Some("application/yaml")), b"a: 1".to_vec()),
        (
            create(Some("application/vnd.kubernetes.protobuf")),
            b"k8s\0".to_vec(),
        ),
        (create(Some("application/cbor")), b"\xa0".to_vec()),
        (create(Some("text/plain")), b"{}".to_vec()),
        (request("patch", None, None), b"{}".to_vec()),
        (create(JSON), b"{".to_vec()),
        (create(JSON), b"{} {}".to_vec()),
        (create(JSON), b"\xff".to_vec()),
        (create(JSON), b"[]".to_vec()),
        (patch(PatchType::Json), b"{}".to_vec()),
        (patch(PatchType::Apply), b"a: 1".to_vec()),
        (create(JSON), "[".repeat(300).into_bytes()),
    ];
    for (req, body) in cases {
        let err = error(&req, &body);
        let message = err.to_string();
        assert!(
            message.chars().next().is_some_and(char::is_lowercase),
            "{}: {message}",
            err.code()
        );
        assert!(!message.ends_with('.'), "{}: {message}", err.code());
        assert!(!err.code().is_empty());
    }
}

// Never panic, whatever the bytes.

fn requests() -> Vec<Request> {
    let mut requests = Vec::new();
    for verb in ["create", "update", "delete", "deletecollection", "get", ""] {
        for content_type in [
            None,
            Some(""),
            JSON,
            Some("application/yaml"),
            Some("application/vnd.kubernetes.protobuf"),
            Some("application/cbor"),
            Some("text/plain"),
        ] {
            requests.push(request(verb, content_type, None));
        }
    }
    for patch_type in [
        PatchType::Json,
        PatchType::Merge,
        PatchType::StrategicMerge,
        PatchType::Apply,
        PatchType::ApplyCbor,
    ] {
        requests.push(patch(patch_type));
    }
    requests.push(request("patch", JSON, None));
    requests.push(request("patch", APPLY_YAML, None));
    requests
}

fn small_limits() -> BodyLimits {
    BodyLimits {
        max_bytes: 4096,
        max_depth: 8,
        max_json_patch_ops: 4,
    }
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        for req in requests() {
            let _ = decode(&req, &body, &BodyLimits::default());
            let _ = decode(&req, &body, &small_limits());
        }
    }

    #[test]
    fn never_panics_on_json_like_text(body in r#"[\[\]{}":,0-9a-z\\ \n.eE+\-]{0,256}"#) {
        for req in requests() {
            let _ = decode(&req, body.as_bytes(), &BodyLimits::default());
            let _ = decode(&req, body.as_bytes(), &small_limits());
        }
    }

    #[test]
    fn never_panics_on_mutated_json_patches(
        ops in proptest::collection::vec(
            (
                prop_oneof![Just("add"), Just("remove"), Just("move"), Just("copy"), Just("x")],
                "[/~a-c0-2]{0,6}",
                proptest::option::of("[/~a-c0-2]{0,6}"),
            ),
            0..8,
        )
    ) {
        let body = serde_json::Value::Array(
            ops.iter()
                .map(|(op, path, from)| {
                    let mut op_object = json!({"op": op, "path": path});
                    if let (Some(from), Some(object)) = (from, op_object.as_object_mut()) {
                        object.insert("from".into(), json!(from));
                    }
                    op_object
                })
                .collect(),
        );
        let text = body.to_string();
        for limits in [BodyLimits::default(), small_limits()] {
            match decode(&patch(PatchType::Json), text.as_bytes(), &limits) {
                Ok(Some(decoded)) => prop_assert_eq!(decoded.value, body.clone()),
                Ok(None) => prop_assert!(false, "a non-empty patch decoded to nothing"),
                Err(err) => prop_assert!(
                    matches!(err.code(), "invalid-json-patch" | "too-many-patch-ops"),
                    "{}", err
                ),
            }
        }
    }

    #[test]
    fn valid_json_objects_round_trip(value in json_object()) {
        let text = value.to_string();
        let decoded = decode(&create(JSON), text.as_bytes(), &BodyLimits::default());
        prop_assert_eq!(decoded, Ok(Some(DecodedBody { kind: BodyKind::Object, value })));
    }
}

fn json_leaf() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        "\\PC{0,8}".prop_map(serde_json::Value::from),
    ]
}

fn json_object() -> impl Strategy<Value = serde_json::Value> {
    let value = json_leaf().prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map("[a-zA-Z$.]{0,6}", inner, 0..4)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    });
    proptest::collection::btree_map("[a-zA-Z]{1,6}", value, 0..4)
        .prop_map(|map| serde_json::Value::Object(map.into_iter().collect()))
}
