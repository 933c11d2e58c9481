//! The `DeleteOptions` the API server will act on for a DELETE (`handlers/delete.go`;
//! `docs/kubernetes-semantics.md`, "DeleteOptions: the body overrides the query"): decoded from
//! the body when the body is non-empty, and then the query's options are ignored entirely;
//! otherwise decoded from the query.
//!
//! A DELETE that carries options in both places is refused ([`crate::body::BodyError`]
//! `delete-options-twice`): kubectl and client-go never send both, and a gateway that read the
//! query (`dryRun=All`) while the server reads the body would record a real delete as a dry run.

use serde::Serialize;

use super::NonCanonical;
use super::query::{Param, Query, flag_value};

/// Where the options the API server acts on come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum OptionsSource {
    /// Neither the query nor a body carries any: the defaults apply.
    #[default]
    None,
    /// The query (the request has no body, or its body has not been read yet).
    Query,
    /// A non-empty body, which makes the API server ignore the query.
    Body,
}

/// The `DeleteOptions` of a `delete` or `deletecollection` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteOptions {
    /// Where they come from.
    pub source: OptionsSource,
    /// `dryRun: [All]`.
    pub dry_run: bool,
    /// `propagationPolicy` (`Orphan`, `Background`, `Foreground`).
    pub propagation_policy: Option<String>,
    /// `gracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// `orphanDependents` (deprecated in favour of `propagationPolicy`).
    pub orphan_dependents: Option<bool>,
    /// `preconditions` (body only: `uid`, `resourceVersion`), as given.
    pub preconditions: Option<serde_json::Value>,
    /// `ignoreStoreReadErrorWithClusterBreakingPotential`.
    pub ignore_store_read_error: Option<bool>,
}

/// The `DeleteOptions` query keys the API server decodes.
pub(crate) const QUERY_KEYS: &[&str] = &[
    "dryRun",
    "propagationPolicy",
    "gracePeriodSeconds",
    "orphanDependents",
    "ignoreStoreReadErrorWithClusterBreakingPotential",
];

/// The propagation policies the API server accepts (it answers 422 to any other).
pub(crate) const PROPAGATION_POLICIES: &[&str] = &["Orphan", "Background", "Foreground"];

impl DeleteOptions {
    /// The options as a `DeleteOptions` JSON object, which is what a policy condition on a
    /// DELETE reads whether the options came in the query or the body.
    pub fn to_json(&self) -> serde_json::Value {
        let mut o = serde_json::Map::new();
        if self.dry_run {
            o.insert("dryRun".into(), serde_json::json!(["All"]));
        }
        if let Some(p) = &self.propagation_policy {
            o.insert("propagationPolicy".into(), p.clone().into());
        }
        if let Some(g) = self.grace_period_seconds {
            o.insert("gracePeriodSeconds".into(), g.into());
        }
        if let Some(b) = self.orphan_dependents {
            o.insert("orphanDependents".into(), b.into());
        }
        effective_propagation(&mut o);
        if let Some(p) = &self.preconditions {
            o.insert("preconditions".into(), p.clone());
        }
        if let Some(b) = self.ignore_store_read_error {
            o.insert(
                "ignoreStoreReadErrorWithClusterBreakingPotential".into(),
                b.into(),
            );
        }
        serde_json::Value::Object(o)
    }
}

/// `orphanDependents: true` is `propagationPolicy: Orphan` to the API server (and `false`,
/// `Background`); it refuses the two together. A condition on `propagationPolicy` must see the
/// policy the server will use, however it was spelled, so the deprecated field is also written
/// as the policy it means.
pub(crate) fn effective_propagation(o: &mut serde_json::Map<String, serde_json::Value>) {
    if o.contains_key("propagationPolicy") {
        return;
    }
    let policy = match o.get("orphanDependents") {
        Some(serde_json::Value::Bool(true)) => "Orphan",
        Some(serde_json::Value::Bool(false)) => "Background",
        _ => return,
    };
    o.insert("propagationPolicy".into(), policy.into());
}

/// The options the query carries, decoded as the API server's parameter codec decodes them;
/// a value it would answer 400 or 422 to is refused.
pub(super) fn from_query(
    query: &Query<'_>,
    raw_query: &str,
) -> Result<DeleteOptions, NonCanonical> {
    let invalid = |key: &str, value: &str, expected| NonCanonical::InvalidQueryValue {
        key: key.into(),
        value: value.into(),
        expected,
    };
    let mut o = DeleteOptions {
        dry_run: query.dry_run(),
        ..DeleteOptions::default()
    };
    if let Some(p) = query.get(Param::PropagationPolicy) {
        if !PROPAGATION_POLICIES.contains(&p) {
            return Err(invalid(
                "propagationPolicy",
                p,
                "`Orphan`, `Background` or `Foreground`",
            ));
        }
        o.propagation_policy = Some(p.into());
    }
    if let Some(g) = query.get(Param::GracePeriodSeconds) {
        let seconds = g
            .parse::<i64>()
            .map_err(|_| invalid("gracePeriodSeconds", g, "a 64-bit integer"))?;
        o.grace_period_seconds = Some(seconds);
    }
    o.orphan_dependents = query.get(Param::OrphanDependents).map(flag_value);
    let params = super::QueryParams::parse(raw_query);
    o.ignore_store_read_error = params
        .first("ignoreStoreReadErrorWithClusterBreakingPotential")
        .map(flag_value);
    if QUERY_KEYS.iter().any(|k| params.first(k).is_some()) {
        o.source = OptionsSource::Query;
    }
    Ok(o)
}
