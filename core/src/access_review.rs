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
}

impl Review {
    fn kind(self) -> &'static str {
        match self {
            Review::Access => "SelfSubjectAccessReview",
            Review::Rules => "SelfSubjectRulesReview",
        }
    }
}

/// Whether kubeleash answers this request itself: a `create` of `selfsubjectaccessreviews` or
/// `selfsubjectrulesreviews` in `authorization.k8s.io` (any version), without a subresource.
pub fn answers(a: &Attributes) -> Option<Review> {
    if !a.resource_request
        || a.verb != "create"
        || a.api_group != GROUP
        || !a.subresource.is_empty()
        || !a.name.is_empty()
        || !a.namespace.is_empty()
    {
        return None;
    }
    match a.resource.as_str() {
        "selfsubjectaccessreviews" => Some(Review::Access),
        "selfsubjectrulesreviews" => Some(Review::Rules),
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
    /// access review that the policy allows, or holds for approval (an approved request still
    /// has to pass the API server).
    pub fn needs_server_check(&self) -> bool {
        self.access
            .as_ref()
            .is_some_and(|(_, a)| a.effect != Effect::Deny)
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
            "kubeleash answers only SelfSubjectAccessReview and SelfSubjectRulesReview",
        ));
    };
    let decoded = body::decode(request, body, &BodyLimits::default())
        .map_err(|e| Status::failure(400, "BadRequest", &format!("request body refused: {e}")))?;
    let Some(Value::Object(mut object)) = decoded.map(|d| d.value) else {
        return Err(Status::failure(
            400,
            "BadRequest",
            &format!("the {} has no body", review.kind()),
        ));
    };
    let version = request.attributes.api_version.as_str();
    match object.get("kind").and_then(Value::as_str) {
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
    object.insert("kind".into(), json!(review.kind()));
    object.insert("apiVersion".into(), json!(format!("{GROUP}/{version}")));
    if !object.get("metadata").is_some_and(Value::is_object) {
        object.insert("metadata".into(), json!({}));
    }
    let spec = object
        .get("spec")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let (status, access) = match review {
        Review::Access => {
            let attributes = attributes_of(&spec)?;
            let a = policy.review_access(identity, &attributes);
            let mut status = Map::new();
            status.insert("allowed".into(), json!(a.allowed));
            if a.denied {
                status.insert("denied".into(), json!(true));
            }
            status.insert("reason".into(), json!(a.reason));
            (Value::Object(status), Some((attributes, a)))
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
