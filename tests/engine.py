"""The real llama-server for end-to-end tests: orchestra in owned mode, in the test's Trio run.

The engine and the small model come from the cache ``orchestra engine install`` fills
(``scripts/test`` runs it first). A test fails, rather than skips, when they are missing;
:func:`gemma_model`, the optional second model, skips instead.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from orchestra.actors.owned_supervisor import OwnedReplicaSupervisor
from orchestra.engine import cache as engine_cache
from orchestra.service import Running, run_service

from .harness import SSE, LiveStream, make_config, parse_sse


def require_engine() -> None:
    """Fail with the fix when ``orchestra engine install`` has not run."""
    if engine_cache.installed_engine("cpu") is None or engine_cache.installed_model() is None:
        pytest.fail(
            f"no cached llama-server/model under {engine_cache.cache_root()}: run "
            f"`orchestra engine install` (scripts/test does this before the tests)"
        )


def gemma_model() -> Path:
    """The cached Gemma 3 270M (Q4_K_M) GGUF, for the end-to-end tests that want a second,
    different model; skips when absent (``scripts/test``, and so CI, always fetches it)."""
    path = engine_cache.installed_model_named("gemma3-270m")
    if path is None:
        pytest.skip(
            f"no cached Gemma 3 270M under {engine_cache.cache_root()}: run "
            f"`orchestra engine install --model gemma3-270m` (scripts/test does this)"
        )
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@attrs.define
class Owned:
    """orchestra owning a real llama-server, plus clients for both."""

    running: Running
    client: httpx.AsyncClient
    engine: httpx.AsyncClient
    stop: trio.Event

    @property
    def supervisor(self) -> OwnedReplicaSupervisor:
        supervisor = self.running.actors.supervisor
        assert isinstance(supervisor, OwnedReplicaSupervisor)
        return supervisor

    @property
    def pid(self) -> int:
        pid = self.supervisor.statistics().pid
        assert pid is not None
        return pid

    def signal_engine(self, signum: signal.Signals) -> int:
        pid = self.pid
        os.kill(pid, signum)
        return pid

    async def submit(self, **body: Any) -> str:
        response = await self.client.post("/v1/tasks", json=body)
        assert response.status_code == 202, response.text
        task_id: str = response.json()["task_id"]
        return task_id

    async def stream(self, task_id: str) -> list[SSE]:
        response = await self.client.get(f"/v1/tasks/{task_id}/stream")
        assert response.status_code == 200, response.text
        return parse_sse(response.content)

    async def text(self, **body: Any) -> str:
        """Run one task to its end; its generated text (fails on an error event)."""
        events = await self.stream(await self.submit(**body))
        assert events[-1].event == "end", events[-1]
        return "".join(e.data["t"] for e in events if e.event == "token")

    @asynccontextmanager
    async def live(self, task_id: str) -> AsyncIterator[LiveStream]:
        async with self.client.stream("GET", f"/v1/tasks/{task_id}/stream") as response:
            assert response.status_code == 200
            yield LiveStream(response.aiter_raw())

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = (await self.client.get("/v1/pools/default/health")).json()
        return result

    async def wait_state(self, task_id: str, *states: str) -> None:
        """Wait until the task reaches one of ``states`` (woken by its event log)."""
        queue = self.running.actors.queue
        log = queue.log_of(task_id)
        assert log is not None
        while (view := queue.view(task_id)) is not None and str(view.state) not in states:
            with trio.move_on_after(0.05):  # a dispatch adds no event: re-check now and then
                await log.wait_beyond(len(log))

    async def wait_ready_again(self, old_pid: int) -> None:
        """Wait until a new engine process (not ``old_pid``) serves."""
        queue = self.running.actors.queue
        while True:
            await queue.wait_ready()
            stats = self.supervisor.statistics()
            if stats.ready and stats.pid not in (None, old_pid):
                return
            await queue.wait_ready(False)


@asynccontextmanager
async def open_owned(**sections: Any) -> AsyncIterator[Owned]:
    """orchestra in owned mode on the cached engine, ready to take tasks."""
    require_engine()
    expect_ready = sections.pop("_expect_ready", True)
    engine_url = f"http://127.0.0.1:{free_port()}"
    replica = {"parallel": 1, "threads": 2, "ctx_size": 2048, **sections.pop("replica", {})}
    config = make_config(engine_url, replica=replica, **sections)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        running = await nursery.start(partial(run_service, config, stop=stop))
        if expect_ready:
            with trio.fail_after(120):
                await running.actors.queue.wait_ready()
        supervisor = running.actors.supervisor
        assert isinstance(supervisor, OwnedReplicaSupervisor)
        key = {"Authorization": f"Bearer {supervisor.command.api_key}"}  # what orchestra sends
        async with (
            httpx.AsyncClient(base_url=running.urls[0], timeout=30) as client,
            httpx.AsyncClient(base_url=engine_url, timeout=30, headers=key) as engine,
        ):
            yield Owned(running, client, engine, stop)
        stop.set()
