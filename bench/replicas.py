"""Replicas of one model: should a CPU box run two, and what dispatch costs at scale.

Orchestra (``orchestra serve``, each instance its own process, logging JSON Lines to a
file) and this load client (httpx on Trio) are separate processes; orchestra's CPU is read
from ``/proc/PID/stat`` (utime + stime) before and after each measured window. Two parts:

A. Real engine ("should I run replicas on a CPU box"): the cached llama-server and the
   cached SmolLM2 model, two orchestras side by side, both up for the whole part (only one
   under load at a time; both ``keep_loaded``, so nothing loads while measuring):

   - ``one``: ``[models.smol]`` with ``replicas = 1``, ``threads = 2``, ``parallel = 2``;
   - ``two``: ``replicas = 2``, ``threads = 2`` (orchestra splits it: 1 thread each, which
     the bench checks in each engine's command line), ``parallel = 1``;

   ``ctx_size`` is 1024 tokens per slot in both. The bench waits until ``GET
   /v1/replicasets`` shows every replica ``ready``; after a warm-up round that is not
   counted, rounds alternate the two configurations (which goes first alternates too); in
   each, 8 clients each send ``--per-client`` tasks back to back, every task the same
   prompt, ``max_tokens`` 32, temperature 0, seed 7 and ``determinism: "strict"`` (the
   engine's prompt cache off, so every task evaluates its prompt: the same work each
   time), submitted and streamed in one request (``POST /v1/tasks`` with ``Accept:
   text/event-stream``). Per round: tokens/s (the engine's ``tokens_out`` / round wall
   time), TTFT p50 (task sent → first token event), orchestra's and the engines' CPU
   seconds. Reported: the medians over rounds and the ratio two / one.

B. Simulated scale: many fake llama-servers (``FakeLlamaServer``, ``--slots`` 8 each,
   ``--token-delay-ms`` 2 per token), ALL in one separate process (``bench/fake_fleet.py``,
   one Trio run, consecutive ports), and one orchestra per replica count of the grid, each
   with one ``[models.fleet]`` table whose ``endpoints`` are that many fakes (attached
   replicas), ``keep_loaded``, ``[admission] queue_capacity`` and
   ``batch_queue_capacity`` large enough for every client to wait. All orchestras stay up
   for the whole part; cells of the grid (replicas x clients) run one at a time, in an
   order rotated per round. In a cell, every client first sends one task that is not
   counted (it opens the client's connection), then all loop: a task of 16 tokens,
   streamed, then the next, until ``--duration`` is over; the window ends when the last
   task in flight ended. A 429 is retried after its ``X-Backoff-Ms`` (else
   ``Retry-After``) and counted; any other failure is counted as an error (the run goes
   on). Per cell: tasks completed, tokens/s through orchestra, the fakes' nominal ceiling
   (replicas x slots / token delay), the CPU seconds of orchestra, of the fakes' process
   (one core at most: when it is near 1.0 core the fakes are the real ceiling) and of this
   client, orchestra's CPU per task and per 1,000 tokens ("dispatch cost per task"),
   errors and 429s, and the time from the first submit to the first token (p50, p95).

Both parts raise the soft RLIMIT_NOFILE to the hard limit (the spawned processes inherit
it). Every process is stopped at the end, also on Ctrl-C or an error (process groups
SIGTERM, then SIGKILL; the engines orchestra started are checked and killed if left).

Usage: .venv/bin/python bench/replicas.py [--quick] [--skip-a] [--skip-b]
           [--rounds 4] [--per-client 4] [--threads 2]
           [--replicas 1,4,16,64] [--clients 10,100,1000] [--duration 10] [--rounds-b 3]
           [--slots 8] [--token-delay-ms 2] [--log-level info]
           [--binary PATH] [--model PATH] [--out PREFIX] [--keep-logs DIR]
``--quick``: part A 1 round of 1 task per client; part B (1, 4) x (10, 50), 2 s, 1 round
(each of these may still be set explicitly). Without --binary / --model part A uses what
``orchestra engine install`` cached.
Writes proof-bundle/bench/issue17-replicas.json and issue17-replicas.md (``--out``
elsewhere).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import engine_alive, free_ports  # the sibling bench modules (run as a script)
from openai_face import (
    Servers,
    cpu_model,
    engine_version,
    load,
    orchestra_revision,
    rotate,
    servers,
)

from orchestra.engine import cache as engine_cache

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "proof-bundle" / "bench" / "issue17-replicas"
SSE = {"Accept": "text/event-stream"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT_S = 300.0

# part A
A_CONFIGS = ("one", "two")
A_SHAPE = {"one": {"replicas": 1, "parallel": 2}, "two": {"replicas": 2, "parallel": 1}}
A_CLIENTS = 8
A_TOKENS = 32
A_PROMPT = "Story 1. Write a long story about a lighthouse, part 1:\n"
A_SEED = 7
A_CTX_PER_SLOT = 1024

# part B
B_TOKENS = 16
B_PROMPT = "hello fleet"
CLIENTS_PER_HTTPX = 25
"""Load clients sharing one httpx.AsyncClient (its pool scans its connections on every
request: a thousand in one pool would make this client the bottleneck)."""
BACKOFF_FALLBACK_S = 0.1
DEPTH_EVERY_S = 0.5
"""How often a cell reads the pool's ``queue_depth`` (its health) while it runs."""
TASK_GIVE_UP_S = 120.0
"""A task still refused (429) this long after its first submit counts as an error."""


def now() -> float:
    return time.perf_counter()


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def raise_nofile() -> dict[str, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {"soft": soft, "hard": hard}


def cpu_s(pid: int) -> float | None:
    """utime + stime of process ``pid`` (all its threads), in seconds; None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def listen_drops() -> dict[str, int]:
    """The machine's TcpExt ListenOverflows and ListenDrops (a full accept queue)."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError, IndexError):
        lines = Path("/proc/net/netstat").read_text().splitlines()
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            if names.startswith("TcpExt:"):
                table = dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=False))
                found = {k: table[k] for k in ("ListenOverflows", "ListenDrops") if k in table}
    return found


def cpu_delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else round(after - before, 3)


def pct(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def median(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


# --- one task ----------------------------------------------------------------------------


class Done(NamedTuple):
    """One task as the client saw it, moments on this process's perf clock."""

    submitted: float
    """The first POST (before any 429)."""
    first_token: float | None
    ended: float
    tokens: int
    """``tokens_out`` of the end event (0 when none came)."""
    refused: int
    """429 answers before it was taken."""
    queue_wait_ms: int | None
    error: str | None
    refusal: str | None = None
    """The body of its last 429 (shortened)."""


def backoff_s(response: httpx.Response) -> float:
    for name, scale in (("x-backoff-ms", 1000), ("retry-after-ms", 1000), ("retry-after", 1)):
        with contextlib.suppress(TypeError, ValueError):
            value = response.headers.get(name)
            if value is not None:
                return max(0.0, float(value) / scale)
    return BACKOFF_FALLBACK_S


async def run_task(client: httpx.AsyncClient, body: dict[str, Any]) -> Done:
    """One task, submitted and streamed in one request; 429s retried after their backoff.
    Never raises for a failure of the task: it comes back in ``error``."""
    submitted = now()
    refused, refusal = 0, None
    while True:
        first: float | None = None
        tokens, wait, event = 0, None, ""
        ended_ok = False
        try:
            async with client.stream("POST", "/v1/tasks", json=body, headers=SSE) as response:
                if response.status_code == 429:
                    await response.aread()
                    refused += 1
                    refusal = response.text[:300]
                    if now() - submitted > TASK_GIVE_UP_S:
                        return Done(submitted, None, now(), 0, refused, None, "429 gave up",
                                    refusal)  # fmt: skip
                    await trio.sleep(backoff_s(response))
                    continue
                if response.status_code != 200:
                    await response.aread()
                    error = f"HTTP {response.status_code}: {response.text[:200]}"
                    return Done(submitted, None, now(), 0, refused, None, error, refusal)
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        if event == "token":
                            if first is None:
                                first = now()
                        elif event == "started":
                            wait = json.loads(line[6:]).get("queue_wait_ms")
                        elif event == "end":
                            tokens = int(json.loads(line[6:]).get("tokens_out", 0))
                            ended_ok = True
                        elif event == "error":
                            return Done(submitted, first, now(), 0, refused, wait,
                                        f"error event: {line[6:200]}", refusal)  # fmt: skip
        except httpx.HTTPError as exc:
            return Done(submitted, first, now(), 0, refused, wait,
                        f"{type(exc).__name__}: {str(exc)[:200]!r}", refusal)  # fmt: skip
        if not ended_ok:
            return Done(submitted, first, now(), 0, refused, wait, "stream without an end event",
                        refusal)  # fmt: skip
        return Done(submitted, first, now(), tokens, refused, wait, None, refusal)


def clients_for(base: str, count: int, ctx: ssl.SSLContext) -> list[httpx.AsyncClient]:
    """``ceil(count / CLIENTS_PER_HTTPX)`` httpx clients, no connection limit."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None,
                          keepalive_expiry=60)  # fmt: skip
    timeout = httpx.Timeout(TASK_GIVE_UP_S, connect=30, pool=None)
    return [
        httpx.AsyncClient(base_url=base, timeout=timeout, limits=limits, verify=ctx)
        for _ in range(max(1, math.ceil(count / CLIENTS_PER_HTTPX)))
    ]


def task_figures(done: list[Done], seconds: float) -> dict[str, Any]:
    good = [d for d in done if d.error is None]
    ttfts = [d.first_token - d.submitted for d in good if d.first_token is not None]
    waits = [d.queue_wait_ms for d in good if d.queue_wait_ms is not None]
    tokens = sum(d.tokens for d in good)
    errors = Counter(d.error.split(":")[0] if d.error else "" for d in done if d.error)
    return {
        "tasks_completed": len(good),
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
        "tasks_per_s": round(len(good) / seconds, 1) if seconds > 0 else None,
        "ttft_ms_p50": ms(pct(ttfts, 0.5)),
        "ttft_ms_p95": ms(pct(ttfts, 0.95)),
        "queue_wait_ms_p50": pct([float(w) for w in waits], 0.5),
        "errors": sum(errors.values()),
        "errors_by_kind": dict(errors),
        "error_samples": sorted({d.error for d in done if d.error})[:5],
        "errors_after_s": sorted(round(d.ended - d.submitted, 2) for d in done if d.error)[:50],
        "refused_429": sum(d.refused for d in done),
        "tasks_refused_at_least_once": sum(d.refused > 0 for d in done),
        "refusal_samples": sorted({d.refusal for d in done if d.refusal})[:3],
    }


# --- orchestra instances -----------------------------------------------------------------


class Instance(NamedTuple):
    name: str
    base: str
    pid: int
    log: Path
    replicas: int


def start_orchestra(running: Servers, tmp: Path, name: str, text: str, port: int,
                    replicas: int) -> Instance:  # fmt: skip
    (tmp / f"{name}.toml").write_text(text)
    running.start(name, [sys.executable, "-m", "orchestra", "serve", "--config",
                         str(tmp / f"{name}.toml")])  # fmt: skip
    return Instance(name, f"http://127.0.0.1:{port}", running.procs[name].pid,
                    tmp / f"{name}.log", replicas)  # fmt: skip


def replicas_of(inst: Instance) -> list[dict[str, Any]]:
    sets = httpx.get(f"{inst.base}/v1/replicasets", timeout=30).json()["replicasets"]
    return [r for s in sets for r in s["replicas"]]


def wait_replicas_ready(running: Servers, inst: Instance, timeout_s: float) -> list[dict[str, Any]]:
    """Poll ``/v1/replicasets`` until ``inst.replicas`` replicas are all ``ready``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        proc = running.procs[inst.name]
        if proc.poll() is not None:
            raise RuntimeError(f"{inst.name} exited with {proc.returncode}:\n"
                               f"{running.log_tail(inst.name)}")  # fmt: skip
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            found = replicas_of(inst)
            last = [r.get("state") for r in found]
            if len(found) == inst.replicas and all(r.get("state") == "ready" for r in found):
                return found
        time.sleep(0.1)
    raise RuntimeError(f"{inst.name}: replicas not all ready after {timeout_s} s ({last}):\n"
                       f"{running.log_tail(inst.name)}")  # fmt: skip


def log_warnings(path: Path) -> list[str]:
    """Orchestra's warning and error lines (logger: message), in order."""
    found = []
    with contextlib.suppress(OSError):
        for raw in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("level") in ("warning", "error",
                                                                    "critical"):  # fmt: skip
                found.append(f"{record.get('logger')}: {record.get('msg')}"[:300])
    return found


def head(port: int, engine_port: int, data_dir: Path, log_level: str, capacity: int) -> str:
    return (
        f'bind_addr = "127.0.0.1:{port}"\ndata_dir = {json.dumps(str(data_dir))}\n'
        f'[log]\nlevel = "{log_level}"\n'
        f"[admission]\nqueue_capacity = {capacity}\nbatch_queue_capacity = {capacity}\n"
        f'[adapter]\nendpoint = "http://127.0.0.1:{engine_port}"\n'
    )


# --- part A ------------------------------------------------------------------------------


def a_config(args: argparse.Namespace, name: str, port: int, engine_port: int, tmp: Path,
             binary: Path, model: Path) -> str:  # fmt: skip
    shape = A_SHAPE[name]
    return head(port, engine_port, tmp / f"data-{name}", args.log_level, 64) + (
        "[placement]\nmemory_budget_mb = 8192\n"
        f"[models.smol]\npath = {json.dumps(str(model))}\nbinary = {json.dumps(str(binary))}\n"
        f"keep_loaded = true\nreplicas = {shape['replicas']}\nthreads = {args.threads}\n"
        f"parallel = {shape['parallel']}\nctx_size = {A_CTX_PER_SLOT * shape['parallel']}\n"
    )


def engine_threads(pid: int) -> int | None:
    """The ``-t`` value in a llama-server's command line."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return None
    for flag in ("-t", "--threads"):
        if flag in argv and argv.index(flag) + 1 < len(argv):
            with contextlib.suppress(ValueError):
                return int(argv[argv.index(flag) + 1])
    return None


async def a_round(inst: Instance, engines: list[int], per_client: int) -> dict[str, Any]:
    body = {
        "model_ref": "smol", "prompt": A_PROMPT, "max_tokens": A_TOKENS, "temperature": 0,
        "seed": A_SEED, "determinism": "strict",
    }  # fmt: skip
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=inst.base, limits=limits,
                                 timeout=httpx.Timeout(300, connect=10)) as client:  # fmt: skip
        done: list[Done] = []

        async def one_client() -> None:
            for _ in range(per_client):
                done.append(await run_task(client, body))

        orch0, eng0 = cpu_s(inst.pid), [cpu_s(p) for p in engines]
        began = now()
        async with trio.open_nursery() as nursery:
            for _ in range(A_CLIENTS):
                nursery.start_soon(one_client)
        seconds = now() - began
        orch1, eng1 = cpu_s(inst.pid), [cpu_s(p) for p in engines]
    failed = [d.error for d in done if d.error]
    if failed:
        raise RuntimeError(f"part A, {inst.name}: {len(failed)} task(s) failed: {failed[:3]}")
    figures = task_figures(done, seconds)
    deltas = [cpu_delta(a, b) for a, b in zip(eng0, eng1, strict=True)]
    figures["orchestra_cpu_s"] = cpu_delta(orch0, orch1)
    figures["engines_cpu_s"] = round(sum(d for d in deltas if d is not None), 3)
    figures["engines_cpu_cores"] = round(figures["engines_cpu_s"] / seconds, 2)
    figures["tokens_per_task"] = sorted({d.tokens for d in done})
    return figures


def part_a(args: argparse.Namespace, running: Servers, tmp: Path, anomalies: list[str],
           engine_pids: set[int]) -> dict[str, Any]:  # fmt: skip
    binary, model = resolve_engine(args)
    up: dict[str, Instance] = {}
    configs: dict[str, str] = {}
    for name in A_CONFIGS:
        port = free_ports(1 + A_SHAPE[name]["replicas"])  # orchestra, then its engines
        configs[name] = a_config(args, name, port, port + 1, tmp, binary, model)
        up[name] = start_orchestra(running, tmp, f"a-{name}", configs[name], port,
                                   A_SHAPE[name]["replicas"])  # fmt: skip
    engines: dict[str, list[int]] = {}
    threads: dict[str, list[int | None]] = {}
    for name, inst in up.items():
        found = wait_replicas_ready(running, inst, READY_TIMEOUT_S)
        engines[name] = [int(r["pid"]) for r in found if r.get("pid")]
        engine_pids.update(engines[name])
        threads[name] = [engine_threads(p) for p in engines[name]]
        print(f"part A {name}: replicas ready, engine pids {engines[name]}, "
              f"threads {threads[name]}")  # fmt: skip
    expected = {"one": [args.threads], "two": [max(1, args.threads // 2)] * 2}
    for name in A_CONFIGS:
        if threads[name] != expected[name]:
            anomalies.append(f"part A {name}: engine threads {threads[name]}, "
                             f"expected {expected[name]}")  # fmt: skip
    for name in A_CONFIGS:  # warm-up, not counted
        trio.run(a_round, up[name], engines[name], 1)
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        record: dict[str, Any] = {"round": r, "order": rotate(list(A_CONFIGS), r)}
        for name in record["order"]:
            record[name] = trio.run(a_round, up[name], engines[name], args.per_client)
        rounds.append(record)
        print(f"part A round {r}: " + ", ".join(
            f"{n} {record[n]['tokens_per_s']} tok/s, TTFT p50 {record[n]['ttft_ms_p50']} ms"
            for n in A_CONFIGS))  # fmt: skip
    short = {n: x[n]["tokens_per_task"] for x in rounds for n in A_CONFIGS
             if x[n]["tokens_per_task"] != [A_TOKENS]}  # fmt: skip
    if short:
        anomalies.append(f"part A: tasks with other than {A_TOKENS} tokens: {short}")
    final = {name: [r.get("slo") for r in replicas_of(inst)] for name, inst in up.items()}
    for inst in up.values():
        stop_instance(running, inst, anomalies)
    summary: dict[str, Any] = {}
    for name in A_CONFIGS:
        summary[name] = {
            "tokens_per_s_median": median([x[name]["tokens_per_s"] for x in rounds]),
            "ttft_ms_p50_median": median([x[name]["ttft_ms_p50"] for x in rounds]),
            "ttft_ms_p95_median": median([x[name]["ttft_ms_p95"] for x in rounds]),
            "orchestra_cpu_s_median": median([x[name]["orchestra_cpu_s"] for x in rounds]),
            "engines_cpu_cores_median": median([x[name]["engines_cpu_cores"] for x in rounds]),
            "tokens_per_s_per_round": [x[name]["tokens_per_s"] for x in rounds],
        }
    summary["two_over_one_tokens_per_s"] = ratio(
        summary["two"]["tokens_per_s_median"], summary["one"]["tokens_per_s_median"]
    )
    summary["two_over_one_ttft_p50"] = ratio(
        summary["two"]["ttft_ms_p50_median"], summary["one"]["ttft_ms_p50_median"]
    )
    summary["two_over_one_tokens_per_s_per_round"] = [
        ratio(x["two"]["tokens_per_s"], x["one"]["tokens_per_s"]) for x in rounds
    ]
    return {
        "summary": summary,
        "rounds": rounds,
        "configs": configs,
        "engine_threads": threads,
        "replica_slo_at_the_end": final,
        "engine": {
            "binary": str(binary),
            "version": engine_version(binary),
            "model": str(model),
            "model_bytes": model.stat().st_size,
        },
    }


def resolve_engine(args: argparse.Namespace) -> tuple[Path, Path]:
    if args.binary:
        binary = Path(args.binary)
    else:
        installed = engine_cache.installed_engine("cpu")
        if installed is None:
            sys.exit("no cached llama-server: run .venv/bin/orchestra engine install")
        binary = installed.binary
    model = Path(args.model) if args.model else engine_cache.installed_model()
    if model is None:
        sys.exit("no cached model (SmolLM2): run .venv/bin/orchestra engine install")
    return binary, model


def stop_instance(running: Servers, inst: Instance, anomalies: list[str]) -> None:
    """SIGTERM its process group (orchestra stops its engines), SIGKILL after 60 s."""
    proc = running.procs.pop(inst.name, None)
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        anomalies.append(f"{inst.name}: did not exit within 60 s of SIGTERM: SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        code = proc.wait()
    if code != 0:
        anomalies.append(f"{inst.name}: orchestra exited with {code} after SIGTERM")


# --- part B ------------------------------------------------------------------------------


def b_config(args: argparse.Namespace, name: str, port: int, tmp: Path, urls: list[str],
             capacity: int) -> str:  # fmt: skip
    return head(port, port + 1, tmp / f"data-{name}", args.log_level, capacity) + (
        f"[models.fleet]\nendpoints = {json.dumps(urls)}\nkeep_loaded = true\n"
    )


def wait_line(running: Servers, name: str, prefix: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    log = running.tmp / f"{name}.log"
    while time.monotonic() < deadline:
        proc = running.procs[name]
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{running.log_tail(name)}")
        with contextlib.suppress(OSError):
            if any(ln.startswith(prefix) for ln in log.read_text().splitlines()):
                return
        time.sleep(0.05)
    raise RuntimeError(f"{name}: no {prefix!r} line after {timeout_s} s:\n"
                       f"{running.log_tail(name)}")  # fmt: skip


async def b_cell(inst: Instance, fleet_pid: int, clients: int, duration: float,
                 ctx: ssl.SSLContext) -> dict[str, Any]:  # fmt: skip
    body = {"model_ref": "fleet", "prompt": B_PROMPT, "max_tokens": B_TOKENS,
            "temperature": 0, "seed": A_SEED}  # fmt: skip
    pools = clients_for(inst.base, clients, ctx)
    depths: dict[str, list[int]] = {"warmup": [], "measured": []}
    phase = "warmup"

    async def sample_depth() -> None:  # what orchestra says waits, every DEPTH_EVERY_S
        async with httpx.AsyncClient(base_url=inst.base, timeout=30) as probe:
            while True:
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    health = (await probe.get("/v1/pools/fleet/health")).json()
                    depths[phase].append(int(health["queue_depth"]))
                await trio.sleep(DEPTH_EVERY_S)

    warm: list[Done] = []
    done: list[Done] = []
    deadline = 0.0

    async def warm_one(k: int) -> None:
        warm.append(await run_task(pools[k // CLIENTS_PER_HTTPX], body))

    async def loop(k: int) -> None:
        client = pools[k // CLIENTS_PER_HTTPX]
        while now() < deadline:
            done.append(await run_task(client, body))
            if done[-1].error is not None and done[-1].first_token is None:
                await trio.sleep(0.05)  # a failing path: no hot loop

    me = os.getpid()
    drops0 = listen_drops()
    try:
        async with trio.open_nursery() as outer:
            outer.start_soon(sample_depth)
            warm_began = now()
            async with trio.open_nursery() as nursery:
                for k in range(clients):
                    nursery.start_soon(warm_one, k)
            warm_s = now() - warm_began
            phase = "measured"
            cpu0 = (cpu_s(inst.pid), cpu_s(fleet_pid), cpu_s(me))
            began = now()
            deadline = began + duration
            async with trio.open_nursery() as nursery:
                for k in range(clients):
                    nursery.start_soon(loop, k)
            seconds = now() - began
            cpu1 = (cpu_s(inst.pid), cpu_s(fleet_pid), cpu_s(me))
            outer.cancel_scope.cancel()
    finally:
        for pool in pools:
            await pool.aclose()
    drops1 = listen_drops()
    figures = task_figures(done, seconds)
    orch, fleet, client = (cpu_delta(a, b) for a, b in zip(cpu0, cpu1, strict=True))
    tasks, tokens = figures["tasks_completed"], figures["tokens"]
    figures.update({
        "warmup_s": round(warm_s, 3),
        "listen_overflows_in_the_cell": {k: drops1[k] - v for k, v in drops0.items()
                                         if k in drops1},
        "queue_depth_max_seen": max(depths["measured"], default=None),
        "warmup_queue_depth_max_seen": max(depths["warmup"], default=None),
        "warmup_errors": sum(d.error is not None for d in warm),
        "warmup_refused_429": sum(d.refused for d in warm),
        "warmup_error_samples": sorted({d.error for d in warm if d.error})[:5],
        "warmup_errors_after_s": sorted(
            round(d.ended - d.submitted, 2) for d in warm if d.error
        )[:50],
        "warmup_refusal_samples": sorted({d.refusal for d in warm if d.refusal})[:3],
        "orchestra_cpu_s": orch,
        "orchestra_cpu_cores": round(orch / seconds, 2) if orch is not None else None,
        "orchestra_cpu_ms_per_task": round(orch * 1000 / tasks, 3) if orch and tasks else None,
        "orchestra_cpu_ms_per_1k_tokens": round(orch * 1e6 / tokens, 3)
        if orch and tokens else None,
        "fleet_cpu_s": fleet,
        "fleet_cpu_cores": round(fleet / seconds, 2) if fleet is not None else None,
        "client_cpu_s": client,
        "client_cpu_cores": round(client / seconds, 2) if client is not None else None,
    })  # fmt: skip
    return figures


def replica_states(inst: Instance) -> dict[str, int]:
    try:
        return dict(Counter(str(r.get("state")) for r in replicas_of(inst)))
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return {f"unreadable: {type(exc).__name__}": 1}


def part_b(args: argparse.Namespace, running: Servers, tmp: Path,
           anomalies: list[str]) -> dict[str, Any]:  # fmt: skip
    grid_r, grid_c = args.replicas, args.clients
    total = sum(grid_r)
    fleet_base = free_ports(total)
    fleet_argv = [
        sys.executable, str(ROOT / "bench" / "fake_fleet.py"), "--base-port", str(fleet_base),
        "--count", str(total), "--slots", str(args.slots),
        "--token-delay-ms", str(args.token_delay_ms),
    ]  # fmt: skip
    running.start("fleet", fleet_argv)
    wait_line(running, "fleet", "ready", 120)
    fleet_pid = running.procs["fleet"].pid
    capacity = min(10_000, max(2000, 2 * max(grid_c)))
    up: dict[int, Instance] = {}
    configs: dict[int, str] = {}
    offset = 0
    for n in grid_r:
        urls = [f"http://127.0.0.1:{fleet_base + offset + i}" for i in range(n)]
        offset += n
        port = free_ports(2)  # orchestra, then adapter.endpoint (unused: nothing owned)
        configs[n] = b_config(args, f"b-{n}", port, tmp, urls, capacity)
        up[n] = start_orchestra(running, tmp, f"b-{n}", configs[n], port, n)
    for inst in up.values():
        wait_replicas_ready(running, inst, 120)
    print(f"part B: {total} fakes in pid {fleet_pid}, orchestras "
          + ", ".join(f"{n} replicas pid {i.pid}" for n, i in up.items()))  # fmt: skip
    ctx = ssl.create_default_context()
    cells = [(n, c) for n in grid_r for c in grid_c]
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds_b):
        for n, c in rotate(cells, r):
            figures = trio.run(b_cell, up[n], fleet_pid, c, args.duration, ctx)
            states = replica_states(up[n])
            if states.get("ready", 0) != n:
                anomalies.append(f"part B round {r}, {n} replicas x {c} clients: replica "
                                 f"states after the cell {states}")  # fmt: skip
            if figures["errors"] or figures["warmup_errors"]:
                anomalies.append(
                    f"part B round {r}, {n} replicas x {c} clients: "
                    f"{figures['errors']} errors, {figures['warmup_errors']} in "
                    f"the warm-up: {figures['error_samples'] + figures['warmup_error_samples']}"
                )
            overflows = figures["listen_overflows_in_the_cell"].get("ListenOverflows", 0)
            if overflows:
                anomalies.append(
                    f"part B round {r}, {n} replicas x {c} clients: the machine's "
                    f"TCP accept queues overflowed {overflows} times (a listen "
                    "backlog too short for the clients' connection burst)"
                )
            rounds.append({"round": r, "replicas": n, "clients": c,
                           "replica_states_after": states, **figures})  # fmt: skip
            print(f"part B round {r}: {n:>3} replicas x {c:>4} clients: "
                  f"{figures['tasks_completed']} tasks, {figures['tokens_per_s']} tok/s, "
                  f"orchestra {figures['orchestra_cpu_ms_per_task']} ms CPU/task "
                  f"({figures['orchestra_cpu_cores']} cores), fakes "
                  f"{figures['fleet_cpu_cores']} cores, client {figures['client_cpu_cores']} "
                  f"cores, TTFT p50 {figures['ttft_ms_p50']} ms, errors {figures['errors']}, "
                  f"429s {figures['refused_429']}")  # fmt: skip
    for inst in up.values():
        stop_instance(running, inst, anomalies)
    summary = []
    keys = ("tasks_completed", "tokens_per_s", "tasks_per_s", "ttft_ms_p50", "ttft_ms_p95",
            "queue_wait_ms_p50", "orchestra_cpu_cores", "orchestra_cpu_ms_per_task",
            "orchestra_cpu_ms_per_1k_tokens", "fleet_cpu_cores", "client_cpu_cores")  # fmt: skip
    for n, c in cells:
        rows = [x for x in rounds if x["replicas"] == n and x["clients"] == c]
        entry: dict[str, Any] = {"replicas": n, "clients": c, "rounds": len(rows)}
        entry.update({f"{k}_median": median([x[k] for x in rows]) for k in keys})
        entry["errors_total"] = sum(x["errors"] + x["warmup_errors"] for x in rows)
        entry["refused_429_total"] = sum(x["refused_429"] + x["warmup_refused_429"] for x in rows)
        entry["ceiling_tokens_per_s"] = round(n * args.slots * 1000 / args.token_delay_ms)
        seen = [x[k] for x in rows for k in ("queue_depth_max_seen", "warmup_queue_depth_max_seen")
                if x[k] is not None]  # fmt: skip
        entry["queue_depth_max_seen"] = max(seen, default=None)
        entry["listen_overflows_total"] = sum(
            x["listen_overflows_in_the_cell"].get("ListenOverflows", 0) for x in rows
        )
        summary.append(entry)
    return {
        "summary": summary,
        "rounds": rounds,
        "configs": {str(n): text for n, text in configs.items()},
        "fleet_argv": fleet_argv,
        "queue_capacity": capacity,
        "growth": growth(summary, grid_r, grid_c),
    }


def growth(summary: list[dict[str, Any]], grid_r: list[int], grid_c: list[int]) -> list[str]:
    """Sentences on how dispatch cost and TTFT move along each axis of the grid."""
    cell = {(e["replicas"], e["clients"]): e for e in summary}
    lines = []
    for key, label in (("orchestra_cpu_ms_per_task_median", "orchestra CPU ms per task"),
                       ("ttft_ms_p50_median", "submit → first token p50, ms"),
                       ("tokens_per_s_median", "tokens/s")):  # fmt: skip
        if len(grid_r) > 1:
            per = [f"{c} clients: " + " → ".join(str(cell[(n, c)][key]) for n in grid_r)
                   for c in grid_c]  # fmt: skip
            lines.append(f"{label}, replicas {' → '.join(map(str, grid_r))}: " + "; ".join(per))
        if len(grid_c) > 1:
            per = [f"{n} replicas: " + " → ".join(str(cell[(n, c)][key]) for c in grid_c)
                   for n in grid_r]  # fmt: skip
            lines.append(f"{label}, clients {' → '.join(map(str, grid_c))}: " + "; ".join(per))
    return lines


# --- main --------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run to try it out")
    parser.add_argument("--skip-a", action="store_true", help="no real-engine part")
    parser.add_argument("--skip-b", action="store_true", help="no simulated-scale part")
    parser.add_argument("--rounds", type=int, help="part A rounds per configuration (4)")
    parser.add_argument("--per-client", type=int, help="part A tasks per client per round (4)")
    parser.add_argument("--threads", type=int, default=2, help="part A threads per model")
    parser.add_argument("--replicas", type=int_list, help="part B grid (1,4,16,64)")
    parser.add_argument("--clients", type=int_list, help="part B grid (10,100,1000)")
    parser.add_argument("--duration", type=float, help="part B seconds per cell (10)")
    parser.add_argument("--rounds-b", type=int, help="part B rounds over the grid (3)")
    parser.add_argument("--slots", type=int, default=8, help="part B slots per fake")
    parser.add_argument("--token-delay-ms", type=float, default=2.0, help="part B per token")
    parser.add_argument("--log-level", default="info", help="orchestra's [log] level")
    parser.add_argument("--binary", default="", help="llama-server (default: the cached one)")
    parser.add_argument("--model", default="", help="GGUF model (default: the cached SmolLM2)")
    parser.add_argument("--out", default=str(OUT), help="output prefix (.json and .md)")
    parser.add_argument("--keep-logs", default="", help="copy the processes' logs here")
    args = parser.parse_args()
    quick = args.quick
    defaults = {
        "rounds": 1 if quick else 4,
        "per_client": 1 if quick else 4,
        "replicas": [1, 4] if quick else [1, 4, 16, 64],
        "clients": [10, 50] if quick else [10, 100, 1000],
        "duration": 2.0 if quick else 10.0,
        "rounds_b": 1 if quick else 3,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if sum(args.replicas) > 1000:
        parser.error("--replicas: at most 1000 fakes in all")
    return args


def main() -> None:
    args = parse_args()
    nofile = raise_nofile()
    anomalies: list[str] = []
    engine_pids: set[int] = set()
    results: dict[str, Any] = {}
    warnings: dict[str, list[str]] = {}
    began = now()
    load_before = load()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        try:
            with servers(tmp) as running:
                if not args.skip_a:
                    results["part_a"] = part_a(args, running, tmp, anomalies, engine_pids)
                if not args.skip_b:
                    results["part_b"] = part_b(args, running, tmp, anomalies)
        finally:
            for log in sorted(tmp.glob("[ab]-*.log")):
                warnings[log.stem] = log_warnings(log)
            if args.keep_logs:
                Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
                for log in tmp.glob("*.log"):
                    shutil.copy(log, Path(args.keep_logs) / log.name)
            for pid in sorted(p for p in engine_pids if engine_alive(p)):
                anomalies.append(f"llama-server pid {pid} still ran after its orchestra "
                                 "stopped: SIGKILL")  # fmt: skip
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    load_after = load()
    results["anomalies"] = anomalies
    results["orchestra_log_warnings"] = warnings
    results["setup"] = {
        "command": " ".join([".venv/bin/python", "bench/replicas.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "wall_s": round(now() - began, 1),
        "args": {k: v for k, v in vars(args).items() if k not in ("out", "keep_logs")},
        "rlimit_nofile": nofile,
        "machine": {
            "cores": os.cpu_count(),
            "cpu": cpu_model(),
            "arch": platform.machine(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_before": load_before,
            "load_after": load_after,
        },
        "versions": {
            "orchestra": orchestra_revision(),
            "httpx": httpx.__version__,
            "trio": trio.__version__,
        },
        "processes": "each orchestra, the fakes (one process for all) and this load client "
        "in their own processes; in part A the engines are orchestra's children",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results, args, out.with_suffix(".json").name))
    print(out.with_suffix(".md").read_text())


def cell(value: object) -> str:
    return "-" if value is None else str(value)


def markdown(results: dict[str, Any], args: argparse.Namespace, json_name: str) -> str:
    setup = results["setup"]
    m = setup["machine"]
    text = (
        "# Replicas of one model: two on a CPU box? and dispatch cost at scale\n\n"
        f"orchestra {setup['versions']['orchestra']}; {m['cores']} cores ({m['cpu']}), "
        f"{m['platform']}, Python {m['python']}; {setup['date']}; load average "
        f"{m['load_before']['load_average']} before, {m['load_after']['load_average']} "
        f"after; the run took {setup['wall_s']} s; RLIMIT_NOFILE {setup['rlimit_nofile']}.\n"
        f"Command: `{setup['command']}`\n\n"
        "Orchestra (`orchestra serve`, logging at "
        f"`{args.log_level}` to a file), the fakes and this load client each in their own "
        "process; CPU from `/proc/PID/stat` (utime + stime) around each measured window.\n"
    )
    if "part_a" in results:
        a = results["part_a"]
        s = a["summary"]
        text += (
            "\n## A. Real engine: one replica with 2 slots vs two replicas with 1 slot each\n\n"
            f"llama-server {a['engine']['version']}, model `{Path(a['engine']['model']).name}`"
            f" ({a['engine']['model_bytes']} bytes). `one`: `replicas = 1`, `threads = "
            f"{args.threads}`, `parallel = 2`; `two`: `replicas = 2`, `threads = "
            f"{args.threads}` (split: engine `-t` seen {a['engine_threads']['two']}), "
            f"`parallel = 1`; both `keep_loaded`, {A_CTX_PER_SLOT} context tokens per slot. "
            "Both orchestras up for the whole part, one under load at a time. "
            f"{A_CLIENTS} clients x {args.per_client} tasks per round, every task the same "
            f"prompt, `max_tokens` {A_TOKENS}, temperature 0, seed {A_SEED}, `determinism: "
            '"strict"` (prompt cache off: each task evaluates its prompt), submit + stream '
            f"in one request; {args.rounds} rounds alternating the configurations (and "
            "which goes first), after one warm-up round each that is not counted.\n\n"
            "| median over rounds | one | two | two / one |\n|---|---|---|---|\n"
            f"| tokens/s | {cell(s['one']['tokens_per_s_median'])} | "
            f"{cell(s['two']['tokens_per_s_median'])} | "
            f"{cell(s['two_over_one_tokens_per_s'])} |\n"
            f"| TTFT p50, ms | {cell(s['one']['ttft_ms_p50_median'])} | "
            f"{cell(s['two']['ttft_ms_p50_median'])} | {cell(s['two_over_one_ttft_p50'])} |\n"
            f"| TTFT p95, ms | {cell(s['one']['ttft_ms_p95_median'])} | "
            f"{cell(s['two']['ttft_ms_p95_median'])} | |\n"
            f"| engines' CPU, cores | {cell(s['one']['engines_cpu_cores_median'])} | "
            f"{cell(s['two']['engines_cpu_cores_median'])} | |\n"
            f"| orchestra's CPU per round, s | {cell(s['one']['orchestra_cpu_s_median'])} | "
            f"{cell(s['two']['orchestra_cpu_s_median'])} | |\n"
            f"| tokens/s per round | {', '.join(map(str, s['one']['tokens_per_s_per_round']))}"
            f" | {', '.join(map(str, s['two']['tokens_per_s_per_round']))} | "
            f"{', '.join(map(str, s['two_over_one_tokens_per_s_per_round']))} |\n"
        )
    if "part_b" in results:
        b = results["part_b"]
        text += (
            "\n## B. Simulated scale: attached fake replicas, many clients\n\n"
            f"Each fake: `FakeLlamaServer(total_slots={args.slots}, "
            f"token_delay_s={args.token_delay_ms / 1000:g})`, all {sum(args.replicas)} in one "
            "process (one core at most); one orchestra per replica count, `[models.fleet]` "
            "with `endpoints` = that many fakes, `keep_loaded`, `queue_capacity` = "
            f"`batch_queue_capacity` = {b['queue_capacity']}; all up for the whole part, one "
            f"cell at a time. Every task `max_tokens` {B_TOKENS}, streamed in one request. "
            f"Per cell: one uncounted task per client (opens its connection), then "
            f"{args.duration:g} s of tasks back to back; the window ends when the last task "
            f"in flight ended. {args.rounds_b} round(s) over the grid, cell order rotated per "
            "round; medians over rounds; errors and 429s summed over rounds (warm-up "
            f"included). Up to {CLIENTS_PER_HTTPX} clients share one httpx.AsyncClient.\n\n"
            "| replicas | clients | tasks | tokens/s | fakes' ceiling tok/s | orchestra CPU "
            "ms/task | orchestra CPU ms/1k tokens | orchestra cores | fakes' cores | client "
            "cores | submit→first token p50 / p95, ms | queue wait p50, ms | queue_depth max "
            "seen | errors | 429s | accept-queue overflows |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        )
        for e in b["summary"]:
            text += (
                f"| {e['replicas']} | {e['clients']} | {cell(e['tasks_completed_median'])} | "
                f"{cell(e['tokens_per_s_median'])} | {e['ceiling_tokens_per_s']} | "
                f"{cell(e['orchestra_cpu_ms_per_task_median'])} | "
                f"{cell(e['orchestra_cpu_ms_per_1k_tokens_median'])} | "
                f"{cell(e['orchestra_cpu_cores_median'])} | {cell(e['fleet_cpu_cores_median'])}"
                f" | {cell(e['client_cpu_cores_median'])} | {cell(e['ttft_ms_p50_median'])} / "
                f"{cell(e['ttft_ms_p95_median'])} | {cell(e['queue_wait_ms_p50_median'])} | "
                f"{cell(e['queue_depth_max_seen'])} | {e['errors_total']} | "
                f"{e['refused_429_total']} | {e['listen_overflows_total']} |\n"
            )
        text += (
            "\nThe fakes' ceiling is nominal (replicas x slots / token delay); the fakes' "
            "process is one Trio run on one core, so when its cores column nears 1.0 the "
            "fakes, not orchestra, bound the tokens/s; likewise this client's column. "
            '"submit → first token" counts from the first POST, 429 back-offs included.\n\n'
            "How they grow:\n\n"
            + ("".join(f"- {line}\n" for line in b["growth"]) or "- one cell: nothing to compare\n")
        )
    anomalies = "".join(f"- {x}\n" for x in results["anomalies"]) or "- none\n"
    warned: Counter[str] = Counter()
    for lines in results["orchestra_log_warnings"].values():
        warned.update(lines)
    text += (
        "\n## What looked wrong while measuring\n\n" + anomalies
        + "\nWarning and error lines in orchestra's logs (all instances; count x line):\n\n"
        + ("".join(f"- {n} x `{line}`\n" for line, n in warned.most_common(30)) or "- none\n")
        + f"\nRaw per-round figures and the configurations are in `{json_name}` beside this "
        "file.\n"
    )  # fmt: skip
    return text


if __name__ == "__main__":
    main()
