"""The JavaScript SDK's files, served as they are kept in the repo (``static/sdk/``).

``GET /sdk/orchestra.js`` (``text/javascript``) and ``GET /sdk/orchestra.d.ts`` (its types),
open without a token (they hold no secret: :data:`orchestra.http.auth.OPEN_PATHS`). Each
answer carries a strong ``ETag`` (the file's sha256) and ``Cache-Control: no-cache``, so a
browser revalidates and an unchanged file costs a ``304 Not Modified`` without a body.
"""

from __future__ import annotations

import hashlib
from importlib import resources

import attrs
from quart import Blueprint, Response, request

SDK_FILES = {
    "orchestra.js": "text/javascript; charset=utf-8",
    "orchestra.d.ts": "application/typescript; charset=utf-8",
}
"""The files of ``static/sdk/`` that are served under ``/sdk/``, with their content types."""
SDK_PATHS = frozenset(f"/sdk/{name}" for name in SDK_FILES)


@attrs.frozen
class _File:
    content: bytes
    etag: str
    content_type: str


def _load(name: str) -> _File:
    content = (resources.files("orchestra.http") / "static" / "sdk" / name).read_bytes()
    etag = '"' + hashlib.sha256(content).hexdigest()[:32] + '"'
    return _File(content, etag, SDK_FILES[name])


def _matches(if_none_match: str, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison, as RFC 9110 asks)."""
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


def static_blueprint() -> Blueprint:
    """The routes of the SDK's files (read once, when the app is made)."""
    blueprint = Blueprint("sdk_files", __name__)
    files = {name: _load(name) for name in SDK_FILES}

    def serve(name: str) -> Response:
        file = files[name]
        headers = {"ETag": file.etag, "Cache-Control": "no-cache"}
        if _matches(request.headers.get("If-None-Match", ""), file.etag):
            return Response(b"", status=304, headers=headers)
        return Response(file.content, content_type=file.content_type, headers=headers)

    @blueprint.get("/sdk/orchestra.js")
    async def sdk_module() -> Response:
        """The SDK, an ES module."""
        return serve("orchestra.js")

    @blueprint.get("/sdk/orchestra.d.ts")
    async def sdk_types() -> Response:
        """The SDK's TypeScript declarations."""
        return serve("orchestra.d.ts")

    return blueprint
