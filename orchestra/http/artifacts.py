"""The artifact registry's routes: ``/v1/artifacts...`` (``specs/openapi/artifacts.yaml``),
over :class:`~orchestra.artifacts.ArtifactStore`.

An artifact's body is its metadata (:func:`artifact_body`); its content comes raw from
``GET /v1/artifacts/{id}?raw=1``, or when the request's ``Accept`` names the artifact's
media type (any but ``application/json``, which is the metadata's), with a strong
``ETag`` (the id: the content never changes).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from quart import Blueprint, Response, request

from orchestra.artifacts import Artifact, ArtifactStore, Filters, Lineage, LineageNode
from orchestra.artifacts.model import (
    BYTES_MEDIA_TYPE,
    TEXT_MEDIA_TYPE,
    id_problem,
    kind_problem,
    label_problem,
    media_type_problem,
    meta_problem,
    parents_problem,
    tag_problem,
    tags_problem,
)
from orchestra.errors import ErrorCode, Refusal
from orchestra.http.bodies import count_check, flag_problem, json_response, query_args, read_body
from orchestra.http.context import Actors

PAGE_DEFAULT = 50
PAGE_MOST = 200


def artifact_body(artifact: Artifact) -> dict[str, Any]:
    """What the API says of an artifact."""
    return {
        "id": artifact.id,
        "kind": artifact.kind,
        "media_type": artifact.media_type,
        "size_bytes": artifact.size_bytes,
        "created_at": artifact.created_at,
        "tags": list(artifact.tags),
        "parents": list(artifact.parents),
        "session_id": artifact.session_id,
        "task_id": artifact.task_id,
        "meta": dict(artifact.meta),
        "content_url": f"/v1/artifacts/{artifact.id}?raw=1",
    }


def _node(node: LineageNode) -> dict[str, Any]:
    return {"id": node.id, "kind": node.kind, "depth": node.depth, "parents": list(node.parents)}


def lineage_body(lineage: Lineage) -> dict[str, Any]:
    return {
        "id": lineage.id,
        "ancestors": [_node(n) for n in lineage.ancestors],
        "descendants": [_node(n) for n in lineage.descendants],
        "truncated": lineage.truncated,
    }


def _content(given: Mapping[str, Any]) -> tuple[bytes, str]:
    """The content of a put and its media type."""
    has_text, has_bytes = "content" in given, "content_base64" in given
    if has_text == has_bytes:
        problem = "content: give exactly one of content (text) and content_base64 (bytes)"
        raise Refusal(ErrorCode.INVALID_PARAMS, problem, problems=(problem,), param="content")
    if has_text:
        return given["content"].encode(), given.get("media_type", TEXT_MEDIA_TYPE)
    try:
        content = base64.b64decode(given["content_base64"], validate=True)
    except (binascii.Error, ValueError):
        problem = "content_base64: not valid base64"
        raise Refusal(
            ErrorCode.INVALID_PARAMS, problem, problems=(problem,), param="content_base64"
        ) from None
    return content, given.get("media_type", BYTES_MEDIA_TYPE)


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


_PUT_CHECKS = {
    "kind": kind_problem,
    "content": _text,
    "content_base64": _text,
    "media_type": media_type_problem,
    "tags": tags_problem,
    "parents": parents_problem,
    "session_id": label_problem,
    "task_id": label_problem,
    "meta": meta_problem,
}


def _non_empty(value: str) -> str | None:
    return None if value else "must not be empty"


def _checked_id(artifact_id: str) -> str:
    if (problem := id_problem(artifact_id)) is not None:
        raise Refusal(ErrorCode.INVALID_PARAMS, f"artifact_id: {problem}", param="artifact_id")
    return artifact_id


def _wants_raw(artifact: Artifact, raw: str | None) -> bool:
    if raw is not None:
        return raw in ("true", "1")
    own = artifact.media_type.partition(";")[0].strip().lower()
    if own == "application/json":
        return False
    return any(quality > 0 and value.lower() == own for value, quality in request.accept_mimetypes)


def artifacts_blueprint(actors: Actors) -> Blueprint:
    """The artifact routes over ``actors.artifacts``."""
    routes = Blueprint("artifacts", __name__)
    store: ArtifactStore = actors.artifacts

    @routes.post("/v1/artifacts")
    async def put_artifact() -> Response:
        query_args({})
        given = await read_body(_PUT_CHECKS, ("kind",))
        content, media_type = _content(given)
        artifact, created = await store.put(
            content,
            kind=given["kind"],
            media_type=media_type,
            tags=given.get("tags", ()),
            parents=given.get("parents", ()),
            session_id=given.get("session_id"),
            task_id=given.get("task_id"),
            meta=given.get("meta"),
        )
        response = json_response(artifact_body(artifact), 201 if created else 200)
        response.headers["Location"] = f"/v1/artifacts/{artifact.id}"
        return response

    @routes.get("/v1/artifacts")
    async def list_artifacts() -> Response:
        filters = ("kind", "tag", "session_id", "task_id", "parent")
        given = query_args(
            {
                "kind": kind_problem,
                "tag": tag_problem,
                "session_id": _non_empty,
                "task_id": _non_empty,
                "parent": id_problem,
                "limit": count_check(PAGE_MOST),
                "cursor": _non_empty,
            }
        )
        page = await store.list(
            Filters(**{name: given[name] for name in filters if name in given}),
            limit=int(given.get("limit", PAGE_DEFAULT)),
            cursor=given.get("cursor"),
        )
        body = {
            "artifacts": [artifact_body(a) for a in page.artifacts],
            "next_cursor": page.next_cursor,
        }
        return json_response(body)

    @routes.get("/v1/artifacts/<artifact_id>")
    async def get_artifact(artifact_id: str) -> Response:
        raw = query_args({"raw": flag_problem}).get("raw")
        artifact = await store.get(_checked_id(artifact_id))
        if not _wants_raw(artifact, raw):
            return json_response(artifact_body(artifact))
        artifact, content = await store.read(artifact.id)
        response = Response(content, status=200, content_type=artifact.media_type)
        response.headers["ETag"] = f'"{artifact.id}"'
        response.headers["X-Artifact-Kind"] = artifact.kind
        return response

    @routes.get("/v1/artifacts/<artifact_id>/lineage")
    async def artifact_lineage(artifact_id: str) -> Response:
        query_args({})
        return json_response(lineage_body(await store.lineage(_checked_id(artifact_id))))

    @routes.post("/v1/artifacts/<artifact_id>/tags")
    async def retag_artifact(artifact_id: str) -> Response:
        query_args({})
        given = await read_body({"add": tags_problem, "remove": tags_problem})
        artifact = await store.retag(
            _checked_id(artifact_id), given.get("add", ()), given.get("remove", ())
        )
        return json_response(artifact_body(artifact))

    @routes.delete("/v1/artifacts/<artifact_id>")
    async def delete_artifact(artifact_id: str) -> Response:
        cascade = query_args({"cascade": flag_problem}).get("cascade", "false") in ("true", "1")
        deleted = await store.delete(_checked_id(artifact_id), cascade=cascade)
        return json_response({"deleted": list(deleted)})

    return routes
