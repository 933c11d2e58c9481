//! A held write, asked of the API server before a person is: the same request with
//! `dryRun=All` (the API server runs validation and admission and answers with the object it
//! would store, storing nothing) and a GET of the live object, so the approver sees the change
//! the request makes, not its text. Both answers are masked before anything is compared for
//! show ([`kubeleash_core::diff`]).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body::Body;
use http_body_util::{BodyExt as _, Limited};
use kubeleash_core::diff;
use kubeleash_core::policy::Policy;
use kubeleash_core::request::{self as classify, Request as Classified};
use serde_json::Value;
use tower::{Service, ServiceExt as _};

use crate::approval::DryRun;
use crate::body::BoxError;
use crate::credential::Credential;
use crate::headers::{allow_request_headers, force_json};

/// The largest answer read for a dry run or a live object (the API server's own body limit).
const MAX_ANSWER: usize = kubeleash_core::body::MAX_BODY_BYTES;

/// What the dry run needs of the held request.
pub(crate) struct Held<'a> {
    pub request: &'a Classified,
    pub method: &'a str,
    pub target: &'a str,
    /// The agent's headers, as received: filtered here as they are when forwarded.
    pub headers: &'a HeaderMap,
    pub user: &'a str,
    pub body: &'a [u8],
}

/// Whether a held request changes one object the API server can dry-run and show: a create,
/// update, patch or delete of a resource or its `status` or `scale`, not already a dry run.
/// (A `serviceaccounts/token` or `pods/eviction` is no change to an object; exec, attach,
/// port-forward and proxy go to a pod or a backend.) A DELETE with a body is not: the API
/// server reads its options from the body and ignores the query's, so `dryRun=All` in the
/// query would not make it a dry run.
pub(crate) fn applies(request: &Classified, body: &[u8]) -> bool {
    let a = &request.attributes;
    a.resource_request
        && matches!(a.verb.as_str(), "create" | "update" | "patch" | "delete")
        && matches!(a.subresource.as_str(), "" | "status" | "scale")
        && !request.facts.dry_run
        && (a.verb != "delete" || body.is_empty())
}

/// The API server's answer to `held` sent with `dryRun=All`: its status and JSON. `None` when
/// it cannot be asked, or when the target with `dryRun=All` would not be read as a dry run.
pub(crate) async fn result<S, ReqB, ResB>(
    inner: &Arc<tokio::sync::Mutex<S>>,
    credential: &Credential,
    held: &Held<'_>,
) -> Option<(u16, Value)>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: Body<Data = Bytes> + From<Bytes>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    if !applies(held.request, held.body) {
        return None;
    }
    let sep = if held.target.contains('?') { '&' } else { '?' };
    let dry_target = format!("{}{sep}dryRun=All", held.target);
    // What goes out must be a dry run as kubeleash reads requests, or nothing goes out.
    let check = classify::classify(held.method, &dry_target, held.headers).ok()?;
    if !check.facts.dry_run || check.attributes != held.request.attributes {
        return None;
    }
    let mut headers = held.headers.clone();
    allow_request_headers(
        &mut headers,
        false,
        held.request.facts.impersonation.is_some(),
        held.user,
    );
    call(
        inner,
        credential,
        held.method,
        &dry_target,
        headers,
        Bytes::copy_from_slice(held.body),
    )
    .await
}

/// Ask the API server what `held` would do, for a person: the dry run's result (`dry`, when
/// the caller has it already, or asked here) against the live object, masked. `None` when it
/// cannot be asked (the credential fails, the upstream is unreachable, an answer is too large
/// or not JSON): the approver is then shown the request without it, and nothing is forwarded.
pub(crate) async fn ask<S, ReqB, ResB>(
    inner: &Arc<tokio::sync::Mutex<S>>,
    credential: &Credential,
    policy: &Policy,
    held: &Held<'_>,
    dry: Option<(u16, Value)>,
) -> Option<DryRun>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: Body<Data = Bytes> + From<Bytes>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    let a = &held.request.attributes;
    let object_path = a.path.clone();
    let (status, result) = match dry {
        Some(d) => d,
        None => result(inner, credential, held).await?,
    };
    // The live object: none for a create (unless an apply creates nothing new), and none when
    // the API server says there is none.
    let live = if a.verb == "create" {
        None
    } else {
        match call(
            inner,
            credential,
            "GET",
            &object_path,
            HeaderMap::new(),
            Bytes::new(),
        )
        .await
        {
            Some((200, v)) => Some(v),
            Some(_) => None,
            None => return None,
        }
    };
    let shown = |v: &Value| show(policy, &object_path, v);
    if !(200..300).contains(&status) {
        let message = result
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {status}"));
        // The message may quote a value from the request or the live object (a validation
        // or admission message often does): every value the masker hides in either is taken
        // out of it, in the forms a message can carry it, before the detectors run.
        let mut hidden = Vec::new();
        if let Ok(Some(mut body)) = kubeleash_core::body::decode(
            held.request,
            held.body,
            &kubeleash_core::body::BodyLimits::default(),
        ) {
            // A patch names no kind, and the masker hides every value of an object it cannot
            // place; the live object says what the patch applies to.
            if let (Some(obj), Some(live)) = (body.value.as_object_mut(), live.as_ref()) {
                for k in ["apiVersion", "kind"] {
                    if let Some(v) = live.get(k).filter(|_| !obj.contains_key(k)) {
                        obj.insert(k.to_string(), v.clone());
                    }
                }
            }
            match shown(&body.value) {
                Some(masked) if body.value.is_object() => {
                    hidden_values(&body.value, &masked, &mut hidden);
                }
                // A JSON patch (or a body that cannot be shown) is placed by no kind: every
                // value in it is treated as hidden.
                _ => every_value(&body.value, &mut hidden),
            }
        }
        if let Some(live) = &live {
            match shown(live) {
                Some(masked) => hidden_values(live, &masked, &mut hidden),
                None => every_value(live, &mut hidden),
            }
        }
        let rejected = match redact(&message, hidden) {
            Some(m) => mask_message(policy, &m),
            None => format!(
                "the API server refused the dry run with HTTP {status}; its message quotes a \
                 value kubeleash masks, so it is not shown"
            ),
        };
        return Some(DryRun {
            status,
            rejected: Some(rejected),
            changes: Vec::new(),
            diff: String::new(),
        });
    }
    // A delete answers with the object as it is being deleted, or a Status: either way the
    // object is gone once it completes.
    let after = if a.verb == "delete" {
        None
    } else {
        Some(result)
    };
    let live_shown = live.as_ref().and_then(shown);
    let after_shown = after.as_ref().and_then(shown);
    let changes = diff::changes(
        live.as_ref(),
        after.as_ref(),
        live_shown.as_ref(),
        after_shown.as_ref(),
    );
    let text = diff::render(&changes);
    Some(DryRun {
        status,
        rejected: None,
        changes,
        diff: text,
    })
}

/// One request to the API server with the layer's credential; its status and JSON answer.
/// Send one JSON request with the layer's credential and read its JSON answer (bounded);
/// `None` when it cannot be sent or read.
pub(crate) async fn call<S, ReqB, ResB>(
    inner: &Arc<tokio::sync::Mutex<S>>,
    credential: &Credential,
    method: &str,
    target: &str,
    mut headers: HeaderMap,
    body: Bytes,
) -> Option<(u16, Value)>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: Body<Data = Bytes> + From<Bytes>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    if let Some(v) = credential.header().ok()? {
        headers.insert(AUTHORIZATION, v);
    }
    force_json(&mut headers);
    headers.remove(CONTENT_LENGTH);
    if !body.is_empty() || method != "GET" {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let mut req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).ok()?)
        .uri(target)
        .body(ReqB::from(body))
        .ok()?;
    if method == "GET" {
        req.headers_mut().remove(CONTENT_TYPE);
    }
    *req.headers_mut() = headers;
    let call = {
        let mut guard = inner.lock().await;
        guard.ready().await.ok()?.call(req)
    };
    let resp = call.await.ok()?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .ok()?
        .to_bytes();
    let v = serde_json::from_slice(&body).ok()?;
    Some((status, v))
}

/// `v` as the masker would deliver it to a GET of `path`, parsed back; `None` when it cannot
/// be masked (then nothing of it is shown).
fn show(policy: &Policy, path: &str, v: &Value) -> Option<Value> {
    let get = classify::classify("GET", path, &HeaderMap::new()).ok()?;
    let mut m = policy.masker(&get, Some("application/json"), None).ok()?;
    let raw = kind_first(v)?;
    let mut out = Vec::with_capacity(raw.len());
    m.feed_into(&raw, &mut out).ok()?;
    m.finish_into(&mut out).ok()?;
    serde_json::from_slice(&out).ok()
}

/// `v` as JSON with `apiVersion` and `kind` first, as the API server writes objects: the
/// streaming masker places an object by its kind, and until it has read the kind it masks
/// as for any kind (a `data` read before `kind` is masked as a Secret's). `serde_json` writes
/// keys sorted, which puts `data` before `kind`.
pub(crate) fn kind_first(v: &Value) -> Option<Vec<u8>> {
    let Value::Object(m) = v else {
        return serde_json::to_vec(v).ok();
    };
    let mut out = b"{".to_vec();
    let first = ["apiVersion", "kind"];
    let keys = first
        .iter()
        .copied()
        .filter(|k| m.contains_key(*k))
        .chain(m.keys().map(String::as_str).filter(|k| !first.contains(k)));
    for (i, k) in keys.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, k).ok()?;
        out.push(b':');
        serde_json::to_writer(&mut out, &m[k]).ok()?;
    }
    out.push(b'}');
    Some(out)
}

/// The values in `raw` that `shown` (the same object, masked) does not show as they are.
fn hidden_values(raw: &Value, shown: &Value, out: &mut Vec<String>) {
    match (raw, shown) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    Some(w) => hidden_values(v, w, out),
                    None => every_value(v, out),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (v, w) in a.iter().zip(b) {
                hidden_values(v, w, out);
            }
        }
        (a, b) if a == b => {}
        (a, _) => every_value(a, out),
    }
}

/// Every string and number in `v`, and what a string decodes to as base64 (Secret data).
fn every_value(v: &Value, out: &mut Vec<String>) {
    use base64::Engine as _;
    match v {
        Value::String(s) => {
            if let Ok(plain) = base64::engine::general_purpose::STANDARD.decode(s)
                && let Ok(plain) = String::from_utf8(plain)
            {
                out.push(plain);
            }
            out.push(s.clone());
        }
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(a) => a.iter().for_each(|v| every_value(v, out)),
        Value::Object(m) => m.values().for_each(|v| every_value(v, out)),
        Value::Null | Value::Bool(_) => {}
    }
}

/// The shortest hidden value taken out of a message where it appears; a shorter one that
/// appears withholds the whole message (taking it out would garble the message, leaving it
/// would show it).
const MIN_REDACTED: usize = 4;

/// `message` with every form of every hidden value (as is, JSON-escaped, base64, base64url)
/// replaced by `[masked]`; `None` when a hidden value too short to take out appears in it.
fn redact(message: &str, mut hidden: Vec<String>) -> Option<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
    hidden.retain(|v| !v.is_empty());
    hidden.sort_unstable_by_key(|v| std::cmp::Reverse(v.len()));
    hidden.dedup();
    let mut out = message.to_string();
    for v in &hidden {
        let escaped = serde_json::to_string(v).unwrap_or_default();
        let escaped = escaped.trim_matches('"').to_string();
        let forms = [
            v.clone(),
            escaped,
            STANDARD.encode(v),
            URL_SAFE.encode(v),
            URL_SAFE_NO_PAD.encode(v),
        ];
        for f in forms.iter().filter(|f| !f.is_empty()) {
            if !out.contains(f.as_str()) {
                continue;
            }
            if f.len() < MIN_REDACTED {
                // Too short to cut without garbling words: only a standalone occurrence (not
                // inside a word, as `on` is in "admission") withholds the message.
                if standalone(&out, f) {
                    return None;
                }
                continue;
            }
            out = out.replace(f.as_str(), "[masked]");
        }
    }
    Some(out)
}

/// Whether `needle` occurs in `text` with no letter or digit right before or after it.
fn standalone(text: &str, needle: &str) -> bool {
    let word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    text.match_indices(needle).any(|(i, m)| {
        !word(text[..i].chars().next_back()) && !word(text[i + m.len()..].chars().next())
    })
}

/// An API server's message about a refused dry run, with what the detectors find masked (a
/// validation message can quote a value from the body).
fn mask_message(policy: &Policy, message: &str) -> String {
    let mut m = kubeleash_core::mask::Masker::with(
        Arc::clone(policy.mask_set()),
        kubeleash_core::mask::Framing::Text,
    );
    let mut out = Vec::new();
    let line = format!("{message}\n");
    match m
        .feed_into(line.as_bytes(), &mut out)
        .and_then(|()| m.finish_into(&mut out))
    {
        Ok(()) => String::from_utf8_lossy(&out).trim_end().to_string(),
        Err(_) => "the API server refused the dry run (its message could not be masked)".into(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_never_quotes_a_hidden_value_in_any_form() {
        use base64::Engine as _;
        let raw = serde_json::json!({"kind": "Secret", "data": {"password": "aHVudGVyMi1zZWNyZXQ="}, "stringData": {"x": "ab"}});
        let masked = serde_json::json!({"kind": "Secret", "data": {"password": "[masked]"}, "stringData": {"x": "[masked]"}});
        let mut hidden = Vec::new();
        hidden_values(&raw, &masked, &mut hidden);
        assert!(hidden.contains(&"hunter2-secret".to_string()), "{hidden:?}");
        let msg = "denied: password aHVudGVyMi1zZWNyZXQ= decodes to hunter2-secret";
        let out = redact(msg, hidden.clone()).unwrap();
        assert!(
            !out.contains("hunter2") && !out.contains("aHVudGVy"),
            "{out}"
        );
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("hunter2-secret");
        let out = redact(&format!("saw {url}"), hidden.clone()).unwrap();
        assert!(!out.contains(&url), "{out}");
        assert_eq!(
            redact("quotes ab here", hidden.clone()),
            None,
            "too short to cut: withheld"
        );
        assert_eq!(
            redact("nothing here", hidden).as_deref(),
            Some("nothing here")
        );
    }

    #[test]
    fn a_configmap_is_shown_as_a_get_of_it_would_be() {
        let policy = Policy::from_yaml(
            "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules: []\n",
        )
        .unwrap();
        let v = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "namespace": "dev", "managedFields": [{"manager": "kubectl-create",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {".": {}, "f:color": {}, "f:db-password": {}}}}]},
            "data": {"color": "blue", "db-password": "Old-Pa55word-41"}});
        let shown = show(&policy, "/api/v1/namespaces/dev/configmaps/x", &v).unwrap();
        assert_eq!(shown["data"]["color"], "blue", "{shown}");
        assert_eq!(shown["data"]["db-password"], "[masked]", "{shown}");
    }
}
