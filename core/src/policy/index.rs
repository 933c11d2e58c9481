//! The rule index: rules keyed by verb, API group and resource, then by namespace, so a decision
//! touches only the rules that could apply however large the policy is.

use std::collections::HashMap;

use super::glob::{GlobIndex, is_glob};

pub(crate) type RuleId = u32;
type Map<V> = HashMap<Box<str>, V>;

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

/// Resource rules: verb → group → resource (or `*`, or `*/sub`) → bucket.
#[derive(Debug, Default)]
pub(crate) struct ResourceIndexBuilder {
    map: Map<Map<Map<BucketBuilder>>>,
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
        let b = self
            .map
            .entry(verb.into())
            .or_default()
            .entry(group.into())
            .or_default()
            .entry(resource.into())
            .or_default();
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

    pub(crate) fn build(self) -> Result<ResourceIndex, String> {
        let mut map = Map::new();
        for (verb, groups) in self.map {
            let mut gm = Map::new();
            for (group, resources) in groups {
                let mut rm = Map::new();
                for (resource, b) in resources {
                    let bucket = Bucket {
                        any: b.any,
                        cluster: b.cluster,
                        literal: b.literal,
                        globs: GlobIndex::new(&b.globs)?,
                        strict: b.strict,
                    };
                    rm.insert(resource, bucket);
                }
                gm.insert(group, rm);
            }
            map.insert(verb, gm);
        }
        Ok(ResourceIndex { map })
    }
}

/// The compiled resource-rule index.
#[derive(Debug, Default)]
pub(crate) struct ResourceIndex {
    map: Map<Map<Map<Bucket>>>,
}

/// What the index needs to know about a request.
pub(crate) struct Lookup<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    /// The resource is known to be cluster-scoped, so a namespace-less request on it does not
    /// reach into any namespace.
    pub cluster_scoped: bool,
}

impl ResourceIndex {
    pub(crate) fn candidates(&self, q: &Lookup<'_>, out: &mut Vec<Candidate>) {
        let combined_storage;
        let combined: &str = if q.subresource.is_empty() {
            q.resource
        } else {
            combined_storage = format!("{}/{}", q.resource, q.subresource);
            &combined_storage
        };
        let star_sub_storage;
        let star_sub: Option<&str> = if q.subresource.is_empty() {
            None
        } else {
            star_sub_storage = format!("*/{}", q.subresource);
            Some(&star_sub_storage)
        };
        for (verb_key, verb_literal) in [(q.verb, true), ("*", false)] {
            if verb_key == "*" && q.verb == "*" {
                continue;
            }
            let Some(groups) = self.map.get(verb_key) else {
                continue;
            };
            for group_key in [q.group, "*"] {
                if group_key == "*" && q.group == "*" {
                    continue;
                }
                let Some(resources) = groups.get(group_key) else {
                    continue;
                };
                let keys = [
                    (Some(combined), true),
                    (Some("*"), false),
                    (star_sub, false),
                ];
                for (resource_key, resource_literal) in keys {
                    let Some(resource_key) = resource_key else {
                        continue;
                    };
                    let Some(bucket) = resources.get(resource_key) else {
                        continue;
                    };
                    let explicit = verb_literal && resource_literal;
                    bucket.collect(q, explicit, out);
                }
            }
        }
    }
}

impl Bucket {
    fn collect(&self, q: &Lookup<'_>, explicit: bool, out: &mut Vec<Candidate>) {
        let mut push = |id: RuleId| out.push(Candidate { id, explicit });
        self.any.iter().copied().for_each(&mut push);
        if q.namespace.is_empty() {
            self.cluster.iter().copied().for_each(&mut push);
            if !q.cluster_scoped {
                self.strict.iter().copied().for_each(&mut push);
            }
        } else {
            if let Some(ids) = self.literal.get(q.namespace) {
                ids.iter().copied().for_each(&mut push);
            }
            if let Some(globs) = &self.globs {
                globs.matches(q.namespace, &mut push);
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
    pub(crate) fn insert(&mut self, url: &str, id: RuleId) {
        match url.strip_suffix('*') {
            Some(prefix) => self.prefixes.push((prefix.into(), id)),
            None => self.exact.entry(url.into()).or_default().push(id),
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
