"""llama.cpp's RPC backend end to end: a model's layers on an ``rpc-server``, the same bytes.

One ``rpc-server`` on loopback stands in for another machine. llama-server (the RPC build
from ``orchestra engine install --rpc``), started by orchestra's own
:func:`~orchestra.engine.process.run_engine` with ``EngineCommand(rpc_servers=...,
gpu_layers=99)``, must put every layer on it (its log says so) and then greedily generate
exactly the bytes the same llama-server generates with no RPC at all.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from orchestra.engine import cache as engine_cache
from orchestra.engine.process import EngineCommand, run_engine
from orchestra.service import run_service

from .engine import free_port
from .harness import make_config, parse_sse
from .models_harness import free_ports

COMPLETION = {
    "prompt": "The three primary colours are",
    "n_predict": 24,
    "temperature": 0,
    "seed": 42,
    "cache_prompt": False,  # each server evaluates the whole prompt itself
    "return_tokens": True,
}


def rpc_build() -> tuple[engine_cache.InstalledEngine, Path, Path]:
    """The cached RPC build (llama-server, rpc-server) and the small model."""
    engine = engine_cache.installed_rpc_engine("cpu")
    rpc_server = engine_cache.installed_rpc_server("cpu")
    if engine is None or rpc_server is None:
        # The only reason to skip: no RPC build in the cache. scripts/test (and so CI) runs
        # `orchestra engine install --rpc` first, so there this test always runs.
        pytest.skip(
            f"no cached RPC build of llama.cpp under {engine_cache.cache_root()}: run "
            f"`orchestra engine install --rpc` (scripts/test does this)"
        )
    model = engine_cache.installed_model()
    if model is None:  # the install fetches it before it builds: a damaged cache
        pytest.fail(f"no cached small model under {engine_cache.cache_root()}")
    return engine, rpc_server, model


async def wait_accepting(process: trio.Process, port: int, log: Path) -> None:
    """Return once ``127.0.0.1:port`` accepts a connection; fail if ``process`` exits first.

    rpc-server says nothing on its (block-buffered) stdout before it listens, so its port is
    the signal. The probe connection sends nothing; rpc-server drops it and accepts the next.
    """
    with trio.fail_after(60):
        while True:
            try:
                probe = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                if process.returncode is not None:
                    output = await trio.Path(log).read_text()
                    pytest.fail(f"rpc-server exited with status {process.returncode}: {output}")
                await trio.sleep(0.02)  # a port has no "now listening" notification: retry
            else:
                await probe.aclose()
                return


@asynccontextmanager
async def rpc_server_on(rpc_server: Path, port: int, log_path: Path) -> AsyncIterator[trio.Process]:
    """An rpc-server on ``127.0.0.1:port`` (one thread), accepting connections; stopped
    (SIGTERM, SIGKILL after 5 s) and reaped on exit."""
    with log_path.open("wb") as log:
        async with trio.open_nursery() as nursery:
            rpc: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    [str(rpc_server), "-H", "127.0.0.1", "-p", str(port), "-t", "1"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
            )
            try:
                await wait_accepting(rpc, port, log_path)
                yield rpc
            finally:
                nursery.cancel_scope.cancel()


async def complete(command: EngineCommand) -> tuple[dict[str, Any], list[str]]:
    """Start llama-server as orchestra does, run :data:`COMPLETION` once through the native
    ``POST /completion`` (not streamed), stop it; its answer and every line it logged."""
    lines: list[str] = []
    listening = trio.Event()

    def on_line(_stream: str, line: str) -> None:
        lines.append(line)
        if "listening on" in line:  # logged once the model is loaded and /health is 200
            listening.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(partial(run_engine, command, stop_grace_s=10, on_line=on_line))
        with trio.fail_after(180):
            await listening.wait()
        url = f"http://{command.host}:{command.port}"
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            response = await client.post("/completion", json=COMPLETION)
        assert response.status_code == 200, response.text
        nursery.cancel_scope.cancel()  # run_engine stops llama-server before it returns
    answer: dict[str, Any] = response.json()
    return answer, lines


async def test_layers_on_an_rpc_server_give_the_same_bytes(tmp_path: Path) -> None:
    engine, rpc_server, model = rpc_build()
    rpc_port = free_port()
    endpoint = f"127.0.0.1:{rpc_port}"
    rpc_log = tmp_path / "rpc-server.log"
    # The same llama-server binary both times: the only difference is where the layers are.
    # One thread each: llama-server's and rpc-server's CPU threads spin while they wait for
    # work, and two of each on two cores slow the RPC run down 20-fold. `-lv 4` (trace) is
    # what makes llama-server log where it put the layers and buffers.
    command = partial(
        EngineCommand,
        binary=engine.binary,
        model=model,
        ctx_size=1024,
        parallel=1,
        threads=1,
        extra_args=("-lv", "4"),
    )
    remote_command = command(port=free_port(), gpu_layers=99, rpc_servers=(endpoint,))
    argv = remote_command.argv()
    assert argv[argv.index("--rpc") + 1] == endpoint and argv[argv.index("-ngl") + 1] == "99"

    async with rpc_server_on(rpc_server, rpc_port, rpc_log) as rpc:
        remote, remote_log = await complete(remote_command)
    assert rpc.returncode is not None  # rpc-server was stopped and reaped
    local, local_log = await complete(command(port=free_port(), gpu_layers=0))

    # Every layer (the repeating ones and the output layer) went to the RPC device, and its
    # buffers, the weights and the KV cache, live in rpc-server.
    remote_text = "\n".join(remote_log)
    offloaded = re.search(r"offloaded (\d+)/(\d+) layers to GPU", remote_text)
    assert offloaded is not None and offloaded[1] == offloaded[2], remote_text
    assert f"RPC0[{endpoint}] model buffer size" in remote_text, remote_text
    assert f"RPC0[{endpoint}] KV buffer size" in remote_text, remote_text
    assert "Accepted client connection" in rpc_log.read_text()
    assert "RPC0[" not in "\n".join(local_log)  # the other run: no RPC device at all

    assert remote["content"], remote
    assert remote["content"].encode() == local["content"].encode()
    assert remote["tokens"] == local["tokens"] and len(remote["tokens"]) == 24


async def test_a_model_split_over_an_rpc_server_through_orchestra_keeps_the_bytes(
    tmp_path: Path,
) -> None:
    """``rpc_servers`` in a model's table: orchestra starts the RPC build with ``--rpc``,
    and a seeded task gives the bytes the same model gives on this box alone."""
    _, rpc_server, _ = rpc_build()
    rpc_port = free_port()
    models = {
        "local": {"threads": 1, "ctx_size": 1024},
        "split": {
            "threads": 1,
            "ctx_size": 1024,
            "gpu_layers": 99,
            "rpc_servers": [f"127.0.0.1:{rpc_port}"],
        },
    }
    config = make_config(f"http://127.0.0.1:{free_ports(2)}", models=models)
    body = {"prompt": COMPLETION["prompt"], "max_tokens": 24, "seed": 42, "temperature": 0.8}
    texts = {}
    rpc_log = tmp_path / "rpc-server.log"
    async with rpc_server_on(rpc_server, rpc_port, rpc_log):
        stop = trio.Event()
        async with trio.open_nursery() as service:
            running = await service.start(partial(run_service, config, stop=stop))
            async with httpx.AsyncClient(base_url=running.urls[0], timeout=180) as client:
                for model in ("split", "local"):
                    response = await client.post(
                        "/v1/tasks",
                        json={**body, "model_ref": model, "determinism": "strict"},
                        headers={"Accept": "text/event-stream"},
                    )
                    assert response.status_code == 200, response.text
                    events = parse_sse(response.content)
                    assert events[-1].event == "end", events[-1]
                    texts[model] = "".join(e.data["t"] for e in events if e.event == "token")
            stop.set()
    assert "Accepted client connection" in rpc_log.read_text()
    assert texts["split"] and texts["split"].encode() == texts["local"].encode()
