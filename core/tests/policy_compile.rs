//! Compiling policies: every error at once, each with its code and the line and column of the
//! node at fault; JSON compiles as YAML does; a compiled policy is `Send + Sync + Clone`.
#![allow(clippy::panic, reason = "tests")]

use kubeleash_core::policy::{Effect, Identity, Policy, PolicyError, PolicyErrors};

/// `(code, line, column)` of every error, in order.
fn located(errs: &PolicyErrors) -> Vec<(&'static str, u64, u64)> {
    errs.errors()
        .iter()
        .map(|e| {
            let l = e.location();
            (e.code(), l.map_or(0, |l| l.line), l.map_or(0, |l| l.column))
        })
        .collect()
}

fn compile_err(text: &str) -> PolicyErrors {
    match Policy::from_yaml(text) {
        Ok(_) => panic!("compiled:\n{text}"),
        Err(e) => e,
    }
}

fn find<'a>(errs: &'a PolicyErrors, code: &str, needle: &str) -> &'a PolicyError {
    errs.errors()
        .iter()
        .find(|e| e.code() == code && e.message().contains(needle))
        .unwrap_or_else(|| panic!("no `{code}` error mentioning {needle:?} in {errs:#?}"))
}

const BROKEN: &str = r#"apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: broken}
spec:
  rules:
    - {name: effect, effect: permit, verbs: [get], resources: [pods]}
    - {name: verb, effect: allow, verbs: [get, lsit], resources: [pods]}
    - {name: subres, effect: allow, verbs: [get], resources: ["pods/*"]}
    - {name: verb, effect: deny, verbs: [get], resources: [pods]}
    - {name: both, effect: allow, verbs: [get], resources: [pods], nonResourceURLs: [/version]}
    - {name: neither, effect: allow, verbs: [get]}
    - {name: empty, effect: allow, verbs: [], apiGroups: [], resources: [], namespaces: [], names: []}
    - {name: nr-ns, effect: allow, verbs: [get], nonResourceURLs: [/healthz], namespaces: [dev]}
    - name: zero-tests
      effect: deny
      verbs: [create]
      resources: [pods]
      when:
        - {path: "$.spec.hostPID"}
        - {path: "$.spec.hostIPC", equals: true, exists: true}
        - {path: "$.spec[", equals: true}
  tests:
    - {name: bad line, request: "GET", expect: deny}
    - {name: bad expect, request: "GET /version", expect: maybe}
    - {name: bad rule, request: "GET /version", expect: deny, rule: nope}
"#;

#[test]
fn every_error_at_once_with_line_and_column() {
    let errs = compile_err(BROKEN);
    assert_eq!(
        located(&errs),
        vec![
            ("effect", 6, 30),
            ("unknown-verb", 7, 48),
            ("resources", 8, 63),
            ("duplicate-rule", 9, 14),
            ("rule-target", 10, 85),
            ("rule-target", 11, 7),
            ("verbs", 12, 43),
            ("api-groups", 12, 58),
            ("resources", 12, 73),
            ("namespaces", 12, 89),
            ("names", 12, 100),
            ("rule-target", 13, 91),
            ("condition", 19, 11),
            ("condition", 20, 11),
            ("condition-path", 21, 18),
            ("test-request", 23, 33),
            ("test-expect", 24, 59),
            ("test-rule", 25, 7),
        ],
        "{errs:#?}"
    );
    assert!(
        errs.to_string()
            .starts_with("policy has 18 errors; line 6, column 30: ")
    );
}

#[test]
fn messages_name_the_input_and_help_says_how_to_fix() {
    let errs = compile_err(BROKEN);
    let effect = find(&errs, "effect", "permit");
    assert_eq!(
        effect.message(),
        "rule `effect` has unknown effect `permit`"
    );
    assert_eq!(
        effect.help_text(),
        Some("effect is one of allow, deny, approve")
    );

    let verb = find(&errs, "unknown-verb", "lsit");
    assert_eq!(verb.message(), "rule `verb` has unknown verb `lsit`");
    assert!(
        verb.help_text()
            .is_some_and(|h| h.contains("get, list, watch"))
    );

    let sub = find(&errs, "resources", "pods/*");
    assert_eq!(sub.message(), "rule `subres` has invalid resource `pods/*`");
    let help = sub.help_text().unwrap_or_default();
    assert!(
        help.contains("literally named `*`") && help.contains("`*/log`"),
        "{help}"
    );

    let dup = find(&errs, "duplicate-rule", "verb");
    assert_eq!(dup.message(), "rule name `verb` is used twice");
    assert_eq!(
        dup.help_text(),
        Some("rule names must be unique; the first is at line 7")
    );

    find(&errs, "rule-target", "both resources and nonResourceURLs");
    find(
        &errs,
        "rule-target",
        "neither resources nor nonResourceURLs",
    );
    find(&errs, "rule-target", "cannot have namespaces");
    find(&errs, "verbs", "empty verbs list");
    find(&errs, "condition", "`$.spec.hostPID`");
    find(&errs, "condition", "`$.spec.hostIPC`");
    find(&errs, "condition-path", "`$.spec[`");
    find(&errs, "test-request", "`GET`");
    find(&errs, "test-expect", "`maybe`");
    find(&errs, "test-rule", "`nope`");

    for e in errs.errors() {
        let m = e.message();
        assert!(!m.ends_with('.'), "trailing period: {m}");
        assert!(!m.contains('\n'), "line break: {m}");
        assert!(
            m.chars().next().is_some_and(|c| !c.is_uppercase()),
            "capital: {m}"
        );
    }
}

#[test]
fn bad_api_version_and_kind_are_both_reported() {
    let errs = compile_err("apiVersion: kubeleash.dev/v1\nkind: Polcy\nspec:\n  rules: []\n");
    assert_eq!(located(&errs), vec![("api-version", 1, 13), ("kind", 2, 7)]);
    assert_eq!(
        find(&errs, "api-version", "v1").help_text(),
        Some("use `apiVersion: kubeleash.dev/v1alpha1`")
    );
}

#[test]
fn unknown_fields_are_refused_where_they_are() {
    let errs = compile_err(
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - name: a\n      effect: allow\n      verbs: [get]\n      resources: [pods]\n      apigroups: [\"\"]\n",
    );
    assert_eq!(located(&errs), vec![("yaml", 9, 7)]);
    let m = errs.errors()[0].message();
    assert!(m.contains("unknown field `apigroups`"), "{m}");
    assert!(
        m.contains("apiGroups"),
        "the message lists the known fields: {m}"
    );

    let errs = compile_err(
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules: []\n  defaultEffect: allow\n",
    );
    assert_eq!(errs.errors()[0].location().map(|l| l.line), Some(5));
}

#[test]
fn yaml_syntax_errors_have_a_location() {
    let errs = compile_err(
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - {name: a, effect: allow\n    - x: [\n",
    );
    assert_eq!(errs.errors().len(), 1);
    let e = &errs.errors()[0];
    assert_eq!(e.code(), "yaml");
    assert!(e.location().is_some_and(|l| l.line >= 5), "{e:?}");
    assert!(e.message().starts_with("policy is not a valid document: "));

    for text in ["", "just a string", "[1, 2]", "kind: Policy\nspec: {}\n"] {
        let errs = compile_err(text);
        assert_eq!(errs.errors()[0].code(), "yaml", "{text:?}");
    }
}

#[test]
fn parser_advice_to_rust_callers_is_not_shown() {
    let dup = compile_err(
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - name: a\n      effect: deny\n      effect: allow\n      verbs: [get]\n      resources: [pods]\n",
    );
    let m = dup.errors()[0].message();
    assert!(m.contains("duplicate mapping key"), "{m}");
    assert!(
        !m.contains("DuplicateKeyPolicy") && !m.contains("Options"),
        "{m}"
    );
    assert_eq!(dup.errors()[0].location().map(|l| l.line), Some(7));

    let multi = compile_err(
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec: {rules: []}\n---\napiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec: {rules: []}\n",
    );
    let m = multi.errors()[0].message();
    assert!(m.contains("multiple YAML documents"), "{m}");
    assert!(!m.contains("from_str"), "{m}");
}

#[test]
fn other_rule_errors() {
    let errs = compile_err(
        r#"apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  rules:
    - {name: " ", effect: allow, verbs: [get], resources: [pods]}
    - {name: groups, effect: allow, verbs: [get], apiGroups: [apps/v1, "a*"], resources: [deployments]}
    - {name: res, effect: allow, verbs: [get], resources: ["", "pods/", "a/b/c", "po*"]}
    - {name: urls, effect: allow, verbs: [get], nonResourceURLs: [version, "/a/*/b", "/x**"]}
    - {name: nr-verb, effect: allow, verbs: [list], nonResourceURLs: [/version]}
    - {name: nobody, effect: allow, subjects: {}, verbs: [get], resources: [pods]}
    - {name: empty-subject, effect: allow, subjects: {users: [""]}, verbs: [get], resources: [pods]}
    - {name: bad-entries, effect: allow, verbs: [get], resources: [pods], namespaces: ["a/b"], names: [""]}
    - {name: nr-when, effect: deny, verbs: [get], nonResourceURLs: [/x], when: [{path: "$", exists: true}]}
"#,
    );
    let codes: Vec<_> = located(&errs).into_iter().map(|(c, l, _)| (c, l)).collect();
    assert_eq!(
        codes,
        vec![
            ("rule-name", 5),
            ("api-groups", 6),
            ("api-groups", 6),
            ("resources", 7),
            ("resources", 7),
            ("resources", 7),
            ("resources", 7),
            ("non-resource-urls", 8),
            ("non-resource-urls", 8),
            ("non-resource-urls", 8),
            ("unknown-verb", 9),
            ("subjects", 10),
            ("subjects", 11),
            ("namespaces", 12),
            ("names", 12),
            ("rule-target", 13),
        ],
        "{errs:#?}"
    );
}

const JSON_POLICY: &str = r#"{
  "apiVersion": "kubeleash.dev/v1alpha1",
  "kind": "Policy",
  "metadata": {"name": "json"},
  "spec": {
    "rules": [
      {"name": "read", "effect": "allow", "subjects": {"groups": ["ai"]},
       "verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"], "namespaces": ["dev"]},
      {"name": "no-priv", "effect": "deny", "verbs": ["create"], "resources": ["pods"],
       "when": [{"path": "$..privileged", "equals": true}]},
      {"name": "health", "effect": "allow", "verbs": ["get"], "nonResourceURLs": ["/healthz"]}
    ],
    "tests": [
      {"name": "reads", "user": "a", "groups": ["ai"], "request": "GET /api/v1/namespaces/dev/pods", "expect": "allow", "rule": "read"}
    ]
  }
}"#;

#[test]
fn a_policy_as_json_compiles() -> Result<(), PolicyErrors> {
    let p = Policy::from_yaml(JSON_POLICY)?;
    assert_eq!(p.name(), Some("json"));
    assert_eq!(p.rule_count(), 3);
    assert_eq!(p.test_count(), 1);
    assert!(p.run_tests().passed());
    let d = p
        .evaluate(
            &Identity::new("a", ["ai"]),
            "GET",
            "/api/v1/namespaces/dev/pods",
            &http::HeaderMap::new(),
            None,
        )
        .decision;
    assert_eq!(d.effect, Effect::Allow);
    Ok(())
}

#[test]
fn json_errors_have_locations_too() {
    let errs = compile_err(
        "{\"apiVersion\": \"kubeleash.dev/v1alpha1\", \"kind\": \"Policy\", \"spec\": {\"rules\": [\n {\"name\": \"a\", \"effect\": \"allow\", \"verbs\": [\"gte\"], \"resources\": [\"pods\"]}]}}",
    );
    assert_eq!(located(&errs), vec![("unknown-verb", 2, 45)]);
}

#[test]
fn the_example_policy_compiles() -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/agents.yaml"
    ))?;
    let p = Policy::from_yaml(&text)?;
    assert_eq!(p.name(), Some("agents"));
    assert!(p.rule_count() >= 10);
    Ok(())
}

#[test]
fn policy_is_send_sync_clone_and_clones_share() -> Result<(), PolicyErrors> {
    fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<Policy>();
    assert_traits::<PolicyErrors>();
    let p = Policy::from_yaml(JSON_POLICY)?;
    let q = p.clone();
    let handle = std::thread::spawn(move || q.rule_count());
    assert_eq!(handle.join().ok(), Some(p.rule_count()));
    Ok(())
}
