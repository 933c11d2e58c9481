//! Resource names as an agent writes them (`pods`, `po`, `Deployment`, `deploy.apps`) resolved
//! to what the API server serves, from its discovery documents, as kubectl does. The discovery
//! requests go through the layer like any other (the policy must allow them, as it must for
//! kubectl), once a session and again when a name is not found (a CRD installed since).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubeleash_core::policy::Identity;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Mutex;

use super::engine::{Call, Engine};
use super::tool_error::ToolError;

/// One resource the API server serves.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// `""` for the core group.
    pub group: String,
    pub version: String,
    /// The plural name, as in the URL.
    pub name: String,
    pub singular_name: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub verbs: Vec<String>,
}

impl Resource {
    /// `v1`, `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The collection's path, in `namespace` when the resource is namespaced and one is given.
    pub fn collection(&self, namespace: Option<&str>) -> String {
        let base = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace {
            Some(ns) if self.namespaced => format!("{base}/namespaces/{ns}/{}", self.name),
            _ => format!("{base}/{}", self.name),
        }
    }

    /// `deployments.apps`, `pods`: how kubectl names it unambiguously.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{}", self.name, self.group)
        }
    }

    fn answers_to(&self, word: &str) -> bool {
        self.name == word
            || self.singular_name == word
            || self.kind.eq_ignore_ascii_case(word)
            || self.short_names.iter().any(|s| s == word)
    }
}

/// How long a fetched catalogue is trusted before a miss fetches it again.
const FRESH: Duration = Duration::from_secs(30);

/// The catalogue, fetched for each caller when first needed (what discovery shows is decided
/// per identity like any request: one caller's catalogue is never another's answer).
#[derive(Default)]
pub struct Discovery {
    cached: Mutex<HashMap<Identity, Fetched>>,
}

/// A caller's catalogue and when it was fetched.
type Fetched = (Instant, Arc<Vec<Resource>>);

/// Callers whose catalogue is kept at once; past it the oldest is fetched again when needed.
const CALLERS: usize = 64;

impl Discovery {
    /// Every resource served (subresources left out), core first, then groups in the server's
    /// order of preference.
    pub async fn all(
        &self,
        engine: &Engine,
        caller: &Identity,
    ) -> Result<Arc<Vec<Resource>>, ToolError> {
        if let Some((_, all)) = self.cached.lock().await.get(caller) {
            return Ok(Arc::clone(all));
        }
        let all = Arc::new(fetch(engine, caller).await?);
        let mut cached = self.cached.lock().await;
        if cached.len() >= CALLERS
            && let Some(oldest) = cached
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(id, _)| id.clone())
        {
            cached.remove(&oldest);
        }
        cached.insert(caller.clone(), (Instant::now(), Arc::clone(&all)));
        Ok(all)
    }

    /// The resource `word` names (`pods`, `pod`, `Pod`, `po`, `deployments.apps`,
    /// `deployments.v1.apps`), within `api_version` when given.
    pub async fn resolve(
        &self,
        engine: &Engine,
        caller: &Identity,
        word: &str,
        api_version: Option<&str>,
    ) -> Result<Resource, ToolError> {
        let all = self.all(engine, caller).await?;
        if let Some(r) = pick(&all, word, api_version)? {
            return Ok(r);
        }
        // Not found: a CRD may have been installed since the catalogue was fetched.
        let stale = {
            let cached = self.cached.lock().await;
            cached
                .get(caller)
                .is_some_and(|(at, _)| at.elapsed() > FRESH)
        };
        if stale {
            self.cached.lock().await.remove(caller);
            let all = self.all(engine, caller).await?;
            if let Some(r) = pick(&all, word, api_version)? {
                return Ok(r);
            }
        }
        Err(ToolError::invalid(format!(
            "the server has no resource type `{word}`{}; `api_resources` lists what it serves",
            api_version.map(|v| format!(" in {v}")).unwrap_or_default()
        )))
    }
}

/// The resource `word` names, if any; an error if it names several equally.
fn pick(
    all: &[Resource],
    word: &str,
    api_version: Option<&str>,
) -> Result<Option<Resource>, ToolError> {
    let lower = word.to_ascii_lowercase();
    let in_version = |r: &Resource| api_version.is_none_or(|v| r.api_version() == v);
    // `name`, then `name.group`, then `name.version.group`, as kubectl reads them.
    let plain: Vec<&Resource> = all
        .iter()
        .filter(|r| in_version(r) && r.answers_to(&lower))
        .collect();
    if let Some(first) = plain.first() {
        // Several groups serve the name (events, core and events.k8s.io): the first in
        // preference order, as kubectl picks it.
        return Ok(Some((*first).clone()));
    }
    if let Some((name, rest)) = lower.split_once('.') {
        let found = all.iter().find(|r| {
            in_version(r)
                && r.answers_to(name)
                && (r.group == rest || format!("{}.{}", r.version, r.group) == rest)
        });
        if let Some(r) = found {
            return Ok(Some(r.clone()));
        }
    }
    Ok(None)
}

/// Fetch the catalogue: `/api/v1`, `/apis`, and each group's preferred version.
async fn fetch(engine: &Engine, caller: &Identity) -> Result<Vec<Resource>, ToolError> {
    let mut out = Vec::new();
    let core = get_json(engine, caller, "/api/v1").await?;
    add(&mut out, "", "v1", &core);
    let groups = get_json(engine, caller, "/apis").await?;
    for g in groups
        .get("groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(gv) = g
            .pointer("/preferredVersion/groupVersion")
            .and_then(Value::as_str)
        else {
            continue;
        };
        let Some((group, version)) = gv.split_once('/') else {
            continue;
        };
        if !segment(group) || !segment(version) {
            continue;
        }
        // A group the policy does not let the agent discover is left out, not fatal.
        match get_json(engine, caller, &format!("/apis/{gv}")).await {
            Ok(list) => add(&mut out, group, version, &list),
            Err(_) => continue,
        }
    }
    Ok(out)
}

/// A group, version or resource name as the API server serves them: lowercase letters, digits,
/// `-` and `.`, no `..`. What the upstream says is not trusted to be a path segment: a name that
/// is not one is left out of the catalogue, so a tool never builds a path from it.
fn segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.contains("..")
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

fn add(out: &mut Vec<Resource>, group: &str, version: &str, list: &Value) {
    if !(group.is_empty() || segment(group)) || !segment(version) {
        return;
    }
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    };
    for r in list
        .get("resources")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
        if !segment(name) {
            continue;
        }
        let kind = r.get("kind").and_then(Value::as_str).unwrap_or_default();
        let singular = match r.get("singularName").and_then(Value::as_str) {
            Some(s) if !s.is_empty() => s.to_string(),
            _ => kind.to_ascii_lowercase(),
        };
        out.push(Resource {
            group: group.to_string(),
            version: version.to_string(),
            name: name.to_string(),
            singular_name: singular,
            kind: kind.to_string(),
            namespaced: r
                .get("namespaced")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            short_names: strings(r.get("shortNames")),
            verbs: strings(r.get("verbs")),
        });
    }
}

async fn get_json(engine: &Engine, caller: &Identity, path: &str) -> Result<Value, ToolError> {
    let reply = engine
        .send(caller, &Call::get(path.to_string()), None)
        .await
        .map_err(ToolError::failed)?;
    if !reply.status.is_success() {
        return Err(ToolError::from_reply(
            &reply,
            &format!(
                "API discovery (`GET {path}`), which resolves resource names as kubectl does, was refused; the policy must allow get on the nonResourceURLs /api, /api/*, /apis, /apis/*"
            ),
        ));
    }
    serde_json::from_slice(&reply.body)
        .map_err(|e| ToolError::failed(format!("the discovery document `{path}` is not JSON: {e}")))
}
