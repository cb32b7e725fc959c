"""The control plane against the fake engine: drain, resume, replica sets, models and the
catalog over HTTP (reload needs an engine orchestra owns: tests/test_reload_e2e.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import trio

from .harness import Stack, open_stack, tokens_seen

DRAIN = "/v1/pools/default/drain"
RESUME = "/v1/pools/default/resume"


async def end_of(stack: Stack, task_id: str) -> Any:
    return (await stack.stream(task_id))[-1]


async def test_drain_finishes_running_work_holds_the_queue_and_refuses_new_tasks() -> None:
    async with open_stack(slots=1, token_delay_s=0.01, adapter={"engine_backlog": 0}) as stack:
        first = (await stack.submit(prompt="first", max_tokens=20))["task_id"]
        second = (await stack.submit(prompt="second", max_tokens=5))["task_id"]
        await stack.wait_state(first, "running")

        drained = await stack.client.post(DRAIN, json={"deadline_ms": 60_000})
        assert drained.status_code == 200, drained.text
        report = drained.json()
        assert report["pool_id"] == "default" and report["state"] == "drained"
        assert (report["finished"], report["cancelled"], report["requeued"]) == (1, 0, 0)
        assert report["queued"] == 1
        assert (await end_of(stack, first)).event == "end"

        health = (await stack.client.get("/v1/pools/default/health")).json()
        assert health["draining"] and health["state"] == "draining" and not health["ready"]
        refused = await stack.client.post("/v1/tasks", json={"prompt": "x", "max_tokens": 1})
        assert refused.status_code == 503
        assert refused.json()["code"] == "POOL_UNREADY" and refused.json()["retriable"]
        assert (await stack.client.get(f"/v1/tasks/{second}")).json()["state"] == "queued"

        resumed = await stack.client.post(RESUME)
        assert resumed.status_code == 200 and resumed.json()["state"] == "ready"
        assert (await end_of(stack, second)).event == "end"


async def test_drain_deadline_cancels_streaming_tasks_and_requeues_tokenless_ones() -> None:
    async with open_stack(slots=1, token_delay_s=0.05, adapter={"engine_backlog": 1}) as stack:
        streaming = (await stack.submit(prompt="long", max_tokens=400))["task_id"]
        waiting_in_engine = (await stack.submit(prompt="next", max_tokens=3))["task_id"]
        async with stack.live(streaming) as live:
            await live.until(tokens_seen(2))
            await stack.wait_state(waiting_in_engine, "running")
            report = (await stack.client.post(DRAIN, json={"deadline_ms": 0})).json()
            await live.until(lambda events: events[-1].event == "error")
            ended = live.events[-1]
        assert (report["finished"], report["cancelled"], report["requeued"]) == (0, 1, 1)
        assert report["queued"] == 1
        assert ended.data["code"] == "CANCELLED" and ended.data["retriable"] is True
        assert not any(e.event == "token" for e in live.events[live.events.index(ended) :])

        await stack.client.post(RESUME)
        assert (await end_of(stack, waiting_in_engine)).event == "end"
        view = (await stack.client.get(f"/v1/tasks/{waiting_in_engine}")).json()
        assert view["state"] == "completed" and view["attempts"] == 2


async def test_one_operation_at_a_time() -> None:
    async with open_stack(slots=1, token_delay_s=0.05) as stack:
        running = (await stack.submit(prompt="long", max_tokens=400))["task_id"]
        await stack.wait_state(running, "running")
        async with trio.open_nursery() as nursery:
            first: list[httpx.Response] = []

            async def drain() -> None:
                first.append(await stack.client.post(DRAIN, json={"deadline_ms": 60_000}))

            nursery.start_soon(drain)
            # The drain request is in flight over a socket; no event marks its arrival, so
            # poll for its effect (the condition, not a fixed time).
            while not stack.running.actors.queue.statistics().pool.draining:  # noqa: ASYNC110
                await trio.sleep(0.01)
            for path in (DRAIN, RESUME):
                busy = await stack.client.post(path)
                assert busy.status_code == 409, busy.text
                assert busy.json()["code"] == "CONFLICT" and busy.json()["retriable"]
            await stack.client.post(f"/v1/tasks/{running}/cancel")  # lets the drain end
        assert first[0].status_code == 200 and first[0].json()["finished"] == 1
        assert (await stack.client.post(RESUME)).status_code == 200


async def test_control_requests_are_checked() -> None:
    async with open_stack() as stack:
        post = stack.client.post
        cases: list[tuple[str, Any, int, str]] = [
            (DRAIN, {"deadline_ms": "soon"}, 400, "deadline_ms: must be an integer"),
            (DRAIN, {"deadline_ms": -1}, 400, "deadline_ms: must be between 0 and 3600000"),
            (DRAIN, {"deadline": 5}, 400, "deadline: unknown field"),
            (DRAIN, [1], 400, "the body must be a JSON object"),
            (RESUME, {"now": True}, 400, "now: unknown field"),
            ("/v1/pools/default/reload", {}, 400, "model_ref: required"),
            ("/v1/pools/gpu/drain", {}, 404, "no pool 'gpu'"),
            ("/v1/pools/default/reload", {"model_ref": "x"}, 409, "attached mode"),
            ("/v1/catalog/models", {"id": "m"}, 400, "path: required"),
            ("/v1/catalog/models/none/verify", None, 404, "no model 'none'"),
            ("/v1/catalog/models/none/state", {"state": "gone"}, 400, "state: must be one of"),
        ]
        for path, body, status, message in cases:
            response = await post(path, json=body)
            assert response.status_code == status, (path, response.text)
            envelope = response.json()
            assert message in envelope["message"], (path, envelope)
            assert envelope["correlation_id"] == response.headers["X-Correlation-Id"]
        garbled = await post(DRAIN, content=b"{", headers={"Content-Type": "application/json"})
        assert garbled.status_code == 400 and garbled.json()["code"] == "INVALID_PARAMS"
        # None of that drained the pool.
        assert (await stack.client.get("/v1/pools/default/health")).json()["state"] == "ready"


async def test_replicasets_report_engine_slots_and_recent_service_level() -> None:
    async with open_stack(slots=2, token_delay_s=0.001) as stack:
        for n in range(3):
            assert (
                await end_of(stack, (await stack.submit(prompt=f"p{n}", max_tokens=8))["task_id"])
            ).event == "end"
        body = (await stack.client.get("/v1/replicasets")).json()
        [replicaset] = body["replicasets"]
        [replica] = replicaset["replicas"]
        assert replicaset["pool_id"] == "default" and replica["mode"] == "attached"
        assert replica["slots_total"] == 2 and replica["slots_busy"] == 0
        assert replica["pid"] is None and replica["restarts"] == 0
        slo = replica["slo"]
        assert slo["tasks"] == 3 and slo["window_s"] == 300
        assert 0 < slo["ttft_ms_p50"] <= slo["ttft_ms_p95"]
        assert slo["tokens_per_s"] > 0


def gguf(path: Path, payload: bytes) -> str:
    path.write_bytes(b"GGUF" + payload)
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_catalog_over_http_survives_a_restart(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.gguf", tmp_path / "bad.gguf"
    good_sha = gguf(good, b"good model")
    gguf(bad, b"changed after registration")
    data_dir = str(tmp_path / "state")
    async with open_stack(data_dir=data_dir) as stack:
        post = stack.client.post
        created = await post(
            "/v1/catalog/models", json={"id": "good", "path": str(good), "sha256": good_sha}
        )
        assert created.status_code == 201, created.text
        assert created.headers["Location"] == "/v1/catalog/models/good"
        assert created.json()["trust_state"] == "unverified" and created.json()["loaded"] is False
        again = await post(
            "/v1/catalog/models", json={"id": "good", "path": str(good), "sha256": good_sha}
        )
        assert again.status_code == 200 and again.json() == created.json()
        clash = await post("/v1/catalog/models", json={"id": "good", "path": str(bad)})
        assert clash.status_code == 409 and clash.json()["code"] == "CONFLICT"
        await post("/v1/catalog/models", json={"id": "bad", "path": str(bad), "sha256": "0" * 64})

        verified = (await post("/v1/catalog/models/good/verify")).json()
        assert verified["trust_state"] == "verified" and verified["digest"] == f"sha256:{good_sha}"
        mismatch = (await post("/v1/catalog/models/bad/verify")).json()
        assert mismatch["trust_state"] == "mismatch"
        retired = await post("/v1/catalog/models/bad/state", json={"state": "retired"})
        assert retired.status_code == 200 and retired.json()["state"] == "retired"

        async def register(n: int) -> None:
            path = tmp_path / f"m{n}.gguf"
            gguf(path, f"model {n}".encode())
            response = await post("/v1/catalog/models", json={"id": f"m{n}", "path": str(path)})
            assert response.status_code == 201, response.text

        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(register, n)
        before = (await stack.client.get("/v1/models")).json()["data"]

    async with open_stack(data_dir=data_dir) as stack:
        after = (await stack.client.get("/v1/models")).json()["data"]
        assert after == before
        by_id = {m["id"]: m for m in after}
        assert len(by_id) == 22
        assert by_id["good"]["trust_state"] == "verified"
        assert (by_id["bad"]["trust_state"], by_id["bad"]["state"]) == ("mismatch", "retired")
        one = await stack.client.get("/v1/catalog/models/m7")
        assert one.status_code == 200 and one.json() == by_id["m7"]
