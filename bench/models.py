"""Several models on the real engine: cold starts, warm TTFT, and what routing costs.

Orchestra (``orchestra serve``, each instance its own process, logging JSON Lines at
``info`` to a file) owns its llama-server processes (the cached CPU build; every model with
``threads = 2``, ``ctx_size = 2048``, one slot); this load client (httpx on Trio) is another
process. Every task is the same short prompt, streamed (``POST /v1/tasks`` with ``Accept:
text/event-stream``), ``max_tokens`` 16, temperature 0, seed 7 (so orchestra's default
``strict`` determinism: the engine's prompt cache off). Two phases, one run:

1. ``[models.smollm2]`` and ``[models.gemma3]`` (SmolLM2-135M Q4_1, Gemma-3-270M Q4_K_M)
   in one instance, ``[placement] memory_budget_mb`` room for both, ``idle_unload_s = 0``.
   First each model is loaded once by a task (the first load after the service started,
   reported apart: it hashes the file for its digest). Then:

   - cold start: rounds alternating the two models (which goes first alternates too); each
     unloads the model (``POST /v1/models/{id}/unload``, which returns once its process
     has exited; the other model stays loaded and idle) and then sends a task for it. The
     time from sending the task to its first token event is split by the moments, all on
     this process's clock: the task sent; orchestra's log lines ``loading model ID``,
     ``llama-server started (pid N)``, ``engine ready`` and ``model ID loaded in``
     (their ``ts``, wall clock to the millisecond); and two moments only an outside
     observer sees, from a thread of this client that watches the model's engine port
     (adapter.endpoint's port + the model's index): the first TCP connect that is not
     refused (tried every 1 ms; llama-server binds before it loads) and the first ``GET
     /health`` that answers 200 (every 10 ms; 503 while it loads). So: (a) process start
     = spawn logged → port answers; (b) model load = port answers → /health 200; orchestra
     sees it later by its own probe (``PROBE_STARTING_S``) → "ready lag"; (c) first token = model
     loaded (logged) → first token event. ``load_ms`` of ``GET /v1/models`` and
     llama-server's own "model loaded" time (its log's clock, from its start) are kept
     beside. The page cache holds both files throughout (nothing drops it): a cold start
     here is a new process, not a cold disk.
   - warm TTFT: both loaded; rounds alternating the two models; TTFT = task sent → first
     token event; median per model.

2. What routing costs when nothing loads: two more instances side by side, each with its
   own llama-server on SmolLM2 with the same flags: ``[models.smollm2]`` alone
   (``keep_loaded``) and the single-model configuration (``[replica]``, pool
   ``default``). After a warm-up, rounds send the task to each (and, for context,
   straight to each one's llama-server ``/completion`` with the body orchestra sends),
   rotating which goes first; the added TTFT of ``[models]`` is the median of the paired
   differences models - replica, and the ratio of the median TTFTs.

A task that fails stops the run (orchestra's logs are then kept in /tmp). What looked wrong
but did not stop it (a missing ``load_ms`` or log line, a residency other than expected, an
engine port still answering after an unload, an engine left running after orchestra
stopped) is listed under ``anomalies``.

Usage: .venv/bin/python bench/models.py [--cold-rounds 15] [--warm-rounds 40]
           [--routing-rounds 150] [--threads 2] [--skip-routing] [--skip-direct]
           [--no-probe] [--binary PATH] [--out PREFIX]
Without --binary it uses the llama-server ``orchestra engine install`` cached; the models
are the cached SmolLM2 and Gemma-3 files.
Writes proof-bundle/bench/issue16-models.json and issue16-models.md (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from openai_face import (  # the sibling bench module (run as a script)
    Servers,
    cpu_model,
    engine_version,
    load,
    orchestra_revision,
    rotate,
    servers,
)

from orchestra.actors.owned_supervisor import PROBE_STARTING_S
from orchestra.engine import cache as engine_cache

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "proof-bundle" / "bench" / "issue16-models"
MODELS = ("smollm2", "gemma3")
PROMPT = "Write one short sentence about the sea."
TOKENS = 16
SEED = 7
WARMUP = 3
CTX_SIZE = 2048
BUDGET_MB = 8192
SSE = {"Accept": "text/event-stream"}
CLOSE = {"Connection": "close"}
CONNECT_EVERY_S = 0.001
HEALTH_EVERY_S = 0.01
LOAD_TIMEOUT_S = 300.0
WALL0 = time.time() - time.perf_counter()
"""Wall clock minus this process's perf counter: maps orchestra's log ``ts`` onto it."""
ROUTING_PATHS = ("models", "replica", "direct_models", "direct_replica")
ENGINE_CLOCK = re.compile(r"^llama-server \w+: (\d+)\.(\d+)\.(\d+)\.(\d+) [DIWE] ")
"""llama-server's line as orchestra logs it, with the engine's own stamp."""
ENGINE_STAMP = re.compile(r": \d+\.\d+\.\d+\.\d+ ")


def now() -> float:
    return time.perf_counter()


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive loopback ports free now."""
    while True:
        base = random.randrange(20_000, 60_000)
        taken: list[socket.socket] = []
        try:
            for offset in range(count):
                s = socket.socket()
                taken.append(s)
                s.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for s in taken:
                s.close()


def engine_alive(pid: int) -> bool:
    """Process ``pid`` exists and is a llama-server (a reused pid is not ours)."""
    try:
        return b"llama-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def answers(port: int) -> bool:
    """Something accepts TCP connections on the loopback ``port``."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


# --- the tasks ---------------------------------------------------------------------------


class Streamed(NamedTuple):
    """One task's stream, its moments on this process's perf clock."""

    sent: float
    started: float
    """The ``started`` event arrived (orchestra dispatched it to the engine)."""
    first_token: float
    ended: float
    queue_wait_ms: int | None
    tokens_out: int
    tokens_in: int
    text: str


async def task(client: httpx.AsyncClient, model: str | None) -> Streamed:
    """One task through orchestra, submitted and streamed in one request."""
    body: dict[str, Any] = {
        "prompt": PROMPT, "max_tokens": TOKENS, "temperature": 0, "seed": SEED,
    }  # fmt: skip
    if model is not None:
        body["model_ref"] = model
    started = first = 0.0
    event, end, wait, text = "", None, None, []
    sent = now()
    async with client.stream("POST", "/v1/tasks", json=body, headers=SSE) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"POST /v1/tasks ({model}): {response.status_code} {response.text}")
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                if event == "token":
                    first = first or now()
                    text.append(json.loads(line[6:])["t"])
                elif event == "started":
                    started = now()
                    wait = json.loads(line[6:]).get("queue_wait_ms")
                elif event == "end":
                    end = json.loads(line[6:])
                elif event == "error":
                    raise RuntimeError(f"task ({model}) failed: {line[6:]}")
    ended = now()
    if end is None or not first:
        raise RuntimeError(f"task ({model}): no end event or no token")
    return Streamed(
        sent, started, first, ended, wait, int(end.get("tokens_out", -1)),
        int(end.get("tokens_in", -1)), "".join(text),
    )  # fmt: skip


async def direct(client: httpx.AsyncClient) -> Streamed:
    """The same generation straight to llama-server's ``/completion``, with the body
    orchestra sends it (``n_predict``, ``cache_prompt: false``, the sampling fields)."""
    body = {
        "prompt": PROMPT, "n_predict": TOKENS, "cache_prompt": False, "seed": SEED,
        "temperature": 0, "stream": True,
    }  # fmt: skip
    first, tokens, tokens_in, text = 0.0, -1, -1, []
    sent = now()
    async with client.stream("POST", "/completion", json=body, headers=CLOSE) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"direct: {response.status_code} {response.text}")
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            frame = json.loads(line[6:])
            if frame.get("content"):
                first = first or now()
                text.append(frame["content"])
            if frame.get("stop"):
                tokens = int(frame.get("tokens_predicted", -1))
                tokens_in = int(frame.get("tokens_evaluated", -1))
    if tokens < 0 or not first:
        raise RuntimeError("direct: no stop frame or no content")
    ended = now()
    return Streamed(sent, 0.0, first, ended, None, tokens, tokens_in, "".join(text))


def figures(run: Streamed) -> dict[str, Any]:
    return {
        "ttft_ms": ms(run.first_token - run.sent),
        "started_event_ms": ms(run.started - run.sent) if run.started else None,
        "total_ms": ms(run.ended - run.sent),
        "queue_wait_ms": run.queue_wait_ms,
        "tokens_out": run.tokens_out,
        "tokens_in": run.tokens_in,
    }


# --- watching an engine port from outside ------------------------------------------------


class Probe:
    """A thread that watches one engine port: the first connect not refused, then the
    first ``GET /health`` that answers 200 (each moment as first seen: at most
    ``CONNECT_EVERY_S`` / ``HEALTH_EVERY_S`` late, plus one round trip)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.port_at: float | None = None
        self.health_at: float | None = None
        self.refused = 0
        self.not_ready = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _health(self) -> int:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            head = s.recv(64)
        return int(head.split()[1]) if head.startswith(b"HTTP/") else 0

    def _run(self) -> None:
        deadline = now() + LOAD_TIMEOUT_S
        while not self._stop.is_set() and now() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                self.refused += 1
                time.sleep(CONNECT_EVERY_S)
                continue
            self.port_at = now()
            break
        while self.port_at is not None and not self._stop.is_set() and now() < deadline:
            with contextlib.suppress(OSError, ValueError, IndexError):
                if self._health() == 200:
                    self.health_at = now()
                    return
            self.not_ready += 1
            time.sleep(HEALTH_EVERY_S)


class NoProbe(Probe):
    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


# --- orchestra's log ---------------------------------------------------------------------


class Line(NamedTuple):
    at: float
    """On this process's perf clock."""
    logger: str
    msg: str


def log_lines(path: Path, since: float) -> list[Line]:
    """Orchestra's JSON log lines stamped at or after ``since`` (its ``ts`` is truncated to
    the millisecond, so a line of the same moment may show up to 1 ms early)."""
    found = []
    for raw in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(raw)
            stamp = datetime.datetime.fromisoformat(record["ts"].replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError):
            continue
        at = stamp.timestamp() - WALL0
        if at >= since - 0.002:
            found.append(Line(at, str(record.get("logger", "")), str(record.get("msg", ""))))
    return found


def first_line(lines: list[Line], pattern: str, after: float | None = None) -> Line | None:
    compiled = re.compile(pattern)
    return next(
        (ln for ln in lines if compiled.search(ln.msg) and (after is None or ln.at >= after)),
        None,
    )


def number(pattern: str, text: str) -> float | None:
    """The number ``pattern``'s first group finds in ``text``."""
    found = re.search(pattern, text)
    return None if found is None else float(found.group(1))


def engine_clock_s(msg: str) -> float | None:
    """llama-server's own stamp on its line (minutes.seconds.ms.us since it started), in
    seconds."""
    found = ENGINE_CLOCK.match(msg)
    if found is None:
        return None
    minutes, seconds, millis, micros = (int(x) for x in found.groups())
    return minutes * 60 + seconds + millis / 1000 + micros / 1e6


# --- the phases --------------------------------------------------------------------------


class Instance(NamedTuple):
    name: str
    base: str
    engine_port: int
    """The first engine port (adapter.endpoint's); model i listens on it + i."""
    log: Path


async def models_list(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    listed = (await client.get("/v1/models")).json()
    return {entry["id"]: entry for entry in listed.get("data") or []}


class Bench:
    def __init__(self, args: argparse.Namespace, paths: dict[str, Path]) -> None:
        self.args = args
        self.paths = paths
        self.anomalies: list[str] = []
        self.pids: set[int] = set()
        self.log_warnings: dict[str, list[str]] = {}

    def note(self, text: str) -> None:
        print(f"anomaly: {text}", file=sys.stderr)
        self.anomalies.append(text)

    @contextlib.contextmanager
    def instances(
        self, running: Servers, tmp: Path, configs: dict[str, tuple[str, int, int]]
    ) -> Iterator[dict[str, Instance]]:
        """Start one orchestra per configuration (name: text, port, engine port); on the way
        out stop each with SIGTERM (it stops its engines) and read its log."""
        started = {}
        for name, (text, port, engine_port) in configs.items():
            (tmp / f"{name}.toml").write_text(text)
            running.start(name, [sys.executable, "-m", "orchestra", "serve", "--config",
                                 str(tmp / f"{name}.toml")])  # fmt: skip
            log = tmp / f"{name}.log"
            started[name] = Instance(name, f"http://127.0.0.1:{port}", engine_port, log)
        try:
            yield started
        finally:
            for name, inst in started.items():
                proc = running.procs.pop(name)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    code = proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.note(f"{name}: orchestra did not exit within 60 s of SIGTERM: SIGKILL")
                    proc.kill()
                    code = proc.wait()
                self.stopped(inst, code)

    def stopped(self, inst: Instance, code: int) -> None:
        """After an orchestra exited: its engines' pids, warnings and how it ended."""
        lines, warnings = [], []
        for raw in inst.log.read_text(errors="replace").splitlines():
            try:
                record = json.loads(raw)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                continue
            lines.append(str(record.get("msg", "")))
            if record.get("level") in ("warning", "error", "critical"):
                warnings.append(f"{record.get('logger')}: {record.get('msg')}"[:300])
        for msg in lines:
            if found := re.match(r"llama-server started \(pid (\d+)\)", msg):
                self.pids.add(int(found.group(1)))
        self.log_warnings[inst.name] = warnings
        if code != 0:
            self.note(f"{inst.name}: orchestra exited with {code} after SIGTERM")
        if "orchestra stopped" not in lines:
            self.note(f"{inst.name}: no 'orchestra stopped' line in its log")

    async def cold(
        self, client: httpx.AsyncClient, inst: Instance, model: str, label: str
    ) -> dict[str, Any]:
        """Send a task for the (unloaded) ``model``; its cold start, split."""
        index = MODELS.index(model)
        port = inst.engine_port + index
        if answers(port):
            self.note(f"{label} {model}: engine port {port} answers before the load")
        listed = await models_list(client)
        other = MODELS[1 - index]
        if listed[model]["residency"] != "unloaded":
            self.note(f"{label} {model}: residency {listed[model]['residency']!r} before the load")
        probe_kind = NoProbe if self.args.no_probe else Probe
        since = now()
        with probe_kind(port) as probe:
            run = await task(client, model)
        after = await models_list(client)
        lines = log_lines(inst.log, since)
        loading = first_line(lines, rf"^loading model {model} \(")
        spawn = first_line(lines, r"^llama-server started \(pid \d+\)")
        ready = first_line(lines, r"^engine ready", spawn.at if spawn else None)
        loaded = first_line(lines, rf"^model {model} loaded in ([0-9.]+) s")
        engine_loaded = first_line(lines, r"llama_server: model loaded$")
        for name, line in (("loading model", loading), ("llama-server started", spawn),
                           ("engine ready", ready), ("model loaded", loaded)):  # fmt: skip
            if line is None:
                self.note(f"{label} {model}: no {name!r} line in orchestra's log")
        if spawn is not None:
            pid = int(number(r"pid (\d+)", spawn.msg) or 0)
            self.pids.add(pid)
            if str(self.paths[model]) not in spawn.msg:
                self.note(f"{label} {model}: the spawn line is of another model: {spawn.msg}")
        entry = after[model]
        if entry.get("residency") != "loaded" or not entry.get("loaded"):
            self.note(f"{label} {model}: residency {entry.get('residency')!r} after the task")
        if entry.get("load_ms") is None:
            self.note(f"{label} {model}: GET /v1/models has no load_ms after a load")
        if after[other]["residency"] != listed[other]["residency"]:
            self.note(f"{label} {model}: {other} went {listed[other]['residency']!r} -> "
                      f"{after[other]['residency']!r} meanwhile")  # fmt: skip
        if run.tokens_out != TOKENS:
            self.note(f"{label} {model}: {run.tokens_out} tokens, not {TOKENS}")

        def span(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else ms(b - a)

        spawn_at = spawn.at if spawn else None
        loaded_at = loaded.at if loaded else None
        engine_says = engine_clock_s(engine_loaded.msg) if engine_loaded else None
        return {
            "model": model,
            "other_model": {other: listed[other]["residency"]},
            "total_ms": ms(run.first_token - run.sent),
            "request_to_spawn_ms": span(run.sent, spawn_at),
            "process_start_ms": span(spawn_at, probe.port_at),
            "model_load_ms": span(probe.port_at, probe.health_at),
            "ready_lag_ms": span(probe.health_at, loaded_at),
            "first_token_after_loaded_ms": span(loaded_at, run.first_token),
            "spawn_to_loaded_ms": span(spawn_at, loaded_at),
            "request_to_loading_ms": span(run.sent, loading.at if loading else None),
            "loading_to_loaded_ms": span(loading.at if loading else None, loaded_at),
            "engine_ready_after_spawn_ms": span(spawn_at, ready.at if ready else None),
            "orchestra_load_ms": entry.get("load_ms"),
            "logged_loaded_in_s": number(r"in ([0-9.]+) s", loaded.msg) if loaded else None,
            "engine_self_reported_loaded_ms": ms(engine_says),
            "started_event_ms": span(run.sent, run.started or None),
            "queue_wait_ms": run.queue_wait_ms,
            "tokens_out": run.tokens_out,
            "memory_mb": entry.get("memory_mb"),
            "memory_source": entry.get("memory_source"),
            "probe": None if self.args.no_probe
            else {"refused_connects": probe.refused, "health_not_200": probe.not_ready},
        }  # fmt: skip

    async def unload(self, client: httpx.AsyncClient, inst: Instance, model: str) -> float:
        began = now()
        answer = await client.post(f"/v1/models/{model}/unload", json={})
        seconds = now() - began
        if answer.status_code != 200:
            raise RuntimeError(f"unload {model}: {answer.status_code} {answer.text}")
        if answer.json().get("residency") != "unloaded":
            self.note(f"unload {model}: answered residency {answer.json().get('residency')!r}")
        port = inst.engine_port + MODELS.index(model)
        if answers(port):
            self.note(f"unload {model}: engine port {port} still answers after the unload")
        return seconds

    async def several(self, inst: Instance) -> dict[str, Any]:
        timeout = httpx.Timeout(LOAD_TIMEOUT_S, connect=10)
        async with httpx.AsyncClient(base_url=inst.base, timeout=timeout) as client:
            first_loads = []
            for model in MODELS:  # the first load after the service started
                first_loads.append(await self.cold(client, inst, model, "first load"))
            cold: list[dict[str, Any]] = []
            unloads: list[float] = []
            for r in range(self.args.cold_rounds):
                for model in MODELS if r % 2 == 0 else MODELS[::-1]:
                    unloads.append(await self.unload(client, inst, model))
                    cold.append({"round": r, **await self.cold(client, inst, model, f"cold {r}")})
                    c = cold[-1]
                    print(f"cold {r} {model}: first token {c['total_ms']} ms (load "
                          f"{c['orchestra_load_ms']} ms)")  # fmt: skip
            warm: list[dict[str, Any]] = []
            texts: dict[str, set[str]] = {m: set() for m in MODELS}
            for r in range(self.args.warm_rounds):
                record: dict[str, Any] = {"round": r, "order": list(rotate(list(MODELS), r))}
                for model in record["order"]:
                    run = await task(client, model)
                    texts[model].add(run.text)
                    record[model] = figures(run)
                warm.append(record)
                print(f"warm {r}: " + ", ".join(f"{m} {record[m]['ttft_ms']} ms" for m in MODELS))
            for model, seen in texts.items():
                if len(seen) > 1:
                    self.note(f"warm {model}: {len(seen)} different texts for one prompt and seed")
            final = await models_list(client)
        return {
            "first_loads": first_loads,
            "cold_rounds": cold,
            "unload_ms": [ms(s) for s in unloads],
            "warm_rounds": warm,
            "warm_texts": {m: sorted(t) for m, t in texts.items()},
            "models_at_the_end": {m: final[m].get("residency") for m in MODELS},
        }

    async def routing(self, models_inst: Instance, replica_inst: Instance) -> dict[str, Any]:
        timeout = httpx.Timeout(120, connect=10)
        limits = httpx.Limits(max_keepalive_connections=0)
        names = list(ROUTING_PATHS if not self.args.skip_direct else ROUTING_PATHS[:2])
        async with contextlib.AsyncExitStack() as stack:
            clients: dict[str, httpx.AsyncClient] = {}
            for name, inst, pool in (("models", models_inst, "smollm2"),
                                     ("replica", replica_inst, "default")):  # fmt: skip
                clients[name] = await stack.enter_async_context(
                    httpx.AsyncClient(base_url=inst.base, timeout=timeout)
                )
                if f"direct_{name}" in names:
                    key = await engine_key(clients[name], pool)
                    clients[f"direct_{name}"] = await stack.enter_async_context(
                        httpx.AsyncClient(
                            base_url=f"http://127.0.0.1:{inst.engine_port}", timeout=timeout,
                            limits=limits, headers={"Authorization": f"Bearer {key}"},
                        )
                    )  # fmt: skip

            async def one(name: str) -> Streamed:
                if name.startswith("direct_"):
                    return await direct(clients[name])
                return await task(clients[name], "smollm2" if name == "models" else None)

            for i in range(WARMUP):
                for name in rotate(names, i):
                    await one(name)
            rounds: list[dict[str, Any]] = []
            texts: dict[str, set[str]] = {n: set() for n in names}
            for r in range(self.args.routing_rounds):
                record: dict[str, Any] = {"round": r, "order": rotate(names, r)}
                for name in record["order"]:
                    run = await one(name)
                    texts[name].add(run.text)
                    record[name] = figures(run)
                rounds.append(record)
                print(f"routing {r}: " + ", ".join(f"{n} {record[n]['ttft_ms']}" for n in names))
        if len(set().union(*texts.values())) > 1:
            self.note(f"routing: the paths streamed different texts: {texts}")
        return {"paths": names, "rounds": rounds}


async def engine_key(client: httpx.AsyncClient, pool: str) -> str:
    """The api key orchestra gave that pool's llama-server, read from the engine process's
    environment (as bench/engine.py does: this user may, nobody else can)."""
    sets = (await client.get("/v1/replicasets")).json()["replicasets"]
    return api_key_of(next(s for s in sets if s["pool_id"] == pool)["replicas"][0]["pid"])


def api_key_of(pid: int) -> str:
    for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if item.startswith(b"LLAMA_API_KEY="):
            return item.split(b"=", 1)[1].decode()
    return ""


# --- configurations ----------------------------------------------------------------------


def head(port: int, engine_port: int) -> str:
    return (
        f'bind_addr = "127.0.0.1:{port}"\n[log]\nlevel = "info"\n'
        f'[adapter]\nendpoint = "http://127.0.0.1:{engine_port}"\n'
    )


def engine_keys(args: argparse.Namespace) -> str:
    keys = f"threads = {args.threads}\nctx_size = {CTX_SIZE}\n"
    return keys + (f"binary = {json.dumps(args.binary)}\n" if args.binary else "")


def several_config(args: argparse.Namespace, port: int, engine_port: int,
                   paths: dict[str, Path]) -> str:  # fmt: skip
    text = head(port, engine_port) + f"[placement]\nmemory_budget_mb = {BUDGET_MB}\n"
    for model in MODELS:
        text += (f"[models.{model}]\npath = {json.dumps(str(paths[model]))}\n"
                 f"idle_unload_s = 0\n{engine_keys(args)}")  # fmt: skip
    return text


def one_model_config(args: argparse.Namespace, port: int, engine_port: int, path: Path) -> str:
    return (
        head(port, engine_port) + f"[placement]\nmemory_budget_mb = {BUDGET_MB}\n"
        f"[models.smollm2]\npath = {json.dumps(str(path))}\nkeep_loaded = true\n"
        f"idle_unload_s = 0\n{engine_keys(args)}"
    )


def replica_config(args: argparse.Namespace, port: int, engine_port: int, path: Path) -> str:
    return (
        head(port, engine_port)
        + f"[replica]\nmodel = {json.dumps(str(path))}\n"
        + (engine_keys(args))
    )


# --- summaries ---------------------------------------------------------------------------


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 1) if present else None


COLD_FIELDS = (
    "total_ms", "request_to_spawn_ms", "process_start_ms", "model_load_ms", "ready_lag_ms",
    "first_token_after_loaded_ms", "spawn_to_loaded_ms", "orchestra_load_ms",
    "engine_self_reported_loaded_ms", "request_to_loading_ms", "started_event_ms",
)  # fmt: skip


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    several = raw["several"]
    cold: dict[str, Any] = {}
    warm: dict[str, Any] = {}
    for model in MODELS:
        rows = [c for c in several["cold_rounds"] if c["model"] == model]
        cold[model] = {"rounds": len(rows)} | {
            f"{field}_median": median([c[field] for c in rows]) for field in COLD_FIELDS
        }
        cold[model]["total_ms_per_round"] = [c["total_ms"] for c in rows]
        ttfts = [w[model]["ttft_ms"] for w in several["warm_rounds"]]
        warm[model] = {
            "rounds": len(ttfts),
            "ttft_ms_median": median(ttfts),
            "ttft_ms_min": min(ttfts, default=None),
            "ttft_ms_max": max(ttfts, default=None),
            "started_event_ms_median": median(
                [w[model]["started_event_ms"] for w in several["warm_rounds"]]
            ),
            "total_ms_median": median([w[model]["total_ms"] for w in several["warm_rounds"]]),
        }
        if cold[model]["total_ms_median"] is not None and warm[model]["ttft_ms_median"]:
            cold[model]["cold_minus_warm_ttft_ms"] = round(
                cold[model]["total_ms_median"] - warm[model]["ttft_ms_median"], 1
            )
    summary: dict[str, Any] = {"cold": cold, "warm": warm}
    if "routing" in raw:
        rounds, names = raw["routing"]["rounds"], raw["routing"]["paths"]
        routing: dict[str, Any] = {"rounds": len(rounds)}
        for name in names:
            routing[f"{name}_ttft_ms_median"] = median([r[name]["ttft_ms"] for r in rounds])
        diffs = [r["models"]["ttft_ms"] - r["replica"]["ttft_ms"] for r in rounds]
        routing["models_minus_replica_ttft_ms_median_of_paired_differences"] = median(diffs)
        m, r = routing["models_ttft_ms_median"], routing["replica_ttft_ms_median"]
        routing["models_over_replica_ttft_ratio_of_medians"] = (
            round(m / r, 3) if m is not None and r else None
        )
        routing["models_over_replica_ratio_per_round"] = [
            round(x["models"]["ttft_ms"] / x["replica"]["ttft_ms"], 3) for x in rounds
        ]
        for name in ("models", "replica"):
            if f"direct_{name}" in names:
                routing[f"{name}_minus_its_direct_ttft_ms_median_of_paired_differences"] = median(
                    [x[name]["ttft_ms"] - x[f"direct_{name}"]["ttft_ms"] for x in rounds]
                )
        summary["routing"] = routing
    return summary


# --- main --------------------------------------------------------------------------------


def resolve(args: argparse.Namespace) -> tuple[Path, dict[str, Path]]:
    if args.binary:
        binary = Path(args.binary)
    else:
        installed = engine_cache.installed_engine("cpu")
        if installed is None:
            sys.exit("no cached llama-server: run .venv/bin/orchestra engine install")
        binary = installed.binary
    smol, gemma = engine_cache.installed_model(), engine_cache.installed_model_named("gemma3-270m")
    if smol is None or gemma is None:
        sys.exit("the cached SmolLM2 and Gemma-3-270M models are needed "
                 "(orchestra engine install; the gemma3-270m model)")  # fmt: skip
    return binary, {"smollm2": smol, "gemma3": gemma}


def wait_listening(running: Servers, inst: Instance) -> None:
    running.wait_ready(inst.name, f"{inst.base}/v1/models", 120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cold-rounds", type=int, default=15, help="cold starts per model")
    parser.add_argument("--warm-rounds", type=int, default=40, help="warm tasks per model")
    parser.add_argument("--routing-rounds", type=int, default=150, help="tasks per path")
    parser.add_argument("--threads", type=int, default=2, help="llama-server threads")
    parser.add_argument("--skip-routing", action="store_true", help="phase 1 only")
    parser.add_argument("--skip-direct", action="store_true", help="no direct llama-server path")
    parser.add_argument(
        "--no-probe", action="store_true", help="do not watch the engine port (less split)"
    )
    parser.add_argument("--binary", default="", help="llama-server (default: the cached one)")
    parser.add_argument("--out", default=str(OUT), help="output prefix (.json and .md)")
    args = parser.parse_args()
    binary, paths = resolve(args)
    bench = Bench(args, paths)
    raw: dict[str, Any] = {}
    configs: dict[str, str] = {}
    engine_ports: list[int] = []
    phases: dict[str, float] = {}
    began = now()
    with tempfile.TemporaryDirectory() as tmp_name, servers(Path(tmp_name)) as running:
        tmp = Path(tmp_name)
        load_before = load()
        port = free_ports(1 + len(MODELS))  # orchestra, then its engines
        engine_port = port + 1
        engine_ports += [engine_port + i for i in range(len(MODELS))]
        configs["several"] = several_config(args, port, engine_port, paths)
        with bench.instances(
            running, tmp, {"several": (configs["several"], port, engine_port)}
        ) as up:
            wait_listening(running, up["several"])
            raw["several"] = trio.run(bench.several, up["several"])
        phases["several_models"] = round(now() - began, 1)
        if not args.skip_routing:
            p1 = free_ports(4)  # each orchestra, then its engine
            e1, p2, e2 = p1 + 1, p1 + 2, p1 + 3
            engine_ports += [e1, e2]
            phase_began = now()
            configs["models"] = one_model_config(args, p1, e1, paths["smollm2"])
            configs["replica"] = replica_config(args, p2, e2, paths["smollm2"])
            two = {"models": (configs["models"], p1, e1), "replica": (configs["replica"], p2, e2)}
            with bench.instances(running, tmp, two) as up:
                running.wait_ready("models", f"{up['models'].base}/v1/pools/smollm2/health",
                                   LOAD_TIMEOUT_S, "ready")  # fmt: skip
                running.wait_ready("replica", f"{up['replica'].base}/v1/pools/default/health",
                                   LOAD_TIMEOUT_S, "ready")  # fmt: skip
                raw["routing"] = trio.run(bench.routing, up["models"], up["replica"])
            phases["routing"] = round(now() - phase_began, 1)
        load_after = load()
    seconds = now() - began
    for pid in sorted(pid for pid in bench.pids if engine_alive(pid)):
        bench.note(f"llama-server pid {pid} still runs after its orchestra stopped: SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for engine_port in engine_ports:
        if answers(engine_port):
            bench.note(f"engine port {engine_port} still answers after orchestra stopped")

    summary = summarize(raw)
    results: dict[str, Any] = {
        **summary,
        "anomalies": bench.anomalies,
        "orchestra_log_warnings": bench.log_warnings,
        "setup": {
            "command": " ".join([".venv/bin/python", "bench/models.py", *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "wall_s": round(seconds, 1),
            "phase_s": phases,
            "threads": args.threads,
            "machine": {
                "cores": os.cpu_count(),
                "cpu": cpu_model(),
                "arch": platform.machine(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "load_before_measuring": load_before,
                "load_after_measuring": load_after,
            },
            "versions": {
                "llama_server": engine_version(binary),
                "orchestra": orchestra_revision(),
                "httpx": httpx.__version__,
            },
            "models": {m: {"path": str(p), "bytes": p.stat().st_size} for m, p in paths.items()},
            "task": f"prompt {PROMPT!r}, max_tokens {TOKENS}, temperature 0, seed {SEED}, "
            "POST /v1/tasks with Accept: text/event-stream (submit and stream in one request)",
            "probe": None
            if args.no_probe
            else f"connect every {CONNECT_EVERY_S * 1000:g} ms, GET /health every "
            f"{HEALTH_EVERY_S * 1000:g} ms, from a thread of the load client",
            "rounds": {
                "cold_per_model": args.cold_rounds,
                "warm_per_model": args.warm_rounds,
                "routing_per_path": 0 if args.skip_routing else args.routing_rounds,
            },
            "configs": configs,
            "engine_pids_seen": sorted(bench.pids),
            "processes": "each orchestra (with its llama-servers) and the load client in "
            "their own processes; phase 2's two instances run side by side",
        },
        "raw": raw,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results, out.with_suffix(".json").name))
    print(out.with_suffix(".md").read_text())


def markdown(results: dict[str, Any], json_name: str) -> str:
    setup, cold, warm = results["setup"], results["cold"], results["warm"]
    m, v = setup["machine"], setup["versions"]

    def cell(value: object) -> str:
        return "-" if value is None else str(value)

    rows = (
        ("task sent → first token (the cold TTFT)", "total_ms_median"),
        ("task sent → `llama-server started` logged", "request_to_spawn_ms_median"),
        ("(a) process start: spawn logged → engine port answers", "process_start_ms_median"),
        ("(b) model load: port answers → `/health` 200", "model_load_ms_median"),
        ("orchestra's ready lag: `/health` 200 → `model … loaded` logged", "ready_lag_ms_median"),
        ("(c) first token: `model … loaded` logged → first token event",
         "first_token_after_loaded_ms_median"),
        ("spawn logged → `model … loaded` logged (a + b + lag)", "spawn_to_loaded_ms_median"),
        ("`load_ms` of `GET /v1/models`", "orchestra_load_ms_median"),
        ("llama-server's own log: `model loaded`, since its start",
         "engine_self_reported_loaded_ms_median"),
        ("task sent → `started` event (dispatched)", "started_event_ms_median"),
    )  # fmt: skip
    table = "| cold start, median ms | " + " | ".join(MODELS) + " |\n|---|---|---|\n"
    for label, key in rows:
        table += f"| {label} | " + " | ".join(cell(cold[x][key]) for x in MODELS) + " |\n"
    table += (
        "| cold TTFT per round | "
        + " | ".join(", ".join(map(str, cold[x]["total_ms_per_round"])) for x in MODELS)
        + " |\n"
    )
    table += (
        "| cold TTFT - warm TTFT (medians) | "
        + " | ".join(cell(cold[x].get("cold_minus_warm_ttft_ms")) for x in MODELS)
        + " |\n"
    )
    first = results["raw"]["several"]["first_loads"]
    table += "| first load after the service started (not in the medians): TTFT, `load_ms` | " + (
        " | ".join(f"{f['total_ms']}, {f['orchestra_load_ms']}" for f in first)
    ) + " |\n"  # fmt: skip
    warm_rows = "| warm TTFT, ms | " + " | ".join(MODELS) + " |\n|---|---|---|\n"
    warm_labels = (
        ("median", "ttft_ms_median"),
        ("min", "ttft_ms_min"),
        ("max", "ttft_ms_max"),
        ("sent → `started` event, median", "started_event_ms_median"),
        (f"sent → end of stream ({TOKENS} tokens), median", "total_ms_median"),
    )
    for label, key in warm_labels:
        warm_rows += f"| {label} | " + " | ".join(cell(warm[x][key]) for x in MODELS) + " |\n"
    routing = ""
    if "routing" in results:
        rt = results["routing"]
        paths = results["raw"]["routing"]["paths"]
        routing = (
            f"\n## What routing costs when nothing loads ({rt['rounds']} rounds, SmolLM2)\n\n"
            "| path | TTFT, median ms |\n|---|---|\n"
            + "".join(f"| {p} | {cell(rt[f'{p}_ttft_ms_median'])} |\n" for p in paths)
            + f"\n`[models]` (one model) - `[replica]`, median of the paired differences: "
            f"**{cell(rt['models_minus_replica_ttft_ms_median_of_paired_differences'])} ms**; "
            f"ratio of the medians: **{cell(rt['models_over_replica_ttft_ratio_of_medians'])}**"
            f" (per round: {', '.join(map(str, rt['models_over_replica_ratio_per_round']))}).\n"
        )
        for name in ("models", "replica"):
            key = f"{name}_minus_its_direct_ttft_ms_median_of_paired_differences"
            if key in rt:
                routing += (
                    f"{name} - its own llama-server directly: {cell(rt[key])} ms (median of "
                    "the paired differences).\n"
                )
        routing += (
            "\n`models` and `replica` are two orchestra instances side by side, each with its "
            "own llama-server (same file and flags); `direct_*` is that llama-server's "
            "`/completion` with the body orchestra sends. Paths in rotating order per round.\n"
        )
    anomalies = "".join(f"- {a}\n" for a in results["anomalies"]) or "- none\n"
    warned: dict[str, int] = {}
    for lines in results["orchestra_log_warnings"].values():
        for line in lines:
            line = ENGINE_STAMP.sub(": ", line)  # one entry per message, whatever its time
            warned[line] = warned.get(line, 0) + 1
    anomalies += "\nWarning and error lines in orchestra's logs (all instances, each once, with "
    anomalies += "its count; per instance in the json):\n\n"
    anomalies += "".join(f"- {n} x `{line}`\n" for line, n in warned.items()) or "- none\n"
    phases = ", ".join(f"{name} {s} s" for name, s in setup["phase_s"].items())
    return (
        "# Several models on the real engine: cold start, warm TTFT, routing cost\n\n"
        f"llama-server {v['llama_server']} on CPU, every model `threads = "
        f"{setup['threads']}`, `ctx_size = {CTX_SIZE}`, "
        f"one slot; orchestra {v['orchestra']}. {m['cores']} cores ({m['cpu']}), "
        f"{m['platform']}, Python {m['python']}; {setup['date']}; load average "
        f"{m['load_before_measuring']['load_average']} before, "
        f"{m['load_after_measuring']['load_average']} after; the run took {setup['wall_s']} s.\n"
        f"Command: `{setup['command']}`\n\n"
        f"Every task: {setup['task']}. Models: smollm2 = SmolLM2-135M-Instruct Q4_1, gemma3 = "
        "Gemma-3-270M Q4_K_M, in one orchestra with `[placement] memory_budget_mb = "
        f"{BUDGET_MB}` (room for both) and `idle_unload_s = 0`.\n\n"
        "## Cold start: a task for an unloaded model → its first token\n\n"
        f"{setup['rounds']['cold_per_model']} rounds per model, alternating the models (and "
        "which goes first); each unloads the model (`POST /v1/models/{id}/unload`, which "
        "returns once its process exited; the other model stays loaded and idle), then sends "
        "the task. How the split is taken: all moments on the load client's clock; the task's "
        "sending and its first `token` event are the client's own; `llama-server started "
        "(pid …)` and `model … loaded in …` are orchestra's log lines (`ts`, wall clock "
        'truncated to the ms, mapped onto the client\'s clock); "port answers" and '
        '"`/health` 200" only an outside observer sees (orchestra logs neither: llama-server '
        "binds before it loads and answers 503 meanwhile, and its own `listening` line comes "
        f"only after the load), so a thread of the client watches the engine port ({setup['probe']}"
        "; each moment as first seen, so at most one interval late). Orchestra's own probe "
        f"polls every {PROBE_STARTING_S * 1000:.0f} ms while an engine loads, hence the ready "
        "lag. The files sit in the "
        "page cache throughout: cold means a new process, not a cold disk.\n\n"
        + table
        + f"\n## Warm TTFT (both loaded; {setup['rounds']['warm_per_model']} rounds per model, "
        "alternating)\n\n"
        + warm_rows
        + routing
        + "\n## What looked wrong while measuring\n\n"
        + anomalies
        + f"\nPhases: {phases}. The first load of each model after the service "
        "started (apart above) also hashes the file for its digest before the spawn. The raw "
        f"per-round figures, the configurations and versions are in `{json_name}` beside this "
        "file.\n"
    )


if __name__ == "__main__":
    main()
