"""Embedded mode: the whole orchestrator in this process, behind the ordinary client.

The service runs exactly as ``orchestra serve`` runs it (same actors, same owned
llama-server, same HTTP app) except that nothing listens on a port: the client's httpx
transport calls the app in-process. So a script written against ``AsyncClient(url)`` works
unchanged with ``AsyncClient.embedded(config)``, errors and streams included.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import httpx
import trio

from orchestra.config import Config, load_config, parse_config
from orchestra.sdk._inprocess import InProcessTransport
from orchestra.service import Running, run_service

EMBEDDED_URL = "http://orchestra.embedded"
"""The base URL an embedded client's requests carry (no socket is behind it)."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def default_config() -> Config:
    """The embedded default: owned llama-server on the small CPU model ``orchestra engine
    install`` cached, on a free loopback port; on exit, unfinished tasks are cancelled at
    once (``shutdown_grace_s = 0``)."""
    return parse_config(
        {
            "shutdown_grace_s": 0.0,
            "adapter": {"endpoint": f"http://127.0.0.1:{_free_port()}"},
            "replica": {},
        }
    )


def _resolve(config: Config | str | os.PathLike[str] | None) -> Config:
    if config is None:
        return default_config()
    if isinstance(config, Config):
        return config
    return load_config(config)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    return [
        leaf
        for exc in group.exceptions
        for leaf in (_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    ]


@asynccontextmanager
async def open_embedded(
    config: Config | str | os.PathLike[str] | None,
) -> AsyncIterator[tuple[httpx.AsyncBaseTransport, str]]:
    """Start the service without a listener, wait until its engine is ready, and yield a
    transport that calls its app in-process, with the token its config asks for. On exit
    the service shuts down as on SIGTERM, with the config's ``shutdown_grace_s``.

    A single exception (the caller's own, or the engine failing to start) is raised as it
    is, not wrapped in an exception group.
    """
    resolved = _resolve(config)
    stop = trio.Event()
    try:
        async with trio.open_nursery() as service:
            running: Running = await service.start(
                partial(run_service, resolved, stop=stop, listen=False)
            )
            try:
                if not resolved.models:  # several models load on demand: nothing to wait for
                    await running.actors.queue.wait_ready()
                async with trio.open_nursery() as calls:
                    yield InProcessTransport(running.app, calls), resolved.auth.token
                    calls.cancel_scope.cancel()
            finally:
                stop.set()
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1:
            raise leaves[0] from leaves[0].__cause__
        raise
