"""Shared fixtures: the repository's corpus, and the API servers the end-to-end tests run against.

- `sandbox`: a `kubeleash sandbox` (default seed) on loopback, one per test session; its URL.
- `real_cluster`: a real etcd + kube-apiserver (tests/cluster/start.sh), seeded like the sandbox,
  one per test session, started by the first test that asks for it; start.sh's variables.
- `server`: parametrized over both ("sandbox", "real"): a test taking it is one scenario run on
  both servers. A server that does not start FAILS the tests that need it; nothing skips.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO / "tests" / "testdata"
CLUSTER = REPO / "tests" / "cluster"


def not_found(read) -> bool:
    """Whether `read()` (a read past kubeleash, a judge's) says 404; any other error fails."""
    from kubernetes.client.exceptions import ApiException

    try:
        read()
    except ApiException as e:
        assert e.status == 404, e
        return True
    return False


def kubeleash_binary() -> Path:
    """The `kubeleash` CLI: $KUBELEASH_BIN, else the workspace's debug or release build."""
    given = os.environ.get("KUBELEASH_BIN")
    if given:
        return Path(given)
    for profile in ("debug", "release"):
        p = REPO / "target" / profile / "kubeleash"
        if p.exists():
            return p
    pytest.fail(
        "the `kubeleash` binary is needed to run the sandbox: `cargo build -p kubeleash-cli` "
        "(python/test.sh does it), or set KUBELEASH_BIN",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def sandbox():
    """A fresh `kubeleash sandbox` (default seed) on 127.0.0.1; yields its URL."""
    proc = subprocess.Popen(
        [str(kubeleash_binary()), "sandbox", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            pytest.fail(f"the sandbox did not start: {line!r}", pytrace=False)
        yield line[len("listening on ") :]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory):
    """A real etcd + kube-apiserver (tests/cluster/start.sh), seeded like the sandbox; yields
    start.sh's variables as a dict. Stopped when the session ends, or by start.sh's watcher if
    this process dies first."""
    d = tmp_path_factory.mktemp("cluster")
    env = dict(os.environ, KUBELEASH_CLUSTER_OWNER_PID=str(os.getpid()))
    started = time.monotonic()
    try:
        p = subprocess.run([str(CLUSTER / "start.sh"), str(d)], env=env, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"tests/cluster/start.sh could not run: {e}", pytrace=False)
    if p.returncode != 0:
        pytest.fail(
            f"tests/cluster/start.sh failed (exit {p.returncode}); a real API server is required "
            f"(logs in {d}):\n{p.stderr[-4000:]}",
            pytrace=False,
        )
    values = {}
    for line in p.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            parts = shlex.split(value)
            values[key] = parts[0] if parts else ""
    for key in ("KUBELEASH_CLUSTER_SERVER", "KUBECONFIG_ADMIN", "KUBECONFIG_OPERATOR_CERT"):
        if not values.get(key):
            pytest.fail(f"tests/cluster/start.sh printed no {key}: {p.stdout[-2000:]}", pytrace=False)
    print(f"real API server started in {time.monotonic() - started:.1f} s at {values['KUBELEASH_CLUSTER_SERVER']}")
    try:
        yield values
    finally:
        subprocess.run([str(CLUSTER / "stop.sh"), str(d)], capture_output=True, timeout=120)


@dataclass
class Server:
    """One API server as the end-to-end tests see it."""

    kind: str
    """"sandbox" or "real"."""
    url: str
    """The API server's own URL (kubeleash talks to it; the client never does)."""
    kubeconfig: Path
    """The operator's kubeconfig, read by kubeleash: no credential for the sandbox (it
    authenticates nobody), kubeleash-operator's client certificate for the real server (a
    restricted RBAC user: reads everything, writes configmaps, secrets... in dev and prod only)."""
    namespace: str
    """The kubeconfig's namespace."""
    env: dict = field(default_factory=dict)
    """start.sh's variables (the real server only)."""

    @property
    def real(self) -> bool:
        return self.kind == "real"

    def judge(self):
        """An unguarded `kubernetes` ApiClient with full rights, to check what really is on the
        server: the sandbox itself, or the real cluster's admin."""
        import kubernetes

        if self.real:
            return kubernetes.config.new_client_from_config(config_file=self.env["KUBECONFIG_ADMIN"])
        config = kubernetes.client.Configuration(host=self.url)
        return kubernetes.client.ApiClient(config)


@pytest.fixture(scope="session", params=["sandbox", "real"])
def server(request, tmp_path_factory) -> Server:
    """Each API server in turn (the real one is started only when a test asks for it)."""
    if request.param == "sandbox":
        url = request.getfixturevalue("sandbox")
        kc = write_kubeconfig(tmp_path_factory.mktemp("sandbox") / "kubeconfig", url)
        return Server("sandbox", url, kc, "dev")
    env = request.getfixturevalue("real_cluster")
    return Server("real", env["KUBELEASH_CLUSTER_SERVER"], Path(env["KUBECONFIG_OPERATOR_CERT"]), "default", env)


def write_kubeconfig(path: Path, server: str, user: dict | None = None, namespace: str = "dev") -> Path:
    """A kubeconfig with one context pointing at `server`; `user` is the user entry's body."""
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "test",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "contexts": [{"name": "test", "context": {"cluster": "c", "namespace": namespace, **({"user": "u"} if user is not None else {})}}],
        "users": [{"name": "u", "user": user}] if user is not None else [],
    }
    # JSON is YAML: no YAML writer needed.
    path.write_text(json.dumps(cfg, indent=1))
    return path


def pytest_report_header(config):
    return f"kubeleash python binding tests; python {sys.version.split()[0]}; repo {REPO}"
