//! Widened approvals (`kubeleash_core::policy::grant`) on arbitrary requests, widenings and
//! bodies: nothing panics, a grant always covers the request it was made of, and it never
//! covers a request with another method or path shape than the approved one.

#![no_main]

use kubeleash_core::policy::grant::{FieldRange, Grant, Widening, axes};
use kubeleash_core::request::classify;
use libfuzzer_sys::fuzz_target;

const TARGETS: &[(&str, &str, &str)] = &[
    (
        "PATCH",
        "/apis/apps/v1/namespaces/dev/deployments/web-1/scale",
        "application/merge-patch+json",
    ),
    (
        "PATCH",
        "/apis/apps/v1/namespaces/dev/deployments/web-1",
        "application/strategic-merge-patch+json",
    ),
    (
        "PATCH",
        "/api/v1/namespaces/dev/configmaps/app",
        "application/json-patch+json",
    ),
    (
        "PATCH",
        "/api/v1/namespaces/dev/configmaps/app?fieldManager=x&force=true",
        "application/apply-patch+yaml",
    ),
    (
        "PUT",
        "/api/v1/namespaces/dev/configmaps/app",
        "application/json",
    ),
    (
        "POST",
        "/api/v1/namespaces/dev/configmaps",
        "application/json",
    ),
    ("GET", "/api/v1/namespaces/dev/pods/web-1/log", ""),
    (
        "DELETE",
        "/apis/apps/v1/namespaces/dev/deployments/web-1",
        "application/json",
    ),
];

fn request(i: u8, name: Option<&str>) -> Option<kubeleash_core::request::Request> {
    let (method, target, ct) = TARGETS[usize::from(i) % TARGETS.len()];
    let target = match name {
        Some(n) => target.replace("web-1", n).replace("/app", &format!("/{n}")),
        None => target.to_string(),
    };
    let mut h = http::HeaderMap::new();
    if !ct.is_empty() {
        h.insert("content-type", http::HeaderValue::from_static(ct));
    }
    classify(method, &target, &h).ok()
}

/// `names=GLOB`, `uses=N`, `seconds=N` or a field range per line.
fn widening(spec: &str) -> Widening {
    let mut w = Widening::default();
    for line in spec.lines().take(8) {
        if let Some(g) = line.strip_prefix("names=") {
            w.names = Some(g.to_string());
        } else if let Some(n) = line.strip_prefix("uses=") {
            w.uses = n.parse().ok();
        } else if let Some(n) = line.strip_prefix("seconds=") {
            w.seconds = n.parse().ok();
        } else if let Ok(f) = line.parse::<FieldRange>() {
            w.fields.push(f);
        }
    }
    w
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(4, |b| *b == 0);
    let spec = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let approved = parts.next().unwrap_or_default();
    let later = parts.next().unwrap_or_default();
    let later_name = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let Some(req) = request(which, None) else {
        return;
    };
    let _ = axes(&req, approved, None);
    let w = widening(&spec);
    let Ok(grant) = Grant::new(&req, approved, &w) else {
        return;
    };
    assert!(
        grant.covers(&req, approved),
        "a grant covers the request it was made of"
    );
    let _ = grant.rule("agent", "0123456789abcdef", "alice");
    if let Some(other) = request(which, Some(&later_name)) {
        let _ = grant.covers(&other, later);
    }
    // Another method, path or content type is never covered.
    if let Some(other) = request(which.wrapping_add(1), None) {
        let path =
            |r: &kubeleash_core::request::Request| r.target.split('?').next().map(str::to_string);
        if other.method != req.method
            || path(&other) != path(&req)
            || other.facts.content_type != req.facts.content_type
        {
            assert!(!grant.covers(&other, approved), "another request shape");
        }
    }
});
