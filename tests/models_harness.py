"""Several models against the fake engine started as llama-server
(:mod:`orchestra.testing.fake_llama.as_llama_server`): each ``[models.ID]`` gets a model
file whose JSON tells the fake how its loads go, and the test opens the gates."""

from __future__ import annotations

import json
import random
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from orchestra.config import Config
from orchestra.service import Running, run_service

from .harness import make_config

WAIT_S = 30.0
"""Bound on every wait for a condition (each is met in well under a second)."""


@attrs.frozen
class ModelFile:
    """The fake's "model": settings in, its process log out."""

    path: Path

    def write(self, **settings: Any) -> None:
        self.path.write_text("GGUF" + json.dumps(settings))

    def open_gate(self) -> None:
        """Let the load in progress (and every later one) finish."""
        Path(f"{self.path}.go").touch()

    def close_gate(self) -> None:
        Path(f"{self.path}.go").unlink(missing_ok=True)

    def crash_loading(self) -> None:
        """Make the load in progress exit 1 before it is ready."""
        Path(f"{self.path}.crash").touch()

    def lives(self) -> list[tuple[str, int]]:
        """``("start", pid)`` and ``("exit", pid)`` of every process, in order."""
        log = Path(f"{self.path}.log")
        if not log.exists():
            return []
        return [
            (kind, int(pid))
            for kind, pid in (line.split() for line in log.read_text().splitlines())
        ]


def fake_binary(directory: Path) -> Path:
    """An executable that runs the fake as llama-server."""
    script = directory / "llama-server"
    script.write_text(
        f'#!/bin/sh\nexec {sys.executable} -m orchestra.testing.fake_llama.as_llama_server "$@"\n'
    )
    script.chmod(0o755)
    return script


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports free now."""
    while True:
        base = random.randrange(20_000, 60_000)
        sockets = []
        try:
            for offset in range(count):
                s = socket.socket()
                sockets.append(s)  # closed below, bound or not
                s.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()


@attrs.frozen
class ModelsStack:
    running: Running
    client: httpx.AsyncClient
    config: Config
    files: dict[str, ModelFile]

    @property
    def models(self) -> Any:
        return self.running.actors.models

    async def submit(self, model: str, **body: Any) -> dict[str, Any]:
        body.setdefault("prompt", "hello")
        body.setdefault("max_tokens", 4)
        response = await self.client.post("/v1/tasks", json={"model_ref": model, **body})
        assert response.status_code == 202, response.text
        result: dict[str, Any] = response.json()
        return result

    async def end_of(self, task_id: str) -> dict[str, Any]:
        """The task once it has ended (waits on its log, no polling)."""
        queue = self.models.find(task_id)
        assert queue is not None
        log = queue.log_of(task_id)
        assert log is not None
        with trio.fail_after(WAIT_S):
            while not log.closed:
                await log.wait_beyond(len(log))
        view = (await self.client.get(f"/v1/tasks/{task_id}")).json()
        assert isinstance(view, dict)
        return view

    async def wait_token(self, task_id: str) -> None:
        """Wait until the task has sent a token (it runs)."""
        queue = self.models.find(task_id)
        assert queue is not None
        log = queue.log_of(task_id)
        assert log is not None
        with trio.fail_after(WAIT_S):
            while log.tokens == 0:
                await log.wait_beyond(len(log))

    def residency(self, model: str) -> str:
        return str(self.models.state(model).residency)

    async def wait_residency(self, model: str, *wanted: str) -> None:
        with trio.fail_after(WAIT_S):
            while self.residency(model) not in wanted:
                await self.models.wait_change()


@asynccontextmanager
async def open_models(
    tmp_path: Path,
    models: dict[str, dict[str, Any]],
    settings: dict[str, dict[str, Any]] | None = None,
    **sections: Any,
) -> AsyncIterator[ModelsStack]:
    """orchestra with ``[models]`` over the fake engine; ``settings`` per model says how
    its loads go (default: at once)."""
    binary = fake_binary(tmp_path)
    files = {}
    tables = {}
    for name, table in models.items():
        file = ModelFile(tmp_path / f"{name}.gguf")
        file.write(**(settings or {}).get(name, {}))
        files[name] = file
        tables[name] = {"binary": str(binary), "path": str(file.path), **table}
    base = free_ports(sum(table.get("replicas", 1) for table in models.values()) or 1)
    config = make_config(f"http://127.0.0.1:{base}", models=tables, **sections)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        running = await nursery.start(partial(run_service, config, stop=stop))
        async with httpx.AsyncClient(base_url=running.urls[0], timeout=WAIT_S) as client:
            yield ModelsStack(running, client, config, files)
        stop.set()
