"""The fake engine behind llama-server's own command line, for tests of the engines
orchestra starts itself (``[models]``): ``python -m orchestra.testing.fake_llama.as_llama_server
-m MODEL --port N ...``, with the api key in ``$LLAMA_API_KEY`` as orchestra passes it.

Its "model file" says how the load goes, so a test drives every load deterministically:

(after ``GGUF``, the magic the catalog checks for, when the file starts with it)

- a file that is not JSON (or has ``"fail"``): the load fails, ``exiting due to model
  loading error`` and status 1, as llama-server does with a bad GGUF;
- ``{"gate": true}``: it answers 503 ``Loading model`` until a file ``MODEL.go`` exists
  (the test creates it when the load should end; ``MODEL.crash`` instead makes it exit 1
  while loading);
- ``{"load_s": 0.2}``: it loads for that long;
- ``{"slots": 2, "token_delay_ms": 5}``: like the fake's own options; ``-np`` and ``-c``
  count too.

Each start appends ``start PID`` and each exit ``exit PID`` to ``MODEL.log``, so a test can
check that a model's next process started only after its previous one exited.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any

import trio

from .server import FakeLlamaServer

POLL_S = 0.02


def _note(model: Path, what: str) -> None:
    with open(f"{model}.log", "a") as log:
        log.write(f"{what} {os.getpid()}\n")


def _settings(model: Path) -> dict[str, Any] | None:
    try:
        raw = model.read_bytes().removeprefix(b"GGUF")  # the catalog wants GGUF's magic
        settings = json.loads(raw or b"{}")
    except (OSError, ValueError):
        return None
    if not isinstance(settings, dict) or settings.get("fail"):
        return None
    return settings


async def _load(fake: FakeLlamaServer, model: Path, settings: dict[str, Any]) -> bool:
    """Pretend to load; False when told to crash."""
    fake.set_loading(True)
    crash, go = trio.Path(f"{model}.crash"), trio.Path(f"{model}.go")
    if settings.get("gate"):
        while True:
            if await crash.exists():
                return False
            if await go.exists():
                break
            await trio.sleep(POLL_S)
    await trio.sleep(float(settings.get("load_s", 0.0)))
    fake.set_loading(False)
    return True


def main(argv: list[str] | None = None) -> None:
    """Serve like ``llama-server`` until SIGTERM; exit 1 when the "load" fails."""
    parser = argparse.ArgumentParser(prog="fake llama-server")
    parser.add_argument("--version", action="store_true")
    parser.add_argument("-m", "--model", default="")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("-c", "--ctx-size", type=int, default=2048)
    parser.add_argument("-np", "--parallel", type=int, default=1)
    parser.add_argument("--embeddings", action="store_true")
    args, _ = parser.parse_known_args(argv)
    if args.version:
        print("version: 0 (fake)\nbuilt with fake for testing", file=sys.stderr)
        return
    model = Path(args.model)
    settings = _settings(model)
    _note(model, "start")
    try:
        if settings is None:
            print("E main: exiting due to model loading error", file=sys.stderr, flush=True)
            sys.exit(1)
        fake = FakeLlamaServer(
            total_slots=int(settings.get("slots", args.parallel)),
            token_delay_s=float(settings.get("token_delay_ms", 0.0)) / 1000,
            n_ctx=args.ctx_size,
            model_path=str(model),
            api_key=os.environ.get("LLAMA_API_KEY", ""),
            embeddings=args.embeddings,
        )
        fake.set_loading(True)

        async def run() -> bool:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with trio.open_nursery() as nursery:
                    await nursery.start(partial(fake.serve, host=args.host, port=args.port))
                    if not await _load(fake, model, settings):
                        nursery.cancel_scope.cancel()
                        return False
                    print("I main: model loaded", file=sys.stderr, flush=True)
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        break
            return True

        if not trio.run(run):
            print("E main: crashed while loading", file=sys.stderr, flush=True)
            sys.exit(1)
    finally:
        _note(model, "exit")


if __name__ == "__main__":
    main()
