//! `kubeleash learn RECORD...`: the smallest policy that would have let through what was
//! recorded, written from what agents really did.
//!
//! Every request kubeleash let through (forwarded, approved, or let through in audit/observe
//! mode) becomes part of a rule: one rule per identity, effect, API group, namespace and set of
//! verbs, listing the resources, and the names where a resource was only ever reached by at most
//! three names. Privileged requests (exec, token requests, RBAC writes, ...) and requests a
//! person approved become `approve` rules, never `allow`. Each rule says in a comment which
//! records it comes from, and suggests conditions from the values seen (image registries,
//! replica counts). The policy's `tests:` are generated from the record: what went through is
//! expected to go through (or be held), what was refused to be refused. `--rbac FILE` writes
//! the RBAC Roles and ClusterRoles the operator's credential needs for the learned policy.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use kubeleash_core::policy::privileged;
use kubeleash_core::record::{Outcome, Record, RecordKind};
use kubeleash_core::request::Attributes;
use serde_json::Value;

use crate::replay::command;
use crate::report::{USAGE, lower};

/// At most this many names make a rule name-restricted.
const MAX_NAMES: usize = 3;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `metadata.name` of the learned policy.
    #[arg(long, value_name = "NAME", default_value = "learned")]
    name: String,
    /// Also write the RBAC Roles and ClusterRoles the operator's credential needs for the
    /// learned policy (YAML) to this file.
    #[arg(long, value_name = "FILE")]
    rbac: Option<PathBuf>,
    /// Records written by `kubeleash proxy --record` (or the tower layer's recorder).
    #[arg(required = true, value_name = "RECORD")]
    records: Vec<PathBuf>,
}

/// What the requests of one key gathered.
#[derive(Default)]
struct Gathered {
    /// Names reached (`None` once a request named none).
    names: Option<BTreeSet<String>>,
    seqs: BTreeSet<u64>,
    images: BTreeSet<String>,
    replicas: BTreeSet<i64>,
    /// Label key → values seen on the objects written.
    labels: BTreeMap<String, BTreeSet<String>>,
}

/// What requests are gathered by: identity, effect, group (`None` for a non-resource URL),
/// namespace scope, the resource (or URL) and the verb.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    user: String,
    effect: &'static str,
    group: Option<String>,
    /// `None`: every namespace (a list or watch across all); `Some("")`: cluster scope.
    namespace: Option<String>,
    target: String,
    verb: String,
}

struct Seen {
    user: String,
    groups: Vec<String>,
    method: String,
    target: String,
    expect: &'static str,
    seq: u64,
    kubectl: String,
}

pub fn run(a: Args) -> ExitCode {
    let mut rules: BTreeMap<Key, Gathered> = BTreeMap::new();
    let mut tests: Vec<Seen> = Vec::new();
    let mut groups_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in &a.records {
        let v = match crate::replay::read_verified(file) {
            Ok(v) => v,
            Err(code) => return code,
        };
        for r in &v.records {
            learn_one(r, &mut rules, &mut tests, &mut groups_of);
        }
    }
    if rules.is_empty() {
        eprintln!("error: the records hold no request that went through: nothing to learn");
        return ExitCode::from(1);
    }
    print!("{}", policy_text(&a.name, &rules, &tests, &groups_of));
    if let Some(path) = &a.rbac
        && let Err(e) = std::fs::write(path, rbac_text(&a.name, &rules))
    {
        eprintln!(
            "error: cannot write `{}`: {}",
            path.display(),
            lower(&e.to_string())
        );
        return ExitCode::from(USAGE);
    }
    ExitCode::SUCCESS
}

fn learn_one(
    r: &Record,
    rules: &mut BTreeMap<Key, Gathered>,
    tests: &mut Vec<Seen>,
    groups_of: &mut BTreeMap<String, Vec<String>>,
) {
    let b = &r.body;
    let d = &b.decision;
    if b.kind != RecordKind::Request || d.outcome == Outcome::Answered {
        return;
    }
    let Some(attrs) = &b.request.attributes else {
        return;
    };
    // A dry run changed nothing: it is no reason to allow the write itself.
    if b.request.dry_run {
        return;
    }
    // A `*` in a name, namespace or path is a literal in a request (no object is named so) but
    // a glob in a policy: learned, it would allow every name. An agent could plant one.
    if attrs.name.contains('*') || attrs.namespace.contains('*') || attrs.path.contains('*') {
        eprintln!(
            "warning: record {} names `*` ({}): not learned, since in a policy `*` matches everything",
            r.seq,
            kubeleash_core::display::printable(&b.request.target)
        );
        return;
    }
    let through = matches!(
        d.outcome,
        Outcome::Forwarded | Outcome::Approved | Outcome::Audited
    );
    let refused_by_policy = d.outcome == Outcome::Refused
        && b.response.as_ref().is_some_and(|x| x.status == 403)
        && d.approver.is_none();
    let user = b.identity.user.clone();
    groups_of
        .entry(user.clone())
        .or_insert_with(|| b.identity.groups.clone());
    let approve =
        d.outcome == Outcome::Approved || d.effect == "approve" || privileged(attrs).is_some();
    let expect = if through {
        if approve { "approve" } else { "allow" }
    } else if refused_by_policy {
        "deny"
    } else {
        return;
    };
    if !tests
        .iter()
        .any(|t| t.user == user && t.method == b.request.method && t.target == b.request.target)
    {
        tests.push(Seen {
            user: user.clone(),
            groups: b.identity.groups.clone(),
            method: b.request.method.clone(),
            target: b.request.target.clone(),
            expect,
            seq: r.seq,
            kubectl: command(r),
        });
    }
    if !through {
        return;
    }
    let key = Key {
        user,
        effect: if approve { "approve" } else { "allow" },
        group: attrs.resource_request.then(|| attrs.api_group.clone()),
        namespace: scope(attrs),
        target: if attrs.resource_request {
            attrs.combined_resource()
        } else {
            attrs.path.clone()
        },
        verb: attrs.verb.clone(),
    };
    let g = rules.entry(key).or_insert_with(|| Gathered {
        names: Some(BTreeSet::new()),
        ..Gathered::default()
    });
    g.seqs.insert(r.seq);
    match &mut g.names {
        Some(set) if !attrs.name.is_empty() && attrs.resource_request => {
            set.insert(attrs.name.clone());
        }
        _ => g.names = None,
    }
    if let Some(body) = b
        .request
        .body
        .as_deref()
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
    {
        values_seen(&body, g);
    }
}

/// The namespace scope a rule for these attributes needs.
fn scope(a: &Attributes) -> Option<String> {
    if !a.resource_request {
        return Some(String::new());
    }
    if a.api_group.is_empty() && a.resource == "namespaces" {
        // A namespace's own namespace is its name: cluster scope.
        return Some(String::new());
    }
    if a.namespace.is_empty() && matches!(a.verb.as_str(), "list" | "watch" | "deletecollection") {
        // Across all namespaces, or a cluster-scoped resource: the rule cannot be narrower than
        // what was asked; cluster-scoped resources read as cluster scope.
        return if kubeleash_core::policy::cluster_scoped(&a.api_group, &a.resource) {
            Some(String::new())
        } else {
            None
        };
    }
    Some(a.namespace.clone())
}

/// Values a condition could pin: container images (their registries), replica counts.
fn values_seen(v: &Value, g: &mut Gathered) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                match (k.as_str(), x) {
                    ("image", Value::String(s)) if !s.contains("[masked") => {
                        // Written into a comment of the learned policy: only a registry that is
                        // a host name (and port) is, so a hostile image cannot add a line.
                        if let Some(r) = registry(s) {
                            g.images.insert(r);
                        }
                    }
                    ("labels", Value::Object(labels)) => {
                        // Written into a comment of the learned policy: only plain label keys
                        // and values are (what Kubernetes allows anyway).
                        for (k, v) in labels {
                            if let Value::String(v) = v
                                && plain_label(k)
                                && plain_label(v)
                            {
                                g.labels.entry(k.clone()).or_default().insert(v.clone());
                            }
                        }
                    }
                    ("replicas", Value::Number(n)) => {
                        if let Some(n) = n.as_i64() {
                            g.replicas.insert(n);
                        }
                    }
                    _ => values_seen(x, g),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| values_seen(x, g)),
        _ => {}
    }
}

/// A label key or value made of what Kubernetes allows in them (letters, digits, `-`, `_`, `.`,
/// `/` in a key), at most 317 characters (a prefixed key's limit).
fn plain_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 317
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

/// The registry part of an image reference (`docker.io` when it names none); `None` when it is
/// not a host name with an optional port.
fn registry(image: &str) -> Option<String> {
    let host = match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    };
    let plain = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    plain.then(|| host.to_string())
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn list(items: impl IntoIterator<Item = String>) -> String {
    let v: Vec<String> = items.into_iter().map(|s| yaml_str(&s)).collect();
    format!("[{}]", v.join(", "))
}

/// A rule as it is written.
struct Written {
    name: String,
    effect: &'static str,
    user: String,
    verbs: BTreeSet<String>,
    group: Option<String>,
    namespace: Option<String>,
    resources: Vec<String>,
    /// The names, when every request named one of at most [`MAX_NAMES`].
    names: Option<BTreeSet<String>>,
    seqs: BTreeSet<u64>,
    images: BTreeSet<String>,
    replicas: BTreeSet<i64>,
    /// Label key → values seen on the objects written.
    labels: BTreeMap<String, BTreeSet<String>>,
}

/// The rules to write: first each resource's verbs (one resource, one name restriction), then
/// resources without names that share identity, effect, group, namespace and verbs in one rule.
/// A name-restricted resource keeps a rule of its own, so its names restrict only it.
fn merged(rules: &BTreeMap<Key, Gathered>) -> Vec<Written> {
    let mut per_resource: Vec<Written> = Vec::new();
    for (k, g) in rules {
        let names = g
            .names
            .clone()
            .filter(|n| !n.is_empty() && n.len() <= MAX_NAMES);
        if let Some(w) = per_resource.iter_mut().find(|w| {
            w.user == k.user
                && w.effect == k.effect
                && w.group == k.group
                && w.namespace == k.namespace
                && w.resources == [k.target.clone()]
                && w.names == names
        }) {
            w.verbs.insert(k.verb.clone());
            w.seqs.extend(g.seqs.iter().copied());
            w.images.extend(g.images.iter().cloned());
            w.replicas.extend(g.replicas.iter().copied());
            for (k, v) in &g.labels {
                w.labels
                    .entry(k.clone())
                    .or_default()
                    .extend(v.iter().cloned());
            }
            continue;
        }
        per_resource.push(Written {
            name: String::new(),
            effect: k.effect,
            user: k.user.clone(),
            verbs: BTreeSet::from([k.verb.clone()]),
            group: k.group.clone(),
            namespace: k.namespace.clone(),
            resources: vec![k.target.clone()],
            names,
            seqs: g.seqs.clone(),
            images: g.images.clone(),
            replicas: g.replicas.clone(),
            labels: g.labels.clone(),
        });
    }
    let mut out: Vec<Written> = Vec::new();
    for w in per_resource {
        if w.names.is_none()
            && let Some(o) = out.iter_mut().find(|o| {
                o.names.is_none()
                    && o.user == w.user
                    && o.effect == w.effect
                    && o.group == w.group
                    && o.namespace == w.namespace
                    && o.verbs == w.verbs
            })
        {
            o.resources.extend(w.resources);
            o.seqs.extend(w.seqs);
            o.images.extend(w.images);
            o.replicas.extend(w.replicas);
            for (k, v) in w.labels {
                o.labels.entry(k).or_default().extend(v);
            }
            continue;
        }
        out.push(w);
    }
    let mut taken: BTreeSet<String> = BTreeSet::new();
    for w in &mut out {
        let first = w
            .resources
            .first()
            .map(|r| r.trim_start_matches('/').replace('/', "-"))
            .unwrap_or_default();
        let base = format!(
            "{}-{}{}-{}",
            w.user,
            w.verbs.iter().cloned().collect::<Vec<_>>().join("-"),
            match w.namespace.as_deref() {
                Some("") => String::new(),
                Some(ns) => format!("-in-{ns}"),
                None => "-everywhere".into(),
            },
            if first.is_empty() {
                "api".to_string()
            } else {
                first
            }
        );
        let base: String = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let mut name = base.clone();
        let mut n = 2;
        while !taken.insert(name.clone()) {
            name = format!("{base}-{n}");
            n += 1;
        }
        w.name = name;
    }
    out
}

fn policy_text(
    name: &str,
    rules: &BTreeMap<Key, Gathered>,
    tests: &[Seen],
    groups_of: &BTreeMap<String, Vec<String>>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Learned by `kubeleash learn` from what was recorded: each rule lets through exactly what\n\
         # went through, and names the records it comes from. Read it, narrow it, then ship it."
    );
    let _ = writeln!(
        s,
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nmetadata: {{name: {}}}\nspec:\n  rules:",
        yaml_str(name)
    );
    for w in merged(rules) {
        let seqs: Vec<String> = w.seqs.iter().map(u64::to_string).collect();
        let _ = writeln!(s, "    # from records {}", seqs.join(", "));
        if !w.images.is_empty() {
            let _ = writeln!(
                s,
                "    # suggested condition, from the images seen: when: [{{path: \"$..image\", matches: \"{}/*\"}}]",
                w.images
                    .iter()
                    .next()
                    .map(String::as_str)
                    .unwrap_or_default()
            );
        }
        if let Some((key, values)) = w.labels.iter().find(|(_, v)| v.len() <= MAX_NAMES) {
            let path = if key.contains(['.', '/']) {
                format!("$.metadata.labels['{key}']")
            } else {
                format!("$.metadata.labels.{key}")
            };
            let _ = writeln!(
                s,
                "    # suggested condition, from the labels seen: when: [{{path: \"{path}\", in: {}}}]",
                list(values.iter().cloned())
            );
        }
        if let (Some(lo), Some(hi)) = (w.replicas.first(), w.replicas.last()) {
            let _ = writeln!(
                s,
                "    # suggested condition, from the replica counts seen: when: [{{path: \"$.spec.replicas\", between: [{lo}, {hi}]}}]"
            );
        }
        let _ = writeln!(s, "    - name: {}", yaml_str(&w.name));
        let _ = writeln!(s, "      effect: {}", w.effect);
        let _ = writeln!(s, "      subjects: {{users: [{}]}}", yaml_str(&w.user));
        let _ = writeln!(s, "      verbs: {}", list(w.verbs.iter().cloned()));
        match &w.group {
            Some(g) => {
                let _ = writeln!(s, "      apiGroups: [{}]", yaml_str(g));
                let _ = writeln!(s, "      resources: {}", list(w.resources.iter().cloned()));
                if let Some(ns) = &w.namespace {
                    let _ = writeln!(s, "      namespaces: [{}]", yaml_str(ns));
                }
                if let Some(names) = &w.names {
                    let _ = writeln!(s, "      names: {}", list(names.iter().cloned()));
                }
            }
            None => {
                let _ = writeln!(
                    s,
                    "      nonResourceURLs: {}",
                    list(w.resources.iter().cloned())
                );
            }
        }
    }
    let _ = writeln!(s, "  tests:");
    for t in tests {
        let groups = groups_of
            .get(&t.user)
            .cloned()
            .unwrap_or_else(|| t.groups.clone());
        let _ = writeln!(
            s,
            "    - {{name: {}, user: {}, groups: {}, request: {}, expect: {}}}",
            yaml_str(&format!("record {}: {}", t.seq, t.kubectl)),
            yaml_str(&t.user),
            list(groups),
            yaml_str(&format!("{} {}", t.method, t.target)),
            t.expect
        );
    }
    s
}

/// RBAC rules as `(apiGroup, resource, verbs)`.
type RbacRules = Vec<(String, String, BTreeSet<String>)>;

/// The RBAC the operator's credential needs: a Role per namespace, a ClusterRole for cluster
/// scope and for what spans every namespace.
fn rbac_text(name: &str, rules: &BTreeMap<Key, Gathered>) -> String {
    let mut by_ns: BTreeMap<Option<String>, RbacRules> = BTreeMap::new();
    for k in rules.keys() {
        let Some(group) = &k.group else { continue };
        let ns = k.namespace.clone().filter(|n| !n.is_empty());
        let entry = by_ns.entry(ns).or_default();
        // A held write is dry-run and its live object read first, for the person.
        let mut verbs = BTreeSet::from([k.verb.clone()]);
        if k.effect == "approve" && matches!(k.verb.as_str(), "update" | "patch" | "delete") {
            verbs.insert("get".into());
        }
        match entry
            .iter_mut()
            .find(|(gr, re, _)| gr == group && *re == k.target)
        {
            Some((_, _, have)) => have.extend(verbs),
            None => entry.push((group.clone(), k.target.clone(), verbs)),
        }
    }
    let mut s = String::from(
        "# The RBAC kubeleash's own credential needs for the learned policy: bind these to the\n\
         # identity in the kubeconfig kubeleash holds (never to the agent).\n",
    );
    for (ns, rules) in by_ns {
        let (kind, meta) = match &ns {
            Some(n) => (
                "Role",
                format!("{{name: {}, namespace: {}}}", yaml_str(name), yaml_str(n)),
            ),
            None => ("ClusterRole", format!("{{name: {}}}", yaml_str(name))),
        };
        let _ = writeln!(
            s,
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: {kind}\nmetadata: {meta}\nrules:"
        );
        for (group, resource, verbs) in rules {
            let _ = writeln!(
                s,
                "  - {{apiGroups: [{}], resources: [{}], verbs: {}}}",
                yaml_str(&group),
                yaml_str(&resource),
                list(verbs)
            );
        }
    }
    s
}
