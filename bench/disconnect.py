"""How soon the engine slot is free after an OpenAI client disconnects mid-stream.

One llama-server (the cached build and small model, one slot, ``--jinja``) and orchestra in
attached mode in front of it. Each round opens a long streamed chat (400 tokens), reads
three content chunks, closes the connection and polls llama-server's ``GET /slots`` (every
2 ms) until the slot is idle; the time from the close to the idle slot is the figure. The
rounds alternate the two paths: llama-server's own ``/v1/chat/completions`` directly, and
orchestra's OpenAI face (which cancels the task, closing its engine stream), after one
warm-up round of each that is not counted. Medians over the rounds.

Usage: .venv/bin/python bench/disconnect.py [--rounds 10]
Writes proof-bundle/bench/issue15-disconnect.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from openai_face import (  # the sibling bench module (run as a script)
    ENGINE_FLAGS,
    free_port,
    orchestra_config,
    resolve,
    servers,
)

from orchestra.engine.process import scrubbed_env

OUT = Path(__file__).resolve().parent.parent / "proof-bundle" / "bench" / "issue15-disconnect"
BODY = {
    "messages": [{"role": "user", "content": "Count from 1 to 500, separated by commas."}],
    "max_tokens": 400,
    "temperature": 0,
    "stream": True,
}


def leave_mid_stream(url: str, model: str, engine: str) -> float:
    """Stream, read three content chunks, close; ms until the engine's slot is idle."""
    seen = 0
    with httpx.stream(
        "POST", url, json={**BODY, "model": model}, headers={"Connection": "close"}, timeout=60
    ) as response:
        for chunk in response.iter_raw():
            seen += chunk.count(b'"content":"')
            if seen >= 3:
                break
        closed = time.perf_counter()
    while httpx.get(f"{engine}/slots", timeout=5).json()[0]["is_processing"]:
        time.sleep(0.002)
    return (time.perf_counter() - closed) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    resolved = argparse.Namespace(binary="", model="", litellm="", skip_litellm=True)
    binary, model, _ = resolve(resolved, ["direct", "orchestra"])
    engine_port, orchestra_port = free_port(), free_port()
    engine = f"http://127.0.0.1:{engine_port}"
    orchestra = f"http://127.0.0.1:{orchestra_port}"
    flags = list(ENGINE_FLAGS)
    flags[flags.index("-np") + 1] = "1"
    argv = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(engine_port),
            "-t", "2", *flags]  # fmt: skip
    rounds: dict[str, list[float]] = {"direct": [], "orchestra": []}
    with tempfile.TemporaryDirectory() as tmp_name, servers(Path(tmp_name)) as running:
        tmp = Path(tmp_name)
        running.start("llama-server", argv, env=scrubbed_env())
        running.wait_ready("llama-server", f"{engine}/health", 120)
        (tmp / "orchestra.toml").write_text(orchestra_config(orchestra_port, engine, 1))
        running.start("orchestra", [sys.executable, "-m", "orchestra", "serve", "--config",
                                    str(tmp / "orchestra.toml")])  # fmt: skip
        running.wait_ready("orchestra", f"{orchestra}/v1/pools/default/health", 120, "ready")
        urls = {
            "direct": (f"{engine}/v1/chat/completions", "smol"),
            "orchestra": (f"{orchestra}/v1/chat/completions", "default"),
        }
        for name in urls:  # a warm-up round, not counted
            leave_mid_stream(*urls[name], engine)
        for i in range(args.rounds):
            for name in ["direct", "orchestra"] if i % 2 == 0 else ["orchestra", "direct"]:
                url, name_of_model = urls[name]
                rounds[name].append(round(leave_mid_stream(url, name_of_model, engine), 2))
                print(f"round {i} {name}: slot idle {rounds[name][-1]} ms after the close")
    results: dict[str, Any] = {
        "command": " ".join(["python", "bench/disconnect.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "rounds": rounds,
        "median_ms": {name: round(statistics.median(values), 2) for name, values in rounds.items()},
    }
    OUT.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    med = results["median_ms"]
    OUT.with_suffix(".md").write_text(
        "# Engine slot free after an OpenAI client disconnects mid-stream\n\n"
        f"{results['machine']}; {results['when']}. Command: `{results['command']}`\n\n"
        "| path | slot idle after the close, median ms | rounds (ms) |\n|---|---|---|\n"
        + "".join(
            f"| {name} | {med[name]} | {', '.join(map(str, rounds[name]))} |\n" for name in rounds
        )
        + "\nllama-server's `/slots` polled every 2 ms from the moment the client closed "
        "its connection (after three content chunks of a 400-token answer).\n"
    )
    print(json.dumps(results["median_ms"]))


if __name__ == "__main__":
    main()
