"""The asyncio client (`kubernetes.aio`), guarded the same way, end to end on both API servers
(the `server` fixture, conftest.py: `kubeleash sandbox` and a real kube-apiserver over HTTPS)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

# Installed by python/test.sh (the kubernetes client ships `kubernetes.aio`): a missing client
# fails, never skips.
from kubernetes.aio import client, watch  # noqa: E402
from kubernetes.aio.client.exceptions import ApiException  # noqa: E402

import kubeleash  # noqa: E402
from kubeleash.kubernetes import SENTINEL_HOST, connect_aio, transport  # noqa: E402
from test_kubernetes import MASKED, POLICY  # noqa: E402


def new_secret(name: str, password: str):
    return client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data={"password": password})


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_asyncio_client_lists_masked_and_is_denied_as_the_api_server_would(server, tmp_path):
    record = tmp_path / "aio.jsonl"
    kubeconfig = server.kubeconfig

    async def main():
        api = connect_aio(POLICY, user="agent-1", groups=["ai-agents"], kubeconfig=kubeconfig, record=record)
        assert api.configuration.host == SENTINEL_HOST and not api.configuration.api_key
        core = client.CoreV1Api(api)
        secrets = await core.list_namespaced_secret("dev")
        assert secrets.items and all(v == MASKED for s in secrets.items for v in (s.data or {}).values())
        with pytest.raises(ApiException) as e:
            await core.delete_namespace("kube-system")
        assert e.value.status == 403 and "protect-system-namespaces" in json.loads(e.value.body)["message"]
        with pytest.raises(ApiException) as e:
            await core.create_namespaced_config_map("prod", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"aio-{uuid.uuid4().hex[:6]}")))
        assert e.value.status == 403 and "hands-off-prod" in json.loads(e.value.body)["message"]
        # Requests wait in threads: the loop keeps running other tasks meanwhile.
        results = await asyncio.gather(*(core.list_namespaced_config_map("dev") for _ in range(5)))
        assert len(results) == 5
        await api.close()
        assert transport(api).closed

    run(main())
    assert kubeleash.verify_record(record.read_text())["ok"]


def test_asyncio_watch_and_a_coroutine_approver_on_the_same_loop(server):
    name = f"aio-{uuid.uuid4().hex[:6]}"
    kubeconfig = server.kubeconfig

    async def main():
        loop = asyncio.get_running_loop()
        seen_loops = []
        seen = []

        async def approver(req):
            seen_loops.append(asyncio.get_running_loop())
            seen.append(req)
            await asyncio.sleep(0.01)
            return kubeleash.Answer.approve(by="async-alice")

        api = connect_aio(POLICY, user="agent-1", groups=["ai-agents"], kubeconfig=kubeconfig, approver=approver)
        core = client.CoreV1Api(api)

        async def create_later():
            await asyncio.sleep(0.5)
            await core.create_namespaced_secret(
                "dev", new_secret(name, "aio-watch-password"), _headers={"X-Kubeleash-Reason": "seed the aio test"}
            )

        task = asyncio.create_task(create_later())
        w = watch.Watch()
        found = None
        async with w.stream(core.list_namespaced_secret, "dev", timeout_seconds=20) as stream:
            async for event in stream:
                assert all(v == MASKED for v in (event["object"].data or {}).values())
                if event["object"].metadata.name == name:
                    found = event["type"]
                    w.stop()
        await task
        await api.close()
        assert found == "ADDED"
        assert seen_loops == [loop], "the coroutine approver runs on the client's loop"
        # The asyncio client's headers reach the approver too, and the create's dry run with them.
        (req,) = seen
        assert req.agent_reason == "seed the aio test"
        assert req.dry_run is not None and req.dry_run["status"] == 201 and name in req.dry_run["diff"], req.dry_run
        assert "aio-watch-password" not in repr(req.to_dict())

    run(main())
