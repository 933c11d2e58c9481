"""The Python API itself: errors, arguments, the streaming masker, policy tests, threads."""

from __future__ import annotations

import json
import threading

import pytest

import kubeleash
from conftest import REPO

AGENTS = REPO / "examples" / "agents.yaml"
BAD = """apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  rules:
    - {name: r, effect: permit, verbs: [lsit], resources: [pods]}
"""


def secret(name: str, password: str) -> dict:
    return {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": name, "namespace": "dev"}, "data": {"password": password}}


def test_policy_error_carries_every_error_with_its_location():
    with pytest.raises(kubeleash.PolicyError) as e:
        kubeleash.Policy.from_yaml(BAD)
    err = e.value
    assert isinstance(err, ValueError)
    assert [x["code"] for x in err.errors] == ["effect", "unknown-verb"]
    assert all(set(x) == {"message", "help", "code", "location"} for x in err.errors)
    assert err.errors[0]["location"] == {"line": 5, "column": 25}
    assert err.errors[1]["location"]["line"] == 5
    assert err.errors[0]["help"] and "`permit`" in err.errors[0]["message"]
    text = str(err)
    assert text.startswith("policy has 2 errors") and "line 5, column 25" in text


def test_yaml_syntax_errors_have_a_location(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules: [\n")
    with pytest.raises(kubeleash.PolicyError) as e:
        kubeleash.Policy.from_file(p)
    assert e.value.errors and e.value.errors[0]["location"] is not None


def test_from_file_reports_missing_files():
    with pytest.raises(FileNotFoundError):
        kubeleash.Policy.from_file(REPO / "no-such-policy.yaml")


def test_evaluate():
    p = kubeleash.Policy.from_file(str(AGENTS))
    assert p.name == "agents"
    d = p.evaluate("DELETE", "/api/v1/namespaces/kube-system", user="agent-1", groups=["ai-agents"])
    assert (d.effect, d.rule, d.allowed) == ("deny", "protect-system-namespaces", False)
    assert d.request["resource"] == "namespaces" and d.request["name"] == "kube-system"
    assert d.to_dict() == {"effect": "deny", "rule": "protect-system-namespaces", "reason": d.reason, "request": d.request}
    assert "protect-system-namespaces" in repr(d)
    ok = p.evaluate("GET", "/api/v1/namespaces/dev/pods?watch=1", user="agent-1", groups=("ai-agents",))
    assert ok.allowed and ok.request["verb"] == "watch"
    # No identity: anonymous, default deny.
    anon = p.evaluate("GET", "/api/v1/namespaces/dev/pods")
    assert anon.effect == "deny" and anon.rule is None
    # A refused target is a deny without attributes.
    refused = p.evaluate("GET", "/api/v1/namespaces/dev//pods", user="agent-1", groups=["ai-agents"])
    assert refused.effect == "deny" and refused.request is None and "empty segment" in refused.reason


def test_evaluate_reads_bodies_and_headers_in_every_form():
    p = kubeleash.Policy.from_file(AGENTS)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": [{"name": "a", "image": "i", "securityContext": {"privileged": True}}]}}
    for body in (json.dumps(pod), json.dumps(pod).encode(), bytearray(json.dumps(pod).encode()), memoryview(json.dumps(pod).encode())):
        d = p.evaluate("POST", "/api/v1/namespaces/dev/pods", user="agent-1", groups=["ai-agents"], body=body)
        assert (d.effect, d.rule) == ("deny", "no-privileged-pods"), type(body)
    ws = {"Upgrade": "websocket", "Connection": "Upgrade"}
    for headers in (ws, list(ws.items()), [(k.encode(), v.encode()) for k, v in ws.items()]):
        d = p.evaluate("GET", "/api/v1/namespaces/dev/pods/web-1/exec?command=sh", user="agent-1", groups=["ai-agents"], headers=headers)
        assert d.effect == "deny"
    with pytest.raises(kubeleash.RequestError) as e:
        p.evaluate("GET", "/api/v1/pods", headers={"bad header": "x"})
    assert e.value.code == "header"
    with pytest.raises(TypeError):
        p.evaluate("GET", "/api/v1/pods", body=42)
    with pytest.raises(TypeError):
        p.evaluate("GET", "/api/v1/pods", "agent-1")  # identity is keyword-only


def test_policy_tests_run():
    report = kubeleash.Policy.from_file(AGENTS).test()
    assert report.passed and len(report) == len(report.outcomes) >= 10 and report.failures == []
    o = report.outcomes[0]
    assert o.passed and o.name and o.request.startswith(("GET ", "POST ", "DELETE ")) and o.expect in ("allow", "deny", "approve")
    assert o.decision.effect == o.expect
    failing = kubeleash.Policy.from_yaml(
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules: []\n  tests:\n"
        "    - {name: wrong, request: GET /api/v1/pods, expect: allow}\n"
    ).test()
    assert not failing.passed and [f.name for f in failing.failures] == ["wrong"]
    assert failing.failures[0].decision.effect == "deny"


def test_mask_and_masker():
    p = kubeleash.Policy.from_file(AGENTS)
    body = json.dumps(secret("db", "aHVudGVyMg==")).encode()
    out = p.mask("GET", "/api/v1/namespaces/dev/secrets/db", body)
    assert json.loads(out)["data"]["password"] == "W21hc2tlZF0="
    assert out.replace(b"W21hc2tlZF0=", b"aHVudGVyMg==") == body
    m = p.masker("GET", "/api/v1/namespaces/dev/secrets/db")
    assert m.feed(body[:40]) + m.feed(body[40:]) + m.finish() == out and m.masked_anything
    with pytest.raises(ValueError, match="finished"):
        m.feed(b"{}")


def test_mask_errors_say_why_and_what_was_safe():
    p = kubeleash.Policy.from_file(AGENTS)
    with pytest.raises(kubeleash.MaskError) as e:
        p.masker("GET", "/api/v1/namespaces/dev/secrets/db", content_type="application/yaml")
    assert e.value.code == "content-type" and e.value.safe == b""
    with pytest.raises(kubeleash.MaskError) as e:
        p.mask("GET", "/api/v1/namespaces/dev/secrets/db", b'{"kind":"Secret","data":{"password":"aHVu')
    assert e.value.code == "incomplete" and e.value.safe == b""
    m = p.masker("GET", "/api/v1/namespaces/dev/secrets")
    first = m.feed(b'{"kind":"SecretList","items":[{"kind":"Secret","data":{"a":"eA=="}},')
    with pytest.raises(kubeleash.MaskError) as e:
        m.feed(b'{"kind":"Secret","data":{"b":"eQ=="}}x]}')
    assert e.value.code == "malformed"
    delivered = first + e.value.safe
    assert b"eA==" not in delivered and b"eQ==" not in delivered and delivered.startswith(b'{"kind":"SecretList"')
    with pytest.raises(kubeleash.MaskError):
        m.feed(b"")  # nothing more after a refusal
    with pytest.raises(kubeleash.RequestError) as e:
        p.mask("GET", "/api/v1/namespaces/dev//secrets", b"{}")
    assert e.value.code


def test_content_type_defaults_follow_the_request():
    p = kubeleash.Policy.from_file(AGENTS)
    token = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    log = f"GET /x token={token}\n".encode()
    out = p.mask("GET", "/api/v1/namespaces/dev/pods/web-1/log", log)  # text/plain by default
    assert token.encode() not in out and out.endswith(b"\n")
    with pytest.raises(kubeleash.MaskError):
        p.mask("GET", "/api/v1/namespaces/dev/pods/web-1", log)  # JSON by default: not JSON


def test_watch_events_are_masked_one_by_one():
    p = kubeleash.Policy.from_file(AGENTS)
    m = p.masker("GET", "/api/v1/namespaces/dev/secrets?watch=1")
    ev = lambda n: json.dumps({"type": "ADDED", "object": secret(n, "aHVudGVyMg==")}).encode() + b"\n"
    first = m.feed(ev("a"))
    assert first.endswith(b"\n") and b"W21hc2tlZF0=" in first  # delivered before the next event
    assert b"W21hc2tlZF0=" in m.feed(ev("b"))
    assert m.finish() == b""


def test_the_gil_is_released_while_masking():
    p = kubeleash.Policy.from_file(AGENTS)
    items = [secret(f"s{i}", "aHVudGVyMg==") for i in range(20000)]
    body = json.dumps({"kind": "SecretList", "apiVersion": "v1", "metadata": {}, "items": items}).encode()
    ticks = []
    done = threading.Event()

    def tick():
        while not done.is_set():
            ticks.append(1)
            done.wait(0.0005)

    t = threading.Thread(target=tick)
    t.start()
    try:
        before = len(ticks)
        for _ in range(3):
            p.mask("GET", "/api/v1/namespaces/dev/secrets", body)
        during = len(ticks) - before
    finally:
        done.set()
        t.join()
    assert during > 3, "another Python thread made no progress while Rust masked"


def test_policies_are_shared_between_threads():
    p = kubeleash.Policy.from_file(AGENTS)
    results = []

    def work():
        for _ in range(200):
            results.append(p.evaluate("GET", "/api/v1/namespaces/dev/pods", user="agent-1", groups=["ai-agents"]).effect)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["allow"] * 800


def test_classes_are_frozen():
    p = kubeleash.Policy.from_file(AGENTS)
    d = p.evaluate("GET", "/api/v1/pods")
    with pytest.raises(AttributeError):
        d.effect = "allow"
    with pytest.raises(TypeError):
        kubeleash.Decision()


def test_verify_record_finds_edits():
    assert kubeleash.verify_record("")["ok"]
    v = kubeleash.verify_record('{"hash":"00","seq":0}\n')
    assert not v["ok"] and v["problems"][0][0] == 1
