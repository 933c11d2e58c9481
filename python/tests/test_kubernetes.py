"""The official `kubernetes` client, guarded by kubeleash, end to end against both API servers.

Every scenario taking the `server` fixture (conftest.py) runs twice: on `kubeleash sandbox` and
on a real kube-apiserver over HTTPS (tests/cluster/start.sh, one per test session, seeded like
the sandbox), where the operator's kubeconfig (client certificate, token or exec plugin) is read
by kubeleash-connect in Rust and the operator is a restricted RBAC user (writes in dev and prod
only). What really happened on a server is checked with an unguarded client, `server.judge()`.
The servers are shared by the tests of a session: whatever a test creates has a name of its own.

A few scenarios run on one server only, each saying why: logs need a kubelet (sandbox only);
credentials and TLS need a server that checks them (real only). The tests at the end use a
stand-in HTTP server instead: what kubeleash sends upstream, and kubeconfigs it refuses.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import kubernetes  # installed by python/test.sh: a missing client fails, never skips
from kubernetes.client.exceptions import ApiException  # noqa: E402

import kubeleash  # noqa: E402
from conftest import not_found, write_kubeconfig  # noqa: E402
from kubeleash.kubernetes import SENTINEL_HOST, connect, transport  # noqa: E402

POLICY = kubeleash.Policy.from_yaml(
    """
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: python-tests}
spec:
  rules:
    - {name: read-dev, effect: allow, subjects: {groups: [ai-agents]}, verbs: [get, list, watch], resources: [secrets, pods, pods/log, configmaps], namespaces: [dev]}
    - {name: make-configmaps, effect: allow, subjects: {groups: [ai-agents]}, verbs: [create], resources: [configmaps], namespaces: [dev]}
    - {name: delete-scratch-configmaps, effect: allow, subjects: {groups: [ai-agents]}, verbs: [delete], resources: [configmaps], namespaces: [dev], names: ["kl-py-*"]}
    - {name: secrets-need-a-human, effect: approve, subjects: {groups: [ai-agents]}, verbs: [create], resources: [secrets], namespaces: [dev]}
    - {name: configmap-edits-need-a-human, effect: approve, subjects: {groups: [ai-agents]}, verbs: [patch], resources: [configmaps], namespaces: [dev]}
    - {name: protect-system-namespaces, effect: deny, verbs: ["*"], resources: ["*"], namespaces: [kube-system]}
    - {name: hands-off-prod, effect: deny, verbs: ["*"], resources: ["*"], namespaces: [prod]}
"""
)
MASKED = "W21hc2tlZF0="  # base64("[masked]")
DB_PASSWORD = "S3cr3t-Db-P4ssw0rd!"  # dev/db-credentials in both seeds


def guarded(kubeconfig, **kw):
    kw.setdefault("user", "agent-1")
    kw.setdefault("groups", ["ai-agents"])
    return connect(kw.pop("policy", POLICY), kubeconfig=kubeconfig, **kw)


def core(api):
    return kubernetes.client.CoreV1Api(api)


def judge(server):
    """The server's own CoreV1Api, unguarded, with full rights."""
    return core(server.judge())


def new_secret(name: str, password: str):
    return kubernetes.client.V1Secret(metadata=kubernetes.client.V1ObjectMeta(name=name), string_data={"password": password})


def new_configmap(name: str):
    return kubernetes.client.V1ConfigMap(metadata=kubernetes.client.V1ObjectMeta(name=name), data={"k": "v"})


def scratch() -> str:
    return f"kl-py-{uuid.uuid4().hex[:8]}"


# --- both servers ----------------------------------------------------------------------------


def test_the_client_holds_no_credential_and_goes_through_kubeleash(server):
    api = guarded(server.kubeconfig)
    assert api.configuration.host == SENTINEL_HOST
    assert not api.configuration.api_key and "Authorization" not in api.default_headers
    # kubeleash (in Rust) talks to the server; the client only to kubeleash.
    assert transport(api).server == server.url
    assert server.url.startswith("https://127.0.0.1:" if server.real else "http://127.0.0.1:")
    assert transport(api).namespace == server.namespace
    api.close()
    assert transport(api).closed


def test_pods_are_listed(server):
    with guarded(server.kubeconfig) as api:
        pods = core(api).list_namespaced_pod("dev")
    names = {p.metadata.name for p in pods.items}
    # The sandbox names its pods anew at each start: look them up by prefix.
    assert len([n for n in names if n.startswith("web-")]) >= 2, names
    assert all(p.metadata.uid and p.metadata.resource_version for p in pods.items)
    assert names == {p.metadata.name for p in judge(server).list_namespaced_pod("dev").items}


def test_the_agent_asks_kubeleash_what_it_may_do(server):
    """SelfSubjectAccessReview and SelfSubjectRulesReview are answered from the policy: the
    answer is what kubeleash will do with the request, with the rule."""
    authz = kubernetes.client
    def ask(**attrs):
        review = authz.V1SelfSubjectAccessReview(
            spec=authz.V1SelfSubjectAccessReviewSpec(resource_attributes=authz.V1ResourceAttributes(**attrs))
        )
        return authz.AuthorizationV1Api(api).create_self_subject_access_review(review).status

    with guarded(server.kubeconfig) as api:
        yes = ask(verb="list", resource="secrets", namespace="dev")
        assert yes.allowed and 'rule "read-dev" allows' in yes.reason
        no = ask(verb="get", resource="secrets", namespace="prod")
        assert not no.allowed and no.denied and 'rule "hands-off-prod" denies' in no.reason
        held = ask(verb="create", resource="secrets", namespace="dev")
        assert not held.allowed and not held.denied
        assert "a person's approval" in held.reason and "secrets-need-a-human" in held.reason
        rules = authz.AuthorizationV1Api(api).create_self_subject_rules_review(
            authz.V1SelfSubjectRulesReview(spec=authz.V1SelfSubjectRulesReviewSpec(namespace="dev"))
        ).status
        assert any(r.resources == ["configmaps"] and r.verbs == ["create"] for r in rules.resource_rules), rules
        assert rules.incomplete and "secrets-need-a-human" in rules.evaluation_error
        # What it said is what happens.
        with pytest.raises(ApiException) as refused:
            core(api).read_namespaced_secret("db-credentials", "prod")
        assert refused.value.status == 403 and "hands-off-prod" in refused.value.body
        # The refusal as fields a program can act on: the rule, the approval path, the nearest
        # request the policy allows.
        causes = {c["field"]: c["message"] for c in json.loads(refused.value.body)["details"]["causes"]}
        assert causes["kubeleash.rule"] == "hands-off-prod"
        assert causes["kubeleash.approval"].startswith("none for this request")
        assert causes["kubeleash.nearest.namespace"] == "dev" and causes["kubeleash.nearest.verb"] == "get"


def test_list_and_read_secrets_come_back_masked(server):
    with guarded(server.kubeconfig) as api:
        secrets = core(api).list_namespaced_secret("dev")
        assert secrets.items, "the seed has secrets in dev"
        values = [v for s in secrets.items for v in (s.data or {}).values()]
        assert len(values) >= 5 and all(v == MASKED for v in values)
        one = core(api).read_namespaced_secret("db-credentials", "dev")
        assert one.data and all(v == MASKED for v in one.data.values()), one.data
        assert base64.b64decode(one.data["password"]) == b"[masked]"
        raw = core(api).read_namespaced_secret("db-credentials", "dev", _preload_content=False).data
        assert DB_PASSWORD.encode() not in raw  # nor in the last-applied annotation
    # The server does hold the password: the masking is kubeleash's.
    real = judge(server).read_namespaced_secret("db-credentials", "dev")
    assert base64.b64decode(real.data["password"]).decode() == DB_PASSWORD


def test_a_configmap_is_created_and_deleted(server):
    name = scratch()
    with guarded(server.kubeconfig) as api:
        made = core(api).create_namespaced_config_map("dev", new_configmap(name))
        assert made.metadata.name == name and made.metadata.uid
        assert judge(server).read_namespaced_config_map(name, "dev").data == {"k": "v"}
        core(api).delete_namespaced_config_map(name, "dev")
    assert not_found(lambda: judge(server).read_namespaced_config_map(name, "dev"))


def test_a_denial_is_an_api_exception_403_with_the_status(server):
    with guarded(server.kubeconfig) as api:
        with pytest.raises(ApiException) as e:
            core(api).delete_namespace("kube-system")
        assert e.value.status == 403
        status = json.loads(e.value.body)
        assert status["kind"] == "Status" and status["reason"] == "Forbidden" and status["code"] == 403
        assert "protect-system-namespaces" in status["message"]
        with pytest.raises(ApiException) as e:
            core(api).list_namespaced_pod("default")  # default deny
        assert e.value.status == 403 and "no rule allows" in json.loads(e.value.body)["message"]
    # The namespace is still there.
    assert judge(server).read_namespace("kube-system").status.phase == "Active"


def test_a_write_the_policy_denies_is_refused_and_never_sent(server, tmp_path):
    name = scratch()
    pod = next(p for p in judge(server).list_namespaced_pod("dev").items if p.metadata.name.startswith("web-"))
    record = tmp_path / "record.jsonl"
    with guarded(server.kubeconfig, record=str(record)) as api:
        # On the real server the operator's RBAC allows writes in prod: the refusal is the policy's.
        with pytest.raises(ApiException) as e:
            core(api).create_namespaced_config_map("prod", new_configmap(name))
        assert e.value.status == 403
        status = json.loads(e.value.body)
        assert status["kind"] == "Status" and "hands-off-prod" in status["message"], status
        with pytest.raises(ApiException) as e:
            core(api).delete_namespaced_pod(pod.metadata.name, "dev")  # no rule allows it
        assert e.value.status == 403
    assert not_found(lambda: judge(server).read_namespaced_config_map(name, "prod"))
    still = judge(server).read_namespaced_pod(pod.metadata.name, "dev")
    assert still.metadata.uid == pod.metadata.uid and still.metadata.deletion_timestamp is None
    check = kubeleash.verify_record(record.read_text())
    assert check["ok"], check["problems"]
    outcomes = [(r["request"]["method"], r["decision"]["outcome"]) for r in check["records"] if r["kind"] == "request"]
    assert outcomes == [("POST", "refused"), ("DELETE", "refused")], outcomes


def test_approval_granted_and_denied(server):
    asked: list[kubeleash.ApprovalRequest] = []

    def approver(req: kubeleash.ApprovalRequest):
        asked.append(req)
        if req.attributes["name"] == "" and "yes" in (req.body or ""):
            return kubeleash.Answer.approve(by="alice")
        return kubeleash.Answer.deny(by="alice", reason="not today")

    yes, no = f"yes-{uuid.uuid4().hex[:6]}", f"no-{uuid.uuid4().hex[:6]}"
    with guarded(server.kubeconfig, approver=approver) as api:
        created = core(api).create_namespaced_secret("dev", new_secret(yes, "hunter2-very-secret"))
        assert created.metadata.name == yes and created.data["password"] == MASKED
        with pytest.raises(ApiException) as e:
            core(api).create_namespaced_secret("dev", new_secret(no, "hunter3-very-secret"))
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
    # No X-Kubeleash-Reason: no agent's reason. A create's dry run shows only additions (there
    # is no live object), the password masked.
    assert req.agent_reason is None and "agent_reason" not in req.to_dict()
    dry = req.dry_run
    assert dry is not None and dry["status"] == 201 and dry["rejected"] is None, dry
    assert dry["changes"] and all("before" not in c and "after" in c for c in dry["changes"]), dry
    assert dry["diff"].startswith("+ ") and yes in dry["diff"] and MASKED in dry["diff"], dry["diff"]
    shown = repr(req.to_dict())
    assert "hunter2-very-secret" not in shown and "aHVudGVyMi12ZXJ5LXNlY3JldA" not in shown
    # The server got what the agent sent (the person saw it masked); the denied one never left.
    real = judge(server).read_namespaced_secret(yes, "dev")
    assert base64.b64decode(real.data["password"]) == b"hunter2-very-secret"
    assert not_found(lambda: judge(server).read_namespaced_secret(no, "dev"))


def test_the_approver_sees_the_dry_run_diff_and_the_agents_reason(server):
    """A held patch comes with the API server's own answer to it sent with dryRun=All, diffed
    against the live object and masked, and with the agent's X-Kubeleash-Reason. The dry runs
    store nothing: only the approved patch changes the object."""
    name = scratch()
    asked: list[kubeleash.ApprovalRequest] = []

    def approver(req: kubeleash.ApprovalRequest):
        asked.append(req)
        if req.dry_run and req.dry_run["rejected"] is None and (req.agent_reason or "").startswith("approve me"):
            return kubeleash.Answer.approve(by="alice")
        return kubeleash.Answer.deny(by="alice", reason="not this one")

    def patch(api, data: dict, reason: str | None = None):
        headers = {"X-Kubeleash-Reason": reason} if reason is not None else None
        return core(api).patch_namespaced_config_map(
            name, "dev", {"data": data}, _content_type="application/merge-patch+json", _headers=headers
        )

    body = kubernetes.client.V1ConfigMap(metadata=kubernetes.client.V1ObjectMeta(name=name), data={"k": "v", "db-password": "Old-Pa55word-41"})
    with guarded(server.kubeconfig, approver=approver) as api:
        core(api).create_namespaced_config_map("dev", body)  # allowed: nobody is asked
        assert asked == []
        with pytest.raises(ApiException) as e:
            patch(api, {"k": "x"}, "just looking")
        assert e.value.status == 403 and "alice denied approval" in json.loads(e.value.body)["message"]
        # A write the API server would refuse: the approver is told why.
        with pytest.raises(ApiException) as e:
            patch(api, {"not a key!": "x"})
        assert e.value.status == 403
        assert judge(server).read_namespaced_config_map(name, "dev").data == {"k": "v", "db-password": "Old-Pa55word-41"}
        patch(api, {"k": "w", "db-password": "New-Pa55word-42"}, "approve me: rotate k for INC-42")
    assert judge(server).read_namespaced_config_map(name, "dev").data == {"k": "w", "db-password": "New-Pa55word-42"}
    judge(server).delete_namespaced_config_map(name, "dev")

    looking, refused, approved = asked
    assert looking.rule == "configmap-edits-need-a-human" and looking.method == "PATCH"
    assert looking.agent_reason == "just looking"
    assert looking.dry_run == {
        "status": 200,
        "rejected": None,
        "changes": [{"path": "data.k", "before": "v", "after": "x", "masked": False}],
        "diff": "~ data.k: v -> x\n",
    }, looking.dry_run

    assert refused.agent_reason is None
    assert refused.dry_run is not None and refused.dry_run["status"] == 422, refused.dry_run
    assert "valid config key" in refused.dry_run["rejected"] and refused.dry_run["changes"] == [], refused.dry_run

    assert approved.agent_reason == "approve me: rotate k for INC-42"
    diff = approved.dry_run["diff"]
    assert "~ data.k: v -> w\n" in diff and "~ data.db-password: changed (masked)\n" in diff, diff
    changed = {c["path"]: c for c in approved.dry_run["changes"]}
    assert changed["data.db-password"]["masked"] and changed["data.k"] == {"path": "data.k", "before": "v", "after": "w", "masked": False}
    shown = approved.to_dict()
    assert shown["agent_reason"] == approved.agent_reason and shown["dry_run"] == approved.dry_run
    # The person never sees either password: not in the body, not in the diff.
    assert "Pa55word" not in repr(shown), shown


def test_no_approver_means_deny_and_coroutine_approvers_work(server):
    with guarded(server.kubeconfig) as api:
        with pytest.raises(ApiException) as e:
            core(api).create_namespaced_secret("dev", new_secret(f"x-{uuid.uuid4().hex[:6]}", "pw-123456"))
        assert e.value.status == 403 and "no approver is configured" in json.loads(e.value.body)["message"]

    async def approver(req):
        return True

    with guarded(server.kubeconfig, approver=approver) as api:
        name = f"async-{uuid.uuid4().hex[:6]}"
        assert core(api).create_namespaced_secret("dev", new_secret(name, "pw-123456")).metadata.name == name

    def broken(req):
        raise RuntimeError("boom")

    with guarded(server.kubeconfig, approver=broken) as api:
        with pytest.raises(ApiException) as e:
            core(api).create_namespaced_secret("dev", new_secret(f"b-{uuid.uuid4().hex[:6]}", "pw-123456"))
        message = json.loads(e.value.body)["message"]
        assert "the approver failed; the request was not approved" in message and "boom" not in message


def test_a_watch_streams_masked_events_as_they_happen(server):
    name = f"watched-{uuid.uuid4().hex[:6]}"
    writer_policy = kubeleash.Policy.from_yaml(
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - {name: w, effect: allow, verbs: [create], resources: [secrets], namespaces: [dev]}\n"
    )

    def create(secret_name, password):
        with connect(writer_policy, user="ops", kubeconfig=server.kubeconfig) as w:
            core(w).create_namespaced_secret("dev", new_secret(secret_name, password))

    # A secret there before the watch, so that it has a first event to show.
    create(f"seed-{uuid.uuid4().hex[:6]}", "seed-password")
    with guarded(server.kubeconfig) as api:
        w = kubernetes.watch.Watch()
        t = None
        seen = None
        try:
            for event in w.stream(core(api).list_namespaced_secret, "dev", timeout_seconds=20):
                for v in (event["object"].data or {}).values():
                    assert v == MASKED
                if t is None:
                    # Events are coming while the watch is open: the secret made now must come
                    # too, before the watch ends. (Event, not time: a watch delivered only when
                    # it ended would show its first event too late for this one to follow.)
                    t = threading.Thread(target=create, args=(name, "watch-me-password"))
                    t.start()
                if event["object"].metadata.name == name:
                    seen = event["type"]
                    w.stop()
        finally:
            if t is not None:
                t.join()
    assert seen == "ADDED"


def test_the_record_is_written_and_verifies(server, tmp_path):
    record = tmp_path / "agent.jsonl"
    with guarded(server.kubeconfig, record=record, approver=lambda r: kubeleash.Answer.approve(by="bob")) as api:
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


@pytest.mark.parametrize("mode", ["observe", "audit"])
def test_observe_mode_lets_denials_through_still_masked(server, mode):
    with guarded(server.kubeconfig, mode=mode) as api:
        secrets = core(api).list_namespaced_secret("kube-system")
    # Both seeds hold a bootstrap token in kube-system.
    values = [v for s in secrets.items for v in (s.data or {}).values()]
    assert values and all(v == MASKED for v in values)
    with pytest.raises(ValueError):
        guarded(server.kubeconfig, mode="permissive")


# --- the sandbox only --------------------------------------------------------------------------


# SANDBOX ONLY: a pod's log comes from its kubelet, and the real test cluster has none (its pods
# stay Pending; tests/cluster/README.md). The sandbox serves seeded logs.
def test_a_followed_log_streams_through_masked(sandbox, tmp_path):
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", sandbox)
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


# --- the real server only ----------------------------------------------------------------------


# REAL ONLY: the sandbox authenticates nobody, so a credential would be accepted there whatever
# it is; only a real server shows that kubeleash sends the token and runs the exec plugin.
@pytest.mark.parametrize("kubeconfig", ["KUBECONFIG_OPERATOR_TOKEN", "KUBECONFIG_OPERATOR_EXEC"])
def test_the_token_and_exec_plugin_kubeconfigs_work_too(real_cluster, kubeconfig):
    with guarded(real_cluster[kubeconfig]) as api:
        assert any(p.metadata.name.startswith("web-") for p in core(api).list_namespaced_pod("dev").items)
        visible = repr(vars(api)) + repr(vars(api.configuration)) + repr(vars(api.rest_client)) + repr(transport(api))
        assert real_cluster["KUBELEASH_CLUSTER_OPERATOR_TOKEN"] not in visible


# REAL ONLY: the sandbox serves plain HTTP; a CA to distrust needs the real server's TLS.
def test_a_server_the_kubeconfig_does_not_trust_tells_the_agent_only_an_id(real_cluster, tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="kubeleash")
    text = Path(real_cluster["KUBECONFIG_OPERATOR_TOKEN"]).read_text()
    # The server's own serving certificate is not a CA that signed it.
    wrong = base64.b64encode((Path(real_cluster["KUBELEASH_CLUSTER_CA"]).parent / "apiserver.crt").read_bytes()).decode()
    assert "certificate-authority-data:" in text
    lines = [f"    certificate-authority-data: {wrong}" if "certificate-authority-data:" in line else line for line in text.splitlines()]
    kc = tmp_path / "wrong-ca.kubeconfig"
    kc.write_text("\n".join(lines) + "\n")
    with guarded(kc) as api:
        with pytest.raises(ApiException) as e:
            core(api).list_namespaced_pod("dev")
    assert e.value.status == 502
    body = e.value.body if isinstance(e.value.body, str) else e.value.body.decode()
    assert real_cluster["KUBELEASH_CLUSTER_SERVER"] not in body and real_cluster["KUBELEASH_CLUSTER_OPERATOR_TOKEN"] not in body
    cid = json.loads(body)["message"].split("correlation id ")[1].split(")")[0]
    logged = [r.getMessage() for r in caplog.records if r.name == "kubeleash" and cid in r.getMessage()]
    assert logged and "kubeleash-test" in logged[0] and "does not trust" in logged[0], logged


# --- no API server: a stand-in that records what kubeleash sends -------------------------------


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
    "url,user,needle",
    [
        ("http://127.0.0.1:1", {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "/no/such/plugin"}}, "exec plugin"),
        ("http://127.0.0.1:1", {"tokenFile": "/no/such/file"}, "token file"),
        ("http://127.0.0.1:1", {"username": "u", "password": "p"}, "basic authentication"),
        ("http://127.0.0.1:1", {"client-certificate-data": "eA==", "client-key-data": "eA=="}, "TLS"),
        ("ftp://127.0.0.1:1", None, "https://"),
    ],
    ids=["exec-plugin-missing", "token-file-missing", "basic-auth", "not-a-certificate", "not-http"],
)
def test_kubeconfigs_that_cannot_work_are_refused_plainly(tmp_path, url, user, needle):
    kc = write_kubeconfig(tmp_path / "kc", url, user=user)
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
