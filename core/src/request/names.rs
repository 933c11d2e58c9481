//! The API group, version, resource and subresource of a resource request must be valid
//! Kubernetes names (`docs/kubernetes-semantics.md`, "Names in request paths").
//!
//! The API server serves no resource under any other name (built-in plurals and subresources are
//! lowercase words; a CRD's plural is a DNS label and its group a DNS subdomain; the metrics
//! APIs add `_` in metric names), so refusing them costs real clients nothing. It matters because these segments are printed, for people,
//! into `kubectl` lines and reasons: a resource `x$(touch${IFS}PWNED)` must never get that far.

use super::{Attributes, NonCanonical};

/// Refuse `info` (already filled in) unless its group, version, resource and subresource are
/// valid names. Non-resource requests are not checked: their path is printed quoted, whole.
pub(super) fn check(info: &Attributes) -> Result<(), NonCanonical> {
    if !info.resource_request {
        return Ok(());
    }
    let invalid = |part: &'static str, segment: &str| NonCanonical::InvalidName {
        path: info.path.clone(),
        part,
        segment: segment.into(),
    };
    if !info.api_group.is_empty() && !is_dns_subdomain(&info.api_group) {
        return Err(invalid("group", &info.api_group));
    }
    if !is_dns_label(&info.api_version) {
        return Err(invalid("version", &info.api_version));
    }
    if !is_resource_name(&info.resource) {
        return Err(invalid("resource", &info.resource));
    }
    // Only the subresource may be absent; the others always have a segment by now.
    if !info.subresource.is_empty() && !is_resource_name(&info.subresource) {
        return Err(invalid("subresource", &info.subresource));
    }
    Ok(())
}

/// A resource or subresource: a DNS label, except that `_` is allowed and the length is that of
/// a subdomain, because the custom and external metrics APIs serve metric names (`http_requests`)
/// in these places. `_` needs no quoting in a shell either.
pub(crate) fn is_resource_name(s: &str) -> bool {
    let b = s.as_bytes();
    let start = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_';
    b.len() <= 253
        && b.first().is_some_and(start)
        && b.last().is_some_and(start)
        && b.iter().all(|c| start(c) || *c == b'-')
}

/// RFC 1123 label: 1 to 63 of `[a-z0-9-]`, starting and ending with a letter or digit.
pub(crate) fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    b.len() <= 63
        && b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

/// RFC 1123 subdomain: at most 253 characters of dot-separated labels.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        for ok in ["pods", "v1", "v1beta1", "a", "x-1", "0abc"] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in [
            "",
            "Pods",
            "-a",
            "a-",
            "a.b",
            "a_b",
            "x$(id)",
            &"a".repeat(64),
        ] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        for ok in ["pods", "http_requests", "queue_messages_ready", "x-1"] {
            assert!(is_resource_name(ok), "{ok}");
        }
        for bad in ["", "Pods", "-a", "a.b", "x$(id)", "a b", "a;b"] {
            assert!(!is_resource_name(bad), "{bad}");
        }
        assert!(is_dns_subdomain("apps"));
        assert!(is_dns_subdomain("rbac.authorization.k8s.io"));
        for bad in ["", "a..b", ".a", "a.", "A.io", "x`id`.io"] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
    }
}
