"""The service: every actor under one nursery, and the graceful shutdown.

::

    run_service
    └── root nursery
        ├── Queue.run               (sessions nursery inside: one StreamSession per task)
        ├── ReplicaSupervisor.run   (attached) or OwnedReplicaSupervisor.run (owned:
        │                            one llama-server process per life, inside)
        ├── PoolControl.run         (drain / reload, one at a time, in its own nursery)
        └── hypercorn.trio.serve    (the QuartTrio app; Admission runs in its handlers)
"""

from __future__ import annotations

import logging
import secrets
import tempfile
from functools import partial
from pathlib import Path

import attrs
import hypercorn.config
import hypercorn.trio
import trio
from quart_trio import QuartTrio

from orchestra.actors.admission import Admission
from orchestra.actors.owned_supervisor import OwnedReplicaSupervisor
from orchestra.actors.pool_control import PoolControl
from orchestra.actors.queue import Queue
from orchestra.actors.supervisor import ReplicaSupervisor, Supervisor
from orchestra.catalog import Catalog
from orchestra.config import Config
from orchestra.engine.cache import MODEL_FILE, MODEL_SHA256
from orchestra.engine.llamacpp import LlamaCppAdapter
from orchestra.engine.process import EngineCommand, resolve_command
from orchestra.http.app import create_app
from orchestra.http.context import Actors
from orchestra.messages import EngineAlarm
from orchestra.obs import logs
from orchestra.obs.metrics import Metrics
from orchestra.scheduling.sessions import SessionBook

log = logging.getLogger("orchestra")

HTTP_GRACE_S = 5.0
"""After the last task ended, how long open HTTP connections get to finish."""
SESSION_EXIT_S = 10.0
"""After cancelling the remaining tasks, how long their sessions get to close."""


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


async def _catalog_id(catalog: Catalog, command: EngineCommand) -> str | None:
    """Register the configured model in the catalog (under its file name without ``.gguf``)
    unless it is there; its catalog id, or None when that id names another file."""
    known = command.model.name == MODEL_FILE
    entry = await catalog.ensure(
        command.model.stem, str(command.model), MODEL_SHA256 if known else None
    )
    if entry.path != str(command.model):
        log.warning(
            "catalog id %r names %s, not the configured model %s; reload by catalog id "
            "still works, but health shows no model id",
            entry.id,
            entry.path,
            command.model,
        )
        return None
    return entry.id


def _log_fields(config: Config, supervisor: Supervisor) -> dict[str, object]:
    """The fields every log line of a service carries (read when the line is written)."""
    summary = supervisor.statistics()
    return {
        "engine": config.adapter.engine,
        "engine_version": summary.engine_version,
        "model_digest": summary.model_digest,
        "pool_id": "default",
        "replica_id": "default/0",
    }


async def _actors(
    config: Config, engine: LlamaCppAdapter, catalog: Catalog, api_key: str, slot_dir: Path
) -> Actors:
    """Every actor of the service, each wired to the others when it is built."""
    metrics = Metrics()
    alarm = EngineAlarm()  # raised by the Queue, heard by the supervisor
    queue = Queue(
        capacity=config.admission.queue_capacity,
        batch_capacity=config.admission.batch_queue_capacity,
        batch_every=config.admission.batch_every,
        engine=engine,
        retention_s=config.streams.retention_s,
        orphan_grace_s=config.streams.orphan_grace_ms / 1000,
        engine_backlog=config.adapter.engine_backlog,
        metrics=metrics,
        sessions=SessionBook(config.sessions),
        alarm=alarm,
    )
    supervisor: Supervisor
    model_id = None
    if config.replica is None:
        supervisor = ReplicaSupervisor(engine, queue.replica_status, alarm)
    else:
        command = attrs.evolve(
            resolve_command(config.replica, config.adapter),
            api_key=api_key,
            slot_save_path=slot_dir,
        )
        model_id = await _catalog_id(catalog, command)
        supervisor = OwnedReplicaSupervisor(
            command, config.replica, engine, queue.replica_status, queue.replica_lost,
            alarm,
        )  # fmt: skip
    logs.set_service_fields(partial(_log_fields, config, supervisor))
    control = PoolControl(
        queue,
        supervisor,
        catalog,
        start_timeout_s=0.0 if config.replica is None else config.replica.start_timeout_s,
        model_id=model_id,
    )
    admission = Admission(config.admission, engine, queue)
    metrics.watch(
        queue=queue.statistics,
        admission=admission.statistics,
        replica=supervisor.statistics,
    )
    return Actors(config, admission, queue, supervisor, control, catalog, metrics)


async def run_service(
    config: Config,
    *,
    stop: trio.Event,
    listen: bool = True,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``stop`` is set, then shut down gracefully and return.

    Reports :class:`Running` (the bound URLs, which tells the port of a ``:0`` bind) once
    the HTTP listener accepts connections. With ``listen=False`` nothing listens: the app
    in :class:`Running` is the only way in (embedded mode).
    """
    logs.redactor.add(config.auth.token)
    api_key = ""
    if config.replica is not None:
        api_key = secrets.token_urlsafe(32)  # the engine answers orchestra and nobody else
        logs.redactor.add(api_key)
    catalog = await Catalog.open(config.data_path)
    # llama-server acts on its slots (erasing a deleted session's cache) only when it has
    # a directory for slot files; a private one lives as long as the service.
    slot_dir = tempfile.TemporaryDirectory(prefix="orchestra-slots-")
    with slot_dir:
        async with LlamaCppAdapter.open_client(config.adapter, api_key=api_key) as client:
            engine = LlamaCppAdapter(client, config.adapter)
            actors = await _actors(config, engine, catalog, api_key, Path(slot_dir.name))
            queue = actors.queue
            http_stop, http_stopped = trio.Event(), trio.Event()
            async with trio.open_nursery() as root:
                await root.start(queue.run)
                await root.start(actors.supervisor.run)
                await root.start(actors.control.run)
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
                log.info(
                    "orchestra %s; engine %s at %s, %s (%s); queue capacity %d",
                    f"listening on {', '.join(urls)}" if urls else "embedded (no listener)",
                    config.adapter.engine,
                    config.adapter.endpoint,
                    "attached" if config.replica is None else "owned",
                    "ready" if queue.statistics().pool.ready else queue.statistics().pool.detail,
                    config.admission.queue_capacity,
                )
                task_status.started(Running(urls, actors, app))
                await stop.wait()
                log.info("shutting down: refusing new tasks, %.0f s grace", config.shutdown_grace_s)
                await drain(queue, config.shutdown_grace_s)
                http_stop.set()
                await http_stopped.wait()
                root.cancel_scope.cancel()
            log.info("orchestra stopped")
