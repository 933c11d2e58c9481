//! Mask markers written back (`docs/kubernetes-semantics.md`, "Mask markers written back"):
//! `kubectl get -o yaml | edit | kubectl replace`, or an apply of an exported manifest, sends the
//! masker's replacement values (`[masked]`, its base64 form, `[hmac:...]` tokens,
//! `[masked:<detector>]`) where the real values were, and the API server would store them over
//! the real ones.
//!
//! Any string in a write's body that holds a marker is refused, wherever it is (including inside
//! the last-applied annotation, which holds a whole object as text): simpler and stricter than
//! placing it, and a real value never needs to spell a marker.

use serde_json::Value;

/// The text of every form of marker the masker writes, as it appears inside a string: the
/// marker and the detectors' `[masked:<name>]` share `[masked`; HMAC tokens start `[hmac:`;
/// base64 of `[masked]` is `W21hc2tlZF0=`, and base64 of `[hmac:` is `W2htYWM6`.
const NEEDLES: [&str; 4] = ["[masked", "[hmac:", "W21hc2tlZF0", "W2htYWM6"];

/// Where the first marker in a decoded body is: its JSON path and the marker form found.
pub(crate) fn find(value: &Value) -> Option<(String, &'static str)> {
    let mut path = String::from("$");
    walk(value, &mut path)
}

fn walk(v: &Value, path: &mut String) -> Option<(String, &'static str)> {
    match v {
        Value::String(s) => in_text(s.as_bytes()).map(|n| (path.clone(), n)),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let found = walk(item, path);
            path.truncate(len);
            found
        }),
        Value::Object(fields) => fields.iter().find_map(|(k, item)| {
            let len = path.len();
            if k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && !k.is_empty() {
                path.push('.');
                path.push_str(k);
            } else {
                path.push_str(&format!("[{}]", Value::String(k.clone())));
            }
            let found = walk(item, path);
            path.truncate(len);
            found
        }),
        _ => None,
    }
}

/// The marker form `text` contains, if any. Also used on raw bodies kubeleash does not decode.
pub(crate) fn in_text(text: &[u8]) -> Option<&'static str> {
    NEEDLES
        .into_iter()
        .find(|n| text.windows(n.len()).any(|w| w == n.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_every_marker_form_anywhere() {
        for (body, path) in [
            (
                json!({"data": {"password": "W21hc2tlZF0="}}),
                "$.data.password",
            ),
            (json!({"stringData": {"p": "[masked]"}}), "$.stringData.p"),
            (
                json!({"spec": {"containers": [{"env": [{"name": "X", "value": "[hmac:0a1b]"}]}]}}),
                "$.spec.containers[0].env[0].value",
            ),
            (json!({"data": {"k": "W2htYWM6MGExYl0="}}), "$.data.k"),
            (
                json!({"data": {"log": "token=[masked:jwt] end"}}),
                "$.data.log",
            ),
            (
                json!({"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"p\":\"W21hc2tlZF0=\"}}"}}}),
                "$.metadata.annotations[\"kubectl.kubernetes.io/last-applied-configuration\"]",
            ),
        ] {
            assert_eq!(
                find(&body).map(|(p, _)| p),
                Some(path.to_string()),
                "{body}"
            );
        }
        assert_eq!(
            find(&json!({"data": {"password": "aHVudGVyMg=="}, "n": 1})),
            None
        );
        assert_eq!(in_text(b"a: [masked]\n"), Some("[masked"));
        assert_eq!(in_text(b"a: b\n"), None);
    }
}
