"""Masking a 10,000-item SecretList: `policy.mask` against what a Python masker must do at the
least (`json.loads`, replace every `data` value, `json.dumps`), on the same bytes, in the same run,
so a noisy machine still gives a true ratio. Goal: kubeleash at least 10x faster.

    python python/bench/mask_secretlist.py [--items N] [--rounds R] [--min-ratio X]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time

import kubeleash

MARKER = base64.b64encode(b"[masked]").decode()
POLICY = kubeleash.Policy.from_yaml("apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec: {rules: []}\n")
TARGET = "/api/v1/namespaces/dev/secrets"


def secret_list(n: int) -> bytes:
    items = []
    for i in range(n):
        items.append(
            {
                "metadata": {"name": f"app-{i}", "namespace": "dev", "uid": f"5c1f{i:08x}-7d3a-4b6e-9f0a-1c2d3e4f5a6b", "resourceVersion": str(1000 + i),
                             "creationTimestamp": "2026-11-20T10:00:00Z", "labels": {"app": f"app-{i % 50}", "tier": "backend"}},
                "data": {"username": base64.b64encode(f"user-{i}".encode()).decode(), "password": base64.b64encode(os.urandom(18)).decode(),
                         "url": base64.b64encode(f"postgres://user-{i}@db:5432/app".encode()).decode()},
                "type": "Opaque",
            }
        )
    return json.dumps({"kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": "99"}, "items": items}, separators=(",", ":")).encode()


def python_mask(body: bytes) -> bytes:
    """The least a Python masker does: parse, mask Secret data, serialise."""
    doc = json.loads(body)
    for item in doc.get("items", []):
        data = item.get("data")
        if isinstance(data, dict):
            for k in data:
                data[k] = MARKER
    return json.dumps(doc, separators=(",", ":")).encode()


def timed(fn, body: bytes) -> float:
    t = time.perf_counter()
    fn(body)
    return time.perf_counter() - t


def run(items: int, rounds: int) -> tuple[float, float, int]:
    """Best time of each, the two interleaved round by round so both see the same machine."""
    body = secret_list(items)
    rust = lambda b: POLICY.mask("GET", TARGET, b)  # noqa: E731
    assert json.loads(rust(body)) == json.loads(python_mask(body)), "both maskers must agree"
    r, p = [], []
    for _ in range(rounds):
        r.append(timed(rust, body))
        p.append(timed(python_mask, body))
    return min(r), min(p), len(body)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--min-ratio", type=float, default=0.0)
    a = ap.parse_args()
    rust, py, size = run(a.items, a.rounds)
    ratio = py / rust
    print(f"SecretList of {a.items} items, {size / 1e6:.1f} MB: kubeleash {rust * 1e3:.1f} ms ({size / rust / 1e6:.0f} MB/s), "
          f"json.loads + Python mask + json.dumps {py * 1e3:.1f} ms: {ratio:.1f}x")
    if ratio < a.min_ratio:
        print(f"kubeleash should be at least {a.min_ratio}x faster", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
