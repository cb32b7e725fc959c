"""What the agent-facing parts cost (issue 19): artifact puts, reads and listings through the
running service, and ``http_fetch`` against fetching the same local page directly.

orchestra runs in this process (attached to the fake llama-server) with a data directory
of its own; a tiny HTTP server on loopback is the page fetched, and the tools' policy lets
only that server through. Rounds alternate direct and tool fetches; medians are reported.

    .venv/bin/python bench/agents.py [--rounds 200] [--out proof-bundle/bench/issue19-agents.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from orchestra.config import parse_config
from orchestra.service import run_service
from orchestra.testing.fake_llama import FakeLlamaServer

PAGE = b"<html><body>" + b"hello from the lab " * 200 + b"</body></html>"


async def page_server(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Answers every request with :data:`PAGE` (HTTP/1.1, one request per connection)."""
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(PAGE)
    )

    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        await stream.send_all(head + PAGE)
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


async def timed(call: Any) -> float:
    start = time.perf_counter()
    response = await call()
    elapsed = time.perf_counter() - start
    assert response.status_code < 300, response.text
    return elapsed


async def measure(rounds: int) -> dict[str, Any]:
    fake = FakeLlamaServer(total_slots=1)
    data_dir = tempfile.mkdtemp(prefix="orchestra-bench-agents-")
    async with trio.open_nursery() as nursery:
        engine_url = await nursery.start(fake.serve)
        port = await nursery.start(page_server)
        config = parse_config(
            {
                "bind_addr": "127.0.0.1:0",
                "adapter": {"endpoint": engine_url},
                "data_dir": data_dir,
                "log": {"level": "warning"},
                "tools": {
                    "policy": {
                        "allowed_domains": ["127.0.0.1"],
                        "allowed_networks": ["127.0.0.1/32"],
                        "ports": [port],
                    }
                },
            }
        )
        stop = trio.Event()
        running = await nursery.start(partial(run_service, config, stop=stop))
        page = f"http://127.0.0.1:{port}/"
        async with httpx.AsyncClient(base_url=running.urls[0], timeout=30) as client:
            times: dict[str, list[float]] = {
                k: [] for k in ("put_new", "put_again", "get_meta", "get_raw", "list", "lineage",
                                "fetch_direct", "fetch_tool")
            }  # fmt: skip
            parent = await client.post("/v1/artifacts", json={"kind": "plan", "content": "root"})
            parent_id = parent.json()["id"]
            for i in range(rounds):
                body = {"kind": "summary", "content": f"summary {i} " * 400, "parents": [parent_id]}
                put = partial(client.post, "/v1/artifacts", json=body)
                times["put_new"].append(await timed(put))
                times["put_again"].append(await timed(put))
            listed = (await client.get("/v1/artifacts", params={"limit": 1})).json()
            some = listed["artifacts"][0]["id"]
            for _ in range(rounds):
                times["get_meta"].append(await timed(lambda: client.get(f"/v1/artifacts/{some}")))
                times["get_raw"].append(
                    await timed(lambda: client.get(f"/v1/artifacts/{some}", params={"raw": "1"}))
                )
                times["list"].append(await timed(lambda: client.get("/v1/artifacts")))
                times["lineage"].append(
                    await timed(lambda: client.get(f"/v1/artifacts/{parent_id}/lineage"))
                )
            async with httpx.AsyncClient(timeout=30) as direct:
                for _ in range(rounds):  # alternating rounds
                    times["fetch_direct"].append(await timed(lambda: direct.get(page)))
                    times["fetch_tool"].append(
                        await timed(lambda: client.post("/v1/tools/http_fetch", json={"url": page}))
                    )
            audit = (await client.get("/v1/tools/audit", params={"limit": 1})).json()
        stop.set()
        nursery.cancel_scope.cancel()
    medians = {name: median_ms(samples) for name, samples in times.items()}
    return {
        "rounds": rounds,
        "median_ms": medians,
        "fetch_added_ms": round(medians["fetch_tool"] - medians["fetch_direct"], 3),
        "artifact_bytes": len(f"summary {rounds - 1} " * 400),
        "page_bytes": len(PAGE),
        "audited": bool(audit["calls"]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "command": f"bench/agents.py --rounds {rounds}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("proof-bundle/bench/issue19-agents.json"))
    args = parser.parse_args()
    result = trio.run(measure, args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
