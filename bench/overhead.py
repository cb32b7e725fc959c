"""What orchestra adds on top of the engine: direct to the fake llama-server vs through orchestra.

The fake engine (``--token-delay-ms``, 5 by default; 8 slots), orchestra and this load
client each run in their own process. Measured interleaved in one run:

- sequential: N tasks of 32 streamed tokens, each sent once directly and once through
  orchestra, alternately; time to first token (TTFT) and total time per task; the added
  TTFT is the median of the paired differences;
- concurrent: 8 clients each running tasks back to back, alternating direct and orchestra
  rounds; tasks/s per round, median over rounds, and the ratio orchestra / direct; and
  orchestra's own CPU in its rounds (``/proc/<pid>/stat``, utime + stime) per 1,000 streamed
  tokens and as tokens per CPU-second. With ``--token-delay-ms 0`` the engine sends its
  tokens as fast as it can: that is orchestra's ceiling.

Usage: python bench/overhead.py [--sequential 200] [--rounds 3] [--per-client 16]
           [--token-delay-ms 5] [--out PREFIX] [--tree DIR]
``--tree``: the orchestra source tree to run (a worktree of another revision, for a
before/after pair). Writes proof-bundle/bench/overhead.json and overhead.md (or PREFIX.*).
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procstat import cpu_seconds  # the sibling bench module (run as a script)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "proof-bundle" / "bench"
TOKENS = 32
TOKEN_DELAY_MS = 5
CLIENTS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def direct_task(client: httpx.AsyncClient, prompt: str) -> tuple[float, float]:
    """TTFT and total seconds of one streamed /completion straight to the engine."""
    start = time.perf_counter()
    ttft = 0.0
    body = {"prompt": prompt, "n_predict": TOKENS, "stream": True, "cache_prompt": False}
    async with client.stream("POST", "/completion", json=body) as response:
        async for line in response.aiter_lines():
            if not ttft and line.startswith("data: ") and json.loads(line[6:]).get("content"):
                ttft = time.perf_counter() - start
    return ttft, time.perf_counter() - start


async def orchestra_task(client: httpx.AsyncClient, prompt: str) -> tuple[float, float]:
    """TTFT and total seconds of one task submitted to orchestra and streamed."""
    start = time.perf_counter()
    ttft = 0.0
    accepted = await client.post("/v1/tasks", json={"prompt": prompt, "max_tokens": TOKENS})
    accepted.raise_for_status()
    async with client.stream("GET", accepted.json()["stream_url"]) as response:
        async for line in response.aiter_lines():
            if not ttft and line == "event: token":
                ttft = time.perf_counter() - start
    return ttft, time.perf_counter() - start


Runner = Callable[[httpx.AsyncClient, str], Awaitable[tuple[float, float]]]


async def concurrent_round(client: httpx.AsyncClient, run: Runner, per_client: int) -> float:
    """Tasks per second with CLIENTS clients each running ``per_client`` tasks in a row."""

    async def one_client(k: int) -> None:
        for i in range(per_client):
            await run(client, f"client {k} task {i}")

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for k in range(CLIENTS):
            nursery.start_soon(one_client, k)
    return CLIENTS * per_client / (time.perf_counter() - start)


async def measure(
    engine: str, orchestra: str, args: argparse.Namespace, pid: int
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with (
        httpx.AsyncClient(base_url=engine, timeout=60, limits=limits) as direct,
        httpx.AsyncClient(base_url=orchestra, timeout=60, limits=limits) as orch,
    ):
        for _ in range(5):  # warm both paths
            await direct_task(direct, "warm up")
            await orchestra_task(orch, "warm up")
        pairs = []
        for i in range(args.sequential):
            prompt = f"sequential task {i}"
            if i % 2 == 0:
                d = await direct_task(direct, prompt)
                o = await orchestra_task(orch, prompt)
            else:
                o = await orchestra_task(orch, prompt)
                d = await direct_task(direct, prompt)
            pairs.append((d, o))
        rounds = []
        for _ in range(args.rounds):
            d_rate = await concurrent_round(direct, direct_task, args.per_client)
            cpu_before = cpu_seconds(pid)
            o_rate = await concurrent_round(orch, orchestra_task, args.per_client)
            cpu_ms_per_1k = (
                (cpu_seconds(pid) - cpu_before) * 1e6 / (CLIENTS * args.per_client * TOKENS)
            )
            rounds.append(
                {
                    "direct_tasks_per_s": d_rate,
                    "orchestra_tasks_per_s": o_rate,
                    "orchestra_cpu_ms_per_1k_tokens": round(cpu_ms_per_1k, 1),
                }
            )

    def ms(values: list[float]) -> float:
        return round(statistics.median(values) * 1000, 3)

    added_ttft = [o[0] - d[0] for d, o in pairs]
    added_total = [o[1] - d[1] for d, o in pairs]
    ratios = [r["orchestra_tasks_per_s"] / r["direct_tasks_per_s"] for r in rounds]
    cpu_1k = statistics.median(r["orchestra_cpu_ms_per_1k_tokens"] for r in rounds)
    return {
        "sequential": {
            "tasks": args.sequential,
            "direct_ttft_ms_median": ms([d[0] for d, _ in pairs]),
            "orchestra_ttft_ms_median": ms([o[0] for _, o in pairs]),
            "added_ttft_ms_median_of_paired_differences": ms(added_ttft),
            "added_ttft_ms_p90": round(sorted(added_ttft)[int(0.9 * len(pairs))] * 1000, 3),
            "direct_total_ms_median": ms([d[1] for d, _ in pairs]),
            "orchestra_total_ms_median": ms([o[1] for _, o in pairs]),
            "added_total_ms_median_of_paired_differences": ms(added_total),
        },
        "concurrent": {
            "clients": CLIENTS,
            "tasks_per_client_per_round": args.per_client,
            "rounds": rounds,
            "direct_tasks_per_s_median": round(
                statistics.median(r["direct_tasks_per_s"] for r in rounds), 2
            ),
            "orchestra_tasks_per_s_median": round(
                statistics.median(r["orchestra_tasks_per_s"] for r in rounds), 2
            ),
            "tasks_per_s_ratio_median": round(statistics.median(ratios), 3),
            "orchestra_cpu_ms_per_1k_tokens_median": round(cpu_1k, 1),
            "orchestra_tokens_per_cpu_second": round(1e6 / cpu_1k) if cpu_1k else None,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-client", type=int, default=16)
    parser.add_argument("--token-delay-ms", type=float, default=TOKEN_DELAY_MS)
    parser.add_argument("--out", default=str(OUT / "overhead"), help="output prefix")
    parser.add_argument("--tree", default=str(ROOT), help="the orchestra tree to run")
    args = parser.parse_args()
    engine_port, orchestra_port = free_port(), free_port()
    engine = f"http://127.0.0.1:{engine_port}"
    orchestra = f"http://127.0.0.1:{orchestra_port}"
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(
            f'bind_addr = "127.0.0.1:{orchestra_port}"\n'
            f"[admission]\nqueue_capacity = 64\n"
            f'[adapter]\nendpoint = "{engine}"\n'
        )
        python = sys.executable
        procs = [
            subprocess.Popen(
                [python, "-m", "orchestra.testing.fake_llama", "--port", str(engine_port),
                 "--slots", str(CLIENTS), "--token-delay-ms", str(args.token_delay_ms)],
                stdout=subprocess.DEVNULL,
            ),
            subprocess.Popen(
                [python, "-m", "orchestra", "serve", "--config", str(config)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=args.tree,
            ),
        ]  # fmt: skip
        try:
            wait_http(f"{engine}/health")
            wait_http(f"{orchestra}/v1/pools/default/health")
            while not httpx.get(f"{orchestra}/v1/pools/default/health").json()["ready"]:
                time.sleep(0.05)
            results = trio.run(measure, engine, orchestra, args, procs[1].pid)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)
    results["setup"] = {
        "engine": f"fake llama-server, {args.token_delay_ms} ms per token, {CLIENTS} slots",
        "orchestra_tree": args.tree,
        "tokens_per_task": TOKENS,
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
        "processes": "engine, orchestra and the load client each in their own process",
        "command": "python bench/overhead.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    s, c = results["sequential"], results["concurrent"]
    out.with_suffix(".md").write_text(
        "# orchestra overhead vs the engine directly (fake engine)\n\n"
        f"{results['setup']['engine']}; {TOKENS} streamed tokens per task; "
        f"{results['setup']['machine']}; {results['setup']['date']}.\n"
        f"Command: `{results['setup']['command']}`\n\n"
        "| measure | direct | orchestra | added / ratio |\n|---|---|---|---|\n"
        f"| TTFT, median ms ({s['tasks']} sequential, paired) | {s['direct_ttft_ms_median']} | "
        f"{s['orchestra_ttft_ms_median']} | +{s['added_ttft_ms_median_of_paired_differences']} ms "
        f"(p90 +{s['added_ttft_ms_p90']}) |\n"
        f"| total per task, median ms | {s['direct_total_ms_median']} | "
        f"{s['orchestra_total_ms_median']} | "
        f"+{s['added_total_ms_median_of_paired_differences']} ms |\n"
        f"| tasks/s, {CLIENTS} clients (median of {len(c['rounds'])} rounds) | "
        f"{c['direct_tasks_per_s_median']} | {c['orchestra_tasks_per_s_median']} | "
        f"{c['tasks_per_s_ratio_median']}x |\n"
        f"| orchestra CPU per 1,000 tokens, ms (median of its rounds) | | "
        f"{c['orchestra_cpu_ms_per_1k_tokens_median']} | "
        f"{c['orchestra_tokens_per_cpu_second']} tokens per CPU-second |\n"
        f"\nOrchestra tree: `{args.tree}`.\n"
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
