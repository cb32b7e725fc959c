"""What an open status page costs (issue 21): the page's poll round (the four reads it makes
every second) with the line empty and with it full, and whether a page watching a task
slows the task's stream.

The fake llama-server (one slot, tokens as fast as it makes them: the worst case for
orchestra's own share of the CPU), ``orchestra serve`` and this client run as three
processes, as a browser runs apart from orchestra. The stream rounds alternate "no page",
"one page" and "``--pages`` pages": a reader streams a task of ``--tokens`` tokens; each
page makes the page's four reads once a second, as the page does, and watches the same
stream with ``?watch=true``, as its EventSource does. Medians.

    .venv/bin/python bench/status_page.py [--rounds 6] [--tokens 30000] [--pages 5]
        [--out proof-bundle/bench/issue21-status-page.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

HANG = "[[hang:1]] holds the slot"
PAGE_READS = (
    ("/v1/models", None),
    ("/v1/replicasets", None),
    ("/v1/tasks", {"state": "running,queued"}),
    ("/v1/tasks", {"state": "failed", "limit": "10"}),
)
"""What the page reads each second (orchestra/http/static/ui/app.js, refresh())."""


async def poll_round(client: httpx.AsyncClient) -> float:
    """The page's four reads, at once as the page makes them; seconds."""
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for path, params in PAGE_READS:
            nursery.start_soon(partial(client.get, path, params=params))
    return time.perf_counter() - start


async def stream_tokens_per_s(client: httpx.AsyncClient, tokens: int, watchers: int) -> float:
    """Submit a task and read its stream to the end; its tokens per second."""
    submitted = await client.post("/v1/tasks", json={"prompt": "go", "max_tokens": tokens})
    task_id = submitted.json()["task_id"]
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(watchers):
            nursery.start_soon(partial(read_all, client, task_id, {"watch": "true"}))
        count = await read_all(client, task_id, None)
    elapsed = time.perf_counter() - start
    assert count == tokens, (count, tokens)
    return tokens / elapsed


async def read_all(client: httpx.AsyncClient, task_id: str, params: Any) -> int:
    count = 0
    async with client.stream("GET", f"/v1/tasks/{task_id}/stream", params=params) as response:
        async for line in response.aiter_lines():
            if line == "event: token":
                count += 1
    return count


async def poll_forever(client: httpx.AsyncClient, every_s: float) -> None:
    """A page's polling: one round, then a pause of ``every_s`` (the page's cadence)."""
    while True:
        await poll_round(client)
        await trio.sleep(every_s)  # the page's own timer (app.js POLL_MS), not a readiness wait


async def with_pages(client: httpx.AsyncClient, tokens: int, pages: int, every_s: float) -> float:
    """Tokens/s of a stream while ``pages`` pages poll every ``every_s`` and watch it."""
    async with trio.open_nursery() as nursery:
        for _ in range(pages):
            nursery.start_soon(poll_forever, client, every_s)
        rate = await stream_tokens_per_s(client, tokens, watchers=pages)
        nursery.cancel_scope.cancel()
    return rate


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], path: str = "/health") -> None:
    """Wait for ``url`` + ``path`` to answer 200, and ``ready`` where it says (not a fixed
    time)."""
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"{url}: the process exited ({proc.returncode})"
        try:
            answer = httpx.get(url + path, timeout=1)
            if answer.status_code == 200 and answer.json().get("ready", True):
                return
        except httpx.HTTPError:
            assert time.monotonic() < deadline, f"{url} did not start"
        time.sleep(0.05)


@contextlib.contextmanager
def services(tokens: int) -> Iterator[str]:
    """The fake engine and ``orchestra serve`` in front of it, each a process of its own
    (as a browser is one apart from orchestra); orchestra's URL."""
    engine_port, port = free_port(), free_port()
    folder = Path(tempfile.mkdtemp(prefix="orchestra-bench-page-"))
    config = folder / "orchestra.toml"
    config.write_text(
        f'bind_addr = "127.0.0.1:{port}"\n'
        f'data_dir = "{folder / "data"}"\n'
        "[adapter]\n"
        f'endpoint = "http://127.0.0.1:{engine_port}"\n'
        "engine_backlog = 0\n"
        "[admission]\n"
        f"queue_capacity = 64\nmax_tokens_limit = {tokens}\nctx_limit = {2 * tokens}\n"
        '[log]\nlevel = "warning"\n'
    )
    engine = subprocess.Popen(
        [sys.executable, "-m", "orchestra.testing.fake_llama", "--port", str(engine_port),
         "--slots", "1", "--ctx-size", str(4 * tokens)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    orchestra = subprocess.Popen(
        [sys.executable, "-m", "orchestra", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{engine_port}", engine)
        wait_healthy(f"http://127.0.0.1:{port}", orchestra, "/v1/pools/default/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        for proc in (orchestra, engine):
            proc.terminate()
            proc.wait(timeout=30)


async def measure(url: str, rounds: int, tokens: int, pages: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        empty = [await poll_round(client) for _ in range(rounds * 5)]
        hung = (await client.post("/v1/tasks", json={"prompt": HANG, "max_tokens": 8})).json()
        waiting = []
        for i in range(64):
            body = {"prompt": f"waits {i}", "max_tokens": 16}
            waiting.append((await client.post("/v1/tasks", json=body)).json()["task_id"])
        full = [await poll_round(client) for _ in range(rounds * 5)]
        for task_id in [hung["task_id"], *waiting]:
            await client.post(f"/v1/tasks/{task_id}/cancel")
        alone: list[float] = []
        one: list[float] = []
        many: list[float] = []
        for _ in range(rounds):  # alternating rounds
            alone.append(await stream_tokens_per_s(client, tokens, watchers=0))
            one.append(await with_pages(client, tokens, 1, every_s=1.0))
            many.append(await with_pages(client, tokens, pages, every_s=1.0))
    ms = lambda samples: round(statistics.median(samples) * 1000, 3)  # noqa: E731
    alone_tps, one_tps, many_tps = map(statistics.median, (alone, one, many))
    return {
        "poll_round_median_ms": {"line_empty": ms(empty), "64_waiting_1_running": ms(full)},
        "stream_tokens_per_s_median": {
            "no_page": round(alone_tps, 1),
            "1_page": round(one_tps, 1),
            f"{pages}_pages": round(many_tps, 1),
        },
        "ratio_1_page": round(one_tps / alone_tps, 3),
        f"ratio_{pages}_pages": round(many_tps / alone_tps, 3),
        "rounds": rounds,
        "tokens_per_task": tokens,
        "setup": "fake llama-server (1 slot, no token delay), orchestra serve, and this "
        "client: three processes; a page = the four reads once a second + a watcher",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "command": f"bench/status_page.py --rounds {rounds} --tokens {tokens} --pages {pages}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=30000)
    parser.add_argument("--pages", type=int, default=5)
    parser.add_argument(
        "--out", type=Path, default=Path("proof-bundle/bench/issue21-status-page.json")
    )
    args = parser.parse_args()
    with services(args.tokens) as url:
        result = trio.run(measure, url, args.rounds, args.tokens, args.pages)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
