"""Several models on the real llama-server: SmolLM2 135M and Gemma 3 270M, alternated
under a memory budget that fits one (each request swaps), then one that fits both (no
swap); the same seed gives the same bytes across a swap and back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import trio

from orchestra.service import run_service

from .engine import gemma_model, require_engine
from .harness import make_config, parse_sse
from .models_harness import free_ports

LOAD_S = 120.0
"""Bound on one request that loads a model (each loads in about 2 s here)."""
BODY = {
    "prompt": "The capital of France is",
    "max_tokens": 12,
    "seed": 42,
    "temperature": 0.8,
    "determinism": "strict",
}


@asynccontextmanager
async def open_two(budget_mb: int) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    require_engine()
    gemma = gemma_model()
    models = {
        "smollm2": {"memory_mb": 300, "threads": 2, "aliases": ["smol"]},
        "gemma3": {"path": str(gemma), "memory_mb": 400, "threads": 2},
    }
    config = make_config(
        f"http://127.0.0.1:{free_ports(2)}",
        models=models,
        placement={"memory_budget_mb": budget_mb},
    )
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        running = await nursery.start(partial(run_service, config, stop=stop))
        async with httpx.AsyncClient(base_url=running.urls[0], timeout=LOAD_S) as client:
            yield client, running.actors.models
        stop.set()


async def text(client: httpx.AsyncClient, model: str) -> str:
    response = await client.post(
        "/v1/tasks", json={**BODY, "model_ref": model}, headers={"Accept": "text/event-stream"}
    )
    assert response.status_code == 200, response.text
    events = parse_sse(response.content)
    assert events[-1].event == "end", events[-1]
    return "".join(e.data["t"] for e in events if e.event == "token")


async def test_alternating_under_a_budget_for_one_swaps_and_keeps_the_bytes() -> None:
    async with open_two(budget_mb=500) as (client, models):
        first = {name: await text(client, name) for name in ("smollm2", "gemma3")}
        assert str(models.state("smollm2").residency) == "unloaded"
        again = {name: await text(client, name) for name in ("smol", "gemma3")}
        assert again == {"smol": first["smollm2"], "gemma3": first["gemma3"]}
        assert first["smollm2"] != first["gemma3"]  # two different models answered
        metrics = (await client.get("/metrics")).text
        assert 'orchestra_model_evictions_total{model="smollm2"} 2.0' in metrics
        assert 'orchestra_model_evictions_total{model="gemma3"} 1.0' in metrics
    async with open_two(budget_mb=1000) as (client, models):
        both = {name: await text(client, name) for name in ("smollm2", "gemma3", "smollm2")}
        assert both == first
        assert [str(models.state(m).residency) for m in ("smollm2", "gemma3")] == [
            "loaded",
            "loaded",
        ]
        listed = {m["id"]: m for m in (await client.get("/v1/models")).json()["data"]}
        assert listed["gemma3"]["load_ms"] > 0 and listed["smollm2"]["residency"] == "loaded"
        # Each engine started once: nothing was swapped.
        assert [
            models.pool(m).supervisor.replicas[0].supervisor.statistics().starts
            for m in ("smollm2", "gemma3")
        ] == [
            1,
            1,
        ]
