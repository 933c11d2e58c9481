"""The official `kubernetes` client, guarded by kubeleash, against a real kube-apiserver over
HTTPS (tests/cluster/start.sh): the operator's client-certificate kubeconfig (and its token and
exec-plugin ones) are read by kubeleash-connect in Rust. A cluster that does not start fails
these tests; they never skip."""

from __future__ import annotations

import base64
import json
import logging
import os
import shlex
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import kubernetes
from kubernetes.client.exceptions import ApiException

import kubeleash
from kubeleash.kubernetes import SENTINEL_HOST, connect, transport

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "tests" / "cluster"

POLICY = kubeleash.Policy.from_yaml(
    """
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: python-real-cluster}
spec:
  rules:
    - {name: read-dev, effect: allow, subjects: {groups: [ai-agents]}, verbs: [get, list, watch], resources: [pods, secrets, configmaps], namespaces: [dev]}
    - {name: make-configmaps, effect: allow, subjects: {groups: [ai-agents]}, verbs: [create], resources: [configmaps], namespaces: [dev]}
    - {name: delete-scratch-configmaps, effect: allow, subjects: {groups: [ai-agents]}, verbs: [delete], resources: [configmaps], namespaces: [dev], names: ["kl-py-*"]}
    - {name: hands-off-prod, effect: deny, verbs: ["*"], resources: ["*"], namespaces: [prod]}
"""
)
MASKED = "W21hc2tlZF0="  # base64("[masked]")
DB_PASSWORD = "S3cr3t-Db-P4ssw0rd!"  # tests/cluster/seed.yaml, dev/db-credentials


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A real etcd + kube-apiserver, seeded like the sandbox; yields start.sh's env as a dict."""
    d = tmp_path_factory.mktemp("cluster")
    env = dict(os.environ, KUBELEASH_CLUSTER_OWNER_PID=str(os.getpid()))
    started = time.monotonic()
    try:
        p = subprocess.run([str(CLUSTER / "start.sh"), str(d)], env=env, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"tests/cluster/start.sh could not run: {e}", pytrace=False)
    if p.returncode != 0:
        pytest.fail(f"tests/cluster/start.sh failed (exit {p.returncode}); a real API server is required:\n{p.stderr[-4000:]}", pytrace=False)
    values = {}
    for line in p.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            parts = shlex.split(value)
            values[key] = parts[0] if parts else ""
    print(f"cluster started in {time.monotonic() - started:.1f} s at {values.get('KUBELEASH_CLUSTER_SERVER')}")
    try:
        yield values
    finally:
        subprocess.run([str(CLUSTER / "stop.sh"), str(d)], capture_output=True, timeout=120)


def guarded(kubeconfig, **kw):
    return connect(POLICY, user="agent-1", groups=["ai-agents"], kubeconfig=kubeconfig, **kw)


def core(api):
    return kubernetes.client.CoreV1Api(api)


def admin(cluster):
    """An unguarded client as the cluster's admin, to check what really happened."""
    return core(kubernetes.config.new_client_from_config(config_file=cluster["KUBECONFIG_ADMIN"]))


def test_pods_are_listed_over_https_with_the_operators_client_certificate(cluster):
    with guarded(cluster["KUBECONFIG_OPERATOR_CERT"]) as api:
        assert api.configuration.host == SENTINEL_HOST
        t = transport(api)
        assert t.server == cluster["KUBELEASH_CLUSTER_SERVER"] and t.server.startswith("https://127.0.0.1:")
        assert t.namespace == "default"
        pods = core(api).list_namespaced_pod("dev")
        names = {p.metadata.name for p in pods.items}
        assert {"web-7d4b9c8f6-x2k9p", "web-7d4b9c8f6-q8m4z"} <= names, names
        # Real objects: uids and resourceVersions the server made.
        assert all(p.metadata.uid and p.metadata.resource_version for p in pods.items)


@pytest.mark.parametrize("kubeconfig", ["KUBECONFIG_OPERATOR_TOKEN", "KUBECONFIG_OPERATOR_EXEC"])
def test_the_token_and_exec_plugin_kubeconfigs_work_too(cluster, kubeconfig):
    with guarded(cluster[kubeconfig]) as api:
        assert any(p.metadata.name.startswith("web-") for p in core(api).list_namespaced_pod("dev").items)


def test_a_secret_is_read_masked(cluster):
    with guarded(cluster["KUBECONFIG_OPERATOR_CERT"]) as api:
        one = core(api).read_namespaced_secret("db-credentials", "dev")
        assert one.data and all(v == MASKED for v in one.data.values()), one.data
        raw = core(api).read_namespaced_secret("db-credentials", "dev", _preload_content=False).data
        assert DB_PASSWORD.encode() not in raw
        listed = core(api).list_namespaced_secret("dev")
        assert listed.items and all(all(v == MASKED for v in (s.data or {}).values()) for s in listed.items)
    # The server does hold the password: the masking is kubeleash's.
    real = admin(cluster).read_namespaced_secret("db-credentials", "dev")
    assert base64.b64decode(real.data["password"]).decode() == DB_PASSWORD


def test_a_configmap_is_created_and_deleted(cluster):
    name = f"kl-py-{uuid.uuid4().hex[:8]}"
    cm = kubernetes.client.V1ConfigMap(metadata=kubernetes.client.V1ObjectMeta(name=name), data={"k": "v"})
    with guarded(cluster["KUBECONFIG_OPERATOR_CERT"]) as api:
        made = core(api).create_namespaced_config_map("dev", cm)
        assert made.metadata.name == name and made.metadata.uid
        assert admin(cluster).read_namespaced_config_map(name, "dev").data == {"k": "v"}
        core(api).delete_namespaced_config_map(name, "dev")
    with pytest.raises(ApiException) as e:
        admin(cluster).read_namespaced_config_map(name, "dev")
    assert e.value.status == 404


def test_a_write_the_policy_denies_is_refused_and_never_sent(cluster, tmp_path):
    name = f"kl-py-{uuid.uuid4().hex[:8]}"
    cm = kubernetes.client.V1ConfigMap(metadata=kubernetes.client.V1ObjectMeta(name=name), data={"k": "v"})
    record = tmp_path / "record.jsonl"
    with guarded(cluster["KUBECONFIG_OPERATOR_CERT"], record=str(record)) as api:
        # The operator's RBAC allows writes in prod: the refusal is the policy's.
        with pytest.raises(ApiException) as e:
            core(api).create_namespaced_config_map("prod", cm)
        assert e.value.status == 403
        status = json.loads(e.value.body)
        assert status["kind"] == "Status" and "hands-off-prod" in status["message"], status
        with pytest.raises(ApiException) as e:
            core(api).delete_namespaced_pod("web-7d4b9c8f6-x2k9p", "dev")  # no rule allows it
        assert e.value.status == 403
    with pytest.raises(ApiException) as e:
        admin(cluster).read_namespaced_config_map(name, "prod")
    assert e.value.status == 404
    assert admin(cluster).read_namespaced_pod("web-7d4b9c8f6-x2k9p", "dev").metadata.name
    check = kubeleash.verify_record(record.read_text())
    assert check["ok"], check["problems"]
    outcomes = [(r["request"]["method"], r["decision"]["outcome"]) for r in check["records"] if r["kind"] == "request"]
    assert outcomes == [("POST", "refused"), ("DELETE", "refused")], outcomes


def test_a_server_the_kubeconfig_does_not_trust_tells_the_agent_only_an_id(cluster, tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="kubeleash")
    text = Path(cluster["KUBECONFIG_OPERATOR_TOKEN"]).read_text()
    # The server's own serving certificate is not a CA that signed it.
    wrong = base64.b64encode((Path(cluster["KUBELEASH_CLUSTER_CA"]).parent / "apiserver.crt").read_bytes()).decode()
    lines = [f"    certificate-authority-data: {wrong}" if "certificate-authority-data:" in l else l for l in text.splitlines()]
    kc = tmp_path / "wrong-ca.kubeconfig"
    kc.write_text("\n".join(lines) + "\n")
    with guarded(kc) as api:
        with pytest.raises(ApiException) as e:
            core(api).list_namespaced_pod("dev")
    assert e.value.status == 502
    body = e.value.body if isinstance(e.value.body, str) else e.value.body.decode()
    assert cluster["KUBELEASH_CLUSTER_SERVER"] not in body and cluster["KUBELEASH_CLUSTER_OPERATOR_TOKEN"] not in body
    cid = json.loads(body)["message"].split("correlation id ")[1].split(")")[0]
    logged = [r.getMessage() for r in caplog.records if r.name == "kubeleash" and cid in r.getMessage()]
    assert logged and "kubeleash-test" in logged[0] and "does not trust" in logged[0], logged
