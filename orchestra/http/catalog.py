"""The model catalog's routes: ``GET /v1/models`` and ``/v1/catalog/models...``
(``specs/openapi/control.yaml``), over :class:`~orchestra.catalog.Catalog`."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from orchestra.catalog import CatalogModel, ModelState
from orchestra.errors import ErrorCode, Refusal
from orchestra.http.bodies import json_response, optional_string, read_body, string
from orchestra.http.context import Actors


def _model_state(value: Any) -> str | None:
    states = [str(s) for s in ModelState]
    return None if value in states else f"must be one of {', '.join(states)}"


def catalog_blueprint(actors: Actors) -> Blueprint:
    """The catalog's routes over ``actors``."""
    routes = Blueprint("catalog", __name__)
    supervisor, control, catalog = actors.supervisor, actors.control, actors.catalog

    def shown(entry: CatalogModel) -> dict[str, Any]:
        return {**entry.to_json(), "loaded": entry.path == supervisor.statistics().model_path}

    @routes.get("/v1/models")
    async def models() -> Response:
        return json_response({"models": [shown(entry) for entry in await catalog.list()]})

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
