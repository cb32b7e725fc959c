"""Scheduling under a mixed workload on the real engine: how full the slots stay while work
waits, time to first token per priority class, and how good ``predicted_start_ms`` is.

orchestra runs as its own process (``orchestra serve``, owned mode, the cached small model
on the real llama-server, ``[replica] parallel = 2, threads = 2``, the default
``adapter.engine_backlog = 1``). This process runs, under Trio with httpx, more clients than
slots: 3 interactive clients (``max_tokens`` 32) and 3 batch clients (``max_tokens`` 64),
each sending tasks back to back (``POST /v1/tasks`` with ``"priority"``, temperature 0, a
prompt of its own every time, then ``GET stream_url`` read to the end) until ``--seconds``
have passed; the tasks then running finish. Meanwhile ``GET /metrics`` is sampled every
100 ms.

Reported:

- slot utilisation while work waits: the mean of ``min(busy, total) / total`` over the
  samples where ``orchestra_queue_depth > 0`` (``orchestra_slots_busy`` counts the one task
  the engine backlog may hold beyond its slots, hence the clamp; the unclamped mean is
  reported too), and the same over all samples;
- the engine's own view: the share of llama-server's slots ``is_processing`` in ``GET
  /slots`` (with the api key orchestra gave it, read from its environment), sampled at the
  same moments, while work waited and over all samples;
- time to first token per task (sending the POST → the first ``token`` event), p50 and p95
  per class;
- the error of ``predicted_start_ms``: per task, the 202's figure against the ``started``
  event's ``queue_wait_ms``, median (and p95) absolute error, per class and in all; and what
  ``GET /v1/replicasets`` → ``predicted_start`` says at the end;
- tasks completed per class. Any refusal or failed task stops the run (orchestra's log, with
  llama-server's, is then kept in the temporary directory and its path printed).

Usage: python bench/scheduling.py [--seconds 60]
Writes proof-bundle/bench/scheduling.json and scheduling.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
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
from engine import engine_key  # bench/engine.py: this directory is on sys.path
from inversion import probe  # bench/inversion.py
from prometheus_client.parser import text_string_to_metric_families

try:
    from orchestra.engine import cache as engine_cache
except ImportError:  # orchestra before issue 14 (to measure "before" with this file)
    from orchestra import engine_cache  # type: ignore[no-redef]

OUT = Path(__file__).resolve().parent.parent / "proof-bundle" / "bench"
CLASSES = {"interactive": 32, "batch": 64}  # priority → max_tokens
CLIENTS_PER_CLASS = 3
SAMPLE_S = 0.1
TOPICS = ("rivers", "owls", "bridges", "tea", "comets", "maps", "violins", "glaciers")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def config_text(work: Path, port: int, engine_port: int, parallel: int = 2) -> str:
    return (
        f'bind_addr = "127.0.0.1:{port}"\ndata_dir = "{work / "data"}"\n'
        f'[adapter]\nendpoint = "http://127.0.0.1:{engine_port}"\n'
        f"[replica]\nparallel = {parallel}\nthreads = 2\n"
    )


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # a benchmark may poll; tests wait on conditions
        if proc.poll() is not None:
            raise RuntimeError(
                f"orchestra exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            health = httpx.get(f"{url}/v1/pools/default/health", timeout=1).json()
            if health.get("ready"):
                return dict(health)
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"orchestra not ready after 300 s:\n{log.read_text()[-3000:]}")


async def run_task(http: httpx.AsyncClient, priority: str, prompt: str) -> dict[str, Any]:
    """One task, submitted then streamed to its end; its timings. Raises on any failure."""
    body = {
        "prompt": prompt,
        "max_tokens": CLASSES[priority],
        "temperature": 0,
        "priority": priority,
    }
    began = time.perf_counter()
    answer = await http.post("/v1/tasks", json=body)
    if answer.status_code != 202:
        raise RuntimeError(f"{priority} task refused: {answer.status_code} {answer.text}")
    accepted = answer.json()
    ttft_ms: float | None = None
    started: dict[str, Any] | None = None
    ended: dict[str, Any] | None = None
    event = ""
    async with http.stream("GET", accepted["stream_url"]) as stream:
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                if event == "token" and ttft_ms is None:
                    ttft_ms = (time.perf_counter() - began) * 1000
                elif event == "started":
                    started = json.loads(line[6:])
                elif event == "end":
                    ended = json.loads(line[6:])
                elif event == "error":
                    raise RuntimeError(f"{priority} task {accepted['task_id']} failed: {line}")
    if ended is None or started is None:
        raise RuntimeError(f"{priority} task {accepted['task_id']}: stream incomplete")
    return {
        "priority": priority,
        "ttft_ms": ttft_ms,
        "wall_ms": (time.perf_counter() - began) * 1000,
        "predicted_start_ms": accepted["predicted_start_ms"],
        "queue_wait_ms": started["queue_wait_ms"],
        "tokens_out": ended["tokens_out"],
        "token_events": ttft_ms is not None,  # False: the engine ended at once (end of text)
    }


async def measure(url: str, engine_url: str, seconds: float) -> dict[str, Any]:
    tasks: list[dict[str, Any]] = []
    samples: list[tuple[float, float, float]] = []  # (busy, total, queue_depth)
    engine_samples: list[tuple[float, float]] = []  # (slots processing, queue_depth)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
    key = {"Authorization": f"Bearer {engine_key(url)}"}
    async with (
        httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http,
        httpx.AsyncClient(base_url=engine_url, timeout=10, headers=key) as engine,
    ):
        # warm up: prompt evaluation paths and a first service-time estimate, not counted
        async with trio.open_nursery() as nursery:
            for n in range(2):
                nursery.start_soon(run_task, http, "interactive", f"Warm-up {n}: say hello.")
        stop_at = trio.current_time() + seconds
        clients_done = trio.Event()

        async def client(priority: str, index: int) -> None:
            n = 0
            while trio.current_time() < stop_at:
                topic = TOPICS[(index + n) % len(TOPICS)]
                prompt = f"Note {n} from {priority} client {index}. A few facts about {topic}:\n1."
                tasks.append(await run_task(http, priority, prompt))
                n += 1

        async def sampler() -> None:
            while not clients_done.is_set():
                text = (await http.get("/metrics")).text
                values = {
                    sample.name: sample.value
                    for family in text_string_to_metric_families(text)
                    for sample in family.samples
                    if sample.name
                    in ("orchestra_slots_busy", "orchestra_slots_total", "orchestra_queue_depth")
                }
                samples.append(
                    (
                        values["orchestra_slots_busy"],
                        values["orchestra_slots_total"],
                        values["orchestra_queue_depth"],
                    )
                )
                slots = (await engine.get("/slots")).json()
                busy = sum(1 for slot in slots if slot["is_processing"]) / len(slots)
                engine_samples.append((busy, values["orchestra_queue_depth"]))
                await trio.sleep(SAMPLE_S)

        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sampler)
            async with trio.open_nursery() as clients:
                for priority in CLASSES:
                    for index in range(CLIENTS_PER_CLASS):
                        clients.start_soon(client, priority, index)
            clients_done.set()
        elapsed = trio.current_time() - began
        replicasets = (await http.get("/v1/replicasets")).json()
    return {
        "tasks": tasks,
        "samples": samples,
        "engine_samples": engine_samples,
        "elapsed_s": elapsed,
        "predicted_start_end": replicasets["replicasets"][0]["replicas"][0]["predicted_start"],
    }


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    samples = raw["samples"]
    waiting = [(b, t) for b, t, q in samples if q > 0 and t > 0]
    every = [(b, t) for b, t, _ in samples if t > 0]

    def util(pairs: list[tuple[float, float]], clamp: bool) -> float | None:
        if not pairs:
            return None
        return round(statistics.mean((min(b, t) if clamp else b) / t for b, t in pairs), 4)

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    per_class: dict[str, Any] = {}
    errors_all: list[float] = []
    for priority in [*CLASSES, "all"]:
        chosen = [t for t in raw["tasks"] if priority in ("all", t["priority"])]
        ttft = [t["ttft_ms"] for t in chosen if t["ttft_ms"] is not None]
        errors = [abs(t["queue_wait_ms"] - t["predicted_start_ms"]) for t in chosen]
        waits = [t["queue_wait_ms"] for t in chosen]
        if priority == "all":
            errors_all = errors
        per_class[priority] = {
            "completed": len(chosen),
            "tokens_out": sum(t["tokens_out"] for t in chosen),
            "without_token_events": len(chosen) - len(ttft),
            "ttft_ms_p50": rounded(pct(ttft, 0.5)),
            "ttft_ms_p95": rounded(pct(ttft, 0.95)),
            "queue_wait_ms_p50": rounded(pct(waits, 0.5)),
            "queue_wait_ms_p95": rounded(pct(waits, 0.95)),
            "predicted_start_ms_p50": rounded(pct([t["predicted_start_ms"] for t in chosen], 0.5)),
            "prediction_abs_error_ms_median": rounded(statistics.median(errors))
            if errors
            else None,
            "prediction_abs_error_ms_p95": rounded(pct(errors, 0.95)),
        }
    return {
        "elapsed_s": round(raw["elapsed_s"], 2),
        "utilisation": {
            "while_waiting": util(waiting, clamp=True),
            "while_waiting_unclamped": util(waiting, clamp=False),
            "all_samples": util(every, clamp=True),
            "samples_waiting": len(waiting),
            "samples_all": len(every),
            "engine_slots_while_waiting": round(
                statistics.mean(b for b, q in raw["engine_samples"] if q > 0), 4
            )
            if any(q > 0 for _, q in raw["engine_samples"])
            else None,
            "engine_slots_all_samples": round(
                statistics.mean(b for b, _ in raw["engine_samples"]), 4
            ),
        },
        "classes": per_class,
        "prediction_abs_error_ms_median": per_class["all"]["prediction_abs_error_ms_median"],
        "prediction_samples": len(errors_all),
        "replicasets_predicted_start_at_end": raw["predicted_start_end"],
    }


def serve_and_run(
    port: int, engine_port: int, parallel: int, work_fn: Any
) -> tuple[str, dict[str, Any], Any]:
    """Run ``orchestra serve`` (owned, ``parallel`` slots) while ``work_fn()`` runs; the
    config (with the temporary path masked), the health at start and what it returned."""
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="orchestra-bench-scheduling-") as tmp:
        work = Path(tmp)
        config = config_text(work, port, engine_port, parallel)
        (work / "orchestra.toml").write_text(config)
        log = work / "orchestra.log"
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "orchestra",
                    "serve",
                    "--config",
                    str(work / "orchestra.toml"),
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            health = wait_ready(url, proc, log)
            result = work_fn()
        except BaseException:
            kept = Path(tempfile.gettempdir()) / f"bench-scheduling-orchestra-{os.getpid()}.log"
            shutil.copyfile(log, kept)
            print(f"failed; orchestra's log (with llama-server's) kept in {kept}", file=sys.stderr)
            raise
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        return config.replace(str(work), "<tmp>"), health, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--inversion-rounds", type=int, default=8, help="rounds of bench/inversion.py (0: none)"
    )
    args = parser.parse_args()
    if engine_cache.installed_engine("cpu") is None or engine_cache.installed_model() is None:
        raise SystemExit("run `orchestra engine install` first")
    port, engine_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    config, health, raw = serve_and_run(
        port,
        engine_port,
        2,
        lambda: trio.run(measure, url, f"http://127.0.0.1:{engine_port}", args.seconds),
    )
    inversion: dict[str, Any] | None = None
    if args.inversion_rounds:
        port1, engine_port1 = free_port(), free_port()
        url1 = f"http://127.0.0.1:{port1}"
        _, _, inversion = serve_and_run(
            port1, engine_port1, 1, lambda: trio.run(probe, url1, args.inversion_rounds)
        )
    result = summarise(raw)
    setup = {
        "command": f"python bench/scheduling.py --seconds {args.seconds:g} "
        f"--inversion-rounds {args.inversion_rounds}",
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
        "engine": f"llama-server {engine_cache.ENGINE_VERSION}, {engine_cache.MODEL_FILE}, CPU",
        "engine_version": health.get("engine_version"),
        "config": config,
        "clients": {p: CLIENTS_PER_CLASS for p in CLASSES},
        "max_tokens": CLASSES,
        "temperature": 0,
        "sample_interval_s": SAMPLE_S,
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    result["inversion"] = inversion
    (OUT / "scheduling.json").write_text(json.dumps({"setup": setup, **result}, indent=2) + "\n")
    u = result["utilisation"]
    end = result["replicasets_predicted_start_at_end"]
    lines = [
        "# Scheduling under a mixed workload (real engine)",
        "",
        f"{setup['engine']}; {setup['machine']}; {setup['when']}.",
        f"Command: `{setup['command']}`. Owned mode, 2 slots, 2 threads, engine backlog 1; "
        f"{CLIENTS_PER_CLASS} interactive clients (32 tokens) and {CLIENTS_PER_CLASS} batch "
        f"clients (64 tokens), tasks back to back, temperature 0; {result['elapsed_s']} s in all.",
        "",
        f"Slot utilisation while work waited: **{u['while_waiting']:.1%}** "
        f"({u['samples_waiting']} of {u['samples_all']} samples at 100 ms); "
        f"over all samples {u['all_samples']:.1%}. (Busy counts the engine-backlog task, so "
        f"busy/total unclamped while waiting is {u['while_waiting_unclamped']:.1%}.)",
        "",
        f"The engine's own `/slots` at the same moments: slots processing while work waited "
        f"**{(u['engine_slots_while_waiting'] or 0):.1%}**, over all samples "
        f"{u['engine_slots_all_samples']:.1%}. (A sample falls between one task's end and "
        f"the next one's prompt evaluation now and then: the engine shows the slot idle.)",
        "",
        "| class | tasks | TTFT p50 ms | TTFT p95 ms | wait p50 ms | wait p95 ms "
        "| prediction error median ms | p95 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["classes"].items():
        lines.append(
            f"| {name} | {row['completed']} | {row['ttft_ms_p50']} | {row['ttft_ms_p95']} "
            f"| {row['queue_wait_ms_p50']} | {row['queue_wait_ms_p95']} "
            f"| {row['prediction_abs_error_ms_median']} | {row['prediction_abs_error_ms_p95']} |"
        )
    lines += [
        "",
        "Prediction error = |`queue_wait_ms` of the `started` event - the 202's "
        "`predicted_start_ms`|. `GET /v1/replicasets` → `predicted_start` at the end: "
        f"p50 {end['abs_error_ms_p50']} ms, p95 {end['abs_error_ms_p95']} ms over "
        f"{end['samples']} tasks (warm-up included). No task failed or was refused; "
        f"{result['classes']['all']['without_token_events']} ended at once with no token event "
        "(end of text first; left out of TTFT).",
    ]
    if inversion is not None:
        lines += [
            "",
            "## Priority inversion through the engine backlog (bench/inversion.py)",
            "",
            "One slot, engine backlog 1; per round a long batch task (160 tokens) streams, a "
            "short batch task (48) is dispatched into the engine's backlog, then an interactive "
            f"task (16) is submitted. {len(inversion['rounds'])} rounds after a warm-up.",
            "",
            f"Interactive TTFT: median **{inversion['interactive_ttft_ms_median']} ms**, p95 "
            f"{inversion['interactive_ttft_ms_p95']} ms; the short batch task's first token came "
            f"first (an inversion) in **{inversion['inversions']}** of "
            f"{len(inversion['rounds'])} rounds; it was taken back in "
            f"{inversion['short_batch_taken_back']}.",
        ]
    (OUT / "scheduling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
