"""Two owned replicas of the small model on the real llama-server, in one orchestra
process: kill -9 one mid-stream (its task fails WORKER_RESET, the other streams to its
end, the killed replica restarts), then SIGTERM orchestra: no llama-server is left."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest
import trio

from .engine import require_engine
from .harness import parse_sse
from .models_harness import free_ports
from .test_cli import Service, orchestra_process

WAIT_S = 120.0


async def _count_lines(service: Service, pattern: str, count: int) -> None:
    """Return once ``count`` log lines contain ``pattern``."""
    with trio.fail_after(WAIT_S):
        while sum(pattern in line for line in service.lines) < count:
            await service.changed[0].wait()


async def _pids(client: httpx.AsyncClient) -> list[int]:
    [replicaset] = (await client.get("/v1/replicasets")).json()["replicasets"]
    return [replica["pid"] for replica in replicaset["replicas"]]


async def test_two_owned_replicas_kill_one_then_sigterm_leaves_no_engine(
    tmp_path: Path,
) -> None:
    require_engine()
    base = free_ports(3)
    models = "[models.smol]\nreplicas = 2\nthreads = 2\nkeep_loaded = true\n"
    async with (
        orchestra_process(tmp_path, f"http://127.0.0.1:{base}", grace_s=5, extra=models) as service,
        httpx.AsyncClient(base_url=service.url, timeout=WAIT_S) as client,
    ):
        await _count_lines(service, "engine ready", 2)
        first = await _pids(client)
        assert len(set(first)) == 2 and all(first)
        body = {"model_ref": "smol", "prompt": "Once upon a time", "max_tokens": 96, "seed": 1}
        tasks = [(await client.post("/v1/tasks", json=body)).json() for _ in range(2)]
        ends: dict[str, str] = {}

        async def follow(task: dict[str, str], started: trio.Event) -> None:
            async with client.stream("GET", task["stream_url"]) as stream:
                raw = b""
                async for chunk in stream.aiter_raw():
                    raw += chunk
                    if b"event: token" in raw:
                        started.set()
            events = parse_sse(raw)
            ends[task["task_id"]] = (
                events[-1].data["code"] if events[-1].event == "error" else events[-1].event
            )

        async with trio.open_nursery() as nursery:
            started = [trio.Event(), trio.Event()]
            for task, event in zip(tasks, started, strict=True):
                nursery.start_soon(follow, task, event)
            with trio.fail_after(WAIT_S):
                for event in started:
                    await event.wait()
            os.kill(first[0], signal.SIGKILL)  # the first task's replica (most room first)
        assert ends == {tasks[0]["task_id"]: "WORKER_RESET", tasks[1]["task_id"]: "end"}
        await _count_lines(service, "engine ready", 3)  # the killed replica restarted
        restarted = await _pids(client)
        assert restarted[1] == first[1] and restarted[0] not in first
        service.process.send_signal(signal.SIGTERM)
        with trio.fail_after(WAIT_S):
            code = await service.process.wait()
        assert code == 0
    for pid in {*first, *restarted}:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not [line for line in service.lines if json.dumps(line).count("Traceback")]
