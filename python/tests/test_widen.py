"""Widened approvals with the official `kubernetes` client, on both API servers: the approver
sees the axes a held request offers (`request.widen`), answers `Answer.widen(...)`, and what the
grant covers goes through without asking it again; everything else is held; the policy's floor
(`widen["never"]`, by default Secrets and deletes) approves exactly whatever the answer says."""

from __future__ import annotations

import json
import uuid

import pytest

import kubernetes
from kubernetes.client.exceptions import ApiException

import kubeleash
from kubeleash.kubernetes import connect

POLICY = kubeleash.Policy.from_yaml(
    """
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: python-widen-tests}
spec:
  rules:
    - {name: make-configmaps, effect: allow, subjects: {groups: [ai-agents]}, verbs: [create], resources: [configmaps], namespaces: [dev]}
    - {name: configmap-edits-need-a-human, effect: approve, subjects: {groups: [ai-agents]}, verbs: [patch], resources: [configmaps], namespaces: [dev]}
    - {name: secrets-need-a-human, effect: approve, subjects: {groups: [ai-agents]}, verbs: [create], resources: [secrets], namespaces: [dev]}
"""
)


def core(api):
    return kubernetes.client.CoreV1Api(api)


def patch(api, name: str):
    return core(api).patch_namespaced_config_map(name, "dev", {"data": {"k": "widened"}}, _content_type="application/merge-patch+json")


def secret(name: str):
    return kubernetes.client.V1Secret(metadata=kubernetes.client.V1ObjectMeta(name=name), string_data={"password": "pw-0123456789"})


def test_a_names_glob_with_one_use_lets_one_more_patch_through_without_asking(server):
    tag = uuid.uuid4().hex[:8]
    inside = [f"kl-pyw-{tag}-{x}" for x in "abc"]
    outside = f"kl-pyo-{tag}"
    asked: list[kubeleash.ApprovalRequest] = []

    def approver(req: kubeleash.ApprovalRequest):
        asked.append(req)
        if req.attributes["name"] == inside[0]:
            return kubeleash.Answer.widen(by="alice", names=f"kl-pyw-{tag}-*", uses=1)
        return kubeleash.Answer.deny(by="alice", reason="ask me again later")

    judge = core(server.judge())
    with connect(POLICY, user="agent-1", groups=["ai-agents"], kubeconfig=server.kubeconfig, approver=approver) as api:
        for name in [*inside, outside]:
            core(api).create_namespaced_config_map("dev", kubernetes.client.V1ConfigMap(metadata=kubernetes.client.V1ObjectMeta(name=name), data={"k": "v"}))
        patch(api, inside[0])
        first = asked[0]
        assert first.widen == {"never": None, "names": True, "fields": first.widen["fields"], "uses_and_time": True}, first.widen
        assert first.to_dict()["widen"] == first.widen
        # Within the glob, the one further use: through, nobody asked.
        patch(api, inside[1])
        assert len(asked) == 1, [r.kubectl for r in asked]
        # Outside the glob: held again (and denied).
        with pytest.raises(ApiException) as e:
            patch(api, outside)
        assert e.value.status == 403 and "ask me again later" in json.loads(e.value.body)["message"]
        assert [r.attributes["name"] for r in asked] == [inside[0], outside]
        # Within the glob, but the use is spent: held again.
        with pytest.raises(ApiException):
            patch(api, inside[2])
        assert [r.attributes["name"] for r in asked] == [inside[0], outside, inside[2]]
    got = {n: judge.read_namespaced_config_map(n, "dev").data["k"] for n in [*inside, outside]}
    assert got == {inside[0]: "widened", inside[1]: "widened", inside[2]: "v", outside: "v"}, got
    for n in [*inside, outside]:
        judge.delete_namespaced_config_map(n, "dev")


def test_a_secret_is_under_the_floor_and_is_approved_exactly_whatever_the_answer(server):
    tag = uuid.uuid4().hex[:8]
    asked: list[kubeleash.ApprovalRequest] = []

    def approver(req: kubeleash.ApprovalRequest):
        asked.append(req)
        return kubeleash.Answer.widen(by="alice", uses=5)

    with connect(POLICY, user="agent-1", groups=["ai-agents"], kubeconfig=server.kubeconfig, approver=approver) as api:
        core(api).create_namespaced_secret("dev", secret(f"kl-pyw-{tag}-a"))
        core(api).create_namespaced_secret("dev", secret(f"kl-pyw-{tag}-b"))
    # Both were asked: the widening of the first left no grant.
    assert len(asked) == 2
    never = asked[0].widen["never"]
    assert never is not None and "ecret" in never, asked[0].widen
    assert asked[0].widen == {"never": never, "names": False, "fields": [], "uses_and_time": False}
    judge = core(server.judge())
    for x in "ab":
        judge.delete_namespaced_secret(f"kl-pyw-{tag}-{x}", "dev")


def test_a_malformed_widening_raises_where_it_is_made():
    with pytest.raises(ValueError, match="at least one of names, fields, uses or seconds"):
        kubeleash.Answer.widen(by="alice")
    with pytest.raises(ValueError, match="positive whole number, not 0"):
        kubeleash.Answer.widen(uses=0)
    with pytest.raises(ValueError, match='"spec.replicas" needs either'):
        kubeleash.Answer.widen(fields=[{"path": "spec.replicas", "min": 5, "max": 1}])
    with pytest.raises(TypeError, match="list of ranges"):
        kubeleash.Answer.widen(fields="spec.replicas=1..5")
    a = kubeleash.Answer.widen(by="alice", names="web-*", fields=[{"path": "spec.replicas", "min": 1, "max": 5}, "data.k=v*"], uses=2, seconds=60)
    assert a.approved and a.by == "alice" and a.window is None
    assert a.widening == {"names": "web-*", "fields": [{"path": "spec.replicas", "min": 1.0, "max": 5.0}, {"path": "data.k", "matches": "v*"}], "uses": 2, "seconds": 60}
    assert repr(a).startswith("Answer.widen(by='alice'")
