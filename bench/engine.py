"""What orchestra adds on top of a real engine: llama-server directly vs through orchestra
(its v1 face and its OpenAI face) vs through LiteLLM's proxy, with the CPU each costs.

Orchestra runs in owned mode (``orchestra serve`` with a ``[replica]`` table) and starts
llama-server itself on the small model; every other path talks to that same llama-server
process, so all paths use one engine. Orchestra, the engine, LiteLLM's proxy and this load
client (httpx on Trio) each run in their own process. Every task asks for 32 streamed
tokens at temperature 0 with its own prompt and seed, and the prompt cache off on every
path: ``cache_prompt: false`` in the body sent to llama-server directly and to LiteLLM
(which forwards it), and what orchestra sends for a task with a seed on both its faces.
The paths:

- ``direct``: llama-server's native ``POST /completion`` (stream);
- ``direct-openai``: llama-server's ``POST /v1/completions`` (``stream: true``,
  ``stream_options.include_usage``);
- ``orchestra``: orchestra's v1 face in two requests (POST /v1/tasks answers 202, then GET
  its stream_url);
- ``orchestra-one``: orchestra's v1 face in one request (POST /v1/tasks with ``Accept:
  text/event-stream`` answers with the stream);
- ``orchestra-openai``: orchestra's OpenAI face, ``POST /v1/completions`` with the same
  body as ``direct-openai`` (less ``cache_prompt``, which the seed implies);
- ``litellm``: LiteLLM's proxy (``litellm --config``, model ``openai/smol`` with
  ``api_base`` the engine's ``/v1`` and its api key, so a text completion goes to
  llama-server's ``/v1/completions``), its ``POST /v1/completions``; telemetry, the remote
  cost map and spend logs off, one worker, no master key, ``LITELLM_LOG=ERROR``.

The two direct paths get a new connection per task (llama-server closes its connection
after each streamed answer; a client that reuses it races the close); the orchestra paths
and LiteLLM keep theirs alive. Tokens are counted by the engine
(``tokens_predicted``, ``tokens_out``, ``usage.completion_tokens``). After a warm-up that is
not counted (3 tasks on every path, then one task per client at once on each concurrent
path), measured interleaved in one run:

- sequential: N tasks, each sent to every path in rotating order; time to first token
  (TTFT, from sending the request to the first non-empty text) and total time per task,
  median and p90; the added TTFT and added total of a path are the medians of its paired
  differences with its direct twin (the v1 face with ``direct``, the OpenAI face and
  LiteLLM with ``direct-openai``), and how many tasks streamed the same text as ``direct``;
- concurrent: 8 clients each running K tasks back to back, in rounds that alternate
  ``direct``, ``orchestra`` (the two-request form) and ``litellm``, rotating which goes
  first (the paths of one round get the same prompts). Per round: generated tokens per
  second; the CPU time (utime + stime from ``/proc/<pid>/stat``, read right before and
  after the round; ``bench/procstat.py``) of orchestra, llama-server, LiteLLM and this
  client, as ms per 1,000 generated tokens (orchestra's in the other paths' rounds is its
  idle cost); the engine's slot busy fraction, the mean over polls of ``GET /slots`` (with
  the engine's api key, every 25 ms, from a task of its own in this client, on a keep-alive
  connection with HTTP written by hand so that the poller stays light: well under 1 ms of
  CPU a poll here, the engine's share included) of the share of slots with
  ``is_processing`` (skipped, and said so, where ``/slots`` answers 404 or 501);
  orchestra's RSS and open file descriptors after the round. Medians over rounds.

Targets (recorded with ``met: true/false``, ``null`` where not measured): tokens/s at 8
clients at least 0.99x direct; added TTFT at most 1 ms (median) on the v1 face (one
request) and on the OpenAI face; orchestra's CPU at most 100 ms per 1,000 tokens;
orchestra's slot busy fraction at least direct's. A task that fails or is refused on any
path stops the run (the servers' logs are then copied to /tmp/bench-engine-PID): numbers
with failures in them would mislead.

Get the LiteLLM venv first (outside the clone; LiteLLM is no dependency of orchestra)::

    scripts/bench-venv-litellm          # prints the path of its litellm executable

Usage: .venv/bin/python bench/engine.py [--sequential 30] [--rounds 4] [--per-client 64]
           [--parallel 2] [--threads 2] [--skip-litellm] [--litellm PATH]
           [--binary PATH] [--model PATH] [--out PREFIX]
Without --litellm it runs scripts/bench-venv-litellm (which installs once, then is quick);
without --binary / --model orchestra uses what ``orchestra engine install`` cached.
Writes proof-bundle/bench/issue18-engine.json and issue18-engine.md (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from openai_face import (  # the sibling bench modules (run as a script)
    LITELLM_ENV,
    Servers,
    cpu_model,
    free_port,
    litellm_env,
    load,
    output_of,
)
from procstat import cpu_seconds, open_fds, rss_bytes

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "proof-bundle" / "bench" / "issue18-engine"
TOKENS = 32
CLIENTS = 8
WARMUP = 3
SLOT_POLL_S = 0.025
TARGET_TOKENS_RATIO = 0.99
TARGET_ADDED_TTFT_MS = 1.0
TARGET_CPU_MS_PER_1K = 100.0
CLOSE = {"Connection": "close"}
"""llama-server closes the connection after each streamed response although it announces
keep-alive; a client that sends its next request at once on that connection races the close
(RemoteProtocolError). So the direct paths ask for a new connection per task, which is what
the engine gives them anyway."""
TOPICS = ("a lighthouse", "a river", "an old clock", "a mountain town", "a robot", "the sea")
SEQUENTIAL_PATHS = (
    "direct", "direct-openai", "orchestra", "orchestra-one", "orchestra-openai", "litellm",
)  # fmt: skip
CONCURRENT_PATHS = ("direct", "orchestra", "litellm")
BASELINE = {
    "orchestra": "direct",
    "orchestra-one": "direct",
    "orchestra-openai": "direct-openai",
    "litellm": "direct-openai",
}
"""The direct path each path's TTFT is paired with: the same engine endpoint family."""
LITELLM_MODEL = "smol"


class Run(NamedTuple):
    """What one task came back with."""

    ttft: float
    total: float
    tokens: int
    text: str


def prompt_of(name: str, i: int) -> tuple[str, int]:
    """A distinct prompt and seed per task, so no path gains from any cache."""
    prompt = f"Story {name}-{i}. Write a long story about {TOPICS[i % len(TOPICS)]}, part {i}:\n"
    return prompt, zlib.crc32(prompt.encode())


# --- the paths -----------------------------------------------------------------------------


async def direct_task(client: httpx.AsyncClient, prompt: str, seed: int) -> Run:
    """One streamed /completion straight to llama-server."""
    body = {
        "prompt": prompt, "n_predict": TOKENS, "temperature": 0, "seed": seed,
        "stream": True, "cache_prompt": False,
    }  # fmt: skip
    start = time.perf_counter()
    ttft, tokens, text = 0.0, -1, []
    async with client.stream("POST", "/completion", json=body, headers=CLOSE) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            frame = json.loads(line[6:])
            if frame.get("content"):
                ttft = ttft or time.perf_counter() - start
                text.append(frame["content"])
            if frame.get("stop"):
                tokens = int(frame.get("tokens_predicted", 0))
    if tokens < 0:
        raise RuntimeError(f"direct: stream ended without a stop frame ({prompt!r})")
    return Run(ttft, time.perf_counter() - start, tokens, "".join(text))


async def openai_task(
    client: httpx.AsyncClient,
    prompt: str,
    seed: int,
    *,
    name: str,
    model: str,
    extra: dict[str, Any],
    headers: dict[str, str],
) -> Run:
    """One streamed ``POST /v1/completions``, read to ``data: [DONE]``; the tokens are
    ``usage.completion_tokens`` (a stream without usage stops the run)."""
    body = {
        "model": model, "prompt": prompt, "max_tokens": TOKENS, "temperature": 0,
        "seed": seed, "stream": True, "stream_options": {"include_usage": True}, **extra,
    }  # fmt: skip
    start = time.perf_counter()
    ttft, tokens, text, done = 0.0, -1, [], False
    async with client.stream("POST", "/v1/completions", json=body, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"{name}: {response.status_code} {response.text[:500]}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                continue
            frame = json.loads(data)
            if "error" in frame:
                raise RuntimeError(f"{name}: error in the stream: {data[:500]}")
            for choice in frame.get("choices") or ():
                if choice.get("text"):
                    ttft = ttft or time.perf_counter() - start
                    text.append(choice["text"])
            if usage := frame.get("usage"):
                tokens = int(usage["completion_tokens"])
    if not done:
        raise RuntimeError(f"{name}: stream ended without data: [DONE] ({prompt!r})")
    if tokens < 0:
        raise RuntimeError(f"{name}: no usage in the stream ({prompt!r})")
    return Run(ttft, time.perf_counter() - start, tokens, "".join(text))


async def read_events(response: httpx.Response, start: float, prompt: str) -> Run:
    """Read one orchestra SSE stream to its end."""
    ttft, tokens, text, event = 0.0, -1, [], ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == "token":
            ttft = ttft or time.perf_counter() - start
            text.append(json.loads(line[6:])["t"])
        elif line.startswith("data: ") and event == "end":
            tokens = int(json.loads(line[6:])["tokens_out"])
        elif line.startswith("data: ") and event == "error":
            raise RuntimeError(f"orchestra: task failed: {line[6:]}")
    if tokens < 0:
        raise RuntimeError(f"orchestra: stream ended without an end event ({prompt!r})")
    return Run(ttft, time.perf_counter() - start, tokens, "".join(text))


async def orchestra_task(client: httpx.AsyncClient, prompt: str, seed: int) -> Run:
    """One task submitted to orchestra (202), then its stream_url read: two requests."""
    body = {"prompt": prompt, "max_tokens": TOKENS, "temperature": 0, "seed": seed}
    start = time.perf_counter()
    accepted = await client.post("/v1/tasks", json=body)
    if accepted.status_code != 202:
        raise RuntimeError(f"orchestra: POST /v1/tasks: {accepted.status_code} {accepted.text}")
    async with client.stream("GET", accepted.json()["stream_url"]) as response:
        response.raise_for_status()
        return await read_events(response, start, prompt)


async def orchestra_one_request(client: httpx.AsyncClient, prompt: str, seed: int) -> Run:
    """One task submitted with ``Accept: text/event-stream``: the POST answers with the
    stream itself, one request like the direct path."""
    body = {"prompt": prompt, "max_tokens": TOKENS, "temperature": 0, "seed": seed}
    start = time.perf_counter()
    headers = {"Accept": "text/event-stream"}
    async with client.stream("POST", "/v1/tasks", json=body, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"orchestra: POST /v1/tasks: {response.status_code} {response.text}")
        return await read_events(response, start, prompt)


Runner = Callable[[httpx.AsyncClient, str, int], Awaitable[Run]]


class Route(NamedTuple):
    """One path under test: its name, the client it is sent on, and how."""

    name: str
    client: httpx.AsyncClient
    run: Runner


def rotate(items: list[Any], by: int) -> list[Any]:
    by %= len(items)
    return items[by:] + items[:by]


# --- the concurrent rounds -----------------------------------------------------------------


class SlotPoller:
    """``GET /slots`` on a keep-alive connection of its own, HTTP/1.1 written and read by
    hand: an httpx request costs this client about 2 ms of CPU on this machine class,
    which at one poll every 25 ms would take a tenth of a core from the engine and the
    servers under test (the same on every path, but not light)."""

    def __init__(self, host: str, port: int, api_key: str) -> None:
        self.host, self.port = host, port
        self.request = (
            f"GET /slots HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {api_key}\r\n\r\n"
        ).encode()
        self.stream: trio.SocketStream | None = None
        self.buffer = b""

    async def busy_fraction(self) -> float | None:
        """The share of the engine's slots with ``is_processing``; None when the engine
        closed the connection twice in a row (keep-alive ends every 100 requests)."""
        for _ in range(2):
            try:
                if self.stream is None:
                    self.stream = await trio.open_tcp_stream(self.host, self.port)
                    self.buffer = b""
                await self.stream.send_all(self.request)
                slots = json.loads(await self._response())
                return sum(bool(s.get("is_processing")) for s in slots) / len(slots)
            except (OSError, trio.BrokenResourceError, EOFError):
                await self.close()
        return None

    async def _response(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            await self._more()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(":", 1) for line in lines)
        if status.split()[1] != "200" or "content-length" not in headers:
            raise RuntimeError(f"GET /slots: {status} ({headers})")
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            await self._more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        if headers.get("connection", "").strip() == "close":
            await self.close()
        return body

    async def _more(self) -> None:
        assert self.stream is not None
        chunk = await self.stream.receive_some(65536)
        if not chunk:
            raise EOFError("the engine closed the connection")
        self.buffer += chunk

    async def close(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            await trio.aclose_forcefully(stream)


async def poll_slots(poller: SlotPoller, samples: list[float]) -> None:
    """Until cancelled: every SLOT_POLL_S, the share of the engine's slots that are busy
    (a poll that found no connection is skipped, not counted)."""
    next_at = trio.current_time()
    try:
        while True:
            if (fraction := await poller.busy_fraction()) is not None:
                samples.append(fraction)
            next_at += SLOT_POLL_S
            await trio.sleep_until(max(next_at, trio.current_time()))
    finally:  # cancelled mid-response, maybe: the next round starts on a new connection
        with trio.CancelScope(shield=True):
            await poller.close()


def cpu_of(procs: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in procs.items()}


async def concurrent_round(
    path: Route,
    per_client: int,
    name: str,
    procs: dict[str, int],
    slots: SlotPoller | None,
) -> dict[str, Any]:
    """CLIENTS clients each running ``per_client`` tasks in a row; ``name`` picks the
    prompts, so the paths of one round do the same work. With ``procs`` (name: pid), the
    CPU each process spent in the round; with ``slots``, the engine's slot busy fraction."""
    runs: list[Run] = []  # appended after each await: no lost updates between clients
    samples: list[float] = []

    async def one_client(k: int) -> None:
        for i in range(per_client):
            runs.append(await path.run(path.client, *prompt_of(f"{name}-c{k}", i)))

    async with trio.open_nursery() as outer:
        before = cpu_of(procs)
        start = time.perf_counter()
        if slots is not None:
            outer.start_soon(poll_slots, slots, samples)
        async with trio.open_nursery() as nursery:
            for k in range(CLIENTS):
                nursery.start_soon(one_client, k)
        seconds = time.perf_counter() - start
        outer.cancel_scope.cancel()
    after = cpu_of(procs)
    tokens = sum(r.tokens for r in runs)
    found: dict[str, Any] = {
        "tasks": len(runs),
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 2),
        "ttft_ms_median": ms(statistics.median(r.ttft for r in runs)),
    }
    if procs:
        spent = {p: after[p] - before[p] for p in procs}
        found["cpu_ms"] = {p: round(s * 1000, 1) for p, s in spent.items()}
        found["cpu_ms_per_1k_tokens"] = {p: round(s * 1e6 / tokens, 2) for p, s in spent.items()}
    if slots is not None:
        found["slot_polls"] = len(samples)
        found["slot_busy_fraction"] = round(statistics.fmean(samples), 4) if samples else None
    if "orchestra" in procs:
        found["orchestra_rss_mib"] = round(rss_bytes(procs["orchestra"]) / 2**20, 1)
        found["orchestra_open_fds"] = open_fds(procs["orchestra"])
    return found


def ms(value: float) -> float:
    return round(value * 1000, 3)


def median_ms(values: list[float]) -> float:
    return ms(statistics.median(values))


def p90_ms(values: list[float]) -> float:
    return ms(sorted(values)[int(0.9 * len(values))])


def engine_of(orchestra: str) -> tuple[int, str]:
    """The pid of the llama-server orchestra started, and the api key orchestra gave it
    (which it refuses calls without), read from the engine process's environment: this
    user may, nobody else can."""
    replicasets = httpx.get(f"{orchestra}/v1/replicasets", timeout=10).json()
    pid = int(replicasets["replicasets"][0]["replicas"][0]["pid"])
    for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if item.startswith(b"LLAMA_API_KEY="):
            return pid, item.split(b"=", 1)[1].decode()
    return pid, ""


def slots_endpoint(engine: str, key: dict[str, str]) -> tuple[bool, str]:
    """Whether the engine answers ``GET /slots``, and what it said."""
    response = httpx.get(f"{engine}/slots", headers=key, timeout=10)
    if response.status_code in (404, 501):
        return False, f"unavailable: GET /slots answered {response.status_code}"
    response.raise_for_status()
    return True, f"GET /slots answers ({len(response.json())} slots)"


async def measure(
    bases: dict[str, str],
    api_key: str,
    openai_model: str,
    procs: dict[str, int],
    poll: bool,
    args: argparse.Namespace,
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    timeout = httpx.Timeout(300, connect=10)
    key = {"Authorization": f"Bearer {api_key}"}
    async with contextlib.AsyncExitStack() as stack:

        async def client(base: str, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
            made = httpx.AsyncClient(base_url=base, timeout=timeout, limits=limits, headers=headers)
            return await stack.enter_async_context(made)

        direct = await client(bases["engine"], key)
        orch = await client(bases["orchestra"])
        port = int(bases["engine"].rsplit(":", 1)[1])
        slots = SlotPoller("127.0.0.1", port, api_key) if poll else None
        routes = {
            "direct": Route("direct", direct, direct_task),
            "direct-openai": Route("direct-openai", direct, functools.partial(
                openai_task, name="direct-openai", model=LITELLM_MODEL,
                extra={"cache_prompt": False}, headers=CLOSE,
            )),
            "orchestra": Route("orchestra", orch, orchestra_task),
            "orchestra-one": Route("orchestra-one", orch, orchestra_one_request),
            "orchestra-openai": Route("orchestra-openai", orch, functools.partial(
                openai_task, name="orchestra-openai", model=openai_model, extra={}, headers={},
            )),
        }  # fmt: skip
        if "litellm" in bases:
            lite = await client(bases["litellm"])
            routes["litellm"] = Route("litellm", lite, functools.partial(
                openai_task, name="litellm", model=LITELLM_MODEL,
                extra={"cache_prompt": False}, headers={},
            ))  # fmt: skip
        sequential_routes = [routes[n] for n in SEQUENTIAL_PATHS if n in routes]
        concurrent_routes = [routes[n] for n in CONCURRENT_PATHS if n in routes]

        for i in range(WARMUP):  # warm every path; not counted
            for route in rotate(sequential_routes, i):
                await route.run(route.client, *prompt_of("warm", i))
        for route in concurrent_routes:  # the first batch over all slots: not counted
            await concurrent_round(route, 1, "warm", {}, None)

        sequential: list[dict[str, Any]] = []
        for i in range(args.sequential):
            prompt, seed = prompt_of("seq", i)
            order = rotate(sequential_routes, i)
            record: dict[str, Any] = {"order": [r.name for r in order]}
            texts: dict[str, str] = {}
            for route in order:
                run = await route.run(route.client, prompt, seed)
                texts[route.name] = run.text
                record[route.name] = {
                    "ttft_ms": ms(run.ttft), "total_ms": ms(run.total), "tokens": run.tokens,
                }  # fmt: skip
            for name in texts:
                record[name]["same_text_as_direct"] = texts[name] == texts["direct"]
            sequential.append(record)

        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):  # the same prompts for every path; rotate the first
            order = rotate(concurrent_routes, r)
            record = {"order": [route.name for route in order]}
            for route in order:
                record[route.name] = await concurrent_round(
                    route, args.per_client, f"r{r}", procs, slots
                )
                print(f"round {r} {route.name}: {json.dumps(record[route.name])}", flush=True)
            rounds.append(record)
    return {"sequential_raw": sequential, "rounds": rounds}


# --- the figures -----------------------------------------------------------------------------


def summarize(raw: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    seq, rounds = raw["sequential_raw"], raw["rounds"]
    names = [n for n in SEQUENTIAL_PATHS if seq and n in seq[0]]
    sequential: dict[str, Any] = {"tasks_per_path": len(seq)}
    for name in names:
        ttfts = [s[name]["ttft_ms"] for s in seq]
        figures: dict[str, Any] = {
            "ttft_ms_median": round(statistics.median(ttfts), 3),
            "ttft_ms_p90": sorted(ttfts)[int(0.9 * len(ttfts))],
            "total_ms_median": round(statistics.median(s[name]["total_ms"] for s in seq), 3),
            "tokens_median": statistics.median(s[name]["tokens"] for s in seq),
            "tasks_with_the_same_text_as_direct": sum(s[name]["same_text_as_direct"] for s in seq),
        }
        if base := BASELINE.get(name):
            diffs = [s[name]["ttft_ms"] - s[base]["ttft_ms"] for s in seq]
            figures["paired_with"] = base
            figures["added_ttft_ms_median_of_paired_differences"] = round(
                statistics.median(diffs), 3
            )
            figures["added_ttft_ms_p90"] = round(sorted(diffs)[int(0.9 * len(diffs))], 3)
            figures["added_total_ms_median_of_paired_differences"] = round(
                statistics.median(s[name]["total_ms"] - s[base]["total_ms"] for s in seq), 3
            )
        sequential[name] = figures

    concurrent: dict[str, Any] = {
        "clients": CLIENTS, "tasks_per_client_per_round": args.per_client,
        "rounds": len(rounds),
    }  # fmt: skip
    names = [n for n in CONCURRENT_PATHS if rounds and n in rounds[0]]
    for name in names:
        mine = [r[name] for r in rounds]
        figures = {
            "tokens_per_s_median": round(statistics.median(m["tokens_per_s"] for m in mine), 2),
            "tokens_per_s_per_round": [m["tokens_per_s"] for m in mine],
            "cpu_ms_per_1k_tokens_median": {
                proc: round(statistics.median(m["cpu_ms_per_1k_tokens"][proc] for m in mine), 2)
                for proc in mine[0]["cpu_ms_per_1k_tokens"]
            },
            "cpu_ms_per_1k_tokens_per_round": {
                proc: [m["cpu_ms_per_1k_tokens"][proc] for m in mine]
                for proc in mine[0]["cpu_ms_per_1k_tokens"]
            },
        }
        busy = [m["slot_busy_fraction"] for m in mine if m.get("slot_busy_fraction") is not None]
        if busy:
            figures["slot_busy_fraction_median"] = round(statistics.median(busy), 4)
            figures["slot_busy_fraction_per_round"] = busy
        if name != "direct":
            figures["tokens_per_s_ratio_to_direct"] = round(
                figures["tokens_per_s_median"] / concurrent["direct"]["tokens_per_s_median"], 3
            )
            figures["ratio_per_round"] = [
                round(r[name]["tokens_per_s"] / r["direct"]["tokens_per_s"], 3) for r in rounds
            ]
        concurrent[name] = figures
    return {"sequential": sequential, "concurrent": concurrent}


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    s, c = summary["sequential"], summary["concurrent"]
    ratio = c["orchestra"]["tokens_per_s_ratio_to_direct"]
    v1 = s["orchestra-one"]["added_ttft_ms_median_of_paired_differences"]
    face = s["orchestra-openai"]["added_ttft_ms_median_of_paired_differences"]
    cpu = c["orchestra"]["cpu_ms_per_1k_tokens_median"]["orchestra"]
    found = [
        {"target": f"tokens/s at {CLIENTS} clients >= {TARGET_TOKENS_RATIO}x direct "
                   "(v1 face, ratio of the medians)",
         "value": ratio, "met": ratio >= TARGET_TOKENS_RATIO},
        {"target": f"added TTFT <= {TARGET_ADDED_TTFT_MS} ms on the v1 face (one request, "
                   "median of paired differences with direct /completion)",
         "value": v1, "met": v1 <= TARGET_ADDED_TTFT_MS},
        {"target": f"added TTFT <= {TARGET_ADDED_TTFT_MS} ms on the OpenAI face (median of "
                   "paired differences with direct /v1/completions)",
         "value": face, "met": face <= TARGET_ADDED_TTFT_MS},
        {"target": f"orchestra CPU <= {TARGET_CPU_MS_PER_1K:g} ms per 1,000 tokens "
                   f"(median over rounds, {CLIENTS} clients)",
         "value": cpu, "met": cpu <= TARGET_CPU_MS_PER_1K},
    ]  # fmt: skip
    o_busy = c["orchestra"].get("slot_busy_fraction_median")
    d_busy = c["direct"].get("slot_busy_fraction_median")
    if o_busy is not None and d_busy is not None:
        found.append({"target": "orchestra's slot busy fraction >= direct's (medians over "
                                "rounds)",
                      "value": {"orchestra": o_busy, "direct": d_busy},
                      "met": o_busy >= d_busy})  # fmt: skip
    else:
        found.append({"target": "orchestra's slot busy fraction >= direct's",
                      "value": "not measured: GET /slots unavailable", "met": None})  # fmt: skip
    return found


# --- the servers -----------------------------------------------------------------------------


def config_text(args: argparse.Namespace, orchestra_port: int, engine_port: int) -> str:
    replica = [f"parallel = {args.parallel}", f"threads = {args.threads}", "ctx_size = 2048"]
    replica += [f"{key} = {json.dumps(value)}" for key in ("binary", "model")
                if (value := getattr(args, key))]  # fmt: skip
    return (
        f'bind_addr = "127.0.0.1:{orchestra_port}"\n'
        f"[admission]\nqueue_capacity = 64\n"
        f'[adapter]\nendpoint = "http://127.0.0.1:{engine_port}"\n'
        + (f"engine_backlog = {args.engine_backlog}\n" if args.engine_backlog is not None else "")
        + "[replica]\n"
        + "\n".join(replica)
        + "\n"
    )


def litellm_config(engine: str, api_key: str) -> dict[str, Any]:
    """Text completions through LiteLLM to llama-server's ``/v1/completions``: an
    ``openai/`` model that is no OpenAI chat model is sent to the native completions
    endpoint; LiteLLM forwards ``cache_prompt`` in the body."""
    return {
        "model_list": [{"model_name": LITELLM_MODEL, "litellm_params": {
            "model": f"openai/{LITELLM_MODEL}", "api_base": f"{engine}/v1", "api_key": api_key,
        }}],
        "litellm_settings": {"drop_params": True},
        "general_settings": {
            "disable_spend_logs": True,
            "dangerously_permit_weak_or_unset_master_key": True,
        },
    }  # fmt: skip


def litellm_path(args: argparse.Namespace) -> Path:
    if args.litellm:
        return Path(args.litellm)
    script = ROOT / "scripts" / "bench-venv-litellm"
    printed = subprocess.run([script], check=True, stdout=subprocess.PIPE, text=True)
    return Path(printed.stdout.strip().splitlines()[-1])


def tree_revision(tree: Path) -> str:
    """The revision of the orchestra tree that ran (``python -m orchestra`` in ``tree``)."""
    head = output_of(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"])
    dirty = output_of(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"])
    return f"{tree} at git {head}{', uncommitted changes' if dirty else ''}"


def wait_ready(
    url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float
) -> dict[str, Any]:
    """Poll the pool health until it says ready; its JSON. Fails when orchestra exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"orchestra exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            health = httpx.get(url, timeout=1).json()
            if health.get("ready"):
                return dict(health)
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout_s} s:\n{log.read_text()[-3000:]}")


def served_model(orchestra: str) -> str:
    """The model name orchestra's OpenAI face routes to the pool."""
    entries = httpx.get(f"{orchestra}/v1/models", timeout=10).json().get("data") or []
    loaded = [e["id"] for e in entries if e.get("loaded")] or [e["id"] for e in entries]
    return str(loaded[0]) if loaded else "default"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sequential", type=int, default=30, help="tasks per path (TTFT)")
    parser.add_argument("--rounds", type=int, default=4, help="concurrent rounds per path")
    parser.add_argument("--per-client", type=int, default=64, help="tasks per client per round")
    parser.add_argument("--parallel", type=int, default=2, help="llama-server slots")
    parser.add_argument("--threads", type=int, default=2, help="llama-server threads")
    parser.add_argument("--skip-litellm", action="store_true", help="no LiteLLM path")
    parser.add_argument("--litellm", default="", help="litellm executable (default: the venv)")
    parser.add_argument("--binary", default="", help="llama-server (default: the cached one)")
    parser.add_argument("--model", default="", help="GGUF model (default: the cached one)")
    parser.add_argument("--out", default=str(OUT), help="output prefix (.json and .md)")
    parser.add_argument(
        "--engine-backlog",
        type=int,
        default=None,
        help="orchestra's [adapter] engine_backlog (default: orchestra's own default)",
    )
    parser.add_argument(
        "--tree",
        default=str(ROOT),
        help="the orchestra source tree to run (a git worktree of another revision, for a "
        "before/after pair; default: this one)",
    )
    args = parser.parse_args()
    if args.sequential < 1 or args.rounds < 1 or args.per_client < 1:
        parser.error("--sequential, --rounds and --per-client must be at least 1")
    litellm = None if args.skip_litellm else litellm_path(args)
    engine_port, orchestra_port, litellm_port = free_port(), free_port(), free_port()
    bases = {
        "engine": f"http://127.0.0.1:{engine_port}",
        "orchestra": f"http://127.0.0.1:{orchestra_port}",
    }
    config = config_text(args, orchestra_port, engine_port)
    lite_config: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "bench.toml").write_text(config)
        log = tmp / "orchestra.log"
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "orchestra", "serve", "--config", f"{tmp}/bench.toml"],
                stdout=log_file, stderr=subprocess.STDOUT, cwd=args.tree,
            )  # fmt: skip
        proxies = Servers(tmp)
        try:
            health = wait_ready(f"{bases['orchestra']}/v1/pools/default/health", proc, log, 600)
            engine_pid, api_key = engine_of(bases["orchestra"])
            key = {"Authorization": f"Bearer {api_key}"}
            openai_model = served_model(bases["orchestra"])
            procs = {"orchestra": proc.pid, "engine": engine_pid, "client": os.getpid()}
            if litellm is not None:
                lite_config = litellm_config(bases["engine"], api_key)
                (tmp / "litellm.yaml").write_text(json.dumps(lite_config))  # JSON is YAML
                bases["litellm"] = f"http://127.0.0.1:{litellm_port}"
                proxies.start("litellm", [str(litellm), "--config", str(tmp / "litellm.yaml"),
                                          "--host", "127.0.0.1", "--port", str(litellm_port),
                                          "--num_workers", "1"], env=litellm_env())  # fmt: skip
                proxies.wait_ready("litellm", f"{bases['litellm']}/health/liveliness", 300)
                procs["litellm"] = proxies.procs["litellm"].pid
            poll, slots_said = slots_endpoint(bases["engine"], key)
            print(f"slots endpoint: {slots_said}", flush=True)
            load_before = load()
            raw = trio.run(measure, bases, api_key, openai_model, procs, poll, args)
            load_after = load()
        except BaseException:
            kept = Path(tempfile.gettempdir()) / f"bench-engine-{os.getpid()}"
            shutil.copytree(tmp, kept, ignore=shutil.ignore_patterns("litellm.yaml"))
            print(f"failed; the servers' logs (llama-server's in orchestra's) are kept in {kept}",
                  file=sys.stderr)  # fmt: skip
            raise
        finally:
            proxies.stop()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        try:  # orchestra stops its llama-server itself; say so if it did not
            httpx.get(f"{bases['engine']}/health", timeout=1)
            print(f"warning: llama-server still answers on {bases['engine']}", file=sys.stderr)
        except httpx.HTTPError:
            pass

    summary = summarize(raw, args)
    litellm_version = (
        output_of([str(litellm.parent / "python"), "-c",
                   "import importlib.metadata as m; print(m.version('litellm'))"])
        if litellm is not None else None
    )  # fmt: skip
    if lite_config is not None:  # the engine's key is no figure (and that engine is gone)
        lite_config["model_list"][0]["litellm_params"]["api_key"] = "<the engine's api key>"
    paths = {
        "direct": "llama-server POST /completion, stream, a new connection per task",
        "direct-openai": "llama-server POST /v1/completions, stream, include_usage, "
        "cache_prompt false, a new connection per task",
        "orchestra": "orchestra POST /v1/tasks (202) then GET stream_url, keep-alive",
        "orchestra-one": "orchestra POST /v1/tasks with Accept: text/event-stream, keep-alive",
        "orchestra-openai": f"orchestra POST /v1/completions (model {openai_model!r}), "
        "stream, include_usage, keep-alive",
    }
    if litellm is not None:
        paths["litellm"] = (
            f"LiteLLM {litellm_version} POST /v1/completions (model {LITELLM_MODEL!r}), "
            "stream, include_usage, cache_prompt false, keep-alive"
        )
    results: dict[str, Any] = {
        "targets": targets(summary),
        **summary,
        "setup": {
            "engine": "llama-server started by orchestra (owned mode); every path uses that "
            "same process",
            "engine_version": health.get("engine_version"),
            "model_digest": health.get("model_digest"),
            "slots": health.get("slots_total"),
            "slots_endpoint": slots_said,
            "slot_poll_interval_ms": SLOT_POLL_S * 1000,
            "tokens_per_task": TOKENS,
            "temperature": 0,
            "cache_prompt": False,
            "paths": paths,
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
                "orchestra": tree_revision(Path(args.tree)),
                "litellm": litellm_version,
                "httpx": httpx.__version__,
            },
            "processes": "llama-server, orchestra, litellm and the load client each in "
            "their own process",
            "config": config,
            "litellm_config": lite_config,
            "litellm_env": LITELLM_ENV if litellm is not None else None,
            "command": " ".join([".venv/bin/python", "bench/engine.py", *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        },
        "raw": raw,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results, out.with_suffix(".json").name))
    print(out.with_suffix(".md").read_text())


def markdown(results: dict[str, Any], json_name: str) -> str:
    s, c, setup = results["sequential"], results["concurrent"], results["setup"]
    m = setup["machine"]
    seq_names = [n for n in SEQUENTIAL_PATHS if n in s]
    con_names = [n for n in CONCURRENT_PATHS if n in c]

    def cell(value: Any) -> str:
        return "" if value is None else str(value)

    def signed(value: Any) -> str:
        return "" if value is None else f"{value:+}"

    seq_rows: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        ("paired with", lambda f: f.get("paired_with")),
        ("TTFT, median ms", lambda f: f["ttft_ms_median"]),
        ("TTFT, p90 ms", lambda f: f["ttft_ms_p90"]),
        ("added TTFT, median of paired differences, ms",
         lambda f: signed(f.get("added_ttft_ms_median_of_paired_differences"))),
        ("added TTFT, p90 of paired differences, ms",
         lambda f: signed(f.get("added_ttft_ms_p90"))),
        ("total per task, median ms", lambda f: f["total_ms_median"]),
        ("added total, median of paired differences, ms",
         lambda f: signed(f.get("added_total_ms_median_of_paired_differences"))),
        ("tokens per task, median", lambda f: f["tokens_median"]),
        (f"same text as direct (of {s['tasks_per_path']})",
         lambda f: f["tasks_with_the_same_text_as_direct"]),
    ]  # fmt: skip
    seq_table = "| measure | " + " | ".join(seq_names) + " |\n|---" + "|---" * len(seq_names)
    seq_table += "|\n" + "".join(
        f"| {label} | " + " | ".join(cell(get(s[n])) for n in seq_names) + " |\n"
        for label, get in seq_rows
    )

    procs = list(c[con_names[0]]["cpu_ms_per_1k_tokens_median"])

    def cpu(proc: str) -> Callable[[dict[str, Any]], Any]:
        return lambda f: f["cpu_ms_per_1k_tokens_median"].get(proc)

    con_rows: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        (f"tokens/s, median of {c['rounds']} rounds", lambda f: f["tokens_per_s_median"]),
        ("tokens/s vs direct (ratio of medians)",
         lambda f: f"{f['tokens_per_s_ratio_to_direct']}x" if f.get("ratio_per_round") else None),
        ("slot busy fraction, median", lambda f: f.get("slot_busy_fraction_median")),
        *((f"CPU of {p}, ms per 1,000 tokens, median", cpu(p)) for p in procs),
    ]  # fmt: skip
    con_table = "| measure | " + " | ".join(con_names) + " |\n|---" + "|---" * len(con_names)
    con_table += "|\n" + "".join(
        f"| {label} | " + " | ".join(cell(get(c[n])) for n in con_names) + " |\n"
        for label, get in con_rows
    )

    round_table = (
        "| round | path | tokens | s | tokens/s | TTFT median ms | slot busy | "
        + " | ".join(f"CPU {p} ms/1k" for p in procs)
        + " | orchestra RSS MiB / fds |\n|---"
        + "|---" * (7 + len(procs))
        + "|\n"
    )
    for r, record in enumerate(results["raw"]["rounds"]):
        for name in record["order"]:
            f = record[name]
            round_table += (
                f"| {r} | {name} | {f['tokens']} | {f['seconds']} | {f['tokens_per_s']} | "
                f"{f['ttft_ms_median']} | {cell(f.get('slot_busy_fraction'))} | "
                + " | ".join(str(f["cpu_ms_per_1k_tokens"][p]) for p in procs)
                + f" | {f['orchestra_rss_mib']} / {f['orchestra_open_fds']} |\n"
            )

    goals = "".join(
        f"| {t['target']} | {json.dumps(t['value'])} | "
        f"{ {True: 'yes', False: 'NO', None: 'not measured'}[t['met']] } |\n"
        for t in results["targets"]
    )
    paths = "".join(f"- `{name}`: {text}\n" for name, text in setup["paths"].items())
    return (
        "# orchestra vs llama-server directly vs LiteLLM, with CPU and slot use "
        "(real engine)\n\n"
        f"{setup['engine']}; {setup['engine_version']}; model {setup['model_digest']}; "
        f"{setup['slots']} slots; {TOKENS} streamed tokens per task at temperature 0, its "
        "own prompt and seed, prompt cache off on every path. "
        f"{m['cores']} cores ({m['cpu']}), {m['platform']}, Python {m['python']}; orchestra "
        f"{setup['versions']['orchestra']}; {setup['date']}; load average "
        f"{m['load_before_measuring']['load_average']} before, "
        f"{m['load_after_measuring']['load_average']} after.\n"
        f"Command: `{setup['command']}`\n\n"
        f"Paths:\n\n{paths}\n"
        "## Targets\n\n| target | value | met |\n|---|---|---|\n" + goals + "\n"
        f"## Sequential ({s['tasks_per_path']} tasks, every path, rotating order)\n\n"
        + seq_table
        + "\nAdded TTFT and added total are medians of the paired differences with the "
        "path's direct twin (same prompt and seed; the order of the paths rotates).\n\n"
        f"## Concurrent ({c['clients']} clients x {c['tasks_per_client_per_round']} tasks "
        f"per round, {c['rounds']} rounds per path, alternating)\n\n"
        + con_table
        + "\nCPU is utime + stime from `/proc/<pid>/stat` read right before and after each "
        "round, per 1,000 tokens the engine generated in it (resolution 10 ms); `client` is "
        "this load client (including the slot poller). The slot busy fraction is the mean, "
        f"over polls of the engine's `GET /slots` every {setup['slot_poll_interval_ms']:g} "
        f"ms during the round, of the share of slots with `is_processing` "
        f"({setup['slots_endpoint']}). The v1 face runs in its two-request form; "
        "`litellm` sends to the engine's `/v1/completions`, `direct` to `/completion`.\n\n"
        "Per round:\n\n"
        + round_table
        + "\nConfiguration:\n\n```toml\n"
        + str(setup["config"])
        + "```\n\nRaw per-task and per-round figures, the LiteLLM configuration and the "
        f"versions are in `{json_name}` beside this file.\n"
    )


if __name__ == "__main__":
    main()
