# Hand-written stubs for the native module; tests/test_stubs.py checks them against it.
import os
from typing import Iterable, Mapping, Optional, Sequence, Tuple, Union

from typing import Literal, TypedDict

from typing_extensions import NotRequired

# The guarded official client; imported on first use (it needs the `kubernetes` extra).
from kubeleash import kubernetes as kubernetes

__version__: str

_Bytes = Union[bytes, bytearray, memoryview, str]
_Headers = Union[Mapping[str, str], Iterable[Tuple[str, str]], Mapping[bytes, bytes], Iterable[Tuple[bytes, bytes]]]
_Effect = Literal["allow", "deny", "approve"]

class Location(TypedDict):
    line: int
    column: int

class ErrorDetail(TypedDict):
    """One policy problem; the Node binding reports the same shape."""

    message: str
    help: Optional[str]
    code: str
    location: Optional[Location]

class PolicyError(ValueError):
    """A policy did not compile; `errors` lists every problem."""

    errors: list[ErrorDetail]

class MaskError(ValueError):
    """The masker refused a response; `safe` holds the bytes this call could still deliver."""

    code: str
    safe: bytes

class RequestError(ValueError):
    """A request target or header was refused before classification."""

    code: str

class ConnectError(Exception):
    """`kubeleash.kubernetes.connect` could not set up the guarded client."""

class Attributes(TypedDict):
    resourceRequest: bool
    verb: str
    apiGroup: str
    apiVersion: str
    namespace: str
    resource: str
    subresource: str
    name: str
    path: str

class DecisionDict(TypedDict):
    effect: _Effect
    rule: Optional[str]
    reason: str
    request: Optional[Attributes]

class Decision:
    """A decision: the effect, the rule that made it, the reason, the request's attributes."""

    @property
    def effect(self) -> _Effect: ...
    @property
    def rule(self) -> Optional[str]: ...
    @property
    def reason(self) -> str: ...
    @property
    def request(self) -> Optional[Attributes]: ...
    @property
    def allowed(self) -> bool: ...
    def to_dict(self) -> DecisionDict: ...

class Masker:
    """Masks one response as it streams: `feed` each chunk, then `finish`."""

    def feed(self, chunk: _Bytes) -> bytes: ...
    def finish(self) -> bytes: ...
    @property
    def masked_anything(self) -> bool: ...

class TestOutcome:
    @property
    def name(self) -> str: ...
    @property
    def request(self) -> str: ...
    @property
    def expect(self) -> _Effect: ...
    @property
    def expect_rule(self) -> Optional[str]: ...
    @property
    def decision(self) -> Decision: ...
    @property
    def passed(self) -> bool: ...

class TestReport:
    @property
    def passed(self) -> bool: ...
    @property
    def outcomes(self) -> list[TestOutcome]: ...
    @property
    def failures(self) -> list[TestOutcome]: ...
    def __len__(self) -> int: ...

class Policy:
    """A compiled policy: immutable, safe to share between threads."""

    @classmethod
    def from_yaml(cls, text: str) -> Policy: ...
    @classmethod
    def from_file(cls, path: Union[str, os.PathLike[str]]) -> Policy: ...
    @property
    def name(self) -> Optional[str]: ...
    def evaluate(
        self,
        method: str,
        target: str,
        *,
        user: Optional[str] = None,
        groups: Sequence[str] = (),
        headers: Optional[_Headers] = None,
        body: Optional[_Bytes] = None,
    ) -> Decision: ...
    def mask(
        self,
        method: str,
        target: str,
        body: _Bytes,
        *,
        headers: Optional[_Headers] = None,
        content_type: Optional[str] = None,
        content_encoding: Optional[str] = None,
    ) -> bytes: ...
    def masker(
        self,
        method: str,
        target: str,
        *,
        headers: Optional[_Headers] = None,
        content_type: Optional[str] = None,
        content_encoding: Optional[str] = None,
    ) -> Masker: ...
    def test(self) -> TestReport: ...

class Identity(TypedDict):
    user: str
    groups: list[str]

class Change(TypedDict):
    """One difference a held write makes, as the masker shows it."""

    path: str
    """Where: keys joined by `.`, list items as `[n]` (`data.k`, `spec.containers[0].image`)."""
    before: NotRequired[object]
    """The value before; absent when the write adds the field."""
    after: NotRequired[object]
    """The value after; absent when the write removes the field."""
    masked: bool
    """The value is masked on a side: what is shown says only that it changed."""

class DryRun(TypedDict):
    """What the API server says a held write would do: the request sent with `dryRun=All`,
    compared with the live object (none for a create), both masked."""

    status: int
    rejected: Optional[str]
    """Why the API server would refuse the write (its Status message, masked); None if it
    would accept it."""
    changes: list[Change]
    diff: str
    """The changes as lines: `~ data.k: v -> w`, `+ path: value`, `- path: value`,
    `~ path: changed (masked)`."""

class WidenAxes(TypedDict):
    """What an approver may widen an approval along (`Answer.widen`)."""

    never: Optional[str]
    """Why the request may be approved only exactly (the policy's floor, `approvals.neverWiden`:
    by default deletes, Secrets, RBAC, exec...); when set, nothing else is offered."""
    names: bool
    """Whether `names` (a glob the object's name may match) may be given."""
    fields: list[str]
    """The body fields `fields` may give a range (numbers) or a glob (strings)."""
    uses_and_time: bool
    """Whether `uses` and `seconds` may be given."""

class FieldRange(TypedDict, total=False):
    """A body field's range in a widening: `min` and `max` (numbers), or `matches` (a glob)."""

    path: str
    min: float
    max: float
    matches: str

class Widening(TypedDict, total=False):
    """How far a widened approval reaches, as `Answer.widening` shows it."""

    names: str
    fields: list[FieldRange]
    uses: int
    seconds: int

class ApprovalRequest:
    """One held request, as an approver sees it. With `approvals="nonblocking"` its `id` is the
    one the agent's 403 names (`X-Kubeleash-Approval-Id`, `details.uid`)."""

    @property
    def id(self) -> str: ...
    @property
    def identity(self) -> Identity: ...
    @property
    def method(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def attributes(self) -> Attributes: ...
    @property
    def kubectl(self) -> str: ...
    @property
    def body(self) -> Optional[str]: ...
    @property
    def content_type(self) -> Optional[str]: ...
    @property
    def impersonation(self) -> Optional[dict[str, object]]: ...
    @property
    def rule(self) -> Optional[str]: ...
    @property
    def reason(self) -> str: ...
    @property
    def agent_reason(self) -> Optional[str]: ...
    @property
    def dry_run(self) -> Optional[DryRun]: ...
    @property
    def widen(self) -> WidenAxes: ...
    def to_dict(self) -> dict[str, object]: ...

class Answer:
    """An approver's answer."""

    @staticmethod
    def approve(*, by: str = "approver", window: Optional[float] = None) -> Answer: ...
    @staticmethod
    def widen(
        *,
        by: str = "approver",
        names: Optional[str] = None,
        fields: Optional[list[Union[FieldRange, str]]] = None,
        uses: Optional[int] = None,
        seconds: Optional[int] = None,
    ) -> Answer:
        """Approve, and leave a grant widened along the offered axes (`request.widen`), e.g.
        `Answer.widen(by="alice", names="web-*", uses=3)`. A malformed widening raises
        ValueError or TypeError here; one that does not fit the request is approved exactly
        and the record says why."""
    @staticmethod
    def deny(*, by: str = "approver", reason: str = "denied") -> Answer: ...
    @property
    def approved(self) -> bool: ...
    @property
    def by(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def window(self) -> Optional[float]: ...
    @property
    def widening(self) -> Optional[Widening]: ...

class ApprovalCause(TypedDict):
    """The cause a held request's 403 gives: its approval id, pending or refused."""

    reason: Literal["ApprovalPending", "ApprovalRefused"]
    message: str
    field: Literal["kubeleash.dev/approval-id"]

class ApprovalStatusDetails(TypedDict):
    uid: str
    """The approval id, as the `X-Kubeleash-Approval-Id` response header has it."""
    causes: list[ApprovalCause]
    retryAfterSeconds: NotRequired[int]
    """While no one has answered: the `Retry-After` header's seconds. Absent once refused."""

class ApprovalStatus(TypedDict):
    """The body of the 403 (`json.loads(ApiException.body)`) a request held for approval gets
    with `kubeleash.kubernetes.connect(..., approvals="nonblocking", retry_after=S)`, for type
    checkers only. The response headers carry `X-Kubeleash-Approval-Id` and, while it waits,
    `Retry-After: S`. Send the identical request again: once approved it goes through (once);
    once denied, `message` has the approver's reason and `causes` say `ApprovalRefused`."""

    kind: Literal["Status"]
    apiVersion: Literal["v1"]
    metadata: dict[str, object]
    status: Literal["Failure"]
    message: str
    """Names the approval id and the policy's reason (the approver's, once denied)."""
    reason: Literal["Forbidden"]
    details: ApprovalStatusDetails
    code: Literal[403]

class Verification(TypedDict):
    ok: bool
    records: list[dict[str, object]]
    problems: list[Tuple[int, str]]
    warnings: list[str]

def verify_record(log: str) -> Verification: ...

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
