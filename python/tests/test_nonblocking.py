"""Non-blocking approvals (`connect(..., approvals="nonblocking")`) with the official `kubernetes`
client, end to end on both API servers (the `server` fixture, conftest.py: `kubeleash sandbox`
and a real kube-apiserver over HTTPS).

A held write fails at once with `ApiException` 403 naming its approval; the approver is asked in
the background; the agent sends the identical request again and learns the answer. The approver
here is a desk the test answers (`Desk`): the test waits for each question on a queue and
answers it, so nothing depends on how long anything takes. The layer keeps the approver's answer
just after the approver returns, so the first retry after an answer may still find the request
pending: `until_answered` sends it again at once until it is not (as an agent would, without
waiting out `Retry-After`).
"""

from __future__ import annotations

import asyncio
import json
import math
import queue
import re
import time
import uuid

import pytest

import kubernetes  # installed by python/test.sh: a missing client fails, never skips
from kubernetes.client.exceptions import ApiException  # noqa: E402

import kubeleash  # noqa: E402
from conftest import not_found, write_kubeconfig  # noqa: E402
from kubeleash.kubernetes import connect, connect_aio  # noqa: E402

POLICY = kubeleash.Policy.from_yaml(
    """
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: python-nonblocking-tests}
spec:
  rules:
    - {name: read-dev, effect: allow, subjects: {groups: [ai-agents]}, verbs: [get, list], resources: [configmaps], namespaces: [dev]}
    - {name: configmaps-need-a-human, effect: approve, reason: new configmaps are for people, subjects: {groups: [ai-agents]}, verbs: [create], resources: [configmaps], namespaces: [dev]}
"""
)
RETRY_AFTER = 7
#: How long the test waits for the approver to be asked, or the approver for the test's answer:
#: a bound on a wait that normally takes milliseconds, never a measurement.
PATIENCE = 60


class Desk:
    """An approver the test answers: each call puts `(request, answer_slot)` on `asked` and
    returns what the test puts in the slot."""

    def __init__(self) -> None:
        self.asked: queue.Queue = queue.Queue()
        self.calls: list[kubeleash.ApprovalRequest] = []

    def __call__(self, request: kubeleash.ApprovalRequest):
        slot: queue.Queue = queue.Queue(maxsize=1)
        self.calls.append(request)
        self.asked.put((request, slot))
        # Unanswered (a failed test): the approver fails, which denies.
        return slot.get(timeout=PATIENCE)

    def next(self) -> tuple[kubeleash.ApprovalRequest, queue.Queue]:
        """The next question; fails if the approver is not asked."""
        try:
            return self.asked.get(timeout=PATIENCE)
        except queue.Empty:
            pytest.fail(f"the approver was not asked within {PATIENCE} s")


def core(api):
    return kubernetes.client.CoreV1Api(api)


def configmap(name: str):
    return kubernetes.client.V1ConfigMap(metadata=kubernetes.client.V1ObjectMeta(name=name), data={"k": "v"})


def scratch() -> str:
    return f"kl-py-nb-{uuid.uuid4().hex[:8]}"


def agent(server, approver, **kw):
    return connect(
        POLICY,
        user="agent-1",
        groups=["ai-agents"],
        kubeconfig=server.kubeconfig,
        approver=approver,
        approvals="nonblocking",
        retry_after=RETRY_AFTER,
        **kw,
    )


def refused(call) -> ApiException:
    """The ApiException `call()` raises; fails if it does not raise one."""
    with pytest.raises(ApiException) as e:
        call()
    return e.value


def status_of(e: ApiException) -> dict:
    body = e.body.decode() if isinstance(e.body, bytes) else e.body
    return json.loads(body)


def assert_pending(e: ApiException, retry_after: int = RETRY_AFTER) -> str:
    """A held answer as the client sees it: 403 at once, the approval id in the header and the
    Status, `Retry-After`; returns the id."""
    assert e.status == 403, e
    status = status_of(e)
    assert status["kind"] == "Status" and status["reason"] == "Forbidden" and status["code"] == 403, status
    id = e.headers["X-Kubeleash-Approval-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", id), id
    assert status["details"]["uid"] == id, status
    assert e.headers["Retry-After"] == str(retry_after), dict(e.headers)
    assert status["details"]["retryAfterSeconds"] == retry_after, status
    assert status["details"]["causes"][0]["reason"] == "ApprovalPending", status
    assert id in status["message"] and "new configmaps are for people" in status["message"], status["message"]
    return id


def pending_under(e: ApiException, id: str) -> bool:
    return e.status == 403 and e.headers.get("X-Kubeleash-Approval-Id") == id and "Retry-After" in e.headers


def until_answered(call, id: str):
    """`call()` again until its answer is not "pending under `id`": what it returns, or the
    ApiException it raises then. Bounded by PATIENCE (a failure bound, never a measurement), with a
    short pause between tries so that the thread taking the answer is not starved under load."""
    deadline = time.monotonic() + PATIENCE
    while True:
        try:
            return call()
        except ApiException as e:
            if not pending_under(e, id):
                return e
        if time.monotonic() > deadline:
            pytest.fail(f"approval {id} stayed pending {PATIENCE} s after the approver answered")
        time.sleep(0.01)


# --- both servers ----------------------------------------------------------------------------


def test_a_held_write_is_answered_at_once_and_goes_through_once_approved(server):
    desk = Desk()
    name, other = scratch(), scratch()
    judge = core(server.judge())
    with agent(server, desk) as api:
        create = lambda n=name: core(api).create_namespaced_config_map("dev", configmap(n))  # noqa: E731

        # Answered at once: the call returns while nobody has answered yet.
        first = refused(create)
        id = assert_pending(first)
        asked, answer = desk.next()
        assert asked.id == id and asked.method == "POST" and asked.rule == "configmaps-need-a-human"
        assert asked.identity == {"user": "agent-1", "groups": ["ai-agents"]}
        assert asked.kubectl.startswith("kubectl create -n dev") and name in (asked.body or "")
        dry = asked.dry_run
        assert dry is not None and dry["status"] == 201 and dry["rejected"] is None, dry
        assert dry["diff"].startswith("+ ") and name in dry["diff"], dry["diff"]
        assert not_found(lambda: judge.read_namespaced_config_map(name, "dev")), "only a dry run went out"

        # Sent again before anyone answered: the same approval, still pending.
        assert assert_pending(refused(create)) == id

        answer.put(kubeleash.Answer.approve(by="alice"))
        made = until_answered(create, id)
        assert isinstance(made, kubernetes.client.V1ConfigMap), made
        assert made.metadata.name == name and made.metadata.uid
        assert judge.read_namespaced_config_map(name, "dev").data == {"k": "v"}

        # The approval let that request through once: the identical request is held anew.
        again = refused(create)
        renewed = assert_pending(again)
        assert renewed != id
        asked_again, answer_again = desk.next()
        assert asked_again.id == renewed
        # The object exists now: the API server's dry run says so.
        assert asked_again.dry_run is not None and asked_again.dry_run["rejected"], asked_again.dry_run
        answer_again.put(kubeleash.Answer.deny(by="alice", reason="it exists"))

        # A different request is not covered by the approval: held under an id of its own.
        elsewhere = refused(lambda: create(other))
        other_id = assert_pending(elsewhere)
        assert other_id not in (id, renewed)
        asked_other, answer_other = desk.next()
        assert asked_other.id == other_id and other in (asked_other.body or "")
        answer_other.put(kubeleash.Answer.deny(by="alice", reason="one is enough"))
        told = until_answered(lambda: create(other), other_id)
        assert isinstance(told, ApiException) and told.status == 403, told
        assert "one is enough" in status_of(told)["message"]

    # Asked once per hold: never again for a request that was already held.
    assert [r.id for r in desk.calls] == [id, renewed, other_id]
    assert desk.asked.empty()
    assert not_found(lambda: judge.read_namespaced_config_map(other, "dev"))
    judge.delete_namespaced_config_map(name, "dev")


def test_a_denied_write_is_told_the_reason_when_sent_again(server):
    desk = Desk()
    name = scratch()
    judge = core(server.judge())
    with agent(server, desk) as api:
        create = lambda: core(api).create_namespaced_config_map("dev", configmap(name))  # noqa: E731
        id = assert_pending(refused(create))
        asked, answer = desk.next()
        assert asked.id == id
        answer.put(kubeleash.Answer.deny(by="bob", reason="not on a Friday"))

        told = until_answered(create, id)
        assert isinstance(told, ApiException), told
        assert told.status == 403 and told.headers["X-Kubeleash-Approval-Id"] == id
        assert "Retry-After" not in told.headers, dict(told.headers)
        status = status_of(told)
        assert status["reason"] == "Forbidden" and status["details"]["uid"] == id, status
        assert status["details"]["causes"][0]["reason"] == "ApprovalRefused", status
        assert "retryAfterSeconds" not in status["details"], status
        message = status["message"]
        assert f"bob denied approval {id}: not on a Friday" in message, message

        # The refusal stands for the identical request: told again, nobody asked again.
        again = refused(create)
        assert again.headers["X-Kubeleash-Approval-Id"] == id and "not on a Friday" in status_of(again)["message"]
    assert [r.id for r in desk.calls] == [id] and desk.asked.empty()
    assert not_found(lambda: judge.read_namespaced_config_map(name, "dev"))


def test_the_asyncio_client_with_a_coroutine_approver(server):
    """`connect_aio` takes the same options; the coroutine approver runs on the client's loop
    after the held call has already failed; a fractional `retry_after` is rounded up."""
    name = scratch()
    judge = core(server.judge())
    from kubernetes.aio import client as aio
    from kubernetes.aio.client.exceptions import ApiException as AioApiException

    async def main():
        questions: asyncio.Queue = asyncio.Queue()

        async def approver(request):
            answer = asyncio.get_running_loop().create_future()
            await questions.put((request, answer))
            return await answer

        api = connect_aio(
            POLICY,
            user="agent-1",
            groups=["ai-agents"],
            kubeconfig=server.kubeconfig,
            approver=approver,
            approvals="nonblocking",
            retry_after=1.5,
        )
        try:
            core_aio = aio.CoreV1Api(api)
            body = aio.V1ConfigMap(metadata=aio.V1ObjectMeta(name=name), data={"k": "v"})
            with pytest.raises(AioApiException) as e:
                await core_aio.create_namespaced_config_map("dev", body)
            assert e.value.status == 403 and e.value.headers["Retry-After"] == "2", dict(e.value.headers)
            status = status_of(e.value)
            id = e.value.headers["X-Kubeleash-Approval-Id"]
            assert status["details"]["uid"] == id and status["details"]["retryAfterSeconds"] == 2, status
            request, answer = await asyncio.wait_for(questions.get(), PATIENCE)
            assert request.id == id and request.dry_run is not None and name in request.dry_run["diff"]
            answer.set_result(kubeleash.Answer.approve(by="async-alice"))
            deadline = time.monotonic() + PATIENCE
            while True:
                try:
                    made = await core_aio.create_namespaced_config_map("dev", body)
                    break
                except AioApiException as again:
                    if not (again.status == 403 and again.headers.get("X-Kubeleash-Approval-Id") == id):
                        raise
                if time.monotonic() > deadline:
                    pytest.fail(f"approval {id} stayed pending {PATIENCE} s after the approver answered")
                await asyncio.sleep(0.01)
            assert made.metadata.name == name and questions.empty()
        finally:
            await api.close()

    asyncio.run(asyncio.wait_for(main(), 2 * PATIENCE))
    assert judge.read_namespaced_config_map(name, "dev").data == {"k": "v"}
    judge.delete_namespaced_config_map(name, "dev")


def test_without_an_approver_a_held_write_is_denied_at_once(server):
    """Nobody to ask: denied as in blocking mode, with no approval to wait for."""
    with connect(POLICY, user="agent-1", groups=["ai-agents"], kubeconfig=server.kubeconfig, approvals="nonblocking") as api:
        e = refused(lambda: core(api).create_namespaced_config_map("dev", configmap(scratch())))
    assert e.status == 403 and "no approver is configured" in status_of(e)["message"], status_of(e)
    assert "Retry-After" not in e.headers and "X-Kubeleash-Approval-Id" not in e.headers


# --- no API server: the options are checked before anything is read -------------------------


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"approvals": "sometimes"}, 'approvals must be "blocking" or "nonblocking", not "sometimes"'),
        ({"approvals": "Nonblocking"}, 'approvals must be "blocking" or "nonblocking", not "Nonblocking"'),
        ({"approvals": "nonblocking", "retry_after": 0}, "retry_after must be a positive number of seconds, not 0.0"),
        ({"approvals": "nonblocking", "retry_after": -1}, "retry_after must be a positive number of seconds, not -1.0"),
        ({"approvals": "nonblocking", "retry_after": math.nan}, "retry_after must be a positive number of seconds, not NaN"),
        ({"approvals": "nonblocking", "retry_after": math.inf}, "retry_after must be a positive number of seconds, not inf"),
        ({"retry_after": 5}, 'retry_after applies only to approvals="nonblocking"'),
        ({"approval_timeout": 1e300}, "approval_timeout must be a positive number of seconds, not 1e300"),
    ],
    ids=["unknown", "case", "zero", "negative", "nan", "inf", "blocking", "huge-timeout"],
)
@pytest.mark.parametrize("make", [connect, connect_aio], ids=["sync", "aio"])
def test_bad_options_are_refused_plainly(tmp_path, make, kw, message):
    kc = write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1")
    with pytest.raises(ValueError) as e:
        make(POLICY, user="agent-1", kubeconfig=kc, **kw)
    assert message in str(e.value), str(e.value)
    assert str(e.value)[0].islower()
