"""The ``orchestra`` command line.

Exit status: 0 ok, 1 could not start (for example the address is in use), 2 usage or
configuration error.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import trio

from . import __version__
from .config import Config, ConfigError, load_config
from .service import run_service

log = logging.getLogger("orchestra")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestra",
        description="A single-host LLM orchestrator in front of llama.cpp's llama-server.",
        epilog="Exit status: 0 ok, 1 could not start, 2 usage or configuration error.",
    )
    parser.add_argument("--version", action="version", version=f"orchestra {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the service until SIGTERM or SIGINT")
    serve.add_argument("--config", required=True, metavar="FILE", help="TOML configuration")
    return parser


async def _watch_signals(stop: trio.Event, cancel_scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if stop.is_set():
                log.warning("second %s: stopping now", signal.Signals(signum).name)
                cancel_scope.cancel()
                return
            log.info("%s received: draining", signal.Signals(signum).name)
            stop.set()


async def _serve_until_signalled(config: Config) -> None:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_signals, stop, nursery.cancel_scope)
        await run_service(config, stop=stop)
        nursery.cancel_scope.cancel()


def _serve(path: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return 2
    if config.replica is not None:
        print(
            "config error: replica: owned mode (orchestra starting llama-server itself) is not "
            "available in this version; remove [replica] and point adapter.endpoint at a "
            "running llama-server",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per engine request
    failure: str | None = None
    try:
        trio.run(_serve_until_signalled, config)
    except* OSError as group:
        failure = "; ".join(str(e) for e in group.exceptions)
    if failure is not None:
        print(f"orchestra: cannot start on {config.bind_addr}: {failure}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args.config)
    raise AssertionError(args.command)  # argparse allows no other command


if __name__ == "__main__":
    sys.exit(main())
