//! The policy's `masks:` section: which built-in masks and detectors to turn off, extra mask
//! rules, and the HMAC key.
//!
//! Policy rules also reach Table cells: see [`crate::mask`].
//!
//! ```yaml
//! masks:
//!   disable: [env-credentials, jwt]      # built-in masks (secret-data, secret-string-data,
//!                                        # token-request, token-review, env-credentials,
//!                                        # http-headers, container-args, credential-keys,
//!                                        # last-applied) or
//!                                        # detectors by name; `detectors` for all
//!   hmacKey: "a long random string"      # optional; default: random per process
//!   limits:                              # optional; what one response may make the masker hold
//!     maxDepth: 256                      # deepest JSON nesting (default 256; 32 to 4096)
//!     maxHeldBytes: 8388608              # largest value held to be judged (default 8 MiB;
//!                                        # 64 KiB to 1 GiB)
//!   rules:
//!     - name: database-passwords
//!       kinds: [Database]                # from the payload; omitted: every kind
//!       apiGroups: [db.example.com]      # from the payload's apiVersion; omitted: every group
//!       paths: ["$.spec.password", "$..credentials[*].value", "$.spec.users[?(@.name =~ /admin/)].key"]
//!       replace: marker                  # marker (default) | base64 | hmac | hmac-base64
//! ```

use serde::Deserialize;

use super::error::PolicyError;
// Spanned directly, not spec's alias: spec holds this section's document type, so importing
// from spec would make the two modules depend on each other.
use crate::mask::detect::{Detectors, catalog};
use crate::mask::{
    Action, BUILTIN_MASKS, MaskLimits, MaskRule, MaskSet, Replace, builtin_rules, parse_path,
    random_key,
};
use serde_saphyr::Spanned as S;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct MasksDoc {
    #[serde(default)]
    pub disable: Vec<S<String>>,
    #[serde(default)]
    pub hmac_key: Option<String>,
    #[serde(default)]
    pub rules: Vec<S<MaskRuleDoc>>,
    #[serde(default)]
    pub limits: Option<LimitsDoc>,
}

/// `masks.limits`: the bounds a response's bytes can push the masker to (see
/// [`MaskLimits`]). A response past one is cut where it is reached, never passed unmasked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct LimitsDoc {
    #[serde(default)]
    pub max_depth: Option<S<u64>>,
    #[serde(default)]
    pub max_held_bytes: Option<S<u64>>,
}

/// The range each limit may be set in: below it, ordinary Kubernetes objects (a CRD's schema
/// nests deeply; a certificate bundle or a ConfigMap's file is a long value) would be refused;
/// above it, one response could make the masker hold more than a process should.
const DEPTH_RANGE: std::ops::RangeInclusive<u64> = 32..=4096;
const HELD_RANGE: std::ops::RangeInclusive<u64> = 64 * 1024..=1024 * 1024 * 1024;

fn limits(doc: Option<&LimitsDoc>, errors: &mut Vec<PolicyError>) -> MaskLimits {
    let mut limits = MaskLimits::default();
    let Some(doc) = doc else {
        return limits;
    };
    let mut pick = |field: &str, v: &Option<S<u64>>, range: &std::ops::RangeInclusive<u64>| {
        let v = v.as_ref()?;
        if range.contains(&v.value) {
            return usize::try_from(v.value).ok();
        }
        errors.push(
            PolicyError::new(
                "mask-limit",
                format!(
                    "masks.limits.{field} is {}, outside {}..={}",
                    v.value,
                    range.start(),
                    range.end()
                ),
            )
            .at(&v.referenced)
            .help(format!(
                "set {field} between {} and {}, or leave it out for the default",
                range.start(),
                range.end()
            )),
        );
        None
    };
    if let Some(d) = pick("maxDepth", &doc.max_depth, &DEPTH_RANGE) {
        limits.max_depth = d;
    }
    if let Some(h) = pick("maxHeldBytes", &doc.max_held_bytes, &HELD_RANGE) {
        limits.max_held = h;
    }
    limits
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct MaskRuleDoc {
    pub name: S<String>,
    #[serde(default)]
    pub kinds: Option<Vec<String>>,
    #[serde(default)]
    pub api_groups: Option<Vec<String>>,
    pub paths: S<Vec<S<String>>>,
    #[serde(default)]
    pub replace: Option<S<String>>,
}

/// Compile the masks section (absent: every built-in mask and detector on).
pub(crate) fn compile(doc: Option<&MasksDoc>, errors: &mut Vec<PolicyError>) -> Option<MaskSet> {
    let empty = MasksDoc::default();
    let doc = doc.unwrap_or(&empty);
    let mut disabled_masks = Vec::new();
    let mut disabled_detectors = Vec::new();
    let mut all_detectors_off = false;
    for d in &doc.disable {
        let name = d.value.as_str();
        if BUILTIN_MASKS.contains(&name) {
            disabled_masks.push(name.to_string());
        } else if name == "detectors" {
            all_detectors_off = true;
        } else if catalog().iter().any(|c| c.name == name) {
            disabled_detectors.push(name);
        } else {
            errors.push(
                PolicyError::new("mask-disable", format!("cannot disable unknown mask or detector `{name}`"))
                    .at(&d.referenced)
                    .help(format!(
                        "built-in masks are {}; `detectors` turns off every detector; `kubeleash detectors` lists them",
                        BUILTIN_MASKS.join(", ")
                    )),
            );
        }
    }
    let mut rules = match builtin_rules(&disabled_masks) {
        Ok(r) => r,
        Err(e) => {
            errors.push(PolicyError::new(
                "mask-builtin",
                format!("built-in masks do not compile: {e}"),
            ));
            return None;
        }
    };
    for r in &doc.rules {
        let d = &r.value;
        let replace = match d
            .replace
            .as_ref()
            .map(|s| (s.value.as_str(), &s.referenced))
        {
            None | Some(("marker", _)) => Replace::Marker,
            Some(("base64", _)) => Replace::Base64,
            Some(("hmac", _)) => Replace::Hmac { base64: false },
            Some(("hmac-base64", _)) => Replace::Hmac { base64: true },
            Some((other, at)) => {
                errors.push(
                    PolicyError::new(
                        "mask-replace",
                        format!("mask rule `{}` has unknown replace `{other}`", d.name.value),
                    )
                    .at(at)
                    .help("replace is one of marker, base64, hmac, hmac-base64"),
                );
                continue;
            }
        };
        if d.paths.value.is_empty() {
            errors.push(
                PolicyError::new(
                    "mask-paths",
                    format!("mask rule `{}` has no paths", d.name.value),
                )
                .at(&d.paths.referenced),
            );
        }
        for p in &d.paths.value {
            match parse_path(&p.value) {
                Ok(steps) => rules.push(MaskRule {
                    name: d.name.value.clone(),
                    kinds: d.kinds.clone(),
                    groups: d.api_groups.clone(),
                    steps,
                    action: Action::Mask(replace),
                    start: None,
                    cells: true,
                }),
                Err(e) => errors.push(
                    PolicyError::new("mask-path", e)
                        .at(&p.referenced)
                        .help("supported: `.name`, `['name']`, `*`, `[*]`, `[n]`, `..`, and filters such as `[?(@.name =~ /token/i)]`"),
                ),
            }
        }
    }
    if rules.len() > usize::from(u16::MAX) {
        errors.push(PolicyError::new(
            "mask-rules",
            "a policy holds at most 65,535 mask paths",
        ));
        return None;
    }
    let detectors = if all_detectors_off {
        None
    } else {
        match Detectors::new(&disabled_detectors) {
            Ok(d) => Some(d),
            Err(e) => {
                errors.push(PolicyError::new(
                    "detectors",
                    format!("detectors do not compile: {e}"),
                ));
                return None;
            }
        }
    };
    let hmac_key = doc
        .hmac_key
        .as_ref()
        .map_or_else(random_key, |k| k.as_bytes().to_vec());
    let limits = limits(doc.limits.as_ref(), errors);
    let mut set = MaskSet::from_parts(rules, detectors, hmac_key, limits);
    set.credential_keys = !disabled_masks.iter().any(|d| d == "credential-keys");
    Some(set)
}
