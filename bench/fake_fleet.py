"""Many fake llama-servers in one process: ``COUNT`` :class:`FakeLlamaServer` instances on
the consecutive loopback ports ``BASE .. BASE + COUNT - 1``, all in one Trio run (so their
CPU is this one process's, one core at most).

Prints ``ready N`` (N = the count) on stdout once every one of them listens, then serves
until SIGTERM or SIGINT. The soft RLIMIT_NOFILE is raised to the hard limit first: a
thousand connections from orchestra need as many descriptors.

Usage: python bench/fake_fleet.py --base-port 30000 --count 64 [--slots 8]
           [--token-delay-ms 2] [--ctx-size 4096]
(bench/replicas.py starts it; it is no benchmark of its own.)
"""

from __future__ import annotations

import argparse
import resource
import signal
from functools import partial

import trio

from orchestra.testing.fake_llama import FakeLlamaServer


def raise_nofile() -> int:
    """Raise the soft limit of open files to the hard one; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


async def serve(args: argparse.Namespace) -> None:
    fakes = [
        FakeLlamaServer(
            total_slots=args.slots,
            token_delay_s=args.token_delay_ms / 1000,
            n_ctx=args.ctx_size,
            model_path=args.model,
        )
        for _ in range(args.count)
    ]
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            for i, fake in enumerate(fakes):
                await nursery.start(partial(fake.serve, host=args.host, port=args.base_port + i))
            print(f"ready {len(fakes)}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--base-port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--slots", type=int, default=8, help="slots per fake (-np)")
    parser.add_argument("--token-delay-ms", type=float, default=2.0)
    parser.add_argument("--ctx-size", type=int, default=4096, help="whole context (-c)")
    parser.add_argument("--model", default="models/fake-fleet.gguf", help="reported path")
    args = parser.parse_args()
    raise_nofile()
    trio.run(serve, args)


if __name__ == "__main__":
    main()
