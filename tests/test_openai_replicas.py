"""OpenAI-compatible engines as replicas of a pool (``openai_endpoints``, or
``engine = "openai"``): against the fake, in a pool mixed with an attached llama-server,
and end to end against llama-server's own OpenAI endpoints, which must give the bytes its
native API gives for the same seed."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import httpx
import trio

from orchestra.engine import cache as engine_cache
from orchestra.engine.process import EngineCommand, run_engine
from orchestra.service import run_service
from orchestra.testing.fake_llama import FakeLlamaServer

from .engine import free_port, require_engine
from .harness import make_config, parse_sse
from .models_harness import WAIT_S

KEY = "replica-key-1"


async def test_a_pool_of_an_attached_llama_server_and_an_openai_server(tmp_path: Path) -> None:
    llama, openai = FakeLlamaServer(total_slots=1), FakeLlamaServer(total_slots=4)
    async with trio.open_nursery() as engines:
        urls = [await engines.start(fake.serve) for fake in (llama, openai)]
        models = {
            "m": {
                "endpoints": [urls[0]],
                "openai_endpoints": [urls[1]],
                "slots": 1,
                "served_model": "served-name",
                "keep_loaded": True,
            }
        }
        config = make_config(f"http://127.0.0.1:{free_port()}", models=models)
        stop = trio.Event()
        async with trio.open_nursery() as service:
            running = await service.start(partial(run_service, config, stop=stop))
            queue = running.actors.models.pool("m").queue
            async with httpx.AsyncClient(base_url=running.urls[0], timeout=WAIT_S) as client:
                with trio.fail_after(WAIT_S):
                    while queue.statistics().slots_total < 2:
                        await queue.next_replica_change().wait()
                [replicaset] = (await client.get("/v1/replicasets")).json()["replicasets"]
                kinds = [(r["kind"], r["engine"], r["slots_total"]) for r in replicaset["replicas"]]
                assert kinds == [("attached", "llamacpp", 1), ("openai", "openai", 1)]
                # Two long tasks: one on each replica (most room first, then in turn).
                body = {"model_ref": "m", "prompt": "tell me", "max_tokens": 400}
                llama.token_delay_s = openai.token_delay_s = 0.01
                first = (await client.post("/v1/tasks", json=body)).json()
                second = (await client.post("/v1/tasks", json=body)).json()
                await openai.wait_until(lambda: openai.completions_started == 1)
                assert openai.v1_completion_bodies[-1]["model"] == "served-name"
                assert queue._table.get(second["task_id"]).replica == "m/1"
                # A cancel closes the OpenAI stream: the server sees the client go away.
                await client.post(f"/v1/tasks/{second['task_id']}/cancel")
                await openai.wait_until(lambda: openai.disconnects == 1)
                await client.post(f"/v1/tasks/{first['task_id']}/cancel")
                llama.token_delay_s = openai.token_delay_s = 0.0
                # The OpenAI face in front of an OpenAI engine: a chat goes through.
                chat = await client.post(
                    "/v1/chat/completions",
                    json={
                        "model": "m",
                        "messages": [{"role": "user", "content": "hi"}],
                        "max_tokens": 5,
                    },
                )
                assert chat.status_code == 200, chat.text
                assert chat.json()["choices"][0]["message"]["content"]
            stop.set()
        engines.cancel_scope.cancel()


async def test_llama_servers_openai_endpoints_give_its_native_bytes(tmp_path: Path) -> None:
    """One real llama-server, served twice: as an attached llama.cpp replica (native
    ``/completion``) and as an OpenAI-compatible one (``/v1/completions``), both behind
    its api key from a private file; the same seed gives the same bytes."""
    require_engine()
    installed, model = engine_cache.installed_engine("cpu"), engine_cache.installed_model()
    assert installed is not None and model is not None
    key_file = tmp_path / "engine.key"
    key_file.write_text(KEY + "\n")
    os.chmod(key_file, 0o600)
    command = EngineCommand(
        binary=installed.binary, model=model, port=free_port(), ctx_size=1024, parallel=1,
        threads=2, gpu_layers=0, api_key=KEY,
    )  # fmt: skip
    url = f"http://127.0.0.1:{command.port}"
    models = {
        "native": {"endpoints": [url], "api_key_file": str(key_file)},
        "oai": {"openai_endpoints": [url], "slots": 1, "api_key_file": str(key_file)},
    }
    config = make_config(f"http://127.0.0.1:{free_port()}", models=models)
    listening = trio.Event()

    def on_line(_stream: str, line: str) -> None:
        if "listening on" in line:
            listening.set()

    texts = {}
    async with trio.open_nursery() as engines:
        await engines.start(partial(run_engine, command, stop_grace_s=5, on_line=on_line))
        with trio.fail_after(120):
            await listening.wait()
        stop = trio.Event()
        async with trio.open_nursery() as service:
            running = await service.start(partial(run_service, config, stop=stop))
            async with httpx.AsyncClient(base_url=running.urls[0], timeout=120) as client:
                for name in ("native", "oai", "native"):
                    body = {
                        "model_ref": name, "prompt": "The capital of France is",
                        "max_tokens": 16, "seed": 42, "temperature": 0.8,
                        "determinism": "strict",
                    }  # fmt: skip
                    response = await client.post(
                        "/v1/tasks", json=body, headers={"Accept": "text/event-stream"}
                    )
                    assert response.status_code == 200, response.text
                    events = parse_sse(response.content)
                    assert events[-1].event == "end", events[-1]
                    text = "".join(e.data["t"] for e in events if e.event == "token")
                    assert texts.setdefault(name, text) == text
            stop.set()
        engines.cancel_scope.cancel()
    assert texts["oai"] and texts["oai"].encode() == texts["native"].encode()
