//! What gets masked: the built-in rules (on unless a policy turns them off by name), the
//! policy's own `masks.rules`, and the detectors run over every other string.

use super::detect::Detectors;
use super::path::{Filter, Step, parse};

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
    /// It is a command line, one argument per element (container `args` and `command`): a
    /// credential-looking flag's value is masked, `=`-joined or the next element.
    Argv,
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
    /// Where the path starts: `None` at every Kubernetes object (`$` is the object), or at the
    /// value of every member with this name, at any depth of any document (the built-in masks
    /// for container shapes, which appear in pod templates wherever they are embedded).
    pub start: Option<&'static str>,
    /// Whether the rule reaches Table cells: policy rules do (a printer column can show any
    /// field of a custom resource); built-in masks name built-in kinds, whose cells come from
    /// the API server's own printers, which print none of the values they cover.
    pub cells: bool,
}

/// The text that replaces a masked string. Stable: writes that carry it back in a masked
/// position are refused, so that a masked value never overwrites a real one.
pub const MARKER: &str = "[masked]";
/// [`MARKER`], base64-encoded: what replaces a value in a field that holds base64 (Secret
/// `data`). Stable, like [`MARKER`].
pub const MARKER_BASE64: &str = "W21hc2tlZF0=";
/// How a detector's replacement starts: `[masked:<detector name>]` replaces the secret part of
/// a string the detectors judged. Stable, like [`MARKER`].
pub const DETECTOR_MARKER_PREFIX: &str = "[masked:";
/// How an HMAC token starts: `[hmac:<24 hex digits>]` (base64-encoded where the field holds
/// base64). Stable, like [`MARKER`].
pub const HMAC_MARKER_PREFIX: &str = "[hmac:";

/// Names of the built-in masks, in the order they are documented.
pub const BUILTIN_MASKS: &[&str] = &[
    "secret-data",
    "secret-string-data",
    "token-request",
    "token-review",
    "env-credentials",
    "http-headers",
    "container-args",
    "credential-keys",
    "last-applied",
];

fn rule(name: &str, kinds: &[&str], path: &str, action: Action) -> Result<MaskRule, String> {
    Ok(MaskRule {
        name: name.to_string(),
        kinds: (!kinds.is_empty()).then(|| kinds.iter().map(|k| k.to_string()).collect()),
        groups: None,
        steps: parse(path)?,
        action,
        start: None,
        cells: false,
    })
}

/// A built-in rule that starts at every member named `key`, anywhere.
fn keyed(name: &str, key: &'static str, steps: Vec<Step>, action: Action) -> MaskRule {
    MaskRule {
        name: name.to_string(),
        kinds: None,
        groups: None,
        steps,
        action,
        start: Some(key),
        cells: false,
    }
}

/// `[?(name looks like a credential)].value`: the elements of a list of `{name, value}` pairs.
fn named_credential_values() -> Vec<Step> {
    vec![
        Step::Filter(Filter::CredentialName {
            path: vec!["name".to_string()],
        }),
        Step::Child("value".to_string()),
    ]
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
    // Container shapes are recognised wherever they appear, in every kind: a Pod, any pod
    // template (Deployments, Jobs, CronJobs' `jobTemplate`, a ControllerRevision's `data`, a
    // custom resource's `spec.template`), a root array or a Status's details.
    if on("env-credentials") {
        out.push(keyed(
            "env-credentials",
            "env",
            named_credential_values(),
            Action::Mask(Replace::Marker),
        ));
    }
    if on("http-headers") {
        out.push(keyed(
            "http-headers",
            "httpHeaders",
            named_credential_values(),
            Action::Mask(Replace::Marker),
        ));
    }
    if on("container-args") {
        for key in ["args", "command"] {
            out.push(keyed("container-args", key, Vec::new(), Action::Argv));
        }
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
    /// The rules that start at a member name (not at an object), by that name.
    pub(crate) keyed: Vec<(&'static str, u16)>,
    /// Bit `n` set when some name in `keyed` is `n` bytes long: most member names are ruled
    /// out by one test (this is asked for every member).
    keyed_lens: u64,
    pub(crate) detectors: Option<Detectors>,
    pub(crate) hmac_key: Vec<u8>,
    pub(crate) limits: MaskLimits,
    /// The `credential-keys` built-in mask: string values under credential-named keys in a
    /// ConfigMap's `data`/`binaryData` and in objects of unknown kind.
    pub(crate) credential_keys: bool,
}

impl MaskSet {
    pub(crate) fn from_parts(
        rules: Vec<MaskRule>,
        detectors: Option<Detectors>,
        hmac_key: Vec<u8>,
        limits: MaskLimits,
    ) -> MaskSet {
        let keyed = keyed_index(&rules);
        MaskSet {
            keyed_lens: keyed
                .iter()
                .filter(|(k, _)| k.len() < 64)
                .fold(0, |m, (k, _)| m | 1u64 << k.len()),
            keyed,
            rules,
            detectors,
            hmac_key,
            limits,
            credential_keys: true,
        }
    }

    /// The rules that start at a member with this name.
    pub(crate) fn keyed<'a>(&'a self, key: &'a [u8]) -> impl Iterator<Item = u16> + 'a {
        let key_len = key.len();
        self.keyed
            .iter()
            .filter(move |(k, _)| k.len() == key_len && k.as_bytes() == key)
            .map(|&(_, r)| r)
    }

    /// Whether any rule starts at a member with this name.
    #[inline]
    pub(crate) fn starts_at(&self, key: &[u8]) -> bool {
        let len = key.len();
        (len >= 64 || self.keyed_lens & (1u64 << len) != 0) && self.keyed_any(key)
    }

    /// Out of line: [`starts_at`](MaskSet::starts_at)'s length test, inlined in every key's
    /// path, rules out most keys without it.
    #[inline(never)]
    fn keyed_any(&self, key: &[u8]) -> bool {
        self.keyed(key).next().is_some()
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
        Ok(MaskSet::from_parts(
            builtin(&[])?,
            Some(Detectors::new(&[])?),
            random_key(),
            MaskLimits::default(),
        ))
    }
}

fn keyed_index(rules: &[MaskRule]) -> Vec<(&'static str, u16)> {
    rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((r.start?, u16::try_from(i).ok()?)))
        .collect()
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
