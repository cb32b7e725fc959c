"""Orchestra's OpenAI face vs llama-server directly vs LiteLLM's proxy, on the real engine.

One llama-server (the cached build and small model, ``--jinja -np 8 -c 8192 --fit off
--no-ui``) serves three paths, each its own process, and this load client (httpx on Trio)
is a fourth:

- direct: llama-server's own ``POST /v1/chat/completions``;
- orchestra: ``orchestra serve`` in attached mode in front of that llama-server, its
  ``POST /v1/chat/completions``;
- litellm: LiteLLM's proxy (``litellm --config``) in front of the same llama-server, with
  telemetry, the remote cost map, the database and spend logs off, one worker, no master
  key (its fastest configuration), ``LITELLM_LOG=ERROR``.

Every request is a streamed chat (``stream: true``, ``stream_options.include_usage``) of
32 tokens (``max_tokens``) at temperature 0 with no seed (so orchestra treats it as
``best_effort``: the engine's prompt cache on, as on the other two paths), sent on a new
connection (llama-server closes its connection after each streamed answer, and a client
that reuses it races the close; every path is treated the same). Every request has a
prompt of its own: random words (a different order on each path, so no path finds another's
prompt in the engine's cache, but the same words, so the same number of prompt tokens) and
a counter. After a warm-up that is not counted (3 chats on each path, then one chat per
client at once on each: llama-server's first batch over many slots is slow), measured
interleaved in one run:

- added TTFT: N sequential chats, each sent to the three paths in rotating order; TTFT is
  the time from sending the request to the first chunk whose delta has non-empty content;
  the added TTFT of a path is the median of its paired differences with direct;
- tokens/s at 8 concurrent clients: rounds that alternate the three paths (rotating which
  goes first), each round 8 clients each running K chats back to back; tokens/s = generated
  tokens (``usage.completion_tokens``, else the content chunks) / round wall time; the
  median over rounds per path, and the ratios orchestra / direct and litellm / direct.

Targets (recorded with ``met: true/false``): orchestra's added TTFT ≤ 2 ms, its tokens/s
≥ 0.97x direct, and orchestra ahead of LiteLLM on both. A request that fails on any path
stops the run (the servers' logs are then kept in /tmp): numbers with failures in them would
mislead.

Get the LiteLLM venv first (outside the clone; LiteLLM is no dependency of orchestra)::

    scripts/bench-venv-litellm          # prints the path of its litellm executable

Usage: .venv/bin/python bench/openai_face.py [--sequential 40] [--rounds 4] [--per-client 4]
           [--clients 8] [--threads 2] [--skip-litellm | --paths direct,orchestra,litellm]
           [--litellm PATH] [--binary PATH] [--model PATH] [--out PREFIX]
Without --litellm it runs scripts/bench-venv-litellm (which installs once, then is quick);
without --binary / --model it uses what ``orchestra engine install`` cached.
Writes proof-bundle/bench/issue15-openai.json and issue15-openai.md (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import trio

from orchestra import __version__ as orchestra_version
from orchestra.engine import cache as engine_cache
from orchestra.engine.process import scrubbed_env

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "proof-bundle" / "bench" / "issue15-openai"
PATHS = ("direct", "orchestra", "litellm")
TOKENS = 32
WARMUP = 3
ENGINE_FLAGS = ("--jinja", "-np", "8", "-c", "8192", "--fit", "off", "--no-ui")
CLOSE = {"Connection": "close"}
TARGET_ADDED_TTFT_MS = 2.0
TARGET_TOKENS_RATIO = 0.97
WORD_LIST = (
    "apple river stone cloud garden window silver candle forest bridge market winter "
    "lantern harbor meadow pepper violin castle desert island rocket pencil mirror tiger "
    "valley engine button orange planet shadow ladder basket thunder copper feather "
    "monkey parrot tunnel carpet jacket marble rabbit saddle tomato wallet anchor bottle "
    "camera dragon falcon ginger helmet jungle kettle lemon magnet needle oyster pillow "
    "quartz ribbon spider turtle velvet whistle yellow zebra"
)
WORDS = WORD_LIST.split()
NWORDS = 12


class Chat(NamedTuple):
    """What one streamed chat came back with."""

    ttft: float
    total: float
    tokens: int
    """``usage.completion_tokens`` when the stream carried usage, else ``chunks``."""
    chunks: int
    """Chunks whose delta had non-empty content."""
    prompt_tokens: int
    """From usage; -1 when the stream carried none."""
    cached_tokens: int
    """``usage.prompt_tokens_details.cached_tokens``; -1 when absent."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prompt_of(tag: str, variant: int) -> str:
    """The prompt of request ``tag`` on the path numbered ``variant``: the same words for
    every variant (so the same prompt tokens), rotated so that no two variants share a
    prefix beyond the constant lead."""
    words = random.Random(tag).sample(WORDS, NWORDS)
    shift = variant * 5 % NWORDS
    rotated = words[shift:] + words[:shift]
    return f"Story words: {' '.join(rotated)}. Write a long story using all of them ({tag})."


async def chat(client: httpx.AsyncClient, name: str, model: str, prompt: str) -> Chat:
    """One streamed chat completion, read to ``data: [DONE]``."""
    body = {
        "model": model, "messages": [{"role": "user", "content": prompt}],
        "max_tokens": TOKENS, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True},
    }  # fmt: skip
    start = time.perf_counter()
    ttft, chunks, usage, done = 0.0, 0, None, False
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
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
                if (choice.get("delta") or {}).get("content"):
                    ttft = ttft or time.perf_counter() - start
                    chunks += 1
            usage = frame.get("usage") or usage
    total = time.perf_counter() - start
    if not done:
        raise RuntimeError(f"{name}: stream ended without data: [DONE] ({prompt!r})")
    if not ttft:
        raise RuntimeError(f"{name}: no content at all ({prompt!r})")
    usage = usage or {}
    details = usage.get("prompt_tokens_details") or {}
    return Chat(
        ttft, total, int(usage.get("completion_tokens", chunks)), chunks,
        int(usage.get("prompt_tokens", -1)), int(details.get("cached_tokens", -1)),
    )  # fmt: skip


class Route(NamedTuple):
    """One path under test: its name, client and the model name it is sent."""

    name: str
    client: httpx.AsyncClient
    model: str


async def concurrent_round(
    path: Route, variant: int, r: int, clients: int, per_client: int
) -> dict[str, Any]:
    """Tokens and seconds with ``clients`` clients each running ``per_client`` chats in a
    row; prompts ``r{r}-c{k}-{i}``, so the paths of one round do the same work."""
    done: list[Chat] = []  # appended after each await: no lost updates between clients

    async def one_client(k: int) -> None:
        for i in range(per_client):
            done.append(
                await chat(path.client, path.name, path.model, prompt_of(f"r{r}-c{k}-{i}", variant))
            )

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for k in range(clients):
            nursery.start_soon(one_client, k)
    seconds = time.perf_counter() - start
    tokens = sum(c.tokens for c in done)
    return {
        "chats": len(done),
        "tokens": tokens,
        "content_chunks": sum(c.chunks for c in done),
        "seconds": round(seconds, 4),
        "tokens_per_s": round(tokens / seconds, 2),
        "ttft_ms_median": ms(statistics.median(c.ttft for c in done)),
    }


def ms(value: float) -> float:
    return round(value * 1000, 3)


def rotate(items: list[Any], by: int) -> list[Any]:
    by %= len(items)
    return items[by:] + items[:by]


async def measure(
    bases: dict[str, str], models: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
    timeout = httpx.Timeout(300, connect=10)
    async with contextlib.AsyncExitStack() as stack:
        paths = [
            Route(name, await stack.enter_async_context(
                httpx.AsyncClient(base_url=base, timeout=timeout, limits=limits, headers=CLOSE)
            ), models[name])
            for name, base in bases.items()
        ]  # fmt: skip
        variant = {p.name: PATHS.index(p.name) for p in paths}
        for i in range(WARMUP):
            for p in rotate(paths, i):
                await chat(p.client, p.name, p.model, prompt_of(f"warm-{i}", variant[p.name]))
        for p in paths:  # the engine's first batch of many slots is slow: not counted
            await concurrent_round(p, variant[p.name], -1, args.clients, 1)
        sequential: list[dict[str, Any]] = []
        for i in range(args.sequential):
            record: dict[str, Any] = {"order": [p.name for p in rotate(paths, i)]}
            for p in rotate(paths, i):
                c = await chat(p.client, p.name, p.model, prompt_of(f"seq-{i}", variant[p.name]))
                record[p.name] = {
                    "ttft_ms": ms(c.ttft), "total_ms": ms(c.total), "tokens": c.tokens,
                    "prompt_tokens": c.prompt_tokens, "cached_tokens": c.cached_tokens,
                }  # fmt: skip
            sequential.append(record)
        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            record = {"order": [p.name for p in rotate(paths, r)]}
            for p in rotate(paths, r):
                record[p.name] = await concurrent_round(
                    p, variant[p.name], r, args.clients, args.per_client
                )
            rounds.append(record)
    return {"sequential_raw": sequential, "rounds": rounds}


def summarize(raw: dict[str, Any], names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    seq, rounds = raw["sequential_raw"], raw["rounds"]
    sequential: dict[str, Any] = {"chats_per_path": len(seq)}
    for name in names:
        ttfts = [s[name]["ttft_ms"] for s in seq]
        sequential[name] = {
            "ttft_ms_median": round(statistics.median(ttfts), 3),
            "ttft_ms_p90": sorted(ttfts)[int(0.9 * len(ttfts))],
            "total_ms_median": round(statistics.median(s[name]["total_ms"] for s in seq), 3),
            "tokens_median": statistics.median(s[name]["tokens"] for s in seq),
            "prompt_tokens_median": statistics.median(s[name]["prompt_tokens"] for s in seq),
            "cached_tokens_median": statistics.median(s[name]["cached_tokens"] for s in seq),
        }
        if name != "direct" and "direct" in names:
            diffs = [s[name]["ttft_ms"] - s["direct"]["ttft_ms"] for s in seq]
            sequential[name]["added_ttft_ms_median_of_paired_differences"] = round(
                statistics.median(diffs), 3
            )
            sequential[name]["added_ttft_ms_p90"] = round(sorted(diffs)[int(0.9 * len(diffs))], 3)
            sequential[name]["chats_with_the_same_prompt_tokens_as_direct"] = sum(
                s[name]["prompt_tokens"] == s["direct"]["prompt_tokens"] for s in seq
            )
    if "orchestra" in names and "litellm" in names:
        diffs = [s["orchestra"]["ttft_ms"] - s["litellm"]["ttft_ms"] for s in seq]
        sequential["orchestra_minus_litellm_ttft_ms_median_of_paired_differences"] = round(
            statistics.median(diffs), 3
        )
    concurrent: dict[str, Any] = {
        "clients": args.clients, "chats_per_client_per_round": args.per_client,
        "rounds": len(rounds),
    }  # fmt: skip
    for name in names:
        concurrent[name] = {
            "tokens_per_s_median": round(
                statistics.median(r[name]["tokens_per_s"] for r in rounds), 2
            ),
            "tokens_per_s_per_round": [r[name]["tokens_per_s"] for r in rounds],
        }
        if name != "direct" and "direct" in names:
            concurrent[name]["tokens_per_s_ratio_to_direct"] = round(
                concurrent[name]["tokens_per_s_median"]
                / concurrent["direct"]["tokens_per_s_median"],
                3,
            )
            concurrent[name]["ratio_per_round"] = [
                round(r[name]["tokens_per_s"] / r["direct"]["tokens_per_s"], 3) for r in rounds
            ]
    return {"sequential": sequential, "concurrent": concurrent}


def targets(summary: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
    s, c = summary["sequential"], summary["concurrent"]
    found: list[dict[str, Any]] = []
    if "orchestra" in names and "direct" in names:
        added = s["orchestra"]["added_ttft_ms_median_of_paired_differences"]
        ratio = c["orchestra"]["tokens_per_s_ratio_to_direct"]
        found.append({"target": f"orchestra added TTFT <= {TARGET_ADDED_TTFT_MS} ms",
                      "value": added, "met": added <= TARGET_ADDED_TTFT_MS})  # fmt: skip
        found.append({"target": f"orchestra tokens/s >= {TARGET_TOKENS_RATIO}x direct",
                      "value": ratio, "met": ratio >= TARGET_TOKENS_RATIO})  # fmt: skip
    if "orchestra" in names and "litellm" in names:
        paired = s["orchestra_minus_litellm_ttft_ms_median_of_paired_differences"]
        found.append({"target": "orchestra's TTFT below LiteLLM's (median of paired "
                                "differences orchestra - litellm < 0)",
                      "value": paired, "met": paired < 0})  # fmt: skip
        o, lite = c["orchestra"]["tokens_per_s_median"], c["litellm"]["tokens_per_s_median"]
        found.append({"target": "orchestra's tokens/s above LiteLLM's",
                      "value": {"orchestra": o, "litellm": lite}, "met": o > lite})  # fmt: skip
    return found


# --- the servers -------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent(parent: int) -> None:
    """In the child before exec: SIGKILL it when this bench dies, even by ``kill -9``."""
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


class Servers:
    """The three server processes, each in its own session (a Ctrl-C reaches this bench,
    which then stops them all) and killed with it if it dies; logs in ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        parent = os.getpid()
        with (self.tmp / f"{name}.log").open("wb") as log:
            self.procs[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, preexec_fn=lambda: _die_with_parent(parent),
            )  # fmt: skip

    def log_tail(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]

    def wait_ready(self, name: str, url: str, timeout_s: float, key: str = "") -> dict[str, Any]:
        """Poll ``url`` until it answers 200 (and, with ``key``, that JSON field is true)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                response = httpx.get(url, timeout=2)
                if response.status_code == 200:
                    body = response.json() if key else {}
                    if not key or body.get(key):
                        return dict(body)
            time.sleep(0.05)
        raise RuntimeError(f"{name}: {url} not ready after {timeout_s} s:\n{self.log_tail(name)}")

    def stop(self) -> None:
        """SIGTERM to each process group (proxies first), then SIGKILL what is left."""
        for proc in reversed(self.procs.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in reversed(self.procs.values()):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # a worker left behind

    def keep_logs(self) -> Path:
        kept = Path(tempfile.gettempdir()) / f"bench-openai-face-{os.getpid()}"
        shutil.copytree(self.tmp, kept, dirs_exist_ok=True)
        return kept


@contextlib.contextmanager
def servers(tmp: Path) -> Iterator[Servers]:
    running = Servers(tmp)
    try:
        yield running
    except BaseException:
        kept = running.keep_logs()
        print(f"failed; the servers' logs are kept in {kept}", file=sys.stderr)
        raise
    finally:
        running.stop()


def orchestra_config(port: int, engine: str, clients: int) -> str:
    return (
        f'bind_addr = "127.0.0.1:{port}"\n'
        '[log]\nlevel = "warning"\n'
        f"[admission]\nqueue_capacity = {max(64, 4 * clients)}\n"
        "ctx_limit = 1024\nmax_tokens_limit = 512\n"
        f'[adapter]\nendpoint = "{engine}"\n'
    )


def litellm_config(engine: str) -> dict[str, Any]:
    return {
        "model_list": [{"model_name": "smol", "litellm_params": {
            "model": "openai/smol", "api_base": f"{engine}/v1", "api_key": "none",
        }}],
        "litellm_settings": {"drop_params": True},
        "general_settings": {
            "disable_spend_logs": True,
            "dangerously_permit_weak_or_unset_master_key": True,
        },
    }  # fmt: skip


LITELLM_ENV = {
    "LITELLM_LOG": "ERROR",
    "LITELLM_TELEMETRY_DISABLED": "true",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "DISABLE_ADMIN_UI": "True",
}


def litellm_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LITELLM_", "DATABASE_"))}
    return env | LITELLM_ENV


def load() -> dict[str, Any]:
    """How busy the machine is: load averages and CPU pressure (a quiet machine shows
    load well under its cores and ``some avg60`` near 0)."""
    found: dict[str, Any] = {"load_average": [round(x, 2) for x in os.getloadavg()]}
    with contextlib.suppress(OSError):
        found["cpu_pressure"] = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    return found


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def output_of(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"
    return (done.stdout + done.stderr).strip()


def engine_version(binary: Path) -> str:
    stamp = engine_cache.stamp_beside(binary)
    if stamp is not None:
        return stamp.engine_version
    return (output_of([str(binary), "--version"]).splitlines() or ["unknown"])[-1]


def orchestra_revision() -> str:
    head = output_of(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = output_of(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    return f"{orchestra_version} (git {head}{', uncommitted changes' if dirty else ''})"


def resolve(args: argparse.Namespace, names: list[str]) -> tuple[Path, Path, Path | None]:
    binary = Path(args.binary) if args.binary else None
    if binary is None:
        installed = engine_cache.installed_engine("cpu")
        if installed is None:
            sys.exit("no cached llama-server: run .venv/bin/orchestra engine install")
        binary = installed.binary
    model = Path(args.model) if args.model else engine_cache.installed_model()
    if model is None:
        sys.exit("no cached model: run .venv/bin/orchestra engine install")
    litellm = None
    if "litellm" in names:
        if args.litellm:
            litellm = Path(args.litellm)
        else:
            script = ROOT / "scripts" / "bench-venv-litellm"
            printed = subprocess.run([script], check=True, stdout=subprocess.PIPE, text=True)
            litellm = Path(printed.stdout.strip().splitlines()[-1])
    return binary, model, litellm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sequential", type=int, default=40, help="chats per path (TTFT)")
    parser.add_argument("--rounds", type=int, default=4, help="concurrent rounds per path")
    parser.add_argument("--per-client", type=int, default=4, help="chats per client per round")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="llama-server threads")
    parser.add_argument("--paths", default=",".join(PATHS), help="a subset of " + ",".join(PATHS))
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--litellm-workers", type=int, default=1)
    parser.add_argument("--litellm", default="", help="litellm executable (default: the venv)")
    parser.add_argument("--binary", default="", help="llama-server (default: the cached one)")
    parser.add_argument("--model", default="", help="GGUF model (default: the cached one)")
    parser.add_argument("--out", default=str(OUT), help="output prefix (.json and .md)")
    args = parser.parse_args()
    names = [n for n in PATHS if n in args.paths.split(",")]
    if args.skip_litellm and "litellm" in names:
        names.remove("litellm")
    if unknown := set(args.paths.split(",")) - set(PATHS):
        parser.error(f"--paths: unknown {', '.join(sorted(unknown))}")
    binary, model, litellm = resolve(args, names)

    engine_port, orchestra_port, litellm_port = free_port(), free_port(), free_port()
    engine = f"http://127.0.0.1:{engine_port}"
    bases = {
        "direct": engine,
        "orchestra": f"http://127.0.0.1:{orchestra_port}",
        "litellm": f"http://127.0.0.1:{litellm_port}",
    }
    bases = {name: bases[name] for name in names}
    engine_argv = [str(binary), "-m", str(model), "--host", "127.0.0.1",
                   "--port", str(engine_port), "-t", str(args.threads), *ENGINE_FLAGS]  # fmt: skip
    orch_config = orchestra_config(orchestra_port, engine, args.clients)
    lite_config = litellm_config(engine)
    models = {"direct": "smol", "litellm": "smol", "orchestra": "smol"}
    with tempfile.TemporaryDirectory() as tmp_name, servers(Path(tmp_name)) as running:
        tmp = Path(tmp_name)
        running.start("llama-server", engine_argv, env=scrubbed_env())
        running.wait_ready("llama-server", f"{engine}/health", 120)
        if "orchestra" in names:
            (tmp / "orchestra.toml").write_text(orch_config)
            running.start("orchestra", [sys.executable, "-m", "orchestra", "serve",
                                        "--config", str(tmp / "orchestra.toml")])  # fmt: skip
        if litellm is not None:
            (tmp / "litellm.yaml").write_text(json.dumps(lite_config, indent=2))  # JSON is YAML
            running.start("litellm", [str(litellm), "--config", str(tmp / "litellm.yaml"),
                                      "--host", "127.0.0.1", "--port", str(litellm_port),
                                      "--num_workers", str(args.litellm_workers)],
                          env=litellm_env())  # fmt: skip
        if "orchestra" in names:
            running.wait_ready(
                "orchestra", f"{bases['orchestra']}/v1/pools/default/health", 120, "ready"
            )
            listed = httpx.get(f"{bases['orchestra']}/v1/models", timeout=10).json()
            entries = listed.get("data") or []
            loaded = [e["id"] for e in entries if e.get("loaded")] or [e["id"] for e in entries]
            models["orchestra"] = loaded[0] if loaded else "smol"
        if litellm is not None:
            running.wait_ready("litellm", f"{bases['litellm']}/health/liveliness", 300)
        load_before = load()
        raw = trio.run(measure, bases, models, args)
        load_after = load()

    summary = summarize(raw, names, args)
    litellm_version = (
        output_of([str(litellm.parent / "python"), "-c",
                   "import importlib.metadata as m; print(m.version('litellm'))"])
        if litellm is not None else None
    )  # fmt: skip
    results: dict[str, Any] = {
        "paths": names,
        "targets": targets(summary, names),
        **summary,
        "setup": {
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
                "litellm": litellm_version,
                "httpx": httpx.__version__,
            },
            "command": " ".join([".venv/bin/python", "bench/openai_face.py", *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "tokens_per_chat": TOKENS,
            "request": "stream, stream_options.include_usage, temperature 0, no seed, "
            "max_tokens 32, a new connection per request",
            "models_sent": {name: models[name] for name in names},
            "engine_argv": engine_argv,
            "orchestra_config": orch_config if "orchestra" in names else None,
            "litellm_config": lite_config if litellm is not None else None,
            "litellm_env": LITELLM_ENV if litellm is not None else None,
            "litellm_workers": args.litellm_workers if litellm is not None else None,
            "processes": "llama-server, orchestra, litellm and the load client each in "
            "their own process",
        },
        "raw": raw,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results, names, out.with_suffix(".json").name))
    print(out.with_suffix(".md").read_text())


def markdown(results: dict[str, Any], names: list[str], json_name: str) -> str:
    s, c, setup = results["sequential"], results["concurrent"], results["setup"]
    v, m = setup["versions"], setup["machine"]

    def added(name: str) -> str:
        value = s[name].get("added_ttft_ms_median_of_paired_differences")
        return "" if value is None else f"{value:+} ms (p90 {s[name]['added_ttft_ms_p90']:+})"

    def ratio(name: str) -> str:
        value = c[name].get("tokens_per_s_ratio_to_direct")
        return "" if value is None else f"{value}x"

    rows: list[tuple[str, Callable[[str], object]]] = [
        ("TTFT, median ms", lambda n: s[n]["ttft_ms_median"]),
        ("TTFT, p90 ms", lambda n: s[n]["ttft_ms_p90"]),
        ("added TTFT vs direct (median of paired differences)", added),
        ("total per chat, median ms", lambda n: s[n]["total_ms_median"]),
        ("prompt / cached tokens, median",
         lambda n: f"{s[n]['prompt_tokens_median']} / {s[n]['cached_tokens_median']}"),
        (f"tokens/s, {c['clients']} clients x {c['chats_per_client_per_round']} chats "
         f"(median of {c['rounds']} rounds)", lambda n: c[n]["tokens_per_s_median"]),
        ("tokens/s vs direct", ratio),
        ("tokens/s per round", lambda n: ", ".join(map(str, c[n]["tokens_per_s_per_round"]))),
    ]  # fmt: skip
    table = "| measure | " + " | ".join(names) + " |\n|---" + "|---" * len(names) + "|\n"
    for label, cell in rows:
        table += f"| {label} | " + " | ".join(str(cell(n)) for n in names) + " |\n"
    paired = s.get("orchestra_minus_litellm_ttft_ms_median_of_paired_differences")
    if paired is not None:
        table += f"\nTTFT orchestra - litellm, median of the paired differences: {paired:+} ms.\n"
    goals = "".join(
        f"| {t['target']} | {json.dumps(t['value'])} | {'yes' if t['met'] else 'NO'} |\n"
        for t in results["targets"]
    )
    return (
        "# Orchestra's OpenAI face vs llama-server directly vs LiteLLM (real engine)\n\n"
        f"One llama-server ({v['llama_server']}; `{' '.join(ENGINE_FLAGS)}`, "
        f"{setup['engine_argv'][setup['engine_argv'].index('-t') + 1]} threads) behind "
        f"every path; orchestra {v['orchestra']} in attached mode; LiteLLM {v['litellm']}. "
        f"Streamed chats of {TOKENS} tokens ({setup['request']}); every request its own "
        f"prompt. {m['cores']} cores ({m['cpu']}), {m['platform']}, Python {m['python']}; "
        f"{setup['date']}; load average {m['load_before_measuring']['load_average']} before, "
        f"{m['load_after_measuring']['load_average']} after.\n"
        f"Command: `{setup['command']}`\n\n"
        f"{s['chats_per_path']} sequential chats per path, paths in rotating order; "
        f"{c['rounds']} concurrent rounds per path, alternating.\n\n"
        + table
        + "\n| target | value | met |\n|---|---|---|\n"
        + goals
        + "\nRaw per-chat and per-round figures, the configurations and versions are in "
        f"`{json_name}` beside this file.\n"
    )


if __name__ == "__main__":
    main()
