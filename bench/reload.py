"""How long the control plane's reload takes against the real engine, and what it costs a
client: orchestra in owned mode on the cached small model (in this process's Trio run),
the same GGUF registered under two catalog ids, reloads alternating between them with a
task streaming when each begins, and reloads onto a broken GGUF (rolled back).

Reported, median and max over the runs: the reload request's wall time, ``load_ms`` (engine
stopped → new one ready), the drain's ``waited_ms``, and for the rollback the time until
the request answered (the old model serving again). Every task must complete.

Usage: python bench/reload.py [--runs 5]
Writes proof-bundle/bench/reload.json and reload.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from orchestra.config import parse_config
from orchestra.engine import cache as engine_cache
from orchestra.service import run_service

OUT = Path(__file__).resolve().parent.parent / "proof-bundle" / "bench"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def measure(runs: int, work: Path) -> dict[str, Any]:
    model = engine_cache.installed_model()
    if model is None or engine_cache.installed_engine("cpu") is None:
        raise SystemExit("run `orchestra engine install` first")
    for name in ("smol-a.gguf", "smol-b.gguf"):
        try:
            os.link(model, work / name)  # the same bytes under another path, without a copy
        except OSError:  # another file system
            (work / name).write_bytes(model.read_bytes())
    (work / "broken.gguf").write_bytes(b"GGUF" + b"\0" * 4096)
    config = parse_config(
        {
            "bind_addr": "127.0.0.1:0",
            "data_dir": str(work / "data"),
            "adapter": {"endpoint": f"http://127.0.0.1:{free_port()}"},
            "replica": {"parallel": 2, "threads": 2, "ctx_size": 2048},
        }
    )
    stop = trio.Event()
    reloads: list[dict[str, float]] = []
    rollbacks: list[float] = []
    async with trio.open_nursery() as nursery:
        running = await nursery.start(partial(run_service, config, stop=stop))
        await running.actors.queue.wait_ready()
        async with httpx.AsyncClient(base_url=running.urls[0], timeout=300) as client:
            for model_id in ("smol-a", "smol-b", "broken"):
                body = {"id": model_id, "path": str(work / f"{model_id}.gguf")}
                assert (await client.post("/v1/catalog/models", json=body)).status_code == 201
            for n in range(runs):
                task = await client.post(
                    "/v1/tasks", json={"prompt": f"Count to {n + 20}:", "max_tokens": 32}
                )
                task_id = task.json()["task_id"]
                began = time.perf_counter()
                answer = await client.post(
                    "/v1/pools/default/reload",
                    json={"model_ref": "smol-a" if n % 2 == 0 else "smol-b"},
                )
                wall = time.perf_counter() - began
                assert answer.status_code == 200, answer.text
                report = answer.json()
                ended = (await client.get(f"/v1/tasks/{task_id}")).json()["state"]
                assert ended == "completed", ended
                reloads.append(
                    {
                        "wall_ms": wall * 1000,
                        "load_ms": report["load_ms"],
                        "drain_waited_ms": report["drain"]["waited_ms"],
                    }
                )
                began = time.perf_counter()
                failed = await client.post("/v1/pools/default/reload", json={"model_ref": "broken"})
                rollbacks.append((time.perf_counter() - began) * 1000)
                assert failed.status_code == 422, failed.text
                health = (await client.get("/v1/pools/default/health")).json()
                assert health["ready"], health
        stop.set()

    def summary(values: list[float]) -> dict[str, float]:
        return {"median": round(statistics.median(values), 1), "max": round(max(values), 1)}

    return {
        "runs": runs,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "reload_wall_ms": summary([r["wall_ms"] for r in reloads]),
        "load_ms": summary([r["load_ms"] for r in reloads]),
        "drain_waited_ms": summary([r["drain_waited_ms"] for r in reloads]),
        "rollback_wall_ms": summary(rollbacks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        result = trio.run(measure, args.runs, Path(work))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "reload.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = "\n".join(
        f"| {name} | {result[name]['median']} | {result[name]['max']} |"
        for name in ("reload_wall_ms", "load_ms", "drain_waited_ms", "rollback_wall_ms")
    )
    (OUT / "reload.md").write_text(
        f"# Reload on the real engine ({result['runs']} runs, {result['machine']})\n\n"
        "`python bench/reload.py`: SmolLM2-135M Q4_1 on CPU, 2 slots; each reload begins "
        "with a 32-token task running, which completes.\n\n"
        f"| measure (ms) | median | max |\n|---|---|---|\n{rows}\n"
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
