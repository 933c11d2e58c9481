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

/// A SecretList of `n` realistic Secrets, serialized as the API server does (compact, kind
/// first, items without their own kind).
pub fn secret_list(n: usize) -> Vec<u8> {
    let mut s = String::from(
        r#"{"kind":"SecretList","apiVersion":"v1","metadata":{"resourceVersion":"918273"},"items":["#,
    );
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"metadata":{{"name":"app-{i}-credentials","namespace":"team-{ns}","uid":"6f1c2a3b-{i:04x}-4c5d-8e9f-0a1b2c3d4e5f","resourceVersion":"{rv}","creationTimestamp":"2026-11-20T10:{m:02}:00Z","labels":{{"app.kubernetes.io/name":"app-{i}","app.kubernetes.io/managed-by":"helm"}},"managedFields":[{{"manager":"helm","operation":"Update","apiVersion":"v1","time":"2026-11-20T10:00:00Z","fieldsType":"FieldsV1","fieldsV1":{{"f:data":{{".":{{}},"f:password":{{}},"f:username":{{}},"f:url":{{}}}},"f:type":{{}}}}}}]}},"data":{{"password":"{pw}","username":"YXBwLXVzZXI=","url":"cG9zdGdyZXM6Ly9hcHAtdXNlckBkYi5pbnRlcm5hbDo1NDMyL2FwcA=="}},"type":"Opaque"}}"#,
            ns = i % 17,
            rv = 100_000 + i,
            m = i % 60,
            pw = "c3VwZXItc2VjcmV0LXBhc3N3b3JkLXZhbHVlLTEyMzQ1Njc4OTA=",
        ));
    }
    s.push_str("]}");
    s.into_bytes()
}

fn pod_json(i: usize, with_kind: bool) -> String {
    let kind = if with_kind {
        r#""kind":"Pod","apiVersion":"v1","#
    } else {
        ""
    };
    format!(
        r#"{{{kind}"metadata":{{"name":"web-{i}-7d9f8c6b5-x{i:05}","generateName":"web-{i}-7d9f8c6b5-","namespace":"team-{ns}","uid":"a1b2c3d4-{i:04x}-4e5f-8a9b-0c1d2e3f4a5b","resourceVersion":"{rv}","creationTimestamp":"2026-11-20T10:00:00Z","labels":{{"app":"web","pod-template-hash":"7d9f8c6b5"}},"ownerReferences":[{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-{i}-7d9f8c6b5","uid":"0a1b2c3d-0000-4e5f-8a9b-0c1d2e3f4a5b","controller":true,"blockOwnerDeletion":true}}]}},"spec":{{"volumes":[{{"name":"kube-api-access-x{i:03}","projected":{{"sources":[{{"serviceAccountToken":{{"expirationSeconds":3607,"path":"token"}}}},{{"configMap":{{"name":"kube-root-ca.crt","items":[{{"key":"ca.crt","path":"ca.crt"}}]}}}}],"defaultMode":420}}}}],"containers":[{{"name":"web","image":"registry.example.com/team/web:1.{i}","ports":[{{"containerPort":8080,"protocol":"TCP"}}],"env":[{{"name":"LOG_LEVEL","value":"info"}},{{"name":"DATABASE_PASSWORD","value":"hunter2-{i}"}},{{"name":"FEATURE_FLAGS","value":"a,b,c"}},{{"name":"API_TOKEN","valueFrom":{{"secretKeyRef":{{"name":"api","key":"token"}}}}}}],"resources":{{"limits":{{"cpu":"500m","memory":"256Mi"}},"requests":{{"cpu":"100m","memory":"128Mi"}}}},"volumeMounts":[{{"name":"kube-api-access-x{i:03}","readOnly":true,"mountPath":"/var/run/secrets/kubernetes.io/serviceaccount"}}],"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"IfNotPresent"}}],"restartPolicy":"Always","terminationGracePeriodSeconds":30,"dnsPolicy":"ClusterFirst","serviceAccountName":"default","serviceAccount":"default","nodeName":"node-{node}","securityContext":{{}},"schedulerName":"default-scheduler","tolerations":[{{"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}}],"priority":0,"enableServiceLinks":true,"preemptionPolicy":"PreemptLowerPriority"}},"status":{{"phase":"Running","conditions":[{{"type":"Ready","status":"True","lastProbeTime":null,"lastTransitionTime":"2026-11-20T10:00:05Z"}}],"hostIP":"10.0.0.{node}","podIP":"10.244.{node}.{ip}","startTime":"2026-11-20T10:00:00Z","containerStatuses":[{{"name":"web","state":{{"running":{{"startedAt":"2026-11-20T10:00:04Z"}}}},"ready":true,"restartCount":0,"image":"registry.example.com/team/web:1.{i}","imageID":"registry.example.com/team/web@sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945","containerID":"containerd://3b1f0c{i:06}","started":true}}],"qosClass":"Burstable"}}}}"#,
        ns = i % 17,
        rv = 200_000 + i,
        node = i % 50,
        ip = i % 250,
    )
}

/// A PodList of `n` realistic pods (about 3 KiB each), with credential-named env values.
pub fn pod_list(n: usize) -> Vec<u8> {
    let mut s = String::from(
        r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"918273"},"items":["#,
    );
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&pod_json(i, false));
    }
    s.push_str("]}");
    s.into_bytes()
}

/// A watch stream of `n` MODIFIED pod events, newline-delimited.
pub fn pod_watch(n: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(r#"{"type":"MODIFIED","object":"#);
        s.push_str(&pod_json(i, true));
        s.push_str("}\n");
    }
    s.into_bytes()
}

/// An EventList: a kind no built-in mask touches (only detectors and the annotation rule run).
pub fn event_list(n: usize) -> Vec<u8> {
    let mut s = String::from(
        r#"{"kind":"EventList","apiVersion":"v1","metadata":{"resourceVersion":"918273"},"items":["#,
    );
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"metadata":{{"name":"web-{i}.17a2b3c4d5e6f7a8","namespace":"team-{ns}","uid":"b2c3d4e5-{i:04x}-4f5a-9b0c-1d2e3f4a5b6c","resourceVersion":"{rv}","creationTimestamp":"2026-11-20T10:00:00Z"}},"involvedObject":{{"kind":"Pod","namespace":"team-{ns}","name":"web-{i}-7d9f8c6b5-x{i:05}","uid":"a1b2c3d4-{i:04x}-4e5f-8a9b-0c1d2e3f4a5b","apiVersion":"v1","resourceVersion":"{rv}","fieldPath":"spec.containers{{web}}"}},"reason":"Pulled","message":"Successfully pulled image \"registry.example.com/team/web:1.{i}\" in 1.2s (1.2s including waiting). Image size: 52428800 bytes.","source":{{"component":"kubelet","host":"node-{node}"}},"firstTimestamp":"2026-11-20T10:00:02Z","lastTimestamp":"2026-11-20T10:00:02Z","count":1,"type":"Normal","eventTime":null,"reportingComponent":"kubelet","reportingInstance":"node-{node}"}}"#,
            ns = i % 17,
            rv = 300_000 + i,
            node = i % 50,
        ));
    }
    s.push_str("]}");
    s.into_bytes()
}

/// The masks of a policy that turns every built-in mask and every detector off: what issue 15
/// asks to run at least as fast as validation (the masker still reads and checks the JSON).
pub fn masks_off() -> Result<std::sync::Arc<kubeleash_core::mask::MaskSet>, String> {
    let yaml = format!(
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nmetadata: {{name: masks-off}}\nspec:\n  rules: []\n  masks:\n    disable: [{}, detectors]\n",
        kubeleash_core::mask::BUILTIN_MASKS.join(", ")
    );
    let policy = kubeleash_core::policy::Policy::from_yaml(&yaml).map_err(|e| e.to_string())?;
    Ok(std::sync::Arc::clone(policy.mask_set()))
}

/// The baseline: what a gateway built on serde_json does. Parse, replace Secret data and
/// credential env values, serialize.
pub fn serde_json_mask(input: &[u8]) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(input).ok()?;
    mask_value(&mut v);
    serde_json::to_vec(&v).ok()
}

/// The baselines' mask over a parsed document: Secret `data` values and credential-named env
/// values replaced (what [`serde_json_mask`] and the sonic-rs baseline do between parse and
/// serialize).
pub fn mask_value(v: &mut serde_json::Value) {
    fn walk(v: &mut serde_json::Value, secret: bool) {
        match v {
            serde_json::Value::Object(m) => {
                let is_secret = secret || m.get("kind").and_then(|k| k.as_str()) == Some("Secret");
                if is_secret && let Some(serde_json::Value::Object(data)) = m.get_mut("data") {
                    for val in data.values_mut() {
                        *val = serde_json::Value::String("W21hc2tlZF0=".into());
                    }
                }
                if let Some(serde_json::Value::Array(env)) = m.get_mut("env") {
                    for e in env {
                        let cred = e.get("name").and_then(|n| n.as_str()).is_some_and(|n| {
                            let n = n.to_ascii_lowercase();
                            ["password", "secret", "token", "key", "credential", "auth"]
                                .iter()
                                .any(|w| n.contains(w))
                        });
                        if cred && let Some(val) = e.get_mut("value") {
                            *val = serde_json::Value::String("[masked]".into());
                        }
                    }
                }
                let list_of_secrets = m.get("kind").and_then(|k| k.as_str()) == Some("SecretList");
                for (k, val) in m.iter_mut() {
                    walk(val, list_of_secrets && k == "items");
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| walk(x, secret)),
            _ => {}
        }
    }
    walk(v, false);
}
