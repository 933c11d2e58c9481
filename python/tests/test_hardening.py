"""The binding as a front door an adversarial agent uses (issue 12): what the agent may learn when
something fails, the framing of what is sent, and timeouts on held requests.

Invariants stated here:
- an approver's failure (raise, reject, a wrong answer), sync or async, reaches the agent and
  the record only as a fixed reason; its text goes to the operator's `kubeleash` logger;
- nothing derived from the operator's kubeconfig or an upstream connection error reaches the
  agent: a generic message with a correlation id, the details in the `kubeleash` logger;
- the body the upstream receives is exactly the body decided and recorded, whatever framing or
  hop-by-hop headers the caller sends;
- `_request_timeout` (a number, a (connect, read) pair, or None) works, and bounds time held for
  approval.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
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
from kubeleash.kubernetes import connect, connect_aio, transport  # noqa: E402

APPROVER_FAILED = "the approver failed; the request was not approved"
SECRET = "xoxb-0000-TOPSECRET-" + uuid.uuid4().hex
WEBHOOK = f"https://hooks.slack.example/services/T000/B000/{SECRET}"

POLICY = kubeleash.Policy.from_yaml(
    """
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: hardening}
spec:
  rules:
    - {name: read-dev, effect: allow, subjects: {groups: [ai-agents]}, verbs: [get, list, watch], resources: [configmaps, secrets], namespaces: [dev]}
    - {name: cm-write, effect: allow, subjects: {groups: [ai-agents]}, verbs: [create, update, patch, delete], resources: [configmaps], namespaces: [dev]}
    - {name: secrets-need-a-human, effect: approve, subjects: {groups: [ai-agents]}, verbs: [create], resources: [secrets], namespaces: [dev]}
"""
)


def core(api):
    return kubernetes.client.CoreV1Api(api)


def new_secret(name: str):
    return kubernetes.client.V1Secret(metadata=kubernetes.client.V1ObjectMeta(name=name), string_data={"k": "v"})


def agent(kubeconfig, **kw):
    return connect(POLICY, user="agent-1", groups=["ai-agents"], kubeconfig=kubeconfig, **kw)


@pytest.fixture
def kubeconfig(sandbox, tmp_path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", sandbox)


def everything_the_agent_sees(exc: BaseException) -> str:
    """The exception as text every way an agent could render it."""
    parts = [str(exc), repr(exc), repr(getattr(exc, "args", ()))]
    for attr in ("body", "reason", "headers", "status"):
        parts.append(repr(getattr(exc, attr, None)))
    cause = exc.__cause__ or exc.__context__
    if cause is not None:
        parts.append(everything_the_agent_sees(cause))
    return "\n".join(parts)


# --- approver failures ------------------------------------------------------------------------


class Boom(Exception):
    pass


def raises(req):
    raise Boom(f"cannot post to {WEBHOOK}")


async def raises_async(req):
    await asyncio.sleep(0)
    raise Boom(f"cannot post to {WEBHOOK}")


def raises_in_str(req):
    class Sneaky(Exception):
        def __str__(self):
            return f"token={SECRET}"

    raise Sneaky()


def returns_junk(req):
    return {"webhook": WEBHOOK}


def returns_junk_async(req):
    async def answer():
        return WEBHOOK

    return answer()


def exits(req):
    raise SystemExit(f"exiting, see {WEBHOOK}")


FAILING = [raises, raises_async, raises_in_str, returns_junk, returns_junk_async, exits]


@pytest.mark.parametrize("approver", FAILING, ids=[f.__name__ for f in FAILING])
def test_an_approver_failure_reaches_the_agent_and_the_record_only_as_a_fixed_reason(kubeconfig, tmp_path, caplog, approver):
    record = tmp_path / "record.jsonl"
    caplog.set_level(logging.ERROR, logger="kubeleash")
    with agent(kubeconfig, approver=approver, record=record) as api:
        with pytest.raises(ApiException) as e:
            core(api).create_namespaced_secret("dev", new_secret(f"held-{uuid.uuid4().hex[:6]}"))
    seen = everything_the_agent_sees(e.value)
    assert e.value.status == 403
    assert SECRET not in seen and "hooks.slack" not in seen
    assert APPROVER_FAILED in json.loads(e.value.body)["message"]
    text = record.read_text()
    assert SECRET not in text and "hooks.slack" not in text
    assert APPROVER_FAILED in text
    assert kubeleash.verify_record(text)["ok"]
    # The operator's log has what went wrong.
    logged = "\n".join(r.getMessage() + (logging.Formatter().formatException(r.exc_info) if r.exc_info else "") for r in caplog.records if r.name == "kubeleash")
    assert "the approver failed on approval" in logged
    if approver not in (returns_junk, returns_junk_async):
        assert SECRET in logged


def test_an_async_approver_failure_on_the_asyncio_client(kubeconfig, tmp_path, caplog):
    from kubernetes.aio import client as aio_client
    from kubernetes.aio.client.exceptions import ApiException as AioApiException

    record = tmp_path / "aio.jsonl"
    caplog.set_level(logging.ERROR, logger="kubeleash")

    async def approver(req):
        await asyncio.sleep(0)
        raise Boom(f"cannot post to {WEBHOOK}")

    async def main():
        api = connect_aio(POLICY, user="agent-1", groups=["ai-agents"], kubeconfig=kubeconfig, approver=approver, record=record)
        try:
            body = aio_client.V1Secret(metadata=aio_client.V1ObjectMeta(name=f"aio-{uuid.uuid4().hex[:6]}"), string_data={"k": "v"})
            with pytest.raises(AioApiException) as e:
                await aio_client.CoreV1Api(api).create_namespaced_secret("dev", body)
            return e.value
        finally:
            await api.close()

    exc = asyncio.run(asyncio.wait_for(main(), 60))
    assert exc.status == 403 and SECRET not in everything_the_agent_sees(exc)
    assert APPROVER_FAILED in json.loads(exc.body)["message"]
    assert SECRET not in record.read_text()
    assert any(SECRET in logging.Formatter().formatException(r.exc_info) for r in caplog.records if r.exc_info)


def test_an_explicit_denial_still_tells_the_agent_the_approvers_reason(kubeconfig):
    with agent(kubeconfig, approver=lambda r: kubeleash.Answer.deny(by="alice", reason="not on a friday")) as api:
        with pytest.raises(ApiException) as e:
            core(api).create_namespaced_secret("dev", new_secret(f"fri-{uuid.uuid4().hex[:6]}"))
    assert "alice denied approval" in e.value.body and "not on a friday" in e.value.body


@pytest.mark.parametrize("window", [1e300, 1.7976931348623157e308, 10**20, 86400 * 365])
def test_a_huge_approval_window_approves_and_cannot_crash_the_binding(kubeconfig, window):
    with agent(kubeconfig, approver=lambda r: kubeleash.Answer.approve(by="alice", window=window)) as api:
        name = f"win-{uuid.uuid4().hex[:6]}"
        assert core(api).create_namespaced_secret("dev", new_secret(name)).metadata.name == name


def test_approval_ids_are_not_assumed_deterministic(kubeconfig):
    """Two identical held requests get ids the agent cannot compute; only their shape is stable."""
    ids: list[str] = []

    def approver(req):
        ids.append(req.id)
        return False

    with agent(kubeconfig, approver=approver) as api:
        for _ in range(2):
            with pytest.raises(ApiException):
                core(api).create_namespaced_secret("dev", new_secret("same-name"))
    assert len(ids) == 2 and all(re.fullmatch(r"[0-9a-f]{16,}", i) for i in ids)


# --- upstream and kubeconfig errors -----------------------------------------------------------


def test_an_unreachable_server_tells_the_agent_only_a_correlation_id(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="kubeleash")
    # A path prefix that looks like a credential, on a port nothing listens on.
    server = f"http://127.0.0.1:1/clusters/{SECRET}"
    kc = write_kubeconfig(tmp_path / "kc", server, user={"token": f"operator-{SECRET}"})
    with connect(kubeleash.Policy.from_yaml("apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - {name: ns, effect: allow, verbs: [list], resources: [namespaces]}\n"), user="a", kubeconfig=kc) as api:
        with pytest.raises(Exception) as e:
            core(api).list_namespace()
    seen = everything_the_agent_sees(e.value)
    assert SECRET not in seen and "127.0.0.1:1" not in seen and str(kc) not in seen
    m = re.search(r"correlation id ([0-9a-f-]+)", seen)
    assert m, seen
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "kubeleash")
    # The layer refuses with its own id (502) or the transport raises with ours: either way the
    # operator can find the details (the record holds the layer's; the logger the transport's).
    if isinstance(e.value, ApiException):
        assert e.value.status in (502, 503)
    else:
        assert m.group(1) in logged and "127.0.0.1:1" in logged


@pytest.mark.parametrize(
    "user",
    [
        {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "/bin/sh", "args": ["-c", f"echo {SECRET} >&2; exit 1"], "env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": SECRET}]}},
        {"auth-provider": {"name": "oidc", "config": {"client-secret": SECRET, "refresh-token": SECRET}}},
        {"client-certificate-data": "eA==", "client-key-data": SECRET},
        {"username": "admin", "password": SECRET},
    ],
    ids=["exec-plugin", "auth-provider", "client-cert", "basic"],
)
def test_a_refused_kubeconfig_names_no_credential(tmp_path, user):
    kc = write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1", user=user)
    with pytest.raises(kubeleash.ConnectError) as e:
        connect(POLICY, user="a", kubeconfig=kc)
    assert SECRET not in everything_the_agent_sees(e.value)


@pytest.mark.parametrize(
    "server",
    [
        f"http://admin:{SECRET}@127.0.0.1:1",
        f"http://{SECRET}@127.0.0.1:1/prefix",
        f"https://x:{SECRET}@example.com:6443",
        f"http://127.0.0.1:1/?token={SECRET}",
        f"ftp://u:{SECRET}@example.com",
    ],
)
def test_a_server_url_with_credentials_is_refused_without_quoting_them(tmp_path, server):
    kc = write_kubeconfig(tmp_path / "kc", server)
    with pytest.raises(kubeleash.ConnectError) as e:
        connect(POLICY, user="a", kubeconfig=kc)
    assert SECRET not in everything_the_agent_sees(e.value)


@pytest.mark.parametrize(
    "text",
    [
        f"apiVersion: v1\nusers:\n- name: u\n  user: {{token: {SECRET}\n  ]]] not yaml\n",
        f"apiVersion: v1\nusers:\n- name: u\n  user: {{token: [{SECRET}]}}\n",
        f"apiVersion: v1\nusers: {SECRET}\n",
        f"current-context: {{{SECRET}: 1}}\n",
        f"clusters:\n- name: c\n  cluster: {{server: [{SECRET}]}}\n",
        f"{SECRET}\n",
        f"users:\n- name: u\n  user: {{token: a, token: {SECRET}}}\n",
    ],
)
def test_an_unparsable_kubeconfig_does_not_quote_its_text(tmp_path, text):
    kc = tmp_path / "kc"
    kc.write_text(text)
    with pytest.raises(kubeleash.ConnectError) as e:
        connect(POLICY, user="a", kubeconfig=kc)
    assert SECRET not in everything_the_agent_sees(e.value)
    assert "is not valid" in str(e.value)


# --- framing: the body decided is the body sent ------------------------------------------------


class Recorder(BaseHTTPRequestHandler):
    """A stand-in API server that keeps each request's headers and exactly the body it framed."""

    protocol_version = "HTTP/1.1"
    seen: list[dict] = []

    def _any(self):
        headers = [(k.lower(), v) for k, v in self.headers.items()]
        te = self.headers.get("Transfer-Encoding")
        if te is not None:
            body = b"<chunked: the caller's framing reached the upstream>"
            self.close_connection = True
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Recorder.seen.append({"method": self.command, "path": self.path, "headers": headers, "body": body})
        out = json.dumps({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "x"}}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_POST = do_PUT = do_PATCH = do_GET = do_DELETE = _any

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    Recorder.seen = []
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def framing_variants(body: bytes, rng: random.Random) -> list[tuple[str, str]]:
    """Headers an attacker could add to lie about the body's framing or its hop."""
    n = len(body)
    lies = [
        ("Content-Length", str(rng.choice([0, 1, n // 2, max(n - 1, 0), n + 1, n * 2, 10**9]))),
        ("Content-Length", rng.choice(["-1", "abc", "5, 5", " 3", "0x10", "1e3"])),
        ("Transfer-Encoding", rng.choice(["chunked", "gzip, chunked", "identity", "chunked, chunked", "xchunked", "Chunked"])),
        ("Host", rng.choice(["evil.example", "169.254.169.254", "kubernetes.default.svc:443", "127.0.0.1:1"])),
        ("Connection", rng.choice(["close", "keep-alive", "X-Hop, Content-Type-Extra", "te"])),
        ("Keep-Alive", "timeout=999"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", rng.choice(["trailers", "gzip", "chunked"])),
        ("Trailer", rng.choice(["X-Smuggled", "Content-Length"])),
        ("X-Hop", "dropped-if-connection-names-it"),
        ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
    ]
    k = rng.randint(1, len(lies))
    return rng.sample(lies, k)


def test_the_upstream_gets_exactly_the_decided_body_whatever_the_framing_headers(recorder, tmp_path):
    record = tmp_path / "r.jsonl"
    kc = write_kubeconfig(tmp_path / "kc", f"http://{recorder}")
    rng = random.Random(12)
    api = connect(POLICY, user="agent-1", groups=["ai-agents"], kubeconfig=kc, record=record)
    t = transport(api)
    sent = []
    try:
        for i in range(60):
            name = f"cm-{i}"
            payload = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"x": "y" * rng.randint(0, 200)}}
            body = json.dumps(payload).encode()
            headers = [("Content-Type", "application/json")] + framing_variants(body, rng)
            rng.shuffle(headers)
            status, _, _, resp = t.send("POST", "/api/v1/namespaces/dev/configmaps", headers, body)
            resp.read()
            assert status == 201, (status, headers)
            sent.append((body, headers))
    finally:
        api.close()
    assert len(Recorder.seen) == len(sent)
    requests = [r for r in kubeleash.verify_record(record.read_text())["records"] if r["kind"] == "request"]
    assert len(requests) == len(sent)
    for (body, headers), got, rec in zip(sent, Recorder.seen, requests):
        h = dict(got["headers"])
        assert got["body"] == body, headers
        assert h.get("content-length") == str(len(body)), headers
        assert "transfer-encoding" not in h and "te" not in h and "trailer" not in h, headers
        assert "keep-alive" not in h and "proxy-connection" not in h and "http2-settings" not in h, headers
        assert "x-hop" not in h or not any(k.lower() == "connection" and "X-Hop" in v for k, v in headers), headers
        assert h.get("host") == recorder, headers
        assert sum(1 for k, _ in got["headers"] if k == "host") == 1
        assert rec["request"]["body"].encode() == body


@pytest.mark.parametrize(
    "headers",
    [
        [("Upgrade", "websocket"), ("Connection", "Upgrade")],
        [("Upgrade", "SPDY/3.1")],
        [("Upgrade", "")],
        [("upgrade", "h2c"), ("HTTP2-Settings", "AAMA")],
        [("Connection", "upgrade")],
        [("Connection", "keep-alive, Upgrade")],
    ],
)
def test_an_upgrade_is_refused_before_anything_leaves(recorder, tmp_path, headers):
    kc = write_kubeconfig(tmp_path / "kc", f"http://{recorder}")
    with connect(POLICY, user="agent-1", groups=["ai-agents"], kubeconfig=kc) as api:
        for target in ("/api/v1/namespaces/dev/configmaps", "/api/v1/namespaces/dev/pods/web/exec?command=sh", "/api/v1/namespaces/dev/configmaps?watch=1"):
            with pytest.raises(kubeleash.RequestError, match="upgrade"):
                transport(api).send("GET", target, headers, None)
    assert Recorder.seen == []


@pytest.mark.parametrize(
    "target",
    [
        "http://evil.example/api/v1/namespaces",
        "https://127.0.0.1:1/api/v1/namespaces",
        "evil.example:443",
        "*",
        "api/v1/namespaces",
    ],
)
def test_a_target_naming_a_host_is_refused(recorder, tmp_path, target):
    kc = write_kubeconfig(tmp_path / "kc", f"http://{recorder}")
    with connect(POLICY, user="agent-1", groups=["ai-agents"], kubeconfig=kc) as api:
        with pytest.raises(kubeleash.RequestError):
            transport(api).send("GET", target, None, None)
    assert Recorder.seen == []


class Truncating(BaseHTTPRequestHandler):
    """An upstream that promises more body than it sends, then hangs up."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b'{"kind":"ConfigMapList","apiVersion":"v1","items":[')
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_a_response_that_breaks_off_tells_the_agent_only_a_correlation_id(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="kubeleash")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Truncating)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{server.server_address[1]}"
    try:
        kc = write_kubeconfig(tmp_path / "kc", f"http://{address}/prefix-{SECRET}")
        with connect(POLICY, user="agent-1", groups=["ai-agents"], kubeconfig=kc) as api:
            with pytest.raises(Exception) as e:
                core(api).list_namespaced_config_map("dev")
    finally:
        server.shutdown()
        server.server_close()
    seen = everything_the_agent_sees(e.value)
    assert SECRET not in seen and address not in seen, seen
    if not isinstance(e.value, kubeleash.MaskError):
        m = re.search(r"correlation id ([0-9a-f-]+)", seen)
        assert m, seen
        assert any(m.group(1) in r.getMessage() for r in caplog.records)


# --- _request_timeout -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given,expected",
    [
        (None, (None, None)),
        (5, (5.0, 5.0)),
        (2.5, (2.5, 2.5)),
        ((1, 4), (5.0, 4.0)),
        ("urllib3", None),
    ],
)
def test_timeouts_from_every_form_urllib3_gets(given, expected):
    import urllib3

    from kubeleash.kubernetes import _timeouts

    if given == "urllib3":
        assert _timeouts(urllib3.Timeout(total=3)) == (3.0, 3.0)
        assert _timeouts(urllib3.Timeout(connect=1, read=2)) == (3.0, 2.0)
        assert _timeouts(urllib3.Timeout(connect=1)) == (None, None)
        assert _timeouts(urllib3.Timeout(read=2)) == (2.0, 2.0)
        assert _timeouts(urllib3.Timeout(total=1.5, connect=1, read=2)) == (1.5, 2.0)
        assert _timeouts(urllib3.Timeout()) == (None, None)
        return
    assert _timeouts(given) == expected


@pytest.mark.parametrize("timeout", [None, 5, 5.5, (3, 5), (0.5, 7.5)])
def test_request_timeout_in_every_form_works(kubeconfig, timeout):
    with agent(kubeconfig) as api:
        kw = {} if timeout is None else {"_request_timeout": timeout}
        assert core(api).list_namespaced_config_map("dev", **kw).kind == "ConfigMapList"
        assert core(api).read_namespaced_secret("db-credentials", "dev", **kw).metadata.name == "db-credentials"


# Long enough that the request is held (the approver asked) before the client gives up, however
# loaded the machine; far below the 60 s approval timeout it must not wait for.
@pytest.mark.parametrize("timeout", [5, (1, 5)])
def test_a_held_request_times_out_on_the_clients_timeout(kubeconfig, timeout):
    release = threading.Event()
    asked = threading.Event()

    def approver(req):
        asked.set()
        release.wait(30)
        return False

    try:
        with agent(kubeconfig, approver=approver, approval_timeout=60) as api:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                core(api).create_namespaced_secret("dev", new_secret(f"slow-{uuid.uuid4().hex[:6]}"), _request_timeout=timeout)
            took = time.monotonic() - started
            assert asked.is_set()
            # Bounded by the client's timeout, not by the 60 s approval timeout.
            assert took < 20, took
    finally:
        release.set()


def test_a_held_request_times_out_on_the_asyncio_clients_timeout(kubeconfig):
    from kubernetes.aio import client as aio_client

    release = threading.Event()

    def approver(req):
        release.wait(30)
        return False

    async def main():
        api = connect_aio(POLICY, user="agent-1", groups=["ai-agents"], kubeconfig=kubeconfig, approver=approver, approval_timeout=60)
        try:
            body = aio_client.V1Secret(metadata=aio_client.V1ObjectMeta(name=f"aio-slow-{uuid.uuid4().hex[:6]}"))
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await aio_client.CoreV1Api(api).create_namespaced_secret("dev", body, _request_timeout=0.5)
            return time.monotonic() - started
        finally:
            await api.close()

    try:
        assert asyncio.run(asyncio.wait_for(main(), 60)) < 20
    finally:
        release.set()
