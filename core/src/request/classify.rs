//! The entry point: check the request is canonical, then compute the API server's
//! `RequestInfo` (`docs/kubernetes-semantics.md`, "Request classification") and the facts
//! policies need.

use super::path;
use super::query::{Param, Query};
use super::{Attributes, Facts, NonCanonical, Request, delete_options, facts, names};

/// Classify a request exactly as the API server would, or refuse a non-canonical one.
///
/// `method` is the HTTP method as sent, `target` the request target as sent (origin-form,
/// percent-encoding kept), `headers` the request headers.
///
/// Refuses (see [`NonCanonical`]) whatever kubectl never sends and the API server could read
/// differently from a gateway (semantics "Canonical request targets"): absolute-form, control or
/// non-ASCII bytes, `#`, `\`, empty or dot segments, percent-escapes or `;` in the path, `;` or bad
/// escapes in the query, repeated single-valued parameters, `dryRun` other than `All`,
/// `watch`/`proxy` with nothing after them, and non-visible-ASCII or repeated single-valued headers
/// that kubeleash reads.
///
/// Also refused: an API group, version, resource or subresource segment that is not a valid
/// Kubernetes name (see [`NonCanonical::InvalidName`]); no API server serves one, and these
/// segments are printed into the `kubectl` lines people read.
///
/// Deliberate departures from `RequestInfo`, so that a rule for `get` never covers a stream: every
/// request on an `exec`, `attach` or `portforward` subresource is `create`, whatever its method and
/// whether or not it asks to upgrade (the streaming server ignores the method, and the API server
/// demands `create` for WebSocket streams since 1.35, semantics "Privileged requests", semantics
/// "Streams and upgrades"); and a request on a `proxy` subresource that asks to upgrade is
/// `create`, since the upgraded connection is a raw tunnel to the backend (through `nodes/proxy`,
/// the kubelet's own exec).
pub fn classify(
    method: &str,
    target: &str,
    headers: &http::HeaderMap,
) -> Result<Request, NonCanonical> {
    check_method(method)?;
    let (path, raw_query) = split_target(target)?;
    let segments = path::parse(path)?;
    let query = Query::parse(raw_query)?;

    // Fill the (large) result in place rather than moving partial results around.
    let mut request = Request {
        method: method.into(),
        target: target.into(),
        attributes: Attributes::default(),
        facts: Facts::default(),
    };
    let (attributes, facts) = (&mut request.attributes, &mut request.facts);
    request_info(attributes, method, path, segments.as_slice(), &query)?;
    facts::read_headers(facts, method, headers)?;

    if starts_a_stream(attributes, facts.upgrade.is_some()) {
        attributes.verb = "create".into();
    }
    facts.dry_run = query.dry_run();
    if attributes.resource_request
        && matches!(attributes.verb.as_str(), "delete" | "deletecollection")
        && attributes.subresource != "proxy"
    {
        // Until a body says otherwise (`Request::with_body_facts`), the query's options apply.
        // A DELETE through a proxy subresource goes to the backend: no DeleteOptions there.
        let options = delete_options::from_query(&query, raw_query)?;
        facts.dry_run = options.dry_run;
        facts.delete_options = Some(options);
    }
    facts.watch = attributes.verb == "watch";
    facts.field_manager = query.get(Param::FieldManager).map(Into::into);
    facts.label_selector = query.get(Param::LabelSelector).map(Into::into);
    facts.field_selector = query.get(Param::FieldSelector).map(Into::into);
    Ok(request)
}

/// The method must be an HTTP token (RFC 9110 §5.6.2), as Go's server demands; that also makes
/// it ASCII, so lowercasing it is simple.
fn check_method(method: &str) -> Result<(), NonCanonical> {
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(NonCanonical::BadMethod {
            method: method.into(),
        });
    }
    Ok(())
}

/// Check the whole target and split it into path and query at the first `?`, as Go does.
///
/// After this the target is known to be visible ASCII without `#` or `\`, and to start with `/`.
fn split_target(target: &str) -> Result<(&str, &str), NonCanonical> {
    let is_refused_byte = |b: &u8| !matches!(b, b'!'..=b'~') || *b == b'#' || *b == b'\\';
    if let Some(bad) = target.bytes().find(is_refused_byte) {
        let target = target.into();
        return Err(match bad {
            b'#' => NonCanonical::Fragment { target },
            b'\\' => NonCanonical::Backslash { target },
            _ => NonCanonical::ControlOrNonAscii { target },
        });
    }
    if !target.starts_with('/') {
        let absolute = is_absolute_form(target);
        let target = target.into();
        return Err(if absolute {
            NonCanonical::AbsoluteForm { target }
        } else {
            NonCanonical::NotOriginForm { target }
        });
    }
    Ok(target.split_once('?').unwrap_or((target, "")))
}

/// Whether `target` starts with `scheme://` (RFC 3986 scheme syntax).
fn is_absolute_form(target: &str) -> bool {
    let Some((scheme, _)) = target.split_once("://") else {
        return false;
    };
    let mut chars = scheme.bytes();
    chars.next().is_some_and(|b| b.is_ascii_alphabetic())
        && chars.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// The API server's `RequestInfoFactory.NewRequestInfo`, on a path already known canonical,
/// written into `info` (which starts out default). `segments` are the path's leading segments
/// (at most the ones the algorithm can look at).
fn request_info(
    info: &mut Attributes,
    method: &str,
    path: &str,
    segments: &[&str],
    query: &Query<'_>,
) -> Result<(), NonCanonical> {
    info.path = path.into();

    // Steps 1-4: a non-resource request unless the path has an API prefix.
    let Some((group, mut parts)) = api_prefix(segments) else {
        info.verb = method.to_ascii_lowercase();
        return Ok(());
    };

    // Step 5: a resource request; the next segment is the version.
    info.resource_request = true;
    info.api_group = group.into();
    if let [version, rest @ ..] = parts {
        info.api_version = (*version).into();
        parts = rest;
    }

    // Step 6: a special verb (`watch`, `proxy`) in the path, else the verb of the method.
    let mut verb: &str = match parts {
        [special @ ("watch" | "proxy"), rest @ ..] => {
            if rest.is_empty() {
                return Err(NonCanonical::MissingAfterSpecialVerb {
                    path: path.into(),
                    verb: (*special).into(),
                });
            }
            parts = rest;
            special
        }
        _ => verb_of_method(method),
    };

    // Step 7: `namespaces/<ns>`. `/namespaces/<ns>` and its `status` and `finalize`
    // subresources are the namespace object itself, namespaced in its own namespace.
    if let ["namespaces", namespace, rest @ ..] = parts {
        info.namespace = (*namespace).into();
        if let [next, ..] = rest
            && !matches!(*next, "status" | "finalize")
        {
            parts = rest;
        }
    }

    // Step 8: resource / name / subresource; `proxy` never has a subresource.
    if let Some(resource) = parts.first() {
        info.resource = (*resource).into();
    }
    if let Some(name) = parts.get(1) {
        info.name = (*name).into();
    }
    if let Some(subresource) = parts.get(2)
        && verb != "proxy"
    {
        info.subresource = (*subresource).into();
    }

    // Step 9: `get` without a name is a list or a watch, possibly of one named object.
    if info.name.is_empty() && verb == "get" {
        verb = if query.watch() { "watch" } else { "list" };
        if let Some(name) = query.field_selector_name() {
            info.name = name.into_owned();
        }
    }
    // Step 10: `delete` without a name deletes a collection.
    if info.name.is_empty() && verb == "delete" {
        verb = "deletecollection";
    }
    info.verb = verb.into();
    names::check(info)
}

/// Steps 3-4: the API group (empty for the core group under `api`) and the segments after it,
/// starting with the version; `None` for a non-resource path. The prefixes are case-sensitive,
/// and both need at least two segments after the group (`/api/v1/x`, `/apis/g/v1/x`).
fn api_prefix<'s>(segments: &'s [&'s str]) -> Option<(&'s str, &'s [&'s str])> {
    match segments {
        ["api", rest @ ..] if rest.len() >= 2 => Some(("", rest)),
        ["apis", group, rest @ ..] if rest.len() >= 2 => Some((group, rest)),
        _ => None,
    }
}

/// Step 6's mapping from HTTP method to verb; methods are case-sensitive, as in Go.
fn verb_of_method(method: &str) -> &'static str {
    match method {
        "POST" => "create",
        "GET" | "HEAD" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    }
}

/// Whether a request can start a stream that a `get` rule must not cover: any request on an
/// `exec`, `attach` or `portforward` subresource (of any group: an aggregated API server may
/// serve its own), and a request that asks to upgrade on a `proxy` subresource.
fn starts_a_stream(info: &Attributes, upgrade: bool) -> bool {
    info.resource_request
        && match info.subresource.as_str() {
            "exec" | "attach" | "portforward" => true,
            "proxy" => upgrade,
            _ => false,
        }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::request::Upgrade;
    use http::{HeaderMap, HeaderValue};

    fn ok(method: &str, target: &str) -> Attributes {
        match classify(method, target, &HeaderMap::new()) {
            Ok(req) => req.attributes,
            Err(e) => panic!("{method} {target}: {e}"),
        }
    }

    fn refused(method: &str, target: &str) -> &'static str {
        match classify(method, target, &HeaderMap::new()) {
            Ok(req) => panic!("{method} {target} classified: {:?}", req.attributes),
            Err(e) => e.code(),
        }
    }

    #[test]
    fn resource_request() {
        let a = ok(
            "GET",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
        );
        assert!(a.resource_request);
        assert_eq!(
            (
                a.verb.as_str(),
                a.api_group.as_str(),
                a.api_version.as_str()
            ),
            ("get", "apps", "v1")
        );
        assert_eq!(
            (
                a.namespace.as_str(),
                a.resource.as_str(),
                a.name.as_str(),
                a.subresource.as_str()
            ),
            ("default", "deployments", "web", "scale")
        );
        assert_eq!(
            a.path,
            "/apis/apps/v1/namespaces/default/deployments/web/scale"
        );
    }

    #[test]
    fn non_resource_requests_use_the_lowercase_method() {
        for (method, target) in [
            ("GET", "/"),
            ("GET", "/api"),
            ("GET", "/api/v1"),
            ("GET", "/apis/apps/v1"),
            ("POST", "/version"),
            ("OPTIONS", "/healthz/etcd"),
            ("GET", "/API/v1/namespaces/default/secrets"),
        ] {
            let a = ok(method, target);
            assert!(!a.resource_request, "{target}");
            assert_eq!(a.verb, method.to_ascii_lowercase());
            assert_eq!(a.path, target);
            assert_eq!(a.resource, "");
        }
    }

    #[test]
    fn namespaces_special_cases() {
        let a = ok("GET", "/api/v1/namespaces/kube-system");
        assert_eq!(
            (a.namespace.as_str(), a.resource.as_str(), a.name.as_str()),
            ("kube-system", "namespaces", "kube-system")
        );
        let a = ok("PUT", "/api/v1/namespaces/x/finalize");
        assert_eq!(
            (
                a.namespace.as_str(),
                a.name.as_str(),
                a.subresource.as_str()
            ),
            ("x", "x", "finalize")
        );
        let a = ok("GET", "/api/v1/namespaces");
        assert_eq!(
            (a.verb.as_str(), a.namespace.as_str(), a.name.as_str()),
            ("list", "", "")
        );
    }

    #[test]
    fn verbs() {
        assert_eq!(ok("HEAD", "/api/v1/pods").verb, "list");
        assert_eq!(ok("OPTIONS", "/api/v1/pods").verb, "");
        assert_eq!(ok("get", "/api/v1/pods").verb, "");
        assert_eq!(
            ok("DELETE", "/api/v1/namespaces/d/pods").verb,
            "deletecollection"
        );
        assert_eq!(ok("DELETE", "/api/v1/namespaces/d/pods/p").verb, "delete");
        assert_eq!(ok("GET", "/api/v1/pods?watch").verb, "watch");
        assert_eq!(ok("GET", "/api/v1/watch/pods").verb, "watch");
        let a = ok("POST", "/api/v1/proxy/nodes/n/stats/summary");
        assert_eq!(
            (
                a.verb.as_str(),
                a.resource.as_str(),
                a.name.as_str(),
                a.subresource.as_str()
            ),
            ("proxy", "nodes", "n", "")
        );
    }

    #[test]
    fn field_selector_names_a_list_but_not_a_legacy_watch() {
        assert_eq!(
            ok(
                "GET",
                "/api/v1/namespaces/d/secrets?fieldSelector=metadata.name%3Ddb"
            )
            .name,
            "db"
        );
        assert_eq!(
            ok(
                "GET",
                "/api/v1/watch/namespaces/d/secrets?fieldSelector=metadata.name%3Ddb"
            )
            .name,
            ""
        );
        // A named DELETE with a selector is still a deletecollection: only `get` reads it.
        let a = ok(
            "DELETE",
            "/api/v1/namespaces/d/secrets?fieldSelector=metadata.name%3Ddb",
        );
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("deletecollection", ""));
    }

    #[test]
    fn refusals() {
        assert_eq!(refused("GET", "http://h/api/v1/pods"), "absolute-form");
        assert_eq!(refused("GET", "api/v1/pods"), "not-origin-form");
        assert_eq!(refused("OPTIONS", "*"), "not-origin-form");
        assert_eq!(refused("GET", ""), "not-origin-form");
        assert_eq!(refused("GET", "/api/v1/pods#x"), "fragment");
        assert_eq!(refused("GET", "/api/v1\\pods"), "backslash");
        assert_eq!(refused("GET", "/api/v1/pods x"), "control-or-non-ascii");
        assert_eq!(
            refused("GET", "/api/v1/pods?x=\u{7f}"),
            "control-or-non-ascii"
        );
        assert_eq!(refused("GET", "/api/v1/pödz"), "control-or-non-ascii");
        assert_eq!(refused("GE T", "/"), "bad-method");
        assert_eq!(refused("", "/"), "bad-method");
        assert_eq!(
            refused("GET", "/api/v1/watch"),
            "missing-after-special-verb"
        );
        assert_eq!(
            refused("GET", "/apis/apps/v1/proxy/"),
            "missing-after-special-verb"
        );
    }

    #[test]
    fn websocket_exec_is_create_and_facts_are_filled() {
        let mut headers = HeaderMap::new();
        headers.insert("upgrade", HeaderValue::from_static("websocket"));
        let target = "/api/v1/namespaces/d/pods/p/exec?command=id&stdout=true";
        let req = classify("GET", target, &headers).unwrap();
        assert_eq!(req.attributes.verb, "create");
        assert_eq!(req.facts.upgrade, Some(Upgrade::WebSocket));
        assert_eq!(req.target, target);
        assert_eq!(req.method, "GET");

        // Not a streaming subresource: unchanged.
        let log = classify("GET", "/api/v1/namespaces/d/pods/p/log", &headers).unwrap();
        assert_eq!(log.attributes.verb, "get");
        // An aggregated API's exec is a stream too.
        let other = classify("GET", "/apis/x.io/v1/namespaces/d/pods/p/exec", &headers).unwrap();
        assert_eq!(other.attributes.verb, "create");
        let watch = classify("GET", "/api/v1/pods?watch=1", &headers).unwrap();
        assert_eq!(watch.attributes.verb, "watch");
        assert!(watch.facts.watch);
    }

    #[test]
    fn query_facts() {
        let req = classify(
            "PATCH",
            "/api/v1/namespaces/d/secrets/s?dryRun=All&fieldManager=kubectl-edit",
            &HeaderMap::new(),
        )
        .unwrap();
        assert!(req.facts.dry_run);
        assert_eq!(req.facts.field_manager.as_deref(), Some("kubectl-edit"));
        let req = classify(
            "GET",
            "/api/v1/pods?labelSelector=app+in+(a,b)&fieldSelector=spec.nodeName%3Dn1",
            &HeaderMap::new(),
        )
        .unwrap();
        assert_eq!(req.facts.label_selector.as_deref(), Some("app in (a,b)"));
        assert_eq!(
            req.facts.field_selector.as_deref(),
            Some("spec.nodeName=n1")
        );
        assert!(!req.facts.watch);
        assert!(!req.facts.dry_run);
    }

    #[test]
    fn delete_options_from_the_query() {
        let req = classify(
            "DELETE",
            "/api/v1/namespaces/d/pods/p?dryRun=All&propagationPolicy=Orphan&gracePeriodSeconds=0&orphanDependents=FALSE",
            &HeaderMap::new(),
        )
        .unwrap();
        let o = req.facts.delete_options.unwrap();
        assert_eq!(o.source, crate::request::OptionsSource::Query);
        assert!(o.dry_run && req.facts.dry_run);
        assert_eq!(o.propagation_policy.as_deref(), Some("Orphan"));
        assert_eq!(o.grace_period_seconds, Some(0));
        assert_eq!(o.orphan_dependents, Some(false));
        let none = classify("DELETE", "/api/v1/namespaces/d/pods/p", &HeaderMap::new()).unwrap();
        assert_eq!(
            none.facts.delete_options.map(|o| o.source),
            Some(crate::request::OptionsSource::None)
        );
        // Not a delete, or a delete the API server proxies: no DeleteOptions.
        for (method, target) in [
            ("GET", "/api/v1/namespaces/d/pods?gracePeriodSeconds=x"),
            (
                "DELETE",
                "/api/v1/namespaces/d/pods/p/proxy/x?gracePeriodSeconds=x",
            ),
        ] {
            let req = classify(method, target, &HeaderMap::new()).unwrap();
            assert_eq!(req.facts.delete_options, None, "{target}");
        }
        assert_eq!(
            refused(
                "DELETE",
                "/api/v1/namespaces/d/pods/p?gracePeriodSeconds=9223372036854775808"
            ),
            "invalid-query-value"
        );
    }
}
