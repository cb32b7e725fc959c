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
from typing import Any, Final

from quart import Blueprint, Response, request

from orchestra.actors.pools import ModelState
from orchestra.catalog import CatalogModel
from orchestra.errors import ErrorCode, Refusal
from orchestra.http.bodies import json_response, read_body
from orchestra.http.context import Actors
from orchestra.pool import Residency

OWNED_BY: Final = "orchestra"
"""OpenAI's ``owned_by`` of every model: the catalog is this box's own."""


def unix_seconds(rfc3339: str) -> int:
    """``2026-11-23T10:00:00Z`` as seconds since the epoch (OpenAI's ``created``)."""
    return int(datetime.fromisoformat(rfc3339).timestamp())


def model_body(entry: CatalogModel, actors: Actors) -> dict[str, Any]:
    """One model as every route shows it: OpenAI's ``id``, ``object``, ``created`` (when it
    was registered, Unix seconds) and ``owned_by``; the catalog entry's fields; ``loaded``
    (the engine serves this file now); and ``context``, the tokens a task on it may span
    (prompt plus ``max_tokens``) while it is loaded: the smaller of ``admission.ctx_limit``
    and the engine's per-slot context (``/props``), else null."""
    serving = (pool.supervisor.statistics().props for pool in actors.models)
    props = next((p for p in serving if p is not None and p.model_path == entry.path), None)
    loaded = props is not None
    context = None
    if props is not None and loaded:
        ctx_limit = actors.config.admission.ctx_limit
        context = min(ctx_limit, props.n_ctx) if props.n_ctx > 0 else ctx_limit
    return {
        "id": entry.id,
        "object": "model",
        "created": unix_seconds(entry.registered_at),
        "owned_by": OWNED_BY,
        **entry.to_json(),
        "loaded": loaded,
        "context": context,
    }


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


def _serves(state: ModelState, entry: CatalogModel) -> bool:
    """The pool serves this catalog entry: a ``[models]`` pool by its id; the single-model
    pool by its catalog id, or by the file its engine says it loaded."""
    pool = state.pool
    if not pool.spec.fixed:
        return pool.id == entry.id
    props = pool.supervisor.statistics().props
    return pool.control.model_id == entry.id or (
        props is not None and props.model_path == entry.path
    )


def entry_body(entry: CatalogModel, actors: Actors) -> dict[str, Any]:
    """A catalogued model: its entry's body and its residency (``unloaded`` with no pool
    when no pool serves it)."""
    body = model_body(entry, actors)
    for state in actors.models.states():
        if _serves(state, entry):
            extra = residency_fields(state, actors)
            return body | {k: v for k, v in extra.items() if k not in ("loaded", "context")}
    return body | _UNLOADED


async def model_list(actors: Actors) -> list[dict[str, Any]]:
    """Every model ``GET /v1/models`` lists: the configured ones first (the single-model
    configuration has none of its own: its model is a catalog entry), then the rest of
    the catalog."""
    entries = await actors.catalog.list()
    states = [s for s in actors.models.states() if not s.pool.spec.fixed]
    by_id = {entry.id: entry for entry in entries}
    listed = [configured_body(s, by_id.pop(s.pool.id, None), actors) for s in states]
    return listed + [entry_body(entry, actors) for entry in by_id.values()]


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
        try:
            models.route(model_id)
        except Refusal as unknown:
            entry = await entry_of(model_id)
            if unknown.code is not ErrorCode.NOT_FOUND or entry is None:
                raise
            raise Refusal(
                ErrorCode.CONFLICT,
                f"model {model_id!r} is in the catalog but not served: only an active, "
                f"verified entry is (it is {entry.state}, {entry.trust_state}; register it "
                f"with its sha256, then POST /v1/catalog/models/{model_id}/verify)",
            ) from None
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
