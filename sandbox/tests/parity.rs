//! Behaviours a real kube-apiserver (v1.34, `tests/cluster/`) showed and the sandbox now
//! copies: server-side apply conflicts, the authorization.k8s.io reviews, CustomResourceDefinitions,
//! and OpenAPI schemas for `kubectl explain`. kubectl where the behaviour is kubectl's, raw HTTP
//! where the exact body matters. These tests need kubectl and fail without it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write as _;
use std::process::Stdio;

use common::Kubectl;
use kubeleash_sandbox::{Sandbox, Seed};
use serde_json::{Value, json};
use tokio::runtime::Runtime;

fn setup() -> (Runtime, Sandbox, Kubectl) {
    let bin = common::kubectl_path().expect("these tests need kubectl on this machine");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sandbox = rt.block_on(common::start(Seed::Default));
    let kubectl = Kubectl::new(bin, &sandbox);
    (rt, sandbox, kubectl)
}

/// Run kubectl with `stdin` as its standard input; (success, stdout, stderr).
fn with_stdin(k: &Kubectl, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = k
        .command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn raw_json(
    rt: &Runtime,
    sandbox: &Sandbox,
    method: &str,
    target: &str,
    content_type: &str,
    body: &Value,
) -> (u16, Value) {
    let body = serde_json::to_vec(body).unwrap();
    let r = rt.block_on(common::raw(
        sandbox,
        method,
        target,
        &[
            ("Content-Type", content_type),
            ("Accept", "application/json"),
        ],
        &body,
    ));
    (r.status, r.json())
}

const APPLY: &str = "application/apply-patch+yaml";

#[test]
fn server_side_apply_conflicts_like_the_api_server() {
    let (rt, sandbox, k) = setup();
    let alice = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa1\n  namespace: dev\n  labels: {team: a}\ndata:\n  a: \"1\"\n  b: \"2\"\n";
    let bob = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa1\n  namespace: dev\n  labels: {team: b}\ndata:\n  a: \"9\"\n  c: \"3\"\n";
    let (ok, _, err) = with_stdin(
        &k,
        &["apply", "--server-side", "--field-manager=alice", "-f", "-"],
        alice,
    );
    assert!(ok, "{err}");
    let (ok, _, err) = with_stdin(
        &k,
        &["apply", "--server-side", "--field-manager=bob", "-f", "-"],
        bob,
    );
    assert!(!ok, "a conflicting apply must fail");
    assert!(
        err.contains(
            "Apply failed with 2 conflicts: conflicts with \"alice\":\n- .data.a\n- .metadata.labels.team"
        ),
        "{err}"
    );
    assert!(err.contains("--force-conflicts"), "{err}");

    // The Status body, as kube-apiserver 1.34 wrote it for the same two applies.
    let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "ssa1", "namespace": "dev", "labels": {"team": "b"}},
        "data": {"a": "9", "c": "3"}});
    let target = "/api/v1/namespaces/dev/configmaps/ssa1?fieldManager=bob";
    let (code, status) = raw_json(&rt, &sandbox, "PATCH", target, APPLY, &cfg);
    assert_eq!(code, 409);
    assert_eq!(
        status,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Apply failed with 2 conflicts: conflicts with \"alice\":\n- .data.a\n- .metadata.labels.team",
            "reason": "Conflict",
            "details": {"causes": [
                {"reason": "FieldManagerConflict", "message": "conflict with \"alice\"", "field": ".data.a"},
                {"reason": "FieldManagerConflict", "message": "conflict with \"alice\"", "field": ".metadata.labels.team"}]},
            "code": 409})
    );

    // An Update (kubectl patch) takes the fields it changes from the applier; a later apply that
    // changes them conflicts with the updater, named with its API version.
    k.ok(&[
        "patch",
        "cm",
        "ssa1",
        "-n",
        "dev",
        "--field-manager=editor",
        "-p",
        r#"{"data":{"b":"22","e":"5"}}"#,
    ]);
    let cfg2 = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "ssa1", "namespace": "dev"}, "data": {"a": "1", "b": "7", "e": "6"}});
    let (code, status) = raw_json(&rt, &sandbox, "PATCH", target, APPLY, &cfg2);
    assert_eq!(code, 409, "{status}");
    assert_eq!(
        status["message"],
        "Apply failed with 2 conflicts: conflicts with \"editor\" using v1:\n- .data.b\n- .data.e"
    );
    assert_eq!(
        status["details"]["causes"][0]["message"],
        "conflict with \"editor\" using v1"
    );

    // Forced, bob takes the fields: editor's entry empties and goes; alice keeps what bob did
    // not change (a, set to the value she applied, is then owned by both).
    let (code, cm) = raw_json(
        &rt,
        &sandbox,
        "PATCH",
        &format!("{target}&force=true"),
        APPLY,
        &cfg2,
    );
    assert_eq!(code, 200, "{cm}");
    assert_eq!(cm["data"], json!({"a": "1", "b": "7", "e": "6"}));
    let managed: Vec<(&str, &str, Value)> = cm["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["manager"].as_str().unwrap(),
                e["operation"].as_str().unwrap(),
                e["fieldsV1"].clone(),
            )
        })
        .collect();
    assert_eq!(
        managed,
        vec![
            (
                "alice",
                "Apply",
                json!({"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:team": {}}}})
            ),
            (
                "bob",
                "Apply",
                json!({"f:data": {"f:a": {}, "f:b": {}, "f:e": {}}})
            ),
        ]
    );

    // kubectl's --force-conflicts is the same force=true.
    let (ok, _, err) = with_stdin(
        &k,
        &[
            "apply",
            "--server-side",
            "--field-manager=carol",
            "--force-conflicts",
            "-f",
            "-",
        ],
        bob,
    );
    assert!(ok, "{err}");
    let team = k.ok(&[
        "get",
        "cm",
        "ssa1",
        "-n",
        "dev",
        "-o",
        "jsonpath={.metadata.labels.team} {.data.a}",
    ]);
    assert_eq!(team, "b 9");

    // Keyed list items print with their keys, defaulted protocol included.
    // `kubectl create deployment` sends protobuf; it sets replicas: 1 itself.
    k.ok(&[
        "create",
        "deployment",
        "ssad",
        "--image=nginx:1",
        "-n",
        "dev",
        "--field-manager=same",
    ]);
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ssad"},
        "spec": {"template": {"spec": {"containers": [{"name": "nginx", "ports": [{"containerPort": 80, "name": "http"}]}]}}}});
    let dt = "/apis/apps/v1/namespaces/dev/deployments/ssad?fieldManager=x1";
    let (code, body) = raw_json(&rt, &sandbox, "PATCH", dt, APPLY, &d);
    assert_eq!(code, 200, "{body}");
    let d2 = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ssad"},
        "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:2", "ports": [{"containerPort": 80, "name": "web"}]}]}}}});
    let dt2 = "/apis/apps/v1/namespaces/dev/deployments/ssad?fieldManager=x2";
    let (code, status) = raw_json(&rt, &sandbox, "PATCH", dt2, APPLY, &d2);
    assert_eq!(code, 409, "{status}");
    assert_eq!(
        status["message"],
        "Apply failed with 3 conflicts: conflicts with \"same\" using apps/v1:\n- .spec.replicas\n- .spec.template.spec.containers[name=\"nginx\"].image\nconflicts with \"x1\":\n- .spec.template.spec.containers[name=\"nginx\"].ports[containerPort=80,protocol=\"TCP\"].name"
    );

    // force is for apply patches only.
    let (code, status) = raw_json(
        &rt,
        &sandbox,
        "PATCH",
        "/api/v1/namespaces/dev/configmaps/ssa1?force=true",
        "application/merge-patch+json",
        &json!({"data": {"z": "1"}}),
    );
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch"
    );
    rt.block_on(sandbox.shutdown());
}

#[test]
fn access_reviews_allow_everything_in_the_api_servers_shapes() {
    let (rt, sandbox, k) = setup();
    assert_eq!(
        k.ok(&["auth", "can-i", "get", "secrets", "-n", "dev"]),
        "yes\n"
    );
    assert_eq!(k.ok(&["auth", "can-i", "delete", "namespaces"]), "yes\n");
    let list = k.ok(&["auth", "can-i", "--list", "-n", "dev"]);
    let star = list
        .lines()
        .find(|l| l.starts_with("*.*"))
        .unwrap_or_else(|| panic!("no *.* rule in:\n{list}"));
    assert!(star.ends_with("[*]"), "{list}");
    assert!(
        list.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["[*]", "[]", "[*]"]),
        "{list}"
    );
    let api = k.ok(&[
        "api-resources",
        "--api-group=authorization.k8s.io",
        "-o",
        "name",
    ]);
    assert_eq!(
        api,
        "localsubjectaccessreviews.authorization.k8s.io\nselfsubjectaccessreviews.authorization.k8s.io\nselfsubjectrulesreviews.authorization.k8s.io\nsubjectaccessreviews.authorization.k8s.io\n"
    );

    let base = "/apis/authorization.k8s.io/v1";
    let ssar = json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
        "spec": {"resourceAttributes": {"namespace": "dev", "verb": "get", "resource": "secrets"}}});
    let (code, body) = raw_json(
        &rt,
        &sandbox,
        "POST",
        &format!("{base}/selfsubjectaccessreviews"),
        "application/json",
        &ssar,
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["status"], json!({"allowed": true}));
    assert_eq!(body["spec"], ssar["spec"]);
    assert_eq!(
        body["metadata"]["managedFields"][0]["fieldsV1"],
        json!({"f:spec": {"f:resourceAttributes": {".": {}, "f:namespace": {}, "f:resource": {}, "f:verb": {}}}})
    );

    let bad = json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1", "spec": {}});
    let (code, body) = raw_json(
        &rt,
        &sandbox,
        "POST",
        &format!("{base}/selfsubjectaccessreviews"),
        "application/json",
        &bad,
    );
    assert_eq!(code, 422);
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": ".authorization.k8s.io \"\" is invalid: spec.resourceAttributes: Invalid value: null: exactly one of nonResourceAttributes or resourceAttributes must be specified",
            "reason": "Invalid",
            "details": {"group": "authorization.k8s.io", "causes": [{"reason": "FieldValueInvalid",
                "message": "Invalid value: null: exactly one of nonResourceAttributes or resourceAttributes must be specified",
                "field": "spec.resourceAttributes"}]},
            "code": 422})
    );

    let sar = json!({"kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
        "spec": {"user": "bob", "resourceAttributes": {"verb": "get", "resource": "secrets"}}});
    let (code, body) = raw_json(
        &rt,
        &sandbox,
        "POST",
        &format!("{base}/subjectaccessreviews"),
        "application/json",
        &sar,
    );
    assert_eq!((code, &body["status"]), (201, &json!({"allowed": true})));
    let mut nobody = sar.clone();
    nobody["spec"]["user"] = json!(null);
    let (code, body) = raw_json(
        &rt,
        &sandbox,
        "POST",
        &format!("{base}/subjectaccessreviews"),
        "application/json",
        &nobody,
    );
    assert_eq!(code, 422, "{body}");
    assert_eq!(
        body["message"],
        ".authorization.k8s.io \"\" is invalid: spec.user: Invalid value: \"\": at least one of user or group must be specified"
    );

    let ssrr = json!({"kind": "SelfSubjectRulesReview", "apiVersion": "authorization.k8s.io/v1", "spec": {"namespace": "dev"}});
    let (code, body) = raw_json(
        &rt,
        &sandbox,
        "POST",
        &format!("{base}/selfsubjectrulesreviews"),
        "application/json",
        &ssrr,
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        body["status"]["resourceRules"][2],
        json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})
    );
    assert_eq!(
        body["status"]["nonResourceRules"][2],
        json!({"verbs": ["*"], "nonResourceURLs": ["*"]})
    );
    assert_eq!(body["status"]["incomplete"], json!(false));
    let (code, body) = raw_json(
        &rt,
        &sandbox,
        "POST",
        &format!("{base}/selfsubjectrulesreviews"),
        "application/json",
        &json!({"kind": "SelfSubjectRulesReview", "apiVersion": "authorization.k8s.io/v1", "spec": {}}),
    );
    assert_eq!(
        (code, body["message"].as_str()),
        (400, Some("no namespace on request"))
    );

    let r = rt.block_on(common::raw(
        &sandbox,
        "GET",
        &format!("{base}/selfsubjectaccessreviews"),
        &[],
        b"",
    ));
    assert_eq!(r.status, 405);
    rt.block_on(sandbox.shutdown());
}

const WIDGETS_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names:
    plural: widgets
    kind: Widget
    shortNames: [wd]
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        description: A widget.
        properties:
          spec:
            type: object
            description: What the widget should be.
            properties:
              size:
                type: integer
                description: How big.
              color:
                type: string
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
    subresources:
      status: {}
    additionalPrinterColumns:
    - name: Size
      type: integer
      jsonPath: .spec.size
"#;

#[test]
fn custom_resource_definitions_serve_their_resources_until_deleted() {
    let (rt, sandbox, k) = setup();
    let err = k.fails(&["get", "widgets", "-n", "dev"]);
    assert!(
        err.contains("the server doesn't have a resource type \"widgets\""),
        "{err}"
    );
    let (ok, out, err) = with_stdin(&k, &["apply", "-f", "-"], WIDGETS_CRD);
    assert!(ok, "{out}{err}");
    k.ok(&[
        "wait",
        "--for=condition=established",
        "crd/widgets.example.com",
        "--timeout=10s",
    ]);
    let crd: Value =
        serde_json::from_str(&k.ok(&["get", "crd", "widgets.example.com", "-o", "json"])).unwrap();
    assert_eq!(crd["spec"]["names"]["singular"], "widget");
    assert_eq!(crd["spec"]["names"]["listKind"], "WidgetList");
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "Widget");
    assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));

    // Discovery: kubectl finds the resource by plural, short name and in api-resources.
    let api = k.ok(&["api-resources", "--api-group=example.com"]);
    assert!(
        api.contains("widgets") && api.contains("wd") && api.contains("Widget"),
        "{api}"
    );

    let w1 = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\n  namespace: dev\nspec:\n  size: 3\n  color: red\n";
    let (ok, out, err) = with_stdin(&k, &["apply", "-f", "-"], w1);
    assert!(ok, "{out}{err}");
    let table = k.ok(&["get", "wd", "-n", "dev"]);
    assert!(table.starts_with("NAME   SIZE"), "{table}");
    assert!(table.contains("w1     3"), "{table}");
    let got: Value =
        serde_json::from_str(&k.ok(&["get", "widget", "w1", "-n", "dev", "-o", "json"])).unwrap();
    assert_eq!(got["spec"], json!({"size": 3, "color": "red"}));
    assert_eq!(got["metadata"]["generation"], 1);
    k.ok(&[
        "patch",
        "widget",
        "w1",
        "-n",
        "dev",
        "--type=merge",
        "-p",
        r#"{"spec":{"size":4}}"#,
    ]);
    let all = k.ok(&["get", "widgets", "-A", "-o", "name"]);
    assert_eq!(all, "widget.example.com/w1\n");

    // The schema prunes unknown fields (with a warning) and types are checked.
    let body = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w2"},
        "spec": {"size": 1, "bogus": true}});
    let r = rt.block_on(common::raw(
        &sandbox,
        "POST",
        "/apis/example.com/v1/namespaces/dev/widgets",
        &[("Content-Type", "application/json")],
        &serde_json::to_vec(&body).unwrap(),
    ));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.header("warning"),
        Some("299 - \"unknown field \\\"spec.bogus\\\"\"")
    );
    assert_eq!(r.json()["spec"], json!({"size": 1}));
    let bad = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w3"},
        "spec": {"size": "big"}});
    let (code, status) = raw_json(
        &rt,
        &sandbox,
        "POST",
        "/apis/example.com/v1/namespaces/dev/widgets",
        "application/json",
        &bad,
    );
    assert_eq!(code, 422);
    assert_eq!(
        status["message"],
        "Widget.example.com \"w3\" is invalid: spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\""
    );
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldValueTypeInvalid"
    );
    let (code, status) = raw_json(
        &rt,
        &sandbox,
        "POST",
        "/apis/example.com/v1/namespaces/dev/widgets?fieldValidation=Strict",
        "application/json",
        &body,
    );
    assert_eq!(code, 400);
    assert_eq!(
        status["message"],
        "Widget in version \"v1\" cannot be handled as a Widget: strict decoding error: unknown field \"spec.bogus\""
    );

    // Status is its own subresource: the main resource ignores it.
    k.ok(&[
        "patch",
        "widget",
        "w1",
        "-n",
        "dev",
        "--type=merge",
        "--subresource=status",
        "-p",
        r#"{"status":{"ready":true}}"#,
    ]);
    let st = k.ok(&[
        "get",
        "widget",
        "w1",
        "-n",
        "dev",
        "-o",
        "jsonpath={.status.ready} {.metadata.generation}",
    ]);
    assert_eq!(st, "true 2");

    // A CR deleted answers with a Status, as the API server does for custom resources.
    let r = rt.block_on(common::raw(
        &sandbox,
        "DELETE",
        "/apis/example.com/v1/namespaces/dev/widgets/w2",
        &[],
        b"",
    ));
    assert_eq!((r.status, r.json()["kind"].as_str()), (200, Some("Status")));

    // Watch the widgets while the CRD goes: the objects are deleted, then the resource is gone.
    let events = {
        let sandbox_ref = &sandbox;
        rt.block_on(async {
            // The CRD goes once the watch is open (its first event in: event, not time).
            let open = tokio::sync::Notify::new();
            let watch = common::stream_until(
                sandbox_ref,
                "/apis/example.com/v1/namespaces/dev/widgets?watch=1",
                &[],
                |t| {
                    if t.contains("\"ADDED\"") {
                        open.notify_one();
                    }
                    t.contains("\"DELETED\"")
                },
            );
            let delete = async {
                open.notified().await;
                tokio::task::spawn_blocking({
                    let bin = common::kubectl_path().unwrap();
                    let server = sandbox_ref.url();
                    move || {
                        std::process::Command::new(bin)
                            .args(["--server", &server, "delete", "crd", "widgets.example.com"])
                            .env_remove("KUBECONFIG")
                            .output()
                            .unwrap()
                    }
                })
                .await
                .unwrap()
            };
            let (events, out) = tokio::join!(watch, delete);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            events
        })
    };
    assert!(
        events.contains("\"ADDED\"") && events.contains("\"DELETED\""),
        "{events}"
    );
    // kubectl's discovery cache still names the resource; the server no longer serves it.
    let err = k.fails(&["get", "widgets", "-n", "dev"]);
    assert!(
        err.contains("the server could not find the requested resource")
            || err.contains("the server doesn't have a resource type \"widgets\""),
        "{err}"
    );
    let r = rt.block_on(common::raw(
        &sandbox,
        "GET",
        "/apis/example.com/v1",
        &[],
        b"",
    ));
    assert_eq!(r.status, 404);
    let r = rt.block_on(common::raw(
        &sandbox,
        "GET",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
        &[],
        b"",
    ));
    assert_eq!(r.status, 404);
    rt.block_on(sandbox.shutdown());
}

#[test]
fn openapi_schemas_serve_kubectl_explain_and_apply() {
    let (rt, sandbox, k) = setup();
    let containers = k.ok(&["explain", "pod.spec.containers"]);
    assert!(
        containers.contains("KIND:       Pod")
            && containers.contains("FIELD: containers <[]Container>")
            && containers.contains("image\t<string>")
            && containers.contains("List of containers belonging to the pod."),
        "{containers}"
    );
    let spec = k.ok(&["explain", "deployment.spec"]);
    assert!(
        spec.contains("GROUP:      apps")
            && spec.contains("FIELD: spec <DeploymentSpec>")
            && spec.contains("template\t<PodTemplateSpec> -required-"),
        "{spec}"
    );
    for kind in [
        "service",
        "configmap",
        "secret",
        "serviceaccount",
        "namespace",
        "role",
        "crd",
    ] {
        let out = k.ok(&["explain", kind]);
        assert!(
            out.contains("DESCRIPTION:") && out.contains("metadata\t<ObjectMeta>"),
            "{out}"
        );
    }
    let recursive = k.ok(&["explain", "pod.spec.volumes", "--recursive"]);
    assert!(recursive.contains("secretName\t<string>"), "{recursive}");

    // Client-side apply (validates through the schemas, merges by their patch keys) still works,
    // twice, the second time as a patch.
    let deploy = |image: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n  namespace: dev\nspec:\n  selector:\n    matchLabels: {{app: api}}\n  template:\n    metadata:\n      labels: {{app: api}}\n    spec:\n      containers:\n      - name: api\n        image: {image}\n        env:\n        - {{name: A, value: \"1\"}}\n"
        )
    };
    let (ok, out, err) = with_stdin(&k, &["apply", "-f", "-"], &deploy("api:1"));
    assert!(
        ok && out.contains("deployment.apps/api created"),
        "{out}{err}"
    );
    let (ok, out, err) = with_stdin(&k, &["apply", "-f", "-"], &deploy("api:2"));
    assert!(
        ok && out.contains("deployment.apps/api configured"),
        "{out}{err}"
    );
    let image = k.ok(&[
        "get",
        "deploy",
        "api",
        "-n",
        "dev",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(image, "api:2");
    // Unknown fields are still reported by the server (kubectl defers validation to it).
    let bad = deploy("api:3").replace(
        "      - name: api\n",
        "      - name: api\n        imagePullPolicyy: Always\n",
    );
    let (ok, _, err) = with_stdin(&k, &["apply", "-f", "-"], &bad);
    assert!(
        !ok && err.contains("unknown field \"spec.template.spec.containers[0].imagePullPolicyy\""),
        "{err}"
    );

    // A CRD's schema is published too, so its kind can be explained.
    let (ok, out, err) = with_stdin(&k, &["apply", "-f", "-"], WIDGETS_CRD);
    assert!(ok, "{out}{err}");
    let widget = k.ok(&["explain", "widget.spec"]);
    assert!(
        widget.contains("GROUP:      example.com")
            && widget.contains("What the widget should be.")
            && widget.contains("size\t<integer>"),
        "{widget}"
    );

    // The documents themselves.
    let root = rt
        .block_on(common::raw(&sandbox, "GET", "/openapi/v3", &[], b""))
        .json();
    for gv in [
        "api/v1",
        "apis/apps/v1",
        "apis/example.com/v1",
        "apis/authorization.k8s.io/v1",
    ] {
        assert!(
            root["paths"][gv]["serverRelativeURL"].is_string(),
            "{gv} missing"
        );
    }
    let v2 = rt.block_on(common::raw(
        &sandbox,
        "GET",
        "/openapi/v2",
        &[("Accept", "application/json")],
        b"",
    ));
    assert_eq!(v2.status, 200);
    let v2 = v2.json();
    assert_eq!(v2["swagger"], "2.0");
    for name in [
        "io.k8s.api.core.v1.Pod",
        "io.k8s.api.apps.v1.Deployment",
        "com.example.v1.Widget",
    ] {
        assert!(
            v2["definitions"][name]["x-kubernetes-group-version-kind"].is_array(),
            "{name}"
        );
    }
    rt.block_on(sandbox.shutdown());
}
