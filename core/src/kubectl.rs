//! The kubectl command a request amounts to, for people: approval prompts show it, and replay
//! prints a recorded session as a list of them. Where no kubectl command fits, the raw method and
//! target are given.
//!
//! ```
//! use kubeleash_core::{kubectl, request::classify};
//!
//! let req = classify("DELETE", "/api/v1/namespaces/prod", &http::HeaderMap::new())?;
//! assert_eq!(kubectl::command(&req), "kubectl delete namespace prod");
//! let req = classify("GET", "/api/v1/namespaces/dev/secrets", &http::HeaderMap::new())?;
//! assert_eq!(kubectl::command(&req), "kubectl get secrets -n dev -o yaml");
//! # Ok::<(), kubeleash_core::request::NonCanonical>(())
//! ```

use crate::request::{PatchType, Request};

/// Singular names kubectl users type for the common core and apps resources.
fn singular(resource: &str) -> &str {
    match resource {
        "namespaces" => "namespace",
        "pods" => "pod",
        "secrets" => "secret",
        "configmaps" => "configmap",
        "services" => "service",
        "serviceaccounts" => "serviceaccount",
        "deployments" => "deployment",
        "statefulsets" => "statefulset",
        "daemonsets" => "daemonset",
        "replicasets" => "replicaset",
        "jobs" => "job",
        "cronjobs" => "cronjob",
        "nodes" => "node",
        "roles" => "role",
        "rolebindings" => "rolebinding",
        "clusterroles" => "clusterrole",
        "clusterrolebindings" => "clusterrolebinding",
        "events" => "event",
        "ingresses" => "ingress",
        "persistentvolumeclaims" => "persistentvolumeclaim",
        "persistentvolumes" => "persistentvolume",
        other => other,
    }
}

/// Quote an argument for a POSIX shell when it needs it.
fn sh(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// The query parameter `key`'s first value, decoded.
fn query(target: &str, key: &str) -> Option<String> {
    let q = target.split_once('?')?.1;
    q.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| decode(v))
    })
}

fn queries(target: &str, key: &str) -> Vec<String> {
    let Some((_, q)) = target.split_once('?') else {
        return Vec::new();
    };
    q.split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then(|| decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(v) => {
                    out.push(v);
                    i += 3;
                    continue;
                }
                None => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The kubectl command `request` amounts to (the body, where there is one, goes on stdin: `-f -`).
pub fn command(request: &Request) -> String {
    let a = &request.attributes;
    let raw = || format!("{} {}", request.method, request.target);
    if !a.resource_request {
        return if a.verb == "get" {
            format!("kubectl get --raw {}", sh(&a.path))
        } else {
            raw()
        };
    }
    let mut kind = singular(&a.resource).to_string();
    if !a.api_group.is_empty() {
        kind = format!("{}.{}", a.resource, a.api_group);
    }
    let plural = if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        kind.clone()
    };
    let ns = if a.namespace.is_empty() || a.resource == "namespaces" {
        String::new()
    } else {
        format!(" -n {}", sh(&a.namespace))
    };
    let all_ns = a.namespace.is_empty()
        && a.resource != "namespaces"
        && matches!(a.verb.as_str(), "list" | "watch");
    let name = sh(&a.name);
    let dry = if request.facts.dry_run {
        " --dry-run=server"
    } else {
        ""
    };
    let cmd = match (a.verb.as_str(), a.subresource.as_str()) {
        ("get", "") => format!("kubectl get {kind} {name}{ns} -o yaml"),
        ("list", "") if !a.name.is_empty() => format!("kubectl get {kind} {name}{ns} -o yaml"),
        ("list", "") => {
            let sel = query(&request.target, "labelSelector")
                .map(|s| format!(" -l {}", sh(&s)))
                .unwrap_or_default();
            let scope = if all_ns {
                " -A".to_string()
            } else {
                ns.clone()
            };
            format!("kubectl get {plural}{scope}{sel} -o yaml")
        }
        ("watch", "") => {
            let scope = if all_ns {
                " -A".to_string()
            } else {
                ns.clone()
            };
            let what = if a.name.is_empty() {
                plural.clone()
            } else {
                format!("{kind} {name}")
            };
            format!("kubectl get {what}{scope} --watch")
        }
        ("get", "log") => {
            let mut c = format!("kubectl logs {name}{ns}");
            if let Some(container) = query(&request.target, "container") {
                c.push_str(&format!(" -c {}", sh(&container)));
            }
            if query(&request.target, "follow").is_some_and(|f| f == "true") {
                c.push_str(" -f");
            }
            if let Some(t) = query(&request.target, "tailLines") {
                c.push_str(&format!(" --tail={}", sh(&t)));
            }
            c
        }
        ("create", "exec") | ("get", "exec") => {
            let mut c = format!("kubectl exec {name}{ns}");
            let stdin = query(&request.target, "stdin").is_some_and(|v| v == "true");
            let tty = query(&request.target, "tty").is_some_and(|v| v == "true");
            match (stdin, tty) {
                (true, true) => c.push_str(" -it"),
                (true, false) => c.push_str(" -i"),
                (false, true) => c.push_str(" -t"),
                _ => {}
            }
            if let Some(container) = query(&request.target, "container") {
                c.push_str(&format!(" -c {}", sh(&container)));
            }
            let argv: Vec<String> = queries(&request.target, "command")
                .iter()
                .map(|x| sh(x))
                .collect();
            if !argv.is_empty() {
                c.push_str(" -- ");
                c.push_str(&argv.join(" "));
            }
            c
        }
        ("create", "attach") | ("get", "attach") => format!("kubectl attach {name}{ns} -it"),
        ("create", "portforward") | ("get", "portforward") => {
            format!("kubectl port-forward {name}{ns}")
        }
        ("create", "token") if a.resource == "serviceaccounts" => {
            format!("kubectl create token {name}{ns}")
        }
        ("create", "eviction") => {
            format!("kubectl drain --pod-selector=... # evict pod {name}{ns}")
        }
        ("create", "") => format!("kubectl create{ns} -f -{dry}"),
        ("update", "") => format!("kubectl replace{ns} -f -{dry}"),
        ("update", "scale") | ("patch", "scale") => {
            format!("kubectl scale {kind} {name}{ns} --replicas=...{dry}")
        }
        ("patch", "") => match request.facts.patch_type {
            Some(PatchType::Apply) => {
                let mgr = request
                    .facts
                    .field_manager
                    .as_deref()
                    .map(|m| format!(" --field-manager={}", sh(m)))
                    .unwrap_or_default();
                let force = if query(&request.target, "force").is_some_and(|f| f == "true") {
                    " --force-conflicts"
                } else {
                    ""
                };
                format!("kubectl apply --server-side{mgr}{force}{ns} -f -{dry}")
            }
            Some(PatchType::Json) => {
                format!("kubectl patch {kind} {name}{ns} --type=json -p \"$(cat)\"{dry}")
            }
            Some(PatchType::Merge) => {
                format!("kubectl patch {kind} {name}{ns} --type=merge -p \"$(cat)\"{dry}")
            }
            _ => format!("kubectl patch {kind} {name}{ns} -p \"$(cat)\"{dry}"),
        },
        ("delete", "") => format!("kubectl delete {kind} {name}{ns}{dry}"),
        ("deletecollection", "") => {
            let sel = query(&request.target, "labelSelector")
                .map_or(" --all".to_string(), |s| format!(" -l {}", sh(&s)));
            format!("kubectl delete {plural}{ns}{sel}{dry}")
        }
        _ => return raw(),
    };
    cmd.replace("  ", " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::classify;

    fn cmd(method: &str, target: &str, headers: &[(&str, &str)]) -> String {
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::from_str(v),
            ) {
                h.append(k, v);
            }
        }
        classify(method, target, &h)
            .map(|r| command(&r))
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn common_commands() {
        assert_eq!(
            cmd("GET", "/api/v1/namespaces/dev/secrets?limit=500", &[]),
            "kubectl get secrets -n dev -o yaml"
        );
        assert_eq!(
            cmd("DELETE", "/api/v1/namespaces/prod", &[]),
            "kubectl delete namespace prod"
        );
        assert_eq!(
            cmd("GET", "/api/v1/pods?watch=1", &[]),
            "kubectl get pods -A --watch"
        );
        assert_eq!(
            cmd("GET", "/apis/apps/v1/namespaces/dev/deployments/web", &[]),
            "kubectl get deployments.apps web -n dev -o yaml"
        );
        assert_eq!(
            cmd(
                "GET",
                "/api/v1/namespaces/dev/pods/web-1/exec?command=sh&stdin=true&tty=true",
                &[("Upgrade", "websocket")]
            ),
            "kubectl exec web-1 -n dev -it -- sh"
        );
        assert_eq!(
            cmd(
                "GET",
                "/api/v1/namespaces/dev/pods/web-1/log?follow=true&container=app",
                &[]
            ),
            "kubectl logs web-1 -n dev -c app -f"
        );
        assert_eq!(
            cmd(
                "POST",
                "/api/v1/namespaces/dev/serviceaccounts/builder/token",
                &[]
            ),
            "kubectl create token builder -n dev"
        );
        assert_eq!(
            cmd(
                "PATCH",
                "/apis/apps/v1/namespaces/dev/deployments/web?fieldManager=kubectl&force=false",
                &[("Content-Type", "application/apply-patch+yaml")]
            ),
            "kubectl apply --server-side --field-manager=kubectl -n dev -f -"
        );
        assert_eq!(
            cmd("POST", "/api/v1/namespaces/dev/configmaps?dryRun=All", &[]),
            "kubectl create -n dev -f - --dry-run=server"
        );
        assert_eq!(
            cmd(
                "DELETE",
                "/api/v1/namespaces/dev/secrets?labelSelector=app%3Dweb",
                &[]
            ),
            "kubectl delete secrets -n dev -l app=web"
        );
        assert_eq!(cmd("GET", "/version", &[]), "kubectl get --raw /version");
        assert_eq!(cmd("POST", "/metrics", &[]), "POST /metrics");
        assert_eq!(
            cmd(
                "GET",
                "/api/v1/namespaces/dev/pods/web-1/exec?command=sh&command=-c&command=cat%20%2Fetc%2Fpasswd",
                &[("Upgrade", "websocket")]
            ),
            "kubectl exec web-1 -n dev -- sh -c 'cat /etc/passwd'"
        );
    }
}
