//! Deciding one request: look up the candidate rules, check who and what they cover, judge
//! their conditions against the body, and pick the strictest (deny, then approve, then allow;
//! the first such rule in document order names the decision).

use std::fmt::Write as _;

use serde_json::Value;

use super::compile::{Compiled, Rule};
use super::condition::Quantifier;
use super::index::{Candidate, Lookup, RuleId};
use super::patch_shape::{self, Shape};
use super::privileged::{cluster_scoped, impersonation_checks, privilege, token_secret_type};
use super::{Decision, Effect, Identity};
use super::{markers, patch_reads};
use crate::body::{self, BodyError, BodyKind, BodyLimits, DecodedBody};
use crate::request::{Attributes, OptionsSource, PatchType, Request};

/// The request body, decoded at most once and only when a rule needs it.
pub(crate) struct BodyState<'a> {
    request: &'a Request,
    raw: Option<&'a [u8]>,
    decoded: Option<Result<Option<DecodedBody>, BodyError>>,
    /// The object the API server says the write would produce (a dry run): conditions are
    /// judged on it instead of on the body's text.
    result: Option<&'a Value>,
    /// An access review: attributes without a body, so no rule's conditions are judged (each
    /// fails); [`review`] reports the conditioned rules apart.
    review: bool,
}

impl<'a> BodyState<'a> {
    /// The body of `request` (`raw` as sent), decoded when a rule first needs it.
    pub(crate) fn new(request: &'a Request, raw: Option<&'a [u8]>) -> Self {
        BodyState {
            request,
            raw,
            decoded: None,
            result: None,
            review: false,
        }
    }
}

impl BodyState<'_> {
    fn get(&mut self) -> Result<Option<&DecodedBody>, &BodyError> {
        let (request, raw) = (self.request, self.raw);
        self.decoded
            .get_or_insert_with(|| match raw.filter(|b| !b.is_empty()) {
                // A DELETE's options in the query are what a condition judges when there is no
                // body: the API server reads them from either place (semantics "DeleteOptions: the
                // body overrides the query").
                None => Ok(query_delete_options(request)),
                Some(bytes) => body::decode(request, bytes, &BodyLimits::default()).map(|d| {
                    d.map(|mut d| {
                        if d.kind == BodyKind::DeleteOptions
                            && let Value::Object(o) = &mut d.value
                        {
                            crate::request::effective_propagation(o);
                        }
                        d
                    })
                }),
            })
            .as_ref()
            .map(Option::as_ref)
    }
}

/// A DELETE's query options as the `DeleteOptions` object a condition reads.
fn query_delete_options(request: &Request) -> Option<DecodedBody> {
    let options = request.facts.delete_options.as_ref()?;
    (options.source == OptionsSource::Query).then(|| DecodedBody {
        kind: BodyKind::DeleteOptions,
        value: options.to_json(),
    })
}

impl BodyState<'_> {
    /// The decoded body's shape, `Plain` when there is none.
    fn shape(&mut self) -> Result<Shape, BodyError> {
        Ok(match self.get().map_err(Clone::clone)? {
            Some(d) => patch_shape::shape(d),
            None => Shape::Plain,
        })
    }
}

/// How a rule's conditions came out.
pub(crate) enum Judged {
    Holds(Option<String>),
    Fails,
}

pub(crate) fn decide(c: &Compiled, id: &Identity, req: &Request, raw: Option<&[u8]>) -> Decision {
    decide_with(c, id, req, raw, None)
}

/// [`decide`], with rule conditions judged on `result`, the object the API server's dry run of
/// this very request produced, instead of on the body's text.
pub(crate) fn decide_on_result(
    c: &Compiled,
    id: &Identity,
    req: &Request,
    raw: Option<&[u8]>,
    result: &Value,
) -> Decision {
    decide_with(c, id, req, raw, Some(result))
}

/// Whether [`decide_on_result`] can judge this request better than its text: an update or patch
/// (server-side apply included) of an object, its status or scale, not itself a dry run, that
/// a conditioned rule (or the token-Secret check) looks at.
pub(crate) fn judges_on_result(c: &Compiled, id: &Identity, req: &Request) -> bool {
    let a = &req.attributes;
    a.resource_request
        && matches!(a.verb.as_str(), "update" | "patch")
        && matches!(a.subresource.as_str(), "" | "status" | "scale")
        && !req.facts.dry_run
        && (attrs_need_body(c, id, a)
            || apply_create(req).is_some_and(|create| attrs_need_body(c, id, &create)))
}

fn decide_with(
    c: &Compiled,
    id: &Identity,
    req: &Request,
    raw: Option<&[u8]>,
    result: Option<&Value>,
) -> Decision {
    let f = &req.facts;
    if let Some(why) = super::own::reach(&req.attributes) {
        return Decision::deny(None, why);
    }
    if f.websocket_bearer_token {
        return Decision::deny(
            None,
            "the request carries a bearer token in a websocket subprotocol; kubeleash holds the \
             cluster credential and never forwards one a client supplies",
        );
    }
    if f.impersonation.as_ref().is_some_and(|i| i.front_proxy) {
        return Decision::deny(
            None,
            "the request carries front-proxy identity headers (X-Remote-User, X-Remote-Group, \
             X-Remote-Extra-*); they would let a client name its own identity, so kubeleash refuses them",
        );
    }
    if let Some(refused) = delete_body_check(req, raw) {
        return refused;
    }
    let mut body = BodyState {
        request: req,
        raw,
        decoded: None,
        result,
        review: false,
    };
    if let Some(refused) = write_checks(c, req, &mut body) {
        return refused;
    }
    let mut d = decide_attrs(c, id, &req.attributes, &mut body);
    if let Some(create) = apply_create(req) {
        let dc = decide_attrs(c, id, &create, &mut body);
        if dc.effect.strictness() > d.effect.strictness() {
            d = dc.with_prefix("server-side apply can create the object, so it needs create too: ");
        }
    }
    if let Some(imp) = &f.impersonation {
        for check in impersonation_checks(imp) {
            let di = decide_attrs(c, id, &check, &mut body);
            if di.effect.strictness() > d.effect.strictness() {
                d = di.with_prefix("the request impersonates another identity: ");
            }
        }
    }
    d
}

/// A DELETE with a non-empty body is refused unless the body is `DeleteOptions` and the query
/// carries none (semantics "DeleteOptions: the body overrides the query": the API server would act
/// on the body and ignore the query, so the request would not do what its target says; see
/// [`Request::with_body_facts`]).
fn delete_body_check(req: &Request, raw: Option<&[u8]>) -> Option<Decision> {
    let raw = raw.filter(|b| !b.is_empty())?;
    req.facts.delete_options.as_ref()?;
    body::delete_options(req, raw)
        .err()
        .map(|e| Decision::body_refused(&e))
}

/// Checks on the body of every write, whatever the rules say: mask markers written back (semantics
/// "Mask markers written back") and JSON patch reads of masked fields (semantics "JSON patch reads:
/// copy, move and test"). A write body kubeleash cannot decode strictly is denied: judged another
/// way, it could be read differently from how the API server reads it.
fn write_checks(c: &Compiled, req: &Request, body: &mut BodyState<'_>) -> Option<Decision> {
    body.raw?;
    if !is_body_write(&req.attributes) {
        return None;
    }
    match body.get() {
        Ok(None) => None,
        Ok(Some(decoded)) => {
            if let Some((path, marker)) = markers::find(&decoded.value) {
                return Some(marker_refused(&format!("at `{path}`"), marker));
            }
            if decoded.kind == BodyKind::StrategicMergePatch {
                return patch_reads::check_strategic(&c.masks, req, &decoded.value).map(|at| {
                    Decision::deny(
                        None,
                        format!(
                            "strategic merge directive `{}` is refused: it compares list \
                             elements with values kubeleash masks in {}, so the result would \
                             answer whether a guess at a hidden value was right; send the \
                             whole list instead",
                            printable_pointer(&at),
                            describe_resource(&req.attributes)
                        ),
                    )
                });
            }
            if decoded.kind != BodyKind::JsonPatch {
                return None;
            }
            patch_reads::check(&c.masks, req, &decoded.value).map(|r| {
                let what = if r.op == "test" { "test of" } else { "`from`" };
                let why = if r.detector {
                    "its value looks like a credential, and a `test` answers whether a guess \
                     equals a masked value"
                        .to_string()
                } else {
                    format!(
                        "it reaches a field kubeleash masks in {} (or one it cannot place outside \
                         every mask), and `{}` would {}",
                        describe_resource(&req.attributes),
                        r.op,
                        if r.op == "test" {
                            "answer whether a guess equals the hidden value"
                        } else {
                            "put the hidden value in a field no mask covers"
                        }
                    )
                };
                Decision::deny(
                    None,
                    format!(
                        "JSON patch operation {} ({} `{}`) is refused: {why}; send a merge or \
                         strategic merge patch that sets the values itself",
                        r.index,
                        what,
                        printable_pointer(&r.pointer)
                    ),
                )
            })
        }
        // Anything else that does not decode strictly (a duplicated key the API server would
        // read as its last value, YAML, CBOR, malformed JSON) would be judged here, and checked
        // for masked-field reads and markers, differently from how the API server reads it.
        Err(e) => Some(Decision::deny(
            None,
            format!(
                "request body refused: {e}; kubeleash checks every write's body and forwards only \
                 what it reads as the API server will: send it as plain JSON"
            ),
        )),
    }
}

fn marker_refused(place: &str, marker: &str) -> Decision {
    Decision::deny(
        None,
        format!(
            "the request body carries the mask marker `{marker}` {place}: it is what kubeleash \
             shows in place of a secret value, and writing it back would overwrite the real \
             value; leave the masked fields out of the body (or patch only the fields you \
             change), or write the real value"
        ),
    )
}

/// A JSON pointer for a message: control characters escaped, long ones cut.
fn printable_pointer(p: &str) -> String {
    let shown: String = crate::display::printable(p).chars().take(200).collect();
    shown.replace('`', "\\`")
}

/// "secrets in namespace dev", for messages.
fn describe_resource(a: &Attributes) -> String {
    let mut s = a.combined_resource();
    if !a.api_group.is_empty() {
        s = format!("{s} ({})", a.api_group);
    }
    s
}

/// A write that carries an object or a patch the API server decodes: create, update and patch
/// of resources, but not the streams and proxies whose bodies go to a pod or a backend.
fn is_body_write(a: &Attributes) -> bool {
    a.resource_request
        && matches!(a.verb.as_str(), "create" | "update" | "patch")
        && !matches!(
            a.subresource.as_str(),
            "exec" | "attach" | "portforward" | "proxy"
        )
}

/// Server-side apply creates the object when it is absent, so the API server checks `create` as
/// well (semantics "Privileged requests"), whatever the apply encoding; so do we. The attributes of
/// that check.
fn apply_create(req: &Request) -> Option<Attributes> {
    let apply = matches!(
        req.facts.patch_type,
        Some(PatchType::Apply | PatchType::ApplyCbor)
    );
    (apply && req.attributes.verb == "patch").then(|| {
        let mut create = req.attributes.clone();
        create.verb = "create".into();
        create
    })
}

/// Whether deciding this request may need its body: whether any of the checks [`decide`] makes
/// (the request itself, the create check of an apply, the impersonation checks) may.
pub(crate) fn needs_body(c: &Compiled, id: &Identity, req: &Request) -> bool {
    // Every write's body is checked for mask markers and masked-field reads, and a DELETE's
    // body decides what the delete does (its options override the query's).
    is_body_write(&req.attributes)
        || req.facts.delete_options.is_some()
        || attrs_need_body(c, id, &req.attributes)
        || apply_create(req).is_some_and(|create| attrs_need_body(c, id, &create))
        || req.facts.impersonation.as_ref().is_some_and(|imp| {
            impersonation_checks(imp)
                .iter()
                .any(|check| attrs_need_body(c, id, check))
        })
}

fn attrs_need_body(c: &Compiled, id: &Identity, a: &Attributes) -> bool {
    if is_secret_write(a) {
        return true;
    }
    if !c.has_conditions {
        return false;
    }
    let mut cands = Vec::new();
    candidates(c, a, &mut cands);
    cands.iter().any(|cand| {
        c.rules
            .get(cand.id as usize)
            .is_some_and(|r| !r.conditions.is_empty() && applies(r, id, a))
    })
}

fn is_secret_write(a: &Attributes) -> bool {
    a.resource_request
        && a.api_group.is_empty()
        && a.resource == "secrets"
        && a.subresource.is_empty()
        && matches!(a.verb.as_str(), "create" | "update" | "patch")
}

pub(crate) fn candidates(c: &Compiled, a: &Attributes, out: &mut Vec<Candidate>) {
    if a.resource_request {
        c.resources.candidates(
            &Lookup {
                verb: &a.verb,
                group: &a.api_group,
                resource: &a.resource,
                subresource: &a.subresource,
                namespace: &a.namespace,
                cluster_scoped,
            },
            out,
        );
    } else {
        c.non_resources.candidates(&a.path, out);
    }
}

/// Subjects, names and non-resource verbs: what the index does not already decide.
pub(crate) fn applies(r: &Rule, id: &Identity, a: &Attributes) -> bool {
    if let Some(s) = &r.subjects {
        let member = s.users.contains(id.user.as_str())
            || id.groups.iter().any(|g| s.groups.contains(g.as_str()));
        if !member {
            return false;
        }
    }
    if let Some(names) = &r.names {
        // RBAC: a name-restricted rule never allows a request without a name (list, create,
        // deletecollection). A deny or approve rule does apply to one, since such a request can
        // reach the named objects.
        if a.name.is_empty() {
            if r.effect == Effect::Allow {
                return false;
            }
        } else if !names.is_match(&a.name) {
            return false;
        }
    }
    r.non_resource_verbs
        .as_ref()
        .is_none_or(|verbs| verbs.iter().any(|v| &**v == "*" || **v == *a.verb))
}

pub(crate) fn judge(r: &Rule, body: &mut BodyState<'_>) -> Result<Judged, BodyError> {
    if r.conditions.is_empty() {
        return Ok(Judged::Holds(None));
    }
    if body.review {
        return Ok(Judged::Fails);
    }
    let strict = r.effect != Effect::Allow;
    let q = if strict {
        Quantifier::Any
    } else {
        Quantifier::All
    };
    // The API server's own result of this write: what it does, whatever its text's shape.
    if let Some(result) = body.result {
        if r.conditions.iter().all(|cond| cond.holds(result, q)) {
            let detail = describe_conditions(r);
            return Ok(Judged::Holds(Some(format!(
                "when {detail} (on the object the API server's dry run of this request produced)"
            ))));
        }
        return Ok(Judged::Fails);
    }
    let shape = body.shape()?;
    if let Shape::Opaque(what) = shape {
        // What the body does depends on the stored object, so its text cannot be judged: a
        // deny or approve rule applies, an allow rule does not.
        return Ok(if strict {
            Judged::Holds(Some(format!("its conditions cannot be judged on {what}")))
        } else {
            Judged::Fails
        });
    }
    let decoded = body.get().map_err(Clone::clone)?;
    let null = Value::Null;
    let value = decoded.map_or(&null, |d| &d.value);
    // A server-side apply also removes the fields its manager owned and the body omits, which
    // can make a condition on absence or inequality hold on the result though it fails on the
    // body: for a deny or approve rule such a condition counts as holding. (A removal cannot
    // make any other condition hold, nor make an allow rule's condition that holds on the body
    // fail: what the body sets, the result has.)
    let removal_may_hold = strict && shape == Shape::Apply;
    let mut by_removal = false;
    for cond in &r.conditions {
        if cond.holds(value, q) {
            continue;
        }
        if removal_may_hold && cond.absence_sensitive() {
            by_removal = true;
            continue;
        }
        return Ok(Judged::Fails);
    }
    let detail = describe_conditions(r);
    Ok(Judged::Holds(Some(if by_removal {
        format!(
            "when {detail} (a server-side apply can remove the fields its manager owns and the \
             body leaves out, so a condition on absence or inequality is taken to hold)"
        )
    } else {
        format!("when {detail}")
    })))
}

/// A rule's conditions as a person reads them: `$.a equals 1 and $.b exists`.
pub(crate) fn describe_conditions(r: &Rule) -> String {
    r.conditions
        .iter()
        .map(|c| c.describe())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Whether this request mints a credential through a token-typed Secret (semantics "Privileged
/// requests"), which makes a secret write privileged.
///
/// A body that sets a token `type` mints; so does a JSON patch (what it writes depends on the
/// stored object), and a body that names the service account a token is for (the
/// `kubernetes.io/service-account.name` or `.uid` annotation) without a `type`, since a patch
/// or update of an existing token Secret keeps its type.
fn mints_token(a: &Attributes, body: &mut BodyState<'_>) -> Result<bool, BodyError> {
    if !is_secret_write(a) {
        return Ok(false);
    }
    // What the write stores: a token type there mints, whatever the body's text.
    if let Some(result) = body.result {
        return Ok(result
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(token_secret_type));
    }
    Ok(match body.get().map_err(Clone::clone)? {
        None => false,
        Some(d) if d.kind == BodyKind::JsonPatch => true,
        Some(d) => match d.value.get("type") {
            Some(t) => t.as_str().is_some_and(token_secret_type),
            None => d
                .value
                .pointer("/metadata/annotations")
                .and_then(Value::as_object)
                .is_some_and(|annotations| {
                    annotations.contains_key("kubernetes.io/service-account.name")
                        || annotations.contains_key("kubernetes.io/service-account.uid")
                }),
        },
    })
}

fn decide_attrs(c: &Compiled, id: &Identity, a: &Attributes, body: &mut BodyState<'_>) -> Decision {
    let mut privileged = privilege(a);
    let minting = match mints_token(a, body) {
        Ok(minting) => minting,
        Err(e) => return Decision::body_refused(&e),
    };
    if minting {
        privileged =
            Some("a secret of a token type makes the cluster mint a service account token");
    }
    let mut plain_secrets_allow: Option<RuleId> = None;
    let mut cands = Vec::with_capacity(8);
    candidates(c, a, &mut cands);
    let mut best: Option<(Effect, RuleId, Option<String>)> = None;
    let mut wildcard_allow: Option<RuleId> = None;
    for cand in cands {
        let Some(rule) = c.rules.get(cand.id as usize) else {
            continue;
        };
        if let Some((e, bid, _)) = &best {
            let better =
                rule.effect.strictness() > e.strictness() || (rule.effect == *e && cand.id < *bid);
            if !better {
                continue;
            }
        }
        if !applies(rule, id, a) {
            continue;
        }
        if privileged.is_some() && rule.effect == Effect::Allow && !cand.explicit {
            wildcard_allow = Some(wildcard_allow.map_or(cand.id, |w| w.min(cand.id)));
            continue;
        }
        if minting && rule.effect == Effect::Allow && !rule.names_token_secret {
            // A `secrets` rule does not grant minting a token: the rule must name the type.
            plain_secrets_allow = Some(plain_secrets_allow.map_or(cand.id, |w| w.min(cand.id)));
            continue;
        }
        match judge(rule, body) {
            Ok(Judged::Holds(detail)) => best = Some((rule.effect, cand.id, detail)),
            Ok(Judged::Fails) => {}
            Err(e) => return Decision::body_refused(&e),
        }
    }
    match best {
        Some((effect, rid, detail)) => {
            let Some(rule) = c.rules.get(rid as usize) else {
                return Decision::deny(None, "internal error: rule index out of range");
            };
            let what = describe(a);
            let mut reason = String::with_capacity(what.len() + rule.name.len() + 32);
            reason.push_str("rule \"");
            reason.push_str(&rule.name);
            reason.push_str(match effect {
                Effect::Allow => "\" allows ",
                Effect::Deny => "\" denies ",
                Effect::Approve => "\" requires approval for ",
            });
            reason.push_str(&what);
            if let Some(d) = detail {
                let _ = write!(reason, " {d}");
            }
            if let Some(why) = &rule.reason {
                let _ = write!(reason, ": {why}");
            }
            Decision {
                effect,
                rule: Some(rule.name.clone()),
                reason,
            }
        }
        None => {
            let mut reason = format!("no rule allows {} for {}", describe(a), who(id));
            if let Some(p) = privileged {
                match wildcard_allow.and_then(|w| c.rules.get(w as usize)) {
                    Some(w) => {
                        let _ = write!(
                            reason,
                            "; rule \"{}\" covers it only through `*`, and {p}: an allow rule must list verb `{}` and resource `{}` by name",
                            w.name,
                            a.verb,
                            a.combined_resource()
                        );
                    }
                    None => match plain_secrets_allow.and_then(|w| c.rules.get(w as usize)) {
                        Some(w) => {
                            let _ = write!(
                                reason,
                                "; rule \"{}\" allows secrets but does not name token secrets, and {p}: an allow rule must also have a `when` condition on `$.type` equal to `kubernetes.io/service-account-token` (or `bootstrap.kubernetes.io/token`)",
                                w.name
                            );
                        }
                        None => {
                            let _ =
                                write!(reason, "; {p}, so only a rule that names it can allow it");
                        }
                    },
                }
            }
            Decision::deny(None, reason)
        }
    }
}

/// "delete on namespaces/kube-system", "list on secrets in namespace dev",
/// "create on pods/web-1/exec in namespace dev", "get on /metrics".
pub(crate) fn describe(a: &Attributes) -> String {
    let verb = if a.verb.is_empty() {
        "a method the API server maps to no verb"
    } else {
        &a.verb
    };
    let mut s = String::with_capacity(64);
    s.push_str(verb);
    s.push_str(" on ");
    if !a.resource_request {
        s.push_str(&a.path);
        return s;
    }
    s.push_str(&a.resource);
    for (sep, part) in [(".", &a.api_group), ("/", &a.name), ("/", &a.subresource)] {
        if !part.is_empty() {
            s.push_str(sep);
            s.push_str(part);
        }
    }
    // `namespaces/x` already names its namespace.
    if a.resource == "namespaces" && a.subresource.is_empty() {
        return s;
    }
    if !a.namespace.is_empty() {
        s.push_str(" in namespace ");
        s.push_str(&a.namespace);
    } else if matches!(a.verb.as_str(), "list" | "watch" | "deletecollection")
        && !cluster_scoped(&a.api_group, &a.resource)
    {
        s.push_str(" in all namespaces");
    }
    s
}

fn who(id: &Identity) -> String {
    let user = if id.user.is_empty() {
        "an anonymous user"
    } else {
        &id.user
    };
    let mut s = if id.user.is_empty() {
        user.to_string()
    } else {
        format!("user {user}")
    };
    match id.groups.len() {
        0 => {}
        1 => {
            let _ = write!(s, " in group {}", id.groups.join(""));
        }
        _ => {
            let _ = write!(s, " in groups {}", id.groups.join(", "));
        }
    }
    s
}

/// A rule an access review cannot settle: it covers the attributes, but its conditions are
/// judged on a body, which a review does not have.
pub(crate) struct Conditional<'a> {
    pub rule: &'a Rule,
    /// Its conditions, in words.
    pub conditions: String,
}

/// Decide attributes alone, as an access review asks them (`kubectl auth can-i`): the decision
/// of a request with these attributes and no body (conditioned rules left out), and the
/// conditioned rules that a body could bring in, in document order. Privileged requests are
/// treated as in [`decide`]: a `*` never grants them.
pub(crate) fn review<'c>(
    c: &'c Compiled,
    id: &Identity,
    a: &Attributes,
) -> (Decision, Vec<Conditional<'c>>) {
    let request = Request {
        method: String::new(),
        target: a.path.clone(),
        attributes: a.clone(),
        facts: Default::default(),
    };
    let mut body = BodyState {
        request: &request,
        raw: None,
        decoded: None,
        result: None,
        review: true,
    };
    let decision = decide_attrs(c, id, a, &mut body);
    let privileged = privilege(a).is_some();
    let mut cands = Vec::with_capacity(8);
    candidates(c, a, &mut cands);
    cands.sort_by_key(|cand| (cand.id, !cand.explicit));
    cands.dedup_by_key(|cand| cand.id);
    let conditional = cands
        .iter()
        .filter_map(|cand| {
            let rule = c.rules.get(cand.id as usize)?;
            let counts = !rule.conditions.is_empty()
                && applies(rule, id, a)
                && !(privileged && rule.effect == Effect::Allow && !cand.explicit);
            counts.then(|| Conditional {
                rule,
                conditions: describe_conditions(rule),
            })
        })
        .collect();
    (decision, conditional)
}

/// Whether `rule` applies to `id` at all (its subjects), whatever the request.
pub(crate) fn covers_identity(rule: &Rule, id: &Identity) -> bool {
    rule.subjects.as_ref().is_none_or(|s| {
        s.users.contains(id.user.as_str())
            || id.groups.iter().any(|g| s.groups.contains(g.as_str()))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use http::{HeaderMap, HeaderValue};

    use crate::policy::{Identity, Policy};
    use crate::request::classify;

    const POLICY: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  rules:
    - {name: pods, effect: allow, verbs: [create, patch, get, list], apiGroups: [""], resources: [pods], namespaces: [dev]}
    - name: no-privileged-creates
      effect: deny
      verbs: [create]
      apiGroups: [""]
      resources: [pods]
      when: [{path: "$..securityContext.privileged", equals: true}]
    - name: no-impersonating-with-a-body
      effect: deny
      verbs: [impersonate]
      resources: [users]
      when: [{path: "$.spec", exists: true}]
"#;

    fn needs_body(method: &str, target: &str, headers: &[(&str, &str)]) -> bool {
        let policy = Policy::from_yaml(POLICY).unwrap();
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let req = classify(method, target, &map).unwrap();
        policy.needs_body(&Identity::new("agent", ["ai"]), &req)
    }

    #[test]
    fn needs_body_covers_the_create_check_of_an_apply() {
        let target = "/api/v1/namespaces/dev/pods/p";
        for content_type in [
            "application/apply-patch+yaml",
            "application/apply-patch+cbor",
        ] {
            assert!(
                needs_body("PATCH", target, &[("content-type", content_type)]),
                "{content_type}"
            );
        }
        // Every write's body is read, for the mask-marker and JSON patch checks.
        assert!(needs_body(
            "PATCH",
            target,
            &[("content-type", "application/merge-patch+json")]
        ));
        assert!(needs_body("POST", "/api/v1/namespaces/dev/pods", &[]));
        assert!(needs_body(
            "PUT",
            "/api/v1/namespaces/dev/configmaps/c",
            &[]
        ));
        // A DELETE's body holds the options the API server acts on (semantics "DeleteOptions: the
        // body overrides the query").
        assert!(needs_body("DELETE", target, &[]));
        assert!(needs_body("DELETE", "/api/v1/namespaces/dev/pods", &[]));
        // Reads and streams are not writes of an object.
        assert!(!needs_body("GET", target, &[]));
        assert!(!needs_body(
            "POST",
            "/api/v1/namespaces/dev/pods/p/exec",
            &[]
        ));
        assert!(!needs_body(
            "POST",
            "/api/v1/namespaces/dev/services/s/proxy/x",
            &[]
        ));
    }

    #[test]
    fn needs_body_covers_the_impersonation_checks() {
        let target = "/api/v1/namespaces/dev/pods";
        assert!(!needs_body("GET", target, &[]));
        assert!(needs_body("GET", target, &[("impersonate-user", "bob")]));
    }

    #[test]
    fn a_body_left_out_because_needs_body_said_so_changes_nothing() {
        // The data path skips the body exactly when `needs_body` says so; the decision with and
        // without the body must then agree.
        let policy = Policy::from_yaml(POLICY).unwrap();
        let id = Identity::new("agent", ["ai"]);
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/apply-patch+yaml"),
        );
        let req = classify("PATCH", "/api/v1/namespaces/dev/pods/p", &headers).unwrap();
        let body =
            br#"{"spec":{"containers":[{"name":"c","securityContext":{"privileged":true}}]}}"#;
        assert!(policy.needs_body(&id, &req));
        let d = policy.decide(&id, &req, Some(body));
        assert_eq!(d.rule.as_deref(), Some("no-privileged-creates"));
    }

    #[test]
    fn delete_conditions_judge_the_options_the_server_uses_wherever_they_are() {
        let policy = Policy::from_yaml(
            "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - {name: deletes, effect: allow, verbs: [delete], resources: [configmaps]}\n    - name: no-orphans\n      effect: deny\n      verbs: [delete]\n      resources: [configmaps]\n      when: [{path: \"$.propagationPolicy\", equals: Orphan}]\n",
        )
        .unwrap();
        let id = Identity::new("agent", ["ai"]);
        let cm = "/api/v1/namespaces/dev/configmaps/x";
        let decide = |target: &str, body: Option<&[u8]>| {
            let req = classify("DELETE", target, &HeaderMap::new()).unwrap();
            let d = policy.decide(&id, &req, body);
            (d.effect, d.rule.as_deref().map(str::to_string))
        };
        use crate::policy::Effect;
        let no_orphans = (Effect::Deny, Some("no-orphans".to_string()));
        let allowed = (Effect::Allow, Some("deletes".to_string()));
        assert_eq!(
            decide(&format!("{cm}?propagationPolicy=Orphan"), None),
            no_orphans
        );
        assert_eq!(
            decide(cm, Some(br#"{"propagationPolicy":"Orphan"}"#)),
            no_orphans
        );
        assert_eq!(
            decide(&format!("{cm}?propagationPolicy=Background"), None),
            allowed
        );
        assert_eq!(decide(cm, None), allowed);
        // The deprecated spelling of the same policy is judged as the policy it means.
        for target in [
            format!("{cm}?orphanDependents=true"),
            format!("{cm}?orphanDependents=1"),
            format!("{cm}?orphanDependents="),
        ] {
            assert_eq!(decide(&target, None), no_orphans, "{target}");
        }
        assert_eq!(
            decide(cm, Some(br#"{"orphanDependents":true}"#)),
            no_orphans
        );
        assert_eq!(
            decide(&format!("{cm}?orphanDependents=false"), None),
            allowed
        );
        // Options in both places: refused before any rule.
        let both = decide(
            &format!("{cm}?propagationPolicy=Background"),
            Some(br#"{"propagationPolicy":"Orphan"}"#),
        );
        assert_eq!(both, (Effect::Deny, None));
    }

    #[test]
    fn a_delete_without_options_is_decided_on_its_attributes() {
        let policy = Policy::from_yaml(
            "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - {name: write, effect: allow, verbs: [delete, deletecollection], apiGroups: [\"\"], resources: [configmaps], namespaces: [dev]}\n",
        )
        .unwrap();
        let id = Identity::new("agent", ["agents"]);
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        for target in [
            "/api/v1/namespaces/dev/configmaps/x",
            "/api/v1/namespaces/dev/configmaps",
        ] {
            let req = classify("DELETE", target, &headers).unwrap();
            for body in [None, Some(&b""[..]), Some(&b"{}"[..])] {
                let d = policy.decide(&id, &req, body);
                assert_eq!(
                    d.rule.as_deref(),
                    Some("write"),
                    "{target} {body:?}: {}",
                    d.reason
                );
            }
        }
    }
}
