//! Workloads shared by the benches: a realistic agent policy of any size and a request mix.

use kubeleash_core::policy::Identity;

/// The example policy's rules, kept as the head of every generated policy.
const HEAD: &str = include_str!("../../examples/agents.yaml");

/// A policy of about `rules` rules shaped like a real multi-team deployment: every team has its
/// own agents group and namespaces, reads there, deploys there, needs a human for its secrets and
/// may not run privileged pods; shared rules protect the system namespaces.
pub fn policy_yaml(rules: usize) -> String {
    let head_rules = HEAD.split("\n  tests:").next().unwrap_or(HEAD);
    let mut out = head_rules.to_string();
    let base = 10;
    let teams = rules.saturating_sub(base) / 5;
    for t in 0..teams {
        out.push_str(&format!(
            r#"
    - {{name: team-{t}-read, effect: allow, subjects: {{groups: [team-{t}-agents]}}, verbs: [get, list, watch], apiGroups: ["", apps, batch], resources: [pods, pods/log, deployments, services, configmaps, jobs], namespaces: [team-{t}, "team-{t}-*"]}}
    - {{name: team-{t}-deploy, effect: allow, subjects: {{groups: [team-{t}-agents]}}, verbs: [create, update, patch], apiGroups: [apps], resources: [deployments, deployments/scale], namespaces: [team-{t}]}}
    - {{name: team-{t}-pods, effect: allow, subjects: {{groups: [team-{t}-agents]}}, verbs: [create, delete], apiGroups: [""], resources: [pods], namespaces: [team-{t}]}}
    - {{name: team-{t}-secrets, effect: approve, subjects: {{groups: [team-{t}-agents]}}, verbs: [get], apiGroups: [""], resources: [secrets], namespaces: [team-{t}]}}
    - {{name: team-{t}-no-root, effect: deny, verbs: [create, update], apiGroups: [""], resources: [pods], namespaces: [team-{t}], when: [{{path: "$.spec.securityContext.runAsUser", equals: 0}}]}}"#
        ));
    }
    out.push('\n');
    out
}

/// One request of the mix: who sends it, and what.
pub struct Req {
    /// The sender.
    pub identity: Identity,
    /// HTTP method.
    pub method: &'static str,
    /// Request target.
    pub target: String,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body, if any.
    pub body: Option<Vec<u8>>,
}

/// The same mix of agent requests for every policy size: reads, watches, writes with and
/// without bodies, a secret read held for approval, and refusals (exec, kube-system, default deny).
pub fn request_mix(rules: usize) -> Vec<Req> {
    let teams = (rules.saturating_sub(10) / 5).max(1);
    let t = teams / 2;
    let team =
        |user: &str| Identity::new(user, [format!("team-{t}-agents"), "ai-agents".to_string()]);
    let json = {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        h
    };
    let none = http::HeaderMap::new;
    let ns = format!("team-{t}");
    vec![
        Req { identity: team("agent"), method: "GET", target: format!("/api/v1/namespaces/{ns}/pods?limit=500"), headers: none(), body: None },
        Req { identity: team("agent"), method: "GET", target: format!("/api/v1/namespaces/{ns}/pods/web-1"), headers: none(), body: None },
        Req { identity: team("agent"), method: "GET", target: format!("/api/v1/namespaces/{ns}/pods?watch=1&resourceVersion=10"), headers: none(), body: None },
        Req { identity: team("agent"), method: "GET", target: format!("/api/v1/namespaces/{ns}/pods/web-1/log?follow=true&container=app"), headers: none(), body: None },
        Req { identity: team("agent"), method: "GET", target: format!("/apis/apps/v1/namespaces/{ns}-staging/deployments"), headers: none(), body: None },
        Req { identity: team("agent"), method: "PATCH", target: format!("/apis/apps/v1/namespaces/{ns}/deployments/web/scale"), headers: none(), body: None },
        Req { identity: team("agent"), method: "GET", target: format!("/api/v1/namespaces/{ns}/secrets/db"), headers: none(), body: None },
        Req { identity: team("agent"), method: "POST", target: format!("/api/v1/namespaces/{ns}/pods/web-1/exec?command=sh&stdin=true"), headers: none(), body: None },
        Req { identity: team("agent"), method: "DELETE", target: "/api/v1/namespaces/kube-system".into(), headers: none(), body: None },
        Req { identity: team("agent"), method: "GET", target: "/api/v1/namespaces/prod/configmaps".into(), headers: none(), body: None },
        Req { identity: team("agent"), method: "GET", target: "/version".into(), headers: none(), body: None },
        Req {
            identity: team("agent"),
            method: "POST",
            target: format!("/api/v1/namespaces/{ns}/pods"),
            headers: json,
            body: Some(br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"securityContext":{"runAsUser":1000},"containers":[{"name":"a","image":"nginx"}]}}"#.to_vec()),
        },
    ]
}
