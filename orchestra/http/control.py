"""The control plane's routes: capabilities, pool health / drain / resume / reload,
replica sets and ``/metrics`` (``specs/openapi/control.yaml``); the catalog's are in
:mod:`orchestra.http.catalog`.

Like the data plane, the handlers hold no state: they read the actors' snapshots
(``statistics()``, ``service_figures()``) or call
:class:`~orchestra.actors.pool_control.PoolControl`, and build the response bodies here.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

import attrs
from quart import Blueprint, Response

from orchestra import API_VERSION, __version__
from orchestra.actors.pool_control import DrainReport, ReloadFailed, ReloadReport
from orchestra.actors.pools import Pool
from orchestra.http.bodies import json_response, read_body, string
from orchestra.http.context import Actors
from orchestra.obs.metrics import CONTENT_TYPE

POOL_ID = "default"
"""The one pool of the single-model configuration."""
MAX_DEADLINE_MS = 3_600_000
"""The longest drain deadline a request may ask for (one hour)."""


def _deadline(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return "must be an integer (milliseconds)"
    if not 0 <= value <= MAX_DEADLINE_MS:
        return f"must be between 0 and {MAX_DEADLINE_MS} (got {value})"
    return None


def drain_body(report: DrainReport, pool_id: str) -> dict[str, Any]:
    """The body of ``POST /v1/pools/{id}/drain``."""
    return {"pool_id": pool_id, "state": "drained", **attrs.asdict(report)}


def reload_body(report: ReloadReport, pool_id: str) -> dict[str, Any]:
    """The body of ``POST /v1/pools/{id}/reload``."""
    return {
        "pool_id": pool_id,
        "outcome": "reloaded",
        "model": attrs.asdict(report.model),
        "previous_model": attrs.asdict(report.previous_model),
        "drain": drain_body(report.drain, pool_id),
        "load_ms": report.load_ms,
    }


def served_model_id(actors: Actors, pool: Pool) -> str | None:
    """The id of the model the pool serves: its catalog id (attached: what the engine
    reports), or a ``[models]`` id."""
    control, config = pool.control, actors.config
    if control.model_id is not None or config.replica is not None or config.models:
        return control.model_id
    path = pool.supervisor.statistics().model_path
    return PurePath(path).stem if path else None


def _mode(actors: Actors) -> str:
    return "attached" if actors.config.replica is None and not actors.config.models else "owned"


def capabilities_body(actors: Actors) -> dict[str, Any]:
    """The body of ``GET /v1/capabilities``."""
    config = actors.config
    models, pools = [], []
    version = None
    for pool in actors.models:
        q = pool.queue.statistics()
        s = pool.supervisor.statistics()
        version = version or s.engine_version
        if s.model_path or pool.spec.fixed is False:
            ctx_max = s.props.n_ctx if s.props is not None else None
            models.append(
                {
                    "id": served_model_id(actors, pool),
                    "digest": s.model_digest,
                    "ctx_max": ctx_max,
                    "pool": pool.id,
                    "residency": str(q.pool.residency),
                }
            )
        pools.append(
            {
                "id": pool.id,
                "ready": q.pool.serving,
                "state": q.pool.health_state,
                "slots_total": q.slots_total,
                "slots_busy": q.slots_busy,
                "queue_depth": q.queue_depth,
            }
        )
    return {
        "api_version": API_VERSION,
        "orchestra_version": __version__,
        "engines": [
            {"engine": config.adapter.engine, "engine_version": version, "mode": _mode(actors)}
        ],
        "models": models,
        "pools": pools,
        "limits": {
            "queue_capacity": config.admission.queue_capacity,
            "batch_queue_capacity": config.admission.batch_queue_capacity,
            "max_tokens": config.admission.max_tokens_limit,
            "ctx_limit": config.admission.ctx_limit,
            "engine_backlog": config.adapter.engine_backlog,
            "rate_limits": None,
            "sessions": attrs.asdict(config.sessions),
        },
        "features": {
            "stream_resume": True,
            "stream_on_submit": True,
            "idempotent_task_id": True,
            "determinism": ["strict", "best_effort"],
            "owned_engine": _mode(actors) == "owned",
            "drain": True,
            "reload": actors.control.can_reload,
            "several_models": bool(config.models),
            "embeddings": any(pool.spec.embeddings for pool in actors.models),
            "model_catalog": True,
            "priorities": True,
            "sessions": True,
            "deadlines": True,
        },
    }


def health_body(actors: Actors, pool: Pool) -> dict[str, Any]:
    """The body of ``GET /v1/pools/{id}/health``: one snapshot of the pool's one state."""
    q = pool.queue.statistics()
    s = pool.supervisor.statistics()
    pool_id = pool.id
    health: dict[str, Any] = {
        "pool_id": pool_id,
        "live": True,
        "ready": q.pool.serving,
        "draining": q.pool.refusing or q.pool.draining,
        "engine": actors.config.adapter.engine,
        "state": q.pool.health_state,
        "engine_version": s.engine_version,
        "model_id": served_model_id(actors, pool),
        "model_digest": s.model_digest,
        "residency": str(q.pool.residency),
        "slots_total": q.slots_total,
        "slots_busy": q.slots_busy,
        "queue_depth": q.queue_depth,
        "queue_capacity": q.queue_capacity,
        "api_version": API_VERSION,
    }
    if not q.pool.ready:
        health["last_error"] = q.pool.detail
    return health


def replicasets_body(actors: Actors) -> dict[str, Any]:
    """The body of ``GET /v1/replicasets``: one replica set per pool, every replica in it."""
    sets = []
    for pool in actors.models:
        q = pool.queue.statistics()
        s = pool.supervisor.statistics()
        figures = pool.queue.service_figures()
        model = {"id": served_model_id(actors, pool), "digest": s.model_digest}
        replicas = [
            {
                "id": view.id,
                "kind": view.kind,
                "endpoint": view.endpoint,
                "engine": "openai" if view.kind == "openai" else "llamacpp",
                "engine_version": view.engine_version,
                "mode": "owned" if view.kind == "owned" else "attached",
                "state": view.state,
                "detail": view.detail,
                "pid": view.pid,
                "model": model,
                "slots_total": view.slots_total,
                "slots_busy": view.slots_busy,
                "queue_depth": q.queue_depth,
                "restarts": view.restarts,
                "slo": attrs.asdict(view.slo),
                "predicted_start": dict(figures.predicted_start),
            }
            for view in pool.replica_views()
        ]
        sets.append(
            {
                "id": pool.id,
                "pool_id": pool.id,
                "state": q.pool.health_state,
                "slo": attrs.asdict(figures.slo),
                "tokens_out_total": q.tokens_out_total,
                "replicas": replicas,
            }
        )
    return {"replicasets": sets}


def control_blueprint(actors: Actors) -> Blueprint:
    """The control plane's routes over ``actors``."""
    routes = Blueprint("control", __name__)

    @routes.get("/v1/capabilities")
    async def capabilities() -> Response:
        return json_response(capabilities_body(actors))

    @routes.get("/v1/pools/<pool_id>/health")
    async def pool_health(pool_id: str) -> Response:
        return json_response(health_body(actors, actors.pool(pool_id)))

    @routes.post("/v1/pools/<pool_id>/drain")
    async def drain_pool(pool_id: str) -> Response:
        control = actors.pool(pool_id).control
        given = await read_body({"deadline_ms": _deadline})
        deadline_ms = given.get("deadline_ms")
        report = await (
            control.drain() if deadline_ms is None else control.drain(deadline_ms / 1000)
        )
        return json_response(drain_body(report, pool_id))

    @routes.post("/v1/pools/<pool_id>/resume")
    async def resume_pool(pool_id: str) -> Response:
        pool = actors.pool(pool_id)
        await read_body({})
        await pool.control.resume()
        state = pool.queue.statistics().pool.health_state
        return json_response({"pool_id": pool_id, "state": state})

    @routes.post("/v1/pools/<pool_id>/reload")
    async def reload_pool(pool_id: str) -> Response:
        control = actors.pool(pool_id).control
        given = await read_body({"model_ref": string, "deadline_ms": _deadline}, ("model_ref",))
        deadline_ms = given.get("deadline_ms")
        model_ref = given["model_ref"]
        try:
            report = await (
                control.reload(model_ref)
                if deadline_ms is None
                else control.reload(model_ref, deadline_ms / 1000)
            )
        except ReloadFailed as failed:
            assert failed.rolled_back_to is not None and failed.drain is not None
            details = {
                "rolled_back_to": attrs.asdict(failed.rolled_back_to),
                "drain": drain_body(failed.drain, pool_id),
            }
            raise attrs.evolve(failed, details=details) from None
        return json_response(reload_body(report, pool_id))

    @routes.get("/v1/replicasets")
    async def replicasets() -> Response:
        return json_response(replicasets_body(actors))

    @routes.get("/metrics")
    async def metrics() -> Response:
        return Response(actors.metrics.exposition(), content_type=CONTENT_TYPE)

    return routes
