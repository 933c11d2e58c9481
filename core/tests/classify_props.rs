//! Properties of `classify`: it never panics, whatever it is given; what it accepts is
//! canonical; and a classified request, re-encoded from its attributes alone, classifies to
//! the same attributes.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use http::{HeaderMap, HeaderName, HeaderValue};
use kubeleash_core::request::{Attributes, NonCanonical, classify};
use proptest::prelude::*;

/// Header names classification reads, plus a few it does not.
const HEADER_NAMES: &[&str] = &[
    "upgrade",
    "connection",
    "content-type",
    "content-encoding",
    "sec-websocket-protocol",
    "impersonate-user",
    "impersonate-group",
    "impersonate-uid",
    "impersonate-extra-scopes",
    "impersonate-",
    "x-remote-user",
    "x-remote-group",
    "x-remote-extra-",
    "user-agent",
];

fn header_map(pairs: &[(String, Vec<u8>)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        // Only what the `http` crate can hold reaches `classify`.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            map.append(name, value);
        }
    }
    map
}

fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let name = prop_oneof![
        proptest::sample::select(HEADER_NAMES).prop_map(String::from),
        "[A-Za-z-]{1,20}",
    ];
    let value = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..24),
        "(websocket|SPDY/3.1|application/(json|merge-patch\\+json)(; ?charset=utf-8)?|base64url\\.bearer\\.authorization\\.k8s\\.io\\.x|identity|gzip|, )*"
            .prop_map(String::into_bytes),
    ];
    proptest::collection::vec((name, value), 0..6)
}

fn methods() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec![
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get"
        ])
        .prop_map(String::from),
        any::<String>(),
    ]
}

fn targets() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[/apis1vnamespacewatchproxy%2eE.?&=;#\\\\:+ é\t]{0,60}",
        "/(api|apis/[a-z.]{1,6})(/[a-z0-9.%-]{0,8}){0,8}(\\?([a-zA-Z%0-9]{0,8}(=[a-zA-Z0-9%=+,.]{0,12})?&?){0,5})?",
        "/api/v1/namespaces/[a-z]{1,3}/(pods|secrets)(/[a-z.%2]{0,5}){0,4}(\\?(watch|fieldSelector|limit|dryRun|w%61tch)=[a-zA-Z0-9%.=]{0,14}(&(watch|fieldSelector|limit|dryRun)=[a-z0-9%A-Z=.]{0,14}){0,3})?",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// (a) Never panics, and anything accepted is canonical.
    #[test]
    fn never_panics_and_accepts_only_canonical(
        method in methods(),
        target in targets(),
        pairs in headers(),
    ) {
        let headers = header_map(&pairs);
        if let Ok(req) = classify(&method, &target, &headers) {
            let a = &req.attributes;
            prop_assert!(target.starts_with('/'));
            prop_assert!(target.bytes().all(|b| b.is_ascii_graphic() && b != b'#' && b != b'\\'));
            let path = target.split('?').next().unwrap();
            prop_assert_eq!(&a.path, path);
            prop_assert!(!path.contains('%') && !path.contains(';'));
            prop_assert!(!path.trim_end_matches('/').contains("//") || path == "/");
            prop_assert!(!path.ends_with("//"));
            prop_assert!(path.split('/').all(|s| s != "." && s != ".."));
            prop_assert_eq!(req.facts.watch, a.verb == "watch");
            if !a.resource_request {
                prop_assert_eq!(&a.verb, &method.to_ascii_lowercase());
                prop_assert!(a.resource.is_empty() && a.name.is_empty() && a.namespace.is_empty());
            }
        }
    }
}

/// One generated canonical resource request.
#[derive(Debug, Clone)]
struct Parts {
    method: &'static str,
    group: Option<String>,
    version: String,
    special: Option<&'static str>,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    subresource: Option<String>,
    subpath: Vec<String>,
    trailing_slash: bool,
    query: Vec<String>,
}

impl Parts {
    fn target(&self) -> String {
        let mut t = match &self.group {
            Some(g) => format!("/apis/{g}/{}", self.version),
            None => format!("/api/{}", self.version),
        };
        for segment in self
            .special
            .iter()
            .map(|s| s.to_string())
            .chain(
                self.namespace
                    .iter()
                    .flat_map(|ns| ["namespaces".to_string(), ns.clone()]),
            )
            .chain([self.resource.clone()])
            .chain(self.name.clone())
            .chain(self.subresource.clone())
            .chain(self.subpath.clone())
        {
            t.push('/');
            t.push_str(&segment);
        }
        if self.trailing_slash {
            t.push('/');
        }
        if !self.query.is_empty() {
            t.push('?');
            t.push_str(&self.query.join("&"));
        }
        t
    }
}

fn dns_name() -> impl Strategy<Value = String> {
    "[a-z0-9]([-a-z0-9.:]{0,10}[a-z0-9])?"
}

fn resource() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z][a-z0-9]{0,9}",
        1 => proptest::sample::select(vec![
            "pods", "secrets", "namespaces", "status", "finalize", "watch", "proxy", "exec",
        ])
        .prop_map(String::from),
    ]
}

fn query_param() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec![
            "watch=1",
            "watch=0",
            "watch",
            "watch=false",
            "watch=yes",
            "limit=500",
            "limit=abc",
            "labelSelector=app%3Dweb",
            "dryRun=All",
            "pretty=true",
            "command=ls",
            "allowWatchBookmarks=true",
            "timeoutSeconds=30",
        ])
        .prop_map(String::from),
        dns_name().prop_map(|n| format!("fieldSelector=metadata.name%3D{n}")),
        dns_name()
            .prop_map(|n| format!("fieldSelector=metadata.name%3D%3D{n},status.phase%3DRunning")),
    ]
}

prop_compose! {
    fn parts()(
        method in proptest::sample::select(vec!["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
        group in proptest::option::of(prop_oneof![
            Just("apps".to_string()),
            Just("rbac.authorization.k8s.io".to_string()),
            "[a-z]{1,8}\\.example\\.com",
        ]),
        version in "v[1-3](alpha1|beta2)?",
        special in proptest::option::weighted(0.2, proptest::sample::select(vec!["watch", "proxy"])),
        namespace in proptest::option::of(dns_name()),
        resource in resource(),
        name in proptest::option::of(dns_name()),
        subresource in proptest::option::of(resource()),
        subpath in proptest::collection::vec(dns_name(), 0..3),
        trailing_slash in any::<bool>(),
        query in proptest::collection::vec(query_param(), 0..4),
    ) -> Parts {
        let subresource = name.as_ref().and(subresource);
        let subpath = if subresource.is_some() { subpath } else { Vec::new() };
        Parts { method, group, version, special, namespace, resource, name, subresource, subpath, trailing_slash, query }
    }
}

/// Percent-encode a field selector value for a query: escape the selector's own specials with
/// `\`, then percent-encode everything that is not unreserved.
fn selector_value(name: &str) -> String {
    let mut escaped = String::new();
    for c in name.chars() {
        if matches!(c, '\\' | ',' | '=') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    let mut out = String::new();
    for b in escaped.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A request that the API server classifies to `a`, built from `a` alone; `None` for
/// attributes no request carries. A cluster-scoped resource named like a special verb
/// (`watch`, `proxy`) is reached only through that verb's own prefix: without it, its name is
/// read as the verb. kubeleash's stricter verbs make such attributes (`GET
/// /api/v1/watch/watch/a/exec` starts a stream: `create` of `watch/exec`, which a `POST
/// /api/v1/watch/a/exec` would not be).
fn encode(a: &Attributes) -> Option<(&'static str, String)> {
    let method = match a.verb.as_str() {
        "create" => "POST",
        "get" | "list" | "watch" | "proxy" => "GET",
        "update" => "PUT",
        "patch" => "PATCH",
        "delete" | "deletecollection" => "DELETE",
        _ => "OPTIONS",
    };
    let mut t = if a.api_group.is_empty() {
        format!("/api/{}", a.api_version)
    } else {
        format!("/apis/{}/{}", a.api_group, a.api_version)
    };
    // A name on a list (and on a watch of one namespace object by name, which the `/watch/`
    // prefix cannot express without also setting the namespace) goes in a field selector;
    // every other watch uses the legacy `/watch/` prefix, which also carries a subresource.
    let name_in_query = !a.name.is_empty()
        && (a.verb == "list"
            || (a.verb == "watch" && a.namespace.is_empty() && a.resource == "namespaces"));
    let verb_prefix = a.verb == "proxy" || (a.verb == "watch" && !name_in_query);
    if verb_prefix {
        t.push('/');
        t.push_str(&a.verb);
    } else if a.namespace.is_empty() && matches!(a.resource.as_str(), "watch" | "proxy") {
        return None;
    }
    // `/namespaces/<ns>` alone is the namespace object itself, when the name is in the path;
    // a name from a field selector leaves `/namespaces/<ns>/namespaces` a list inside `<ns>`.
    // Only `status` and `finalize` have that short form; any other subresource of a namespace
    // is spelled `/namespaces/<ns>/namespaces/<ns>/<sub>`.
    let namespace_object = a.resource == "namespaces"
        && !a.name.is_empty()
        && a.name == a.namespace
        && !name_in_query
        && matches!(a.subresource.as_str(), "" | "status" | "finalize");
    if !a.namespace.is_empty() && !namespace_object {
        t.push_str("/namespaces/");
        t.push_str(&a.namespace);
    }
    t.push('/');
    t.push_str(&a.resource);
    let mut query = Vec::new();
    if a.verb == "watch" && name_in_query {
        query.push("watch=1".to_string());
    }
    if name_in_query {
        query.push(format!(
            "fieldSelector=metadata.name%3D{}",
            selector_value(&a.name)
        ));
    } else if !a.name.is_empty() {
        t.push('/');
        t.push_str(&a.name);
        if !a.subresource.is_empty() {
            t.push('/');
            t.push_str(&a.subresource);
        }
    }
    if !query.is_empty() {
        t.push('?');
        t.push_str(&query.join("&"));
    }
    Some((method, t))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// (b) Re-encoding the attributes of a classified canonical request gives the same
    /// attributes back.
    #[test]
    fn attributes_round_trip(parts in parts()) {
        let target = parts.target();
        let Ok(first) = classify(parts.method, &target, &HeaderMap::new()) else {
            // Some generated combinations are refused (e.g. a duplicated `watch`): nothing to check.
            return Ok(());
        };
        let Some((method, again)) = encode(&first.attributes) else {
            return Ok(());
        };
        let second = classify(method, &again, &HeaderMap::new());
        prop_assert!(second.is_ok(), "{} {} -> {} {}: {:?}", parts.method, target, method, again, second);
        let second = second.unwrap();
        let strip_path = |a: &Attributes| Attributes { path: String::new(), ..a.clone() };
        prop_assert_eq!(
            strip_path(&first.attributes),
            strip_path(&second.attributes),
            "{} {} re-encoded as {} {}", parts.method, target, method, again
        );
        prop_assert_eq!(&second.attributes.path, again.split('?').next().unwrap());
    }

    /// Most generated requests are accepted, so the round trip really is exercised.
    #[test]
    fn generated_requests_without_query_are_accepted(parts in parts()) {
        let parts = Parts { query: Vec::new(), ..parts };
        // `/api/v1/watch` and `/api/v1/proxy` alone are refused (the API server answers 500).
        let bare_special = parts.special.is_none()
            && parts.namespace.is_none()
            && parts.name.is_none()
            && (parts.resource == "watch" || parts.resource == "proxy");
        prop_assume!(!bare_special);
        let target = parts.target();
        let result = classify(parts.method, &target, &HeaderMap::new());
        // The generator's names may land in the resource position (`/api/v1/watch/a.0`); those
        // are refused, and only those.
        if let Err(NonCanonical::InvalidName { segment, part, .. }) = &result {
            let valid = if *part == "version" { is_dns_label(segment) } else { is_resource_name(segment) };
            prop_assert!(!valid, "{} {}: {:?}", parts.method, target, result);
            return Ok(());
        }
        prop_assert!(result.is_ok(), "{} {}: {:?}", parts.method, target, result);
    }
}

fn is_dns_label(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.len() <= 63
        && s.starts_with(alnum)
        && s.ends_with(alnum)
        && s.chars().all(|c| alnum(c) || c == '-')
}

fn is_resource_name(s: &str) -> bool {
    let start = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    s.len() <= 253
        && s.starts_with(start)
        && s.ends_with(start)
        && s.chars().all(|c| start(c) || c == '-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Upgrade header values: none, the real ones, and odd ones.
fn upgrade_values() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        proptest::sample::select(vec![
            "websocket",
            "WebSocket",
            "SPDY/3.1",
            "spdy/3.1",
            "h2c",
            "x",
            "",
            "tls/1.3",
            "h2c, websocket",
            "SPDY/3.1+portforward.k8s.io",
            "  websocket  ",
        ])
        .prop_map(String::from),
        "[ -~]{0,16}",
    ])
}

fn any_method() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec![
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
            "PROPFIND", "get", "post",
        ])
        .prop_map(String::from),
        "[A-Za-z]{1,10}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Every request on an `exec`, `attach` or `portforward` subresource is `create`, whatever
    /// its method, upgrade token, group and path form; an upgrade on a `proxy` subresource is
    /// `create` too, and without an upgrade a proxy keeps the verb of its method. So no `get`
    /// (or `list`, `watch`, `update`, ...) rule ever covers a stream.
    #[test]
    fn streams_are_always_create(
        method in any_method(),
        upgrade in upgrade_values(),
        sub in proptest::sample::select(vec!["exec", "attach", "portforward", "proxy"]),
        group in proptest::sample::select(vec!["", "apps", "x.example.com"]),
        resource in proptest::sample::select(vec!["pods", "services", "nodes", "foos"]),
        namespaced in any::<bool>(),
        watch_prefix in any::<bool>(),
        query in proptest::sample::select(vec!["", "?command=sh&stdin=true", "?watch=1", "?ports=80"]),
        subpath in proptest::sample::select(vec!["", "/x", "/exec/ns/p/c"]),
        extra in proptest::collection::vec((proptest::sample::select(HEADER_NAMES), "[ -~]{0,12}"), 0..3),
    ) {
        let prefix = if group.is_empty() { "/api/v1".to_string() } else { format!("/apis/{group}/v1") };
        let watch = if watch_prefix { "/watch" } else { "" };
        let ns = if namespaced { "/namespaces/dev" } else { "" };
        let target = format!("{prefix}{watch}{ns}/{resource}/p/{sub}{subpath}{query}");
        let mut pairs: Vec<(String, Vec<u8>)> = extra
            .into_iter()
            .filter(|(n, _)| *n != "upgrade")
            .map(|(n, v)| (n.to_string(), v.into_bytes()))
            .collect();
        if let Some(u) = &upgrade {
            pairs.push(("upgrade".into(), u.clone().into_bytes()));
        }
        let headers = header_map(&pairs);
        let upgrading = headers.contains_key("upgrade");
        let Ok(req) = classify(&method, &target, &headers) else {
            // Refused (a bad header, say): nothing reaches the API server.
            return Ok(());
        };
        let a = &req.attributes;
        prop_assert_eq!(a.subresource.as_str(), sub, "{} {}", method, target);
        if sub != "proxy" || upgrading {
            prop_assert_eq!(a.verb.as_str(), "create", "{} {} upgrade {:?}", method, target, upgrade);
        } else {
            // A proxy without an upgrade keeps the API server's verb.
            let create = method == "POST" && !watch_prefix;
            prop_assert_eq!(a.verb == "create", create, "{} {}", method, target);
        }
    }

    /// Group, version, resource and subresource segments are accepted exactly when they are
    /// valid Kubernetes names, so what reaches a printed `kubectl` line in these positions is
    /// always a plain name.
    #[test]
    fn only_valid_names_are_classified(
        method in proptest::sample::select(vec!["GET", "POST", "PUT", "PATCH", "DELETE"]),
        position in 0usize..4,
        segment in prop_oneof![
            "[a-z0-9.-]{1,12}",
            "[!$&'()*+,:=@a-zA-Z0-9._~-]{1,12}",
            "[a-z0-9_-]{1,12}",
            Just("x$(touch${IFS}PWNED)".to_string()),
            Just("a`id`".to_string()),
            Just("Pods".to_string()),
        ],
    ) {
        let mut parts = ["apps".to_string(), "v1".into(), "deployments".into(), "scale".into()];
        parts[position] = segment.clone();
        let [group, version, resource, sub] = &parts;
        let target = format!("/apis/{group}/{version}/namespaces/dev/{resource}/web/{sub}");
        let result = classify(method, &target, &HeaderMap::new());
        let valid = match position {
            0 => is_dns_subdomain(&segment),
            1 => is_dns_label(&segment),
            _ => is_resource_name(&segment),
        };
        // `watch` and `proxy` in the version's place are special verbs; skip those forms.
        prop_assume!(!(position == 2 && matches!(segment.as_str(), "watch" | "proxy")));
        match &result {
            Ok(req) => {
                prop_assert!(valid, "{} accepted: {:?}", target, req.attributes);
                let a = &req.attributes;
                prop_assert!(is_dns_subdomain(&a.api_group));
                prop_assert!(is_dns_label(&a.api_version) && is_resource_name(&a.resource));
                prop_assert!(a.subresource.is_empty() || is_resource_name(&a.subresource));
            }
            Err(NonCanonical::InvalidName { segment: s, .. }) => {
                prop_assert!(!valid, "{} refused: {:?}", target, result);
                prop_assert_eq!(s, &segment);
            }
            // Other refusals (a `%` in the segment, say) are fine too.
            Err(_) => {}
        }
    }
}

// ---- one reading of the query -------------------------------------------------------------

/// A query parameter as an agent may spell it: known keys, percent-encoded keys, boolean
/// spellings, repeats.
fn spelled_param() -> impl Strategy<Value = String> {
    let key = proptest::sample::select(vec![
        "watch",
        "w%61tch",
        "fieldManager",
        "fieldM%61nager",
        "labelSelector",
        "fieldSelector",
        "dryRun",
        "follow",
        "previous",
        "orphanDependents",
        "x",
    ]);
    let value = proptest::sample::select(vec![
        "", "1", "0", "t", "f", "TRUE", "False", "yes", "All", "a%3Db", "kubectl",
    ]);
    (key, value, any::<bool>()).prop_map(|(k, v, bare)| {
        if bare && v.is_empty() {
            k.to_string()
        } else {
            format!("{k}={v}")
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Invariant: the query as `Request::query_params` reads it (what the kubectl line
    /// renders) is the query classification judged: same decoded values for the facts, and
    /// the same boolean reading (`watch` decides list or watch).
    #[test]
    fn query_params_agree_with_classification(
        params in prop::collection::vec(spelled_param(), 0..5),
        named in any::<bool>(),
    ) {
        let path = if named { "/api/v1/namespaces/d/pods/p" } else { "/api/v1/namespaces/d/pods" };
        let target = format!("{path}?{}", params.join("&"));
        let Ok(req) = classify("GET", &target, &HeaderMap::new()) else {
            return Ok(());
        };
        let q = req.query_params();
        prop_assert_eq!(q.first("fieldManager"), req.facts.field_manager.as_deref());
        prop_assert_eq!(q.first("labelSelector"), req.facts.label_selector.as_deref());
        prop_assert_eq!(q.first("fieldSelector"), req.facts.field_selector.as_deref());
        prop_assert_eq!(q.first("dryRun").is_some(), req.facts.dry_run);
        if !named {
            prop_assert_eq!(q.flag("watch"), req.attributes.verb == "watch", "{}", target);
        }
    }
}
