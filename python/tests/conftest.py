"""Shared fixtures: the repository's corpus, and a `kubeleash sandbox` on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO / "tests" / "testdata"


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


def write_kubeconfig(path: Path, server: str, user: dict | None = None, namespace: str = "dev") -> Path:
    """A kubeconfig with one context pointing at `server`; `user` is the user entry's body."""
    import json

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
