//! The kubectl command a request amounts to, for people: approval prompts show it, and replay
//! prints a recorded session as a list of them. Where no kubectl command fits, or the request
//! carries a query parameter no kubectl flag sends, the raw method and target are given: a line
//! never leaves out something that changes what the request does.
//!
//! Query parameters are read as the API server reads them, through the request's own decoding
//! ([`Request::query_params`]): any boolean spelling it takes as true (`follow=1`, `True`, `t`,
//! even `yes` or an empty value; only `0` and `false` in any case are false) shows the flag.
//! A DELETE's options come from [`Facts::delete_options`](crate::request::Facts::delete_options),
//! which holds the body's options once [`Request::with_body_facts`] has run: call it before
//! rendering a DELETE whose body was read.
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

use crate::display::shell_word;
use crate::request::{DELETE_OPTIONS_QUERY_KEYS, PatchType, QueryParams, Request};

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

/// The kubectl command `request` amounts to (the body, where there is one, goes on stdin: `-f -`
/// or `--patch-file=/dev/stdin`).
///
/// Every word is quoted for a POSIX shell with [`shell_word`], so pasting the line runs exactly
/// the words shown, whatever bytes the request carried; where no kubectl command fits, the method
/// and target are given, quoted the same way.
pub fn command(request: &Request) -> String {
    let words = words(request);
    let mut line = String::with_capacity(words.iter().map(|w| w.len() + 3).sum());
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        line.push_str(&shell_word(w));
    }
    line
}

/// The words of [`command`], unquoted: what a shell gives the program when it runs the line.
///
/// Every query parameter that changes what the request does is rendered as the flag that makes
/// kubectl send it, read with the request's own query decoding ([`Request::query_params`], so
/// `f%6Fllow=True` is `follow` and true, as for the API server); for a DELETE the options come
/// from [`Facts::delete_options`](crate::request::Facts::delete_options), body included once
/// [`Request::with_body_facts`] has run. A request with any parameter (or option) the line
/// cannot render is given as its raw method and target instead: a line is never an
/// approximation of the request.
pub fn words(request: &Request) -> Vec<String> {
    let raw = || vec![request.method.clone(), request.target.clone()];
    let a = &request.attributes;
    if !a.resource_request {
        return if a.verb == "get" {
            words_of(&["kubectl", "get", "--raw", &request.target])
        } else {
            raw()
        };
    }
    let mut line = Line {
        request,
        params: request.query_params(),
        read: Vec::new(),
        words: vec!["kubectl".into()],
    };
    match line.render() {
        Some(()) if line.all_read() => line.finish(),
        _ => raw(),
    }
}

/// Parameters that never change what a request does to the cluster or which objects it
/// returns: output formatting (`includeObject` shapes a Table) and the client's own timeout.
const HARMLESS: &[&str] = &["pretty", "timeout", "includeObject"];

/// Parameters of a list or watch that only page, resume or bound it (kubectl sends them on its
/// own); the selectors are rendered.
const PAGING: &[&str] = &[
    "limit",
    "continue",
    "resourceVersion",
    "resourceVersionMatch",
    "allowWatchBookmarks",
    "timeoutSeconds",
    "sendInitialEvents",
    "watch",
];

/// A kubectl line being built, with the query parameters it has rendered so far.
struct Line<'r> {
    request: &'r Request,
    params: QueryParams,
    read: Vec<&'static str>,
    words: Vec<String>,
}

impl Line<'_> {
    fn push(&mut self, parts: &[&str]) {
        self.words.extend(parts.iter().map(|p| p.to_string()));
    }

    /// The first value of `key`, noting it rendered.
    fn value(&mut self, key: &'static str) -> Option<String> {
        self.read.push(key);
        self.params.first(key).map(str::to_string)
    }

    /// Whether boolean `key` is true as the API server reads it, noting it rendered.
    fn flag(&mut self, key: &'static str) -> bool {
        self.read.push(key);
        self.params.flag(key)
    }

    /// Note keys that need no word of their own.
    fn accept(&mut self, keys: &[&'static str]) {
        self.read.extend_from_slice(keys);
    }

    /// Whether every parameter of the query was rendered or accepted.
    fn all_read(&self) -> bool {
        self.params
            .keys()
            .all(|k| HARMLESS.contains(&k) || self.read.contains(&k))
    }

    /// `-n NS`, except for a namespace object itself.
    fn namespace(&mut self) {
        let a = &self.request.attributes;
        if !a.namespace.is_empty() && a.resource != "namespaces" {
            let ns = a.namespace.clone();
            self.push(&["-n", &ns]);
        }
    }

    /// `-n NS`, or `-A` for a request across every namespace.
    fn scope(&mut self) {
        let a = &self.request.attributes;
        if a.namespace.is_empty() && a.resource != "namespaces" {
            self.push(&["-A"]);
        } else {
            self.namespace();
        }
    }

    /// `-l` and `--field-selector`.
    fn selectors(&mut self) {
        if let Some(sel) = self.value("labelSelector") {
            self.push(&["-l", &sel]);
        }
        if let Some(sel) = self.value("fieldSelector") {
            self.words.push(format!("--field-selector={sel}"));
        }
    }

    /// `--dry-run=server`, `--field-manager=` (unless it is `default_manager`, the one kubectl
    /// sends for the command anyway; `None` when the caller has shown it) and `--validate=`
    /// (unless `Strict`, kubectl's default) of a write.
    fn write_options(&mut self, default_manager: Option<&str>) -> Option<()> {
        self.accept(&["dryRun"]);
        if self.request.facts.dry_run {
            self.push(&["--dry-run=server"]);
        }
        match default_manager {
            None => self.accept(&["fieldManager"]),
            Some(default) => {
                if let Some(m) = self.value("fieldManager")
                    && m != default
                {
                    self.words.push(format!("--field-manager={m}"));
                }
            }
        }
        match self.value("fieldValidation").as_deref() {
            None | Some("Strict") => {}
            Some("Warn" | "") => self.push(&["--validate=warn"]),
            Some("Ignore") => self.push(&["--validate=ignore"]),
            // The API server answers 400; no kubectl flag sends it.
            Some(_) => return None,
        }
        Some(())
    }

    /// A DELETE's options as kubectl delete flags; `None` for options no flag sends.
    fn delete_options(&mut self) -> Option<()> {
        self.accept(DELETE_OPTIONS_QUERY_KEYS);
        let Some(o) = &self.request.facts.delete_options else {
            return Some(());
        };
        if o.preconditions.is_some() || o.ignore_store_read_error.is_some_and(|b| b) {
            return None;
        }
        let cascade = match (o.propagation_policy.as_deref(), o.orphan_dependents) {
            (Some(_), Some(_)) => return None,
            (Some(p), None) => Some(p.to_ascii_lowercase()),
            (None, Some(true)) => Some("orphan".to_string()),
            (None, Some(false)) => Some("background".to_string()),
            (None, None) => None,
        };
        let grace = o.grace_period_seconds;
        if o.dry_run {
            self.push(&["--dry-run=server"]);
        }
        if let Some(c) = cascade {
            self.words.push(format!("--cascade={c}"));
        }
        match grace {
            None => {}
            // kubectl turns `--grace-period=0` into 1 unless `--force` is given too.
            Some(0) => self.push(&["--grace-period=0", "--force"]),
            Some(g) if g > 0 => self.words.push(format!("--grace-period={g}")),
            Some(_) => return None,
        }
        Some(())
    }

    /// An integer parameter as `--flag=N`; `None` if it is not an integer of at least `min`
    /// (the API server answers 400 or 422, and kubectl treats a lower value as unset, so no
    /// line sends it).
    fn int_flag(&mut self, key: &'static str, flag: &str, min: i64) -> Option<()> {
        if let Some(v) = self.value(key) {
            if v.parse::<i64>().ok()? < min {
                return None;
            }
            self.words.push(format!("--{flag}={v}"));
        }
        Some(())
    }

    fn render(&mut self) -> Option<()> {
        let r = self.request;
        let a = &r.attributes;
        let kind = if a.api_group.is_empty() {
            singular(&a.resource).to_string()
        } else {
            format!("{}.{}", a.resource, a.api_group)
        };
        let plural = if a.api_group.is_empty() {
            a.resource.clone()
        } else {
            kind.clone()
        };
        let name = a.name.clone();
        match (a.verb.as_str(), a.subresource.as_str()) {
            ("get", "") => {
                self.push(&["get", &kind, &name]);
                self.namespace();
                self.accept(&["resourceVersion", "resourceVersionMatch"]);
                self.push(&["-o", "yaml"]);
            }
            ("list", "") => {
                self.push(&["get", &plural]);
                self.scope();
                self.selectors();
                self.accept(PAGING);
                self.push(&["-o", "yaml"]);
            }
            ("watch", "") => {
                // A watch of one object by path (`/watch/namespaces/d/pods/p`) names it; one
                // restricted by a field selector shows the selector.
                if name.is_empty() || self.params.first("fieldSelector").is_some() {
                    self.push(&["get", &plural]);
                } else {
                    self.push(&["get", &kind, &name]);
                }
                self.scope();
                self.selectors();
                self.accept(PAGING);
                self.push(&["--watch"]);
            }
            ("get", "log") => {
                self.push(&["logs", &name]);
                self.namespace();
                if let Some(c) = self.value("container") {
                    self.push(&["-c", &c]);
                }
                if self.flag("follow") {
                    self.push(&["-f"]);
                }
                if self.flag("previous") {
                    self.push(&["-p"]);
                }
                if self.flag("timestamps") {
                    self.push(&["--timestamps"]);
                }
                if let Some(t) = self.value("sinceSeconds") {
                    // `--since` takes a duration, so the seconds need their unit.
                    if t.parse::<i64>().ok()? < 1 {
                        return None;
                    }
                    self.words.push(format!("--since={t}s"));
                }
                if let Some(t) = self.value("sinceTime") {
                    self.words.push(format!("--since-time={t}"));
                }
                self.int_flag("tailLines", "tail", 0)?;
                self.int_flag("limitBytes", "limit-bytes", 1)?;
                if self.flag("insecureSkipTLSVerifyBackend") {
                    self.push(&["--insecure-skip-tls-verify-backend"]);
                }
            }
            ("create", "exec") => {
                self.push(&["exec", &name]);
                self.namespace();
                self.stdio()?;
                if let Some(c) = self.value("container") {
                    self.push(&["-c", &c]);
                }
                self.accept(&["command"]);
                let argv: Vec<String> = self.params.all("command").map(str::to_string).collect();
                if !argv.is_empty() {
                    self.words.push("--".into());
                    self.words.extend(argv);
                }
            }
            ("create", "attach") => {
                self.push(&["attach", &name]);
                self.namespace();
                self.stdio()?;
                if let Some(c) = self.value("container") {
                    self.push(&["-c", &c]);
                }
            }
            ("create", "portforward") => {
                self.push(&["port-forward", &name]);
                self.namespace();
                self.accept(&["ports"]);
                let ports: Vec<String> =
                    self.params.all("ports").map(|p| format!(":{p}")).collect();
                self.words.extend(ports);
            }
            ("create", "token") if a.resource == "serviceaccounts" => {
                // `kubectl create token` has no flag for any query parameter (`dryRun`,
                // `fieldManager`): a request with one is shown raw.
                self.push(&["create", "token", &name]);
                self.namespace();
            }
            ("create", "") => {
                self.push(&["create"]);
                self.namespace();
                self.push(&["-f", "-"]);
                self.write_options(Some("kubectl-create"))?;
            }
            ("update", "") => {
                self.push(&["replace"]);
                self.namespace();
                self.push(&["-f", "-"]);
                self.write_options(Some("kubectl-replace"))?;
            }
            ("update" | "patch", "scale") => {
                self.push(&["scale", &kind, &name]);
                self.namespace();
                self.push(&["--replicas=..."]);
                self.write_options(Some("kubectl-scale"))?;
            }
            ("patch", "") => match r.facts.patch_type {
                Some(PatchType::Apply) => {
                    self.push(&["apply", "--server-side"]);
                    // Always shown: it decides which fields the apply owns and removes.
                    if let Some(m) = self.value("fieldManager") {
                        self.words.push(format!("--field-manager={m}"));
                    }
                    if self.flag("force") {
                        self.push(&["--force-conflicts"]);
                    }
                    self.namespace();
                    self.push(&["-f", "-"]);
                    self.write_options(None)?;
                }
                patch_type => {
                    self.push(&["patch", &kind, &name]);
                    self.namespace();
                    match patch_type {
                        Some(PatchType::Json) => self.push(&["--type=json"]),
                        Some(PatchType::Merge) => self.push(&["--type=merge"]),
                        Some(PatchType::StrategicMerge) => {}
                        // CBOR apply, or no patch type: no kubectl patch sends it.
                        _ => return None,
                    }
                    self.push(&["--patch-file=/dev/stdin"]);
                    self.write_options(Some("kubectl-patch"))?;
                }
            },
            ("delete", "") => {
                self.push(&["delete", &kind, &name]);
                self.namespace();
                self.delete_options()?;
            }
            ("deletecollection", "") => {
                self.push(&["delete", &plural]);
                self.scope();
                if self.params.first("labelSelector").is_none()
                    && self.params.first("fieldSelector").is_none()
                {
                    self.push(&["--all"]);
                }
                self.selectors();
                self.accept(PAGING);
                self.delete_options()?;
            }
            _ => return None,
        }
        Some(())
    }

    /// `-i`, `-t` for exec and attach (`stdout` and `stderr` only choose which output streams
    /// come back).
    fn stdio(&mut self) -> Option<()> {
        let stdin = self.flag("stdin");
        let tty = self.flag("tty");
        self.accept(&["stdout", "stderr"]);
        match (stdin, tty) {
            (true, true) => self.push(&["-it"]),
            (true, false) => self.push(&["-i"]),
            (false, true) => self.push(&["-t"]),
            _ => {}
        }
        Some(())
    }

    /// The words, without the empty name word of a request that has no name (a PATCH of a
    /// collection, say); exec arguments after `--` are kept as they are, empty ones included.
    fn finish(self) -> Vec<String> {
        let mut w = self.words;
        let end = w.iter().position(|x| x == "--").unwrap_or(w.len());
        let mut i = 0;
        w.retain(|x| {
            i += 1;
            i > end || !x.is_empty()
        });
        w
    }
}

fn words_of(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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

    #[test]
    fn booleans_read_as_the_api_server_reads_them() {
        let log = "/api/v1/namespaces/dev/pods/web-1/log";
        for v in ["1", "True", "t", "TRUE", "yes", ""] {
            assert_eq!(
                cmd("GET", &format!("{log}?follow={v}&previous={v}"), &[]),
                "kubectl logs web-1 -n dev -f -p",
                "{v}"
            );
        }
        for v in ["0", "false", "FALSE", "False"] {
            assert_eq!(
                cmd("GET", &format!("{log}?follow={v}"), &[]),
                "kubectl logs web-1 -n dev",
                "{v}"
            );
        }
        // An encoded key is the same key.
        assert_eq!(
            cmd("GET", &format!("{log}?f%6Fllow=1"), &[]),
            "kubectl logs web-1 -n dev -f"
        );
        assert_eq!(
            cmd(
                "GET",
                &format!(
                    "{log}?container=app&timestamps=1&sinceSeconds=60&tailLines=10&limitBytes=500&insecureSkipTLSVerifyBackend=t"
                ),
                &[]
            ),
            "kubectl logs web-1 -n dev -c app --timestamps --since=60s --tail=10 --limit-bytes=500 --insecure-skip-tls-verify-backend"
        );
    }

    #[test]
    fn a_parameter_no_flag_sends_gives_the_raw_request() {
        for target in [
            "/api/v1/namespaces/dev/pods/web-1/log?stream=Stderr",
            "/api/v1/namespaces/dev/pods/web-1/log?tailLines=ten",
            "/api/v1/namespaces/dev/pods/web-1/log?whatever=1",
            "/api/v1/namespaces/dev/secrets/db?x=1",
        ] {
            assert_eq!(cmd("GET", target, &[]), format!("GET '{target}'"));
        }
        let target = "/apis/apps/v1/namespaces/dev/deployments/web?force=true";
        let merge = [("Content-Type", "application/merge-patch+json")];
        assert_eq!(cmd("PATCH", target, &merge), format!("PATCH '{target}'"));
        let target = "/api/v1/namespaces/dev/serviceaccounts/b/token?dryRun=All";
        assert_eq!(cmd("POST", target, &[]), format!("POST '{target}'"));
    }

    #[test]
    fn write_options_are_shown() {
        let d = "/apis/apps/v1/namespaces/dev/deployments/web";
        let apply = [("Content-Type", "application/apply-patch+yaml")];
        assert_eq!(
            cmd(
                "PATCH",
                &format!("{d}?fieldManager=m&force=1&dryRun=All"),
                &apply
            ),
            "kubectl apply --server-side --field-manager=m --force-conflicts -n dev -f - --dry-run=server"
        );
        let merge = [("Content-Type", "application/merge-patch+json")];
        assert_eq!(
            cmd(
                "PATCH",
                &format!("{d}?fieldManager=kubectl-patch&fieldValidation=Ignore"),
                &merge
            ),
            "kubectl patch deployments.apps web -n dev --type=merge --patch-file=/dev/stdin --validate=ignore"
        );
        assert_eq!(
            cmd("PATCH", &format!("{d}?fieldManager=kubectl-label"), &merge),
            "kubectl patch deployments.apps web -n dev --type=merge --patch-file=/dev/stdin --field-manager=kubectl-label"
        );
    }

    #[test]
    fn delete_options_come_from_the_body_when_there_is_one() {
        let cm = "/api/v1/namespaces/dev/configmaps/x";
        assert_eq!(
            cmd(
                "DELETE",
                &format!("{cm}?dryRun=All&propagationPolicy=Foreground&gracePeriodSeconds=0"),
                &[]
            ),
            "kubectl delete configmap x -n dev --dry-run=server --cascade=foreground --grace-period=0 --force"
        );
        let mut req = classify("DELETE", cm, &http::HeaderMap::new()).unwrap();
        req.with_body_facts(Some(br#"{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Orphan","gracePeriodSeconds":5}"#))
            .unwrap();
        assert_eq!(
            command(&req),
            "kubectl delete configmap x -n dev --cascade=orphan --grace-period=5"
        );
        let mut req = classify("DELETE", cm, &http::HeaderMap::new()).unwrap();
        req.with_body_facts(Some(br#"{"preconditions":{"uid":"u"}}"#))
            .unwrap();
        assert_eq!(command(&req), format!("DELETE {cm}"));
        // The issue's example: a body makes the query's dryRun void, so it is refused.
        let mut req = classify(
            "DELETE",
            &format!("{cm}?dryRun=All"),
            &http::HeaderMap::new(),
        )
        .unwrap();
        assert!(
            req.with_body_facts(Some(br#"{"propagationPolicy":"Background"}"#))
                .is_err()
        );
    }
}
