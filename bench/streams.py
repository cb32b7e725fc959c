"""1,000 concurrent open streams through one orchestra (issue 18, part A).

Orchestra (``orchestra serve``, attached mode, logging JSON Lines at ``info`` to a file) in
front of the fake llama-server (``python -m orchestra.testing.fake_llama``, ``--slots`` 8,
``--token-delay-ms`` 3), each in its own process, and this load client (httpx on Trio) in a
third. ``[admission] queue_capacity`` is at least the number of streams, so none is refused.

After orchestra's pool health says ready, 8 warm-up tasks run (not counted) and orchestra's
idle RSS (``/proc/PID/statm`` resident, the same counter as ``VmRSS``) and open fds
(``/proc/PID/fd``) are sampled for 2 s: the idle level. Then ``--streams`` clients start at
once; each submits one task of ``--tokens`` tokens with ``Accept: text/event-stream`` (submit
and stream in one request) and reads the stream to its ``end`` event. Most of them wait in
the queue at first. Every stream is checked: HTTP 200 (a 429 or any other answer counted),
event ids 0, 1, 2, ... without a gap, ``started`` first, exactly ``--tokens`` ``token``
events with ``i`` = 0, 1, ... and the very text the fake generates for that prompt and seed,
and ``end`` last with ``tokens_out`` = ``--tokens``. While they run, a separate Trio task
samples orchestra's RSS and fds every 0.2 s (the peak is reported) and the pool's
``queue_depth`` every 0.5 s. Orchestra's CPU (utime + stime from ``/proc/PID/stat``) is read
before the first submit and after the last end: CPU per 1,000 tokens and tokens per
CPU-second. Once every stream ended the client's connections are closed and orchestra's fd
count is polled until it is back at the idle level (at most ``--fd-deadline`` s): how long it
took, or the residual.

Failures of this client itself (its own pool or descriptor limits, ephemeral ports) are
counted apart from orchestra's (refusals, error events, broken or short streams, resets).
The soft RLIMIT_NOFILE is raised to the hard limit first; orchestra and the fake inherit it,
and the bench checks orchestra's limit in ``/proc/PID/limits``.

Usage: .venv/bin/python bench/streams.py [--streams 1000] [--tokens 32] [--slots 8]
           [--token-delay-ms 3] [--log-level info] [--read-timeout 120] [--fd-deadline 30]
           [--waves 3] [--out PREFIX]
``--waves``: that many rounds of ``--streams`` streams one after another against the same
orchestra, with its RSS and fds after each (CPython keeps the memory it freed in its arenas,
so RSS after a wave is its plateau, not the idle level: the waves show whether it grows).
Writes proof-bundle/bench/issue18-streams.json and .md (``--out /tmp/x`` writes
/tmp/x.json and /tmp/x.md).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import errno
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
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
from procstat import cpu_seconds, open_fds, rss_bytes  # the sibling bench module

from orchestra.testing.fake_llama.words import generated_word

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "proof-bundle" / "bench" / "issue18-streams"
SSE = {"Accept": "text/event-stream"}
PER_HTTPX = 25
"""Streams sharing one httpx.AsyncClient (its pool scans its connections on every request:
a thousand in one pool makes the client the bottleneck, see bench/replicas.py)."""
SAMPLE_EVERY_S = 0.2
DEPTH_EVERY_S = 0.5
WARMUP_TASKS = 8
IDLE_SAMPLE_S = 2.0
MIB = 1024 * 1024


def now() -> float:
    return time.perf_counter()


# --- processes -------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent(parent: int) -> None:
    """In the child before exec: SIGKILL it when this bench dies, even by ``kill -9``."""
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


class Procs:
    """Child processes, each in its own session with its output in ``tmp/NAME.log``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        parent = os.getpid()
        with (self.tmp / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=lambda: _die_with_parent(parent),
            )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> Path:
        return self.tmp / f"{name}.log"

    def tail(self, name: str) -> str:
        return self.log(name).read_text(errors="replace")[-3000:]

    def stop(self, name: str, timeout_s: float = 60) -> int | None:
        """SIGTERM its process group, SIGKILL after ``timeout_s``; its exit code."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything left in its group
        return code

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name, timeout_s=20)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_nofile() -> dict[str, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {"soft": soft, "hard": hard}


def nofile_of(pid: int) -> int | None:
    """The soft ``Max open files`` of process ``pid``."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
    return None


def spawn_engine(procs: Procs, port: int, slots: int, delay_ms: float) -> None:
    """The fake llama-server on ``port``; returns once its /health answers 200."""
    procs.start(
        "fake",
        [
            sys.executable,
            "-m",
            "orchestra.testing.fake_llama",
            "--port",
            str(port),
            "--slots",
            str(slots),
            "--token-delay-ms",
            str(delay_ms),
        ],
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if procs.procs["fake"].poll() is not None:
            raise RuntimeError(f"the fake llama-server exited:\n{procs.tail('fake')}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.02)
    raise RuntimeError(f"the fake llama-server did not come up:\n{procs.tail('fake')}")


def attached_config(
    port: int, engine_port: int, data_dir: Path, log_level: str, capacity: int, extra: str = ""
) -> str:
    return (
        f'bind_addr = "127.0.0.1:{port}"\ndata_dir = {json.dumps(str(data_dir))}\n'
        f'[log]\nlevel = "{log_level}"\n'
        f"[admission]\nqueue_capacity = {capacity}\n"
        f'[adapter]\nendpoint = "http://127.0.0.1:{engine_port}"\n' + extra
    )


class Started(NamedTuple):
    proc: subprocess.Popen[bytes]
    base: str
    startup_s: float
    """From spawning ``orchestra serve`` to the pool health's ``ready: true``."""
    health: dict[str, Any]


def start_orchestra(
    procs: Procs, name: str, config: str, port: int, timeout_s: float = 60, poll_s: float = 0.01
) -> Started:
    """Spawn ``orchestra serve`` with ``config`` and poll its pool health every ``poll_s``
    until it says ready (never a fixed sleep)."""
    path = procs.tmp / f"{name}.toml"
    path.write_text(config)
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/v1/pools/default/health"
    began = now()
    proc = procs.start(name, [sys.executable, "-m", "orchestra", "serve", "--config", str(path)])
    deadline = began + timeout_s
    with httpx.Client(timeout=2) as probe:
        while now() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{procs.tail(name)}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                health = probe.get(url).json()
                if health.get("ready"):
                    return Started(proc, base, now() - began, health)
            time.sleep(poll_s)
    raise RuntimeError(f"{name}: not ready after {timeout_s} s:\n{procs.tail(name)}")


def log_problems(path: Path) -> Counter[str]:
    """Orchestra's warning, error and critical lines (``level logger: message``), counted."""
    found: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for raw in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(raw)
            except ValueError:
                if raw.strip():
                    found[f"(not JSON) {raw[:200]}"] += 1
                continue
            if isinstance(record, dict) and record.get("level") in ("warning", "error", "critical"):
                found[
                    f"{record.get('level')} {record.get('logger')}: {str(record.get('msg'))[:240]}"
                ] += 1
    return found


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def revision() -> str:
    def out(*argv: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
        return ""

    head = out("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD") or "unknown"
    dirty = out("git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no")
    return f"git {head}{', uncommitted changes' if dirty else ''}"


# --- /proc sampling ----------------------------------------------------------------------


class Sample(NamedTuple):
    t: float
    rss: int
    fds: int


def wait_forgotten(base: str, task_id: str, retention_s: float) -> tuple[str, float]:
    """Poll ``GET /v1/tasks/ID`` of a run's last task until it is forgotten (404), at
    most ``retention_s`` + 30 s (skipped past 10 minutes); what it last said, and the wait."""
    began = now()
    if not task_id or retention_s > 600:
        return "not checked", 0.0
    said = ""
    with httpx.Client(base_url=base, timeout=10) as client:
        while now() - began < retention_s + 30:
            said = f"HTTP {client.get(f'/v1/tasks/{task_id}').status_code}"
            if said == "HTTP 404":
                break
            time.sleep(0.5)
    return said, round(now() - began, 1)


def waves_peak(raw: dict[str, Any]) -> float | None:
    """The highest RSS sampled during one wave, MiB."""
    return round(max(s.rss for s in raw["samples"]) / MIB, 2) if raw["samples"] else None


def sample(pid: int, t0: float = 0.0) -> Sample:
    return Sample(round(now() - t0, 3), rss_bytes(pid), open_fds(pid))


def idle_level(pid: int, seconds: float = IDLE_SAMPLE_S) -> dict[str, Any]:
    """RSS and fds sampled every 0.1 s for ``seconds``: the idle level (RSS: the most seen;
    fds: the median, as a health probe's socket may be open at a moment; "back to idle"
    polls until the count is at most that)."""
    samples = []
    end = now() + seconds
    while now() < end:
        samples.append(sample(pid))
        time.sleep(0.1)
    return {
        "rss_mib": round(max(s.rss for s in samples) / MIB, 2),
        "fds": statistics.median_low([s.fds for s in samples]),
        "fds_min": min(s.fds for s in samples),
        "fds_max": max(s.fds for s in samples),
        "samples": len(samples),
    }


def wait_fds(pid: int, level: int, deadline_s: float) -> dict[str, Any]:
    """Poll the fd count every 0.05 s until it is at most ``level`` or ``deadline_s`` is up."""
    began = now()
    fds = open_fds(pid)
    while fds > level and now() - began < deadline_s:
        time.sleep(0.05)
        fds = open_fds(pid)
    return {
        "returned": fds <= level,
        "seconds": round(now() - began, 3),
        "fds": fds,
        "residual": max(0, fds - level),
        "rss_mib": round(rss_bytes(pid) / MIB, 2),
    }


# --- the SSE wire ------------------------------------------------------------------------


class Event(NamedTuple):
    id: int | None
    name: str
    data: dict[str, Any]


class SseParser:
    """Orchestra's SSE: ``id:``, ``event:``, then one ``data:`` line per event; ``:``
    lines are comments (keepalives). An event is complete at its ``data:`` line."""

    def __init__(self) -> None:
        self.id: int | None = None
        self.name = "message"
        self.comments = 0

    def feed(self, line: str) -> Event | None:
        if not line:
            return None
        if line.startswith(":"):
            self.comments += 1
            return None
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "id":
            self.id = int(value)
        elif field == "event":
            self.name = value
        elif field == "data":
            event = Event(self.id, self.name, json.loads(value))
            self.id, self.name = None, "message"
            return event
        return None


def check_events(
    events: list[Event], prompt: str, seed: int, tokens: int, first_id: int = 0
) -> list[str]:
    """What is wrong with a complete stream read from event ``first_id`` on (empty: all
    good): ids without a gap, ``started`` first (from 0), tokens in order with the fake's
    text for ``prompt`` and ``seed``, ``end`` last with ``tokens_out`` = ``tokens``."""
    problems: list[str] = []
    ids = [e.id for e in events]
    if ids != list(range(first_id, first_id + len(events))):
        problems.append(f"ids not consecutive from {first_id}: {ids[:6]}...{ids[-3:]}")
    if not events:
        return [*problems, "no event"]
    if first_id == 0 and events[0].name != "started":
        problems.append(f"first event {events[0].name}, not started")
    if events[-1].name != "end":
        problems.append(f"last event {events[-1].name} {str(events[-1].data)[:160]}, not end")
    elif events[-1].data.get("tokens_out") != tokens:
        problems.append(f"end tokens_out {events[-1].data.get('tokens_out')}, not {tokens}")
    toks = [e for e in events if e.name == "token"]
    start_i = max(0, first_id - 1)  # ids: 0 started, 1.. the tokens (i = id - 1)
    got_i = [e.data.get("i") for e in toks]
    if got_i != list(range(start_i, tokens)):
        problems.append(f"token i {got_i[:4]}...{got_i[-3:]}, expected {start_i}..{tokens - 1}")
    for e in toks:
        i = e.data.get("i")
        if isinstance(i, int) and e.data.get("t") != " " + generated_word(prompt, seed, i):
            problems.append(f"token {i}: text {e.data.get('t')!r} is not the engine's")
            break
    others = sorted({e.name for e in events} - {"started", "token", "end"})
    if others:
        problems.append(f"unexpected events {others}")
    return problems


CLIENT_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.EADDRNOTAVAIL, errno.ENOBUFS}


def client_side(exc: BaseException) -> bool:
    """Whether a failure is this client's own (its pool, its descriptors or ports), not
    orchestra's (a refused or reset connection, a silence past the read timeout)."""
    if isinstance(exc, httpx.PoolTimeout):
        return True
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in CLIENT_ERRNOS:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:160]!r}"


# --- the load ----------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    """One stream as this client saw it (moments on this process's perf clock)."""

    k: int
    submitted: float
    status: int | None = None
    accepted: float | None = None
    """When the answer's status line and headers came."""
    first_token: float | None = None
    ended: float = 0.0
    events: int = 0
    tokens: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)
    """Orchestra's failures (empty: the stream was complete and right)."""
    client_error: str | None = None
    """This client's own failure, if any."""
    queue_wait_ms: int | None = None
    keepalives: int = 0
    task_id: str = ""


async def one_stream(client: httpx.AsyncClient, k: int, tokens: int) -> Outcome:
    prompt = f"stream {k}: tell me about the sea"
    body = {"prompt": prompt, "max_tokens": tokens, "seed": k}
    o = Outcome(k, now())
    events: list[Event] = []
    parser = SseParser()
    try:
        async with client.stream("POST", "/v1/tasks", json=body, headers=SSE) as response:
            o.status, o.accepted = response.status_code, now()
            o.task_id = response.headers.get("X-Task-Id", "")
            if o.status != 200:
                text = (await response.aread()).decode(errors="replace")[:200]
                o.problems.append(f"HTTP {o.status}: {text}")
            else:
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        events.append(event)
                        if o.first_token is None and event.name == "token":
                            o.first_token = now()
                o.problems = check_events(events, prompt, k, tokens)
    except (httpx.HTTPError, OSError) as exc:
        if client_side(exc):
            o.client_error = describe(exc)
        else:
            o.problems.append(f"transport {describe(exc)} after {len(events)} events")
    o.ended = now()
    o.events, o.keepalives = len(events), parser.comments
    o.tokens = sum(e.name == "token" for e in events)
    if events and events[0].name == "started":
        o.queue_wait_ms = events[0].data.get("queue_wait_ms")
    return o


def httpx_clients(base: str, count: int, read_timeout_s: float) -> list[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=1100, max_keepalive_connections=1100, keepalive_expiry=60)
    timeout = httpx.Timeout(read_timeout_s, connect=30, pool=30)
    return [
        httpx.AsyncClient(base_url=base, timeout=timeout, limits=limits)
        for _ in range(max(1, math.ceil(count / PER_HTTPX)))
    ]


async def warm_up(base: str, tokens: int) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client, trio.open_nursery() as n:
        for k in range(WARMUP_TASKS):
            n.start_soon(one_stream, client, -1 - k, tokens)


async def load(base: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    pools = httpx_clients(base, args.streams, args.read_timeout)
    samples: list[Sample] = []
    depths: list[tuple[float, int]] = []
    outcomes: list[Outcome] = []
    t0 = now()
    cpu0 = cpu_seconds(pid)
    self0 = resource.getrusage(resource.RUSAGE_SELF)

    async def sampler() -> None:
        while True:
            with contextlib.suppress(OSError):
                samples.append(sample(pid, t0))
            await trio.sleep(SAMPLE_EVERY_S)

    async def depth() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=10) as probe:
            while True:
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    health = (await probe.get("/v1/pools/default/health")).json()
                    depths.append((round(now() - t0, 2), int(health["queue_depth"])))
                await trio.sleep(DEPTH_EVERY_S)

    async def run(k: int) -> None:
        outcomes.append(await one_stream(pools[k // PER_HTTPX], k, args.tokens))

    try:
        async with trio.open_nursery() as outer:
            outer.start_soon(sampler)
            outer.start_soon(depth)
            async with trio.open_nursery() as nursery:
                for k in range(args.streams):
                    nursery.start_soon(run, k)
            last_end = now()
            cpu1 = cpu_seconds(pid)
            self1 = resource.getrusage(resource.RUSAGE_SELF)
            with contextlib.suppress(OSError):
                samples.append(sample(pid, t0))
            outer.cancel_scope.cancel()
    finally:
        for client in pools:
            await client.aclose()  # every connection to orchestra closed
    client_cpu = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
    return {
        "outcomes": outcomes,
        "samples": samples,
        "depths": depths,
        "t0": t0,
        "wall_s": last_end - t0,
        "cpu_s": cpu1 - cpu0,
        "client_cpu_s": client_cpu,
    }


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summarize(raw: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    outcomes: list[Outcome] = raw["outcomes"]
    good = [o for o in outcomes if not o.problems and o.client_error is None]
    bad = [o for o in outcomes if o.problems]
    kinds: Counter[str] = Counter(o.problems[0].split(":")[0] for o in bad)
    tokens = sum(o.tokens for o in outcomes)
    cpu = raw["cpu_s"]
    samples: list[Sample] = raw["samples"]
    peak_rss = max(samples, key=lambda s: s.rss)
    peak_fds = max(samples, key=lambda s: s.fds)
    firsts = [o.first_token - raw["t0"] for o in outcomes if o.first_token is not None]
    ends = [o.ended - raw["t0"] for o in good]
    accepted = [o.accepted - raw["t0"] for o in outcomes if o.accepted is not None]
    waits = [float(o.queue_wait_ms) for o in good if o.queue_wait_ms is not None]
    return {
        "streams": args.streams,
        "tokens_per_stream": args.tokens,
        "complete_and_right": len(good),
        "orchestra_failures": len(bad),
        "orchestra_failures_by_kind": dict(kinds),
        "orchestra_failure_samples": [
            f"stream {o.k}: {'; '.join(o.problems)[:300]}" for o in bad[:8]
        ],
        "refused_429": sum(o.status == 429 for o in outcomes),
        "other_http_status": dict(
            Counter(str(o.status) for o in outcomes if o.status not in (200, 429, None))
        ),
        "client_failures": sum(o.client_error is not None for o in outcomes),
        "client_failure_samples": sorted({o.client_error for o in outcomes if o.client_error})[:5],
        "streams_reported": len(outcomes),
        "tokens_received": tokens,
        "tokens_expected": args.streams * args.tokens,
        "keepalive_comments": sum(o.keepalives for o in outcomes),
        "wall_s": round(raw["wall_s"], 3),
        "tokens_per_s": round(tokens / raw["wall_s"], 1),
        "all_answered_by_s": round(max(accepted, default=0), 3),
        "first_token_s_p50": round(pct(firsts, 0.5) or 0, 3),
        "first_token_s_max": round(max(firsts, default=0), 3),
        "end_s_p50": round(pct(ends, 0.5) or 0, 3),
        "queue_wait_ms_p50": pct(waits, 0.5),
        "queue_wait_ms_max": max(waits, default=None),
        "queue_depth_max_seen": max((d for _, d in raw["depths"]), default=None),
        "orchestra_cpu_s": round(cpu, 3),
        "orchestra_cores": round(cpu / raw["wall_s"], 3),
        "orchestra_cpu_ms_per_1k_tokens": round(cpu / tokens * 1e6, 1) if tokens else None,
        "tokens_per_orchestra_cpu_s": round(tokens / cpu, 1) if cpu else None,
        "client_cpu_s": round(raw["client_cpu_s"], 3),
        "peak_rss_mib": round(peak_rss.rss / MIB, 2),
        "peak_rss_at_s": peak_rss.t,
        "peak_fds": peak_fds.fds,
        "peak_fds_at_s": peak_fds.t,
        "samples_taken": len(samples),
    }


# --- report ------------------------------------------------------------------------------


def markdown(r: dict[str, Any]) -> str:
    s, idle, after, setup = r["summary"], r["idle_before"], r["after"], r["setup"]
    rows = "".join(
        f"| {t['name']} | {t['value']} | {t['target']} | {t['met']} |\n" for t in r["targets"]
    )
    logs = "".join(f"- {n} x `{line}`\n" for line, n in r["orchestra_log_problems"].items())
    failures = s["orchestra_failure_samples"] + s["client_failure_samples"]
    fails = "".join(f"- {x}\n" for x in failures)
    return (
        f"# {s['streams']} concurrent open streams through one orchestra (issue 18 A)\n\n"
        f"orchestra {setup['revision']}; {setup['machine']['cores']} cores "
        f"({setup['machine']['cpu']}), {setup['machine']['platform']}, Python "
        f"{setup['machine']['python']}; {setup['date']}; load average "
        f"{setup['machine']['load_average']} before, {setup['load_average_after']} after.\n"
        f"Command: `{setup['command']}`\n\n"
        f"Engine: {setup['engine']}. Orchestra: attached mode, logging at "
        f"`{setup['log_level']}` to a file, RLIMIT_NOFILE {setup['orchestra_nofile']} "
        f"(client {setup['client_nofile']}). Each stream: one `POST /v1/tasks` with `Accept: "
        f"text/event-stream`, {s['tokens_per_stream']} tokens, read to its `end`; httpx on "
        f"Trio, {PER_HTTPX} streams per AsyncClient. Every process on the same "
        f"{setup['machine']['cores']} cores.\n\n"
        "Configuration:\n\n```toml\n" + setup["config"] + "```\n\n"
        "| figure | value | target | met |\n|---|---|---|---|\n"
        + rows
        + "\n"
        "| measure | value |\n|---|---|\n"
        f"| streams complete and right / started | {s['complete_and_right']} / {s['streams']} |\n"
        f"| orchestra's failures (by kind) | {s['orchestra_failures']} "
        f"{s['orchestra_failures_by_kind'] or ''}".rstrip()
        + " |\n"
        f"| 429 refusals; other HTTP statuses | {s['refused_429']}; "
        f"{s['other_http_status'] or 'none'} |\n"
        f"| this client's own failures | {s['client_failures']} |\n"
        f"| tokens received / expected | {s['tokens_received']} / {s['tokens_expected']} |\n"
        f"| wall time, first submit to last end | {s['wall_s']} s |\n"
        f"| tokens/s through orchestra | {s['tokens_per_s']} |\n"
        f"| every submit answered (200 + headers) by | {s['all_answered_by_s']} s |\n"
        f"| first token: p50 / last, s after the start | {s['first_token_s_p50']} / "
        f"{s['first_token_s_max']} |\n"
        f"| queue wait p50 / max, ms | {s['queue_wait_ms_p50']} / {s['queue_wait_ms_max']} |\n"
        f"| queue_depth, most seen | {s['queue_depth_max_seen']} |\n"
        f"| `: keepalive` comments received | {s['keepalive_comments']} |\n"
        f"| orchestra CPU over the run | {s['orchestra_cpu_s']} s ({s['orchestra_cores']} "
        f"cores) |\n"
        f"| orchestra CPU per 1,000 tokens | {s['orchestra_cpu_ms_per_1k_tokens']} ms |\n"
        f"| tokens per orchestra CPU-second | {s['tokens_per_orchestra_cpu_s']} |\n"
        f"| this client's CPU | {s['client_cpu_s']} s |\n"
        f"| RSS: at ready / idle before / peak / after | {r['rss_at_ready_mib']} / "
        f"{idle['rss_mib']} / {s['peak_rss_mib']} (at {s['peak_rss_at_s']} s) / "
        f"{after['rss_mib']} MiB |\n"
        f"| open fds: idle before / peak / after | {idle['fds']} / {s['peak_fds']} (at "
        f"{s['peak_fds_at_s']} s) / {after['fds']} |\n"
        f"| fds back at the idle level | {after['returned']}, {after['seconds']} s after the "
        f"client closed its connections (residual {after['residual']}) |\n"
        f"| orchestra start-up, spawn to ready | {r['startup_s']} s |\n"
        f"| orchestra's exit code on SIGTERM | {r['exit_code']} |\n\n"
        "The waves, one after another against the same orchestra (the first wave's figures "
        "are the ones above; 'after' is once its streams closed):\n\n"
        "| wave | complete and right | 429 | orchestra failures | peak RSS MiB | RSS after MiB "
        "| fds after | RSS once its tasks are forgotten MiB |\n|---|---|---|---|---|---|---|---|\n"
        + "".join(
            f"| {w['wave']} | {w['complete_and_right']} | {w['refused_429']} | "
            f"{w['orchestra_failures']} | {w['peak_rss_mib']} | {w['rss_after_mib']} | "
            f"{w['after']['fds']} | {w['once_forgotten'].get('rss_mib', 'not waited for')} |\n"
            for w in r["waves"]
        )
        + "\n"
        "RSS is `/proc/PID/statm` resident (the counter `VmRSS` shows), fds the entries of "
        f"`/proc/PID/fd`, sampled every {SAMPLE_EVERY_S} s by a separate Trio task of the "
        "client; idle = over 2 s after 8 warm-up tasks (once their connections closed): RSS "
        "the most seen, fds the median. CPU = utime + stime "
        "from `/proc/PID/stat` between the first submit and the last end.\n\n"
        "Failures (first few):\n\n" + (fails or "- none\n") + "\n"
        "Warning and error lines in orchestra's log (count x line):\n\n" + (logs or "- none\n")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--token-delay-ms", type=float, default=3.0)
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=120.0,
        help="client read timeout, s (a queued stream is silent up to 15 s)",
    )
    parser.add_argument("--fd-deadline", type=float, default=30.0)
    parser.add_argument(
        "--waves", type=int, default=3, help="rounds of --streams streams, one after another"
    )
    parser.add_argument(
        "--retention-s",
        type=float,
        default=None,
        help="[streams] retention_s; when given, each wave's tasks are waited for until "
        "forgotten (404) and RSS is read again",
    )
    parser.add_argument("--out", default=str(OUT), help="path prefix of the .json and .md")
    args = parser.parse_args()
    nofile = raise_nofile()
    need = args.streams + 256
    if nofile["soft"] < need:
        sys.exit(f"RLIMIT_NOFILE {nofile} is below the {need} descriptors this run needs")
    engine_port, port = free_port(), free_port()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp_name:
        tmp = Path(tmp_name)
        procs = Procs(tmp)
        try:
            spawn_engine(procs, engine_port, args.slots, args.token_delay_ms)
            retention = (
                "" if args.retention_s is None else f"[streams]\nretention_s = {args.retention_s}\n"
            )
            config = attached_config(
                port, engine_port, tmp / "data", args.log_level, max(1000, args.streams), retention
            )
            up = start_orchestra(procs, "orchestra", config, port)
            pid = up.proc.pid
            orchestra_nofile = nofile_of(pid)
            if orchestra_nofile is not None and orchestra_nofile < need:
                raise RuntimeError(f"orchestra's RLIMIT_NOFILE {orchestra_nofile} < {need}")
            rss_at_ready, fds_at_ready = round(rss_bytes(pid) / MIB, 2), open_fds(pid)
            trio.run(warm_up, up.base, args.tokens)
            settled = wait_fds(pid, fds_at_ready, 10)  # the warm-up's connections closed
            idle = idle_level(pid)
            print(
                f"ready in {up.startup_s:.3f} s; idle {idle}; {args.streams} streams ...",
                flush=True,
            )
            load_avg = [round(x, 2) for x in os.getloadavg()]
            waves: list[dict[str, Any]] = []
            for wave in range(args.waves):
                raw = trio.run(load, up.base, pid, args)
                after = wait_fds(pid, idle["fds"], args.fd_deadline)
                forgotten: dict[str, Any] = {}
                if args.retention_s is not None:  # every task of the wave forgotten, then RSS
                    last = max(raw["outcomes"], key=lambda o: o.ended).task_id
                    said, waited = wait_forgotten(up.base, last, args.retention_s)
                    forgotten = {
                        "last_task": said,
                        "waited_s": waited,
                        "rss_mib": round(rss_bytes(pid) / MIB, 2),
                    }
                waves.append(
                    {
                        "wave": wave + 1,
                        "summary": summarize(raw, args),
                        "after": after,
                        "rss_after_mib": round(rss_bytes(pid) / MIB, 2),
                        "peak_rss_mib": waves_peak(raw),
                        "once_forgotten": forgotten,
                    }
                )
                print(f"wave {wave + 1}: {waves[-1]['rss_after_mib']} MiB after", flush=True)
            health = httpx.get(f"{up.base}/v1/pools/default/health", timeout=10).json()
            code = procs.stop("orchestra")
            problems = log_problems(procs.log("orchestra"))
        except BaseException:
            kept = Path(tempfile.gettempdir()) / f"bench-streams-logs-{os.getpid()}"
            with contextlib.suppress(OSError):
                shutil.copytree(tmp, kept, dirs_exist_ok=True)
                print(f"failed; logs kept in {kept}", file=sys.stderr)
            raise
        finally:
            procs.stop_all()
    summary = waves[0]["summary"]
    results = {
        "summary": summary,
        "waves": [
            {k: w[k] for k in ("wave", "after", "rss_after_mib", "peak_rss_mib", "once_forgotten")}
            | {
                key: w["summary"][key]
                for key in ("complete_and_right", "refused_429", "orchestra_failures")
            }
            for w in waves
        ],
        "idle_before": idle,
        "after": after,
        "rss_at_ready_mib": rss_at_ready,
        "fds_at_ready": fds_at_ready,
        "after_warm_up": settled,
        "startup_s": round(up.startup_s, 3),
        "health_after": {
            k: health.get(k) for k in ("ready", "state", "queue_depth", "slots_busy", "slots_total")
        },
        "exit_code": code,
        "orchestra_log_problems": dict(problems.most_common()),
        "samples": [list(s) for s in raw["samples"]],
        "queue_depth_samples": raw["depths"],
        "setup": {
            "command": ".venv/bin/python bench/streams.py " + " ".join(sys.argv[1:]),
            "machine": machine() | {"load_average": load_avg},
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "revision": revision(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "engine": f"fake llama-server, {args.slots} slots, {args.token_delay_ms} ms per token",
            "log_level": args.log_level,
            "config": config,
            "client_nofile": nofile,
            "orchestra_nofile": orchestra_nofile,
        },
    }
    clean = all(
        w["summary"]["complete_and_right"] == args.streams
        and w["summary"]["refused_429"] == 0
        and w["summary"]["orchestra_failures"] == 0
        for w in waves
    )
    rss_after = [w["once_forgotten"].get("rss_mib", w["rss_after_mib"]) for w in waves]
    when = "once its tasks were forgotten" if args.retention_s is not None else "after"
    results["targets"] = [
        {
            "name": f"streams complete, in order, full token count ({args.streams})",
            "value": summary["complete_and_right"],
            "target": f"= {args.streams}, 0 errors, 0 429",
            "met": clean,
        },
        {
            "name": "orchestra's fds back at the idle level after the streams closed",
            "value": f"{after['fds']} vs idle {idle['fds']} after {after['seconds']} s",
            "target": f"<= idle within {args.fd_deadline} s",
            "met": all(w["after"]["returned"] for w in waves),
        },
        {
            "name": f"orchestra's RSS {when} each wave (MiB), idle before the first",
            "value": f"{rss_after} vs idle {idle['rss_mib']}",
            "target": "back at the idle level",
            "met": rss_after[-1] <= idle["rss_mib"] * 1.05,
        },
        {
            "name": "RSS does not grow wave over wave (memory reused, not leaked)",
            "value": f"last wave {rss_after[-1]} MiB vs first {rss_after[0]} MiB",
            "target": "last <= first + 5%",
            "met": rss_after[-1] <= rss_after[0] * 1.05,
        },
        {
            "name": "orchestra's log: error lines",
            "value": sum(n for line, n in problems.items() if not line.startswith("warning")),
            "target": 0,
            "met": not any(not x.startswith("warning") for x in problems),
        },
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(results, indent=2) + "\n")
    Path(f"{out}.md").write_text(markdown(results))
    print(
        json.dumps(
            {k: v for k, v in results.items() if k not in ("samples", "queue_depth_samples")},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
