//! Held writes on the real API server (`tests/cluster/start.sh`, kube-apiserver v1.34) where
//! admission has its say: what the approver is shown of the server's dry run when admission
//! refuses it, what happens when a person approves anyway, masked values in a held ConfigMap
//! change, and the approval channels' refusals (forged, replayed, self-approving answers) with
//! the real server as the judge of what reached it.
//!
//! Admission here is ValidatingAdmissionPolicies (admissionregistration.k8s.io/v1, GA since
//! 1.30), installed with the cluster's admin kubeconfig, never through kubeleash: one refuses
//! Deployments of more than 10 replicas, another refuses weak credentials quoting them, in this
//! file's own namespace ([`NS`]), where a RoleBinding lets kubeleash's operator identity write
//! as it does in dev. One cluster per test binary; each test uses objects of its own names.
//!
//! A real validating admission webhook too ([`webhook`]): a test-owned HTTPS server on
//! 127.0.0.1 registered with a ValidatingWebhookConfiguration for ConfigMaps in one namespace
//! of each test's own, which denies a ConfigMap with a key named `forbidden` and records every
//! AdmissionReview it is sent, so a test sees the dry run from the webhook's side as well.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "support/approvals.rs"]
mod approvals;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/process.rs"]
mod process;
#[path = "support/webhook.rs"]
mod webhook;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use approvals::{Proxy, Setup, assert_never_shown};
use base64::Engine as _;
use serde_json::{Value, json};

/// The namespace of this file's objects; the admission policy's binding selects it by label.
const NS: &str = "kl-admission";

/// The admission policy, and what it says when it refuses.
const VAP: &str = "kl-max-replicas";
const VAP_MESSAGE: &str = "kl-admission allows at most 10 replicas per deployment";

/// A second policy, whose messages quote the values they refuse (as policies often do, "value
/// X is not allowed"): a ConfigMap's `db-password` starting `weak-`, a Secret's `password`
/// shorter than 40 characters of base64 (admission sees a Secret's data as base64 text).
const QUOTING_VAP: &str = "kl-weak-values";
const WEAK_MESSAGE: &str = "is on the list of weak ones";
const SHORT_MESSAGE: &str = "is too short";

/// The namespace, the operator's right to write in it, and the admission policies with their
/// bindings: admin objects, applied straight to the API server.
fn admission_objects() -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {NS}
  labels: {{kubeleash-test: admission}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: kubeleash-operator-write
  namespace: {NS}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubeleash-operator-write}}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: kubeleash-operator}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: {VAP}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [apps]
      apiVersions: [v1]
      operations: [CREATE, UPDATE]
      resources: [deployments, deployments/scale]
  validations:
  - expression: "!has(object.spec.replicas) || object.spec.replicas <= 10"
    message: "{VAP_MESSAGE}"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: {VAP}
spec:
  policyName: {VAP}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {{kubeleash-test: admission}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: {QUOTING_VAP}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: [v1]
      operations: [CREATE, UPDATE]
      resources: [configmaps, secrets]
  validations:
  - expression: "object.kind != 'ConfigMap' || !has(object.data) || !('db-password' in object.data) || !object.data['db-password'].startsWith('weak-')"
    messageExpression: "'db-password ' + object.data['db-password'] + ' {WEAK_MESSAGE}'"
  - expression: "object.kind != 'Secret' || !has(object.data) || !('password' in object.data) || size(object.data['password']) >= 40"
    messageExpression: "'password ' + object.data['password'] + ' {SHORT_MESSAGE}'"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: {QUOTING_VAP}
spec:
  policyName: {QUOTING_VAP}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {{kubeleash-test: admission}}
"#
    )
}

/// The shared cluster with [`admission_objects`] installed and the policies in force: the API
/// server compiles and starts enforcing a new policy on its own time, so an admin dry run of
/// a violating create is repeated until it is refused with the policy's message.
fn admission_cluster() -> &'static cluster::Cluster {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    let c = cluster::cluster();
    INSTALLED.get_or_init(|| {
        let f = c.dir.join("kl-admission.yaml");
        std::fs::write(&f, admission_objects()).unwrap();
        let (ok, out) = c.admin(&["apply", "-f", f.to_str().unwrap()]);
        assert!(ok, "installing the admission policy: {out}");
        let started = Instant::now();
        let probes: [(&[&str], &str); 3] = [
            (
                &["deployment", "kl-probe", "--image=nginx", "--replicas=11"],
                VAP_MESSAGE,
            ),
            (
                &["configmap", "kl-probe", "--from-literal=db-password=weak-probe"],
                WEAK_MESSAGE,
            ),
            (
                &["secret", "generic", "kl-probe", "--from-literal=password=short"],
                SHORT_MESSAGE,
            ),
        ];
        for (what, message) in probes {
            loop {
                let mut args = vec!["create"];
                args.extend_from_slice(what);
                args.extend(["-n", NS, "--dry-run=server"]);
                let (ok, out) = c.admin(&args);
                if !ok && out.contains(message) {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "the admission policies are not enforced a minute after they were installed: {out}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    });
    c
}

/// Every change in [`NS`] needs a person; reads and discovery pass.
const POLICY: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: admission-e2e}
spec:
  rules:
    - {name: read, effect: allow, verbs: [get, list, watch], apiGroups: ["*"], resources: ["*"], namespaces: [kl-admission]}
    - name: changes-need-a-human
      effect: approve
      reason: a person looks at every change here
      verbs: [create, update, patch]
      apiGroups: ["", apps]
      resources: [deployments, deployments/scale, configmaps, secrets]
      namespaces: [kl-admission]
    - {name: discovery, effect: allow, verbs: [get], nonResourceURLs: [/api, "/api/*", /apis, "/apis/*", /version, "/openapi/*"]}
"#;

/// A proxy in front of the real server as kubeleash-operator, answering on its socket.
fn proxy(name: &str, extra: &[&str], env: &[(&str, &Path)]) -> (Proxy, &'static cluster::Cluster) {
    process::require_kubectl();
    let c = admission_cluster();
    let operator = c.operator_cert_kubeconfig();
    let p = Proxy::start(&Setup {
        name,
        policy: POLICY,
        operator_kubeconfig: &operator,
        namespace: NS,
        extra,
        env,
    });
    (p, c)
}

/// Create `object` (JSON) as the cluster's admin, with `kubectl apply` so that it carries the
/// last-applied annotation kubectl apply keeps.
fn admin_apply(c: &cluster::Cluster, file: &str, object: &Value) {
    let f = c.dir.join(file);
    std::fs::write(&f, object.to_string()).unwrap();
    let (ok, out) = c.admin(&["apply", "-f", f.to_str().unwrap()]);
    assert!(ok, "{out}");
}

/// A Deployment in [`NS`] with `replicas`.
fn deployment(name: &str, replicas: u32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}})
}

/// What the API server holds for `kind/name` in [`NS`] (read as its admin): resourceVersion,
/// then the fields of `jsonpath`; `None` when there is no such object.
fn stored(c: &cluster::Cluster, kind: &str, name: &str, jsonpath: &str) -> Option<String> {
    stored_in(c, NS, kind, name, jsonpath)
}

/// [`stored`], in namespace `ns`.
fn stored_in(
    c: &cluster::Cluster,
    ns: &str,
    kind: &str,
    name: &str,
    jsonpath: &str,
) -> Option<String> {
    let (ok, out) = c.admin(&[
        "get",
        kind,
        name,
        "-n",
        ns,
        "-o",
        &format!("jsonpath={{.metadata.resourceVersion}} {jsonpath}"),
    ]);
    if !ok {
        assert!(out.contains("NotFound"), "{out}");
        return None;
    }
    Some(out.trim().to_string())
}

/// The dry run an approver is shown of a write admission refuses: refused, with the policy's
/// message and nothing to diff.
fn assert_refused_by_admission(held: &Value) {
    let dry = &held["dry_run"];
    assert_eq!(
        dry["status"], 422,
        "a ValidatingAdmissionPolicy refuses as Invalid (422) unless it says otherwise: {held}"
    );
    let rejected = dry["rejected"].as_str().unwrap_or_default();
    assert!(
        rejected.contains(VAP_MESSAGE)
            && rejected.contains(&format!("ValidatingAdmissionPolicy '{VAP}'")),
        "the approver sees admission's own words: {held}"
    );
    assert_eq!(dry["changes"], json!([]), "{held}");
    assert_eq!(dry["diff"], "", "{held}");
}

/// A held create and a held patch that admission would refuse are shown to the approver as
/// refused, with the policy's message; nothing reaches the API server while they wait, nor
/// after they are denied.
#[test]
fn a_write_admission_would_refuse_is_shown_as_refused_and_nothing_is_sent() {
    let (p, c) = proxy("admission-deny", &[], &[]);
    let dep = "adm-patched";
    admin_apply(c, "adm-patched.json", &deployment(dep, 2));
    let before = stored(c, "deployment", dep, "{.spec.replicas}").unwrap();
    assert!(before.ends_with(" 2"), "{before}");

    // A patch to 20 replicas: held, its dry run refused by the policy.
    let k = p.kubectl_meanwhile(&[
        "patch",
        "deployment",
        dep,
        "-p",
        r#"{"spec":{"replicas":20}}"#,
    ]);
    let held = p.held_containing(dep);
    assert_eq!(held["method"], "PATCH", "{held}");
    assert_eq!(held["rule"], "changes-need-a-human", "{held}");
    assert_refused_by_admission(&held);
    // The person is asking; the server has not been written to.
    assert_eq!(
        stored(c, "deployment", dep, "{.spec.replicas}").as_ref(),
        Some(&before)
    );
    p.answer_as(
        "alice",
        held["id"].as_str().unwrap(),
        false,
        "over the limit",
    );
    let (ok, out) = k.join().unwrap();
    assert!(!ok && out.contains("over the limit"), "{out}");
    assert_eq!(
        stored(c, "deployment", dep, "{.spec.replicas}").as_ref(),
        Some(&before)
    );

    // A create of 20 replicas (kubectl sends it as protobuf): held, refused; nothing created.
    let created = "adm-created";
    let k = p.kubectl_meanwhile(&[
        "create",
        "deployment",
        created,
        "--image=nginx",
        "--replicas=20",
    ]);
    let held = p.held_containing(created);
    assert_eq!(held["method"], "POST", "{held}");
    assert_eq!(
        held["content_type"], "application/vnd.kubernetes.protobuf",
        "{held}"
    );
    assert_refused_by_admission(&held);
    assert_eq!(stored(c, "deployment", created, ""), None);
    p.answer_as(
        "alice",
        held["id"].as_str().unwrap(),
        false,
        "over the limit",
    );
    let (ok, out) = k.join().unwrap();
    assert!(!ok && out.contains("over the limit"), "{out}");
    assert_eq!(stored(c, "deployment", created, ""), None);

    // Within the limit: the same path shows a change, not a refusal (so the refusals above
    // were admission's, not the dry run's failing).
    let k = p.kubectl_meanwhile(&[
        "patch",
        "deployment",
        dep,
        "-p",
        r#"{"spec":{"replicas":7}}"#,
    ]);
    let held = p.held_containing(dep);
    assert_eq!(held["dry_run"]["status"], 200, "{held}");
    assert!(held["dry_run"]["rejected"].is_null(), "{held}");
    assert!(
        held["dry_run"]["diff"]
            .as_str()
            .unwrap_or_default()
            .contains("~ spec.replicas: 2 -> 7"),
        "{held}"
    );
    p.answer_as("alice", held["id"].as_str().unwrap(), false, "not today");
    let (ok, _) = k.join().unwrap();
    assert!(!ok);
    assert_eq!(
        stored(c, "deployment", dep, "{.spec.replicas}").as_ref(),
        Some(&before)
    );
}

/// An approver may approve a write the dry run showed refused: kubeleash forwards exactly that
/// request, the real API server refuses it, and kubectl shows the server's error as it is.
#[test]
fn approved_anyway_the_server_refuses_and_kubectl_shows_its_error() {
    let (p, c) = proxy("admission-approve", &[], &[]);
    let dep = "adm-replaced";
    admin_apply(c, "adm-replaced.json", &deployment(dep, 2));
    let before = stored(c, "deployment", dep, "{.spec.replicas}").unwrap();

    // An update (kubectl replace: PUT) to 12 replicas.
    let f = p.home.join("replace.json");
    std::fs::write(&f, deployment(dep, 12).to_string()).unwrap();
    let k = p.kubectl_meanwhile(&["replace", "-f", f.to_str().unwrap()]);
    let held = p.held_containing(dep);
    assert_eq!(held["method"], "PUT", "{held}");
    assert_refused_by_admission(&held);
    assert_eq!(
        stored(c, "deployment", dep, "{.spec.replicas}").as_ref(),
        Some(&before)
    );
    let id = held["id"].as_str().unwrap().to_string();
    p.answer_as("alice", &id, true, "");
    let (ok, out) = k.join().unwrap();
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "ValidatingAdmissionPolicy '{VAP}' with binding '{VAP}' denied request"
        )) && out.contains(VAP_MESSAGE),
        "kubectl shows the API server's refusal: {out}"
    );
    assert!(
        !out.contains("kubeleash"),
        "it is the server's, as it is: {out}"
    );
    assert_eq!(
        stored(c, "deployment", dep, "{.spec.replicas}").as_ref(),
        Some(&before)
    );
    // The record: approved by alice, sent, and refused by the server.
    let recs = p.records_of(&id, |recs| {
        recs.iter().any(|r| r["response"]["status"] == 422)
    });
    assert!(
        recs.iter()
            .any(|r| r["kind"] == "approval" && r["decision"]["approver"] == "alice"),
        "{recs:#?}"
    );

    // The scale subresource (kubectl scale), the same way.
    let k = p.kubectl_meanwhile(&["scale", "deployment", dep, "--replicas=30"]);
    let held = p.held_containing(&format!("{dep}/scale"));
    assert_refused_by_admission(&held);
    p.answer_as("alice", held["id"].as_str().unwrap(), true, "");
    let (ok, out) = k.join().unwrap();
    assert!(
        !ok && out.contains(VAP_MESSAGE) && !out.contains("kubeleash"),
        "{out}"
    );
    assert_eq!(
        stored(c, "deployment", dep, "{.spec.replicas}").as_ref(),
        Some(&before)
    );
}

/// A value of this run alone (letters and digits from the clock and the process id), so that
/// finding it anywhere means it leaked.
fn unique(prefix: &str, len: usize) -> String {
    let mut x = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ (u64::from(std::process::id()) << 32)
        ^ prefix
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31) ^ u64::from(b));
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let tail: String = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(ALPHABET[(x % ALPHABET.len() as u64) as usize])
        })
        .collect();
    format!("{prefix}{tail}")
}

/// The credential-like values of a ConfigMap: under a credential-named key, inside a
/// properties file, in `binaryData` under a credential-named key and inside a base64 file,
/// and a GitHub token in free text.
struct Credentials {
    password: String,
    property: String,
    signing_key: String,
    api_key: String,
    token: String,
}

impl Credentials {
    fn new(tag: &str) -> Credentials {
        Credentials {
            password: unique(&format!("{tag}-Pw-"), 16),
            property: unique(&format!("{tag}-Prop-"), 16),
            signing_key: unique(&format!("{tag}-Sign-"), 24),
            api_key: unique(&format!("{tag}-Api-"), 20),
            token: unique("ghp_", 36),
        }
    }

    fn all(&self) -> [&str; 5] {
        [
            &self.password,
            &self.property,
            &self.signing_key,
            &self.api_key,
            &self.token,
        ]
    }

    fn configmap(&self, name: &str, color: &str) -> Value {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS},
        "data": {
            "color": color,
            "db-password": self.password,
            "app.properties": format!("db.url=jdbc:postgresql://db:5432/app\ndb.password={}\n", self.property),
            "notes": format!("deploy with {} from the release job", self.token),
        },
        "binaryData": {
            "signing.key": b64(&self.signing_key),
            "settings.bin": b64(&format!("region=eu-west-1\napi_key={}\n", self.api_key)),
        }})
    }
}

/// The line of a rendered diff for `path`, if there is one.
fn diff_line<'a>(diff: &'a str, path: &str) -> Option<&'a str> {
    diff.lines().find(|l| l.starts_with(&format!("~ {path}: ")))
}

/// A held ConfigMap change (an update, then an apply) shows the change from the live object to
/// the dry run's result: the color as it changes, every credential-like value only as changed,
/// and none of them, old or new, in any form (plain, escaped, hex, base64 at any alignment),
/// in what the approver is shown (JSON and the human list), in the record or in kubectl's
/// output. Approved, the real values reach the API server.
#[test]
fn a_held_configmap_change_never_shows_a_masked_value() {
    let (p, c) = proxy("admission-masked-cm", &[], &[]);
    let cm = "masked-cm";
    let old = Credentials::new("Old");
    let new = Credentials::new("New");
    let mut secrets: Vec<&str> = old.all().to_vec();
    secrets.extend(new.all());
    admin_apply(c, "masked-cm.json", &old.configmap(cm, "blue"));
    let before = stored(c, "configmap", cm, "{.data.color}").unwrap();
    let file = p.home.join("masked-cm.json");
    std::fs::write(&file, new.configmap(cm, "red").to_string()).unwrap();

    let check = |held: &Value, how: &str| {
        let dry = &held["dry_run"];
        assert_eq!(dry["status"], 200, "{how}: {held}");
        let diff = dry["diff"].as_str().unwrap_or_default();
        assert!(diff.contains("~ data.color: blue -> red"), "{how}: {diff}");
        for path in [
            "data.db-password",
            r#"data["app.properties"]"#,
            "data.notes",
            r#"binaryData["signing.key"]"#,
            r#"binaryData["settings.bin"]"#,
        ] {
            let line = diff_line(diff, path)
                .unwrap_or_else(|| panic!("{how}: the diff does not show {path} changing: {diff}"));
            assert!(line.contains("masked"), "{how}: {line}");
        }
        let changes = dry["changes"].as_array().unwrap();
        assert!(
            changes
                .iter()
                .any(|ch| ch["path"] == "data.db-password" && ch["masked"] == true),
            "{how}: {held}"
        );
        assert_never_shown(
            &format!("{how}: the held request"),
            &held.to_string(),
            &secrets,
        );
        let (ok, text, err) = p.approvals_as("alice", &["list"]);
        assert!(ok, "{err}");
        assert!(text.contains(cm), "{text}");
        assert_never_shown(
            &format!("{how}: `kubeleash approvals list`"),
            &text,
            &secrets,
        );
        assert_eq!(
            stored(c, "configmap", cm, "{.data.color}").as_ref(),
            Some(&before),
            "{how}: nothing is written while it is held"
        );
    };

    // kubectl replace: an update (PUT) of the whole object; denied.
    let k = p.kubectl_meanwhile(&["replace", "-f", file.to_str().unwrap()]);
    let held = p.held_containing(cm);
    assert_eq!(held["method"], "PUT", "{held}");
    check(&held, "replace");
    p.answer_as("alice", held["id"].as_str().unwrap(), false, "not this one");
    let (ok, out) = k.join().unwrap();
    assert!(!ok && out.contains("not this one"), "{out}");
    assert_never_shown("kubectl replace's output", &out, &secrets);
    assert_eq!(
        stored(c, "configmap", cm, "{.data.color}").as_ref(),
        Some(&before)
    );

    // kubectl apply: a strategic merge patch computed from the (masked) live object, carrying
    // the last-applied annotation with every value in it; approved.
    let k = p.kubectl_meanwhile(&["apply", "-f", file.to_str().unwrap()]);
    let held = p.held_containing(cm);
    assert_eq!(held["method"], "PATCH", "{held}");
    check(&held, "apply");
    let diff = held["dry_run"]["diff"].as_str().unwrap_or_default();
    assert!(
        diff.contains("kubectl.kubernetes.io/last-applied-configuration"),
        "the annotation changes too: {diff}"
    );
    p.answer_as("alice", held["id"].as_str().unwrap(), true, "");
    let (ok, out) = k.join().unwrap();
    assert!(
        ok && out.contains(&format!("configmap/{cm} configured")),
        "{out}"
    );
    assert_never_shown("kubectl apply's output", &out, &secrets);
    // What was approved is what was sent: the real values, not their masks.
    let (ok, out) = c.admin(&["get", "configmap", cm, "-n", NS, "-o", "json"]);
    assert!(ok, "{out}");
    let live: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(live["data"], new.configmap(cm, "red")["data"], "{live}");
    assert_eq!(
        live["binaryData"],
        new.configmap(cm, "red")["binaryData"],
        "{live}"
    );
    let id = held["id"].as_str().unwrap();
    p.records_of(id, |recs| {
        recs.iter().any(|r| r["response"]["status"] == 200)
    });
    assert_never_shown("the record", &p.record_text(), &secrets);
}

/// The approver is never the agent, on the socket too: an approval given in agent-1's own name
/// (in any case) is refused, kubectl gets the refusal, and nothing reaches the API server.
#[test]
fn a_request_cannot_approve_itself_through_the_socket() {
    let (p, c) = proxy("admission-self", &[], &[]);
    let dep = "adm-self";
    admin_apply(c, "adm-self.json", &deployment(dep, 2));
    let before = stored(c, "deployment", dep, "{.spec.replicas}").unwrap();
    for user in ["agent-1", "AGENT-1"] {
        let k = p.kubectl_meanwhile(&[
            "patch",
            "deployment",
            dep,
            "-p",
            r#"{"spec":{"replicas":3}}"#,
        ]);
        let held = p.held_containing(dep);
        let id = held["id"].as_str().unwrap().to_string();
        let (_, out, err) = p.approvals_as(user, &["approve", &id]);
        let (ok, kubectl) = k.join().unwrap();
        assert!(
            !ok && kubectl.contains("cannot approve itself"),
            "{user}: {kubectl}\n(the approver was told: {out}{err})"
        );
        assert_eq!(
            stored(c, "deployment", dep, "{.spec.replicas}").as_ref(),
            Some(&before),
            "{user}"
        );
        let recs = p.records_of(&id, |recs| {
            recs.iter().any(|r| r["decision"]["outcome"] == "refused")
        });
        assert!(
            recs.iter().all(|r| r["decision"]["outcome"] != "approved"),
            "{recs:#?}"
        );
    }
    // Another person's approval goes through.
    let k = p.kubectl_meanwhile(&[
        "patch",
        "deployment",
        dep,
        "-p",
        r#"{"spec":{"replicas":3}}"#,
    ]);
    let held = p.held_containing(dep);
    p.answer_as("alice", held["id"].as_str().unwrap(), true, "");
    let (ok, out) = k.join().unwrap();
    assert!(ok && out.contains("patched"), "{out}");
    let after = stored(c, "deployment", dep, "{.spec.replicas}").unwrap();
    assert!(after.ends_with(" 3"), "{after}");
}

/// A refusal's message is admission's text, which may quote the value it refuses: the approver
/// must not see through it a value kubeleash masks everywhere else (a credential-named
/// ConfigMap key, a Secret's data, plain or base64).
#[test]
fn a_refusal_that_quotes_a_masked_value_does_not_show_it() {
    let (p, c) = proxy("admission-quoted", &[], &[]);
    let cm = "quoted-cm";
    admin_apply(
        c,
        "quoted-cm.json",
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": cm, "namespace": NS},
            "data": {"color": "blue", "db-password": unique("Strong-", 24)}}),
    );
    let weak = unique("weak-", 16);
    let patch = json!({"data": {"db-password": weak}}).to_string();
    let k = p.kubectl_meanwhile(&["patch", "configmap", cm, "--type", "merge", "-p", &patch]);
    let held = p.held_containing(cm);
    p.answer_as("alice", held["id"].as_str().unwrap(), false, "too weak");
    let (ok, _) = k.join().unwrap();
    assert!(!ok);
    assert_eq!(held["dry_run"]["status"], 422, "{held}");
    let rejected = held["dry_run"]["rejected"].as_str().unwrap_or_default();
    assert!(
        rejected.contains(&format!("ValidatingAdmissionPolicy '{QUOTING_VAP}'"))
            && rejected.contains(WEAK_MESSAGE),
        "{held}"
    );
    // The body masks it (as base64 of `[masked]`: a patch names no kind, so its `data` is
    // masked as a Secret's could be).
    let body = held["body"].as_str().unwrap_or_default();
    assert!(
        body.contains("[masked]") || body.contains("W21hc2tlZF0="),
        "the body masks it: {held}"
    );
    let mut leaks: Vec<String> = approvals::shown_forms(&held.to_string(), &[&weak])
        .into_iter()
        .map(|l| format!("a held ConfigMap patch shows {l}: {held}"))
        .collect();

    let short = unique("Sh-", 10);
    let k = p.kubectl_meanwhile(&[
        "create",
        "secret",
        "generic",
        "quoted-secret",
        &format!("--from-literal=password={short}"),
    ]);
    let held = p.held_containing("quoted-secret");
    p.answer_as("alice", held["id"].as_str().unwrap(), false, "too short");
    let (ok, _) = k.join().unwrap();
    assert!(!ok);
    let rejected = held["dry_run"]["rejected"].as_str().unwrap_or_default();
    assert!(rejected.contains(SHORT_MESSAGE), "{held}");
    leaks.extend(
        approvals::shown_forms(&held.to_string(), &[&short])
            .into_iter()
            .map(|l| format!("a held Secret create shows {l}: {held}")),
    );
    assert_eq!(stored(c, "secret", "quoted-secret", ""), None);
    assert!(leaks.is_empty(), "{leaks:#?}");
}

/// What `kubeleash approvals list` prints for a person (the terminal approver prints the same
/// block) carries the dry run too: the refusal, or the change.
#[test]
fn the_human_list_shows_the_dry_run() {
    let (p, c) = proxy("admission-human", &[], &[]);
    let dep = "adm-human";
    admin_apply(c, "adm-human.json", &deployment(dep, 2));
    let mut shown = Vec::new();
    for replicas in [20, 5] {
        let patch = format!(r#"{{"spec":{{"replicas":{replicas}}}}}"#);
        let k = p.kubectl_meanwhile(&["patch", "deployment", dep, "-p", &patch]);
        let held = p.held_containing(dep);
        let (ok, text, err) = p.approvals_as("alice", &["list"]);
        assert!(ok, "{err}");
        shown.push(text);
        p.answer_as("alice", held["id"].as_str().unwrap(), false, "only looking");
        let (ok, _) = k.join().unwrap();
        assert!(!ok);
    }
    assert!(shown[0].contains(VAP_MESSAGE), "{}", shown[0]);
    assert!(shown[1].contains("spec.replicas: 2 -> 5"), "{}", shown[1]);
}

// --- the chat channel, on the real server ---------------------------------------------------

const CHAT_SECRET: &str = "admission-chat-secret-0123456789abcdef";

/// One message the chat service received: its raw body and JSON.
struct Posted {
    raw: String,
    json: Value,
}

/// Read one HTTP/1.1 request's body (Content-Length) from `s`.
fn read_body(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut headers = HashMap::new();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers
        .get("content-length")
        .map_or(0, |l| l.parse().unwrap());
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    body
}

/// A loopback server that plays the chat service: takes every message, answers `ok` as
/// Slack's incoming webhooks do, and hands it to the test.
fn chat_service() -> (String, mpsc::Receiver<Posted>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let body = read_body(&mut s);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            );
            let raw = String::from_utf8(body).unwrap();
            let json = serde_json::from_str(&raw).unwrap();
            if tx.send(Posted { raw, json }).is_err() {
                break;
            }
        }
    });
    (url, rx)
}

/// POST `body` to the callback URL, signed (`Some((timestamp, signature))`) or not; the
/// status.
fn post(url: &str, body: &str, signed: Option<(u64, &str)>) -> u16 {
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_once('/').unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "POST /{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some((ts, sig)) = signed {
        head.push_str(&format!(
            "X-Kubeleash-Timestamp: {ts}\r\nX-Kubeleash-Signature: {sig}\r\n"
        ));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"))
}

/// A callback signed with `secret` at `ts`.
fn call_back(url: &str, body: &str, ts: u64, secret: &str) -> u16 {
    let sig = kubeleash_tower::signature::sign_callback(secret.as_bytes(), ts, body.as_bytes());
    post(url, body, Some((ts, &sig)))
}

fn callback(id: &str, approve: bool, by: &str, reason: &str) -> String {
    json!({"id": id, "approve": approve, "by": by, "reason": reason}).to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The proxy posting held requests to a chat service, and its callback URL.
fn chat_proxy(
    name: &str,
) -> (
    Proxy,
    &'static cluster::Cluster,
    String,
    mpsc::Receiver<Posted>,
) {
    use std::os::unix::fs::PermissionsExt as _;
    // In the cluster's directory, which goes when the cluster stops.
    let secret: PathBuf = admission_cluster().dir.join(format!("{name}.secret"));
    std::fs::write(&secret, format!("{CHAT_SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (chat_url, messages) = chat_service();
    let chat = format!("chat={chat_url}");
    let (p, c) = proxy(
        name,
        &["--approvals", &chat, "--approvals-callback", "127.0.0.1:0"],
        &[("KUBELEASH_WEBHOOK_SECRET_FILE", &secret)],
    );
    let err = p.stderr();
    let url = err
        .lines()
        .find_map(|l| l.split("approval callbacks at ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the proxy did not print its callback URL:\n{err}"))
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    (p, c, url, messages)
}

/// The text of a chat message's blocks.
fn blocks_text(m: &Posted) -> String {
    m.json["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["text"]["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// On the real server, through the chat channel: the message shows the dry run's diff (masked
/// values only as changed) or admission's refusal; forged, stale, tampered, self-approving and
/// replayed callbacks are refused while the object stays as it is; the one good answer is the
/// one that counts, and cannot be replayed.
#[test]
fn chat_callbacks_on_the_real_server_only_a_signed_fresh_answer_from_a_person_counts() {
    let (p, c, cb, messages) = chat_proxy("admission-chat");
    let next = || {
        messages
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no message reached the chat service:\n{}", p.stderr()))
    };
    let cm = "chat-cm";
    let old_pw = unique("Old-Chat-", 16);
    let new_pw = unique("New-Chat-", 16);
    admin_apply(
        c,
        "chat-cm.json",
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": cm, "namespace": NS},
            "data": {"color": "blue", "db-password": old_pw}}),
    );
    let before = stored(c, "configmap", cm, "{.data.color}").unwrap();
    let patch = json!({"data": {"color": "red", "db-password": new_pw}}).to_string();
    let k = p.kubectl_meanwhile(&["patch", "configmap", cm, "--type", "merge", "-p", &patch]);
    let m = next();
    let id = m.json["kubeleash"]["id"].as_str().unwrap().to_string();
    let text = blocks_text(&m);
    assert!(text.contains("What it would change"), "{text}");
    // Slack's mrkdwn: `>` written as `&gt;`.
    assert!(text.contains("~ data.color: blue -&gt; red"), "{text}");
    let diff = m.json["kubeleash"]["dry_run"]["diff"]
        .as_str()
        .unwrap_or_default();
    assert!(diff.contains("~ data.color: blue -> red"), "{}", m.raw);
    assert!(
        text.contains("~ data.db-password: changed (masked)"),
        "{text}"
    );
    assert_eq!(m.json["kubeleash"]["dry_run"]["status"], 200, "{}", m.raw);
    assert_never_shown("the chat message", &m.raw, &[&old_pw, &new_pw]);

    let t = now();
    let good = callback(&id, true, "alice@example.com", "fine");
    // Forged: another key, no signature, a body changed after signing.
    assert_eq!(
        call_back(&cb, &good, t, "another-secret-0123456789abcdef"),
        401
    );
    assert_eq!(post(&cb, &good, None), 401);
    let sig = kubeleash_tower::signature::sign_callback(CHAT_SECRET.as_bytes(), t, good.as_bytes());
    let tampered = callback(&id, true, "mallory@example.com", "fine");
    assert_eq!(post(&cb, &tampered, Some((t, &sig))), 401);
    // Stale.
    assert_eq!(call_back(&cb, &good, t - 600, CHAT_SECRET), 401);
    // The agent approving itself, however spelled; then the same callback again.
    let own = callback(&id, true, "agent-1", "trust me");
    assert_eq!(call_back(&cb, &own, t, CHAT_SECRET), 403);
    assert_eq!(
        call_back(
            &cb,
            &callback(&id, true, " AGENT-1 ", ""),
            t + 1,
            CHAT_SECRET
        ),
        403
    );
    assert_eq!(call_back(&cb, &own, t, CHAT_SECRET), 401, "a replay");
    assert_eq!(
        stored(c, "configmap", cm, "{.data.color}").as_ref(),
        Some(&before),
        "nothing reached the server"
    );
    // The good answer: 200 only if no refused callback had answered the request.
    assert_eq!(call_back(&cb, &good, t + 2, CHAT_SECRET), 200);
    assert_eq!(call_back(&cb, &good, t + 2, CHAT_SECRET), 401, "a replay");
    let (ok, out) = k.join().unwrap();
    assert!(ok && out.contains("patched"), "{out}");
    let (ok, data) = c.admin(&["get", "configmap", cm, "-n", NS, "-o", "jsonpath={.data}"]);
    assert!(ok, "{data}");
    let data: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data, json!({"color": "red", "db-password": new_pw}));
    let recs = p.records_of(&id, |recs| {
        recs.iter().any(|r| r["response"]["status"] == 200)
    });
    let approvers: Vec<&Value> = recs
        .iter()
        .filter(|r| r["decision"]["approver"].is_string())
        .map(|r| &r["decision"]["approver"])
        .collect();
    assert!(
        !approvers.is_empty() && approvers.iter().all(|a| *a == "alice@example.com"),
        "{recs:#?}"
    );

    // A write admission would refuse: the message says so, with the policy's words.
    let dep = "chat-dep";
    admin_apply(c, "chat-dep.json", &deployment(dep, 2));
    let before = stored(c, "deployment", dep, "{.spec.replicas}").unwrap();
    let k = p.kubectl_meanwhile(&[
        "patch",
        "deployment",
        dep,
        "-p",
        r#"{"spec":{"replicas":20}}"#,
    ]);
    let m = next();
    let id = m.json["kubeleash"]["id"].as_str().unwrap().to_string();
    let text = blocks_text(&m);
    assert!(
        text.contains("The API server would reject this request* (dry run, status 422)")
            && text.contains(VAP_MESSAGE),
        "{text}"
    );
    let no = callback(&id, false, "bob@example.com", "the policy says ten");
    assert_eq!(call_back(&cb, &no, now(), CHAT_SECRET), 200);
    let (ok, out) = k.join().unwrap();
    assert!(
        !ok && out.contains("the policy says ten") && out.contains("bob@example.com"),
        "{out}"
    );
    assert_eq!(
        stored(c, "deployment", dep, "{.spec.replicas}").as_ref(),
        Some(&before)
    );
}

// --- a real validating admission webhook ----------------------------------------------------

/// What the test's webhook says when it denies a ConfigMap.
const WEBHOOK_MESSAGE: &str = "kl-webhook refuses any ConfigMap with a key named forbidden";

/// The identity kubeleash writes upstream with (the operator kubeconfig's client certificate):
/// the reviews of what went through kubeleash are the ones in its name.
const OPERATOR: &str = "kubeleash-operator";

/// The webhook's rule: deny a ConfigMap (as it would be stored) whose data has a key named
/// `forbidden`, allow everything else.
fn deny_forbidden_key() -> webhook::Judge {
    Box::new(|req: &Value| {
        (req["kind"]["kind"] == "ConfigMap" && req["object"]["data"].get("forbidden").is_some())
            .then(|| WEBHOOK_MESSAGE.to_string())
    })
}

/// Every ConfigMap change in `ns` needs a person; reads and discovery pass.
fn webhook_policy(ns: &str) -> String {
    format!(
        r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {{name: webhook-e2e}}
spec:
  rules:
    - {{name: read, effect: allow, verbs: [get, list, watch], apiGroups: ["*"], resources: ["*"], namespaces: [{ns}]}}
    - name: configmap-changes-need-a-human
      effect: approve
      reason: a person looks at every ConfigMap change here
      verbs: [create, update, patch]
      apiGroups: [""]
      resources: [configmaps]
      namespaces: [{ns}]
    - {{name: discovery, effect: allow, verbs: [get], nonResourceURLs: [/api, "/api/*", /apis, "/apis/*", /version, "/openapi/*"]}}
"#
    )
}

/// The webhook's name (and its configuration's) for `ns`.
fn webhook_name(ns: &str) -> String {
    format!("deny-forbidden.{ns}.kubeleash.dev")
}

/// A namespace of the test's own (`ns`) where the operator may write, the test's webhook
/// registered for it and in force, and a proxy whose agent works there. The webhook's
/// registration is deleted when the returned guard is dropped.
fn webhook_proxy(
    name: &str,
    ns: &str,
) -> (
    Proxy,
    webhook::Registered<'static>,
    &'static cluster::Cluster,
) {
    process::require_kubectl();
    let c = cluster::cluster();
    let objects = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: kubeleash-operator-write, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubeleash-operator-write}}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: {OPERATOR}}}
"#
    );
    let f = c.dir.join(format!("{ns}.yaml"));
    std::fs::write(&f, objects).unwrap();
    let (ok, out) = c.admin(&["apply", "-f", f.to_str().unwrap()]);
    assert!(ok, "creating {ns}: {out}");
    let probe = [
        "create",
        "configmap",
        "kl-webhook-probe",
        "--from-literal=forbidden=probe",
        "-n",
        ns,
        "--dry-run=server",
    ];
    let hook = webhook::Webhook::start(deny_forbidden_key()).register(
        c,
        &webhook_name(ns),
        ns,
        &probe,
        WEBHOOK_MESSAGE,
    );
    let policy = webhook_policy(ns);
    let operator = c.operator_cert_kubeconfig();
    let p = Proxy::start(&Setup {
        name,
        policy: &policy,
        operator_kubeconfig: &operator,
        namespace: ns,
        extra: &[],
        env: &[],
    });
    (p, hook, c)
}

/// The reviews the webhook was sent of ConfigMap `name` in `ns` in kubeleash's name (not the
/// admin's, who sets objects up).
fn reviews_through_kubeleash(
    hook: &webhook::Registered<'_>,
    ns: &str,
    name: &str,
) -> Vec<webhook::Review> {
    hook.reviews()
        .into_iter()
        .filter(|r| {
            r.request["namespace"] == ns && r.request["name"] == name && r.user() == OPERATOR
        })
        .collect()
}

/// The dry run an approver is shown of a write the webhook denies: refused with the webhook's
/// code and the API server's words naming the webhook and quoting its message; nothing to
/// diff.
fn assert_denied_by_webhook(held: &Value, ns: &str) {
    let dry = &held["dry_run"];
    assert_eq!(
        dry["status"],
        webhook::DENY_CODE,
        "the webhook's code: {held}"
    );
    let rejected = dry["rejected"].as_str().unwrap_or_default();
    assert!(
        rejected.contains(&format!(
            "admission webhook \"{}\" denied the request",
            webhook_name(ns)
        )) && rejected.contains(WEBHOOK_MESSAGE),
        "the approver sees the webhook's own words: {held}"
    );
    assert_eq!(dry["changes"], json!([]), "{held}");
    assert_eq!(dry["diff"], "", "{held}");
}

/// The one review kubeleash's dry run of `name` caused, before anyone answered: a dry run, of
/// `operation`, judged on the object carrying `key`; and how long after `started` it came.
fn the_one_dry_run_review(
    hook: &webhook::Registered<'_>,
    ns: &str,
    name: &str,
    operation: &str,
    key: &str,
    started: Instant,
) -> Duration {
    let sent = reviews_through_kubeleash(hook, ns, name);
    assert_eq!(
        sent.len(),
        1,
        "exactly one review, the dry run's, before anyone answered: {sent:#?}"
    );
    let r = &sent[0];
    assert!(r.dry_run(), "{r:#?}");
    assert_eq!(r.request["operation"], operation, "{r:#?}");
    assert!(
        r.request["object"]["data"].get(key).is_some(),
        "judged on the object the write would store: {r:#?}"
    );
    r.at.duration_since(started)
}

/// A held create and a held patch that the webhook denies: the approver is shown the
/// webhook's code and message; the webhook was asked once, as a dry run, before anyone
/// answered; nothing reaches the API server while they wait, and after they are denied the
/// webhook has seen no write that was not a dry run.
#[test]
fn a_write_a_real_webhook_denies_is_shown_as_denied_and_never_sent() {
    let ns = "kl-webhook-deny";
    let (p, hook, c) = webhook_proxy("webhook-deny", ns);

    // A create carrying the forbidden key (kubectl sends it as protobuf).
    let cm = "wh-created";
    let started = Instant::now();
    let k = p.kubectl_meanwhile(&[
        "create",
        "configmap",
        cm,
        "--from-literal=color=red",
        "--from-literal=forbidden=Kl-Created-Value",
    ]);
    let held = p.held_containing(cm);
    let listed = started.elapsed();
    assert_eq!(held["method"], "POST", "{held}");
    assert_eq!(held["rule"], "configmap-changes-need-a-human", "{held}");
    assert_denied_by_webhook(&held, ns);
    let reached = the_one_dry_run_review(&hook, ns, cm, "CREATE", "forbidden", started);
    eprintln!(
        "held create: the webhook had the dry run {} ms after kubectl started; listed for a \
         person within {} ms",
        reached.as_millis(),
        listed.as_millis()
    );
    assert_eq!(stored_in(c, ns, "configmap", cm, ""), None);
    p.answer_as(
        "alice",
        held["id"].as_str().unwrap(),
        false,
        "the webhook says no",
    );
    let (ok, out) = k.join().unwrap();
    assert!(!ok && out.contains("the webhook says no"), "{out}");
    assert_eq!(stored_in(c, ns, "configmap", cm, ""), None);
    let sent = reviews_through_kubeleash(&hook, ns, cm);
    assert!(
        sent.len() == 1 && sent.iter().all(webhook::Review::dry_run),
        "denied, nothing but the dry run went to the API server: {sent:#?}"
    );

    // A patch that adds the key to a ConfigMap the admin made.
    let cm = "wh-patched";
    admin_apply(
        c,
        "wh-patched.json",
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": cm, "namespace": ns}, "data": {"color": "blue"}}),
    );
    let before = stored_in(c, ns, "configmap", cm, "{.data}").unwrap();
    let started = Instant::now();
    let k = p.kubectl_meanwhile(&[
        "patch",
        "configmap",
        cm,
        "--type",
        "merge",
        "-p",
        r#"{"data":{"forbidden":"Kl-Patched-Value"}}"#,
    ]);
    let held = p.held_containing(cm);
    assert_eq!(held["method"], "PATCH", "{held}");
    assert_denied_by_webhook(&held, ns);
    the_one_dry_run_review(&hook, ns, cm, "UPDATE", "forbidden", started);
    assert_eq!(
        stored_in(c, ns, "configmap", cm, "{.data}").as_ref(),
        Some(&before)
    );
    p.answer_as(
        "alice",
        held["id"].as_str().unwrap(),
        false,
        "the webhook says no",
    );
    let (ok, out) = k.join().unwrap();
    assert!(!ok && out.contains("the webhook says no"), "{out}");
    assert_eq!(
        stored_in(c, ns, "configmap", cm, "{.data}").as_ref(),
        Some(&before)
    );
    let sent = reviews_through_kubeleash(&hook, ns, cm);
    assert!(
        sent.len() == 1 && sent.iter().all(webhook::Review::dry_run),
        "denied, nothing but the dry run went to the API server: {sent:#?}"
    );
    drop(hook);
    assert_unregistered(c, ns);
}

/// A held create and a held patch that the webhook allows: the approver is shown the change
/// the dry run found (the webhook asked once, as a dry run); approved, the webhook is asked
/// again for the real write, and the API server stores it.
#[test]
fn a_write_a_real_webhook_allows_shows_its_change_and_is_stored_once_approved() {
    let ns = "kl-webhook-allow";
    let (p, hook, c) = webhook_proxy("webhook-allow", ns);

    let cm = "wh-new";
    let started = Instant::now();
    let k = p.kubectl_meanwhile(&["create", "configmap", cm, "--from-literal=color=green"]);
    let held = p.held_containing(cm);
    let listed = started.elapsed();
    let dry = &held["dry_run"];
    assert_eq!(dry["status"], 201, "a create's dry run: {held}");
    assert!(dry["rejected"].is_null(), "{held}");
    assert!(
        dry["diff"]
            .as_str()
            .unwrap_or_default()
            .lines()
            .any(|l| l == "+ data.color: green"),
        "{held}"
    );
    let reached = the_one_dry_run_review(&hook, ns, cm, "CREATE", "color", started);
    eprintln!(
        "held create (allowed): the webhook had the dry run {} ms after kubectl started; \
         listed for a person within {} ms",
        reached.as_millis(),
        listed.as_millis()
    );
    assert_eq!(stored_in(c, ns, "configmap", cm, ""), None);
    p.answer_as("alice", held["id"].as_str().unwrap(), true, "");
    let (ok, out) = k.join().unwrap();
    assert!(
        ok && out.contains(&format!("configmap/{cm} created")),
        "{out}"
    );
    let after = stored_in(c, ns, "configmap", cm, "{.data.color}").unwrap();
    assert!(after.ends_with(" green"), "{after}");
    let sent = reviews_through_kubeleash(&hook, ns, cm);
    let real: Vec<_> = sent.iter().filter(|r| !r.dry_run()).collect();
    assert!(
        sent.len() == 2 && real.len() == 1 && real[0].request["operation"] == "CREATE",
        "the dry run, then the approved create: {sent:#?}"
    );

    // A patch of the object just made: the diff is the change, then it is stored.
    let started = Instant::now();
    let k = p.kubectl_meanwhile(&[
        "patch",
        "configmap",
        cm,
        "--type",
        "merge",
        "-p",
        r#"{"data":{"color":"orange","size":"large"}}"#,
    ]);
    let held = p.held_containing(cm);
    let dry = &held["dry_run"];
    assert_eq!(dry["status"], 200, "{held}");
    assert!(dry["rejected"].is_null(), "{held}");
    let diff = dry["diff"].as_str().unwrap_or_default();
    assert!(
        diff.contains("~ data.color: green -> orange") && diff.contains("+ data.size: large"),
        "{held}"
    );
    let before = stored_in(c, ns, "configmap", cm, "{.data.color}");
    assert_eq!(before.as_ref(), Some(&after), "nothing stored while held");
    let sent = reviews_through_kubeleash(&hook, ns, cm);
    let dry_runs: Vec<_> = sent
        .iter()
        .filter(|r| r.dry_run() && r.at >= started)
        .collect();
    assert!(
        sent.len() == 3 && dry_runs.len() == 1 && dry_runs[0].request["operation"] == "UPDATE",
        "one more review, the patch's dry run: {sent:#?}"
    );
    p.answer_as("alice", held["id"].as_str().unwrap(), true, "");
    let (ok, out) = k.join().unwrap();
    assert!(ok && out.contains("patched"), "{out}");
    let (ok, data) = c.admin(&["get", "configmap", cm, "-n", ns, "-o", "jsonpath={.data}"]);
    assert!(ok, "{data}");
    let data: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data, json!({"color": "orange", "size": "large"}));
    let sent = reviews_through_kubeleash(&hook, ns, cm);
    let updates: Vec<_> = sent
        .iter()
        .filter(|r| !r.dry_run() && r.request["operation"] == "UPDATE")
        .collect();
    assert!(
        sent.len() == 4
            && updates.len() == 1
            && updates[0].request["object"]["data"]["size"] == "large",
        "the approved patch, once: {sent:#?}"
    );
    drop(hook);
    assert_unregistered(c, ns);
}

/// The webhook's registration for `ns` is gone (its guard was dropped): nothing else on the
/// shared cluster meets a webhook whose server has stopped.
fn assert_unregistered(c: &cluster::Cluster, ns: &str) {
    let (ok, out) = c.admin(&[
        "get",
        "validatingwebhookconfiguration",
        &webhook_name(ns),
        "-o",
        "name",
    ]);
    assert!(!ok && out.contains("NotFound"), "{out}");
}

/// A ConfigMap patch that sets a key no masker hides to a short value: the webhook's message
/// is the approver's reason to deny, and nothing in it is masked.
#[test]
fn a_webhook_refusal_of_a_configmap_patch_is_shown_whatever_its_values() {
    let ns = "kl-webhook-short";
    let (p, hook, c) = webhook_proxy("webhook-short", ns);
    let cm = "wh-short";
    admin_apply(
        c,
        "wh-short.json",
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": cm, "namespace": ns}, "data": {"color": "blue"}}),
    );
    let mut shown = Vec::new();
    for value in ["on", "webhook"] {
        let patch = json!({"data": {"forbidden": value}}).to_string();
        let k = p.kubectl_meanwhile(&["patch", "configmap", cm, "--type", "merge", "-p", &patch]);
        let held = p.held_containing(cm);
        p.answer_as("alice", held["id"].as_str().unwrap(), false, "no");
        let (ok, _) = k.join().unwrap();
        assert!(!ok);
        shown.push(held["dry_run"].clone());
    }
    drop(hook);
    assert_unregistered(c, ns);
    for dry in &shown {
        let rejected = dry["rejected"].as_str().unwrap_or_default();
        assert!(
            rejected.contains(&format!(
                "admission webhook \"{}\" denied the request: {WEBHOOK_MESSAGE}",
                webhook_name(ns)
            )),
            "{shown:#?}"
        );
    }
}
