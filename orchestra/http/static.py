"""The files orchestra serves as they are kept in the repo (``static/``): the JavaScript SDK
and the status page.

========================  =========================================================
path                      file
========================  =========================================================
``GET /``                 ``static/ui/index.html``, the status page
``GET /ui/<name>``        ``static/ui/<name>``: the page's module, styles, charts
``GET /sdk/orchestra.js``  ``static/sdk/orchestra.js``, the SDK (an ES module)
``GET /sdk/orchestra.d.ts``  its TypeScript declarations
========================  =========================================================

All of them are open without a token (they hold no secret: :data:`PUBLIC_PATHS`, which
:mod:`orchestra.http.auth` lets in; the page asks for the token before it reads anything).
Each answer carries a strong ``ETag`` (the file's sha256) and ``Cache-Control: no-cache``,
so a browser revalidates and an unchanged file costs a ``304 Not Modified`` without a
body. The page's answer also carries a ``Content-Security-Policy`` that lets it load
nothing but orchestra's own files and talk to nothing but orchestra.
"""

from __future__ import annotations

import hashlib
from importlib import resources

import attrs
from quart import Blueprint, Response, request

CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".ts": "application/typescript; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
"""The content type of a served file, by its suffix."""
FOLDERS = {"sdk": "/sdk/", "ui": "/ui/"}
"""The folders of ``static/`` that are served, and where."""
PAGE = "ui/index.html"
"""The file served at ``/``."""
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The status page's Content-Security-Policy: its own files, and requests to orchestra."""


def _suffix(name: str) -> str:
    return name[name.rfind(".") :] if "." in name else ""


def static_files() -> dict[str, str]:
    """Every served file by its URL path: ``{"/sdk/orchestra.js": "sdk/orchestra.js", ...}``
    and ``/`` for the page."""
    root = resources.files("orchestra.http") / "static"
    files = {"/": PAGE}
    for folder, prefix in FOLDERS.items():
        for entry in (root / folder).iterdir():
            relative = f"{folder}/{entry.name}"
            if entry.is_file() and _suffix(entry.name) in CONTENT_TYPES and relative != PAGE:
                files[prefix + entry.name] = relative
    return files


PUBLIC_PATHS = frozenset(static_files())
"""The paths of the files served here, open without a token."""
SDK_FILES = {name: CONTENT_TYPES[_suffix(name)] for name in ("orchestra.js", "orchestra.d.ts")}
"""The SDK's files, served under ``/sdk/``, with their content types."""


@attrs.frozen
class _File:
    content: bytes
    etag: str
    content_type: str


def _load(relative: str) -> _File:
    content = (resources.files("orchestra.http") / "static" / relative).read_bytes()
    etag = '"' + hashlib.sha256(content).hexdigest()[:32] + '"'
    return _File(content, etag, CONTENT_TYPES[_suffix(relative)])


def _matches(if_none_match: str, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison, as RFC 9110 asks)."""
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


def static_blueprint() -> Blueprint:
    """One route per served file (each read once, when the app is made)."""
    blueprint = Blueprint("static_files", __name__)

    def route(path: str, file: _File) -> None:
        headers = {"ETag": file.etag, "Cache-Control": "no-cache"}
        if file.content_type.startswith("text/html"):
            headers |= {"Content-Security-Policy": PAGE_POLICY, "X-Content-Type-Options": "nosniff"}

        async def serve() -> Response:
            if _matches(request.headers.get("If-None-Match", ""), file.etag):
                return Response(b"", status=304, headers=headers)
            return Response(file.content, content_type=file.content_type, headers=headers)

        serve.__doc__ = f"The file {path} (static/)."
        endpoint = path.strip("/").replace("/", "_").replace(".", "_") or "page"
        blueprint.add_url_rule(path, endpoint=endpoint, view_func=serve, methods=["GET"])

    for path, relative in static_files().items():
        route(path, _load(relative))
    return blueprint
