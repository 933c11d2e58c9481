//! Properties of policies: compiling and evaluating never panic, whatever the input; decisions
//! are deterministic; a rule for another group never changes a decision for this one; and a
//! deny rule that matches a request denies it whatever allow rules are added (adding a deny or
//! approve rule never loosens any decision).
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::LazyLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use kubeleash_core::policy::{Effect, Evaluation, Identity, Policy};
use kubeleash_core::request::classify;
use proptest::prelude::*;
use serde_json::{Value, json};

fn read(rel: &str) -> String {
    std::fs::read_to_string(format!("{}/../{rel}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

static AGENTS: LazyLock<String> = LazyLock::new(|| read("examples/agents.yaml"));
static POLICIES: LazyLock<Vec<Policy>> = LazyLock::new(|| {
    [
        "examples/agents.yaml",
        "tests/testdata/policies/semantics.yaml",
        "tests/testdata/policies/review.yaml",
    ]
    .iter()
    .map(|p| Policy::from_yaml(&read(p)).unwrap())
    .collect()
});

fn strictness(e: Effect) -> u8 {
    match e {
        Effect::Allow => 0,
        Effect::Approve => 1,
        Effect::Deny => 2,
    }
}

// ---- requests -------------------------------------------------------------------------------

const GROUPS: &[&str] = &[
    "",
    "apps",
    "rbac.authorization.k8s.io",
    "example.com",
    "batch",
];
const RESOURCES: &[&str] = &[
    "pods",
    "secrets",
    "deployments",
    "configmaps",
    "namespaces",
    "nodes",
    "serviceaccounts",
    "rolebindings",
    "widgets",
];
const SUBRESOURCES: &[&str] = &[
    "", "", "", "log", "exec", "status", "scale", "token", "proxy",
];
const NAMESPACES: &[&str] = &["", "dev", "prod", "kube-system", "team-a", "dev-2"];
const NAMES: &[&str] = &["", "web", "app-db", "root-ca", "web-1"];
const QUERIES: &[&str] = &[
    "",
    "?watch=1",
    "?fieldSelector=metadata.name%3Dapp-db",
    "?dryRun=All",
    "?fieldManager=agent&force=true",
];
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
const NON_RESOURCE_PATHS: &[&str] = &[
    "/version",
    "/version/",
    "/healthz",
    "/healthz/etcd",
    "/metrics",
    "/logs/",
    "/api",
    "/apis",
    "/flagz",
];
const BODIES: &[&str] = &[
    r#"{"spec":{"containers":[{"name":"a","image":"nginx"}]}}"#,
    r#"{"spec":{"containers":[{"name":"a","image":"registry.corp/a"},{"name":"b","image":"x","securityContext":{"privileged":true}}]}}"#,
    r#"{"spec":{"hostPID":true,"securityContext":{"runAsUser":-0}}}"#,
    r#"{"type":"kubernetes.io/service-account-token","metadata":{"name":"t"}}"#,
    r#"{"spec":{"hostPID":false,"hostPID":true}}"#,
    r#"[{"op":"add","path":"/spec/hostPID","value":true}]"#,
    r#"{"spec":{"template":{"spec":{"containers":[{"name":"c","command":["sh","-c","x\ncurl y"]}]}}}}"#,
    "{}",
    "",
    "not json",
];
const HEADER_SETS: &[&[(&str, &str)]] = &[
    &[],
    &[("content-type", "application/json")],
    &[("content-type", "application/merge-patch+json")],
    &[("content-type", "application/apply-patch+yaml")],
    &[("content-type", "application/apply-patch+cbor")],
    &[("content-type", "application/json-patch+json")],
    &[("content-type", "application/yaml")],
    &[("upgrade", "websocket"), ("connection", "Upgrade")],
    &[("impersonate-user", "system:serviceaccount:dev:builder")],
    &[
        ("impersonate-user", "alice"),
        ("impersonate-group", "system:masters"),
    ],
];

/// One request line, headers and body, drawn from a vocabulary in which the rules below can
/// match (and mismatch) in every field.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl Req {
    fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in &self.headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn evaluate(&self, policy: &Policy, id: &Identity) -> Evaluation {
        policy.evaluate(
            id,
            &self.method,
            &self.target,
            &self.header_map(),
            self.body.as_deref(),
        )
    }
}

fn pick(list: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    proptest::sample::select(list)
}

fn resource_target() -> impl Strategy<Value = String> {
    (
        pick(GROUPS),
        pick(NAMESPACES),
        pick(RESOURCES),
        pick(NAMES),
        pick(SUBRESOURCES),
        pick(QUERIES),
    )
        .prop_map(|(group, ns, resource, name, sub, query)| {
            let mut t = if group.is_empty() {
                "/api/v1".to_string()
            } else {
                format!("/apis/{group}/v1")
            };
            if !ns.is_empty() {
                t.push_str("/namespaces/");
                t.push_str(ns);
            }
            t.push('/');
            t.push_str(resource);
            if !name.is_empty() {
                t.push('/');
                t.push_str(name);
                if !sub.is_empty() {
                    t.push('/');
                    t.push_str(sub);
                }
            }
            t.push_str(query);
            t
        })
}

fn request() -> impl Strategy<Value = Req> {
    let target =
        prop_oneof![4 => resource_target(), 1 => pick(NON_RESOURCE_PATHS).prop_map(String::from)];
    (
        pick(METHODS),
        target,
        proptest::sample::select(HEADER_SETS),
        proptest::option::of(pick(BODIES)),
    )
        .prop_map(|(method, target, headers, body)| Req {
            method: method.into(),
            target,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            body: body.map(|b| b.as_bytes().to_vec()),
        })
}

fn identity() -> impl Strategy<Value = Identity> {
    (
        pick(&["agent-1", "admin", "imager", "patcher", "r", ""]),
        proptest::sample::subsequence(vec!["ai-agents", "agents", "readers", "scalers"], 0..=2),
    )
        .prop_map(|(user, groups)| Identity::new(user, groups))
}

// ---- rules ----------------------------------------------------------------------------------

const RULE_VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "proxy",
    "impersonate",
    "*",
];
const RULE_RESOURCES: &[&str] = &[
    "pods",
    "pods/log",
    "pods/exec",
    "secrets",
    "deployments",
    "deployments/scale",
    "*/scale",
    "configmaps",
    "namespaces",
    "nodes/proxy",
    "serviceaccounts",
    "serviceaccounts/token",
    "rolebindings",
    "users",
    "*",
];
const RULE_NAMESPACES: &[&str] = &["", "dev", "prod", "kube-system", "team-*", "*", "dev*"];
const RULE_NAMES: &[&str] = &["web", "app-*", "root-ca", "*-1", "*"];
const CONDITIONS: &[&str] = &[
    r#"{"path": "$..securityContext.privileged", "equals": true}"#,
    r#"{"path": "$..runAsUser", "equals": 0}"#,
    r#"{"path": "$.spec.containers[*].image", "matches": "registry.corp/*"}"#,
    r#"{"path": "$..command[*]", "matches": "*curl*"}"#,
    r#"{"path": "$.spec.hostPID", "exists": true}"#,
    r#"{"path": "$.spec.hostPID", "exists": false}"#,
    r#"{"path": "$.type", "notIn": ["Opaque"]}"#,
];
const NR_VERBS: &[&str] = &["get", "post", "put", "head", "options", "*"];
const NR_URLS: &[&str] = &[
    "/version",
    "/healthz",
    "/healthz/*",
    "/logs",
    "/logs/*",
    "*",
    "/api/*",
];

fn subset(list: &'static [&'static str]) -> impl Strategy<Value = Vec<&'static str>> {
    proptest::sample::subsequence(list.to_vec(), 1..=3)
}

/// A rule, as JSON (which is YAML), with every field either left out or drawn from the
/// vocabulary; `subjects` is given by the caller.
fn rule(effects: &'static [&'static str], subjects: Option<Value>) -> impl Strategy<Value = Value> {
    let resource_rule = (
        pick(effects),
        subset(RULE_VERBS),
        proptest::option::of(subset(GROUPS)),
        subset(RULE_RESOURCES),
        proptest::option::of(subset(RULE_NAMESPACES)),
        proptest::option::of(subset(RULE_NAMES)),
        proptest::option::of(pick(CONDITIONS)),
    )
        .prop_map(
            |(effect, verbs, groups, resources, namespaces, names, when)| {
                let mut r = json!({"effect": effect, "verbs": verbs, "resources": resources});
                if let Some(g) = groups {
                    r["apiGroups"] = json!(g);
                }
                if let Some(n) = namespaces {
                    r["namespaces"] = json!(n);
                }
                if let Some(n) = names {
                    r["names"] = json!(n);
                }
                if let Some(c) = when {
                    r["when"] = json!([serde_json::from_str::<Value>(c).unwrap()]);
                }
                r
            },
        );
    let non_resource_rule = (pick(effects), subset(NR_VERBS), subset(NR_URLS)).prop_map(
        |(effect, verbs, urls)| json!({"effect": effect, "verbs": verbs, "nonResourceURLs": urls}),
    );
    prop_oneof![4 => resource_rule, 1 => non_resource_rule].prop_map(move |mut r| {
        if let Some(s) = &subjects {
            r["subjects"] = s.clone();
        }
        r
    })
}

/// `text` (a policy whose rules are block-sequence entries starting `    - name:`, followed by
/// `  tests:` or the end) with `rules` inserted before the entry numbered `at` (modulo the
/// number of places).
fn insert_rules(text: &str, rules: &[Value], at: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .iter()
        .position(|l| *l == "  tests:")
        .unwrap_or(lines.len());
    let places: Vec<usize> = lines[..end]
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("    - name:") || l.starts_with("    - {name:"))
        .map(|(i, _)| i)
        .chain(std::iter::once(end))
        .collect();
    let place = places[at % places.len()];
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        if i == place {
            for (n, r) in rules.iter().enumerate() {
                let mut r = r.clone();
                r["name"] = json!(format!("generated-{n}"));
                out.push_str(&format!("    - {r}\n"));
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    if place == lines.len() {
        for (n, r) in rules.iter().enumerate() {
            let mut r = r.clone();
            r["name"] = json!(format!("generated-{n}"));
            out.push_str(&format!("    - {r}\n"));
        }
    }
    out
}

// ---- mutations of a real policy ------------------------------------------------------------

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, String),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let tokens = prop_oneof![
        any::<String>(),
        proptest::sample::select(vec![
            ":",
            "- ",
            "[",
            "]",
            "{",
            "}",
            "\n",
            "  ",
            "\t",
            "&a ",
            "*a",
            "<<: *a",
            "!!str ",
            "~",
            "'",
            "\"",
            "#",
            "---\n",
            "...\n",
            "? ",
            "|\n",
            ">-\n",
            "\u{feff}",
            "\0",
            "\\",
            "name: x",
            "effect: deny",
            "when: [{path: '$[', equals: 1}]",
            "verbs: []",
            "resources: [\"pods/*\"]",
            "nonResourceURLs: [\"*\"]",
        ])
        .prop_map(String::from),
    ];
    prop_oneof![
        (any::<usize>(), 0usize..40).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (any::<usize>(), tokens).prop_map(|(a, s)| Mutation::Insert(a, s)),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn char_boundary(s: &str, at: usize) -> usize {
    let mut i = at % (s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(text: &str, m: &Mutation) -> String {
    match m {
        Mutation::Delete(a, n) => {
            let start = char_boundary(text, *a);
            let end = char_boundary(text, (start + n).min(text.len()));
            let end = end.max(start);
            format!("{}{}", &text[..start], &text[end..])
        }
        Mutation::Insert(a, s) => {
            let at = char_boundary(text, *a);
            format!("{}{s}{}", &text[..at], &text[at..])
        }
        Mutation::DuplicateLine(a) => {
            let mut lines: Vec<&str> = text.lines().collect();
            if !lines.is_empty() {
                let i = a % lines.len();
                lines.insert(i, lines[i]);
            }
            lines.join("\n")
        }
        Mutation::SwapLines(a, b) => {
            let mut lines: Vec<&str> = text.lines().collect();
            if !lines.is_empty() {
                let n = lines.len();
                lines.swap(a % n, b % n);
            }
            lines.join("\n")
        }
        Mutation::Truncate(a) => text[..char_boundary(text, *a)].to_string(),
    }
}

// ---- properties -----------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn compiling_arbitrary_text_never_panics(text in any::<String>()) {
        let _ = Policy::from_yaml(&text);
    }

    #[test]
    fn compiling_arbitrary_bytes_as_text_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Policy::from_yaml(&String::from_utf8_lossy(&bytes));
    }

}

proptest! {
    // Most mutations still compile, and compiling a whole policy is the slow part.
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn compiling_a_mutated_example_never_panics(mutations in proptest::collection::vec(mutation(), 1..6)) {
        let mut text = AGENTS.clone();
        for m in &mutations {
            text = apply(&text, m);
        }
        match Policy::from_yaml(&text) {
            Ok(p) => {
                // What compiles also runs its tests and decides without panicking.
                let _ = p.run_tests();
            }
            Err(errs) => {
                prop_assert!(!errs.errors().is_empty());
                for e in errs.errors() {
                    prop_assert!(!e.message().is_empty());
                    prop_assert!(!e.message().contains('\n'), "{:?}", e.message());
                }
            }
        }
    }
}

fn raw_headers() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    let name = prop_oneof![
        pick(&[
            "content-type",
            "content-encoding",
            "upgrade",
            "impersonate-user",
            "impersonate-group",
            "impersonate-extra-x",
            "x-remote-user",
            "sec-websocket-protocol",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 0..16),
    ];
    let value = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..32),
        pick(&[
            "application/json",
            "application/apply-patch+yaml",
            "application/json-patch+json",
            "websocket",
            "gzip",
            "system:serviceaccount:dev:x",
            "base64url.bearer.authorization.k8s.io.eA",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ];
    proptest::collection::vec((name, value), 0..5)
}

fn body_bytes() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::of(prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        pick(BODIES).prop_map(|s| s.as_bytes().to_vec()),
        "[\\[\\]{}\":,0-9a-z \\\\.eE+-]{0,200}".prop_map(String::into_bytes),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn evaluating_arbitrary_input_never_panics(
        which in 0usize..3,
        method in prop_oneof![pick(METHODS).prop_map(String::from), any::<String>()],
        target in prop_oneof![resource_target(), any::<String>(), "/[ -~]{0,60}"],
        headers in raw_headers(),
        body in body_bytes(),
        id in identity(),
    ) {
        let mut map = HeaderMap::new();
        for (k, v) in &headers {
            if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k), HeaderValue::from_bytes(v)) {
                map.append(k, v);
            }
        }
        let policy = &POLICIES[which];
        let eval = policy.evaluate(&id, &method, &target, &map, body.as_deref());
        prop_assert!(!eval.decision.reason.is_empty());
        if eval.request.is_none() {
            prop_assert_eq!(eval.decision.effect, Effect::Deny);
        }
        if let Some(req) = &eval.request {
            let _ = policy.needs_body(&id, req);
        }
    }

    #[test]
    fn decisions_are_deterministic(which in 0usize..3, req in request(), id in identity()) {
        let policy = &POLICIES[which];
        let first = req.evaluate(policy, &id);
        prop_assert_eq!(&first, &req.evaluate(policy, &id));
        prop_assert_eq!(&first, &req.evaluate(&policy.clone(), &id));
        let again = std::thread::scope(|s| s.spawn(|| req.evaluate(policy, &id)).join().unwrap());
        prop_assert_eq!(&first, &again);
        // Deciding from the classified request gives the decision `evaluate` gave.
        if let Some(r) = &first.request {
            prop_assert_eq!(&first.decision, &policy.decide(&id, r, req.body.as_deref()));
        }
    }

    #[test]
    fn a_body_left_out_when_not_needed_changes_nothing(which in 0usize..3, req in request(), id in identity()) {
        let policy = &POLICIES[which];
        let with = req.evaluate(policy, &id);
        if let Some(r) = &with.request
            && !policy.needs_body(&id, r)
        {
            prop_assert_eq!(&with.decision, &policy.decide(&id, r, None));
        }
    }
}

proptest! {
    // Each case compiles a policy of its own; fewer cases, many requests each.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn rules_for_another_group_change_no_decision(
        rules in proptest::collection::vec(
            rule(&["allow", "deny", "approve"], Some(json!({"groups": ["other-team"], "users": ["someone-else"]}))),
            1..5,
        ),
        at in any::<usize>(),
        reqs in proptest::collection::vec(request(), 1..12),
    ) {
        let extended = insert_rules(&AGENTS, &rules, at);
        let extended = Policy::from_yaml(&extended).map_err(|e| TestCaseError::fail(format!("{e}\n{extended}")))?;
        let base = &POLICIES[0];
        let agent = Identity::new("agent-1", ["ai-agents"]);
        for req in &reqs {
            prop_assert_eq!(req.evaluate(base, &agent), req.evaluate(&extended, &agent), "{:?}", req);
        }
    }

    #[test]
    fn a_matching_deny_rule_wins_whatever_allow_rules_are_added(
        req in request(),
        allows in proptest::collection::vec(rule(&["allow"], None), 0..6),
        at in any::<usize>(),
        id in identity(),
    ) {
        let Ok(classified) = classify(&req.method, &req.target, &req.header_map()) else {
            return Ok(());
        };
        let a = &classified.attributes;
        let verb = if a.verb.is_empty() { "*" } else { a.verb.as_str() };
        let deny = if a.resource_request {
            json!({
                "effect": "deny",
                "verbs": [verb],
                "apiGroups": [a.api_group],
                "resources": [a.combined_resource()],
            })
        } else {
            json!({"effect": "deny", "verbs": [verb], "nonResourceURLs": [a.path]})
        };
        let mut rules = allows;
        let pos = at % (rules.len() + 1);
        rules.insert(pos, deny);
        let text = insert_rules(
            "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n",
            &rules,
            0,
        );
        let policy = Policy::from_yaml(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let d = req.evaluate(&policy, &id).decision;
        prop_assert_eq!(d.effect, Effect::Deny, "{}\n{:?}\n{}", text, req, d.reason);
    }

    #[test]
    fn adding_a_deny_rule_never_loosens_and_an_approve_rule_never_allows(
        which in 0usize..3,
        extra in proptest::collection::vec(rule(&["deny", "approve"], None), 1..3),
        at in any::<usize>(),
        reqs in proptest::collection::vec(request(), 1..12),
        id in identity(),
    ) {
        let file = [
            "examples/agents.yaml",
            "tests/testdata/policies/semantics.yaml",
            "tests/testdata/policies/review.yaml",
        ][which];
        let text = insert_rules(&read(file), &extra, at);
        let stricter = Policy::from_yaml(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let only_denies = extra.iter().all(|r| r["effect"] == "deny");
        for req in &reqs {
            let before = req.evaluate(&POLICIES[which], &id).decision;
            let after = req.evaluate(&stricter, &id).decision;
            // An approve rule may turn the default deny into "ask a person"; nothing else
            // may loosen a decision.
            let ok = if only_denies {
                strictness(after.effect) >= strictness(before.effect)
            } else {
                (after.effect != Effect::Allow || before.effect == Effect::Allow)
                    && (before.effect != Effect::Deny || before.rule.is_none() || after.effect == Effect::Deny)
            };
            prop_assert!(
                ok,
                "{:?}: {:?} became {:?} ({})", req, before.effect, after.effect, after.reason
            );
        }
    }
}

// ---- `docs/kubernetes-semantics.md`, "DeleteOptions: the body overrides the query" ------

/// A policy that allows every delete of configmaps in `dev`, so only kubeleash's own checks
/// can refuse one.
static DELETES: LazyLock<Policy> = LazyLock::new(|| {
    Policy::from_yaml(
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - name: deletes\n      effect: allow\n      verbs: [delete, deletecollection]\n      apiGroups: [\"\"]\n      resources: [configmaps]\n      namespaces: [dev]\n",
    )
    .unwrap()
});

/// One `DeleteOptions` field, as the query or a body may carry it.
#[derive(Debug, Clone)]
enum Opt {
    DryRun,
    Propagation(&'static str),
    Grace(i64),
    Orphan(bool),
}

fn opt() -> impl Strategy<Value = Opt> {
    prop_oneof![
        Just(Opt::DryRun),
        prop::sample::select(vec!["Orphan", "Background", "Foreground"]).prop_map(Opt::Propagation),
        prop_oneof![Just(0i64), Just(30), Just(-1)].prop_map(Opt::Grace),
        any::<bool>().prop_map(Opt::Orphan),
    ]
}

/// What a DELETE's body holds.
#[derive(Debug, Clone)]
enum DeleteBody {
    None,
    Empty,
    Whitespace,
    /// A DeleteOptions object with these fields, and maybe an empty `dryRun` list.
    Options(Vec<Opt>, bool),
    /// Not DeleteOptions: an unknown (or wrongly cased) key, a wrong type, not JSON.
    Invalid(&'static str),
}

fn delete_body() -> impl Strategy<Value = DeleteBody> {
    prop_oneof![
        Just(DeleteBody::None),
        Just(DeleteBody::Empty),
        Just(DeleteBody::Whitespace),
        (prop::collection::vec(opt(), 0..4), any::<bool>())
            .prop_map(|(o, empty)| DeleteBody::Options(o, empty)),
        prop::sample::select(vec![
            r#"{"DryRun":["All"]}"#,
            r#"{"dryrun":["All"]}"#,
            r#"{"dryRun":"All"}"#,
            r#"{"dryRun":["all"]}"#,
            r#"{"gracePeriodSeconds":"0"}"#,
            r#"{"gracePeriodSeconds":1.5}"#,
            r#"{"propagationPolicy":"orphan"}"#,
            r#"{"kind":"Pod"}"#,
            r#"{"dryRun":["All"],"dryRun":[]}"#,
            r#"["dryRun"]"#,
            "null",
            "dryRun=All",
            "{",
        ])
        .prop_map(DeleteBody::Invalid),
    ]
}

impl DeleteBody {
    fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            DeleteBody::None => None,
            DeleteBody::Empty => Some(Vec::new()),
            DeleteBody::Whitespace => Some(b" \n".to_vec()),
            DeleteBody::Options(opts, empty_dry_run) => {
                let mut o = serde_json::Map::new();
                if *empty_dry_run {
                    o.insert("dryRun".into(), json!([]));
                }
                for opt in opts {
                    let (k, v) = match opt {
                        Opt::DryRun => ("dryRun", json!(["All"])),
                        Opt::Propagation(p) => ("propagationPolicy", json!(p)),
                        Opt::Grace(g) => ("gracePeriodSeconds", json!(g)),
                        Opt::Orphan(b) => ("orphanDependents", json!(b)),
                    };
                    o.insert(k.into(), v);
                }
                Some(Value::Object(o).to_string().into_bytes())
            }
            DeleteBody::Invalid(text) => Some(text.as_bytes().to_vec()),
        }
    }
}

fn query_of(opts: &[Opt]) -> String {
    let mut seen = std::collections::HashSet::new();
    let pairs: Vec<String> = opts
        .iter()
        .filter_map(|o| {
            let (k, v) = match o {
                Opt::DryRun => ("dryRun", "All".to_string()),
                Opt::Propagation(p) => ("propagationPolicy", p.to_string()),
                Opt::Grace(g) => ("gracePeriodSeconds", g.to_string()),
                Opt::Orphan(b) => ("orphanDependents", b.to_string()),
            };
            seen.insert(k).then(|| format!("{k}={v}"))
        })
        .collect();
    pairs.join("&")
}

/// The API server's reading (`handlers/delete.go`), written independently of kubeleash:
/// `Some(dry_run)` for what it does, `None` when it answers 400 instead of deleting.
fn server_dry_run(query: &[Opt], body: Option<&[u8]>) -> Option<bool> {
    let Some(bytes) = body.filter(|b| !b.is_empty()) else {
        return Some(query.iter().any(|o| matches!(o, Opt::DryRun)));
    };
    // A non-empty body: the query is ignored, whatever it says.
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let object = v.as_object()?;
    match object.get("dryRun") {
        None | Some(Value::Null) => Some(false),
        Some(Value::Array(a)) if a.iter().all(|x| x == "All") => Some(!a.is_empty()),
        Some(_) => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Invariant (semantics "DeleteOptions: the body overrides the query"): for a DELETE, the
    /// `dry_run` fact (and so the record and the kubectl line) is what the API server will do, or
    /// the request is refused. Refused: options in both the query and a non-empty body, and a body
    /// that is not DeleteOptions; never a request kubectl sends (options only in the body, or only
    /// in the query). `decide` refuses exactly what `with_body_facts` refuses, so a data path that
    /// only decides can never forward a real delete whose classified facts said dry run.
    #[test]
    fn delete_dry_run_fact_is_what_the_server_does(
        query in prop::collection::vec(opt(), 0..4),
        body in delete_body(),
        collection in any::<bool>(),
    ) {
        let q = query_of(&query);
        let path = if collection {
            "/api/v1/namespaces/dev/configmaps"
        } else {
            "/api/v1/namespaces/dev/configmaps/x"
        };
        let target = if q.is_empty() { path.to_string() } else { format!("{path}?{q}") };
        let bytes = body.bytes();
        let mut req = classify("DELETE", &target, &HeaderMap::new()).unwrap();
        let classified_dry_run = req.facts.dry_run;
        let id = Identity::new("agent", ["ai"]);
        let decision = DELETES.decide(&id, &req, bytes.as_deref());
        let refined = req.with_body_facts(bytes.as_deref());
        let server = server_dry_run(&query, bytes.as_deref());
        let nonempty = bytes.as_deref().is_some_and(|b| !b.is_empty());

        // decide and with_body_facts agree on what is refused.
        prop_assert_eq!(decision.effect == Effect::Deny, refused_flag(&refined), "{:?}", decision);
        match refined {
            Ok(()) => {
                let server = server.expect("kubeleash accepted what the API server refuses");
                prop_assert_eq!(req.facts.dry_run, server, "{} body {:?}", target, body);
                let line = kubeleash_core::kubectl::command(&req);
                if line.starts_with("kubectl ") {
                    prop_assert_eq!(line.contains("--dry-run=server"), server, "{}", line);
                }
            }
            Err(_) => {
                // Refused only where kubectl never goes.
                let both = nonempty && !query.is_empty();
                let body_only_valid = matches!(body, DeleteBody::Options(..));
                prop_assert!(both || !body_only_valid, "refused {} {:?}", target, body);
            }
        }
        // Without `with_body_facts`, a dry run the classifier saw is still never a real
        // delete that decide lets through.
        if classified_dry_run && decision.effect == Effect::Allow {
            prop_assert_eq!(server, Some(true), "{} {:?}", target, body);
        }
    }
}

fn refused_flag<E>(r: &Result<(), E>) -> bool {
    r.is_err()
}
