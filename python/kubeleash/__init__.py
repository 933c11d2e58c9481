"""kubeleash: hold an AI agent to least privilege on every Kubernetes API request, in-process.

The Rust engine does all of it: it classifies each request exactly as the API server would,
decides it against a policy mapped from the caller's identity (allow, deny, or hold for a
person's approval), and masks secret material in responses as they stream. This package is a
thin binding: no policy logic lives in Python.

    >>> import kubeleash
    >>> policy = kubeleash.Policy.from_file("examples/agents.yaml")
    >>> d = policy.evaluate("DELETE", "/api/v1/namespaces/kube-system", user="agent-1", groups=["ai-agents"])
    >>> d.effect, d.rule
    ('deny', 'protect-system-namespaces')

To hold an agent that uses the official ``kubernetes`` client, build its client with
``kubeleash.kubernetes.connect(policy, user=..., groups=...)``: every request then goes through
the same Rust layer Rust agents use (decide, hold for approval, set the operator's credential,
mask, record).

What in-process isolation does and does not protect against
------------------------------------------------------------
It holds an agent that uses the client it is given: every request that client sends is decided,
approved, masked and recorded, and the operator's credential stays in Rust memory, out of the
client's ``Configuration`` and out of reach of anything that only speaks Python's API. It does
not hold code that sets out to escape: anything running in the same process can read the
process's memory (the credential included), open its own sockets, or build its own client. For an
agent you do not trust with the process, run ``kubeleash proxy`` and give the agent nothing but a
kubeconfig that points at the proxy.
"""

from kubeleash._native import (
    Answer,
    ApprovalRequest,
    ConnectError,
    Decision,
    Masker,
    MaskError,
    Policy,
    PolicyError,
    RequestError,
    TestOutcome,
    TestReport,
    __version__,
    verify_record,
)

__all__ = [
    "Answer",
    "ApprovalRequest",
    "ConnectError",
    "Decision",
    "MaskError",
    "Masker",
    "Policy",
    "PolicyError",
    "RequestError",
    "TestOutcome",
    "TestReport",
    "__version__",
    "verify_record",
]


def __getattr__(name: str):
    # `kubeleash.kubernetes` needs the optional `kubernetes` package, so `import kubeleash`
    # does not import it; the first use of the attribute does (PEP 562), as if the user had
    # written `import kubeleash.kubernetes`.
    if name == "kubernetes":
        import importlib

        return importlib.import_module("kubeleash.kubernetes")
    raise AttributeError(f"module 'kubeleash' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | {"kubernetes"})
