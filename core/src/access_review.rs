//! The access reviews kubeleash answers itself: a SelfSubjectAccessReview (`kubectl auth
//! can-i VERB RESOURCE`) and a SelfSubjectRulesReview (`kubectl auth can-i --list`) sent by the
//! agent. Forwarded, they would describe kubeleash's own cluster credential, which is not what
//! the agent may do; answered here, from the policy, they describe the leash
//! ([`Policy::review_access`], [`Policy::review_rules`]). An access review that the policy
//! allows is then narrowed by what the cluster credential may do, where the API server can say
//! ([`Answered::narrow_by_server`]).
//!
//! Every front door (the tower layer, and through it the proxy and the bindings) calls
//! [`answers`] on a classified request, and [`answer`] on its body: the review object is read as
//! the API server reads it (JSON, or protobuf as kubectl sends it) and answered with the object
//! the API server would return, `201 Created`, as JSON.
//!
//! ```
//! use kubeleash_core::access_review::{self, Review};
//! use kubeleash_core::policy::{Identity, Policy};
//! use kubeleash_core::request::classify;
//!
//! let policy = Policy::from_yaml(r#"
//! apiVersion: kubeleash.dev/v1alpha1
//! kind: Policy
//! spec:
//!   rules:
//!     - {name: read-dev, effect: allow, verbs: [get, list], resources: [pods], namespaces: [dev]}
//! "#)?;
//! let mut headers = http::HeaderMap::new();
//! headers.insert("content-type", "application/json".parse()?);
//! let req = classify("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", &headers)?;
//! assert_eq!(access_review::answers(&req.attributes), Some(Review::Access));
//!
//! let body = br#"{"kind":"SelfSubjectAccessReview","apiVersion":"authorization.k8s.io/v1",
//!   "spec":{"resourceAttributes":{"namespace":"prod","verb":"list","resource":"pods"}}}"#;
//! let agent = Identity::new("agent-1", ["ai-agents"]);
//! let answered = access_review::answer(&policy, &agent, &req, body).map_err(|s| format!("{s:?}"))?;
//! assert_eq!(answered.object["status"]["allowed"], false);
//! assert_eq!(answered.object["status"]["denied"], true);
//! assert!(answered.object["status"]["reason"].as_str().unwrap().contains("no rule allows list on pods in namespace prod"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use serde_json::{Map, Value, json};

use crate::body::{self, BodyLimits};
use crate::policy::{AccessAnswer, Effect, Identity, Policy};
use crate::request::{Attributes, Request};
use crate::status::Status;

const GROUP: &str = "authorization.k8s.io";

/// Which review a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Review {
    /// A SelfSubjectAccessReview: may I do this?
    Access,
    /// A SelfSubjectRulesReview: what may I do in this namespace?
    Rules,
    /// A SelfSubjectReview (`kubectl auth whoami`): who am I? Forwarded, it would name the
    /// operator's credential (its user, groups and credential id).
    Whoami,
}

impl Review {
    fn kind(self) -> &'static str {
        match self {
            Review::Access => "SelfSubjectAccessReview",
            Review::Rules => "SelfSubjectRulesReview",
            Review::Whoami => "SelfSubjectReview",
        }
    }

    fn group(self) -> &'static str {
        match self {
            Review::Whoami => "authentication.k8s.io",
            _ => GROUP,
        }
    }
}

/// Whether kubeleash answers this request itself: a `create` of `selfsubjectaccessreviews` or
/// `selfsubjectrulesreviews` in `authorization.k8s.io/v1`, or of `selfsubjectreviews` in
/// `authentication.k8s.io/v1` (`kubectl auth whoami`), without a name, namespace or
/// subresource. Other versions are not served by current API servers and are left to them.
pub fn answers(a: &Attributes) -> Option<Review> {
    if !a.resource_request
        || a.verb != "create"
        || a.api_version != "v1"
        || !a.subresource.is_empty()
        || !a.name.is_empty()
        || !a.namespace.is_empty()
    {
        return None;
    }
    match (a.api_group.as_str(), a.resource.as_str()) {
        (GROUP, "selfsubjectaccessreviews") => Some(Review::Access),
        (GROUP, "selfsubjectrulesreviews") => Some(Review::Rules),
        ("authentication.k8s.io", "selfsubjectreviews") => Some(Review::Whoami),
        _ => None,
    }
}

/// A review answered from the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    /// Which review it was.
    pub review: Review,
    /// The review object to send back with `201 Created`: the request's own object with its
    /// `status` filled in.
    pub object: Value,
    /// For an access review: the attributes asked about and the policy's answer.
    pub access: Option<(Attributes, AccessAnswer)>,
}

impl Answered {
    /// The answer in one line, for the record: `yes`, `no`, or `approval`, then the reason.
    pub fn summary(&self) -> String {
        let status = &self.object["status"];
        match self.review {
            Review::Access => format!(
                "{}: {}",
                if status["allowed"] == true {
                    "yes"
                } else {
                    "no"
                },
                status["reason"].as_str().unwrap_or_default()
            ),
            Review::Whoami => "the agent's own identity".to_string(),
            Review::Rules => format!(
                "{} resource rules, {} non-resource rules{}",
                status["resourceRules"].as_array().map_or(0, Vec::len),
                status["nonResourceRules"].as_array().map_or(0, Vec::len),
                if status["incomplete"] == true {
                    " (incomplete: the policy does more than RBAC rules can list)"
                } else {
                    ""
                }
            ),
        }
    }

    /// Whether this answer should be checked against what the cluster credential may do: an
    /// access review that the policy allows. (Not one it holds for approval: asking the API
    /// server about those would let an agent map the credential's RBAC, with a catch-all
    /// `approve` rule, without any person seeing a thing.)
    pub fn needs_server_check(&self) -> bool {
        self.access
            .as_ref()
            .is_some_and(|(_, a)| a.effect == Effect::Allow)
    }

    /// Narrow an access review's answer by the API server's answer to the same review sent with
    /// kubeleash's own credential (`server_status`: that answer's `status`; `None` when it
    /// could not be had). What the credential may not do, the agent may not either, whatever the
    /// policy says. The server's reason is not passed on: it names the credential's bindings,
    /// which are the operator's, not the agent's.
    pub fn narrow_by_server(&mut self, server_status: Option<&Value>) {
        if !self.needs_server_check() {
            return;
        }
        let Some(status) = self.object.get_mut("status").and_then(Value::as_object_mut) else {
            return;
        };
        match server_status
            .and_then(|s| s.get("allowed"))
            .and_then(Value::as_bool)
        {
            Some(true) => {}
            Some(false) => {
                status.insert("allowed".into(), Value::Bool(false));
                let reason = status
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                status.insert(
                    "reason".into(),
                    Value::String(format!(
                        "{reason}; but the cluster credential kubeleash holds may not do it \
                         (the API server said no), so the request would fail there"
                    )),
                );
            }
            None => {
                status.insert(
                    "evaluationError".into(),
                    Value::String(
                        "kubeleash could not ask the API server whether its cluster credential \
                         may do it; the answer is the policy's alone"
                            .into(),
                    ),
                );
            }
        }
    }
}

/// Answer a review from the policy. `request` is the classified POST (for which [`answers`] is
/// `Some`), `body` its body as sent. An error is the `Status` the API server would answer the
/// same malformed review with.
pub fn answer(
    policy: &Policy,
    identity: &Identity,
    request: &Request,
    body: &[u8],
) -> Result<Answered, Status> {
    let Some(review) = answers(&request.attributes) else {
        return Err(Status::failure(
            404,
            "NotFound",
            "kubeleash answers only SelfSubjectAccessReview, SelfSubjectRulesReview and SelfSubjectReview",
        ));
    };
    let decoded = body::decode(request, body, &BodyLimits::default())
        .map_err(|e| Status::failure(400, "BadRequest", &format!("request body refused: {e}")))?;
    let Some(Value::Object(sent)) = decoded.map(|d| d.value) else {
        return Err(Status::failure(
            400,
            "BadRequest",
            &format!("the {} has no body", review.kind()),
        ));
    };
    match sent.get("kind").and_then(Value::as_str) {
        None | Some("") => {}
        Some(k) if k == review.kind() => {}
        Some(other) => {
            return Err(Status::failure(
                400,
                "BadRequest",
                &format!(
                    "the object provided is unrecognized (must be of type {}): kind \"{other}\"",
                    review.kind()
                ),
            ));
        }
    }
    // The answer carries what the API server's would: the kind, the question as kubeleash read
    // it (known fields only, as the API server drops the rest) and the status; nothing else
    // the agent sent comes back, or goes to the record.
    let mut object = Map::new();
    object.insert("kind".into(), json!(review.kind()));
    object.insert(
        "apiVersion".into(),
        json!(format!(
            "{}/{}",
            review.group(),
            request.attributes.api_version
        )),
    );
    object.insert("metadata".into(), json!({}));
    let spec = sent
        .get("spec")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let (status, access) = match review {
        Review::Access => {
            let attributes = attributes_of(&spec)?;
            object.insert("spec".into(), spec_of(&attributes));
            let itself = answers(&Attributes {
                resource_request: true,
                api_version: "v1".into(),
                ..attributes.clone()
            });
            let a = if attributes.resource_request && itself.is_some() {
                // Asking whether it may ask: always; kubeleash answers these itself.
                AccessAnswer {
                    allowed: true,
                    denied: false,
                    effect: Effect::Allow,
                    rule: None,
                    conditional: Vec::new(),
                    reason: "kubeleash answers the agent's own access and identity reviews itself"
                        .into(),
                }
            } else {
                policy.review_access(identity, &attributes)
            };
            let mut status = Map::new();
            status.insert("allowed".into(), json!(a.allowed));
            if a.denied {
                status.insert("denied".into(), json!(true));
            }
            status.insert("reason".into(), json!(a.reason));
            (Value::Object(status), Some((attributes, a)))
        }
        Review::Whoami => {
            object.insert("spec".into(), json!({}));
            (
                json!({"userInfo": {"username": identity.user, "groups": identity.groups}}),
                None,
            )
        }
        Review::Rules => {
            let namespace = spec
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if namespace.is_empty() {
                return Err(Status::failure(
                    400,
                    "BadRequest",
                    "no namespace on request",
                ));
            }
            object.insert("spec".into(), json!({"namespace": namespace}));
            let mut r = policy.review_rules(identity, namespace);
            r.notes.push(
                "what kubeleash's own cluster credential may do is not subtracted from these \
                 lists; `kubectl auth can-i VERB RESOURCE` checks both"
                    .into(),
            );
            let mut status = json!({
                "resourceRules": r.resource_rules,
                "nonResourceRules": r.non_resource_rules,
                "incomplete": r.incomplete(),
            });
            status["evaluationError"] = json!(r.evaluation_error());
            (status, None)
        }
    };
    object.insert("status".into(), status);
    Ok(Answered {
        review,
        object: Value::Object(object),
        access,
    })
}

/// The question as kubeleash read it, as a review's `spec` (empty fields left out, as the API
/// server writes them).
fn spec_of(a: &Attributes) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            m.insert(k.into(), json!(v));
        }
    };
    if a.resource_request {
        put("namespace", &a.namespace);
        put("verb", &a.verb);
        put("group", &a.api_group);
        put("version", &a.api_version);
        put("resource", &a.resource);
        put("subresource", &a.subresource);
        put("name", &a.name);
        json!({"resourceAttributes": m})
    } else {
        put("path", &a.path);
        put("verb", &a.verb);
        json!({"nonResourceAttributes": m})
    }
}

/// The attributes an access review asks about, read as the API server reads them: exactly one
/// of `resourceAttributes` and `nonResourceAttributes`.
fn attributes_of(spec: &Map<String, Value>) -> Result<Attributes, Status> {
    let present = |k: &str| spec.get(k).filter(|v| v.is_object());
    let field = |o: &Value, k: &str| {
        o.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    match (
        present("resourceAttributes"),
        present("nonResourceAttributes"),
    ) {
        (Some(r), None) => Ok(Attributes {
            resource_request: true,
            verb: field(r, "verb"),
            api_group: field(r, "group"),
            api_version: field(r, "version"),
            namespace: field(r, "namespace"),
            resource: field(r, "resource"),
            subresource: field(r, "subresource"),
            name: field(r, "name"),
            path: String::new(),
        }),
        (None, Some(n)) => Ok(Attributes {
            resource_request: false,
            verb: field(n, "verb"),
            path: field(n, "path"),
            ..Attributes::default()
        }),
        (r, _) => Err(Status::failure(
            422,
            "Invalid",
            &format!(
                "SelfSubjectAccessReview.authorization.k8s.io \"\" is invalid: \
                 spec.resourceAttributes: Invalid value: \"{}\": exactly one of \
                 nonResourceAttributes or resourceAttributes must be specified",
                if r.is_some() { "object" } else { "null" }
            ),
        )),
    }
}

/// The kubectl command a review amounts to, from the review's body as JSON text (as a record
/// keeps it): `kubectl auth can-i VERB RESOURCE[.GROUP][/NAME] [--subresource S] [-n NS]`,
/// `kubectl auth can-i --list -n NS` or `kubectl auth whoami`; `None` when the request is not
/// a review kubeleash answers, or its body does not say the question.
///
/// ```
/// use kubeleash_core::access_review::kubectl_line;
/// use kubeleash_core::request::classify;
///
/// let req = classify("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", &http::HeaderMap::new())?;
/// let body = r#"{"spec":{"resourceAttributes":{"verb":"create","group":"rbac.authorization.k8s.io","resource":"clusterrolebindings"}}}"#;
/// assert_eq!(kubectl_line(&req, Some(body)).as_deref(), Some("kubectl auth can-i create clusterrolebindings.rbac.authorization.k8s.io"));
/// # Ok::<(), kubeleash_core::request::NonCanonical>(())
/// ```
pub fn kubectl_line(request: &Request, body: Option<&str>) -> Option<String> {
    use crate::display::shell_word;
    let review = answers(&request.attributes)?;
    if review == Review::Whoami {
        return Some("kubectl auth whoami".into());
    }
    let v: Value = serde_json::from_str(body?).ok()?;
    let spec = v.get("spec")?.as_object()?;
    if review == Review::Rules {
        let ns = spec.get("namespace")?.as_str()?;
        return Some(format!("kubectl auth can-i --list -n {}", shell_word(ns)));
    }
    let a = attributes_of(spec).ok()?;
    let mut line = format!("kubectl auth can-i {}", shell_word(&a.verb));
    if !a.resource_request {
        line.push(' ');
        line.push_str(&shell_word(&a.path));
        return Some(line);
    }
    let mut what = a.resource.clone();
    if !a.api_group.is_empty() {
        what = format!("{what}.{}", a.api_group);
    }
    if !a.name.is_empty() {
        what = format!("{what}/{}", a.name);
    }
    line.push(' ');
    line.push_str(&shell_word(&what));
    if !a.subresource.is_empty() {
        line.push_str(" --subresource ");
        line.push_str(&shell_word(&a.subresource));
    }
    if !a.namespace.is_empty() {
        line.push_str(" -n ");
        line.push_str(&shell_word(&a.namespace));
    }
    Some(line)
}
