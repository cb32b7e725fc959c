"""The model catalog's routes: ``/v1/catalog/models...``
(``specs/openapi/control.yaml``), over :class:`~orchestra.catalog.Catalog`.

Every model body, here and in ``GET /v1/models`` (:mod:`orchestra.http.models`), starts
from one shape: OpenAI's fields (``id``, ``object: "model"``, ``created``, ``owned_by``) and
orchestra's beside them (the catalog entry, ``loaded`` and ``context``); see
:func:`orchestra.http.models.model_body`; beside it, what the Models actor says of it
(:func:`orchestra.http.models.entry_body`).
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from orchestra.catalog import CatalogModel, ModelState
from orchestra.errors import ErrorCode, Refusal
from orchestra.http.bodies import json_response, optional_string, read_body, string
from orchestra.http.context import Actors
from orchestra.http.models import entry_body


def _model_state(value: Any) -> str | None:
    states = [str(s) for s in ModelState]
    return None if value in states else f"must be one of {', '.join(states)}"


def catalog_blueprint(actors: Actors) -> Blueprint:
    """The catalog's routes over ``actors``."""
    routes = Blueprint("catalog", __name__)
    catalog = actors.catalog

    def shown(entry: CatalogModel) -> dict[str, Any]:
        return entry_body(entry, actors)

    @routes.post("/v1/catalog/models")
    async def register_model() -> Response:
        given = await read_body(
            {"id": string, "path": string, "sha256": optional_string}, ("id", "path")
        )
        entry, created = await catalog.register(given["id"], given["path"], given.get("sha256"))
        if actors.adopt is not None:
            await actors.adopt(entry)
        response = json_response(shown(entry), 201 if created else 200)
        response.headers["Location"] = f"/v1/catalog/models/{entry.id}"
        return response

    @routes.get("/v1/catalog/models/<model_id>")
    async def catalog_model(model_id: str) -> Response:
        return json_response(shown(await catalog.get(model_id)))

    @routes.post("/v1/catalog/models/<model_id>/verify")
    async def verify_model(model_id: str) -> Response:
        await read_body({})
        entry = await catalog.verify(model_id)
        if actors.adopt is not None:
            await actors.adopt(entry)
        return json_response(shown(entry))

    @routes.post("/v1/catalog/models/<model_id>/state")
    async def set_model_state(model_id: str) -> Response:
        given = await read_body({"state": _model_state}, ("state",))
        state = ModelState(given["state"])
        served = {pool.control.model_id for pool in actors.models}
        if state is ModelState.RETIRED and model_id in served:
            raise Refusal(
                ErrorCode.CONFLICT,
                f"model {model_id!r} is being served; reload the pool on another model "
                f"before retiring it",
            )
        return json_response(shown(await catalog.set_state(model_id, state)))

    return routes
