"""The priority-inversion probe of issue 14, on the real engine (a phase of bench/scheduling.py).

One slot and ``adapter.engine_backlog = 1`` (orchestra's own ``orchestra serve`` process,
owned mode, the cached small model). Each round:

1. a long batch task (``max_tokens`` 160) is submitted and streams: it holds the slot;
2. a short batch task (48 tokens) is submitted and dispatched into the engine's backlog
   (its ``started`` event comes before any token);
3. an interactive task (16 tokens) is submitted; its time to first token is measured from
   its POST, and whether the short batch task's first token came before it (an inversion).

Before issue 14 the interactive task waited for the short batch task every time; now the
short batch task is taken back and runs after it. Reported per round and as the median
and p95 of the interactive TTFT, with the count of inversions and the short batch task's
``attempts`` (2 when it was taken back).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx
import trio

LONG = {"prompt": "Count from 1 to 500: 1, 2, 3,", "max_tokens": 160, "priority": "batch"}
SHORT = {"prompt": "Name three rivers:", "max_tokens": 48, "priority": "batch"}
CHAT = {"prompt": "Say hello:", "max_tokens": 16, "priority": "interactive"}


async def _first_token(
    http: httpx.AsyncClient, task_id: str, seen: trio.Event, started: trio.Event
) -> float:
    """Stream a task to its end; when its first token came (perf_counter). ``started`` is
    set at its ``started`` event (it was dispatched), ``seen`` at its first token."""
    first = 0.0
    event = ""
    async with http.stream("GET", f"/v1/tasks/{task_id}/stream") as stream:
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "started":
                started.set()
            elif line.startswith("data: ") and event == "token" and not first:
                first = time.perf_counter()
                seen.set()
            elif line.startswith("data: ") and event == "error":
                raise RuntimeError(f"task {task_id} failed: {line}")
    return first


async def _submit(http: httpx.AsyncClient, body: dict[str, Any]) -> str:
    answer = await http.post("/v1/tasks", json={**body, "temperature": 0})
    if answer.status_code != 202:
        raise RuntimeError(f"refused: {answer.status_code} {answer.text}")
    task_id: str = answer.json()["task_id"]
    return task_id


async def _round(http: httpx.AsyncClient) -> dict[str, Any]:
    firsts: dict[str, float] = {}
    async with trio.open_nursery() as nursery:

        async def follow(name: str, task_id: str, seen: trio.Event, started: trio.Event) -> None:
            firsts[name] = await _first_token(http, task_id, seen, started)

        long_seen, short_started = trio.Event(), trio.Event()
        nursery.start_soon(follow, "long", await _submit(http, LONG), long_seen, trio.Event())
        await long_seen.wait()
        short_id = await _submit(http, SHORT)
        nursery.start_soon(follow, "short", short_id, trio.Event(), short_started)
        await short_started.wait()  # dispatched: it waits in the engine's backlog
        posted = time.perf_counter()
        nursery.start_soon(follow, "chat", await _submit(http, CHAT), trio.Event(), trio.Event())
    short = (await http.get(f"/v1/tasks/{short_id}")).json()
    return {
        "interactive_ttft_ms": round((firsts["chat"] - posted) * 1000, 1),
        "inversion": firsts["short"] < firsts["chat"],
        "short_batch_attempts": short["attempts"],
    }


async def probe(url: str, rounds: int) -> dict[str, Any]:
    """Run ``rounds`` rounds against the orchestra at ``url`` (one slot, backlog 1)."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        await _round(http)  # warm-up, not counted
        results = [await _round(http) for _ in range(rounds)]
    ttft = sorted(r["interactive_ttft_ms"] for r in results)
    return {
        "rounds": results,
        "interactive_ttft_ms_median": round(statistics.median(ttft), 1),
        "interactive_ttft_ms_p95": ttft[min(len(ttft) - 1, int(0.95 * len(ttft)))],
        "inversions": sum(r["inversion"] for r in results),
        "short_batch_taken_back": sum(r["short_batch_attempts"] > 1 for r in results),
    }
