"""What the SDK costs a client: the same task through raw httpx and through the SDK.

orchestra runs as its own process (``orchestra serve``, owned mode, the cached small model
on the real llama-server). This process sends the same task (16 tokens, fixed seed)
sequentially and interleaved four ways, N times each:

- ``raw``: httpx, ``POST /v1/tasks`` then ``GET stream_url``, tokens taken from the SSE text
  with no typing (the least a client can do);
- ``sdk-async``: ``AsyncClient.complete()``;
- ``sdk-sync``: ``Client.complete()`` (the portal thread);
- ``embedded``: ``AsyncClient.embedded()`` in this process, with its own llama-server
  (no socket between client and orchestra).

Reported: median and p90 wall time per task, and the ratio of each to ``raw``, measured in
one run. Every way must return the same text (same seed, strict determinism).

Usage: python bench/sdk.py [--runs 40]
Writes proof-bundle/bench/sdk.json and sdk.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from orchestra.config import parse_config
from orchestra.engine import cache as engine_cache
from orchestra.sdk import AsyncClient, Client

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "proof-bundle" / "bench"
PROMPT = "The three primary colours are"
BODY: dict[str, Any] = {"prompt": PROMPT, "max_tokens": 16, "seed": 5}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(work: Path, port: int) -> Path:
    path = work / "orchestra.toml"
    path.write_text(
        f'bind_addr = "127.0.0.1:{port}"\ndata_dir = "{work / "data"}"\n'
        f'[adapter]\nendpoint = "http://127.0.0.1:{free_port()}"\n'
        "[replica]\nparallel = 1\nthreads = 2\n"
    )
    return path


async def raw(http: httpx.AsyncClient) -> str:
    accepted = (await http.post("/v1/tasks", json=BODY)).json()
    response = await http.get(accepted["stream_url"])
    pieces = []
    for line in response.text.splitlines():
        if line.startswith('data: {"t"'):
            pieces.append(json.loads(line[6:])["t"])
    return "".join(pieces)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(runs: int, url: str, work: Path) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"raw": [], "sdk-async": [], "sdk-sync": [], "embedded": []}
    texts: dict[str, set[str]] = {name: set() for name in times}
    embedded_config = parse_config(
        {
            "data_dir": str(work / "data-embedded"),
            "shutdown_grace_s": 0.0,
            "adapter": {"endpoint": f"http://127.0.0.1:{free_port()}"},
            "replica": {"parallel": 1, "threads": 2},
        }
    )
    sync_client = await trio.to_thread.run_sync(Client, url)
    try:
        async with (
            httpx.AsyncClient(base_url=url, timeout=60) as http,
            AsyncClient(url) as client,
            AsyncClient.embedded(embedded_config) as embedded,
        ):
            for _ in range(3):  # warm every path (connections, prompt evaluation)
                await raw(http)
                await client.complete(**BODY)
                await embedded.complete(**BODY)
            for _ in range(runs):
                for name in times:
                    began = time.perf_counter()
                    if name == "raw":
                        text = await raw(http)
                    elif name == "sdk-async":
                        text = (await client.complete(**BODY)).text
                    elif name == "sdk-sync":
                        done = await trio.to_thread.run_sync(lambda: sync_client.complete(**BODY))
                        text = done.text
                    else:
                        text = (await embedded.complete(**BODY)).text
                    times[name].append((time.perf_counter() - began) * 1000)
                    texts[name].add(text)
    finally:
        await trio.to_thread.run_sync(sync_client.close)
    every = set().union(*texts.values())
    if len(every) != 1:
        raise SystemExit(f"the ways returned different texts: {texts}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    if engine_cache.installed_engine("cpu") is None or engine_cache.installed_model() is None:
        raise SystemExit("run `orchestra engine install` first")
    with tempfile.TemporaryDirectory(prefix="orchestra-bench-sdk-") as tmp:
        work = Path(tmp)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "orchestra", "serve", "--config", str(write_config(work, port))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with Client(url) as probe:
                deadline = time.monotonic() + 120
                while True:  # a benchmark may poll; tests wait on conditions
                    try:
                        if probe.health().ready:
                            break
                    except Exception:
                        pass
                    if time.monotonic() > deadline:
                        raise SystemExit("orchestra did not become ready")
                    time.sleep(0.2)
            times = trio.run(measure, args.runs, url, work)
        finally:
            server.terminate()
            server.wait(30)
    base = statistics.median(times["raw"])
    rows = {
        name: {
            "median_ms": round(statistics.median(values), 3),
            "p90_ms": round(pct(values, 0.9), 3),
            "ratio_to_raw": round(statistics.median(values) / base, 4),
        }
        for name, values in times.items()
    }
    meta = {
        "runs": args.runs,
        "task": BODY,
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
        "engine": f"llama-server {engine_cache.ENGINE_VERSION}, {engine_cache.MODEL_FILE}, CPU",
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": f"python bench/sdk.py --runs {args.runs}",
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sdk.json").write_text(json.dumps({**meta, "results": rows}, indent=2) + "\n")
    lines = [
        "# The SDK's cost per task (real engine)",
        "",
        f"{meta['engine']}; {meta['machine']}; {meta['when']}.",
        f"Command: `{meta['command']}`. One task at a time, the four ways interleaved; "
        "every way returned the same text.",
        "",
        "| way | median ms | p90 ms | ratio to raw httpx |",
        "|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['median_ms']} | {row['p90_ms']} | {row['ratio_to_raw']}x |")
    (OUT / "sdk.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
