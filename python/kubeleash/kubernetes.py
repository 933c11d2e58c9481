"""The official ``kubernetes`` client, held to a kubeleash policy by the Rust engine.

``connect(policy, user=..., groups=...)`` returns a ``kubernetes.client.ApiClient`` whose every
request is sent by the Rust tower stack Rust agents use: it is classified and decided, held for
an approver when the policy says so, sent with the operator's credential (read from the
kubeconfig by Rust, never handed to Python), and its response is masked as it streams (watches
event by event, followed logs line by line) and recorded.

A denial is what the API server would answer: ``kubernetes.client.exceptions.ApiException`` with
status 403 and a ``Status`` body naming the rule and the reason. A response the masker refuses
part-way (malformed JSON, a limit) raises ``kubeleash.MaskError`` from the read: the bytes before
the refusal were delivered, nothing after.

What in-process isolation does and does not protect against: the agent's client cannot send a
request that skips the policy, and its ``Configuration`` holds no token (its host is
``http://kubeleash.invalid``, so code that bypasses the transport, such as
``kubernetes.stream`` for exec over WebSocket, reaches nothing). But anything in the same
process can read the process's memory, the credential included, or open its own connection.
For an agent you do not trust with the process, run ``kubeleash proxy`` and give the agent only
a kubeconfig that points at it.

``connect_aio`` does the same for the asyncio client (``kubernetes.aio``): requests wait in
threads with the GIL released, so the event loop stays free.

What the agent is told when something fails: an approver that raises (or answers something
that is not an ``Answer`` or a bool) denies with the fixed reason "the approver failed; the
request was not approved"; an upstream connection error is a 502 (or ``ConnectionError``) with a
correlation id. The details of both go to the ``logging`` logger ``kubeleash`` only, never to
the agent: an approver's exception can quote a webhook URL, an upstream error the operator's
server. ``_request_timeout`` (a number or a ``(connect, read)`` pair) bounds each call, time
held for approval included (``TimeoutError``). With ``approvals="nonblocking"`` a held call is
not kept open: it fails at once with a 403 naming its approval and ``Retry-After``, and the
identical call sent again goes through once a person has approved it.

The kubeconfig is read in Rust (``kubeleash-connect``, kube-rs), as the ``kubeleash proxy``
reads it: HTTPS with the kubeconfig's certificate authority, client certificates, tokens and
token files (re-read as they rotate), exec credential plugins (run again before their
credential expires), ``proxy-url`` and ``tls-server-name``; ``insecure-skip-tls-verify`` only
when the kubeconfig says so, with a warning on stderr. An exec plugin runs when ``connect`` is
called. A kubeconfig that cannot work (basic authentication, an unreadable token file, a plugin
that fails, a server URL with user info) raises ``kubeleash.ConnectError``, whose message says
what to fix without quoting a credential or what a plugin printed; those details go to the
``kubeleash`` logger under the correlation id the message names.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import weakref
from typing import Any, Callable, Iterator, Literal, Optional, Sequence, Union

from kubeleash._native import ApprovalRequest, Policy, Transport

# The official client first: urllib3 comes with it, so without it the error to show is this one.
try:
    import kubernetes.client as _k8s
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "kubeleash.kubernetes needs the official client: pip install 'kubeleash[kubernetes]' (or 'kubernetes>=37')"
    ) from e

import urllib3  # noqa: E402
from urllib3._collections import HTTPHeaderDict  # noqa: E402

__all__ = ["connect", "connect_aio", "transport", "SENTINEL_HOST"]

#: The host the returned client's Configuration names. `.invalid` never resolves (RFC 6761), so
#: anything that bypasses kubeleash's transport fails instead of reaching the cluster.
SENTINEL_HOST = "http://kubeleash.invalid"

Approver = Callable[[ApprovalRequest], Any]
"""Gets an ApprovalRequest; returns an Answer or a bool (or a coroutine that does)."""


def _blocking(approver: Approver, loop: Callable[[], Optional[asyncio.AbstractEventLoop]] = lambda: None) -> Callable[[ApprovalRequest], Any]:
    """Call the approver (on a worker thread of kubeleash's runtime). A coroutine it returns runs
    on ``loop()`` when that is running (the asyncio client's loop, which is free while requests
    wait in threads), else on an event loop of its own."""

    def approve(request: ApprovalRequest) -> Any:
        answer = approver(request)
        if inspect.isawaitable(answer):

            async def wait() -> Any:
                return await answer

            running = loop()
            if running is not None and running.is_running():
                return asyncio.run_coroutine_threadsafe(wait(), running).result()
            answer = asyncio.run(wait())
        return answer

    return approve


def _number(v: Any) -> Optional[float]:
    """A timeout in seconds, or None for "none given" (None, urllib3's default sentinel, a bool)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return None


def _timeouts(timeout: Any) -> tuple[Optional[float], Optional[float]]:
    """(time to the response head, time between body reads) from urllib3's timeout argument.

    The official client's ``_request_timeout`` arrives as ``urllib3.Timeout(total=n)`` for a
    number and ``urllib3.Timeout(connect=c, read=r)`` for a pair. The time to the response head
    includes any time the request is held for approval, so an agent can bound a call that waits
    for a person: ``total`` (or ``connect + read``) bounds it; ``read`` (or ``total``) bounds
    each wait for more of the body. A plain number, or a ``(connect, read)`` pair, is taken the
    same way."""
    if isinstance(timeout, tuple) and len(timeout) == 2:
        timeout = urllib3.Timeout(connect=timeout[0], read=timeout[1])
    n = _number(timeout)
    if n is not None:
        return n, n
    if isinstance(timeout, urllib3.Timeout):
        # Not `read_timeout`: with `total` set it asks for the connect duration, which raises
        # before a connection was started (none ever is here).
        total = _number(timeout.total)
        connect = _number(getattr(timeout, "_connect", None))
        read = _number(getattr(timeout, "_read", None))
        head = (connect or 0.0) + read if read is not None else None
        if total is not None:
            head = total if head is None else min(head, total)
        between = read if read is not None else total
        return head, between
    return None, None


class _Response(urllib3.HTTPResponse):
    """A response whose body is read from Rust. ``stream()`` yields whatever has arrived, so a
    watch or a followed log delivers each event as it happens (urllib3's own ``stream(None)``
    would wait for the end)."""

    def stream(self, amt: Optional[int] = 2**16, decode_content: Optional[bool] = None) -> Iterator[bytes]:
        if amt == 0:
            return
        while not self.closed or len(getattr(self, "_decoded_buffer", b"")) > 0:
            data = self.read1(amt=amt, decode_content=decode_content)
            if data:
                yield data
            elif self.closed:
                return


class _PoolManager(urllib3.PoolManager):
    """Stands in for the client's urllib3 pool: every request goes to the Rust transport."""

    def __init__(self, transport: Transport) -> None:
        super().__init__(num_pools=1)
        self.transport = transport

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any) -> _Response:
        target = _target(url)
        headers = kw.get("headers") or {}
        head_timeout, read_timeout = _timeouts(kw.get("timeout"))
        status, reason, response_headers, body = self.transport.send(
            method, target, list(headers.items()), kw.get("body"), head_timeout, read_timeout
        )
        return _Response(
            body=body,
            headers=HTTPHeaderDict(response_headers),
            status=status,
            reason=reason,
            preload_content=kw.get("preload_content", True),
            decode_content=kw.get("decode_content", True),
            enforce_content_length=False,
            request_method=method,
            request_url=url,
        )

    def clear(self) -> None:
        # The client's close() ends here: finish the record too.
        super().clear()
        self.transport.close()


def connect(
    policy: Policy,
    *,
    user: str,
    groups: Sequence[str] = (),
    kubeconfig: Union[str, os.PathLike[str], None] = None,
    context: Optional[str] = None,
    approver: Optional[Approver] = None,
    record: Union[str, os.PathLike[str], None] = None,
    mode: str = "enforce",
    approval_timeout: float = 300.0,
    approvals: Literal["blocking", "nonblocking"] = "blocking",
    retry_after: Optional[float] = None,
) -> _k8s.ApiClient:
    """An official ``kubernetes`` ApiClient held to ``policy`` for the agent ``user`` in
    ``groups``.

    ``kubeconfig`` (default: ``$KUBECONFIG``, then ``~/.kube/config``) and ``context`` (default:
    its current context) name the cluster and the operator's credential; both are read by Rust
    and stay there. ``approver`` answers requests the policy holds (none: they are denied);
    ``approval_timeout`` seconds without an answer deny. ``record`` is a file that gets one
    hash-chained JSON line per request (check it with ``kubeleash.verify_record``); it is closed
    with its ``end`` record when the client is closed. ``mode="observe"`` (formerly ``"audit"``)
    decides and records but lets everything through (masking still applies).

    ``approvals="nonblocking"`` is for agents that cannot keep a call open while a person
    decides: a held request is answered at once with ``ApiException`` 403 whose ``Status`` names
    the approval (``details.uid``, a cause ``ApprovalPending``, the message) and whose headers
    carry ``X-Kubeleash-Approval-Id`` and ``Retry-After: retry_after`` (whole seconds, rounded
    up; default 10). The approver is asked in the background, once. The identical request sent
    again gets the same answer until the approver answers; then, if approved, it goes through
    once (an approval unused within ``approval_timeout`` expires); if denied, it gets a 403 with
    the approver's reason. ``approvals="blocking"`` (the default) keeps the call open until the
    approver answers. For example::

        api = connect(policy, user="agent-1", approver=approver, approvals="nonblocking", retry_after=5)
        try:
            core.create_namespaced_config_map("dev", body)
        except ApiException as e:
            if e.status == 403 and "Retry-After" in (e.headers or {}):
                ...  # held: send the identical request again after e.headers["Retry-After"] s
    """
    if isinstance(groups, str):
        raise TypeError("groups must be a sequence of group names, not a str")
    t = Transport(
        policy,
        user=user,
        groups=list(groups),
        kubeconfig=os.fspath(kubeconfig) if kubeconfig is not None else None,
        context=context,
        approver=_blocking(approver) if approver is not None else None,
        record=os.fspath(record) if record is not None else None,
        mode=mode,
        approval_timeout=approval_timeout,
        approvals=approvals,
        retry_after=retry_after,
    )
    configuration = _k8s.Configuration(host=SENTINEL_HOST)
    api_client = _k8s.ApiClient(configuration)
    rest = api_client.rest_client
    rest.pool_manager.clear()
    rest.pool_manager = _PoolManager(t)
    # Closes the record even if the client is never closed explicitly.
    weakref.finalize(api_client, t.close)
    return api_client


def transport(api_client: Any) -> Transport:
    """The kubeleash transport behind a client from ``connect`` or ``connect_aio`` (its
    ``server``, ``namespace``, ``close()``)."""
    pool = api_client.rest_client.pool_manager
    if not isinstance(pool, (_PoolManager, _AioSession)):
        raise ValueError("this ApiClient was not made by kubeleash.kubernetes")
    return pool.transport


def _target(url: str) -> str:
    if not url.startswith(SENTINEL_HOST + "/"):
        raise urllib3.exceptions.ProtocolError(f"kubeleash sends only to its own server; refusing {url!r}")
    return url[len(SENTINEL_HOST) :]


class _AioContent:
    """The response body as ``aiohttp.StreamReader`` offers it to the client and its Watch."""

    def __init__(self, body: Any, run: Callable[..., Any]) -> None:
        self._body = body
        self._run = run
        self._buf = bytearray()
        self._eof = False

    async def _more(self) -> bool:
        chunk = await self._run(self._body.read1, 65536)
        if chunk:
            self._buf += chunk
        else:
            self._eof = True
        return bool(chunk)

    async def readline(self) -> bytes:
        while b"\n" not in self._buf and not self._eof:
            await self._more()
        end = self._buf.find(b"\n") + 1 or len(self._buf)
        line = bytes(self._buf[:end])
        del self._buf[:end]
        return line

    async def readany(self) -> bytes:
        if not self._buf and not self._eof:
            await self._more()
        data = bytes(self._buf)
        self._buf.clear()
        return data

    async def read(self, n: int = -1) -> bytes:
        if n < 0:
            while await self._more():
                pass
            data = bytes(self._buf)
            self._buf.clear()
            return data
        if not self._buf and not self._eof:
            await self._more()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def at_eof(self) -> bool:
        return self._eof and not self._buf

    async def iter_any(self) -> Any:
        while True:
            data = await self.readany()
            if not data:
                return
            yield data

    def __aiter__(self) -> Any:
        return self._lines()

    async def _lines(self) -> Any:
        while True:
            line = await self.readline()
            if not line:
                return
            yield line


class _AioResponse:
    """What ``aiohttp.ClientResponse`` offers the asyncio client: status, headers, ``read()``,
    ``content`` for watches and followed logs, ``release()``."""

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]], body: Any, run: Callable[..., Any]) -> None:
        from multidict import CIMultiDict, CIMultiDictProxy

        self.status = status
        self.reason = reason
        self.headers = CIMultiDictProxy(CIMultiDict(headers))
        self.content = _AioContent(body, run)
        self._body = body

    async def read(self) -> bytes:
        return await self.content.read()

    async def text(self, encoding: str = "utf-8") -> str:
        return (await self.read()).decode(encoding)

    async def json(self, **kw: Any) -> Any:
        import json

        return json.loads(await self.read())

    def release(self) -> None:
        self._body.close()

    close = release

    async def __aenter__(self) -> "_AioResponse":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.release()


class _AioSession:
    """Stands in for the asyncio client's ``aiohttp.ClientSession``: each request goes to the Rust
    transport on a thread of its own (the transport waits with the GIL released), so the event
    loop stays free, for other tasks and for a coroutine approver."""

    def __init__(self, t: Transport) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.transport = t
        # Watches and held requests each occupy a thread while they wait.
        self._pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="kubeleash-aio")
        self.loop: Optional[asyncio.AbstractEventLoop] = None

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def request(self, method: str, url: str, *, headers: Any = None, data: Any = None, timeout: Any = None, **kw: Any) -> _AioResponse:
        self.loop = asyncio.get_running_loop()
        if data is not None and not isinstance(data, (str, bytes, bytearray)):
            raise TypeError("kubeleash's asyncio transport sends str or bytes bodies only (no form data)")
        # The asyncio client passes `_request_timeout` through (default 300): a number bounds
        # the time to the response head, held time included (not a watch's later silences, as
        # before); a (connect, read) pair as for the synchronous client; or a ClientTimeout.
        if isinstance(timeout, tuple):
            head, between = _timeouts(timeout)
        elif _number(timeout) is not None:
            head, between = _number(timeout), None
        else:
            total = _number(getattr(timeout, "total", None))
            read = _number(getattr(timeout, "sock_read", None))
            head, between = total, read if read is not None else total
        status, reason, response_headers, body = await self._run(
            self.transport.send, method, _target(url), list((headers or {}).items()), data, head, between
        )
        return _AioResponse(status, reason, response_headers, body, self._run)

    @property
    def closed(self) -> bool:
        return self.transport.closed

    async def close(self) -> None:
        await self._run(self.transport.close)
        self._pool.shutdown(wait=False)


def connect_aio(
    policy: Policy,
    *,
    user: str,
    groups: Sequence[str] = (),
    kubeconfig: Union[str, os.PathLike[str], None] = None,
    context: Optional[str] = None,
    approver: Optional[Approver] = None,
    record: Union[str, os.PathLike[str], None] = None,
    mode: str = "enforce",
    approval_timeout: float = 300.0,
    approvals: Literal["blocking", "nonblocking"] = "blocking",
    retry_after: Optional[float] = None,
) -> Any:
    """``connect`` for the asyncio client: a ``kubernetes.aio.client.ApiClient`` held the same
    way, through the same Rust layer. A coroutine approver runs on the event loop that awaits
    the requests. Close it with ``await api.close()`` to end the record. ``approvals`` and
    ``retry_after`` as for ``connect``: with ``approvals="nonblocking"`` a coroutine approver
    runs on that loop after the held call has already been answered, so keep the loop running
    until it answers."""
    import kubernetes.aio.client as aio

    if isinstance(groups, str):
        raise TypeError("groups must be a sequence of group names, not a str")
    session: list[_AioSession] = []
    t = Transport(
        policy,
        user=user,
        groups=list(groups),
        kubeconfig=os.fspath(kubeconfig) if kubeconfig is not None else None,
        context=context,
        approver=_blocking(approver, lambda: session[0].loop if session else None) if approver is not None else None,
        record=os.fspath(record) if record is not None else None,
        mode=mode,
        approval_timeout=approval_timeout,
        approvals=approvals,
        retry_after=retry_after,
    )
    configuration = aio.Configuration(host=SENTINEL_HOST)
    # Retries would wrap the session in aiohttp_retry's client, which kubeleash does not stand in for.
    configuration.retries = None
    api_client = aio.ApiClient(configuration)
    session.append(_AioSession(t))
    api_client.rest_client.pool_manager = session[0]
    weakref.finalize(api_client, t.close)
    return api_client
