"""A soak of orchestra under mixed streaming load, plus its idle RSS and start-up time
(issue 18, part B).

Orchestra (``orchestra serve``, attached mode, logging JSON Lines at ``info`` to a file) in
front of the fake llama-server (``--slots`` 4, ``--token-delay-ms`` 10), each in its own
process, and this load client (httpx on Trio) in a third.

1. Start-up, attached: ``--startup-runs`` times, a fresh ``orchestra serve`` against the
   running fake: the seconds from spawning it to its pool health saying ``ready`` (polled
   every 10 ms, never a fixed sleep) and its idle RSS (``/proc/PID/statm`` resident, the
   counter ``VmRSS`` shows; the most seen over 2 s after ready); each is stopped with
   SIGTERM. Start-up, owned (``--owned-runs``, when ``orchestra engine install`` cached a
   llama-server and the small model): a ``[replica]`` table (``parallel`` 1, ``threads``
   2), split into orchestra's own part (spawn until its llama-server child exists, plus
   the engine's ``/health`` answering 200 until the pool says ready) and the engine's (its
   spawn until its ``/health`` answers 200: the model load).
2. The soak: one more orchestra; its idle RSS and fds after start, before any load. Then
   ``--workers`` clients loop for ``--minutes``, each through a shuffled cycle of actions
   (weights in ``ACTIONS``), every task ``--tokens`` tokens with its own prompt and seed:

   - ``complete``: ``POST /v1/tasks`` with ``Accept: text/event-stream``, read to ``end``;
   - ``cancel``: the same, and after a random number of tokens ``POST .../cancel``; the
     stream must end with ``error {code: CANCELLED}`` (or ``end`` when the cancel answer
     says ``completed``: it finished first), no event after it, and ``GET /v1/tasks/ID``
     must then say the cancel's state;
   - ``disconnect``: after a random number of tokens the connection is closed; the task
     must then reach a final state (``GET /v1/tasks/ID``, polled) and a fresh reader
     (``GET .../stream``) must get its whole, right log;
   - ``resume``: after a random number of tokens the connection is closed, then ``GET
     .../stream`` with ``Last-Event-ID`` = the last id read: the events must continue at
     exactly the next id (no gap, no repeat) to ``end``, and a fresh full reader must get
     exactly the events of the two parts;
   - ``accepted_get``: ``POST /v1/tasks`` without the header (202), then ``GET
     stream_url`` to ``end``.

   Every complete log is checked like ``bench/streams.py`` does (ids 0, 1, ... without a
   gap, ``started`` first, tokens ``i`` = 0, 1, ... with the very text the fake generates
   for that prompt and seed, ``end`` with ``tokens_out`` = ``--tokens``). Every ``--sample-
   every`` s (5) orchestra's RSS, fds, CPU and the pool's ``queue_depth`` are recorded; the
   least-squares slopes of RSS (KiB per minute) and fds (per minute) are fitted to the
   samples after the warm-up (``--warmup-minutes`` 1, at most half the run). After the
   load, the client's connections are closed, orchestra's fds are polled until they are
   back at the idle level, the bench waits out ``[streams] retention_s`` (``--retention-s``
   30, so the retained tasks reach their steady state within the warm-up; orchestra's
   default is 300) and checks the first task is forgotten (404), and samples the idle RSS
   again.

Failures are counted by action and kind: a lost task (no final state), a wrong resume, an
unexpected HTTP status or error event, a 429, a transport error; the client's own failures
(its descriptors or ports) are counted apart.

Usage: .venv/bin/python bench/soak.py [--minutes 10] [--workers 10] [--tokens 32]
           [--slots 4] [--token-delay-ms 10] [--retention-s 30] [--warmup-minutes 1]
           [--sample-every 5] [--startup-runs 5] [--owned-runs 3] [--log-level info]
           [--out PREFIX]
``--minutes 0.5`` is a smoke run. Writes proof-bundle/bench/issue18-soak.json and .md
(``--out /tmp/x`` writes /tmp/x.json and /tmp/x.md).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procstat import cpu_seconds, open_fds, rss_bytes  # the sibling bench modules
from streams import (
    MIB,
    SSE,
    Event,
    Procs,
    SseParser,
    attached_config,
    check_events,
    client_side,
    describe,
    free_port,
    idle_level,
    log_problems,
    machine,
    nofile_of,
    now,
    raise_nofile,
    revision,
    spawn_engine,
    start_orchestra,
    wait_fds,
    wait_forgotten,
)

from orchestra.engine import cache as engine_cache
from orchestra.testing.fake_llama.words import generated_word

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "proof-bundle" / "bench" / "issue18-soak"
IMPORTS = "import orchestra.cli.main, orchestra.service"
"""What ``orchestra serve`` imports before it starts: a Python process doing only this
(then exiting) is timed beside each attached start-up."""
ACTIONS = {"complete": 4, "cancel": 2, "disconnect": 2, "resume": 3, "accepted_get": 1}
"""Each worker goes through cycles of these actions (so many of each per cycle), shuffled."""
FINAL_STATES = ("completed", "cancelled", "failed")
STATE_DEADLINE_S = 60.0
"""A task not in a final state this long after its client left counts as lost."""
IDLE_RSS_TARGET_MIB = 60.0
STARTUP_TARGET_S = 1.0


# --- one action --------------------------------------------------------------------------


@dataclasses.dataclass
class Done:
    """One action as this client saw it."""

    action: str
    outcome: str = "ok"
    """What happened when all was right (``cancelled``, ``completed_before_cancel``...)."""
    problems: list[str] = dataclasses.field(default_factory=list)
    """Orchestra's failures (empty: right)."""
    kind: str = ""
    """The failure's kind: lost, wrong_resume, wrong_stream, http, error_event, 429,
    transport."""
    client_error: str | None = None
    tokens: int = 0
    task_id: str = ""

    def fail(self, kind: str, problem: str) -> None:
        self.kind = self.kind or kind
        self.problems.append(problem)


class Read:
    """The events of one HTTP stream, read until a number of tokens or its end (one line
    iterator per response: httpx streams a response's body once)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.parser = SseParser()
        self.lines: AsyncIterator[str] | None = None

    async def until(self, response: httpx.Response, stop: int | None = None) -> bool:
        """Read events; with ``stop``, return True as soon as that many token events were
        read in all (the caller then leaves: a disconnect). False when the stream ended."""
        if self.lines is None:
            self.lines = response.aiter_lines()
        tokens = sum(e.name == "token" for e in self.events)
        async for line in self.lines:
            event = self.parser.feed(line)
            if event is None:
                continue
            self.events.append(event)
            if event.name == "token":
                tokens += 1
                if stop is not None and tokens >= stop:
                    return True
        return False


def sequence_problems(events: list[Event], prompt: str, seed: int, first_id: int) -> list[str]:
    """Ids without a gap from ``first_id``, tokens in order with the fake's text (the log
    need not be complete)."""
    problems = []
    ids = [e.id for e in events]
    if ids != list(range(first_id, first_id + len(events))):
        problems.append(f"ids not consecutive from {first_id}: {ids[:5]}...{ids[-3:]}")
    toks = [e for e in events if e.name == "token"]
    start_i = max(0, first_id - 1)
    if [e.data.get("i") for e in toks] != list(range(start_i, start_i + len(toks))):
        problems.append(f"token i not consecutive from {start_i}")
    for e in toks:
        i = e.data.get("i")
        if isinstance(i, int) and e.data.get("t") != " " + generated_word(prompt, seed, i):
            problems.append(f"token {i}: text {e.data.get('t')!r} is not the engine's")
            break
    return problems


async def task_state(client: httpx.AsyncClient, task_id: str) -> dict[str, Any] | None:
    """``GET /v1/tasks/ID`` once it says a final state (None: not within the deadline)."""
    deadline = now() + STATE_DEADLINE_S
    while now() < deadline:
        response = await client.get(f"/v1/tasks/{task_id}")
        if response.status_code == 200 and response.json().get("state") in FINAL_STATES:
            return dict(response.json())
        if response.status_code != 200:
            return {"state": f"HTTP {response.status_code}", "body": response.text[:200]}
        await trio.sleep(0.1)
    return None


async def full_log(client: httpx.AsyncClient, task_id: str) -> list[Event]:
    """The task's whole log, as a fresh reader (no Last-Event-ID) gets it."""
    read = Read()
    async with client.stream("GET", f"/v1/tasks/{task_id}/stream") as response:
        if response.status_code != 200:
            raise RuntimeError(f"GET stream: HTTP {response.status_code}")
        await read.until(response)
    return read.events


async def act(
    client: httpx.AsyncClient, action: str, prompt: str, seed: int, tokens: int, rng: random.Random
) -> Done:
    """One action; never raises for a failure (it is recorded in the result)."""
    done = Done(action)
    body = {"prompt": prompt, "max_tokens": tokens, "seed": seed}
    first = Read()
    try:
        if action == "accepted_get":
            answer = await client.post("/v1/tasks", json=body)
            if answer.status_code != 202:
                kind = "429" if answer.status_code == 429 else "http"
                done.fail(kind, f"POST: HTTP {answer.status_code} {answer.text[:160]}")
                return done
            done.task_id = answer.json()["task_id"]
            async with client.stream("GET", answer.json()["stream_url"]) as response:
                if response.status_code != 200:
                    done.fail("http", f"GET stream: HTTP {response.status_code}")
                    return done
                await first.until(response)
            done.tokens = sum(e.name == "token" for e in first.events)
            for p in check_events(first.events, prompt, seed, tokens):
                done.fail("wrong_stream", p)
            return done
        stop = {
            "complete": None,
            "cancel": rng.randint(1, tokens - 8),
            "disconnect": rng.randint(1, tokens - 4),
            "resume": rng.randint(1, tokens - 2),
        }[action]
        cancel_answer: dict[str, Any] | None = None
        async with client.stream("POST", "/v1/tasks", json=body, headers=SSE) as response:
            if response.status_code != 200:
                await response.aread()
                kind = "429" if response.status_code == 429 else "http"
                done.fail(kind, f"POST: HTTP {response.status_code} {response.text[:160]}")
                return done
            done.task_id = response.headers["x-task-id"]
            left = await first.until(response, stop)
            if action == "cancel" and left:
                answer = await client.post(f"/v1/tasks/{done.task_id}/cancel")
                if answer.status_code != 200:
                    done.fail("http", f"cancel: HTTP {answer.status_code} {answer.text[:160]}")
                cancel_answer = answer.json() if answer.status_code == 200 else None
                await first.until(response)  # to the stream's end
                left = False
        # the stream's connection is closed here: a disconnect when ``left``
        done.tokens = sum(e.name == "token" for e in first.events)
        if action == "complete" or (action in ("disconnect", "resume") and not left):
            problems = check_events(first.events, prompt, seed, tokens)
            for p in problems:
                done.fail("wrong_stream", p)
            if action != "complete" and not problems:
                done.outcome = "ended_before_leaving"
            return done
        if action == "cancel":
            await check_cancel(client, done, first.events, prompt, seed, cancel_answer)
        elif action == "disconnect":
            await check_disconnect(client, done, first.events, prompt, seed, tokens)
        else:
            await check_resume(client, done, first.events, prompt, seed, tokens)
    except (httpx.HTTPError, OSError, RuntimeError, ValueError, KeyError) as exc:
        if client_side(exc):
            done.client_error = describe(exc)
        else:
            done.fail("transport", f"{describe(exc)} after {len(first.events)} events")
    return done


async def check_cancel(
    client: httpx.AsyncClient,
    done: Done,
    events: list[Event],
    prompt: str,
    seed: int,
    answer: dict[str, Any] | None,
) -> None:
    for p in sequence_problems(events, prompt, seed, 0):
        done.fail("wrong_stream", p)
    last = events[-1] if events else None
    said = answer.get("state") if answer else None
    if last is not None and last.name == "error":
        if last.data.get("code") != "CANCELLED":
            done.fail("error_event", f"error event {last.data}")
        elif said != "cancelled":
            done.fail("wrong_stream", f"stream says CANCELLED, the cancel answered {said}")
        done.outcome = "cancelled"
    elif last is not None and last.name == "end":
        if said != "completed":
            done.fail("wrong_stream", f"stream ended normally, the cancel answered {said}")
        done.outcome = "completed_before_cancel"
    else:
        done.fail("wrong_stream", f"stream ended without end or error ({len(events)} events)")
    if any(e.name in ("end", "error") for e in events[:-1]):
        done.fail("wrong_stream", "events after the terminal one")
    state = await task_state(client, done.task_id)
    if state is None:
        done.fail("lost", "no final state after the cancel")
    elif said is not None and state.get("state") != said:
        done.fail("wrong_stream", f"GET says {state.get('state')}, the cancel answered {said}")


async def check_disconnect(
    client: httpx.AsyncClient, done: Done, events: list[Event], prompt: str, seed: int, tokens: int
) -> None:
    for p in sequence_problems(events, prompt, seed, 0):
        done.fail("wrong_stream", p)
    state = await task_state(client, done.task_id)
    if state is None:
        done.fail("lost", f"no final state {STATE_DEADLINE_S} s after the disconnect")
        return
    if state.get("state") == "completed":
        done.outcome = "completed"
        for p in check_events(await full_log(client, done.task_id), prompt, seed, tokens):
            done.fail("wrong_stream", f"fresh reader after the disconnect: {p}")
    elif state.get("state") == "cancelled" and state.get("error_code") == "CANCELLED":
        done.outcome = "cancelled_without_readers"
    else:
        done.fail("lost", f"after the disconnect: {state}")


async def check_resume(
    client: httpx.AsyncClient, done: Done, events: list[Event], prompt: str, seed: int, tokens: int
) -> None:
    if not events or events[-1].id is None:
        done.fail("wrong_resume", "nothing read before leaving")
        return
    last_id = events[-1].id
    second = Read()
    headers = {**SSE, "Last-Event-ID": str(last_id)}
    async with client.stream("GET", f"/v1/tasks/{done.task_id}/stream", headers=headers) as r:
        if r.status_code != 200:
            done.fail("wrong_resume", f"GET stream with Last-Event-ID: HTTP {r.status_code}")
            return
        await second.until(r)
    done.tokens += sum(e.name == "token" for e in second.events)
    if not second.events or second.events[0].id != last_id + 1:
        got = second.events[0].id if second.events else None
        done.fail("wrong_resume", f"resumed at id {got} after {last_id}")
    for p in check_events(events + second.events, prompt, seed, tokens):
        done.fail("wrong_resume", f"first part + resumed: {p}")
    whole = await full_log(client, done.task_id)
    if whole != events + second.events:
        done.fail(
            "wrong_resume",
            f"a fresh reader got {len(whole)} events, not the "
            f"{len(events)} + {len(second.events)} read in two parts",
        )


# --- the soak ----------------------------------------------------------------------------


@dataclasses.dataclass
class Soak:
    dones: list[Done] = dataclasses.field(default_factory=list)
    samples: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    last_task: str = ""
    seconds: float = 0.0
    cpu_s: float = 0.0
    client_cpu_s: float = 0.0


async def soak(base: str, pid: int, args: argparse.Namespace) -> Soak:
    result = Soak()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=30)
    timeout = httpx.Timeout(120, connect=30, pool=30)
    clients = [
        httpx.AsyncClient(base_url=base, timeout=timeout, limits=limits)
        for _ in range(args.workers)
    ]
    t0 = now()
    deadline = t0 + args.minutes * 60
    cpu0 = cpu_seconds(pid)
    self0 = resource.getrusage(resource.RUSAGE_SELF)

    def take_sample(depth: int | None) -> None:
        with contextlib.suppress(OSError):
            result.samples.append(
                {
                    "t_s": round(now() - t0, 2),
                    "rss_kib": rss_bytes(pid) // 1024,
                    "fds": open_fds(pid),
                    "cpu_s": round(cpu_seconds(pid) - cpu0, 2),
                    "queue_depth": depth,
                    "actions_done": len(result.dones),
                }
            )

    async def sampler() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=10) as probe:
            while True:
                depth = None
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    health = (await probe.get("/v1/pools/default/health")).json()
                    depth = int(health["queue_depth"])
                take_sample(depth)
                await trio.sleep(args.sample_every)

    async def worker(w: int) -> None:
        rng = random.Random(1000 + w)
        cycle = [a for a, n in ACTIONS.items() for _ in range(n)]
        n = 0
        while now() < deadline:
            rng.shuffle(cycle)
            for action in cycle:
                if now() >= deadline:
                    return
                seed = w * 1_000_000 + n
                done = await act(
                    clients[w], action, f"soak w{w} n{n}: a tale", seed, args.tokens, rng
                )
                if done.task_id:
                    result.last_task = done.task_id
                result.dones.append(done)
                n += 1
                if done.problems or done.client_error:
                    await trio.sleep(0.05)  # a failing path: no hot loop

    try:
        async with trio.open_nursery() as outer:
            outer.start_soon(sampler)
            async with trio.open_nursery() as nursery:
                for w in range(args.workers):
                    nursery.start_soon(worker, w)
            result.seconds = now() - t0
            result.cpu_s = cpu_seconds(pid) - cpu0
            self1 = resource.getrusage(resource.RUSAGE_SELF)
            result.client_cpu_s = (self1.ru_utime + self1.ru_stime) - (
                self0.ru_utime + self0.ru_stime
            )
            take_sample(None)
            outer.cancel_scope.cancel()
    finally:
        for client in clients:
            await client.aclose()
    return result


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return None
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx * 60


def summarize(run: Soak, warmup_s: float) -> dict[str, Any]:
    by_action: dict[str, Counter[str]] = {a: Counter() for a in ACTIONS}
    failures: Counter[str] = Counter()
    for d in run.dones:
        by_action[d.action]["total"] += 1
        if d.client_error:
            by_action[d.action]["client_error"] += 1
        elif d.problems:
            by_action[d.action][f"failed_{d.kind}"] += 1
            failures[d.kind] += 1
        else:
            by_action[d.action][d.outcome] += 1
    measured = [s for s in run.samples if s["t_s"] >= warmup_s]
    rss_slope = slope_per_minute([(s["t_s"], s["rss_kib"]) for s in measured])
    fds_slope = slope_per_minute([(s["t_s"], s["fds"]) for s in measured])
    tokens = sum(d.tokens for d in run.dones)
    return {
        "seconds": round(run.seconds, 1),
        "actions": len(run.dones),
        "actions_per_s": round(len(run.dones) / run.seconds, 2) if run.seconds else None,
        "by_action": {a: dict(c) for a, c in by_action.items()},
        "failures": sum(failures.values()),
        "failures_by_kind": dict(failures),
        "failure_samples": [
            f"{d.action} {d.task_id}: {'; '.join(d.problems)[:300]}"
            for d in run.dones
            if d.problems
        ][:10],
        "client_failures": sum(d.client_error is not None for d in run.dones),
        "client_failure_samples": sorted({d.client_error for d in run.dones if d.client_error})[:5],
        "refused_429": failures.get("429", 0),
        "tokens_received": tokens,
        "orchestra_cpu_s": round(run.cpu_s, 2),
        "orchestra_cores": round(run.cpu_s / run.seconds, 3) if run.seconds else None,
        "orchestra_cpu_ms_per_1k_tokens": round(run.cpu_s / tokens * 1e6, 1) if tokens else None,
        "client_cpu_s": round(run.client_cpu_s, 2),
        "warmup_s": round(warmup_s, 1),
        "samples_after_warmup": len(measured),
        "rss_slope_kib_per_min": None if rss_slope is None else round(rss_slope, 1),
        "fds_slope_per_min": None if fds_slope is None else round(fds_slope, 3),
        "rss_mib_after_warmup_min_max": [
            round(min(s["rss_kib"] for s in measured) / 1024, 2),
            round(max(s["rss_kib"] for s in measured) / 1024, 2),
        ]
        if measured
        else None,
        "fds_after_warmup_min_max": [
            min(s["fds"] for s in measured),
            max(s["fds"] for s in measured),
        ]
        if measured
        else None,
        "queue_depth_max_seen": max((s["queue_depth"] or 0 for s in run.samples), default=None),
    }


# --- start-up ----------------------------------------------------------------------------


def attached_startups(
    procs: Procs, tmp: Path, engine_port: int, args: argparse.Namespace
) -> list[dict[str, Any]]:
    runs = []
    for i in range(args.startup_runs):
        port = free_port()
        config = attached_config(port, engine_port, tmp / f"data-start{i}", args.log_level, 64)
        began = now()
        subprocess.run([sys.executable, "-c", IMPORTS], check=True)
        imports_s = now() - began
        up = start_orchestra(procs, f"start{i}", config, port)
        at_ready = round(rss_bytes(up.proc.pid) / MIB, 2)
        idle = idle_level(up.proc.pid)
        began = now()
        code = procs.stop(f"start{i}")
        runs.append(
            {
                "startup_s": round(up.startup_s, 3),
                "imports_s": round(imports_s, 3),
                "rss_at_ready_mib": at_ready,
                "idle_rss_mib": idle["rss_mib"],
                "idle_fds": idle["fds"],
                "stop_s": round(now() - began, 3),
                "exit_code": code,
            }
        )
        print(f"attached start-up {i}: {runs[-1]}", flush=True)
    return runs


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
                found += [int(x) for x in text.split()]
    return found


def engine_child(pid: int) -> int | None:
    for child in children(pid):
        with contextlib.suppress(OSError):
            if b"llama-server" in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
    return None


def owned_startup(procs: Procs, tmp: Path, i: int, args: argparse.Namespace) -> dict[str, Any]:
    port, engine_port = free_port(), free_port()
    config = (
        f'bind_addr = "127.0.0.1:{port}"\ndata_dir = {json.dumps(str(tmp / f"data-own{i}"))}\n'
        f'[log]\nlevel = "{args.log_level}"\n[admission]\nqueue_capacity = 64\n'
        f'[adapter]\nendpoint = "http://127.0.0.1:{engine_port}"\n'
        "[replica]\nparallel = 1\nthreads = 2\nctx_size = 2048\n"
    )
    name = f"owned{i}"
    (tmp / f"{name}.toml").write_text(config)
    began = now()
    proc = procs.start(
        name, [sys.executable, "-m", "orchestra", "serve", "--config", str(tmp / f"{name}.toml")]
    )
    marks: dict[str, float] = {}
    engine_pid: int | None = None
    with httpx.Client(timeout=2) as probe:
        while "ready" not in marks:
            if now() - began > 300:
                raise RuntimeError(f"{name}: not ready after 300 s:\n{procs.tail(name)}")
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{procs.tail(name)}")
            if engine_pid is None:
                engine_pid = engine_child(proc.pid)
                if engine_pid is not None:
                    marks["engine_spawned"] = now() - began
            if engine_pid is not None and "engine_healthy" not in marks:
                with contextlib.suppress(httpx.HTTPError):
                    if probe.get(f"http://127.0.0.1:{engine_port}/health").status_code == 200:
                        marks["engine_healthy"] = now() - began
            with contextlib.suppress(httpx.HTTPError, ValueError):
                url = f"http://127.0.0.1:{port}/v1/pools/default/health"
                if probe.get(url).json().get("ready"):
                    marks["ready"] = now() - began
            time.sleep(0.01)
    total = marks["ready"]
    spawned = marks.get("engine_spawned", 0.0)
    healthy = marks.get("engine_healthy", total)
    idle = idle_level(proc.pid)
    code = procs.stop(name)
    left = engine_pid is not None and Path(f"/proc/{engine_pid}").exists()
    run = {
        "startup_s": round(total, 3),
        "until_engine_spawned_s": round(spawned, 3),
        "engine_load_s": round(healthy - spawned, 3),
        "engine_healthy_to_ready_s": round(total - healthy, 3),
        "orchestra_own_s": round(spawned + (total - healthy), 3),
        "idle_rss_mib": idle["rss_mib"],
        "exit_code": code,
        "engine_left_running": left,
    }
    print(f"owned start-up {i}: {run}", flush=True)
    return run


# --- report ------------------------------------------------------------------------------


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def markdown(r: dict[str, Any]) -> str:
    s, setup = r["soak"], r["setup"]
    rows = "".join(
        f"| {t['name']} | {t['value']} | {t['target']} | {t['met']} |\n" for t in r["targets"]
    )
    cols = [
        "total",
        "ok",
        "cancelled",
        "completed_before_cancel",
        "completed",
        "cancelled_without_readers",
        "ended_before_leaving",
    ]
    extra = sorted({k for c in s["by_action"].values() for k in c} - set(cols))
    cols += extra
    actions = "| action | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols) + "\n"
    for name, counts in s["by_action"].items():
        actions += f"| {name} | " + " | ".join(str(counts.get(c, 0)) for c in cols) + " |\n"
    samples = "| t, s | RSS, MiB | fds | orchestra CPU, s | queue_depth | actions done |\n"
    samples += "|---|---|---|---|---|---|\n" + "".join(
        f"| {x['t_s']} | {round(x['rss_kib'] / 1024, 2)} | {x['fds']} | {x['cpu_s']} | "
        f"{x['queue_depth']} | {x['actions_done']} |\n"
        for x in r["samples"]
    )
    attached = "".join(
        f"| {x['startup_s']} | {x['imports_s']} | {x['rss_at_ready_mib']} | "
        f"{x['idle_rss_mib']} | {x['idle_fds']} | {x['stop_s']} | {x['exit_code']} |\n"
        for x in r["startup_attached"]
    )
    owned = "".join(
        f"| {x['startup_s']} | {x['until_engine_spawned_s']} | {x['engine_load_s']} | "
        f"{x['engine_healthy_to_ready_s']} | {x['orchestra_own_s']} | {x['idle_rss_mib']} | "
        f"{x['engine_left_running']} |\n"
        for x in r["startup_owned"]
    )
    logs = "".join(f"- {n} x `{line}`\n" for line, n in r["orchestra_log_problems"].items())
    fails = "".join(f"- {x}\n" for x in s["failure_samples"] + s["client_failure_samples"])
    return (
        f"# Soak, idle RSS and start-up (issue 18 B)\n\n"
        f"orchestra {setup['revision']}; {setup['machine']['cores']} cores "
        f"({setup['machine']['cpu']}), {setup['machine']['platform']}, Python "
        f"{setup['machine']['python']}; {setup['date']}; load average "
        f"{setup['machine']['load_average']} before, {setup['load_average_after']} after.\n"
        f"Command: `{setup['command']}`\n\n"
        f"Engine: {setup['engine']}. Orchestra: attached mode, logging at `{setup['log_level']}`"
        f" to a file. Load: {setup['workers']} clients (httpx on Trio, one AsyncClient each), "
        f"each through shuffled cycles of {ACTIONS}, {setup['tokens']} tokens a task, for "
        f"{setup['minutes']} min. Every process on the same {setup['machine']['cores']} "
        "cores.\n\nConfiguration of the soaked orchestra:\n\n```toml\n"
        + setup["config"]
        + "```\n\n| figure | value | target | met |\n|---|---|---|---|\n"
        + rows
        + f"\n## The soak\n\n{s['actions']} actions in {s['seconds']} s "
        f"({s['actions_per_s']}/s), {s['tokens_received']} tokens received; orchestra "
        f"{s['orchestra_cpu_s']} CPU-s ({s['orchestra_cores']} cores, "
        f"{s['orchestra_cpu_ms_per_1k_tokens']} ms per 1,000 tokens); this client "
        f"{s['client_cpu_s']} CPU-s; queue_depth at most {s['queue_depth_max_seen']}.\n\n"
        + actions
        + f"\nFailures: {s['failures']}{' ' + str(s['failures_by_kind']) if s['failures'] else ''}"
        f"; 429s: "
        f"{s['refused_429']}; this client's own: {s['client_failures']}.\n\n"
        + (fails or "- none\n")
        + f"\nAfter the {s['warmup_s']} s warm-up ({s['samples_after_warmup']} samples): RSS "
        f"slope {s['rss_slope_kib_per_min']} KiB/min (RSS {s['rss_mib_after_warmup_min_max']} "
        f"MiB, min/max), fds slope {s['fds_slope_per_min']} per min (fds "
        f"{s['fds_after_warmup_min_max']}, min/max).\n\n"
        f"Idle: RSS {r['idle_before']['rss_mib']} MiB / {r['idle_before']['fds']} fds after "
        f"start, before load; after the soak: fds back at the idle level "
        f"{r['after']['returned']} in {r['after']['seconds']} s (residual "
        f"{r['after']['residual']}); after waiting out retention_s ({r['retention_wait_s']} s; "
        f"the last task then {r['last_task_after_retention']}): RSS "
        f"{r['idle_after']['rss_mib']} MiB, {r['idle_after']['fds']} fds.\n\n"
        f"Samples every {setup['sample_every_s']} s:\n\n"
        + samples
        + "\n## Start-up, attached (spawn to pool ready)\n\n"
        "| start-up, s | Python + imports alone, s | RSS at ready, MiB | idle RSS, MiB | "
        "idle fds | stop (SIGTERM), s | exit |\n|---|---|---|---|---|---|---|\n"
        + attached
        + f'\nThe soaked instance: {r["soak_instance_startup_s"]} s. "Python + imports '
        f'alone": a process running only `python -c "{IMPORTS}"`, timed just before each '
        "start-up (what `orchestra serve` pays before its own start).\n\n"
        "## Start-up, owned (the cached llama-server and SmolLM2-135M, `parallel` 1, "
        "`threads` 2)\n\n"
        + (
            (
                "| spawn to ready, s | to engine spawned, s | engine spawn to its /health 200 "
                "(model load), s | engine /health to pool ready, s | orchestra's own, s | "
                "orchestra idle RSS, MiB | engine left running |\n|---|---|---|---|---|---|---|\n"
                + owned
            )
            if owned
            else f"not run: {r['owned_skipped']}\n"
        )
        + "\nRSS is `/proc/PID/statm` resident (the counter `VmRSS` shows), fds the entries "
        "of `/proc/PID/fd`, CPU utime + stime of `/proc/PID/stat`; idle = over 2 s, RSS the "
        "most seen, fds the median.\n\n"
        "Warning and error lines in the soaked orchestra's log (count x line):\n\n"
        + (logs or "- none\n")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--token-delay-ms", type=float, default=10.0)
    parser.add_argument("--retention-s", type=float, default=30.0)
    parser.add_argument("--warmup-minutes", type=float, default=1.0)
    parser.add_argument("--sample-every", type=float, default=5.0)
    parser.add_argument("--startup-runs", type=int, default=5)
    parser.add_argument("--owned-runs", type=int, default=3)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--out", default=str(OUT), help="path prefix of the .json and .md")
    args = parser.parse_args()
    if args.tokens < 10:
        sys.exit("--tokens must be at least 10 (a cancel comes after 1 to tokens - 8)")
    nofile = raise_nofile()
    warmup_s = min(args.warmup_minutes * 60, args.minutes * 60 / 2)
    engine_port, port = free_port(), free_port()
    owned_skipped = ""
    if args.owned_runs and (
        engine_cache.installed_engine("cpu") is None or engine_cache.installed_model() is None
    ):
        owned_skipped = "no cached llama-server or model (orchestra engine install)"
    elif not args.owned_runs:
        owned_skipped = "--owned-runs 0"
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp_name:
        tmp = Path(tmp_name)
        procs = Procs(tmp)
        try:
            spawn_engine(procs, engine_port, args.slots, args.token_delay_ms)
            startups = attached_startups(procs, tmp, engine_port, args)
            owned = (
                []
                if owned_skipped
                else [owned_startup(procs, tmp, i, args) for i in range(args.owned_runs)]
            )
            extra = f"[streams]\nretention_s = {args.retention_s}\n"
            config = attached_config(port, engine_port, tmp / "data", args.log_level, 256, extra)
            up = start_orchestra(procs, "orchestra", config, port)
            pid = up.proc.pid
            orchestra_nofile = nofile_of(pid)
            idle_before = idle_level(pid)
            print(
                f"soak: ready in {up.startup_s:.3f} s, idle {idle_before}; {args.minutes} min ...",
                flush=True,
            )
            run = trio.run(soak, up.base, pid, args)
            after = wait_fds(pid, idle_before["fds"], 60)
            forgotten, retention_wait = wait_forgotten(up.base, run.last_task, args.retention_s)
            idle_after = idle_level(pid)
            idle_after["fds_now"] = open_fds(pid)
            code = procs.stop("orchestra")
            problems = log_problems(procs.log("orchestra"))
        except BaseException:
            kept = Path(tempfile.gettempdir()) / f"bench-soak-logs-{os.getpid()}"
            with contextlib.suppress(OSError):
                shutil.copytree(tmp, kept, dirs_exist_ok=True)
                print(f"failed; logs kept in {kept}", file=sys.stderr)
            raise
        finally:
            procs.stop_all()
    s = summarize(run, warmup_s)
    results: dict[str, Any] = {
        "soak": s,
        "idle_before": idle_before,
        "after": after,
        "idle_after": idle_after,
        "retention_wait_s": retention_wait,
        "last_task_after_retention": forgotten,
        "soak_instance_startup_s": round(up.startup_s, 3),
        "exit_code": code,
        "startup_attached": startups,
        "startup_owned": owned,
        "owned_skipped": owned_skipped,
        "orchestra_log_problems": dict(problems.most_common()),
        "samples": run.samples,
        "setup": {
            "command": ".venv/bin/python bench/soak.py " + " ".join(sys.argv[1:]),
            "machine": machine() | {"load_average": load_before},
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "revision": revision(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "engine": f"fake llama-server, {args.slots} slots, {args.token_delay_ms} ms per token",
            "log_level": args.log_level,
            "workers": args.workers,
            "tokens": args.tokens,
            "minutes": args.minutes,
            "sample_every_s": args.sample_every,
            "config": config,
            "client_nofile": nofile,
            "orchestra_nofile": orchestra_nofile,
        },
    }
    start_med = median([x["startup_s"] for x in startups])
    idle_med = median([x["idle_rss_mib"] for x in startups])
    own_med = median([x["orchestra_own_s"] for x in owned])
    load_med = median([x["engine_load_s"] for x in owned])
    total_med = median([x["startup_s"] for x in owned])
    targets = [
        {
            "name": "failures in the soak (lost task, wrong resume, unexpected error, 429)",
            "value": s["failures"],
            "target": 0,
            "met": s["failures"] == 0,
        },
        {
            "name": "idle RSS after start, before load (soaked instance)",
            "value": f"{idle_before['rss_mib']} MiB",
            "target": f"<= {IDLE_RSS_TARGET_MIB} MiB",
            "met": idle_before["rss_mib"] <= IDLE_RSS_TARGET_MIB,
        },
        {
            "name": f"idle RSS after start, median of {len(startups)} fresh starts",
            "value": f"{idle_med} MiB",
            "target": f"<= {IDLE_RSS_TARGET_MIB} MiB",
            "met": idle_med is not None and idle_med <= IDLE_RSS_TARGET_MIB,
        },
        {
            "name": "idle RSS after the soak (retention waited out)",
            "value": f"{idle_after['rss_mib']} MiB",
            "target": f"<= {IDLE_RSS_TARGET_MIB} MiB",
            "met": idle_after["rss_mib"] <= IDLE_RSS_TARGET_MIB,
        },
        {
            "name": f"start-up, attached, spawn to ready (median of {len(startups)}; max; "
            "Python + imports alone, median)",
            "value": f"{start_med} s; {max((x['startup_s'] for x in startups), default=None)} s; "
            f"{median([x['imports_s'] for x in startups])} s",
            "target": f"<= {STARTUP_TARGET_S} s",
            "met": start_med is not None and start_med <= STARTUP_TARGET_S,
        },
        {
            "name": "fds back at the idle level after the soak",
            "value": f"{after['fds']} vs idle {idle_before['fds']} after {after['seconds']} s",
            "target": "<= idle within 60 s",
            "met": after["returned"],
        },
    ]
    if owned:
        targets.append(
            {
                "name": f"start-up, owned: orchestra's own part (median of {len(owned)}); "
                f"total {total_med} s, model load {load_med} s",
                "value": f"{own_med} s",
                "target": f"<= {STARTUP_TARGET_S} s plus model load",
                "met": own_med is not None and own_med <= STARTUP_TARGET_S,
            }
        )
    results["targets"] = targets
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(results, indent=2) + "\n")
    Path(f"{out}.md").write_text(markdown(results))
    print(json.dumps({k: v for k, v in results.items() if k != "samples"}, indent=2))


if __name__ == "__main__":
    main()
