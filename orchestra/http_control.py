"""The control plane's HTTP routes: capabilities, pool health / drain / resume / reload,
replica sets, models, the model catalog and ``/metrics`` (``specs/openapi/control.yaml``).

Like the data plane, the handlers hold no state: they read the actors' snapshots or call
:class:`~orchestra.pool_control.PoolControl` and :class:`~orchestra.catalog.Catalog`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

import attrs
import trio
from quart import Response, request
from quart_trio import QuartTrio

from . import API_VERSION, __version__
from .catalog import CatalogModel, ModelState
from .errors import ApiError, ErrorCode
from .http_util import json_response, read_json_object
from .metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from .http_api import Actors

POOL_ID = "default"
"""The one pool of the single-replica configuration."""
MAX_DEADLINE_MS = 3_600_000
"""The longest drain deadline a request may ask for (one hour)."""

Check = Callable[[Any], str | None]


def _deadline(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return "must be an integer (milliseconds)"
    if not 0 <= value <= MAX_DEADLINE_MS:
        return f"must be between 0 and {MAX_DEADLINE_MS} (got {value})"
    return None


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "must be a non-empty string"


def _optional_string(value: Any) -> str | None:
    return None if value is None else _string(value)


def _model_state(value: Any) -> str | None:
    states = [str(s) for s in ModelState]
    return None if value in states else f"must be one of {', '.join(states)}"


def _pool(pool_id: str) -> None:
    if pool_id != POOL_ID:
        raise ApiError(ErrorCode.NOT_FOUND, f"no pool {pool_id!r} (there is only {POOL_ID!r})")


def add_control_routes(app: QuartTrio, actors: Actors) -> None:
    """Register the control plane's routes on ``app``."""
    queue, supervisor, control, catalog = (
        actors.queue, actors.supervisor, actors.control, actors.catalog
    )  # fmt: skip
    config = actors.config

    async def body(checks: Mapping[str, Check], required: tuple[str, ...] = ()) -> dict[str, Any]:
        raw = await request.get_data(cache=False)
        assert isinstance(raw, bytes)
        return read_json_object(raw, checks, required)

    def model_id() -> str | None:
        if control.model_id is not None or config.replica is not None:
            return control.model_id
        path = supervisor.statistics().model_path  # attached: what the engine reports
        return PurePath(path).stem if path else None

    @app.get("/v1/capabilities")
    async def capabilities() -> Response:
        q = queue.statistics()
        s = supervisor.statistics()
        models = []
        if s.model_path:
            models.append(
                {
                    "id": model_id(),
                    "digest": s.model_digest,
                    "ctx_max": s.props.n_ctx if s.props is not None else None,
                }
            )
        return json_response(
            {
                "api_version": API_VERSION,
                "orchestra_version": __version__,
                "engines": [
                    {
                        "engine": config.adapter.engine,
                        "engine_version": s.engine_version,
                        "mode": "attached" if config.replica is None else "owned",
                    }
                ],
                "models": models,
                "pools": [
                    {
                        "id": POOL_ID,
                        "ready": q.serving,
                        "state": q.state,
                        "slots_total": q.slots_total,
                        "slots_busy": q.slots_busy,
                        "queue_depth": q.queue_depth,
                    }
                ],
                "limits": {
                    "queue_capacity": config.admission.queue_capacity,
                    "batch_queue_capacity": config.admission.batch_queue_capacity,
                    "max_tokens": config.admission.max_tokens_limit,
                    "ctx_limit": config.admission.ctx_limit,
                    "rate_limits": None,
                    "sessions": attrs.asdict(config.sessions),
                },
                "features": {
                    "stream_resume": True,
                    "stream_on_submit": True,
                    "idempotent_task_id": True,
                    "determinism": ["strict", "best_effort"],
                    "owned_engine": config.replica is not None,
                    "drain": True,
                    "reload": control.can_reload,
                    "model_catalog": True,
                    "priorities": True,
                    "sessions": True,
                    "deadlines": True,
                },
            }
        )

    @app.get("/v1/pools/<pool_id>/health")
    async def pool_health(pool_id: str) -> Response:
        _pool(pool_id)
        q = queue.statistics()
        s = supervisor.statistics()
        health: dict[str, Any] = {
            "pool_id": pool_id,
            "live": True,
            "ready": q.serving,
            "draining": q.refusing or q.draining,
            "engine": config.adapter.engine,
            "state": q.state,
            "engine_version": s.engine_version,
            "model_id": model_id(),
            "model_digest": s.model_digest,
            "slots_total": q.slots_total,
            "slots_busy": q.slots_busy,
            "queue_depth": q.queue_depth,
            "queue_capacity": q.queue_capacity,
            "api_version": API_VERSION,
        }
        if not q.ready:
            health["last_error"] = q.replica_detail
        return json_response(health)

    @app.post("/v1/pools/<pool_id>/drain")
    async def drain_pool(pool_id: str) -> Response:
        _pool(pool_id)
        given = await body({"deadline_ms": _deadline})
        deadline_ms = given.get("deadline_ms")
        report = await (
            control.drain() if deadline_ms is None else control.drain(deadline_ms / 1000)
        )
        return json_response(report.to_json(pool_id))

    @app.post("/v1/pools/<pool_id>/resume")
    async def resume_pool(pool_id: str) -> Response:
        _pool(pool_id)
        await body({})
        await control.resume()
        return json_response({"pool_id": pool_id, "state": queue.statistics().state})

    @app.post("/v1/pools/<pool_id>/reload")
    async def reload_pool(pool_id: str) -> Response:
        _pool(pool_id)
        given = await body({"model_ref": _string, "deadline_ms": _deadline}, ("model_ref",))
        deadline_ms = given.get("deadline_ms")
        model_ref = given["model_ref"]
        report = await (
            control.reload(model_ref)
            if deadline_ms is None
            else control.reload(model_ref, deadline_ms / 1000)
        )
        return json_response(report.to_json(pool_id))

    @app.get("/v1/replicasets")
    async def replicasets() -> Response:
        q = queue.statistics()
        s = supervisor.statistics()
        slo = queue.slo.snapshot(trio.current_time())
        replica = {
            "id": f"{POOL_ID}-0",
            "engine": config.adapter.engine,
            "engine_version": s.engine_version,
            "mode": "attached" if config.replica is None else "owned",
            "state": q.state,
            "pid": s.pid,
            "model": {"id": model_id(), "digest": s.model_digest},
            "slots_total": q.slots_total,
            "slots_busy": q.slots_busy,
            "queue_depth": q.queue_depth,
            "restarts": s.restarts,
            "slo": attrs.asdict(slo),
            "predicted_start": queue.prediction.snapshot(),
        }
        return json_response(
            {"replicasets": [{"id": POOL_ID, "pool_id": POOL_ID, "replicas": [replica]}]}
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(actors.metrics.exposition(), content_type=CONTENT_TYPE)

    def shown(entry: CatalogModel) -> dict[str, Any]:
        return {**entry.to_json(), "loaded": entry.path == supervisor.statistics().model_path}

    @app.get("/v1/models")
    async def models() -> Response:
        return json_response({"models": [shown(entry) for entry in await catalog.list()]})

    @app.post("/v1/catalog/models")
    async def register_model() -> Response:
        given = await body(
            {"id": _string, "path": _string, "sha256": _optional_string}, ("id", "path")
        )
        entry, created = await catalog.register(given["id"], given["path"], given.get("sha256"))
        response = json_response(shown(entry), 201 if created else 200)
        response.headers["Location"] = f"/v1/catalog/models/{entry.id}"
        return response

    @app.get("/v1/catalog/models/<model_id>")
    async def catalog_model(model_id: str) -> Response:
        return json_response(shown(await catalog.get(model_id)))

    @app.post("/v1/catalog/models/<model_id>/verify")
    async def verify_model(model_id: str) -> Response:
        await body({})
        return json_response(shown(await catalog.verify(model_id)))

    @app.post("/v1/catalog/models/<model_id>/state")
    async def set_model_state(model_id: str) -> Response:
        given = await body({"state": _model_state}, ("state",))
        state = ModelState(given["state"])
        if state is ModelState.RETIRED and model_id == control.model_id:
            raise ApiError(
                ErrorCode.CONFLICT,
                f"model {model_id!r} is being served; reload the pool on another model "
                f"before retiring it",
            )
        return json_response(shown(await catalog.set_state(model_id, state)))
