"""Start the fake llama-server and orchestra in the test's own Trio run, on loopback."""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import httpx
import trio

from orchestra.config import Config, parse_config
from orchestra.service import Running, run_service
from orchestra.testing.fake_llama import FakeLlamaServer


@attrs.frozen
class SSE:
    """One parsed server-sent event."""

    id: int
    event: str
    data: dict[str, Any]


def parse_sse(raw: bytes) -> list[SSE]:
    """Parse the complete events of an SSE body (comments and keep-alives skipped)."""
    events = []
    complete = raw[: raw.rfind(b"\n\n") + 2]
    for block in complete.decode().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
        if "event" in fields:
            events.append(SSE(int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return events


@attrs.define
class LiveStream:
    """An SSE response read a little at a time."""

    chunks: AsyncIterator[bytes]
    raw: bytes = b""

    @property
    def events(self) -> list[SSE]:
        return parse_sse(self.raw)

    async def until(self, predicate: Callable[[list[SSE]], bool]) -> list[SSE]:
        """Read until ``predicate(events so far)`` holds (or the stream ends)."""
        async for chunk in self.chunks:
            self.raw += chunk
            if predicate(self.events):
                break
        return self.events

    async def to_end(self) -> list[SSE]:
        """Read the rest of the stream."""
        async for chunk in self.chunks:
            self.raw += chunk
        return self.events


def tokens_seen(n: int) -> Callable[[list[SSE]], bool]:
    """A predicate for :meth:`LiveStream.until`: at least ``n`` token events."""
    return lambda events: sum(e.event == "token" for e in events) >= n


@attrs.define
class Stack:
    """A running fake engine and orchestra in front of it."""

    fake: FakeLlamaServer
    running: Running
    client: httpx.AsyncClient
    stop: trio.Event
    config: Config

    async def submit(self, **body: Any) -> dict[str, Any]:
        response = await self.client.post("/v1/tasks", json=body)
        assert response.status_code == 202, response.text
        result: dict[str, Any] = response.json()
        return result

    async def stream(self, task_id: str, last_event_id: int | None = None) -> list[SSE]:
        headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
        response = await self.client.get(f"/v1/tasks/{task_id}/stream", headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        return parse_sse(response.content)

    @asynccontextmanager
    async def live(self, task_id: str) -> AsyncIterator[LiveStream]:
        """Open a task's stream for reading a little at a time."""
        async with self.client.stream("GET", f"/v1/tasks/{task_id}/stream") as response:
            assert response.status_code == 200
            yield LiveStream(response.aiter_raw())

    async def wait_state(self, task_id: str, *states: str) -> dict[str, Any]:
        """Wait until the task's stream shows it reached one of ``states`` (no polling)."""
        log = self.running.actors.queue.log_of(task_id)
        assert log is not None
        view = self.running.actors.queue.view(task_id)
        while view is not None and str(view.state) not in states:
            await log.wait_beyond(len(log))
            view = self.running.actors.queue.view(task_id)
        result: dict[str, Any] = (await self.client.get(f"/v1/tasks/{task_id}")).json()
        return result


_DATA_ROOT = tempfile.TemporaryDirectory(prefix="orchestra-test-data-")
"""Every test service keeps its state (the catalog) in a directory of its own under this."""


def make_config(endpoint: str, **sections: dict[str, Any] | Any) -> Config:
    raw: dict[str, Any] = {
        "bind_addr": "127.0.0.1:0",
        "adapter": {"endpoint": endpoint},
        "data_dir": tempfile.mkdtemp(dir=_DATA_ROOT.name),
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update(value)
        else:
            raw[key] = value
    return parse_config(raw)


@asynccontextmanager
async def open_stack(
    *,
    slots: int = 1,
    token_delay_s: float = 0.0,
    model_path: str | None = None,
    tracer_provider: Any = None,
    **sections: Any,
) -> AsyncIterator[Stack]:
    """The fake engine and orchestra, ready to take tasks; shut down gracefully on exit.
    ``model_path`` is the file the fake engine says it serves (``/props``), when given;
    ``tracer_provider`` receives the spans when ``[tracing]`` is on."""
    fake = FakeLlamaServer(total_slots=slots, token_delay_s=token_delay_s)
    if model_path is not None:
        fake.model_path = model_path
    async with trio.open_nursery() as outer:
        engine_url = await outer.start(fake.serve)
        config = make_config(engine_url, **sections)
        stop = trio.Event()
        async with trio.open_nursery() as inner:
            running = await inner.start(
                partial(run_service, config, stop=stop, tracer_provider=tracer_provider)
            )
            await running.actors.queue.wait_ready()
            await running.actors.control.wait_model_known()
            async with httpx.AsyncClient(base_url=running.urls[0], timeout=10) as client:
                yield Stack(fake, running, client, stop, config)
            stop.set()  # run_service drains and returns; the inner nursery then exits
        outer.cancel_scope.cancel()
