//! What gets masked: the built-in rules (on unless a policy turns them off by name), the
//! policy's own `masks.rules`, and the detectors run over every other string.

use super::detect::Detectors;
use super::path::{Step, parse};

/// How a masked value is replaced. The original's length is never revealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// A fixed marker string.
    Marker,
    /// A fixed marker, base64-encoded, so fields that must hold base64 (Secret `data`) still
    /// decode.
    Base64,
    /// A keyed hash of the value, so equal values give equal tokens and an agent can compare
    /// without reading. Base64-encoded where the field holds base64.
    Hmac {
        /// Whether the field holds base64.
        base64: bool,
    },
}

/// What happens to a value a rule selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Replace every scalar in it.
    Mask(Replace),
    /// It is a JSON document in a string (the last-applied annotation): mask inside it with
    /// the rules for its own kind, and keep it valid JSON.
    JsonString,
}

/// One compiled mask rule.
#[derive(Debug, Clone)]
pub(crate) struct MaskRule {
    pub name: String,
    /// Kinds (from the payload) it applies to; `None` for every kind.
    pub kinds: Option<Vec<String>>,
    /// API groups (from the payload's `apiVersion`) it applies to; `None` for every group.
    pub groups: Option<Vec<String>>,
    pub steps: Vec<Step>,
    pub action: Action,
}

/// The text that replaces a masked string.
pub(crate) const MARKER: &str = "[masked]";
/// `MARKER`, base64-encoded.
pub(crate) const MARKER_BASE64: &str = "W21hc2tlZF0=";

/// Names of the built-in masks, in the order they are documented.
pub const BUILTIN_MASKS: &[&str] = &[
    "secret-data",
    "secret-string-data",
    "token-request",
    "token-review",
    "env-credentials",
    "last-applied",
];

const POD_BEARING: &[&str] = &[
    "Pod",
    "PodTemplate",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "Job",
    "CronJob",
];

/// Env var names that look like credentials.
pub(crate) const CREDENTIAL_NAME: &str = "(?i)(password|passwd|secret|token|key|credential|auth)";

fn rule(name: &str, kinds: &[&str], path: &str, action: Action) -> Result<MaskRule, String> {
    Ok(MaskRule {
        name: name.to_string(),
        kinds: (!kinds.is_empty()).then(|| kinds.iter().map(|k| k.to_string()).collect()),
        groups: None,
        steps: parse(path)?,
        action,
    })
}

/// The built-in rules, less the ones named in `disabled`.
pub(crate) fn builtin(disabled: &[String]) -> Result<Vec<MaskRule>, String> {
    let on = |name: &str| !disabled.iter().any(|d| d == name);
    let mut out = Vec::new();
    if on("secret-data") {
        out.push(rule(
            "secret-data",
            &["Secret"],
            "$.data.*",
            Action::Mask(Replace::Base64),
        )?);
    }
    if on("secret-string-data") {
        out.push(rule(
            "secret-string-data",
            &["Secret"],
            "$.stringData.*",
            Action::Mask(Replace::Marker),
        )?);
    }
    if on("token-request") {
        out.push(rule(
            "token-request",
            &["TokenRequest"],
            "$.status.token",
            Action::Mask(Replace::Marker),
        )?);
    }
    if on("token-review") {
        out.push(rule(
            "token-review",
            &["TokenReview"],
            "$.spec.token",
            Action::Mask(Replace::Marker),
        )?);
    }
    if on("env-credentials") {
        let path = format!("$..env[?search(@.name, '{CREDENTIAL_NAME}')].value");
        out.push(rule(
            "env-credentials",
            POD_BEARING,
            &path,
            Action::Mask(Replace::Marker),
        )?);
    }
    if on("last-applied") {
        out.push(rule(
            "last-applied",
            &[],
            "$.metadata.annotations['kubectl.kubernetes.io/last-applied-configuration']",
            Action::JsonString,
        )?);
    }
    Ok(out)
}

/// Limits on what a masker holds in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskLimits {
    /// Deepest nesting of JSON arrays and objects. Default 256.
    pub max_depth: usize,
    /// Largest single thing held to be judged: a string value, an object a filter tests, the
    /// last-applied annotation, a log line. Default 8 MiB.
    pub max_held: usize,
}

impl Default for MaskLimits {
    fn default() -> Self {
        MaskLimits {
            max_depth: 256,
            max_held: 8 * 1024 * 1024,
        }
    }
}

/// Everything a masker needs: rules, detectors, the HMAC key and limits. Compiled once.
#[derive(Debug, Clone)]
pub struct MaskSet {
    pub(crate) rules: Vec<MaskRule>,
    pub(crate) detectors: Option<Detectors>,
    pub(crate) hmac_key: Vec<u8>,
    pub(crate) limits: MaskLimits,
}

impl MaskSet {
    pub(crate) fn from_parts(
        rules: Vec<MaskRule>,
        detectors: Option<Detectors>,
        hmac_key: Vec<u8>,
        limits: MaskLimits,
    ) -> MaskSet {
        MaskSet {
            rules,
            detectors,
            hmac_key,
            limits,
        }
    }

    /// Names of the mask rules, built-in and the policy's, one per path.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    /// The limits this set's maskers apply.
    pub fn limits(&self) -> &MaskLimits {
        &self.limits
    }

    /// The built-in masks and every detector, with a random HMAC key and default limits.
    pub fn builtin() -> Result<MaskSet, String> {
        Ok(MaskSet {
            rules: builtin(&[])?,
            detectors: Some(Detectors::new(&[])?),
            hmac_key: random_key(),
            limits: MaskLimits::default(),
        })
    }
}

/// A per-process key: equal values give equal tokens within a process, and tokens cannot be
/// reversed by hashing candidate values offline.
pub(crate) fn random_key() -> Vec<u8> {
    let mut key = vec![0u8; 32];
    if getrandom::fill(&mut key).is_err() {
        // No OS randomness: fall back to a key no one outside this process can know either,
        // built from the randomly seeded std hasher.
        use std::hash::{BuildHasher, Hasher};
        for chunk in key.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(chunk.as_ptr() as usize);
            for (b, v) in chunk.iter_mut().zip(h.finish().to_le_bytes()) {
                *b = v;
            }
        }
    }
    key
}
