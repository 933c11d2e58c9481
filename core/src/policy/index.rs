//! The rule index: rules keyed by verb, API group and resource, then by namespace, so a decision
//! touches only the rules that could apply however large the policy is.

use std::collections::HashMap;

use rustc_hash::FxHashMap;

use super::glob::{GlobIndex, is_glob};

pub(crate) type RuleId = u32;
// String keys: foldhash mixes well on near-identical names (`team-1`, `team-2`, ...), where
// FxHash collides and turns each lookup into a run of string compares. Integer keys use FxHash.
type Map<V> = HashMap<Box<str>, V, foldhash::fast::FixedState>;

/// The subresource key of RBAC's full wildcard `*`, which covers every resource and subresource.
/// No real subresource is called this (`pods/*` is refused when compiling).
const ALL: &str = "*";

/// A candidate rule, and whether it names the request's verb and resource literally (as
/// privileged requests require of rules that allow them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub id: RuleId,
    pub explicit: bool,
}

/// How a rule restricts namespaces, as the index files it.
pub(crate) enum NamespaceScope<'a> {
    /// No `namespaces`: every namespace and cluster scope.
    Any,
    /// A list of literal names and globs; `""` names cluster scope (and all-namespace lists).
    /// `strict` rules (deny, approve) also match namespace-less requests on resources that may be
    /// namespaced, since a list across all namespaces reads the restricted namespaces too.
    Listed {
        patterns: &'a [String],
        strict: bool,
    },
}

#[derive(Debug, Default)]
struct BucketBuilder {
    any: Vec<RuleId>,
    cluster: Vec<RuleId>,
    literal: Map<Vec<RuleId>>,
    globs: Vec<(String, RuleId)>,
    strict: Vec<RuleId>,
}

#[derive(Debug)]
struct Bucket {
    any: Vec<RuleId>,
    cluster: Vec<RuleId>,
    literal: Map<Vec<RuleId>>,
    globs: Option<GlobIndex<RuleId>>,
    strict: Vec<RuleId>,
}

/// Every verb, group, resource and subresource a policy names, numbered, so that a request's
/// strings are hashed and compared once each and the bucket lookups that follow compare integers.
#[derive(Debug, Default)]
struct Interner {
    ids: Map<u32>,
}

/// A request word the policy never names: it can match only wildcards.
const UNKNOWN: u32 = u32::MAX;

impl Interner {
    fn intern(&mut self, s: &str) -> u32 {
        let next = u32::try_from(self.ids.len()).unwrap_or(UNKNOWN);
        *self.ids.entry(s.into()).or_insert(next)
    }

    fn get(&self, s: &str) -> u32 {
        self.ids.get(s).copied().unwrap_or(UNKNOWN)
    }
}

/// verb, group, resource, subresource.
type Key = (u32, u32, u32, u32);

/// Resource rules filed by (verb, group, resource, subresource). `pods` is filed under
/// (`pods`, ``), `pods/log` under (`pods`, `log`), `*/scale` under (`*`, `scale`) and `*` under
/// (`*`, `*`).
#[derive(Debug, Default)]
pub(crate) struct ResourceIndexBuilder {
    words: Interner,
    buckets: FxHashMap<Key, BucketBuilder>,
}

impl ResourceIndexBuilder {
    pub(crate) fn insert(
        &mut self,
        verb: &str,
        group: &str,
        resource: &str,
        scope: &NamespaceScope<'_>,
        id: RuleId,
    ) {
        let (res, sub) = match resource.split_once('/') {
            Some((r, s)) => (r, s),
            None if resource == "*" => ("*", ALL),
            None => (resource, ""),
        };
        let key = (
            self.words.intern(verb),
            self.words.intern(group),
            self.words.intern(res),
            self.words.intern(sub),
        );
        let b = self.buckets.entry(key).or_default();
        match scope {
            NamespaceScope::Any => b.any.push(id),
            NamespaceScope::Listed { patterns, strict } => {
                for p in patterns.iter() {
                    if p.is_empty() {
                        b.cluster.push(id);
                    } else if is_glob(p) {
                        b.globs.push((p.clone(), id));
                    } else {
                        b.literal.entry(p.as_str().into()).or_default().push(id);
                    }
                }
                if *strict {
                    b.strict.push(id);
                }
            }
        }
    }

    pub(crate) fn build(mut self) -> Result<ResourceIndex, String> {
        let star = self.words.intern("*");
        let empty = self.words.intern("");
        let mut buckets = FxHashMap::default();
        for (key, b) in self.buckets {
            let bucket = Bucket {
                any: b.any,
                cluster: b.cluster,
                literal: b.literal,
                globs: GlobIndex::new(&b.globs)?,
                strict: b.strict,
            };
            buckets.insert(key, bucket);
        }
        Ok(ResourceIndex {
            words: self.words,
            buckets,
            star,
            empty,
        })
    }
}

/// The compiled resource-rule index.
#[derive(Debug, Default)]
pub(crate) struct ResourceIndex {
    words: Interner,
    buckets: FxHashMap<Key, Bucket>,
    star: u32,
    empty: u32,
}

/// What the index needs to know about a request.
pub(crate) struct Lookup<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    /// Whether the resource is known to be cluster-scoped, so a namespace-less request on it
    /// reaches into no namespace. Asked only for namespace-less requests.
    pub cluster_scoped: fn(&str, &str) -> bool,
}

impl ResourceIndex {
    pub(crate) fn candidates(&self, q: &Lookup<'_>, out: &mut Vec<Candidate>) {
        let cluster_scoped = q.namespace.is_empty() && (q.cluster_scoped)(q.group, q.resource);
        // A request word spelled `*` is a name like any other to the API server; here it must
        // never pass for the wildcard, so it is looked up as unknown.
        let word = |s: &str| if s == "*" { UNKNOWN } else { self.words.get(s) };
        let (verb, group, res, sub) = (
            word(q.verb),
            word(q.group),
            word(q.resource),
            word(q.subresource),
        );
        let sub = if q.subresource.is_empty() {
            self.empty
        } else {
            sub
        };
        let star = self.star;
        for (v, verb_literal) in [(verb, true), (star, false)] {
            if v == UNKNOWN {
                continue;
            }
            for g in [group, star] {
                if g == UNKNOWN {
                    continue;
                }
                let mut visit = |key: Key, explicit: bool| {
                    if let Some(b) = self.buckets.get(&key) {
                        b.collect(q.namespace, cluster_scoped, explicit, out);
                    }
                };
                if res != UNKNOWN && sub != UNKNOWN {
                    visit((v, g, res, sub), verb_literal);
                }
                visit((v, g, star, star), false);
                if !q.subresource.is_empty() && sub != UNKNOWN {
                    visit((v, g, star, sub), false);
                }
            }
        }
    }
}

impl Bucket {
    fn collect(
        &self,
        namespace: &str,
        cluster_scoped: bool,
        explicit: bool,
        out: &mut Vec<Candidate>,
    ) {
        let mut push = |id: RuleId| out.push(Candidate { id, explicit });
        self.any.iter().copied().for_each(&mut push);
        if namespace.is_empty() {
            self.cluster.iter().copied().for_each(&mut push);
            if !cluster_scoped {
                self.strict.iter().copied().for_each(&mut push);
            }
        } else {
            if let Some(ids) = self.literal.get(namespace) {
                ids.iter().copied().for_each(&mut push);
            }
            if let Some(globs) = &self.globs {
                globs.matches(namespace, &mut push);
            }
        }
    }
}

/// Non-resource rules: exact paths and `prefix*` entries.
#[derive(Debug, Default)]
pub(crate) struct NonResourceIndex {
    exact: Map<Vec<RuleId>>,
    prefixes: Vec<(Box<str>, RuleId)>,
}

impl NonResourceIndex {
    /// File a rule under a nonResourceURL. A `strict` (deny, approve) rule covers a path with
    /// or without one trailing slash alike: the API server serves both the same (go-restful
    /// trims it: `/version/` is `/version`, `/logs` is `/logs/`), while RBAC, which only ever
    /// allows, compares the raw path. So `/version` also covers `/version/`, `/logs/` covers
    /// `/logs`, and `/logs/*` covers `/logs`.
    pub(crate) fn insert(&mut self, url: &str, id: RuleId, strict: bool) {
        let twin = match url.strip_suffix('*') {
            Some(prefix) => {
                self.prefixes.push((prefix.into(), id));
                // `prefix` covers `X/`, so its twin `X`.
                prefix.strip_suffix('/').map(str::to_string)
            }
            None => {
                self.exact.entry(url.into()).or_default().push(id);
                match url.strip_suffix('/') {
                    Some(bare) => Some(bare.to_string()),
                    None => Some(format!("{url}/")),
                }
            }
        };
        if let Some(twin) = twin.filter(|t| strict && !t.is_empty() && t != "/") {
            self.exact.entry(twin.into()).or_default().push(id);
        }
    }

    pub(crate) fn candidates(&self, path: &str, out: &mut Vec<Candidate>) {
        if let Some(ids) = self.exact.get(path) {
            out.extend(ids.iter().map(|&id| Candidate { id, explicit: true }));
        }
        for (prefix, id) in &self.prefixes {
            if path.starts_with(&**prefix) {
                out.push(Candidate {
                    id: *id,
                    explicit: false,
                });
            }
        }
    }
}
