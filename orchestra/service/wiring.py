"""The service's wiring: every pool built from the configuration (the single-model one, or
one per ``[models]`` table and per verified catalog entry), and the actors over them."""

from __future__ import annotations

import contextlib
import logging
from functools import partial
from pathlib import Path

import attrs
import trio

from orchestra.actors.admission import Admission
from orchestra.actors.models import Models
from orchestra.actors.owned_supervisor import OwnedReplicaSupervisor
from orchestra.actors.pool_control import PoolControl
from orchestra.actors.pools import Engines, ModelSpec, Pool
from orchestra.actors.queue import Queue
from orchestra.actors.queue_messages import ReplicaLink
from orchestra.actors.replica_set import Replica, ReplicaKind, ReplicaSet
from orchestra.actors.supervisor import ReplicaSupervisor, Supervisor
from orchestra.artifacts import ArtifactStore
from orchestra.catalog import Catalog, CatalogError, CatalogModel, ModelState, TrustState
from orchestra.config import AdapterConfig, Config, ConfigError, ModelConfig
from orchestra.engine import cache
from orchestra.engine.cache import MODEL_FILE, MODEL_SHA256
from orchestra.engine.llamacpp import LlamaCppAdapter
from orchestra.engine.machine import machine_budget_mb
from orchestra.engine.openai_compat import OpenAICompatAdapter
from orchestra.engine.process import EngineCommand, resolve_command
from orchestra.engine.streams import streams_for
from orchestra.errors import Refusal
from orchestra.http.context import Actors
from orchestra.messages import Doorbell
from orchestra.obs import logs
from orchestra.obs.metrics import Metrics
from orchestra.pool import Residency
from orchestra.scheduling import placement
from orchestra.scheduling.sessions import SessionBook
from orchestra.tokens import read_token_file

log = logging.getLogger("orchestra")


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


def _queue(w: Wiring, links: tuple[ReplicaLink, ...], pool_id: str, residency: Residency) -> Queue:
    config = w.config
    return Queue(
        capacity=config.admission.queue_capacity,
        batch_capacity=config.admission.batch_queue_capacity,
        batch_every=config.admission.batch_every,
        replicas=links,
        retention_s=config.streams.retention_s,
        orphan_grace_s=config.streams.orphan_grace_ms / 1000,
        engine_backlog=config.adapter.engine_backlog,
        metrics=w.metrics,
        sessions=SessionBook(config.sessions),
        pool_id=pool_id,
        doorbell=w.doorbell,
        residency=residency,
        artifacts=w.artifacts,
    )


@attrs.define
class Wiring:
    """What every pool of one service shares."""

    config: Config
    catalog: Catalog
    artifacts: ArtifactStore
    api_key: str
    slot_dir: Path
    metrics: Metrics
    doorbell: Doorbell
    clients: contextlib.AsyncExitStack
    ports_taken: int = 0
    """Ports above ``adapter.endpoint``'s handed to owned replicas so far."""

    def take_ports(self, count: int) -> int:
        """The offset of ``count`` fresh ports for owned replicas."""
        offset, self.ports_taken = self.ports_taken, self.ports_taken + count
        return offset


async def _engine(w: Wiring, adapter: AdapterConfig, api_key: str | None = None) -> LlamaCppAdapter:
    key = w.api_key if api_key is None else api_key
    client = await w.clients.enter_async_context(LlamaCppAdapter.open_client(adapter, api_key=key))
    streams = streams_for(
        client,
        api_key=key,
        connect_timeout_s=adapter.connect_timeout_s,
        read_timeout_s=adapter.decode_timeout_s,
    )
    return LlamaCppAdapter(client, adapter, streams)


async def _single_pool(w: Wiring) -> Pool:
    """The single-model configuration: one pool, ``default``, one replica, always loaded."""
    config = w.config
    engine = await _engine(w, config.adapter)
    link = ReplicaLink("default/0", engine)
    queue = _queue(w, (link,), "default", Residency.LOADED)
    supervisor: Supervisor
    model_id = None
    kind = ReplicaKind.ATTACHED
    if config.replica is None:
        supervisor = ReplicaSupervisor(engine, queue.replica_status, link.alarm)
    else:
        kind = ReplicaKind.OWNED
        command = attrs.evolve(
            resolve_command(config.replica, config.adapter),
            api_key=w.api_key,
            slot_save_path=w.slot_dir,
        )
        model_id = await _catalog_id(w.catalog, command)
        supervisor = OwnedReplicaSupervisor(
            command, config.replica, engine, queue.replica_status, queue.replica_lost,
            link.alarm,
        )  # fmt: skip
    control = PoolControl(
        queue,
        supervisor,
        w.catalog,
        start_timeout_s=0.0 if config.replica is None else config.replica.start_timeout_s,
        model_id=model_id,
    )
    spec = ModelSpec("default", keep_loaded=True, fixed=True)
    replicas = ReplicaSet(
        (Replica(link, kind, config.adapter.endpoint, supervisor),), queue.replica_status
    )
    return Pool(spec, queue, replicas, control)


@attrs.frozen
class _Planned:
    """One replica of a ``[models]`` pool, before its Queue exists."""

    link: ReplicaLink
    kind: ReplicaKind
    endpoint: str
    command: EngineCommand | None = None
    """Owned replicas: how to start its llama-server."""


def _url(endpoint: str) -> str:
    """An endpoint as a base URL (``host:port`` on this machine means ``http://``)."""
    return endpoint if "://" in endpoint else f"http://{endpoint}"


def _attached_key(name: str, model: ModelConfig) -> str:
    if not model.api_key_file:
        return ""
    try:
        return read_token_file(model.api_key_file)
    except ValueError as exc:
        raise ConfigError([f"models.{name}.api_key_file: {exc}"]) from None


async def _plan_replicas(w: Wiring, name: str, model: ModelConfig) -> list[_Planned]:
    """Every replica of a ``[models]`` pool: its owned llama-servers (each on a port of
    its own, with its devices), then its attached llama-servers, then its
    OpenAI-compatible servers."""
    config = w.config
    replica = model.replica()
    owned = model.owned_replicas
    offset = w.take_ports(owned)
    planned: list[_Planned] = []
    slots = w.slot_dir / name
    slots.mkdir()
    for j in range(owned):
        directory = slots / str(j) if owned > 1 else slots
        directory.mkdir(exist_ok=True)
        command = attrs.evolve(
            resolve_command(
                replica, config.adapter, table=f"models.{name}", model_key="path",
                port_offset=offset + j,
            ),
            api_key=w.api_key,
            slot_save_path=directory,
            embeddings=model.embeddings,
            devices=model.devices[j] if model.devices else None,
        )  # fmt: skip
        endpoint = f"http://{command.host}:{command.port}"
        engine = await _engine(w, attrs.evolve(config.adapter, endpoint=endpoint))
        link = ReplicaLink(f"{name}/{len(planned)}", engine)
        planned.append(_Planned(link, ReplicaKind.OWNED, endpoint, command))
    key = _attached_key(name, model)
    llama = model.endpoints if model.engine == "llamacpp" else ()
    for endpoint in map(_url, llama):
        engine = await _engine(w, attrs.evolve(config.adapter, endpoint=endpoint), key)
        link = ReplicaLink(f"{name}/{len(planned)}", engine)
        planned.append(_Planned(link, ReplicaKind.ATTACHED, endpoint))
    openai = model.openai_endpoints + (model.endpoints if model.engine == "openai" else ())
    for endpoint in map(_url, openai):
        client = await w.clients.enter_async_context(
            OpenAICompatAdapter.open_client(
                endpoint, connect_timeout_s=config.adapter.connect_timeout_s, api_key=key
            )
        )
        compat = OpenAICompatAdapter(
            client,
            model=model.served_model or name,
            slots=model.slots,
            decode_timeout_s=config.adapter.decode_timeout_s,
            connect_timeout_s=config.adapter.connect_timeout_s,
            streams=streams_for(
                client,
                api_key=key,
                connect_timeout_s=config.adapter.connect_timeout_s,
                read_timeout_s=config.adapter.decode_timeout_s,
            ),
        )
        link = ReplicaLink(f"{name}/{len(planned)}", compat, counts_tokens=False)
        planned.append(_Planned(link, ReplicaKind.OPENAI, endpoint))
    return planned


async def _model_pool(w: Wiring, name: str, model: ModelConfig) -> Pool:
    """A pool of ``[models]``: unloaded until a task or ``keep_loaded`` asks for it."""
    replica = model.replica()
    planned = await _plan_replicas(w, name, model)
    links = tuple(p.link for p in planned)
    queue = _queue(w, links, name, Residency.UNLOADED)
    replicas = []
    for index, plan in enumerate(planned):
        report = partial(queue.replica_status, replica=index)
        supervisor: Supervisor
        if plan.command is not None:
            supervisor = OwnedReplicaSupervisor(
                plan.command, replica, plan.link.engine, report,
                partial(queue.replica_lost, replica=index), plan.link.alarm,
                load_once=True, pool_id=name, replica_id=plan.link.id,
            )  # fmt: skip
        else:
            supervisor = ReplicaSupervisor(
                plan.link.engine, report, plan.link.alarm, replica_id=plan.link.id
            )
        replicas.append(Replica(plan.link, plan.kind, plan.endpoint, supervisor))
    engines = ReplicaSet(tuple(replicas), queue.replica_status)
    control = PoolControl(
        queue,
        replicas[0].supervisor,
        w.catalog,
        start_timeout_s=replica.start_timeout_s,
        model_id=name,
        swaps_models=False,
    )
    owned = [p.command for p in planned if p.command is not None]
    memory, source = model.memory_mb, "configured"
    if not memory and owned:
        path = owned[0].model
        size = await trio.to_thread.run_sync(lambda: path.stat().st_size)
        memory, source = placement.estimate_mb(size, replica.ctx_size) * len(owned), "estimated"
    if owned:
        await _catalogue(w.catalog, name, owned[0].model)
    spec = ModelSpec(
        name,
        aliases=model.aliases,
        keep_loaded=model.keep_loaded,
        idle_unload_s=model.idle_unload_s,
        memory_mb=memory,
        memory_source=source,
        embeddings=model.embeddings,
    )
    return Pool(spec, queue, engines, control)


async def _catalogue(catalog: Catalog, name: str, path: Path) -> None:
    """Register a configured model in the catalog under its id unless the id is taken
    (a known small model with its sha256), so that every model body has the catalog's
    fields; a file the catalog refuses is served all the same."""
    known = next((m for m in cache.MODELS.values() if m.file == path.name), None)
    try:
        entry = await catalog.ensure(name, str(path), known.sha256 if known else None)
    except (Refusal, CatalogError) as exc:
        log.warning("model %s is not in the catalog: %s", name, exc)
        return
    if entry.path != str(path):
        log.warning(
            "catalog id %r names %s, not %s (models.%s.path); the model is served from "
            "the configured file",
            name,
            entry.path,
            path,
            name,
        )


def _budget(config: Config, pools: list[Pool]) -> int:
    """The memory budget in MiB; ConfigError when the keep_loaded models exceed it."""
    budget = config.placement.memory_budget_mb
    source = "placement.memory_budget_mb"
    if not budget:
        gpu = any(model.gpu_layers > 0 for model in config.models.values())
        budget, source = machine_budget_mb(gpu)
    kept = sum(pool.spec.memory_mb for pool in pools if pool.spec.keep_loaded)
    if kept > budget:
        raise ConfigError(
            [
                f"placement.memory_budget_mb: the keep_loaded models take {kept} MiB together "
                f"(configured or estimated), more than the budget: {budget} MiB ({source})"
            ]
        )
    if config.models:
        log.info(
            "models: %s; memory budget %d MiB (%s)",
            ", ".join(
                f"{p.id} ({p.spec.memory_mb} MiB {p.spec.memory_source}"
                f"{', keep_loaded' if p.spec.keep_loaded else ''})"
                for p in pools
            ),
            budget,
            source,
        )
    return budget


def _log_fields(config: Config, supervisor: Engines) -> dict[str, object]:
    """The fields every log line of a service carries (read when the line is written)."""
    summary = supervisor.statistics()
    return {
        "engine": config.adapter.engine,
        "engine_version": summary.engine_version,
        "model_digest": summary.model_digest,
        "pool_id": "default",
        "replica_id": "default/0",
    }


async def build_actors(w: Wiring) -> Actors:
    """Every actor of the service, each wired to the others when it is built."""
    config = w.config
    if config.models:
        pools = [await _model_pool(w, name, model) for name, model in config.models.items()]
        default_id = config.default_model or pools[0].id
        default_id = next(p.id for p in pools if default_id in (p.id, *p.spec.aliases))
    else:
        pools = [await _single_pool(w)]
        default_id = "default"
        logs.set_service_fields(partial(_log_fields, config, pools[0].supervisor))
    if config.models:
        pools += [
            pool
            for entry in await w.catalog.list()
            if (pool := await _catalog_pool(w, entry, pools)) is not None
        ]
    models = Models(
        pools, _budget(config, pools), default_id, w.doorbell, w.metrics,
        measure=bool(config.models),
    )  # fmt: skip
    admission = Admission(config.admission, models)
    w.metrics.watch(pools=models.states, admission=admission.statistics)

    async def adopt(entry: CatalogModel) -> None:
        pool = await _catalog_pool(w, entry, models.pools)
        if pool is not None:
            await models.adopt(pool)

    return Actors(
        config,
        admission,
        models,
        w.catalog,
        w.metrics,
        artifacts=w.artifacts,
        adopt=adopt if config.models else None,
    )


async def _catalog_pool(w: Wiring, entry: CatalogModel, pools: list[Pool]) -> Pool | None:
    """A pool for a catalog entry that no configured model names, when it is active and
    verified: the first ``[models]`` table's engine keys, on its own file. None when it
    is not servable (or a pool already has the name)."""
    names = {name for pool in pools for name in (pool.id, *pool.spec.aliases)}
    if entry.id in names or entry.state is not ModelState.ACTIVE:
        return None
    if entry.trust_state is not TrustState.VERIFIED:
        return None
    template = next(iter(w.config.models.values()))
    model = attrs.evolve(
        template, path=entry.path, aliases=(), keep_loaded=False, memory_mb=0,
        embeddings=False, replicas=1, devices=template.devices[:1], endpoints=(),
        openai_endpoints=(), engine="llamacpp",
    )  # fmt: skip
    try:
        return await _model_pool(w, entry.id, model)
    except (ConfigError, OSError) as exc:
        log.warning("catalog model %s cannot be served: %s", entry.id, exc)
        return None
