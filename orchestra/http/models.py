"""The models' routes: ``GET /v1/models`` and ``POST /v1/models/{id}/load|unload``
(``specs/openapi/control.yaml``), over the Models actor and the catalog.

``GET /v1/models`` answers in OpenAI's list shape, ``{"object": "list", "data": [...]}``:
every configured model (with its residency, memory, last use and pool) and every
catalogued one. A model body has OpenAI's fields (``id``, ``object: "model"``,
``created``, ``owned_by``), the catalog entry's when the catalog knows the id, and the
residency fields (:func:`residency_fields`). The residency is named ``residency``, not
``state``: ``state`` is the catalog entry's (``active`` or ``retired``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from quart import Blueprint, Response, request

from orchestra.actors.models import ModelState
from orchestra.catalog import CatalogModel
from orchestra.http.bodies import json_response, read_body
from orchestra.http.catalog import OWNED_BY, model_body
from orchestra.http.context import Actors
from orchestra.pool import Residency


def _rfc3339(seconds_ago: float | None) -> str | None:
    if seconds_ago is None:
        return None
    moment = datetime.fromtimestamp(time.time() - seconds_ago, UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def residency_fields(state: ModelState, actors: Actors) -> dict[str, Any]:
    """What the Models actor knows of a configured model."""
    spec = state.pool.spec
    props = state.pool.supervisor.statistics().props
    context = None
    if props is not None and state.residency is Residency.LOADED:
        limit = actors.config.admission.ctx_limit
        context = min(limit, props.n_ctx) if props.n_ctx > 0 else limit
    return {
        "aliases": list(spec.aliases),
        "residency": str(state.residency),
        "error": state.error,
        "memory_mb": state.memory_mb or None,
        "memory_source": state.memory_source if state.memory_mb else None,
        "last_used": _rfc3339(state.last_used_s),
        "idle_s": None if state.idle_s is None else round(state.idle_s, 3),
        "pool": state.pool.id,
        "default": state.default,
        "keep_loaded": spec.keep_loaded or spec.fixed,
        "idle_unload_s": spec.idle_unload_s or None,
        "embeddings": spec.embeddings,
        "running": state.running,
        "waiting": state.waiting,
        "load_ms": state.load_ms,
        "loaded": state.residency is Residency.LOADED,
        "context": context,
    }


_UNLOADED: dict[str, Any] = {
    "aliases": [], "residency": "unloaded", "error": None, "memory_mb": None,
    "memory_source": None, "last_used": None, "idle_s": None, "pool": None, "default": False,
    "keep_loaded": False, "idle_unload_s": None, "embeddings": False, "running": 0,
    "waiting": 0, "load_ms": None,
}  # fmt: skip
"""The residency fields of a catalogued model no pool serves."""


def configured_body(
    state: ModelState, entry: CatalogModel | None, actors: Actors
) -> dict[str, Any]:
    """One configured model: OpenAI's fields, the catalog entry's (if any), residency."""
    body: dict[str, Any] = {
        "id": state.pool.id,
        "object": "model",
        "created": int(time.time()),
        "owned_by": OWNED_BY,
    }
    if entry is not None:
        body |= model_body(entry, actors)
    return body | residency_fields(state, actors)


async def model_list(actors: Actors) -> list[dict[str, Any]]:
    """Every model ``GET /v1/models`` lists."""
    entries = await actors.catalog.list()
    states = actors.models.states()
    fixed = states[0].pool.spec.fixed
    if fixed:
        # The single-model configuration: the catalog, as before, with the served model's
        # residency on its entry.
        state, served = states[0], actors.control.model_id
        listed = []
        for entry in entries:
            body = model_body(entry, actors)
            extra = residency_fields(state, actors) if entry.id == served else _UNLOADED
            listed.append(body | {k: v for k, v in extra.items() if k not in ("loaded", "context")})
        return listed
    by_id = {entry.id: entry for entry in entries}
    listed = [configured_body(s, by_id.pop(s.pool.id, None), actors) for s in states]
    return listed + [model_body(entry, actors) | _UNLOADED for entry in by_id.values()]


def models_blueprint(actors: Actors) -> Blueprint:
    """The models' routes over ``actors``."""
    routes = Blueprint("models", __name__)
    models = actors.models
    catalog = actors.catalog

    async def entry_of(model_id: str) -> CatalogModel | None:
        entries = await catalog.list()
        return next((e for e in entries if e.id == model_id), None)

    @routes.get("/v1/models")
    async def list_models() -> Response:
        return json_response({"object": "list", "data": await model_list(actors)})

    @routes.post("/v1/models/<model_id>/load")
    async def load_model(model_id: str) -> Response:
        await read_body({})
        state = await models.load(model_id)
        entry = await entry_of(state.pool.id)
        return json_response(configured_body(state, entry, actors))

    @routes.post("/v1/models/<model_id>/unload")
    async def unload_model(model_id: str) -> Response:
        force = request.args.get("force", "false").lower() in ("1", "true", "yes")
        await read_body({})
        state, cancelled = await models.unload(model_id, force=force)
        entry = await entry_of(state.pool.id)
        return json_response(configured_body(state, entry, actors) | {"cancelled": cancelled})

    return routes
