//! Widened approvals: what one person's approval of one held request may cover besides that
//! request, when the person chose so explicitly.
//!
//! An approval covers the exact request the person saw. A channel may offer to widen it along
//! the axes [`axes`] lists for the request, and nothing else:
//!
//! - **names**: any object name matching a glob (`web-*`), the rest of the request unchanged;
//! - **fields**: the same request with the named body fields changed, each within a range
//!   (`spec.replicas=1..5`) or matching a glob (`spec.template.spec.containers[0].image=registry.example/*`);
//! - **uses**: how many more requests the grant lets through;
//! - **time**: how long it lasts (cut to a day by the layer; [`DEFAULT_WINDOW`] when no time
//!   is given).
//!
//! A [`Grant`] compares a later request with the approved one with exactly those parts taken
//! out: the target with its query (the name segment only if names are widened), and the body
//! decoded as the API server decodes it with the widened fields (and, once a body is widened at
//! all, `metadata.resourceVersion`, a precondition, not content) removed; a body nothing widens
//! is compared byte for byte. Identity, method and headers are the caller's to compare (the
//! tower layer keys its grants on them). A widened field must be present in the later request:
//! leaving it out is another request.
//!
//! A grant is also a small policy fragment ([`Grant::rule`]): the allow rule a person would add
//! to make it permanent, with what the rule cannot say (the pinned rest of the body) listed
//! beside it, so that "make this permanent" is a reviewed policy change, not a silent one.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::glob::GlobList;
use crate::body::{self, BodyKind, BodyLimits};
use crate::request::Request;

/// How long a widened grant lasts when the approver named no time.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The most field paths [`axes`] offers for one request.
pub const MAX_FIELDS_OFFERED: usize = 64;

/// What an approver chose to widen an approval by. The default widens nothing.
///
/// ```
/// use kubeleash_core::policy::grant::{FieldRange, Widening};
///
/// let w = Widening {
///     names: Some("web-*".into()),
///     fields: vec!["spec.replicas=1..5".parse()?],
///     uses: Some(3),
///     seconds: None,
/// };
/// assert!(!w.is_exact());
/// assert_eq!(w.fields[0], FieldRange { path: "spec.replicas".into(), min: Some(1.0), max: Some(5.0), matches: None });
/// # Ok::<(), kubeleash_core::policy::grant::WidenError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Widening {
    /// Any object name matching this glob (`*` is any run of characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<String>,
    /// Body fields that may take other values, each within its range.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldRange>,
    /// How many more requests the grant lets through (the approved one not counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
    /// How long the grant lasts, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
}

impl Widening {
    /// Whether it widens nothing: the approval covers the one request.
    pub fn is_exact(&self) -> bool {
        self.names.is_none()
            && self.fields.is_empty()
            && self.uses.is_none()
            && self.seconds.is_none()
    }

    /// Whether it widens what requests look like (not only how many or how long).
    pub fn widens_shape(&self) -> bool {
        self.names.is_some() || !self.fields.is_empty()
    }

    /// How long the grant lasts: the time given, else [`DEFAULT_WINDOW`].
    pub fn window(&self) -> Duration {
        self.seconds.map_or(DEFAULT_WINDOW, Duration::from_secs)
    }
}

/// One body field a widened approval lets vary: a number within `min..=max`, or a string
/// matching the glob `matches`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FieldRange {
    /// The field: `spec.replicas`, `spec.template.spec.containers[0].image`,
    /// `metadata.labels['app.kubernetes.io/version']`.
    pub path: String,
    /// The smallest number allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The largest number allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// A glob the string value must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
}

impl std::str::FromStr for FieldRange {
    type Err = WidenError;

    /// `PATH=MIN..MAX` (numbers) or `PATH=GLOB` (a string), as typed at a prompt.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            WidenError(format!(
                "field range `{s}` is not `PATH=MIN..MAX` or `PATH=GLOB`"
            ))
        };
        let eq = split_outside_brackets(s).ok_or_else(bad)?;
        let (path, want) = (&s[..eq], &s[eq + 1..]);
        if path.is_empty() || want.is_empty() {
            return Err(bad());
        }
        let numbers = want.split_once("..").and_then(|(a, b)| {
            Some((a.trim().parse::<f64>().ok()?, b.trim().parse::<f64>().ok()?))
        });
        let range = match numbers {
            Some((min, max)) => FieldRange {
                path: path.to_string(),
                min: Some(min),
                max: Some(max),
                matches: None,
            },
            None => FieldRange {
                path: path.to_string(),
                min: None,
                max: None,
                matches: Some(want.to_string()),
            },
        };
        range.check()?;
        Ok(range)
    }
}

fn split_outside_brackets(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            '=' if depth == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

impl FieldRange {
    fn check(&self) -> Result<(), WidenError> {
        parse_path(&self.path)?;
        match (self.min, self.max, &self.matches) {
            (Some(min), Some(max), None) if min.is_finite() && max.is_finite() && min <= max => {
                Ok(())
            }
            (None, None, Some(g)) => GlobList::new([g.as_str()])
                .map(|_| ())
                .map_err(|e| WidenError(format!("field `{}`: invalid glob `{g}`: {e}", self.path))),
            _ => Err(WidenError(format!(
                "field `{}` needs either `min` and `max` (finite, min <= max) or `matches`",
                self.path
            ))),
        }
    }

    fn allows(&self, v: &Value, glob: Option<&GlobList>) -> bool {
        match (self.min, self.max, glob) {
            (Some(min), Some(max), _) => v.as_f64().is_some_and(|n| min <= n && n <= max),
            (_, _, Some(g)) => v.as_str().is_some_and(|s| g.is_match(s)),
            _ => false,
        }
    }

    /// The range in words.
    fn describe(&self) -> String {
        match (self.min, self.max, &self.matches) {
            (Some(min), Some(max), _) => format!("{} within {min}..{max}", self.path),
            (_, _, Some(g)) => format!("{} matching `{g}`", self.path),
            _ => self.path.clone(),
        }
    }
}

/// Why a widening cannot be granted; its message says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WidenError(String);

/// The axes an approver may widen a held request along, shown with its prompt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Axes {
    /// Why the request may be approved only exactly (the policy's floor); when set, nothing
    /// else here is offered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub never: Option<String>,
    /// Whether the name may be widened to a glob (the request names one object).
    pub names: bool,
    /// The body fields that may be given a range (numbers) or a glob (strings), at most
    /// [`MAX_FIELDS_OFFERED`].
    pub fields: Vec<String>,
    /// Whether uses and time may be given (everything not under the floor).
    pub uses_and_time: bool,
}

/// The axes `request` (with body `body` as sent) may be widened along, under the floor reason
/// `never` (from [`super::Policy::never_widen`]).
pub fn axes(request: &Request, body: &[u8], never: Option<String>) -> Axes {
    if never.is_some() {
        return Axes {
            never,
            ..Axes::default()
        };
    }
    let decoded = decoded_object(request, body);
    let names = name_of(request, decoded.as_ref()).is_some();
    let mut fields = Vec::new();
    if let Some(v) = &decoded {
        let mut path = String::new();
        leaves(v, &mut path, &mut fields);
    }
    Axes {
        never: None,
        names,
        fields,
        uses_and_time: true,
    }
}

fn leaves(v: &Value, path: &mut String, out: &mut Vec<String>) {
    if out.len() >= MAX_FIELDS_OFFERED {
        return;
    }
    match v {
        Value::Number(_) | Value::String(_) => {
            if !matches!(
                path.as_str(),
                "metadata.name"
                    | "metadata.namespace"
                    | "metadata.resourceVersion"
                    | "apiVersion"
                    | "kind"
            ) {
                out.push(path.clone());
            }
        }
        Value::Object(m) => {
            for (k, child) in m {
                let len = path.len();
                if is_plain_key(k) {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                } else {
                    path.push_str("['");
                    path.push_str(k);
                    path.push_str("']");
                }
                leaves(child, path, out);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                leaves(child, path, out);
                path.truncate(len);
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

fn is_plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'$')
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// `spec.replicas`, `$.spec.replicas`, `a.b[0].c`, `metadata.labels['x.y/z']`.
fn parse_path(p: &str) -> Result<Vec<Seg>, WidenError> {
    let bad = |why: &str| {
        WidenError(format!(
            "field path `{p}` {why}; write it as `spec.replicas`, `a.b[0].c` or `metadata.labels['x.y/z']`"
        ))
    };
    let s = p
        .strip_prefix("$.")
        .or_else(|| p.strip_prefix('$'))
        .unwrap_or(p);
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'[' {
            let close = s[i..]
                .find(']')
                .map(|j| i + j)
                .ok_or_else(|| bad("has an unclosed `[`"))?;
            let inner = &s[i + 1..close];
            if let Some(key) = inner.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')) {
                if key.is_empty() || key.contains('\'') {
                    return Err(bad("has an empty or quoted key"));
                }
                out.push(Seg::Key(key.to_string()));
            } else {
                let n = inner
                    .parse::<usize>()
                    .map_err(|_| bad("has an index that is not a number"))?;
                out.push(Seg::Index(n));
            }
            i = close + 1;
            continue;
        }
        if b[i] == b'.' {
            if out.is_empty() {
                return Err(bad("starts with `.`"));
            }
            i += 1;
        } else if !out.is_empty() {
            return Err(bad("needs `.` or `[` between its steps"));
        }
        let start = i;
        while i < b.len() && b[i] != b'.' && b[i] != b'[' {
            i += 1;
        }
        let key = &s[start..i];
        if !is_plain_key(key) {
            return Err(bad("has an empty or unusual key (quote it as ['key'])"));
        }
        out.push(Seg::Key(key.to_string()));
    }
    if out.is_empty() {
        return Err(bad("is empty"));
    }
    Ok(out)
}

fn get<'a>(v: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, s| match s {
        Seg::Key(k) => v.as_object()?.get(k),
        Seg::Index(i) => v.as_array()?.get(*i),
    })
}

/// Take the value at `path` out of `v` (an array element becomes `null`, so later indexes keep
/// their meaning); whether it was there.
fn take(v: &mut Value, path: &[Seg]) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    let Some(p) = parent.iter().try_fold(v, |v, s| match s {
        Seg::Key(k) => v.as_object_mut()?.get_mut(k),
        Seg::Index(i) => v.as_array_mut()?.get_mut(*i),
    }) else {
        return false;
    };
    match (last, p) {
        (Seg::Key(k), Value::Object(m)) => m.remove(k).is_some(),
        (Seg::Index(i), Value::Array(a)) => a.get_mut(*i).map(|x| *x = Value::Null).is_some(),
        _ => false,
    }
}

/// The body as an object the API server reads: a create, an update, a merge, strategic or
/// apply patch. JSON patches, delete options and bodies that do not decode are not offered.
fn decoded_object(request: &Request, body: &[u8]) -> Option<Value> {
    if body.is_empty() {
        return None;
    }
    let d = body::decode(request, body, &BodyLimits::default()).ok()??;
    matches!(
        d.kind,
        BodyKind::Object
            | BodyKind::MergePatch
            | BodyKind::StrategicMergePatch
            | BodyKind::ApplyPatch
    )
    .then_some(d.value)
    .filter(Value::is_object)
}

/// The object's name and where it is: in the target's path (its segment index), or, for a
/// create, in the body's `metadata.name`.
fn name_of(request: &Request, body: Option<&Value>) -> Option<(String, Option<usize>)> {
    let a = &request.attributes;
    if !a.resource_request {
        return None;
    }
    let path = request.target.split('?').next().unwrap_or_default();
    let segs: Vec<&str> = path.split('/').collect();
    if !a.name.is_empty() {
        let at = segs
            .len()
            .checked_sub(if a.subresource.is_empty() { 1 } else { 2 })?;
        let resource_before =
            at.checked_sub(1).and_then(|i| segs.get(i)) == Some(&a.resource.as_str());
        return (segs.get(at) == Some(&a.name.as_str()) && resource_before)
            .then(|| (a.name.clone(), Some(at)));
    }
    if a.verb == "create" && a.subresource.is_empty() {
        let n = body?.get("metadata")?.get("name")?.as_str()?;
        return (!n.is_empty()).then(|| (n.to_string(), None));
    }
    None
}

/// The target with the name segment at `at` replaced by a byte no canonical target holds.
fn target_template(target: &str, at: Option<usize>) -> String {
    let Some(at) = at else {
        return target.to_string();
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut segs: Vec<&str> = path.split('/').collect();
    if let Some(s) = segs.get_mut(at) {
        *s = "\u{0}";
    }
    let mut t = segs.join("/");
    if let Some(q) = query {
        t.push('?');
        t.push_str(q);
    }
    t
}

/// What the body of a covered request must be. Both forms are digests, so a grant holds no
/// byte of the approved body and can be kept outside the process (see [`GrantForm`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Template {
    /// Byte for byte (its SHA-256): nothing widens the body.
    Bytes([u8; 32]),
    /// Decoded, with the widened fields taken out (the SHA-256 of its canonical JSON).
    Value([u8; 32]),
}

/// The SHA-256 of `v` written canonically: object keys sorted at every level, so two values
/// that compare equal hash the same whatever order their keys were parsed in.
fn canonical_digest(v: &Value) -> [u8; 32] {
    fn write(v: &Value, h: &mut Sha256) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort_unstable();
                h.update(b"{");
                for k in keys {
                    write(&Value::String(k.clone()), h);
                    h.update(b":");
                    if let Some(x) = m.get(k) {
                        write(x, h);
                    }
                    h.update(b",");
                }
                h.update(b"}");
            }
            Value::Array(a) => {
                h.update(b"[");
                for x in a {
                    write(x, h);
                    h.update(b",");
                }
                h.update(b"]");
            }
            // Scalars as serde_json writes them (strings quoted and escaped), so no scalar's
            // text is another's.
            other => h.update(other.to_string().as_bytes()),
        }
    }
    let mut h = Sha256::new();
    write(v, &mut h);
    h.finalize().into()
}

/// A [`Grant`] as data: what it compares, with the body as a digest, so it can be kept outside
/// the process (the CLI keeps grants as Kubernetes objects that every replica reads) and read
/// back by [`Grant::from_form`]. It holds no byte of the approved body.
///
/// ```
/// use kubeleash_core::policy::grant::{Grant, Widening};
/// use kubeleash_core::request::classify;
///
/// let mut h = http::HeaderMap::new();
/// h.insert("content-type", "application/merge-patch+json".parse()?);
/// let scale = |name: &str| classify("PATCH", &format!("/apis/apps/v1/namespaces/dev/deployments/{name}/scale"), &h);
/// let widening = Widening { names: Some("web-*".into()), ..Widening::default() };
/// let grant = Grant::new(&scale("web-1")?, br#"{"spec":{"replicas":5}}"#, &widening)?;
/// let form = serde_json::to_string(&grant.form())?;
/// assert!(!form.contains("replicas\":5"));
/// let back = Grant::from_form(serde_json::from_str(&form)?)?;
/// assert!(back.covers(&scale("web-2")?, br#"{"spec":{"replicas":5}}"#));
/// assert!(!back.covers(&scale("web-2")?, br#"{"spec":{"replicas":6}}"#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantForm {
    /// The widening the grant was made from.
    pub widening: Widening,
    /// The target a covered request has, its name segment blanked when names are widened.
    pub target: String,
    /// The name segment's index in the path, when names are widened and the name is in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_at: Option<usize>,
    /// `bytes:HEX` (the SHA-256 of the body, compared byte for byte) or `value:HEX` (the
    /// SHA-256 of the decoded body with the widened parts taken out, written canonically).
    pub body: String,
    /// The approved request's method.
    pub method: String,
    /// The approved request's content type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The approved request's verb, group, resource (with subresource), namespace and name,
    /// for [`Grant::rule`].
    pub verb: String,
    /// See `verb`.
    pub group: String,
    /// See `verb`.
    pub resource: String,
    /// See `verb`.
    pub namespace: String,
    /// See `verb`.
    pub name: String,
}

/// A widened approval: the approved request, the axes widened, and how to tell whether a later
/// request is covered.
///
/// ```
/// use kubeleash_core::policy::grant::{Grant, Widening};
/// use kubeleash_core::request::classify;
///
/// let mut h = http::HeaderMap::new();
/// h.insert("content-type", "application/merge-patch+json".parse()?);
/// let scale = |name: &str| classify("PATCH", &format!("/apis/apps/v1/namespaces/dev/deployments/{name}/scale"), &h);
/// let widening = Widening { names: Some("web-*".into()), fields: vec!["spec.replicas=1..5".parse()?], ..Widening::default() };
/// let grant = Grant::new(&scale("web-1")?, br#"{"spec":{"replicas":5}}"#, &widening)?;
/// assert!(grant.covers(&scale("web-2")?, br#"{"spec":{"replicas":3}}"#));
/// assert!(!grant.covers(&scale("web-2")?, br#"{"spec":{"replicas":6}}"#));
/// assert!(!grant.covers(&scale("db")?, br#"{"spec":{"replicas":3}}"#));
/// assert!(!grant.covers(&scale("web-2")?, br#"{"spec":{"replicas":3},"metadata":{"labels":{"a":"b"}}}"#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Grant {
    widening: Widening,
    target: String,
    /// The name segment's index in the path, when names are widened and the name is in it.
    name_at: Option<usize>,
    names: Option<GlobList>,
    fields: Vec<(Vec<Seg>, FieldRange, Option<GlobList>)>,
    body: Template,
    /// The approved request's method and content type: the layer keys grants on them too,
    /// and a grant checks them itself so that it means the same used alone.
    method: String,
    content_type: Option<String>,
    /// The approved request's facts, for [`Grant::rule`].
    verb: String,
    group: String,
    resource: String,
    namespace: String,
    name: String,
}

impl Grant {
    /// The grant `widening` makes of the approved `request` with body `body` (as sent). Refused
    /// when an axis does not apply to the request (no name to widen, a field it does not have or
    /// whose value is outside the range given, a body that is not an object).
    pub fn new(request: &Request, body: &[u8], widening: &Widening) -> Result<Grant, WidenError> {
        for f in &widening.fields {
            f.check()?;
        }
        let a = &request.attributes;
        let decoded = if widening.widens_shape() {
            decoded_object(request, body)
        } else {
            None
        };
        let mut name_at = None;
        let mut names = None;
        if let Some(glob) = &widening.names {
            let (name, at) = name_of(request, decoded.as_ref()).ok_or_else(|| {
                WidenError("this request names no single object (in its path, or in the body of a create), so its name cannot be widened".into())
            })?;
            let list = GlobList::new([glob.as_str()])
                .map_err(|e| WidenError(format!("invalid name glob `{glob}`: {e}")))?;
            if !list.is_match(&name) {
                return Err(WidenError(format!(
                    "the name glob `{glob}` does not match the approved request's name `{name}`"
                )));
            }
            // A body that names another object than the path is one `covers` refuses (and the
            // API server too): the grant could not cover the very request it is made of.
            if at.is_some()
                && let Some(n) = decoded
                    .as_ref()
                    .and_then(|v| v.get("metadata")?.get("name")?.as_str())
                && n != name
            {
                return Err(WidenError(format!(
                    "the approved request's body names `{n}`, but its path names `{name}`: its name cannot be widened"
                )));
            }
            name_at = at;
            names = Some(list);
        }
        let mut fields = Vec::new();
        for f in &widening.fields {
            let Some(v) = decoded.as_ref() else {
                return Err(WidenError(format!(
                    "field `{}` cannot be widened: the request has no object body (a create, update, or merge, strategic or apply patch)",
                    f.path
                )));
            };
            let path = parse_path(&f.path)?;
            let glob = value_glob(f)?;
            match get(v, &path) {
                Some(x) if f.allows(x, glob.as_ref()) => fields.push((path, f.clone(), glob)),
                Some(x) => {
                    return Err(WidenError(format!(
                        "the approved request's `{}` is {x}, outside the range given ({})",
                        f.path,
                        f.describe()
                    )));
                }
                None => {
                    return Err(WidenError(format!(
                        "the approved request's body has no field `{}`",
                        f.path
                    )));
                }
            }
        }
        let body = match decoded {
            Some(v) => Template::Value(canonical_digest(&hollow(v, &fields, names.is_some()))),
            None => Template::Bytes(Sha256::digest(body).into()),
        };
        Ok(Grant {
            target: target_template(&request.target, name_at),
            name_at,
            names,
            fields,
            body,
            widening: widening.clone(),
            method: request.method.clone(),
            content_type: request.facts.content_type.clone(),
            verb: a.verb.clone(),
            group: a.api_group.clone(),
            resource: a.combined_resource(),
            namespace: a.namespace.clone(),
            name: name_of(request, None)
                .map(|(n, _)| n)
                .unwrap_or_else(|| a.name.clone()),
        })
    }

    /// The widening the grant was made from.
    pub fn widening(&self) -> &Widening {
        &self.widening
    }

    /// The target a covered request has, with the name segment blanked when names are widened:
    /// what a caller keys its grants on, together with identity, method and headers.
    pub fn target_key(&self) -> &str {
        &self.target
    }

    /// The same key for a request that may be covered: its target with the same segment
    /// blanked.
    pub fn target_key_of(&self, request: &Request) -> String {
        target_template(&request.target, self.name_at)
    }

    /// Whether the grant covers `request` with body `body` (as sent), apart from identity and
    /// the impersonation headers, which the caller compares.
    pub fn covers(&self, request: &Request, body: &[u8]) -> bool {
        if request.method != self.method
            || request.facts.content_type != self.content_type
            || self.target_key_of(request) != self.target
        {
            return false;
        }
        let decoded = match &self.body {
            Template::Bytes(d) => {
                // No body to widen: the bytes as approved, and the name (in the path) within
                // the glob when names are widened.
                return Sha256::digest(body).as_slice() == d
                    && self.names.as_ref().is_none_or(|glob| {
                        name_of(request, None).is_some_and(|(name, _)| glob.is_match(&name))
                    });
            }
            Template::Value(_) => decoded_object(request, body),
        };
        if let Some(glob) = &self.names {
            let Some((name, _)) = name_of(request, decoded.as_ref()) else {
                return false;
            };
            if !glob.is_match(&name) {
                return false;
            }
            // An update's body names its object too: it must be the one in the path.
            if self.name_at.is_some()
                && let Some(n) = decoded
                    .as_ref()
                    .and_then(|v| v.get("metadata")?.get("name")?.as_str())
                && n != name
            {
                return false;
            }
        }
        let (Template::Value(want), Some(v)) = (&self.body, decoded) else {
            return false;
        };
        for (path, f, glob) in &self.fields {
            if !get(&v, path).is_some_and(|x| f.allows(x, glob.as_ref())) {
                return false;
            }
        }
        canonical_digest(&hollow(v, &self.fields, self.names.is_some())) == *want
    }

    /// The grant as data (see [`GrantForm`]).
    pub fn form(&self) -> GrantForm {
        let (kind, digest) = match &self.body {
            Template::Bytes(d) => ("bytes", d),
            Template::Value(d) => ("value", d),
        };
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        GrantForm {
            widening: self.widening.clone(),
            target: self.target.clone(),
            name_at: self.name_at,
            body: format!("{kind}:{hex}"),
            method: self.method.clone(),
            content_type: self.content_type.clone(),
            verb: self.verb.clone(),
            group: self.group.clone(),
            resource: self.resource.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// The grant a [`GrantForm`] describes, its globs and field paths compiled again. Refused
    /// when the form could not have come from [`Grant::form`] (a field or glob that does not
    /// parse, a body digest that is not 32 bytes of hex, a name index with no name glob).
    pub fn from_form(form: GrantForm) -> Result<Grant, WidenError> {
        for f in &form.widening.fields {
            f.check()?;
        }
        let bad = |what: &str| WidenError(format!("not a grant kubeleash wrote: {what}"));
        let (kind, hex) = form
            .body
            .split_once(':')
            .ok_or_else(|| bad("its body digest has no kind"))?;
        let mut digest = [0u8; 32];
        if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad("its body digest is not 32 bytes of hex"));
        }
        for (i, d) in digest.iter_mut().enumerate() {
            *d = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| bad("its body digest is not hex"))?;
        }
        let body = match kind {
            "bytes" if form.widening.fields.is_empty() => Template::Bytes(digest),
            "value" => Template::Value(digest),
            _ => return Err(bad("its body digest's kind is unknown")),
        };
        let names = form
            .widening
            .names
            .as_deref()
            .map(|g| GlobList::new([g]))
            .transpose()
            .map_err(|e| WidenError(format!("invalid name glob: {e}")))?;
        if form.name_at.is_some() && names.is_none() {
            return Err(bad("it blanks a name it does not widen"));
        }
        let mut fields = Vec::new();
        for f in &form.widening.fields {
            fields.push((parse_path(&f.path)?, f.clone(), value_glob(f)?));
        }
        Ok(Grant {
            widening: form.widening,
            target: form.target,
            name_at: form.name_at,
            names,
            fields,
            body,
            method: form.method,
            content_type: form.content_type,
            verb: form.verb,
            group: form.group,
            resource: form.resource,
            namespace: form.namespace,
            name: form.name,
        })
    }

    /// The grant as the policy rule that would allow the same requests for `user`, with the
    /// parts of the grant a rule cannot say (`pinned`), for a person to review before making it
    /// permanent. `id` and `by` name the approval in the rule's name and reason.
    pub fn rule(&self, user: &str, id: &str, by: &str) -> Value {
        let short: String = id.chars().take(8).collect();
        let mut rule = Map::new();
        rule.insert("name".into(), json!(format!("grant-{short}")));
        rule.insert("effect".into(), json!("allow"));
        rule.insert(
            "reason".into(),
            json!(format!(
                "approved by {by} (approval {id}), widened: {}",
                self.describe()
            )),
        );
        rule.insert("subjects".into(), json!({"users": [user]}));
        rule.insert("verbs".into(), json!([self.verb]));
        rule.insert("apiGroups".into(), json!([self.group]));
        rule.insert("resources".into(), json!([self.resource]));
        if !self.namespace.is_empty() {
            rule.insert("namespaces".into(), json!([self.namespace]));
        }
        let mut when: Vec<Value> = Vec::new();
        let names = self
            .widening
            .names
            .clone()
            .unwrap_or_else(|| self.name.clone());
        if !names.is_empty() {
            // RBAC's rule: names never allow a create, so a create's name is a condition.
            if self.verb == "create" {
                when.push(json!({"path": "$.metadata.name", "matches": names}));
            } else {
                rule.insert("names".into(), json!([names]));
            }
        }
        for (path, f, _) in &self.fields {
            let p = json_path(path);
            match (f.min, f.max, &f.matches) {
                (Some(min), Some(max), _) => when.push(json!({"path": p, "between": [min, max]})),
                (_, _, Some(g)) => when.push(json!({"path": p, "matches": g})),
                _ => {}
            }
        }
        if !when.is_empty() {
            rule.insert("when".into(), Value::Array(when));
        }
        let mut pinned = vec![format!(
            "the request target and query `{}`",
            self.target.replace('\u{0}', "{name}")
        )];
        pinned.push(match &self.body {
            Template::Bytes(_) => "the body, byte for byte".to_string(),
            Template::Value(_) => "every other field of the body, as approved".to_string(),
        });
        pinned.push("the content type and impersonation headers".into());
        json!({
            "rule": Value::Object(rule),
            "uses": self.widening.uses,
            "seconds": self.widening.window().as_secs(),
            "pinned": pinned,
        })
    }

    /// The widening in words.
    pub fn describe(&self) -> String {
        let w = &self.widening;
        let mut parts = Vec::new();
        if let Some(n) = &w.names {
            parts.push(format!("names matching `{n}`"));
        }
        for (_, f, _) in &self.fields {
            parts.push(f.describe());
        }
        if let Some(u) = w.uses {
            parts.push(format!("{u} more use{}", if u == 1 { "" } else { "s" }));
        }
        parts.push(format!("for {}s", w.window().as_secs()));
        parts.join(", ")
    }
}

fn json_path(path: &[Seg]) -> String {
    let mut s = String::from("$");
    for seg in path {
        match seg {
            Seg::Key(k) if is_plain_key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Key(k) => s.push_str(&format!("['{k}']")),
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// A widened field's glob (`path=GLOB`), compiled; `None` for a range.
fn value_glob(f: &FieldRange) -> Result<Option<GlobList>, WidenError> {
    f.matches
        .as_deref()
        .map(|g| GlobList::new([g]))
        .transpose()
        .map_err(|e| WidenError(format!("invalid glob: {e}")))
}

/// `v` with the widened parts taken out: the fields, the name (when widened) and the
/// resourceVersion precondition.
fn hollow(mut v: Value, fields: &[(Vec<Seg>, FieldRange, Option<GlobList>)], names: bool) -> Value {
    for (path, _, _) in fields {
        take(&mut v, path);
    }
    let meta = |k: &str| vec![Seg::Key("metadata".into()), Seg::Key(k.into())];
    if names {
        take(&mut v, &meta("name"));
    }
    take(&mut v, &meta("resourceVersion"));
    v
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn paths_parse_as_written() {
        assert_eq!(
            parse_path("spec.replicas").unwrap(),
            vec![Seg::Key("spec".into()), Seg::Key("replicas".into())]
        );
        assert_eq!(
            parse_path("$.a[2].b").unwrap(),
            vec![Seg::Key("a".into()), Seg::Index(2), Seg::Key("b".into())]
        );
        assert_eq!(
            parse_path("metadata.labels['app.kubernetes.io/version']").unwrap(),
            vec![
                Seg::Key("metadata".into()),
                Seg::Key("labels".into()),
                Seg::Key("app.kubernetes.io/version".into())
            ]
        );
        for bad in ["", "$", "a..b", "a[x]", "a['']", "a[1", "a b"] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_parse_and_refuse_what_is_not_one() {
        let r: FieldRange = "spec.replicas=1..5".parse().unwrap();
        assert_eq!((r.min, r.max), (Some(1.0), Some(5.0)));
        let g: FieldRange = "spec.template.spec.containers[0].image=registry.example/*"
            .parse()
            .unwrap();
        assert_eq!(g.matches.as_deref(), Some("registry.example/*"));
        let k: FieldRange = "metadata.labels['a=b']=x".parse().unwrap();
        assert_eq!(k.path, "metadata.labels['a=b']");
        for bad in [
            "spec.replicas",
            "=1..5",
            "spec.replicas=5..1",
            "spec.replicas=",
            "x=1..inf",
        ] {
            assert!(bad.parse::<FieldRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_name_glob_widens_a_request_without_a_body() {
        let h = http::HeaderMap::new();
        let get = |name: &str| {
            crate::request::classify(
                "GET",
                &format!("/api/v1/namespaces/dev/pods/{name}/log"),
                &h,
            )
            .unwrap()
        };
        let w = Widening {
            names: Some("web-*".into()),
            ..Widening::default()
        };
        let g = Grant::new(&get("web-1"), b"", &w).unwrap();
        assert!(g.covers(&get("web-1"), b""));
        assert!(g.covers(&get("web-2"), b""));
        assert!(!g.covers(&get("db-1"), b""));
        assert!(!g.covers(&get("web-2"), b"x"), "a body is another request");
    }

    #[test]
    fn rules_render_as_policy_yaml_the_compiler_accepts() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "content-type",
            "application/merge-patch+json".parse().unwrap(),
        );
        let req = crate::request::classify(
            "PATCH",
            "/apis/apps/v1/namespaces/dev/deployments/web-1/scale",
            &h,
        )
        .unwrap();
        let w = Widening {
            names: Some("web-*".into()),
            fields: vec!["spec.replicas=1..5".parse().unwrap()],
            uses: Some(2),
            seconds: None,
        };
        let g = Grant::new(&req, br#"{"spec":{"replicas":5}}"#, &w).unwrap();
        let frag = g.rule("agent", "0123456789abcdef", "alice");
        let doc = json!({"apiVersion": crate::policy::compile::API_VERSION, "kind": "Policy", "spec": {"rules": [frag["rule"].clone()]}});
        let policy = crate::policy::Policy::from_yaml(&doc.to_string()).unwrap();
        let id = crate::policy::Identity::new("agent", ["g"]);
        let other = crate::request::classify(
            "PATCH",
            "/apis/apps/v1/namespaces/dev/deployments/web-2/scale",
            &h,
        )
        .unwrap();
        assert!(
            policy
                .decide(&id, &other, Some(br#"{"spec":{"replicas":3}}"#))
                .allowed()
        );
        assert!(
            !policy
                .decide(&id, &other, Some(br#"{"spec":{"replicas":9}}"#))
                .allowed()
        );
        assert_eq!(frag["uses"], json!(2));
    }
}
