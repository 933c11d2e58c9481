"""`kubeleash mcp` end to end, driven by the official MCP Python SDK (`mcp`, pinned in
python/test.sh), over both transports and against both API servers.

Every scenario taking `transport` runs over stdio (the SDK spawns `kubeleash mcp`) and over
streamable HTTP (`kubeleash mcp --listen 127.0.0.1:0`, the SDK's HTTP client with the bearer
token kubeleash wrote); every scenario taking `server` (conftest.py) runs on `kubeleash sandbox`
and on a real kube-apiserver. Tool results carry the
masked JSON as text and as structuredContent; refusals, holds and bad arguments are `isError`
results (or, for bad arguments, JSON-RPC errors) and never reach the API server.

What really is on a server is checked with an unguarded client (`server.judge()`), never
through MCP. Waits are on conditions (a held request showing up in `kubeleash approvals list`,
a progress notification arriving) bounded by PATIENCE, never timed sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import os
import re
import selectors
import signal
import stat
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import pytest

import kubernetes  # installed by python/test.sh: a missing client fails, never skips
from kubernetes.client.exceptions import ApiException  # noqa: E402
from mcp import ClientSession, MCPError, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402

from conftest import REPO, kubeleash_binary, not_found  # noqa: E402

#: A bound on waits that normally take milliseconds (a failure bound, never a measurement).
PATIENCE = 60
#: The most one scenario may take, all its calls together.
SCENARIO_LIMIT = 300

DEMO_POLICY = REPO / "examples" / "agent-policy.yaml"
DB_PASSWORD = "S3cr3t-Db-P4ssw0rd!"  # dev/db-credentials in both seeds

READ_TOOLS = {"get", "list", "events", "logs", "can_i", "api_resources"}
WRITE_TOOLS = {"apply", "patch", "delete", "scale", "rollout_restart"}

_DISCOVERY = '{name: discovery, effect: allow, verbs: [get], nonResourceURLs: [/api, "/api/*", /apis, "/apis/*", /version, "/openapi/*"]}'
_READ_DEV = (
    "{name: read-dev, effect: allow, subjects: {groups: [ai-agents]}, verbs: [get, list, watch], "
    'apiGroups: ["", apps], resources: [pods, pods/log, deployments, replicasets, services, configmaps, '
    "secrets, events, serviceaccounts], namespaces: [dev]}"
)
_ROLL_DEV = (
    "{name: roll-dev, effect: allow, subjects: {groups: [ai-agents]}, verbs: [patch], apiGroups: [apps], "
    "resources: [deployments, deployments/scale], namespaces: [dev]}"
)


def policy_text(name: str, *rules: str) -> str:
    body = "".join(f"    - {r}\n" for r in rules)
    return f"apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nmetadata: {{name: {name}}}\nspec:\n  rules:\n{body}"


READ_ONLY_POLICY = policy_text("mcp-read-only", _READ_DEV, _DISCOVERY)
DEPLOYER_POLICY = policy_text("mcp-deployer", _READ_DEV, _ROLL_DEV, _DISCOVERY)
#: Writes for another group, and a deny for everyone: neither lists a write tool for agent-1.
OTHERS_POLICY = policy_text(
    "mcp-others",
    _READ_DEV,
    "{name: ops-writes, effect: allow, subjects: {groups: [ops]}, verbs: [create, update, patch, delete], resources: [\"*\"]}",
    "{name: no-deletes, effect: deny, verbs: [delete, patch], resources: [\"*\"]}",
    _DISCOVERY,
)


@pytest.fixture(params=["stdio", "http"])
def transport(request) -> str:
    """Each MCP transport in turn."""
    return request.param


# --- starting `kubeleash mcp` and talking to it -----------------------------------------------


def run(scenario, *args) -> None:
    """Run an async scenario to its end, bounded by SCENARIO_LIMIT."""

    async def main():
        with anyio.fail_after(SCENARIO_LIMIT):
            await scenario(*args)

    anyio.run(main)


def write_policy(tmp_path: Path, text: str) -> Path:
    p = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.yaml"
    p.write_text(text)
    return p


def mcp_args(server, policy: Path, *extra: str, kubeconfig: str | Path | None = None) -> list[str]:
    """`kubeleash mcp` arguments for agent-1 (group ai-agents), working in dev."""
    return [
        "mcp",
        "--policy", str(policy),
        "--kubeconfig", str(kubeconfig or server.kubeconfig),
        "--user", "agent-1",
        "--group", "ai-agents",
        "--namespace", "dev",
        *extra,
    ]  # fmt: skip


def first_line(proc: subprocess.Popen, timeout: float) -> str:
    """The first line `proc` prints on stdout, read without blocking past `timeout`."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    got = b""
    deadline = time.monotonic() + timeout
    try:
        while b"\n" not in got:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                pytest.fail(f"`kubeleash mcp --listen` printed no line within {timeout} s (got {got!r})")
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            got += chunk
    finally:
        sel.close()
    return got.decode(errors="replace").split("\n")[0].strip()


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, as an operator stops a server, and wait for it to exit."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"`kubeleash mcp` did not exit within {PATIENCE} s of SIGTERM")


@contextlib.contextmanager
def http_server(args: list[str], tmp_path: Path, errlog):
    """`kubeleash mcp ARGS --listen 127.0.0.1:0`: yields (url, token, process); stopped after."""
    token_file = tmp_path / f"agent-token-{uuid.uuid4().hex[:6]}"
    proc = subprocess.Popen(
        [str(kubeleash_binary()), *args, "--listen", "127.0.0.1:0", "--agent-token-file", str(token_file)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=errlog,
    )
    try:
        line = first_line(proc, PATIENCE)
        m = re.fullmatch(r"listening on (http://127\.0\.0\.1:(\d+)/mcp)", line)
        assert m and m.group(2) != "0", f"unexpected first line from `kubeleash mcp --listen`: {line!r}"
        token = token_file.read_text().strip()
        yield m.group(1), token, proc
    finally:
        stop(proc)


@contextlib.asynccontextmanager
async def agent(transport: str, args: list[str], tmp_path: Path):
    """An initialized MCP ClientSession with `kubeleash mcp ARGS` over `transport`. The server
    has exited when this returns (stdio: the SDK closes its stdin; HTTP: SIGTERM)."""
    with open(tmp_path / f"kubeleash-mcp-{transport}.stderr", "a") as errlog:
        if transport == "stdio":
            params = StdioServerParameters(command=str(kubeleash_binary()), args=args)
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    yield session
        else:
            with http_server(args, tmp_path, errlog) as (url, token, _proc):
                async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as client:
                    async with streamable_http_client(url, http_client=client) as (read, write):
                        async with ClientSession(read, write) as session:
                            await session.initialize()
                            yield session


def text_of(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


def ok(result) -> dict:
    """A successful tool result's JSON: its text content parses to its structuredContent."""
    assert not result.is_error, text_of(result)
    data = json.loads(text_of(result))
    assert result.structured_content == data, (result.structured_content, data)
    return data


def refused(result) -> str:
    """An isError tool result's text."""
    assert result.is_error, f"expected an error result, got: {text_of(result)[:2000]}"
    return text_of(result)


async def rejected(session: ClientSession, tool: str, arguments: dict) -> str:
    """Call a tool that must fail: an isError result or a JSON-RPC error; what it said."""
    try:
        result = await session.call_tool(tool, arguments)
    except MCPError as e:
        return f"JSON-RPC error {e.code}: {e.message}"
    assert result.is_error, f"{tool} {short(arguments)} succeeded: {text_of(result)[:2000]}"
    return text_of(result)


def short(arguments: dict) -> str:
    return repr({k: (v[:40] + f"...({len(v)} chars)" if isinstance(v, str) and len(v) > 40 else v) for k, v in arguments.items()})


# --- the API server, unguarded ----------------------------------------------------------------


def core(server):
    return kubernetes.client.CoreV1Api(server.judge())


def rbac(server):
    return kubernetes.client.RbacAuthorizationV1Api(server.judge())


def web_pods(server) -> list[str]:
    names = [p.metadata.name for p in core(server).list_namespaced_pod("dev").items]
    web = sorted(n for n in names if n.startswith("web-"))
    assert len(web) >= 2, names
    return web


# --- approvals over the socket, as an operator answers them -----------------------------------


async def approvals(socket: Path, *args: str) -> subprocess.CompletedProcess:
    return await anyio.run_process([str(kubeleash_binary()), "approvals", "--socket", str(socket), *args], check=False)


async def held(socket: Path, matches) -> dict:
    """The held request `matches(request)` picks, once `kubeleash approvals list` shows it."""
    deadline = time.monotonic() + PATIENCE
    last = None
    while time.monotonic() < deadline:
        p = await approvals(socket, "list", "--json")
        last = p
        if p.returncode == 0:
            found = [r for r in json.loads(p.stdout)["pending"] if matches(r)]
            if found:
                assert len(found) == 1, found
                return found[0]
        await anyio.sleep(0.05)
    pytest.fail(f"no matching held request in `kubeleash approvals list` within {PATIENCE} s: {last}")


async def answer(socket: Path, verb: str, id: str, *extra: str) -> None:
    p = await approvals(socket, verb, id, *extra)
    assert p.returncode == 0, (p.stdout, p.stderr)


def role_binding(name: str) -> str:
    """A RoleBinding in dev making agent-1 cluster-admin there: a write the demo policy holds
    for a person (rule rbac-needs-a-human)."""
    return (
        "apiVersion: rbac.authorization.k8s.io/v1\n"
        "kind: RoleBinding\n"
        f"metadata:\n  name: {name}\n  namespace: dev\n"
        "roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}\n"
        "subjects:\n- {apiGroup: rbac.authorization.k8s.io, kind: User, name: agent-1}\n"
    )


def rbac_writer_kubeconfig(server) -> str | Path:
    """The kubeconfig kubeleash gets for the RBAC scenarios. The real server's operator user may
    not write RBAC objects (tests/cluster/operator-rbac.yaml), so an approved binding would be
    refused by the API server itself: there kubeleash is given the cluster admin's kubeconfig."""
    return server.env["KUBECONFIG_ADMIN"] if server.real else server.kubeconfig


# --- 1. tools/list --------------------------------------------------------------------------


def tools_by_name(listing) -> dict:
    return {t.name: t for t in listing.tools}


def test_the_tools_listed_are_the_ones_the_policy_lets_the_agent_use(server, transport, tmp_path):
    """A tool is listed iff some allow or approve rule covering the identity covers a request
    it can send, its verb and its resource (`can_i` and `api_resources` always): a read-only
    policy lists the read tools only; a rule for another group or a deny rule lists nothing;
    allowing patch on deployments and their scale lists apply, patch, scale and rollout_restart
    but not delete. The demo policy holds RBAC writes (rbac-needs-a-human, no subjects: it
    covers everyone): apply, patch and delete are listed, but not scale or rollout_restart,
    which no rule of it reaches. Read tools are marked read-only, delete destructive, scale
    idempotent."""

    async def listed(policy: Path) -> dict:
        async with agent(transport, mcp_args(server, policy), tmp_path) as s:
            assert s.initialize_result is not None and s.initialize_result.capabilities.tools is not None
            return tools_by_name(await s.list_tools())

    async def scenario():
        read_only = await listed(write_policy(tmp_path, READ_ONLY_POLICY))
        assert set(read_only) == READ_TOOLS, sorted(read_only)

        others = await listed(write_policy(tmp_path, OTHERS_POLICY))
        assert set(others) == READ_TOOLS, sorted(others)

        deployer = await listed(write_policy(tmp_path, DEPLOYER_POLICY))
        assert set(deployer) == READ_TOOLS | {"apply", "patch", "scale", "rollout_restart"}, sorted(deployer)
        assert deployer["scale"].annotations is not None and deployer["scale"].annotations.idempotent_hint is True

        demo = await listed(DEMO_POLICY)
        assert set(demo) == READ_TOOLS | {"apply", "patch", "delete"}, sorted(demo)
        for name in ("get", "list", "logs"):
            assert demo[name].annotations is not None and demo[name].annotations.read_only_hint is True, demo[name]
        assert demo["delete"].annotations is not None and demo["delete"].annotations.destructive_hint is True
        assert demo["get"].input_schema.get("type") == "object"
        assert {"resource", "name"} <= set(demo["get"].input_schema.get("required", [])), demo["get"].input_schema

    run(scenario)


# --- 2. reads ----------------------------------------------------------------------------------


def test_pods_are_listed_and_read(server, transport, tmp_path):
    """list and get return the API server's objects as JSON (text = structuredContent), without
    managedFields; events and can_i answer too."""

    async def scenario():
        web = web_pods(server)
        async with agent(transport, mcp_args(server, DEMO_POLICY), tmp_path) as s:
            pods = ok(await s.call_tool("list", {"resource": "pods", "namespace": "dev"}))
            names = sorted(p["metadata"]["name"] for p in pods["items"])
            assert [n for n in names if n.startswith("web-")] == web, names
            assert all("managedFields" not in p["metadata"] for p in pods["items"])

            # kubectl's short name, and the namespace from --namespace.
            pod = ok(await s.call_tool("get", {"resource": "po", "name": web[0]}))
            assert pod["kind"] == "Pod" and pod["metadata"]["name"] == web[0] and pod["metadata"]["namespace"] == "dev"
            assert pod["metadata"]["uid"] == core(server).read_namespaced_pod(web[0], "dev").metadata.uid
            assert "managedFields" not in pod["metadata"]

            events = ok(await s.call_tool("events", {"namespace": "dev", "resource": "deployments", "name": "web"}))
            assert "ScalingReplicaSet" in json.dumps(events), events

    run(scenario)


def test_can_i_answers_from_the_policy(server, transport, tmp_path):
    """can_i says what kubeleash would do with a request, with the rule: {allowed, denied,
    reason}; it takes the spec's arguments (apiGroup too), and its text is the same JSON as its
    structuredContent, as every tool result's."""

    async def scenario():
        async with agent(transport, mcp_args(server, DEMO_POLICY), tmp_path) as s:
            yes = await s.call_tool("can_i", {"verb": "list", "resource": "pods", "namespace": "dev"})
            no = await s.call_tool("can_i", {"verb": "delete", "resource": "namespaces", "name": "prod"})
            wait = await s.call_tool("can_i", {"verb": "create", "resource": "rolebindings", "namespace": "dev"})
            grouped = await s.call_tool(
                "can_i", {"verb": "create", "resource": "rolebindings", "namespace": "dev", "apiGroup": "rbac.authorization.k8s.io"}
            )
        answers = [r.structured_content for r in (yes, no, wait)]
        assert not any(r.is_error for r in (yes, no, wait)), [text_of(r) for r in (yes, no, wait)]
        assert answers[0]["allowed"] is True and answers[0]["denied"] is False, answers
        assert 'rule "read-dev"' in answers[0]["reason"], answers
        assert answers[1]["allowed"] is False and answers[1]["denied"] is True, answers
        assert "protect-production" in answers[1]["reason"], answers
        assert answers[2]["allowed"] is False and answers[2]["denied"] is False, answers
        assert "rbac-needs-a-human" in answers[2]["reason"], answers
        # The spec's interface, checked last.
        assert not grouped.is_error and grouped.structured_content == answers[2], text_of(grouped)
        for result in (yes, no, wait):
            ok(result)

    run(scenario)


# --- 3. secrets --------------------------------------------------------------------------------


def test_a_secret_comes_back_masked(server, transport, tmp_path):
    """get of a Secret: every data value masked; the seeded password appears nowhere in the
    result, plain or base64 (nor via the last-applied annotation)."""

    async def scenario():
        real = core(server).read_namespaced_secret("db-credentials", "dev")
        assert base64.b64decode(real.data["password"]).decode() == DB_PASSWORD  # the server holds it
        async with agent(transport, mcp_args(server, DEMO_POLICY), tmp_path) as s:
            result = await s.call_tool("get", {"resource": "secrets", "name": "db-credentials", "namespace": "dev"})
            secret = ok(result)
        assert secret["metadata"]["name"] == "db-credentials" and set(secret["data"]) == set(real.data)
        for key, value in secret["data"].items():
            assert value != real.data[key], key
        everything = text_of(result) + json.dumps(result.structured_content)
        for leaked in [DB_PASSWORD, base64.b64encode(DB_PASSWORD.encode()).decode(), *real.data.values()]:
            assert leaked not in everything

    run(scenario)


# --- 4. refusals -------------------------------------------------------------------------------


def test_deleting_prod_is_refused_with_the_rule(server, transport, tmp_path):
    """delete of namespace prod: an isError result saying `kubeleash refused this:` with the
    rule, the Kubernetes Status in structuredContent; prod is still there."""

    async def scenario():
        async with agent(transport, mcp_args(server, DEMO_POLICY), tmp_path) as s:
            result = await s.call_tool("delete", {"resource": "namespaces", "name": "prod"})
        text = refused(result)
        assert text.startswith("kubeleash refused this:"), text
        assert 'rule "protect-production"' in text, text
        status = result.structured_content["status"]
        assert status["kind"] == "Status" and status["code"] == 403, status
        causes = {c["field"]: c["message"] for c in status["details"]["causes"]}
        assert causes["kubeleash.rule"] == "protect-production", causes
        ns = core(server).read_namespace("prod")
        assert ns.status.phase == "Active" and ns.metadata.deletion_timestamp is None

    run(scenario)


# --- 5. approvals ------------------------------------------------------------------------------


def test_a_held_binding_waits_for_a_person_blocking(server, transport, tmp_path):
    """Blocking mode: binding cluster-admin waits until a person answers over the approvals
    socket, with progress notifications naming the approval; approved, it is made; denied, the
    agent is told the reason and nothing is made."""
    socket = tmp_path / "approvals.sock"
    args = mcp_args(server, DEMO_POLICY, "--approvals", "socket", "--approvals-socket", str(socket), kubeconfig=rbac_writer_kubeconfig(server))
    yes, no = f"kl-mcp-yes-{uuid.uuid4().hex[:6]}", f"kl-mcp-no-{uuid.uuid4().hex[:6]}"
    judge = rbac(server)

    async def held_apply(s: ClientSession, name: str, verdict: str, *extra: str):
        progress: list[str | None] = []
        first = anyio.Event()

        async def on_progress(value, total, message):
            progress.append(message)
            first.set()

        call = asyncio.ensure_future(
            s.call_tool("apply", {"manifest": role_binding(name), "reason": f"because {name}"}, progress_callback=on_progress)
        )
        try:
            request = await held(socket, lambda r: name in r["target"] or name in (r.get("body") or ""))
            assert request["rule"] == "rbac-needs-a-human", request
            assert request["identity"] == {"user": "agent-1", "groups": ["ai-agents"]}, request
            assert request.get("agent_reason") == f"because {name}", request
            assert not call.done(), "the call must wait for the person's answer"
            await answer(socket, verdict, request["id"], *extra)
            result = await call
        finally:
            call.cancel()
        with anyio.fail_after(PATIENCE):
            await first.wait()
        assert progress[0] and request["id"] in progress[0], progress
        return result

    async def scenario():
        async with agent(transport, args, tmp_path) as s:
            made = ok(await held_apply(s, yes, "approve"))
            assert yes in json.dumps(made), made
            bound = judge.read_namespaced_role_binding(yes, "dev")
            assert bound.role_ref.name == "cluster-admin"

            text = refused(await held_apply(s, no, "deny", "--reason", "no cluster-admin for agents"))
            assert "no cluster-admin for agents" in text, text
        assert not_found(lambda: judge.read_namespaced_role_binding(no, "dev"))

    try:
        run(scenario)
    finally:
        with contextlib.suppress(ApiException):
            judge.delete_namespaced_role_binding(yes, "dev")


def test_a_held_binding_nobody_answers_times_out(server, transport, tmp_path):
    """Blocking mode, nobody answers within --approval-timeout: the call ends as an isError
    result naming the approval and saying nobody answered; nothing is made."""
    socket = tmp_path / "approvals.sock"
    args = mcp_args(
        server, DEMO_POLICY, "--approvals", "socket", "--approvals-socket", str(socket), "--approval-timeout", "1",
        kubeconfig=rbac_writer_kubeconfig(server),
    )  # fmt: skip
    name = f"kl-mcp-late-{uuid.uuid4().hex[:6]}"

    async def scenario():
        async with agent(transport, args, tmp_path) as s:
            result = await s.call_tool("apply", {"manifest": role_binding(name)})
        text = refused(result)
        assert "rbac-needs-a-human" in text and re.search(r"approval [0-9a-f]{32}", text), text
        assert re.search(r"nobody answered|timed out|expired", text), text

    run(scenario)
    assert not_found(lambda: rbac(server).read_namespaced_role_binding(name, "dev"))


def pending_id(result) -> str | None:
    """The approval id of a held (non-blocking) result, None for any other result."""
    approval = (result.structured_content or {}).get("approval") if result.is_error else None
    return approval["id"] if approval and approval.get("state") == "pending" else None


async def until_answered(s: ClientSession, tool: str, arguments: dict, id: str):
    """Call again until the answer is no longer "pending under `id`" (the layer keeps the
    person's answer just after the socket acknowledges it). Bounded by PATIENCE."""
    deadline = time.monotonic() + PATIENCE
    while True:
        result = await s.call_tool(tool, arguments)
        if pending_id(result) != id:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"approval {id} stayed pending {PATIENCE} s after it was answered")
        await anyio.sleep(0.01)


def test_a_held_binding_nonblocking(server, transport, tmp_path):
    """Non-blocking mode: the held call returns at once, isError, with the approval's id and
    state pending; once a person approves, the same call goes through; once a person denies, it
    fails with the reason and nothing is made."""
    socket = tmp_path / "approvals.sock"
    args = mcp_args(
        server, DEMO_POLICY, "--approvals", "socket", "--approvals-socket", str(socket), "--approvals-nonblocking=7",
        kubeconfig=rbac_writer_kubeconfig(server),
    )  # fmt: skip
    yes, no = f"kl-mcp-nb-yes-{uuid.uuid4().hex[:6]}", f"kl-mcp-nb-no-{uuid.uuid4().hex[:6]}"
    judge = rbac(server)

    said: list[str] = []

    async def first_hold(s: ClientSession, arguments: dict) -> str:
        result = await s.call_tool("apply", arguments)
        text = refused(result)
        approval = result.structured_content["approval"]
        assert approval["state"] == "pending" and approval["retryAfterSeconds"] == 7, approval
        assert approval["id"] in text, text
        said.append(text)
        return approval["id"]

    async def scenario():
        async with agent(transport, args, tmp_path) as s:
            call = {"manifest": role_binding(yes)}
            id = await first_hold(s, call)
            assert not_found(lambda: judge.read_namespaced_role_binding(yes, "dev"))
            request = await held(socket, lambda r: r["id"] == id)
            assert request["rule"] == "rbac-needs-a-human", request
            await answer(socket, "approve", id)
            ok(await until_answered(s, "apply", call, id))
            assert judge.read_namespaced_role_binding(yes, "dev").role_ref.name == "cluster-admin"
            # The approval was for one call: the same call again is held anew.
            again = await s.call_tool("apply", call)
            assert pending_id(again) not in (None, id), text_of(again)

            call = {"manifest": role_binding(no)}
            id = await first_hold(s, call)
            await held(socket, lambda r: r["id"] == id)
            await answer(socket, "deny", id, "--reason", "not without a ticket")
            text = refused(await until_answered(s, "apply", call, id))
            assert "not without a ticket" in text, text
        assert not_found(lambda: judge.read_namespaced_role_binding(no, "dev"))

    try:
        run(scenario)
    finally:
        with contextlib.suppress(ApiException):
            judge.delete_namespaced_role_binding(yes, "dev")
    # The wording the spec gives the agent (checked last: the behaviour above matters more).
    assert all("held for a person's approval" in text for text in said), said


# --- 6. logs (sandbox only) --------------------------------------------------------------------


JWT = re.compile(r"Bearer (eyJ[\w-]+\.[\w-]+\.[\w-]+)")


# SANDBOX ONLY: a pod's log comes from its kubelet, and the real test cluster has none (no
# nodes; its pods stay Pending: tests/cluster/README.md). The sandbox serves seeded logs, one of
# which leaks a service-account token (sandbox/src/seed/mod.rs, web_logs).
def test_a_leaked_token_in_a_log_is_masked(sandbox, transport, tmp_path):
    """logs of the web pod whose log leaks a service-account JWT: the JWT is not in the result;
    a kubeleash mask marker is."""
    from conftest import Server, write_kubeconfig

    server = Server("sandbox", sandbox, write_kubeconfig(tmp_path / "kubeconfig", sandbox), "dev")
    leaks = {}
    for pod in web_pods(server):
        m = JWT.search(core(server).read_namespaced_pod_log(pod, "dev"))
        if m:
            leaks[pod] = m.group(1)
    assert leaks, "the sandbox seeds a web pod whose log leaks a token"
    pod, jwt = next(iter(leaks.items()))

    async def scenario():
        async with agent(transport, mcp_args(server, DEMO_POLICY), tmp_path) as s:
            result = await s.call_tool("logs", {"name": pod, "namespace": "dev"})
        assert not result.is_error, text_of(result)
        log = result.structured_content["log"]
        assert "starting web" in log, log
        # The text is the log itself, or the same JSON as structuredContent (the spec's words
        # allow either reading).
        assert text_of(result) == log or json.loads(text_of(result)) == result.structured_content
        everything = text_of(result) + json.dumps(result.structured_content)
        assert jwt not in everything and jwt.split(".")[2] not in everything
        assert "BEGIN OPENSSH PRIVATE KEY" not in everything and "BEGIN RSA PRIVATE KEY" not in everything
        assert "[masked" in log, log

    run(scenario)


# --- 7. the record -----------------------------------------------------------------------------


def replay(record: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(kubeleash_binary()), "replay", "--verify", str(record)], capture_output=True, text=True, timeout=PATIENCE
    )


def request_records(record: Path) -> list[dict]:
    return [r for r in map(json.loads, record.read_text().splitlines()) if r.get("kind") == "request"]


def test_the_session_is_recorded_and_replays_as_kubectl(server, transport, tmp_path):
    """--record: after the session, `kubeleash replay --verify` accepts the record (chain intact,
    closed) and shows what the agent did as kubectl commands, with the decisions; the secret's
    value is not in the record."""
    record = tmp_path / "mcp.jsonl"

    async def scenario():
        async with agent(transport, mcp_args(server, DEMO_POLICY, "--record", str(record)), tmp_path) as s:
            ok(await s.call_tool("get", {"resource": "secret", "name": "db-credentials", "namespace": "dev"}))
            refused(await s.call_tool("delete", {"resource": "namespace", "name": "prod"}))
            ok(await s.call_tool("list", {"resource": "pods", "namespace": "dev"}))

    run(scenario)
    p = replay(record)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "kubectl get secret db-credentials -n dev" in p.stdout, p.stdout
    assert "kubectl delete namespace prod" in p.stdout, p.stdout
    assert re.search(r"kubectl get pods\b.*-n dev", p.stdout), p.stdout
    assert "DENIED by rule protect-production" in p.stdout, p.stdout
    requests = request_records(record)
    assert all(r["identity"] == {"user": "agent-1", "groups": ["ai-agents"]} for r in requests), requests
    assert DB_PASSWORD not in record.read_text()


# --- 8. path tricks ----------------------------------------------------------------------------


DISCOVERY_PATH = re.compile(r"/api(/v1)?|/apis(/[a-z0-9.-]+(/v[0-9a-z]+)?)?|/version|/openapi/.*")

BAD_CALLS = [
    ("get", {"resource": "secrets", "name": "../secrets/x", "namespace": "dev"}),
    ("get", {"resource": "pods", "name": "..", "namespace": "dev"}),
    ("get", {"resource": "pods", "name": "a/b", "namespace": "dev"}),
    ("get", {"resource": "pods", "name": "%2e%2e", "namespace": "dev"}),
    ("get", {"resource": "pods", "name": "%2e%2e%2fsecrets", "namespace": "dev"}),
    ("get", {"resource": "pods", "name": "web\r\nX-Injected: yes", "namespace": "dev"}),
    ("get", {"resource": "pods", "name": "web\x00", "namespace": "dev"}),
    ("get", {"resource": "pods", "name": "web\x1b[2J", "namespace": "dev"}),
    ("get", {"resource": "pods", "name": "x" * (1 << 20), "namespace": "dev"}),
    ("get", {"resource": "secrets", "name": "db-credentials", "namespace": "../prod"}),
    ("get", {"resource": "secrets", "name": "db-credentials", "namespace": "dev/../prod"}),
    ("get", {"resource": "../secrets", "name": "db-credentials", "namespace": "dev"}),
    ("logs", {"name": "../../secrets/db-credentials", "namespace": "dev"}),
    ("list", {"resource": "pods", "namespace": "dev", "labelSelector": "a" * (1 << 20)}),
    ("get", {"resource": "pods", "namespace": "dev"}),  # no name
    ("no_such_tool", {"resource": "pods", "name": "x"}),
]


def test_path_tricks_are_errors_and_reach_nothing(server, transport, tmp_path):
    """Names with `/`, `..`, `%`, control characters, oversized arguments, a missing name and an
    unknown tool each give an error (isError or JSON-RPC), and none of them becomes an allowed
    request in the record: only the session's one good call (and discovery) was forwarded."""
    record = tmp_path / "tricks.jsonl"
    canary = web_pods(server)[0]

    async def scenario():
        async with agent(transport, mcp_args(server, DEMO_POLICY, "--record", str(record)), tmp_path) as s:
            for tool, arguments in BAD_CALLS:
                said = await rejected(s, tool, arguments)
                assert DB_PASSWORD not in said
            # The session still works after all that.
            assert ok(await s.call_tool("get", {"resource": "pods", "name": canary, "namespace": "dev"}))["metadata"]["name"] == canary

    run(scenario)
    p = replay(record)
    assert p.returncode == 0, (p.stdout, p.stderr)
    let_through = [
        r["request"]["target"]
        for r in request_records(record)
        if r["decision"]["outcome"] in ("forwarded", "approved", "audited")
    ]
    paths = [t.split("?")[0] for t in let_through]
    assert f"/api/v1/namespaces/dev/pods/{canary}" in paths, let_through
    others = [t for t in paths if t != f"/api/v1/namespaces/dev/pods/{canary}" and not DISCOVERY_PATH.fullmatch(t)]
    assert others == [], f"requests let through for the bad calls: {others}"


# --- 9. HTTP: who may talk to it ---------------------------------------------------------------


INITIALIZE = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw-http", "version": "0"}},
    }
).encode()


def post(url: str, headers: dict[str, str], host: str | None = None) -> tuple[int, str]:
    """A raw POST of an initialize request: (status, body)."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=PATIENCE)
    try:
        conn.putrequest("POST", u.path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host or u.netloc)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Accept", "application/json, text/event-stream")
        conn.putheader("Content-Length", str(len(INITIALIZE)))
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders(INITIALIZE)
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        conn.close()


def test_http_needs_the_token_and_refuses_browsers(server, tmp_path):
    """Over HTTP: the token file is 0600 and holds `kubeleash-` + 64 hex; a request without the
    bearer token, with a wrong one, naming another Host, or with browser headers (Origin,
    Sec-Fetch-Site) is refused; the right token alone is answered."""
    with open(tmp_path / "stderr", "w") as errlog, http_server(mcp_args(server, DEMO_POLICY), tmp_path, errlog) as (url, token, _):
        token_file = next(tmp_path.glob("agent-token-*"))
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert re.fullmatch(r"kubeleash-[0-9a-f]{64}", token), token
        good = {"Authorization": f"Bearer {token}"}

        status, body = post(url, good)
        assert status == 200, body
        assert '"result"' in body and "protocolVersion" in body, body

        for headers in [{}, {"Authorization": "Bearer kubeleash-" + "0" * 64}, {"Authorization": f"Bearer {token[:-1]}"},
                        {"Authorization": token}, {"Authorization": f"Basic {base64.b64encode(token.encode()).decode()}"}]:  # fmt: skip
            status, body = post(url, headers)
            assert status in (401, 403), (headers, status, body)
            assert token not in body
        for browser in [{"Origin": "http://evil.example"}, {"Origin": url.rsplit("/", 1)[0]}, {"Sec-Fetch-Site": "cross-site"},
                        {"Sec-Fetch-Site": "same-origin"}]:  # fmt: skip
            status, body = post(url, {**good, **browser})
            assert status == 403, (browser, status, body)
        status, body = post(url, good, host="evil.example")
        assert 400 <= status < 500, (status, body)


# --- the operator's credential -----------------------------------------------------------------


# REAL ONLY: the sandbox authenticates nobody, so its kubeconfig holds no credential to leak.
def test_the_operators_token_never_reaches_the_agent(real_cluster, transport, tmp_path):
    """With the operator's bearer-token kubeconfig, no tool result, success or error, shows the
    token (nor the record)."""
    from conftest import Server

    server = Server("real", real_cluster["KUBELEASH_CLUSTER_SERVER"], Path(real_cluster["KUBECONFIG_OPERATOR_TOKEN"]), "default", real_cluster)
    token = real_cluster["KUBELEASH_CLUSTER_OPERATOR_TOKEN"]
    record = tmp_path / "token.jsonl"
    calls = [
        ("list", {"resource": "secrets", "namespace": "dev"}),
        ("get", {"resource": "pods", "name": web_pods(server)[0], "namespace": "dev"}),
        ("get", {"resource": "pods", "name": "no-such-pod", "namespace": "dev"}),
        ("delete", {"resource": "namespaces", "name": "prod"}),
        ("api_resources", {}),
        ("can_i", {"verb": "get", "resource": "secrets", "namespace": "dev"}),
    ]

    async def scenario():
        seen = []
        async with agent(transport, mcp_args(server, DEMO_POLICY, "--record", str(record)), tmp_path) as s:
            for tool, arguments in calls:
                result = await s.call_tool(tool, arguments)
                seen.append(text_of(result) + json.dumps(result.structured_content))
        assert not result.is_error and not any(token in x for x in seen)
        assert "items" in seen[0]  # the list went through: the token was used, by kubeleash

    run(scenario)
    assert token not in record.read_text()
