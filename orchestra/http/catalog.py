"""The model catalog's routes: ``/v1/catalog/models...``
(``specs/openapi/control.yaml``), over :class:`~orchestra.catalog.Catalog`.

Every model body, here and in ``GET /v1/models`` (:mod:`orchestra.http.models`), starts
from one shape: OpenAI's fields (``id``, ``object: "model"``, ``created``, ``owned_by``) and
orchestra's beside them (the catalog entry, ``loaded`` and ``context``); see
:func:`model_body`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from quart import Blueprint, Response

from orchestra.catalog import CatalogModel, ModelState
from orchestra.errors import ErrorCode, Refusal
from orchestra.http.bodies import json_response, optional_string, read_body, string
from orchestra.http.context import Actors

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
    props = actors.supervisor.statistics().props
    loaded = props is not None and entry.path == props.model_path
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


def _model_state(value: Any) -> str | None:
    states = [str(s) for s in ModelState]
    return None if value in states else f"must be one of {', '.join(states)}"


def catalog_blueprint(actors: Actors) -> Blueprint:
    """The catalog's routes over ``actors``."""
    routes = Blueprint("catalog", __name__)
    control, catalog = actors.control, actors.catalog

    def shown(entry: CatalogModel) -> dict[str, Any]:
        return model_body(entry, actors)

    @routes.post("/v1/catalog/models")
    async def register_model() -> Response:
        given = await read_body(
            {"id": string, "path": string, "sha256": optional_string}, ("id", "path")
        )
        entry, created = await catalog.register(given["id"], given["path"], given.get("sha256"))
        response = json_response(shown(entry), 201 if created else 200)
        response.headers["Location"] = f"/v1/catalog/models/{entry.id}"
        return response

    @routes.get("/v1/catalog/models/<model_id>")
    async def catalog_model(model_id: str) -> Response:
        return json_response(shown(await catalog.get(model_id)))

    @routes.post("/v1/catalog/models/<model_id>/verify")
    async def verify_model(model_id: str) -> Response:
        await read_body({})
        return json_response(shown(await catalog.verify(model_id)))

    @routes.post("/v1/catalog/models/<model_id>/state")
    async def set_model_state(model_id: str) -> Response:
        given = await read_body({"state": _model_state}, ("state",))
        state = ModelState(given["state"])
        if state is ModelState.RETIRED and model_id == control.model_id:
            raise Refusal(
                ErrorCode.CONFLICT,
                f"model {model_id!r} is being served; reload the pool on another model "
                f"before retiring it",
            )
        return json_response(shown(await catalog.set_state(model_id, state)))

    return routes
