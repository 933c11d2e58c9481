//! Compile a policy document: validate every rule (collecting every error with its location),
//! compile globs and JSONPaths, and file each rule in the index.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_saphyr::Location as SrcLoc;

use super::Effect;
use super::condition::{Condition, Test};
use super::error::{PolicyError, PolicyErrors};
use super::glob::GlobList;
use super::index::{NamespaceScope, NonResourceIndex, ResourceIndex, ResourceIndexBuilder, RuleId};
use super::selftest::PolicyTest;
use super::spec::{ConditionDoc, PolicyDoc, RuleDoc, S, SubjectsDoc};

pub(crate) const API_VERSION: &str = "kubeleash.dev/v1alpha1";

const RESOURCE_VERBS: &[&str] = &[
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
    "bind",
    "escalate",
    "approve",
    "sign",
    "use",
    "*",
];
const NON_RESOURCE_VERBS: &[&str] = &[
    "get", "head", "post", "put", "patch", "delete", "options", "*",
];

/// Who a rule applies to; `None` in a rule means everyone.
#[derive(Debug)]
pub(crate) struct Subjects {
    pub users: HashSet<Box<str>>,
    pub groups: HashSet<Box<str>>,
}

/// What a rule covers, as its document wrote it (omitted `apiGroups` read as `["*"]`): the
/// index decides requests, this reads the rule back to a person or an agent (access reviews).
#[derive(Debug, Clone, Default)]
pub(crate) struct Cover {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub non_resource_urls: Vec<String>,
    /// `None`: every namespace and cluster scope.
    pub namespaces: Option<Vec<String>>,
    /// `None`: every name.
    pub names: Option<Vec<String>>,
    /// Where the rule is written.
    pub at: Option<super::Location>,
}

/// A compiled rule. Verb, group, resource and namespace live in the index; what is left here is
/// checked per candidate.
#[derive(Debug)]
pub(crate) struct Rule {
    pub name: Arc<str>,
    pub cover: Cover,
    pub effect: Effect,
    pub reason: Option<String>,
    pub subjects: Option<Subjects>,
    pub names: Option<GlobList>,
    /// For non-resource rules: the verbs (lowercase HTTP methods) they cover.
    pub non_resource_verbs: Option<Vec<Box<str>>>,
    pub conditions: Vec<Condition>,
    /// A condition pins the body's `type` to a Secret type that mints a service account token,
    /// which an allow rule needs to grant such a Secret (a `secrets` rule alone does not).
    pub names_token_secret: bool,
}

/// A compiled policy.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub name: Option<String>,
    pub rules: Vec<Rule>,
    pub resources: ResourceIndex,
    pub non_resources: NonResourceIndex,
    pub tests: Vec<PolicyTest>,
    pub has_conditions: bool,
    pub masks: Arc<crate::mask::MaskSet>,
    /// `spec.approvals.neverWiden` (or the default floor).
    pub floor: Vec<super::floor::FloorEntry>,
}

pub(crate) fn compile(text: &str) -> Result<Compiled, PolicyErrors> {
    let doc: PolicyDoc =
        serde_saphyr::from_str_with_options(text, yaml_options()).map_err(|e| {
            let mut err = PolicyError::new("yaml", yaml_message(&e));
            if let Some(loc) = e.location() {
                err = err.at(&loc);
            }
            PolicyErrors::new(vec![err.help(
            "a policy is a YAML or JSON document with apiVersion, kind, metadata and spec.rules",
        )])
        })?;
    let mut c = Compiler::default();
    if doc.api_version.value != API_VERSION {
        c.err(
            PolicyError::new(
                "api-version",
                format!("unsupported apiVersion `{}`", doc.api_version.value),
            )
            .at(&doc.api_version.referenced)
            .help(format!("use `apiVersion: {API_VERSION}`")),
        );
    }
    if doc.kind.value != "Policy" {
        c.err(
            PolicyError::new("kind", format!("unsupported kind `{}`", doc.kind.value))
                .at(&doc.kind.referenced)
                .help("use `kind: Policy`"),
        );
    }
    let mut seen: HashMap<String, SrcLoc> = HashMap::new();
    for rule in &doc.spec.rules {
        let name = &rule.value.name;
        if let Some(first) = seen.get(&name.value) {
            c.err(
                PolicyError::new(
                    "duplicate-rule",
                    format!("rule name `{}` is used twice", name.value),
                )
                .at(&name.referenced)
                .help(format!(
                    "rule names must be unique; the first is at line {}",
                    first.line()
                )),
            );
        } else {
            seen.insert(name.value.clone(), name.referenced);
        }
        c.rule(rule);
    }
    let tests: Vec<PolicyTest> = doc
        .spec
        .tests
        .iter()
        .filter_map(|t| match PolicyTest::from_doc(t, &seen) {
            Ok(t) => Some(t),
            Err(e) => {
                c.err(e);
                None
            }
        })
        .collect();
    let masks = super::masks::compile(doc.spec.masks.as_ref(), &mut c.errors);
    let floor = super::floor::compile(doc.spec.approvals.as_ref(), &mut c.errors);
    let resources = c
        .resources
        .build()
        .map_err(|e| PolicyErrors::new(vec![PolicyError::new("glob", e)]))?;
    let Some(masks) = masks.filter(|_| c.errors.is_empty()) else {
        return Err(PolicyErrors::new(c.errors));
    };
    let has_conditions = c.rules.iter().any(|r| !r.conditions.is_empty());
    Ok(Compiled {
        name: doc.metadata.and_then(|m| m.name),
        rules: c.rules,
        resources,
        non_resources: c.non_resources,
        tests,
        has_conditions,
        masks: Arc::new(masks),
        floor,
    })
}

/// The parser's budget is sized for a policy of 100,000 rules (the default stops near 10,000),
/// and still bounds alias expansion. Booleans are YAML 1.2 (`yes` stays a string).
fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = 10_000_000;
    budget.max_events = 20_000_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.strict_booleans = true;
    options
}

fn yaml_message(e: &serde_saphyr::Error) -> String {
    // The parser's own text carries its location as a suffix; ours is reported separately.
    let s = e.to_string();
    let first = s.lines().next().unwrap_or("invalid policy document");
    // Some parser messages end in advice to its Rust caller (`..., set DuplicateKeyPolicy in
    // Options if acceptable`, `...; use from_str_multiple ...`), which a policy author cannot act on.
    let first = [", set DuplicateKeyPolicy", "; use from_str_multiple"]
        .iter()
        .find_map(|advice| first.split_once(advice).map(|(head, _)| head))
        .unwrap_or(first);
    let mut out = first
        .trim()
        .trim_start_matches("error: ")
        .trim_end_matches('.')
        .to_string();
    if let Some((_, rest)) = out.split_once(": ").filter(|_| out.starts_with("line ")) {
        out = rest.to_string();
    }
    if let Some(head) = out.get(..1) {
        let lower = head.to_lowercase();
        out.replace_range(..1, &lower);
    }
    format!("policy is not a valid document: {out}")
}

#[derive(Default)]
struct Compiler {
    errors: Vec<PolicyError>,
    rules: Vec<Rule>,
    resources: ResourceIndexBuilder,
    non_resources: NonResourceIndex,
}

fn strings(list: &Option<S<Vec<S<String>>>>) -> Option<Vec<String>> {
    list.as_ref()
        .map(|l| l.value.iter().map(|s| s.value.clone()).collect())
}

impl Compiler {
    fn err(&mut self, e: PolicyError) {
        self.errors.push(e);
    }

    fn rule(&mut self, doc: &S<RuleDoc>) {
        let before = self.errors.len();
        let r = &doc.value;
        let name = &r.name.value;
        let at = &doc.referenced;
        if name.trim().is_empty() {
            self.err(
                PolicyError::new("rule-name", "a rule has an empty name").at(&r.name.referenced),
            );
        }
        let effect = match r.effect.value.as_str() {
            "allow" => Effect::Allow,
            "deny" => Effect::Deny,
            "approve" => Effect::Approve,
            other => {
                self.err(
                    PolicyError::new(
                        "effect",
                        format!("rule `{name}` has unknown effect `{other}`"),
                    )
                    .at(&r.effect.referenced)
                    .help("effect is one of allow, deny, approve"),
                );
                Effect::Deny
            }
        };
        let subjects = r.subjects.as_ref().and_then(|s| self.subjects(name, s));
        let is_resource = r.resources.is_some();
        match (&r.resources, &r.non_resource_urls) {
            (Some(_), Some(n)) => self.err(
                PolicyError::new(
                    "rule-target",
                    format!("rule `{name}` has both resources and nonResourceURLs"),
                )
                .at(&n.referenced)
                .help("split it into two rules: one for resources, one for nonResourceURLs"),
            ),
            (None, None) => self.err(
                PolicyError::new(
                    "rule-target",
                    format!("rule `{name}` names neither resources nor nonResourceURLs"),
                )
                .at(at)
                .help("add `resources: [...]` (with `apiGroups`) or `nonResourceURLs: [...]`; use `[\"*\"]` for all"),
            ),
            _ => {}
        }
        let allowed_verbs = if is_resource {
            RESOURCE_VERBS
        } else {
            NON_RESOURCE_VERBS
        };
        let verbs = match &r.verbs {
            None => {
                self.err(
                    PolicyError::new("verbs", format!("rule `{name}` has no verbs"))
                        .at(at)
                        .help("list the verbs it covers, e.g. `verbs: [get, list, watch]`, or `[\"*\"]`"),
                );
                Vec::new()
            }
            Some(v) => {
                if v.value.is_empty() {
                    self.err(
                        PolicyError::new("verbs", format!("rule `{name}` has an empty verbs list"))
                            .at(&v.referenced),
                    );
                }
                for verb in &v.value {
                    if !allowed_verbs.contains(&verb.value.as_str()) {
                        self.err(
                            PolicyError::new(
                                "unknown-verb",
                                format!("rule `{name}` has unknown verb `{}`", verb.value),
                            )
                            .at(&verb.referenced)
                            .help(format!("verbs here are: {}", allowed_verbs.join(", "))),
                        );
                    }
                }
                v.value.iter().map(|s| s.value.clone()).collect()
            }
        };
        if !is_resource {
            for (field, list) in [
                ("apiGroups", &r.api_groups),
                ("namespaces", &r.namespaces),
                ("names", &r.names),
            ] {
                if let Some(l) = list {
                    self.err(
                        PolicyError::new(
                            "rule-target",
                            format!(
                                "rule `{name}` is a nonResourceURLs rule and cannot have {field}"
                            ),
                        )
                        .at(&l.referenced),
                    );
                }
            }
            if let Some(first) = r.when.as_ref().and_then(|w| w.first()) {
                self.err(
                    PolicyError::new(
                        "rule-target",
                        format!(
                            "rule `{name}` is a nonResourceURLs rule and cannot have conditions"
                        ),
                    )
                    .at(&first.referenced),
                );
            }
        }
        let groups = self.api_groups(name, &r.api_groups);
        let resources = self.resources(name, &r.resources);
        let urls = self.urls(name, &r.non_resource_urls);
        let namespaces = self.non_empty_list(name, "namespaces", &r.namespaces, true);
        let names = self.non_empty_list(name, "names", &r.names, false);
        let cover = Cover {
            verbs: verbs.clone(),
            api_groups: if is_resource {
                groups.clone()
            } else {
                Vec::new()
            },
            resources: resources.clone(),
            non_resource_urls: urls.clone(),
            namespaces: namespaces.clone(),
            names: names.clone(),
            at: super::Location::of(at),
        };
        let names = names.and_then(|n| match GlobList::new(n.iter().map(String::as_str)) {
            Ok(g) => Some(g),
            Err(e) => {
                self.err(PolicyError::new("glob", format!("rule `{name}`: {e}")).at(at));
                None
            }
        });
        let conditions: Vec<Condition> = r
            .when
            .iter()
            .flatten()
            .filter_map(|c| self.condition(name, c))
            .collect();
        if self.errors.len() > before {
            return;
        }
        let Ok(id) = RuleId::try_from(self.rules.len()) else {
            self.err(PolicyError::new(
                "too-many-rules",
                "a policy holds at most 2^32 rules",
            ));
            return;
        };
        if is_resource {
            let scope = match &namespaces {
                None => NamespaceScope::Any,
                Some(p) => NamespaceScope::Listed {
                    patterns: p,
                    strict: effect != Effect::Allow,
                },
            };
            for verb in &verbs {
                for group in &groups {
                    for resource in &resources {
                        self.resources.insert(verb, group, resource, &scope, id);
                    }
                }
            }
        } else {
            for url in &urls {
                self.non_resources.insert(url, id, effect != Effect::Allow);
            }
        }
        let names_token_secret = conditions
            .iter()
            .any(|c| c.pins_secret_type(super::privileged::token_secret_type));
        self.rules.push(Rule {
            names_token_secret,
            cover,
            name: name.as_str().into(),
            effect,
            reason: r.reason.clone(),
            subjects,
            names,
            non_resource_verbs: (!is_resource)
                .then(|| verbs.iter().map(|v| v.as_str().into()).collect()),
            conditions,
        });
    }

    fn subjects(&mut self, rule: &str, s: &S<SubjectsDoc>) -> Option<Subjects> {
        if s.value.users.is_empty() && s.value.groups.is_empty() {
            self.err(
                PolicyError::new(
                    "subjects",
                    format!("rule `{rule}` has subjects that match nobody"),
                )
                .at(&s.referenced)
                .help("list users or groups, or leave `subjects` out to match everyone"),
            );
            return None;
        }
        for entry in s.value.users.iter().chain(&s.value.groups) {
            if entry.value.is_empty() {
                self.err(
                    PolicyError::new(
                        "subjects",
                        format!("rule `{rule}` has an empty subject name"),
                    )
                    .at(&entry.referenced),
                );
            }
        }
        Some(Subjects {
            users: s
                .value
                .users
                .iter()
                .map(|u| u.value.as_str().into())
                .collect(),
            groups: s
                .value
                .groups
                .iter()
                .map(|g| g.value.as_str().into())
                .collect(),
        })
    }

    fn api_groups(&mut self, rule: &str, list: &Option<S<Vec<S<String>>>>) -> Vec<String> {
        // Omitted means every group: `resources: [deployments]` then covers apps/deployments,
        // which is what a reader expects of a deny rule above all.
        let Some(l) = list else {
            return vec!["*".into()];
        };
        if l.value.is_empty() {
            self.err(
                PolicyError::new(
                    "api-groups",
                    format!("rule `{rule}` has an empty apiGroups list"),
                )
                .at(&l.referenced)
                .help("use `[\"\"]` for the core group, or leave apiGroups out for every group"),
            );
        }
        for g in &l.value {
            if g.value.contains('/')
                || g.value.contains(' ')
                || (g.value.contains('*') && g.value != "*")
            {
                self.err(
                    PolicyError::new("api-groups", format!("rule `{rule}` has invalid api group `{}`", g.value))
                        .at(&g.referenced)
                        .help("an api group is a name such as `apps` (no version), `\"\"` for core, or `*`"),
                );
            }
        }
        strings(list).unwrap_or_default()
    }

    fn resources(&mut self, rule: &str, list: &Option<S<Vec<S<String>>>>) -> Vec<String> {
        let Some(l) = list else { return Vec::new() };
        if l.value.is_empty() {
            self.err(
                PolicyError::new(
                    "resources",
                    format!("rule `{rule}` has an empty resources list"),
                )
                .at(&l.referenced),
            );
        }
        for r in &l.value {
            let v = r.value.as_str();
            let (res, sub) = v.split_once('/').unwrap_or((v, ""));
            let bad = v.is_empty()
                || v.contains(' ')
                || sub.contains('/')
                || (res.contains('*') && res != "*")
                || sub.contains('*')
                || (v.contains('/') && sub.is_empty());
            if bad {
                let help = if sub == "*" {
                    "in RBAC `pods/*` matches only a subresource literally named `*`; list the subresources (`pods/log`) or use `*/log` for one subresource of every resource"
                } else {
                    "a resource is `pods`, `pods/log`, `*/scale` or `*`"
                };
                self.err(
                    PolicyError::new(
                        "resources",
                        format!("rule `{rule}` has invalid resource `{v}`"),
                    )
                    .at(&r.referenced)
                    .help(help),
                );
            }
        }
        strings(list).unwrap_or_default()
    }

    fn urls(&mut self, rule: &str, list: &Option<S<Vec<S<String>>>>) -> Vec<String> {
        let Some(l) = list else { return Vec::new() };
        for u in &l.value {
            let v = u.value.as_str();
            let star_inside = v.trim_end_matches('*').contains('*') || v.ends_with("**");
            if !(v == "*" || v.starts_with('/')) || star_inside {
                self.err(
                    PolicyError::new("non-resource-urls", format!("rule `{rule}` has invalid nonResourceURL `{v}`"))
                        .at(&u.referenced)
                        .help("a nonResourceURL is a path such as `/version`, or a prefix ending in one `*` such as `/healthz/*`"),
                );
            }
        }
        strings(list).unwrap_or_default()
    }

    fn non_empty_list(
        &mut self,
        rule: &str,
        field: &str,
        list: &Option<S<Vec<S<String>>>>,
        allow_empty_entry: bool,
    ) -> Option<Vec<String>> {
        let l = list.as_ref()?;
        if l.value.is_empty() {
            self.err(
                PolicyError::new(
                    field_code(field),
                    format!("rule `{rule}` has an empty {field} list"),
                )
                .at(&l.referenced)
                .help(format!("leave {field} out to match any")),
            );
        }
        for e in &l.value {
            if (e.value.is_empty() && !allow_empty_entry) || e.value.contains(['/', ' ']) {
                self.err(
                    PolicyError::new(
                        field_code(field),
                        format!("rule `{rule}` has invalid {field} entry `{}`", e.value),
                    )
                    .at(&e.referenced),
                );
            }
        }
        strings(list)
    }

    fn condition(&mut self, rule: &str, c: &S<ConditionDoc>) -> Option<Condition> {
        let d = &c.value;
        let mut tests = Vec::new();
        if let Some(v) = &d.equals {
            tests.push(Test::Equals(v.clone()));
        }
        if let Some(v) = &d.not_equals {
            tests.push(Test::NotEquals(v.clone()));
        }
        if let Some(v) = &d.in_ {
            tests.push(Test::In(v.clone()));
        }
        if let Some(v) = &d.not_in {
            tests.push(Test::NotIn(v.clone()));
        }
        if let Some(g) = &d.matches {
            match GlobList::new([g.value.as_str()]) {
                Ok(list) => tests.push(Test::Matches(list, g.value.clone())),
                Err(e) => self.err(
                    PolicyError::new(
                        "condition",
                        format!("rule `{rule}`: invalid glob `{}`: {e}", g.value),
                    )
                    .at(&g.referenced),
                ),
            }
        }
        if let Some(b) = d.exists {
            tests.push(Test::Exists(b));
        }
        if let Some(range) = &d.between {
            match range.value.as_slice() {
                [min, max] if min.is_finite() && max.is_finite() && min <= max => {
                    tests.push(Test::Between(*min, *max));
                }
                _ => self.err(
                    PolicyError::new(
                        "condition",
                        format!(
                            "rule `{rule}`: `between` on `{}` needs two finite numbers, the smaller first",
                            d.path.value
                        ),
                    )
                    .at(&range.referenced)
                    .help("e.g. `between: [1, 5]` (both ends included)"),
                ),
            }
        }
        if tests.len() != 1 {
            self.err(
                PolicyError::new(
                    "condition",
                    format!(
                        "condition on `{}` in rule `{rule}` needs exactly one test",
                        d.path.value
                    ),
                )
                .at(&c.referenced)
                .help("use one of equals, notEquals, in, notIn, matches, exists, between"),
            );
            return None;
        }
        let test = tests.pop()?;
        match Condition::new(&d.path.value, test) {
            Ok(c) => Some(c),
            Err(e) => {
                self.err(
                    PolicyError::new(
                        "condition-path",
                        format!("rule `{rule}` has invalid JSONPath `{}`: {}", d.path.value, first_line(&e)),
                    )
                    .at(&d.path.referenced)
                    .help("paths start at `$`, e.g. `$.spec.containers[*].securityContext.privileged`"),
                );
                None
            }
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_lowercase()
}

fn field_code(field: &str) -> &'static str {
    match field {
        "namespaces" => "namespaces",
        _ => "names",
    }
}
