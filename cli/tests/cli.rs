//! The `kubeleash` binary as a user runs it: `eval` prints exactly one JSON object and exits 0
//! whatever it decides, 2 with the errors on stderr for bad usage or a policy that does not
//! compile; `test` exits 0, 1 or 2; `import-rbac` writes a policy that compiles.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests"
)]

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kubeleash"))
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn example() -> PathBuf {
    repo("examples/agents.yaml")
}

/// A directory of one test's own, removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("kubeleash-cli-tests-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A file in the directory, written now.
    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// The keys of a JSON object, in the order they were written, and those of its `request`
/// object when that is one.
#[derive(Default)]
struct Keys {
    top: Vec<String>,
    request: Option<Vec<String>>,
}

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Keys::default();
                while let Some(k) = map.next_key::<String>()? {
                    if k == "request" {
                        keys.request = map.next_value::<Option<Keys>>()?.map(|k| k.top);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                    keys.top.push(k);
                }
                Ok(keys)
            }
        }
        d.deserialize_map(V)
    }
}

const REQUEST_KEYS: [&str; 9] = [
    "resourceRequest",
    "verb",
    "apiGroup",
    "apiVersion",
    "namespace",
    "resource",
    "subresource",
    "name",
    "path",
];

/// Run `kubeleash eval`, check it printed exactly one JSON object with the documented keys in
/// order and exited 0, and return the object.
fn eval(args: &[&str]) -> Value {
    eval_output(&run(bin().arg("eval").args(args)))
}

fn eval_output(o: &Output) -> Value {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
    let out = stdout(o);
    assert_eq!(out.lines().count(), 1, "one line: {out:?}");
    assert!(out.ends_with('\n'));
    let keys: Keys = serde_json::from_str(&out).unwrap();
    assert_eq!(keys.top, ["effect", "rule", "reason", "request"], "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    if let Some(request) = keys.request {
        assert_eq!(request, REQUEST_KEYS, "{out}");
    } else {
        assert!(v["request"].is_null());
    }
    assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()));
    v
}

fn agent_eval(extra: &[&str]) -> Value {
    let policy = example();
    let mut args = vec![
        "--policy",
        policy.to_str().unwrap(),
        "--user",
        "agent-1",
        "--group",
        "ai-agents",
    ];
    args.extend_from_slice(extra);
    eval(&args)
}

#[test]
fn eval_allow_deny_and_approve_all_exit_zero() {
    let allow = agent_eval(&["GET", "/api/v1/namespaces/dev/pods"]);
    assert_eq!(allow["effect"], "allow");
    assert_eq!(allow["rule"], "read-dev");
    assert_eq!(
        allow["request"],
        serde_json::json!({
            "resourceRequest": true, "verb": "list", "apiGroup": "", "apiVersion": "v1",
            "namespace": "dev", "resource": "pods", "subresource": "", "name": "",
            "path": "/api/v1/namespaces/dev/pods"
        })
    );

    let deny = agent_eval(&["DELETE", "/api/v1/namespaces/kube-system"]);
    assert_eq!(deny["effect"], "deny");
    assert_eq!(deny["rule"], "protect-system-namespaces");

    let default_deny = agent_eval(&["GET", "/api/v1/namespaces/prod/pods"]);
    assert_eq!(default_deny["effect"], "deny");
    assert!(default_deny["rule"].is_null());
    assert_eq!(
        default_deny["reason"],
        "no rule allows list on pods in namespace prod for user agent-1 in group ai-agents"
    );

    let approve = agent_eval(&["GET", "/api/v1/namespaces/dev/secrets/db"]);
    assert_eq!(approve["effect"], "approve");
    assert_eq!(approve["rule"], "secrets-need-a-human");
}

#[test]
fn eval_request_is_null_for_a_non_canonical_target() {
    for target in [
        "/api/v1/namespaces//pods",
        "/api/v1/namespaces/dev/%73ecrets",
        "/api/v1/namespaces/dev/pods/../secrets",
        "https://h/api/v1/pods",
        "/api/v1/pods?watch=1;x=1",
    ] {
        let v = agent_eval(&["GET", target]);
        assert_eq!(v["effect"], "deny", "{target}");
        assert!(v["request"].is_null(), "{target}: {v}");
        assert!(v["rule"].is_null());
    }
}

#[test]
fn eval_target_is_taken_as_sent() {
    let v = agent_eval(&[
        "GET",
        "/api/v1/namespaces/dev/secrets?fieldSelector=metadata.name%3Ddb",
    ]);
    assert_eq!(v["request"]["verb"], "list");
    assert_eq!(v["request"]["name"], "db");
    let v = agent_eval(&["HEAD", "/api/v1/namespaces/dev/pods/web"]);
    assert_eq!(v["request"]["verb"], "get");
}

#[test]
fn eval_headers_are_used() {
    // A stream subresource is `create` however it is asked for; a proxy is `create` only when
    // it upgrades (then it is a raw tunnel), and keeps its method's verb otherwise.
    let plain = agent_eval(&["GET", "/api/v1/namespaces/dev/pods/web/exec?command=sh"]);
    assert_eq!(plain["request"]["verb"], "create");
    let proxy = agent_eval(&["GET", "/api/v1/namespaces/dev/pods/web/proxy/x"]);
    assert_eq!(proxy["request"]["verb"], "get");
    let tunnel = agent_eval(&[
        "--header",
        "Upgrade: websocket",
        "--header",
        "Connection: Upgrade",
        "GET",
        "/api/v1/namespaces/dev/pods/web/proxy/x",
    ]);
    assert_eq!(tunnel["request"]["verb"], "create");
    let ws = agent_eval(&[
        "--header",
        "Upgrade: websocket",
        "--header",
        "Connection: Upgrade",
        "GET",
        "/api/v1/namespaces/dev/pods/web/exec?command=sh",
    ]);
    assert_eq!(ws["request"]["verb"], "create");
    assert_eq!(ws["effect"], "deny");

    let imp = agent_eval(&[
        "--header",
        "Impersonate-User: admin",
        "GET",
        "/api/v1/namespaces/dev/pods",
    ]);
    assert_eq!(imp["effect"], "deny");
    assert!(imp["reason"].as_str().unwrap().contains("impersonates"));
}

const PRIVILEGED_POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"nginx"},{"name":"b","image":"busybox","securityContext":{"privileged":true}}]}}"#;
const PLAIN_POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"nginx"}]}}"#;

#[test]
fn eval_body_from_a_file() {
    let dir = Scratch::new("eval_body_from_a_file");
    let privileged = dir.file("privileged-pod.json", PRIVILEGED_POD);
    let plain = dir.file("plain-pod.json", PLAIN_POD);
    let target = "/api/v1/namespaces/dev/pods";
    let json = "Content-Type: application/json";
    let v = agent_eval(&[
        "--header",
        json,
        "--body",
        privileged.to_str().unwrap(),
        "POST",
        target,
    ]);
    assert_eq!(v["effect"], "deny");
    assert_eq!(v["rule"], "no-privileged-pods");
    let v = agent_eval(&[
        "--header",
        json,
        "--body",
        plain.to_str().unwrap(),
        "POST",
        target,
    ]);
    assert_eq!(v["effect"], "allow");
    assert_eq!(v["rule"], "deploy-dev");
    let dup = dir.file("dup.json", r#"{"spec":{"hostPID":false,"hostPID":true}}"#);
    let v = agent_eval(&[
        "--header",
        json,
        "--body",
        dup.to_str().unwrap(),
        "POST",
        target,
    ]);
    assert_eq!(v["effect"], "deny");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .starts_with("request body refused")
    );
}

#[test]
fn eval_body_from_stdin() {
    let policy = example();
    let args = [
        "eval",
        "--policy",
        policy.to_str().unwrap(),
        "--user",
        "agent-1",
        "--group",
        "ai-agents",
        "--header",
        "Content-Type: application/json",
        "--body",
        "-",
        "POST",
        "/api/v1/namespaces/dev/pods",
    ];
    let v = eval_output(&run_with_stdin(bin().args(args), PRIVILEGED_POD.as_bytes()));
    assert_eq!(v["rule"], "no-privileged-pods");
    let v = eval_output(&run_with_stdin(bin().args(args), PLAIN_POD.as_bytes()));
    assert_eq!(v["effect"], "allow");
}

fn assert_usage_error(o: &Output, needle: &str) {
    assert_eq!(
        o.status.code(),
        Some(2),
        "stdout: {} stderr: {}",
        stdout(o),
        stderr(o)
    );
    assert!(o.stdout.is_empty(), "nothing on stdout: {}", stdout(o));
    let err = stderr(o);
    assert!(err.contains(needle), "stderr {err:?} lacks {needle:?}");
}

#[test]
fn eval_bad_usage_exits_two() {
    let policy = example();
    let p = policy.to_str().unwrap();
    assert_usage_error(&run(bin().args(["eval", "--policy", p])), "<METHOD>");
    assert_usage_error(&run(bin().args(["eval", "GET", "/"])), "--policy");
    assert_usage_error(
        &run(bin().args(["eval", "--policy", p, "--nope", "GET", "/"])),
        "--nope",
    );
    assert_usage_error(
        &run(bin().args(["eval", "--policy", p, "--header", "no colon", "GET", "/"])),
        "header `no colon` is not `Name: value`",
    );
    assert_usage_error(
        &run(bin().args(["eval", "--policy", p, "--header", "bad name: x", "GET", "/"])),
        "not a valid HTTP header name",
    );
    assert_usage_error(
        &run(bin().args([
            "eval",
            "--policy",
            p,
            "--body",
            "/nonexistent/body.json",
            "POST",
            "/api/v1/namespaces/dev/pods",
        ])),
        "cannot read body file `/nonexistent/body.json`",
    );
    assert_usage_error(
        &run(bin().args(["eval", "--policy", "/nonexistent/policy.yaml", "GET", "/"])),
        "cannot read policy `/nonexistent/policy.yaml`",
    );
    assert_usage_error(&run(bin().args(["frobnicate"])), "frobnicate");
    assert_usage_error(&run(&mut bin()), "Usage");
}

const BROKEN: &str = "apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  rules:
    - {name: a, effect: permit, verbs: [get], resources: [pods]}
    - {name: b, effect: allow, verbs: [lsit], resources: [\"pods/*\"]}
";

#[test]
fn eval_with_a_policy_that_does_not_compile_reports_every_error() {
    let dir = Scratch::new("eval_with_a_policy_that_does_not_compile_reports_every_error");
    let broken = dir.file("broken.yaml", BROKEN);
    let b = broken.to_str().unwrap();
    let o = run(bin().args(["eval", "--policy", b, "GET", "/"]));
    assert_usage_error(&o, "does not compile: 3 errors");
    let err = stderr(&o);
    for line in [
        format!("{b}:5:25: error[effect]: rule `a` has unknown effect `permit`"),
        format!("{b}:6:40: error[unknown-verb]: rule `b` has unknown verb `lsit`"),
        format!("{b}:6:59: error[resources]: rule `b` has invalid resource `pods/*`"),
        "  help: effect is one of allow, deny, approve".to_string(),
    ] {
        assert!(
            err.lines().any(|l| l == line),
            "missing {line:?} in:\n{err}"
        );
    }
    let yaml = dir.file("syntax.yaml", "apiVersion: [\n");
    let o = run(bin().args(["eval", "--policy", yaml.to_str().unwrap(), "GET", "/"]));
    assert_usage_error(&o, "error[yaml]");
    assert!(stderr(&o).starts_with(&format!("{}:", yaml.display())));
}

const PASSING: &str = "apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  rules:
    - {name: read, effect: allow, verbs: [get, list], apiGroups: [\"\"], resources: [pods], namespaces: [dev]}
  tests:
    - {name: reads dev, request: \"GET /api/v1/namespaces/dev/pods\", expect: allow, rule: read}
    - {name: not prod, request: \"GET /api/v1/namespaces/prod/pods\", expect: deny}
";

const FAILING: &str = "apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  rules:
    - {name: read, effect: allow, verbs: [get, list], apiGroups: [\"\"], resources: [pods], namespaces: [dev]}
    - {name: other, effect: allow, verbs: [get], apiGroups: [\"\"], resources: [configmaps], namespaces: [dev]}
  tests:
    - {name: reads dev, request: \"GET /api/v1/namespaces/dev/pods\", expect: allow}
    - {name: wrongly expects prod, request: \"GET /api/v1/namespaces/prod/pods\", expect: allow}
    - {name: wrong rule, request: \"GET /api/v1/namespaces/dev/pods/p\", expect: allow, rule: other}
";

#[test]
fn test_passes_with_exit_zero() {
    let dir = Scratch::new("test_passes_with_exit_zero");
    let passing = dir.file("passing.yaml", PASSING);
    let o = run(bin().arg("test").arg(&passing).arg(example()));
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("ok    {}: reads dev", passing.display())),
        "{out}"
    );
    assert!(
        out.lines()
            .last()
            .is_some_and(|l| l.starts_with("policy tests: ") && l.ends_with(" passed, 0 failed")),
        "{out}"
    );
}

#[test]
fn test_failures_exit_one_and_say_what_went_wrong() {
    let dir = Scratch::new("test_failures_exit_one_and_say_what_went_wrong");
    let failing = dir.file("failing.yaml", FAILING);
    let o = run(bin().arg("test").arg(&failing));
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let f = failing.display();
    for line in [
        format!("ok    {f}: reads dev"),
        format!("FAIL  {f}: wrongly expects prod"),
        "      request:  GET /api/v1/namespaces/prod/pods".to_string(),
        "      expected: allow".to_string(),
        "      got:      deny: no rule allows list on pods in namespace prod for an anonymous user"
            .to_string(),
        format!("FAIL  {f}: wrong rule"),
        "      expected: allow by rule \"other\"".to_string(),
        "      got:      allow by rule \"read\": rule \"read\" allows get on pods/p in namespace dev"
            .to_string(),
        "policy tests: 1 passed, 2 failed".to_string(),
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "missing {line:?} in:\n{out}"
        );
    }
}

#[test]
fn test_exits_two_when_a_policy_does_not_compile() {
    let dir = Scratch::new("test_exits_two_when_a_policy_does_not_compile");
    let passing = dir.file("passing2.yaml", PASSING);
    let broken = dir.file("broken2.yaml", BROKEN);
    let o = run(bin().arg("test").arg(&passing).arg(&broken));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains(&format!("{}:5:25: error[effect]", broken.display())));
    let o = run(bin().args(["test", "/nonexistent/policy.yaml"]));
    assert_usage_error(&o, "cannot read policy");
    assert_usage_error(&run(bin().arg("test")), "<FILE>");
}

const ROLES: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader, namespace: dev}
rules:
  - apiGroups: [\"\"]
    resources: [pods, pods/log]
    verbs: [get, list, watch]
  - apiGroups: [\"\"]
    resources: [secrets]
    resourceNames: [app-db]
    verbs: [get]
";

const CLUSTER_ROLE: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: everything}
rules:
  - apiGroups: [\"*\"]
    resources: [\"*\"]
    verbs: [\"*\"]
";

#[test]
fn import_rbac_output_compiles_and_decides() {
    let dir = Scratch::new("import_rbac_output_compiles_and_decides");
    let roles = dir.file("roles.yaml", ROLES);
    let cluster = dir.file("cluster-role.yaml", CLUSTER_ROLE);
    let o = run(bin()
        .args(["import-rbac", "--group", "ai-agents", "--name", "team"])
        .arg(&roles)
        .arg(&cluster));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let policy = dir.file("imported.yaml", &stdout(&o));
    let p = policy.to_str().unwrap();
    let ev = |user: &str, group: &str, method: &str, target: &str| {
        eval(&[
            "--policy", p, "--user", user, "--group", group, method, target,
        ])
    };
    let v = ev(
        "a",
        "ai-agents",
        "GET",
        "/api/v1/namespaces/dev/secrets/app-db",
    );
    assert_eq!(v["effect"], "allow");
    let v = ev("a", "ai-agents", "GET", "/api/v1/namespaces/prod/pods");
    assert_eq!(v["effect"], "allow", "the cluster role reads everywhere");
    let v = ev(
        "a",
        "ai-agents",
        "POST",
        "/api/v1/namespaces/dev/pods/web/exec?command=sh",
    );
    assert_eq!(v["effect"], "deny", "but `*` never grants exec");
    let v = ev("a", "others", "GET", "/api/v1/namespaces/dev/pods");
    assert_eq!(v["effect"], "deny", "only for the imported group");

    // A namespace-less Role would be granted everywhere: refused.
    let bad = dir.file(
        "no-namespace.yaml",
        "kind: Role\nmetadata: {name: r}\nrules: [{apiGroups: [\"\"], resources: [pods], verbs: [get]}]\n",
    );
    assert_usage_error(
        &run(bin().arg("import-rbac").arg(&bad)),
        "no metadata.namespace",
    );
    assert_usage_error(
        &run(bin().args(["import-rbac", "/nonexistent/roles.yaml"])),
        "cannot read `/nonexistent/roles.yaml`",
    );
}

#[test]
fn kubeconfig_puts_the_proxy_token_in_the_server_url_and_refuses_anything_else() {
    let s = Scratch::new("kubeconfig");
    let token = format!("kubeleash-{}", "0123456789abcdef".repeat(4));
    let good = s.file("agent.token", &format!("{token}\n"));
    let o = run(bin().args([
        "kubeconfig",
        "--server",
        "http://127.0.0.1:8001/",
        "--namespace",
        "dev",
        "--proxy-token-file",
        good.to_str().unwrap(),
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains(&format!("server: \"http://127.0.0.1:8001/{token}\"")),
        "{text}"
    );
    for word in [
        "client-key",
        "client-certificate",
        "password",
        "exec",
        "tokenFile",
    ] {
        assert!(!text.contains(word), "{word} in:\n{text}");
    }
    // A file that is not a proxy token (an operator's credential given by mistake) is refused
    // and not echoed.
    let wrong = s.file(
        "wrong.token",
        "eyJhbGciOiJSUzI1NiJ9.operator-credential.sig\n",
    );
    let o = run(bin().args([
        "kubeconfig",
        "--server",
        "http://127.0.0.1:8001",
        "--proxy-token-file",
        wrong.to_str().unwrap(),
    ]));
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    assert!(
        stderr(&o).contains("does not hold a kubeleash proxy token")
            && !stderr(&o).contains("operator-credential"),
        "{}",
        stderr(&o)
    );
    // --token-file (an OIDC token kubectl reads) and --proxy-token-file do not mix.
    let o = run(bin().args([
        "kubeconfig",
        "--server",
        "http://127.0.0.1:8001",
        "--proxy-token-file",
        good.to_str().unwrap(),
        "--token-file",
        good.to_str().unwrap(),
    ]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn proxy_with_a_fixed_identity_needs_somewhere_to_put_its_token() {
    let o = run(bin().args([
        "proxy",
        "--policy",
        repo("examples/agent-policy.yaml").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--user",
        "agent-1",
    ]));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--agent-kubeconfig") && stderr(&o).contains("--agent-token-file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn kubeconfig_for_an_https_proxy_has_its_ca_and_the_token_as_the_users() {
    let s = Scratch::new("kubeconfig-https");
    let token = format!("kubeleash-{}", "0123456789abcdef".repeat(4));
    let good = s.file("agent.token", &format!("{token}\n"));
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBkzCCATmgAwIBAgIU\n-----END CERTIFICATE-----\n";
    let ca = s.file("ca.pem", pem);
    let o = run(bin().args([
        "kubeconfig",
        "--server",
        "https://127.0.0.1:8001/",
        "--namespace",
        "dev",
        "--proxy-token-file",
        good.to_str().unwrap(),
        "--certificate-authority",
        ca.to_str().unwrap(),
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("server: \"https://127.0.0.1:8001\"\n"),
        "{text}"
    );
    assert!(text.contains(&format!("token: \"{token}\"")), "{text}");
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD.encode(pem);
    assert!(
        text.contains(&format!("certificate-authority-data: \"{data}\"")),
        "{text}"
    );
    // A private key given as the CA (by mistake) is refused, and not echoed.
    let key = s.file(
        "key.pem",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nSECRETKEYBYTES\n-----END PRIVATE KEY-----\n",
    );
    let o = run(bin().args([
        "kubeconfig",
        "--server",
        "https://127.0.0.1:8001",
        "--certificate-authority",
        key.to_str().unwrap(),
    ]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    assert!(
        stderr(&o).contains("not a PEM certificate") && !stderr(&o).contains("SECRETKEYBYTES"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_https_proxy_needs_somewhere_to_put_its_ca() {
    let s = Scratch::new("proxy-ca");
    let jwks = s.file("jwks.json", r#"{"keys": []}"#);
    for extra in [
        &["--user", "agent-1", "--agent-token-file", "/nonexistent/t"][..],
        &[
            "--oidc-issuer",
            "https://issuer.example",
            "--oidc-audience",
            "kubeleash",
            "--oidc-jwks",
            jwks.to_str().unwrap(),
        ],
    ] {
        let o = run(bin()
            .args([
                "proxy",
                "--policy",
                repo("examples/agent-policy.yaml").to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(extra));
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("--agent-ca-file") && stderr(&o).contains("--plain-http"),
            "{extra:?}: {}",
            stderr(&o)
        );
    }
}

// --- explain ------------------------------------------------------------------------------------

#[test]
fn explain_shows_every_rule_and_which_decides() {
    let policy = repo("examples/agent-policy.yaml");
    let out = run(bin().args([
        "explain",
        "--policy",
        policy.to_str().unwrap(),
        "--user",
        "agent-1",
        "--group",
        "ai-agents",
        "DELETE",
        "/api/v1/namespaces/prod",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    // The request, one line per rule in document order, the decision.
    assert_eq!(lines.len(), 6, "{text}");
    assert!(
        lines[0].contains("delete on namespaces named prod as user agent-1"),
        "{text}"
    );
    assert!(
        lines[1].contains("read-dev")
            && lines[1].contains("verb `delete` is not in [get, list, watch]"),
        "{text}"
    );
    assert!(
        lines[2].contains("protect-production")
            && lines[2].contains("matches")
            && lines[2].contains("← decides"),
        "{text}"
    );
    assert!(lines[2].contains("line 15"), "{text}");
    assert!(
        lines[3].contains("apiGroup `\"\"` is not in [rbac.authorization.k8s.io]"),
        "{text}"
    );
    assert!(
        lines[4].contains("a nonResourceURLs rule; this is a resource request"),
        "{text}"
    );
    assert!(
        lines[5].starts_with("decision: deny: rule \"protect-production\" denies"),
        "{text}"
    );
    // Piped: no colour.
    assert!(!text.contains('\u{1b}'), "{text:?}");

    // JSON, with a body judged by a condition.
    let policy = repo("examples/agents.yaml");
    let body = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"hostPID":true,"containers":[{"name":"c","image":"nginx"}]}}"#;
    let out = run_with_stdin(
        bin().args([
            "explain",
            "--json",
            "--policy",
            policy.to_str().unwrap(),
            "--user",
            "agent-1",
            "--group",
            "ai-agents",
            "--header",
            "Content-Type: application/json",
            "--body",
            "-",
            "POST",
            "/api/v1/namespaces/dev/pods",
        ]),
        body,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let decides: Vec<&Value> = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["decides"] == true)
        .collect();
    assert_eq!(decides.len(), 1, "{v}");
    assert_eq!(decides[0]["outcome"], "matches");
    assert_eq!(v["decision"]["effect"], "deny");
    assert_eq!(v["decision"]["rule"], decides[0]["rule"]);
    assert!(
        v["rules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["at"]["line"].as_u64().is_some()),
        "{v}"
    );

    // A target refused before any rule: said so, exit 0.
    let out = run(bin().args([
        "explain",
        "--policy",
        policy.to_str().unwrap(),
        "GET",
        "/api/v1/namespaces/dev//pods",
    ]));
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("no rule was considered: request path `/api/v1/namespaces/dev//pods` has an empty segment"), "{}", stdout(&out));

    // A policy that does not compile: exit 2 with its errors.
    let bad =
        std::env::temp_dir().join(format!("kubeleash-explain-bad-{}.yaml", std::process::id()));
    std::fs::write(&bad, "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec: {rules: [{name: x, effect: maybe}]}\n").unwrap();
    let out = run(bin().args(["explain", "--policy", bad.to_str().unwrap(), "GET", "/api"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let _ = std::fs::remove_file(&bad);
}

// --- lint ---------------------------------------------------------------------------------------

#[test]
fn lint_reports_findings_with_line_and_fix_and_exits_by_what_it_found() {
    let examples = [
        repo("examples/agent-policy.yaml"),
        repo("examples/agents.yaml"),
    ];
    let out = run(bin().arg("lint").args(&examples));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(stdout(&out), "no findings in 2 policies\n");

    let bad = repo("tests/lint/shadowed.yaml");
    let out = run(bin().arg("lint").arg(&bad));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    let first = text.lines().next().unwrap();
    assert!(
        first.ends_with("tests/lint/shadowed.yaml:9:7: warning[shadowed]: rule \"read-prod\" can never allow anything: rule \"no-prod\" denies everything it covers"),
        "{text}"
    );
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .starts_with("  fix: remove rule \"read-prod\""),
        "{text}"
    );

    let out = run(bin()
        .args(["lint", "--json"])
        .arg(repo("tests/lint/risky-exec.yaml")));
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["code"], "risky-grant");
    assert_eq!(lines[0]["rule"], "debug-pods");
    assert!(lines[0]["at"]["line"].as_u64().is_some());
    assert!(
        lines[0]["file"]
            .as_str()
            .unwrap()
            .ends_with("risky-exec.yaml")
    );

    let out = run(bin().args(["lint", "/nonexistent/policy.yaml"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read policy `/nonexistent/policy.yaml`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn proxy_mode_is_enforce_or_observe_and_audit_is_its_former_name() {
    for mode in ["observe", "audit"] {
        let out = run(bin().args([
            "proxy",
            "--mode",
            mode,
            "--policy",
            "/nonexistent/policy.yaml",
        ]));
        assert_eq!(out.status.code(), Some(2), "{mode}: {}", stderr(&out));
        // Past the mode: what is wrong is elsewhere.
        assert!(
            stderr(&out).starts_with("error: ") && !stderr(&out).contains("invalid value"),
            "{mode}: {}",
            stderr(&out)
        );
    }
    let out = run(bin().args([
        "proxy",
        "--mode",
        "yolo",
        "--policy",
        "/nonexistent/policy.yaml",
    ]));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("invalid value 'yolo'") && err.contains("enforce") && err.contains("observe"),
        "{err}"
    );
}
