"""The official `kubernetes` client, guarded by kubeleash, against `kubeleash sandbox`."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import kubernetes  # installed by python/test.sh: a missing client fails, never skips
from kubernetes.client.exceptions import ApiException  # noqa: E402

import kubeleash  # noqa: E402
from conftest import write_kubeconfig  # noqa: E402
from kubeleash.kubernetes import SENTINEL_HOST, connect, transport  # noqa: E402

POLICY = kubeleash.Policy.from_yaml(
    """
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: python-tests}
spec:
  rules:
    - {name: read-dev, effect: allow, subjects: {groups: [ai-agents]}, verbs: [get, list, watch], resources: [secrets, pods, pods/log, configmaps], namespaces: [dev]}
    - {name: write-configmaps, effect: allow, subjects: {groups: [ai-agents]}, verbs: [create, delete], resources: [configmaps], namespaces: [dev], names: ["free-*", "watched-*"]}
    - {name: secrets-need-a-human, effect: approve, subjects: {groups: [ai-agents]}, verbs: [create], resources: [secrets], namespaces: [dev]}
    - {name: protect-system-namespaces, effect: deny, verbs: ["*"], resources: ["*"], namespaces: [kube-system]}
"""
)
MASKED = "W21hc2tlZF0="  # base64("[masked]")
SANDBOX_DB_PASSWORD = "S3cr3t-Db-P4ssw0rd!"


@pytest.fixture
def kubeconfig(sandbox, tmp_path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", sandbox)


def guarded(kubeconfig, **kw):
    kw.setdefault("user", "agent-1")
    kw.setdefault("groups", ["ai-agents"])
    return connect(kw.pop("policy", POLICY), kubeconfig=kubeconfig, **kw)


def core(api):
    return kubernetes.client.CoreV1Api(api)


def new_secret(name: str, password: str):
    return kubernetes.client.V1Secret(metadata=kubernetes.client.V1ObjectMeta(name=name), string_data={"password": password})


def test_the_client_holds_no_credential_and_goes_through_kubeleash(kubeconfig):
    api = guarded(kubeconfig)
    assert api.configuration.host == SENTINEL_HOST
    assert not api.configuration.api_key and "Authorization" not in api.default_headers
    assert transport(api).server.startswith("http://127.0.0.1:")
    assert transport(api).namespace == "dev"
    api.close()
    assert transport(api).closed


def test_list_and_read_secrets_come_back_masked(kubeconfig):
    with guarded(kubeconfig) as api:
        secrets = core(api).list_namespaced_secret("dev")
        assert secrets.items, "the sandbox seeds secrets in dev"
        for s in secrets.items:
            assert all(v == MASKED for v in (s.data or {}).values()), s.metadata.name
        one = core(api).read_namespaced_secret("db-credentials", "dev")
        assert base64.b64decode(one.data["password"]) == b"[masked]"
        raw = core(api).read_namespaced_secret("db-credentials", "dev", _preload_content=False).data
        assert SANDBOX_DB_PASSWORD.encode() not in raw  # nor in the last-applied annotation


def test_a_denial_is_an_api_exception_403_with_the_status(kubeconfig):
    with guarded(kubeconfig) as api:
        with pytest.raises(ApiException) as e:
            core(api).delete_namespace("kube-system")
        assert e.value.status == 403
        status = json.loads(e.value.body)
        assert status["kind"] == "Status" and status["reason"] == "Forbidden" and status["code"] == 403
        assert "protect-system-namespaces" in status["message"]
        with pytest.raises(ApiException) as e:
            core(api).list_namespaced_pod("prod")  # default deny
        assert e.value.status == 403 and "no rule allows" in json.loads(e.value.body)["message"]
        # The namespace is still there.
        assert guarded_admin_namespaces(kubeconfig) >= {"kube-system", "dev"}


def guarded_admin_namespaces(kubeconfig) -> set[str]:
    admin = kubeleash.Policy.from_yaml(
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - {name: all, effect: allow, verbs: [list], resources: [namespaces]}\n"
    )
    with connect(admin, user="ops", kubeconfig=kubeconfig) as api:
        return {n.metadata.name for n in core(api).list_namespace().items}


def test_approval_granted_and_denied(kubeconfig):
    asked: list[kubeleash.ApprovalRequest] = []

    def approver(req: kubeleash.ApprovalRequest):
        asked.append(req)
        if req.attributes["name"] == "" and "yes" in (req.body or ""):
            return kubeleash.Answer.approve(by="alice")
        return kubeleash.Answer.deny(by="alice", reason="not today")

    with guarded(kubeconfig, approver=approver) as api:
        yes = f"yes-{uuid.uuid4().hex[:6]}"
        created = core(api).create_namespaced_secret("dev", new_secret(yes, "hunter2-very-secret"))
        assert created.metadata.name == yes and created.data["password"] == MASKED
        with pytest.raises(ApiException) as e:
            core(api).create_namespaced_secret("dev", new_secret(f"no-{uuid.uuid4().hex[:6]}", "hunter3-very-secret"))
        assert e.value.status == 403
        message = json.loads(e.value.body)["message"]
        assert "alice denied approval" in message and "not today" in message
    req = asked[0]
    assert req.rule == "secrets-need-a-human" and req.method == "POST"
    assert req.identity == {"user": "agent-1", "groups": ["ai-agents"]}
    assert req.kubectl.startswith("kubectl create -n dev")
    # Ids are random per hold (128 bits): only their shape is stable.
    assert req.attributes["resource"] == "secrets" and re.fullmatch(r"[0-9a-f]{16,}", req.id)
    assert "hunter2-very-secret" not in (req.body or "") and "[masked]" in (req.body or "")
    assert req.to_dict()["id"] == req.id


def test_no_approver_means_deny_and_coroutine_approvers_work(kubeconfig):
    with guarded(kubeconfig) as api:
        with pytest.raises(ApiException) as e:
            core(api).create_namespaced_secret("dev", new_secret(f"x-{uuid.uuid4().hex[:6]}", "pw-123456"))
        assert e.value.status == 403 and "no approver is configured" in json.loads(e.value.body)["message"]

    async def approver(req):
        return True

    with guarded(kubeconfig, approver=approver) as api:
        name = f"async-{uuid.uuid4().hex[:6]}"
        assert core(api).create_namespaced_secret("dev", new_secret(name, "pw-123456")).metadata.name == name

    def broken(req):
        raise RuntimeError("boom")

    with guarded(kubeconfig, approver=broken) as api:
        with pytest.raises(ApiException) as e:
            core(api).create_namespaced_secret("dev", new_secret(f"b-{uuid.uuid4().hex[:6]}", "pw-123456"))
        message = json.loads(e.value.body)["message"]
        assert "the approver failed; the request was not approved" in message and "boom" not in message


def test_a_watch_streams_masked_events_as_they_happen(kubeconfig):
    name = f"watched-{uuid.uuid4().hex[:6]}"
    writer_policy = kubeleash.Policy.from_yaml(
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - {name: w, effect: allow, verbs: [create], resources: [secrets], namespaces: [dev]}\n"
    )
    created_at: list[float] = []

    def create_later():
        time.sleep(0.5)
        with connect(writer_policy, user="ops", kubeconfig=kubeconfig) as w:
            created_at.append(time.monotonic())
            core(w).create_namespaced_secret("dev", new_secret(name, "watch-me-password"))

    with guarded(kubeconfig) as api:
        w = kubernetes.watch.Watch()
        t = threading.Thread(target=create_later)
        seen = None
        t.start()
        try:
            for event in w.stream(core(api).list_namespaced_secret, "dev", timeout_seconds=20):
                for v in (event["object"].data or {}).values():
                    assert v == MASKED
                if event["object"].metadata.name == name:
                    seen = (event["type"], time.monotonic())
                    w.stop()
        finally:
            t.join()
    assert seen is not None and seen[0] == "ADDED"
    # Delivered as it happened, not when the watch ended 20 s later.
    assert seen[1] - created_at[0] < 5


def test_a_followed_log_streams_through_masked(kubeconfig):
    with guarded(kubeconfig) as api:
        pods = [p.metadata.name for p in core(api).list_namespaced_pod("dev").items]
        assert pods
        # Whole logs first: every leaked credential is masked.
        texts = [core(api).read_namespaced_pod_log(p, "dev") for p in pods]
        assert not any("Bearer ey" in t or "BEGIN OPENSSH PRIVATE KEY" in t or "BEGIN RSA PRIVATE KEY" in t for t in texts)
        assert any("[masked:" in t for t in texts), "the sandbox seeds a log with a leaked token"
        pod = max(zip(texts, pods))[1]
        # A followed log never ends on the sandbox: lines must arrive while it stays open.
        lines: list[str] = []
        done = threading.Event()

        def follow():
            w = kubernetes.watch.Watch()
            for line in w.stream(core(api).read_namespaced_pod_log, pod, "dev", follow=True):
                lines.append(line)
                if len(lines) >= 3:
                    w.stop()
            done.set()

        t = threading.Thread(target=follow, daemon=True)
        t.start()
        assert done.wait(20), f"no lines from a followed log within 20 s (got {lines})"
        assert len(lines) >= 3 and not any("Bearer ey" in line for line in lines)


def test_the_record_is_written_and_verifies(kubeconfig, tmp_path):
    record = tmp_path / "agent.jsonl"
    with guarded(kubeconfig, record=record, approver=lambda r: kubeleash.Answer.approve(by="bob")) as api:
        core(api).list_namespaced_config_map("dev")
        with pytest.raises(ApiException):
            core(api).delete_namespace("kube-system")
        core(api).create_namespaced_secret("dev", new_secret(f"rec-{uuid.uuid4().hex[:6]}", "recorded-password"))
    text = record.read_text()
    v = kubeleash.verify_record(text)
    assert v["ok"], v["problems"]
    kinds = [r["kind"] for r in v["records"]]
    assert kinds[-1] == "end"
    requests = [r for r in v["records"] if r["kind"] == "request"]
    outcomes = [(r["request"]["method"], r["decision"]["outcome"]) for r in requests]
    assert ("GET", "forwarded") in outcomes and ("DELETE", "refused") in outcomes
    approved = [r for r in v["records"] if r["decision"].get("approver") == "bob"]
    assert approved, kinds
    assert "recorded-password" not in text
    assert all(r["identity"] == {"user": "agent-1", "groups": ["ai-agents"]} for r in requests)
    # An edited record no longer verifies.
    tampered = text.replace('"outcome":"refused"', '"outcome":"forwarded"', 1)
    assert not kubeleash.verify_record(tampered)["ok"]


def test_audit_mode_lets_denials_through_still_masked(kubeconfig):
    with guarded(kubeconfig, mode="audit") as api:
        secrets = core(api).list_namespaced_secret("kube-system")
        assert all(v == MASKED for s in secrets.items for v in (s.data or {}).values())
    with pytest.raises(ValueError):
        guarded(kubeconfig, mode="permissive")


class Upstream(BaseHTTPRequestHandler):
    """A stand-in API server that remembers each request's headers."""

    seen: list[dict] = []

    def do_GET(self):
        Upstream.seen.append({k.lower(): v for k, v in self.headers.items()})
        body = json.dumps({"kind": "NamespaceList", "apiVersion": "v1", "metadata": {}, "items": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    Upstream.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


ALL = kubeleash.Policy.from_yaml(
    "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - {name: ns, effect: allow, verbs: [list], resources: [namespaces]}\n"
)


def test_the_operators_token_is_set_by_rust_and_the_agents_removed(upstream, tmp_path):
    token = "operator-" + uuid.uuid4().hex
    kc = write_kubeconfig(tmp_path / "kc", upstream, user={"token": token})
    with connect(ALL, user="agent-1", kubeconfig=kc) as api:
        api.set_default_header("Authorization", "Bearer agent-made-this-up")
        core(api).list_namespace()
        api.set_default_header("Impersonate-User", "admin")
        with pytest.raises(ApiException) as e:
            core(api).list_namespace()
        assert e.value.status == 403 and "impersonate" in json.loads(e.value.body)["message"]
        visible = repr(vars(api)) + repr(vars(api.configuration)) + repr(vars(api.rest_client)) + repr(transport(api))
        assert token not in visible
    assert len(Upstream.seen) == 1, "the impersonating request never left"
    assert Upstream.seen[-1]["authorization"] == f"Bearer {token}"
    assert Upstream.seen[-1]["accept"].startswith("application/json")


def test_token_files_and_no_user(upstream, tmp_path):
    f = tmp_path / "token"
    f.write_text("from-a-file\n")
    kc = write_kubeconfig(tmp_path / "kc", upstream, user={"tokenFile": "token"})
    with connect(ALL, user="agent-1", kubeconfig=kc) as api:
        core(api).list_namespace()
    assert Upstream.seen[-1]["authorization"] == "Bearer from-a-file"
    kc = write_kubeconfig(tmp_path / "kc2", upstream)
    with connect(ALL, user="agent-1", kubeconfig=kc) as api:
        core(api).list_namespace()
    assert "authorization" not in Upstream.seen[-1]


@pytest.mark.parametrize(
    "server,user,needle",
    [
        ("http://127.0.0.1:1", {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "/no/such/plugin"}}, "exec plugin"),
        ("http://127.0.0.1:1", {"tokenFile": "/no/such/file"}, "token file"),
        ("http://127.0.0.1:1", {"username": "u", "password": "p"}, "basic authentication"),
        ("http://127.0.0.1:1", {"client-certificate-data": "eA==", "client-key-data": "eA=="}, "TLS"),
        ("ftp://127.0.0.1:1", None, "https://"),
    ],
    ids=["exec-plugin-missing", "token-file-missing", "basic-auth", "not-a-certificate", "not-http"],
)
def test_kubeconfigs_that_cannot_work_are_refused_plainly(tmp_path, server, user, needle):
    kc = write_kubeconfig(tmp_path / "kc", server, user=user)
    with pytest.raises(kubeleash.ConnectError, match=needle):
        connect(ALL, user="agent-1", kubeconfig=kc)


def test_kubeconfig_contexts(tmp_path, upstream, monkeypatch):
    kc = write_kubeconfig(tmp_path / "kc", upstream)
    with pytest.raises(kubeleash.ConnectError, match="no context `other`"):
        connect(ALL, user="a", kubeconfig=kc, context="other")
    monkeypatch.setenv("KUBECONFIG", str(kc))
    with connect(ALL, user="a") as api:
        core(api).list_namespace()
    with pytest.raises(TypeError):
        connect(ALL, user="a", groups="ai-agents")


def test_an_unreachable_server_is_an_error_the_client_knows(tmp_path):
    import urllib3

    kc = write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1")
    with connect(ALL, user="a", kubeconfig=kc) as api:
        with pytest.raises((ApiException, urllib3.exceptions.HTTPError, ConnectionError)) as e:
            core(api).list_namespace()
    # The layer answers a failed upstream with a 502 Status naming a correlation id.
    if isinstance(e.value, ApiException):
        assert e.value.status == 502 and "correlation id" in e.value.body
