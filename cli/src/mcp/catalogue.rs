//! The tools, and which of them an identity sees. A tool is listed when some rule of the policy
//! that applies to the identity allows or holds a request the tool can send (one of its verbs,
//! on one of the resources it works on; in observe mode, every tool: nothing is refused); its description says where the policy allows it and
//! where a person must approve, so an agent plans with the leash it has.

use std::sync::Arc;

use kubeleash_core::policy::{Effect, Identity, Policy, RuleReach};
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

/// One tool, as written here.
pub struct Spec {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    /// The verbs of the requests it sends; empty: listed whatever the policy (`can_i`,
    /// answered by kubeleash itself) or as discovery is allowed (`api_resources`).
    pub verbs: &'static [&'static str],
    /// The (group, resource) its requests can go to; empty: any resource (not a subresource).
    pub targets: &'static [(&'static str, &'static str)],
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    /// The input schema's `properties`, and which are required.
    pub properties: fn() -> Value,
    pub required: &'static [&'static str],
}

fn resource() -> Value {
    json!({"type": "string", "description": "The resource type as kubectl takes it: plural, singular, kind or short name (pods, pod, Pod, po, deploy), optionally with its group (deployments.apps)."})
}
fn name() -> Value {
    json!({"type": "string", "description": "The object's name."})
}
fn namespace() -> Value {
    json!({"type": "string", "description": "The namespace; the session's default namespace when omitted. Ignored for cluster-scoped resources."})
}
fn api_version() -> Value {
    json!({"type": "string", "description": "Only this group/version (apps/v1), when several serve the same name."})
}
fn reason() -> Value {
    json!({"type": "string", "description": "Why you are doing this, in a sentence: shown to the person asked to approve, when the policy holds the request."})
}

/// Every tool, in the order they are listed.
pub const TOOLS: &[Spec] = &[
    Spec {
        name: "get",
        title: "Get an object",
        description: "Read one Kubernetes object (any resource, custom resources included), as `kubectl get RESOURCE NAME -o json`. Secret values and credentials come back masked.",
        verbs: &["get"],
        targets: &[],
        read_only: true,
        destructive: false,
        idempotent: true,
        properties: || json!({"resource": resource(), "name": name(), "namespace": namespace(), "apiVersion": api_version()}),
        required: &["resource", "name"],
    },
    Spec {
        name: "list",
        title: "List objects",
        description: "List Kubernetes objects of one resource type, as `kubectl get RESOURCE -o json`, with label and field selectors, in one namespace or all. Secret values come back masked. Large lists come in pages: pass the returned `continue` token to get the next.",
        verbs: &["list"],
        targets: &[],
        read_only: true,
        destructive: false,
        idempotent: true,
        properties: || {
            json!({
                "resource": resource(),
                "namespace": namespace(),
                "allNamespaces": {"type": "boolean", "description": "List across all namespaces."},
                "labelSelector": {"type": "string", "description": "A label selector (app=web,tier!=db)."},
                "fieldSelector": {"type": "string", "description": "A field selector (status.phase=Running)."},
                "limit": {"type": "integer", "minimum": 1, "maximum": 5000, "description": "At most this many items (default 500)."},
                "continue": {"type": "string", "description": "The `continue` token of the previous page."},
                "apiVersion": api_version(),
            })
        },
        required: &["resource"],
    },
    Spec {
        name: "events",
        title: "Events of an object",
        description: "The events about one object, newest last, as `kubectl describe` shows them; or every event in the namespace when no name is given.",
        verbs: &["list"],
        targets: &[("", "events"), ("events.k8s.io", "events")],
        read_only: true,
        destructive: false,
        idempotent: true,
        properties: || {
            json!({
                "resource": {"type": "string", "description": "The object's resource type (pod, deployment, ...); any kind when omitted."},
                "name": {"type": "string", "description": "The object's name; every event in the namespace when omitted."},
                "namespace": namespace(),
            })
        },
        required: &[],
    },
    Spec {
        name: "logs",
        title: "Pod logs",
        description: "A pod's log, as `kubectl logs`: the last lines, since a time, one container, or the previous run. Tokens and keys in the log come back masked.",
        verbs: &["get"],
        targets: &[("", "pods/log")],
        read_only: true,
        destructive: false,
        idempotent: true,
        properties: || {
            json!({
                "name": {"type": "string", "description": "The pod's name."},
                "namespace": namespace(),
                "container": {"type": "string", "description": "The container (required when the pod has several)."},
                "tailLines": {"type": "integer", "minimum": 1, "maximum": 100000, "description": "Only the last lines (default 500)."},
                "sinceSeconds": {"type": "integer", "minimum": 1, "description": "Only lines newer than this."},
                "previous": {"type": "boolean", "description": "The previous, terminated run of the container."},
            })
        },
        required: &["name"],
    },
    Spec {
        name: "apply",
        title: "Apply a manifest",
        description: "Create or update objects from a YAML or JSON manifest (one or more documents) by server-side apply, as `kubectl apply --server-side`. With dryRun the API server checks it and changes nothing.",
        // Server-side apply is a PATCH, whether the object exists or not.
        verbs: &["patch"],
        targets: &[],
        read_only: false,
        destructive: true,
        idempotent: true,
        properties: || {
            json!({
                "manifest": {"type": "string", "description": "The objects, YAML or JSON; several YAML documents separated by `---`."},
                "namespace": namespace(),
                "dryRun": {"type": "boolean", "description": "Only check it (dryRun=All)."},
                "force": {"type": "boolean", "description": "Take over fields another manager owns (--force-conflicts)."},
                "reason": reason(),
            })
        },
        required: &["manifest"],
    },
    Spec {
        name: "patch",
        title: "Patch an object",
        description: "Change fields of one object, as `kubectl patch`: a JSON merge patch, a strategic merge patch, or a JSON patch (RFC 6902).",
        verbs: &["patch"],
        targets: &[],
        read_only: false,
        destructive: true,
        idempotent: false,
        properties: || {
            json!({
                "resource": resource(),
                "name": name(),
                "namespace": namespace(),
                "patch": {"description": "The patch: a JSON object (merge, strategic) or array (json), or its text."},
                "type": {"type": "string", "enum": ["merge", "strategic", "json"], "description": "The patch type (default strategic, as kubectl's)."},
                "apiVersion": api_version(),
                "reason": reason(),
            })
        },
        required: &["resource", "name", "patch"],
    },
    Spec {
        name: "delete",
        title: "Delete an object",
        description: "Delete one object, as `kubectl delete RESOURCE NAME`.",
        verbs: &["delete"],
        targets: &[],
        read_only: false,
        destructive: true,
        idempotent: true,
        properties: || json!({"resource": resource(), "name": name(), "namespace": namespace(), "apiVersion": api_version(), "reason": reason()}),
        required: &["resource", "name"],
    },
    Spec {
        name: "scale",
        title: "Scale a workload",
        description: "Set the replicas of a deployment, replica set, stateful set (or any resource with a scale subresource), as `kubectl scale`.",
        verbs: &["patch", "update"],
        targets: &[
            ("apps", "deployments/scale"),
            ("apps", "replicasets/scale"),
            ("apps", "statefulsets/scale"),
            ("", "replicationcontrollers/scale"),
        ],
        read_only: false,
        destructive: true,
        idempotent: true,
        properties: || {
            json!({
                "resource": resource(),
                "name": name(),
                "namespace": namespace(),
                "replicas": {"type": "integer", "minimum": 0, "maximum": 100000},
                "reason": reason(),
            })
        },
        required: &["resource", "name", "replicas"],
    },
    Spec {
        name: "rollout_restart",
        title: "Restart a rollout",
        description: "Restart the pods of a deployment, daemon set or stateful set, as `kubectl rollout restart`.",
        verbs: &["patch"],
        targets: &[
            ("apps", "deployments"),
            ("apps", "daemonsets"),
            ("apps", "statefulsets"),
        ],
        read_only: false,
        destructive: true,
        idempotent: false,
        properties: || {
            json!({
                "resource": resource(),
                "name": name(),
                "namespace": namespace(),
                "restartedAt": {"type": "string", "description": "The restart's time (2026-12-05T16:20:49Z; default now). When a call was held for approval, make it again with the time it used, so that it is the identical request."},
                "reason": reason(),
            })
        },
        required: &["resource", "name"],
    },
    Spec {
        name: "can_i",
        title: "Ask what you may do",
        description: "Ask kubeleash whether a request would be allowed, denied, or held for a person's approval, and by which rule, as `kubectl auth can-i`. Nothing is done.",
        verbs: &[],
        targets: &[],
        read_only: true,
        destructive: false,
        idempotent: true,
        properties: || {
            json!({
                "verb": {"type": "string", "description": "get, list, watch, create, update, patch, delete, ..."},
                "resource": resource(),
                "namespace": namespace(),
                "name": name(),
                "subresource": {"type": "string", "description": "log, exec, scale, status, ..."},
                "apiGroup": {"type": "string", "description": "The resource's API group (apps, rbac.authorization.k8s.io); found by its name when omitted."},
            })
        },
        required: &["verb", "resource"],
    },
    Spec {
        name: "api_resources",
        title: "API resources",
        description: "The resource types the cluster serves (custom resources included), with their short names, kinds, scope and verbs, as `kubectl api-resources`.",
        verbs: &[],
        targets: &[],
        read_only: true,
        destructive: false,
        idempotent: true,
        properties: || json!({}),
        required: &[],
    },
];

/// The tool named `name`.
pub fn find(name: &str) -> Option<&'static Spec> {
    TOOLS.iter().find(|t| t.name == name)
}

/// Whether `identity` can ever get a request of `spec`'s through (observe mode: always).
pub fn usable(spec: &Spec, reach: &[RuleReach], observe: bool) -> bool {
    observe || spec.verbs.is_empty() || reach.iter().any(|r| r.lets_through() && applies(spec, r))
}

/// Whether rule `r` covers some request of `spec`'s.
fn applies(spec: &Spec, r: &RuleReach) -> bool {
    spec.verbs.iter().any(|v| r.covers_verb(v))
        && (if spec.targets.is_empty() {
            // Any resource, but no subresource: these tools read and write objects.
            r.resources.iter().any(|x| !x.contains('/'))
        } else {
            spec.targets
                .iter()
                .any(|(group, resource)| r.covers_resource(group, resource))
        })
}

/// Whether the policy lets `identity` read the API's discovery documents (`GET /apis`), which
/// `api_resources` shows and every tool that takes a resource name needs.
fn discovers(policy: &Policy, identity: &Identity) -> bool {
    kubeleash_core::request::classify("GET", "/apis", &http::HeaderMap::new())
        .is_ok_and(|r| policy.decide(identity, &r, None).effect != Effect::Deny)
}

/// The tools `identity` sees under `policy`, their descriptions saying what the policy does.
pub fn listed(policy: &Policy, identity: &Identity, observe: bool) -> Vec<Tool> {
    let reach = policy.reach(identity);
    let discovery = observe || discovers(policy, identity);
    TOOLS
        .iter()
        .filter(|t| usable(t, &reach, observe))
        .filter(|t| t.name != "api_resources" || discovery)
        .map(|t| tool(t, &reach, observe))
        .collect()
}

fn tool(spec: &Spec, reach: &[RuleReach], observe: bool) -> Tool {
    let mut description = spec.description.to_string();
    if observe {
        description.push_str(
            " kubeleash observes this session: what its policy would refuse is recorded, not refused.",
        );
    } else if !spec.verbs.is_empty() {
        let said: Vec<(&str, &str)> = reach
            .iter()
            .filter(|r| applies(spec, r))
            .map(|r| {
                let when = match r.effect {
                    Effect::Allow => "Allowed",
                    Effect::Approve => "Needs a person's approval",
                    Effect::Deny => "Refused",
                };
                (when, r.sentence.as_str())
            })
            .collect();
        if !said.is_empty() {
            description.push_str(" The policy says, for you:");
            for (when, sentence) in said {
                description.push_str(&format!(" {when}: {sentence}."));
            }
            description.push_str(" Anything else is refused.");
        }
    }
    let mut schema = JsonObject::new();
    schema.insert("type".into(), json!("object"));
    schema.insert("properties".into(), (spec.properties)());
    schema.insert("required".into(), json!(spec.required));
    schema.insert("additionalProperties".into(), json!(false));
    let annotations = ToolAnnotations::with_title(spec.title)
        .read_only(spec.read_only)
        .destructive(spec.destructive)
        .idempotent(spec.idempotent)
        .open_world(false);
    Tool::new(spec.name, description, Arc::new(schema)).annotate(annotations)
}
