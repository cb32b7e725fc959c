"""The fake engine's command line: ``python -m orchestra.testing.fake_llama --port 8081``."""

from __future__ import annotations

import argparse
import signal
from functools import partial

import trio

from .server import FakeLlamaServer


def main(argv: list[str] | None = None) -> None:
    """Serve the fake engine until SIGINT (Ctrl-C) or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m orchestra.testing.fake_llama",
        description="A fake llama-server for tests and benchmarks.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--slots", type=int, default=1, help="parallel slots (-np)")
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    parser.add_argument("--ctx-size", type=int, default=2048, help="whole context (-c)")
    parser.add_argument("--model", default="models/fake.gguf", help="reported model path")
    parser.add_argument("--api-key", default="", help="keys (comma-separated) every route wants")
    parser.add_argument("--embeddings", action="store_true", help="serve POST /v1/embeddings")
    args = parser.parse_args(argv)
    fake = FakeLlamaServer(
        total_slots=args.slots,
        token_delay_s=args.token_delay_ms / 1000,
        n_ctx=args.ctx_size,
        model_path=args.model,
        api_key=args.api_key,
        embeddings=args.embeddings,
    )

    async def run() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                url = await nursery.start(partial(fake.serve, host=args.host, port=args.port))
                print(f"fake llama-server listening on {url}", flush=True)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(run)
