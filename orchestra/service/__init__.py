"""The service: every actor under one nursery, and the graceful shutdown.

::

    run_service
    └── root nursery
        ├── per pool (one per model; the single-model configuration has one, ``default``)
        │   ├── Queue.run           (sessions nursery inside: one StreamSession per task)
        │   └── PoolControl.run     (drain / reload, one at a time, in its own nursery)
        ├── Models.run              (which pools are loaded; each loaded pool's supervisor
        │                            runs inside: ReplicaSupervisor (attached) or
        │                            OwnedReplicaSupervisor, one llama-server per life)
        └── hypercorn.trio.serve    (the QuartTrio app; Admission runs in its handlers)
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import tempfile
from functools import partial
from pathlib import Path

import attrs
import hypercorn.config
import hypercorn.trio
import trio
from opentelemetry.trace import TracerProvider
from quart_trio import QuartTrio

from orchestra.actors.queue import Queue
from orchestra.artifacts import ArtifactStore, Limits
from orchestra.catalog import Catalog
from orchestra.config import Config
from orchestra.http.app import create_app
from orchestra.http.context import Actors
from orchestra.messages import Doorbell
from orchestra.obs import logs
from orchestra.obs.metrics import Metrics
from orchestra.obs.tracing import Tracing, otlp_url
from orchestra.service.notify import Notifier, StatusLine, run_notify, stopping
from orchestra.service.wiring import Wiring, build_actors
from orchestra.tools import Tools

log = logging.getLogger("orchestra")

HTTP_GRACE_S = 5.0
"""After the last task ended, how long open HTTP connections get to finish."""
SESSION_EXIT_S = 10.0
"""After cancelling the remaining tasks, how long their sessions get to close."""
LISTEN_BACKLOG = 4096
"""Connections the kernel holds for orchestra before it accepts them (capped by
``net.core.somaxconn``): a thousand clients connecting at once are all let in, where
hypercorn's default of 100 has the kernel reset the rest."""


@attrs.frozen
class Running:
    """What a started service reports: where it listens, its actors (for tests), and its
    ASGI app (which an embedded client calls in-process)."""

    urls: list[str]
    """Empty when started with ``listen=False``."""
    actors: Actors
    app: QuartTrio


async def _serve_http(
    app: QuartTrio,
    config: hypercorn.config.Config,
    stop: trio.Event,
    stopped: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    try:
        await hypercorn.trio.serve(app, config, shutdown_trigger=stop.wait, task_status=task_status)
    finally:
        stopped.set()


def _hypercorn_config(config: Config) -> hypercorn.config.Config:
    hc = hypercorn.config.Config()
    hc.bind = [config.bind_addr]
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.graceful_timeout = HTTP_GRACE_S
    hc.backlog = LISTEN_BACKLOG
    return hc


async def drain(queue: Queue, grace_s: float) -> None:
    """Refuse new tasks, let running ones finish within ``grace_s``, then cancel the rest."""
    await queue.refuse_new()
    with trio.move_on_after(grace_s):
        await queue.wait_idle()
    cancelled = await queue.cancel_all("shutdown")
    if cancelled:
        log.warning("grace period over: cancelled %d unfinished task(s)", cancelled)
    with trio.move_on_after(SESSION_EXIT_S):
        await queue.wait_idle()


async def run_service(
    config: Config,
    *,
    stop: trio.Event,
    listen: bool = True,
    tracer_provider: TracerProvider | None = None,
    notifier: Notifier | None = None,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``stop`` is set, then shut down gracefully and return.

    Reports :class:`Running` (the bound URLs, which tells the port of a ``:0`` bind) once
    the HTTP listener accepts connections. With ``listen=False`` nothing listens: the app
    in :class:`Running` is the only way in (embedded mode). When ``[tracing]`` is on,
    spans go to ``tracer_provider`` if given (a test's), else to the OTLP exporter the
    configuration names; OpenTelemetry's global provider is never set. With a
    ``notifier`` (``$NOTIFY_SOCKET``: ``orchestra serve`` makes one), systemd hears
    ``READY=1``, ``STATUS=``, ``WATCHDOG=1`` and ``STOPPING=1``
    (:mod:`orchestra.service.notify`); the service never reads the environment for it.
    """
    logs.redactor.add(config.auth.token)
    api_key = ""
    if config.replica is not None or config.models:
        api_key = secrets.token_urlsafe(32)  # the engine answers orchestra and nobody else
        logs.redactor.add(api_key)
    catalog = await Catalog.open(config.data_path)
    artifacts = await ArtifactStore.open(
        config.data_path,
        Limits(config.artifacts.max_artifact_bytes, config.artifacts.max_total_bytes),
    )
    # llama-server acts on its slots (erasing a deleted session's cache) only when it has
    # a directory for slot files; a private one lives as long as the service.
    slot_dir = tempfile.TemporaryDirectory(prefix="orchestra-slots-")
    with slot_dir:
        async with contextlib.AsyncExitStack() as clients:
            wiring = Wiring(
                config,
                catalog,
                artifacts,
                api_key,
                Path(slot_dir.name),
                Metrics(),
                Doorbell(),
                clients,
            )
            tools = await Tools.open(config.tools, config.data_path)
            tracing = Tracing.from_config(config.tracing, tracer_provider)
            clients.push_async_callback(tracing.aclose)  # after the last task's spans
            if tracing.on:
                target = "the given tracer provider" if tracer_provider else "OTLP/HTTP at " + (
                    otlp_url(config.tracing.otlp_endpoint) if config.tracing.otlp_endpoint
                    else "the exporter's default endpoint"
                )  # fmt: skip
                log.info("tracing every task to %s", target)
            actors = attrs.evolve(await build_actors(wiring), tools=tools, tracing=tracing)
            queue = actors.queue
            http_stop, http_stopped = trio.Event(), trio.Event()
            async with trio.open_nursery() as root:
                for pool in actors.models:
                    await root.start(pool.queue.run)
                    await root.start(pool.control.run)
                await root.start(actors.models.run)
                app = create_app(actors)
                urls: list[str] = []
                if listen:
                    urls = await root.start(
                        partial(
                            _serve_http, app, _hypercorn_config(config), http_stop, http_stopped
                        )
                    )
                else:
                    http_stopped.set()
                where = f"listening on {', '.join(urls)}" if urls else "embedded (no listener)"
                if config.models:
                    log.info(
                        "orchestra %s; %d model(s), default %s, loaded on demand "
                        "(GET /v1/models); queue capacity %d per model",
                        where,
                        len(config.models),
                        actors.models.default_id,
                        config.admission.queue_capacity,
                    )
                else:
                    log.info(
                        "orchestra %s; engine %s at %s, %s (%s); queue capacity %d",
                        where,
                        config.adapter.engine,
                        config.adapter.endpoint,
                        "attached" if config.replica is None else "owned",
                        "ready"
                        if queue.statistics().pool.ready
                        else queue.statistics().pool.detail,
                        config.admission.queue_capacity,
                    )
                task_status.started(Running(urls, actors, app))
                line = StatusLine(actors)
                if notifier is not None:
                    root.start_soon(run_notify, notifier, actors, line, stop)
                await stop.wait()
                log.info("shutting down: refusing new tasks, %.0f s grace", config.shutdown_grace_s)
                if notifier is not None:
                    stopping(notifier, line)
                async with trio.open_nursery() as draining:
                    for pool in actors.models:
                        draining.start_soon(drain, pool.queue, config.shutdown_grace_s)
                http_stop.set()
                await http_stopped.wait()
                root.cancel_scope.cancel()
            if notifier is not None:
                notifier.close()
            log.info("orchestra stopped")
